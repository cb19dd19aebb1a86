"""A user's model is untrusted code: its contract is checked and it cannot change lsbench's state."""

import json
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import train_run
from lsbench.config import ConfigError, TrainConfig
from lsbench.metrics import evaluate_logits
from lsbench.models import build_model

CFG = TrainConfig(epochs=2, batch_size=32, device="cpu")

NETS = """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Halving(nn.Module):
        # Scales its input in place: a forward that writes into the tensor it is given.
        def __init__(self, in_features, num_classes, in_place):
            super().__init__()
            self.fc, self.in_place = nn.Linear(in_features, num_classes), in_place

        def forward(self, x):
            if self.in_place:
                x /= 2
            else:
                x = x / 2
            return self.fc(x.flatten(1))


    def halves_in_place(input_shape, num_classes):
        return Halving(int(np.prod(input_shape)), num_classes, True)


    def halves_a_copy(input_shape, num_classes):
        return Halving(int(np.prod(input_shape)), num_classes, False)


    def softmax_head(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes), nn.Softmax(dim=1))


    class MCDropout(nn.Module):
        # Dropout that stays on in eval mode (MC dropout): random at test time.
        def __init__(self, in_features, num_classes):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(in_features, 64), nn.Linear(64, num_classes)

        def forward(self, x):
            return self.fc2(F.dropout(F.relu(self.fc1(x.flatten(1))), p=0.5, training=True))


    def mc_dropout(input_shape, num_classes):
        return MCDropout(int(np.prod(input_shape)), num_classes)


    def numpy_init(input_shape, num_classes):
        layer = nn.Linear(int(np.prod(input_shape)), num_classes)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.random.randn(*layer.weight.shape) * 0.01))
        return nn.Sequential(nn.Flatten(), layer)


    class ZeroesItsInput(nn.Module):
        # Changes, after use, a tensor autograd needs for the backward pass.
        def __init__(self, in_features, num_classes):
            super().__init__()
            self.fc = nn.Linear(in_features, num_classes)

        def forward(self, x):
            x = x.flatten(1).relu()
            out = self.fc(x)
            x.zero_()
            return out


    def zeroes_its_input(input_shape, num_classes):
        return ZeroesItsInput(int(np.prod(input_shape)), num_classes)


    def sigmoid_head(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes), nn.Sigmoid())


    class Scaled(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor


    def softmax_times_ten(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes), nn.Softmax(dim=1),
                             Scaled(10.0))


    def small_relu_head(input_shape, num_classes):
        # Non-negative logits, all below 1 at initialisation: odd, but logits (they grow with the input).
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes), nn.ReLU(),
                             Scaled(0.01))


    def zero_head(input_shape, num_classes):
        # A zero-initialised last layer: every logit 0 at first, a uniform guess.
        layer = nn.Linear(int(np.prod(input_shape)), num_classes)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        return nn.Sequential(nn.Flatten(), layer)


    def exits(input_shape, num_classes):
        import sys
        sys.exit(0)


    class Stop(BaseException):
        pass


    def raises_a_base_exception(input_shape, num_classes):
        raise Stop("not an Exception")


    class ExitsInForward(nn.Module):
        def __init__(self, in_features, num_classes):
            super().__init__()
            self.fc, self.calls = nn.Linear(in_features, num_classes), 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 3:  # past lsbench's output check, during training
                raise SystemExit(0)
            return self.fc(x.flatten(1))


    def exits_in_forward(input_shape, num_classes):
        return ExitsInForward(int(np.prod(input_shape)), num_classes)


    def batchnorm(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 16), nn.BatchNorm1d(16), nn.ReLU(),
                             nn.Linear(16, num_classes))


    class Projected(nn.Module):
        # A fixed random projection outside the state dict (a non-persistent buffer): only the
        # generator it is drawn from brings it back.
        def __init__(self, in_features, num_classes, generator=None):
            super().__init__()
            projection = torch.randn(in_features, 64, generator=generator)
            self.register_buffer("projection", projection, persistent=False)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            return self.fc(torch.relu(x.flatten(1) @ self.projection))


    def projected(input_shape, num_classes):
        return Projected(int(np.prod(input_shape)), num_classes)


    def unseeded(input_shape, num_classes):
        # Draws from a generator of its own, seeded by the OS: no seed brings the projection back.
        generator = torch.Generator().manual_seed(int.from_bytes(__import__("os").urandom(4), "little"))
        return Projected(int(np.prod(input_shape)), num_classes, generator)
"""


