"""The benchmark runs end to end on tiny data (CI checks that it works, not how fast it is)."""

import json

from lsbench.bench import flops_per_epoch, main
from lsbench.model import MODELS


def test_flops_per_epoch_by_hand():
    # linear 784-10: train = 2 * N * (2 * 7840 + 0), test = 2 * M * 7840
    assert flops_per_epoch(MODELS["linear"], 100, 10) == 2 * 100 * 2 * 7840 + 2 * 10 * 7840
    mlp = flops_per_epoch(MODELS["mlp"], 60000, 10000)
    assert 160e9 < mlp < 170e9  # 167 GFLOP per epoch, the figure the README quotes


def test_bench_runs_both_loops(tmp_path, tiny_dataset_file, capsys):
    out = tmp_path / "bench.json"
    assert main(["--data", str(tiny_dataset_file), "--epochs", "2", "--baseline-epochs", "2",
                 "--train-size", "128", "--test-size", "32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "median of per-epoch speed-ups" in printed and "peak RSS" in printed
    result = json.loads(out.read_text())
    loops = {r["loop"]: r for r in result["loops"]}
    assert set(loops) == {"lsbench", "seed notebook"}
    assert all(r["s_per_epoch"] > 0 and 0 <= r["accuracy"] <= 1 for r in loops.values())
    assert result["n_train"] == 128 and result["matmul_peak_gflops"] > 0
    assert all(len(r["epoch_seconds"]) == 2 for r in loops.values())
