"""The benchmark runs end to end on tiny data (CI checks that it works, not how fast it is)."""

import json

import pytest
import torch

from lsbench.bench import flops_per_epoch, idiomatic_model, main
from lsbench.models import build_model


def test_flops_per_epoch_by_hand():
    # linear 784-10: a step is forward (2*784*10 per image) + weight gradient (the same again);
    # the input needs no gradient. Evaluation is one forward per test image.
    model = idiomatic_model("linear", (1, 28, 28), 10, 0)
    assert flops_per_epoch(model, (1, 28, 28), 50, 100, 10) == 2 * 100 * 2 * 7840 + 2 * 10 * 7840
    mlp = flops_per_epoch(idiomatic_model("mlp", (1, 28, 28), 10, 0), (1, 28, 28), 64, 60000, 10000)
    assert 160e9 < mlp < 170e9  # 167 GFLOP per epoch, the figure the README quotes


def test_idiomatic_mlp_is_nn_linear_with_lsbenchs_numbers():
    ours, theirs = build_model("mlp", (1, 28, 28), 10, 3), idiomatic_model("mlp", (1, 28, 28), 10, 3)
    assert isinstance(theirs[1], torch.nn.Linear)
    x = torch.randn(5, 1, 28, 28)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


@pytest.mark.parametrize("model,loops", [("mlp", {"lsbench", "idiomatic", "seed notebook"}),
                                         ("lenet", {"lsbench", "idiomatic"})])
def test_bench_runs_every_loop(tmp_path, tiny_dataset_file, capsys, model, loops):
    out = tmp_path / "bench.json"
    assert main(["--data", str(tiny_dataset_file), "--model", model, "--epochs", "2", "--baseline-epochs", "2",
                 "--train-size", "128", "--test-size", "32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speed-up over idiomatic" in printed and "median of per-epoch speed-ups" in printed and "peak RSS" in printed
    result = json.loads(out.read_text())
    by_name = {r["loop"]: r for r in result["loops"]}
    assert set(by_name) == loops
    assert all(r["s_per_epoch"] > 0 and 0 <= r["accuracy"] <= 1 for r in by_name.values())
    assert result["n_train"] == 128 and result["matmul_peak_gflops"] > 0 and result["gflop_per_epoch"] > 0
    assert all(len(r["epoch_seconds"]) == 2 for r in by_name.values())


def test_bench_times_every_method_against_the_idiomatic_loop(tmp_path, tiny_dataset_file, capsys):
    from lsbench.methods import METHODS

    out = tmp_path / "methods.json"
    assert main(["--data", str(tiny_dataset_file), "--methods", "all", "--epochs", "2", "--baseline-epochs", "2",
                 "--train-size", "128", "--test-size", "32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert [r["method"] for r in results] == list(METHODS)
    assert all(r["fast_step"] == "ManualStepper" for r in results)  # the MLP's step covers every objective
    for r in results:
        assert {x["loop"] for x in r["loops"]} - {"seed notebook"} == {"lsbench", "idiomatic"} and r["variant"] in printed