@pytest.fixture
def nets(tmp_path):
    name = "lsbench_user_nets"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(NETS))
    sys.path.insert(0, str(tmp_path))
    sys.modules.pop(name, None)
    yield name
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)


def tables(run_dir):
    return {t: pd.read_parquet(run_dir / f"{t}.parquet") for t in ("metrics", "predictions", "runs", "calibrated")}


def test_a_model_that_returns_probabilities_is_refused(tmp_path, tiny_dataset_file, nets):
    with pytest.raises(ConfigError, match=f"model '{nets}:softmax_head': returns probabilities"):
        train_run(tiny_dataset_file, tmp_path / "run", model=f"{nets}:softmax_head", cfg=CFG)


@pytest.mark.parametrize("factory,what", [("sigmoid_head", r"values squashed into \[0, 1\] \(a final Sigmoid"),
                                          ("softmax_times_ten", r"probabilities \(.*sums to 10\)")])
def test_outputs_that_are_not_logits_are_refused_naming_the_model(tmp_path, tiny_dataset_file, nets, factory, what):
    # Issue 28 item 8: trained as logits, a Sigmoid's outputs made every run "underconfident".
    with pytest.raises(ConfigError, match=f"model '{nets}:{factory}': returns {what}"):
        train_run(tiny_dataset_file, tmp_path / "run", model=f"{nets}:{factory}", cfg=CFG)
    assert not (tmp_path / "run" / "metrics.parquet").exists()


@pytest.mark.parametrize("factory", ["small_relu_head", "zero_head"])
def test_logits_that_only_look_odd_at_initialisation_train(tmp_path, tiny_dataset_file, nets, factory):
    train_run(tiny_dataset_file, tmp_path / "run", model=f"{nets}:{factory}",
              cfg=TrainConfig(epochs=1, batch_size=32, device="cpu"))
    assert len(tables(tmp_path / "run")["metrics"]) == 1


@pytest.mark.parametrize("factory,what", [("exits", "SystemExit"), ("raises_a_base_exception", "Stop"),
                                          ("exits_in_forward", "SystemExit")])
def test_code_of_a_model_that_ends_the_process_fails_lsbench_train_naming_it(tmp_path, tiny_dataset_file, nets,
                                                                             capsys, factory, what):
    # sys.exit(0) in a factory (a BaseException, not an Exception) ended `lsbench train` with exit
    # code 0 and no tables.
    from lsbench.cli import main as cli_main

    argv = ["train", "--dataset", "fashion_mnist", "--model", f"{nets}:{factory}", "--data", str(tiny_dataset_file),
            "--out-dir", str(tmp_path / "run"), "--seed", "0", "--epochs", "1", "--device", "cpu"]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert f"model '{nets}:{factory}'" in err and what in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "metrics.parquet").exists()


def test_a_forward_that_changes_its_input_in_place_changes_nothing(tmp_path, tiny_dataset_file, nets):
    train_run(tiny_dataset_file, tmp_path / "in_place", model=f"{nets}:halves_in_place", cfg=CFG)
    train_run(tiny_dataset_file, tmp_path / "copy", model=f"{nets}:halves_a_copy", cfg=CFG)
    a, b = tables(tmp_path / "in_place"), tables(tmp_path / "copy")
    drop = ["epoch_seconds", "model"]
    pd.testing.assert_frame_equal(a["metrics"].drop(columns=drop), b["metrics"].drop(columns=drop))
    logits = [c for c in a["predictions"] if c.startswith("logit_")]
    assert np.array_equal(a["predictions"][logits].to_numpy(), b["predictions"][logits].to_numpy())


def test_a_model_random_at_test_time_gives_one_set_of_final_numbers(tmp_path, tiny_dataset_file, nets):
    train_run(tiny_dataset_file, tmp_path / "mc", model=f"{nets}:mc_dropout", cfg=CFG)
    t = tables(tmp_path / "mc")
    final = t["metrics"].iloc[-1]
    p = t["predictions"]
    logits = p[[f"logit_{c}" for c in range(10)]].to_numpy()
    again = evaluate_logits(logits, p["label"].to_numpy())
    for metric in ("accuracy", "ece", "test_nll", "smece", "aurc"):
        assert again[metric] == final[metric], metric


def test_a_factory_that_draws_from_numpy_is_seeded(tmp_path, tiny_dataset_file, nets):
    first, second, other = (build_model(f"{nets}:numpy_init", (1, 28, 28), 10, seed) for seed in (3, 3, 4))
    assert all(np.array_equal(a.detach(), b.detach()) for a, b in zip(first.parameters(), second.parameters()))
    assert not np.array_equal(first[1].weight.detach(), other[1].weight.detach())


def test_batchnorm_never_gets_a_one_image_batch(tmp_path, tiny_dataset_file, nets):
    # 256 images - 31 held out = 225 = 7 x 32 + 1: the last batch would hold one image.
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", validation_size=31)
    train_run(tiny_dataset_file, tmp_path / "bn", model=f"{nets}:batchnorm", cfg=cfg)
    runs = tables(tmp_path / "bn")["runs"]
    assert runs.loc[0, "n_train"] == 225 and not tables(tmp_path / "bn")["metrics"]["diverged"].any()


def test_the_runs_table_records_the_models_code(tmp_path, tiny_dataset_file, nets):
    from lsbench.plan import model_code_sha256

    train_run(tiny_dataset_file, tmp_path / "run", model=f"{nets}:halves_a_copy", cfg=CFG)
    recorded = tables(tmp_path / "run")["runs"].loc[0, "model_sha256"]
    assert recorded == model_code_sha256(f"{nets}:halves_a_copy") and len(recorded) == 16
    assert json.loads(tables(tmp_path / "run")["runs"].loc[0, "class_names"])[0] == "T-shirt/top"


def test_a_training_step_that_fails_names_the_model(tmp_path, tiny_dataset_file, nets):
    with pytest.raises(ConfigError, match=f"model '{nets}:zeroes_its_input': a training step on a batch of shape"):
        train_run(tiny_dataset_file, tmp_path / "run", model=f"{nets}:zeroes_its_input", cfg=CFG)


def evaluate_clean(run_dir, model, data_file):
    """The run's final model on the whole clean test set (no shifts): shift.parquet's one row."""
    from lsbench.pipeline import evaluate_shifts

    out = run_dir.parent / f"{run_dir.name}-shift.parquet"
    evaluate_shifts([run_dir], model, data_file, None, out, "cpu", 1, lambda m: None)
    return pd.read_parquet(out).iloc[0]


def test_the_shift_stage_rebuilds_a_model_with_its_runs_own_seed(tmp_path, tiny_dataset_file, nets):
    """A random part outside the state dict is the one the run trained with: the clean row of
    seed 1 is its own final numbers (it was seed 0's projection under seed 1's read-out)."""
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", validation_size=32)
    train_run(tiny_dataset_file, tmp_path / "s1", seed=1, epsilon=0.0, cfg=cfg, model=f"{nets}:projected")
    clean, final = evaluate_clean(tmp_path / "s1", f"{nets}:projected", tiny_dataset_file), \
        tables(tmp_path / "s1")["metrics"].iloc[-1]
    assert clean["seed"] == 1 and clean["n_images"] == 64
    for metric in ("accuracy", "test_nll", "ece"):
        assert clean[metric] == final[metric], metric


def test_a_model_that_does_not_come_back_as_it_trained_stops_the_shift_stage(tmp_path, tiny_dataset_file, nets):
    from lsbench.config import ConfigError

    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", validation_size=32)
    train_run(tiny_dataset_file, tmp_path / "run", epsilon=0.0, cfg=cfg, model=f"{nets}:unseeded")
    with pytest.raises(ConfigError, match=rf"^model '{nets}:unseeded': the final model of seed 0 \(.*run\), rebuilt "
                                          "from model.pt, does not give the run's own predictions.parquet on the 64 "
                                          "clean images"):
        evaluate_clean(tmp_path / "run", f"{nets}:unseeded", tiny_dataset_file)


def test_a_model_random_at_test_time_passes_the_shift_stages_check(tmp_path, tiny_dataset_file, nets):
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", validation_size=32)
    train_run(tiny_dataset_file, tmp_path / "mc", epsilon=0.0, cfg=cfg, model=f"{nets}:mc_dropout")
    clean = evaluate_clean(tmp_path / "mc", f"{nets}:mc_dropout", tiny_dataset_file)
    assert clean["n_images"] == 64 and 0 <= clean["accuracy"] <= 1


SIBLINGS = {  # a factory module importing a sibling file, which imports a package of the same folder
    "lsbench_sib_nets.py": "import yaml\nimport torch\nfrom lsbench_sib_layers import WIDTH\n\n\n"
                           "def small(input_shape, num_classes):\n"
                           "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(WIDTH),\n"
                           "                               torch.nn.Linear(WIDTH, num_classes))\n",
    "lsbench_sib_layers.py": "def width():\n    from lsbench_sib_pkg.deep import DEPTH  # imported late\n"
                             "    return 8 * DEPTH\n\n\nWIDTH = width()\n",
    "lsbench_sib_pkg/__init__.py": "",
    "lsbench_sib_pkg/deep.py": "from . import consts\n\nDEPTH = consts.N\n",
    "lsbench_sib_pkg/consts.py": "N = 2\n",
    "lsbench_sib_pkg/unused.py": "N = 3\n",
    "lsbench_sib_other.py": "def other(input_shape, num_classes):\n    raise NotImplementedError\n",
}


def write_siblings(folder):
    for name, text in SIBLINGS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_a_models_code_is_its_module_and_every_module_of_the_users_folders_it_imports(tmp_path, monkeypatch):
    from lsbench.codedigest import code_parts
    from lsbench.plan import model_code_sha256, model_search_path

    write_siblings(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = "lsbench_sib_nets:small"
    before = model_code_sha256(model)
    assert sorted(code_parts([("lsbench_sib_nets", None)], model_search_path())) == [
        "lsbench_sib_layers", "lsbench_sib_nets", "lsbench_sib_pkg", "lsbench_sib_pkg.consts", "lsbench_sib_pkg.deep"]
    for name in SIBLINGS:  # an edit of any module it imports, directly or not, is an edit of the model
        path = tmp_path / name
        path.write_text(SIBLINGS[name] + "# edited\n")
        imported = name not in ("lsbench_sib_pkg/unused.py", "lsbench_sib_other.py")
        assert (model_code_sha256(model) != before) == imported, name
        path.write_text(SIBLINGS[name])
    assert model_code_sha256(model) == before
    # As a training job finds it, imported (torch and yaml, installed packages, are not its code).
    import importlib

    try:
        importlib.import_module("lsbench_sib_nets")
        assert model_code_sha256(model) == before
    finally:
        for name in [m for m in sys.modules if m.startswith("lsbench_sib_")]:
            del sys.modules[name]


def test_a_models_code_digest_does_not_depend_on_its_folder(tmp_path, monkeypatch):
    from lsbench.plan import model_code_sha256

    digests = []
    for folder in (tmp_path / "a", tmp_path / "elsewhere" / "b"):
        folder.mkdir(parents=True)
        write_siblings(folder)
        monkeypatch.syspath_prepend(str(folder))
        digests.append(model_code_sha256("lsbench_sib_nets:small"))
        monkeypatch.undo()
    assert digests[0] == digests[1]


def test_a_model_module_that_does_not_parse_is_planned_and_its_job_says_why(tmp_path, monkeypatch):
    from lsbench.plan import model_code_sha256

    path = tmp_path / "lsbench_broken_nets.py"
    path.write_bytes(b"import lsbench_sib_layers\ndef small(:\n    return '\xff'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    digest = model_code_sha256("lsbench_broken_nets:small")  # the plan does not stop on it
    path.write_bytes(path.read_bytes() + b"# edited\n")
    assert len(digest) == 16 and model_code_sha256("lsbench_broken_nets:small") != digest
    with pytest.raises(ConfigError, match="importing 'lsbench_broken_nets' failed: SyntaxError"):
        build_model("lsbench_broken_nets:small", (1, 8, 8), 10, 0)
