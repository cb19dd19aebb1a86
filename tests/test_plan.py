"""lsbench.plan: what the workflow will run, worked out before any job."""

import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, write_tiny_root
from lsbench.config import ConfigError, load_schema, to_workflow_config, validate_config
from lsbench.data import DataError
from lsbench.plan import WorkflowPlan, model_code_sha256, model_search_path


def plan_of(tmp_path, **config):
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    wf = to_workflow_config(validate_config({**base, "datasets": ["digits"], "validation_size": 0.1, "ood": None,
                                             **config}, load_schema()))
    return lambda **kw: WorkflowPlan(wf, **kw)


def test_a_data_root_that_does_not_exist_stops_even_a_digits_only_grid(tmp_path):
    with pytest.raises(DataError, match="data_root .*typo: no such directory"):
        plan_of(tmp_path, data_root=str(tmp_path / "typo"))()


def test_a_model_where_no_training_job_imports_it_from_stops_before_any_job(tmp_path, monkeypatch):
    """Snakemake puts the Snakefile's folder on its own path; a training job does not have it."""
    checkout, workdir = tmp_path / "checkout", tmp_path / "work"
    checkout.mkdir(), workdir.mkdir()
    (checkout / "lsbench_plan_nets.py").write_text("def small(input_shape, num_classes):\n    pass\n")
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(checkout))
    make = plan_of(tmp_path, models=["lsbench_plan_nets:small"])
    assert len(make().model_sha256["lsbench_plan_nets:small"]) == 16  # found on this process's path
    with pytest.raises(ConfigError, match="cannot find module 'lsbench_plan_nets' in the working directory"):
        make(hidden_paths=(str(checkout),))
    assert str(checkout) not in model_search_path((str(checkout),)) and model_search_path()[0] == str(workdir)
    # In the working directory it is found, as the training job (lsbench train) imports it from there.
    (workdir / "lsbench_plan_nets.py").write_text("def small(input_shape, num_classes):\n    pass\n")
    assert model_code_sha256("lsbench_plan_nets:small", (str(checkout),)) == \
        model_code_sha256("lsbench_plan_nets:small")


def test_a_definition_changes_with_what_defines_the_runs_only(tmp_path):
    a, b, c = (plan_of(tmp_path, **cfg)() for cfg in ({}, {"threads": 2, "device": "cpu"}, {"lr": 0.002}))
    assert [r.run_dir for r in a.runs] == [r.run_dir for r in b.runs]
    assert {r.definition for r in a.runs}.isdisjoint({r.definition for r in c.runs})
    assert a.grid_id == b.grid_id != c.grid_id
    assert a.runs[0].run_dir.startswith("results/runs/digits/mlp/") and sys.modules  # paths relative to the workdir


# Each entry's code digest, computed by a fresh Python on a copy of lsbench (the digests read source
# files, as the workflow does when the Snakefile is read): method -> digest, model -> digest,
# dataset -> decoder digest, and the run directories of a small grid.
DIGESTS = """
import json
from lsbench import plan
from lsbench.config import load_schema, to_workflow_config, validate_config
from lsbench.datasets import DATASETS
from lsbench.methods import METHODS
from pathlib import Path
from lsbench.codedigest import builtin_registry

MODELS = builtin_registry(Path(plan.__file__).parent / "models.py", "MODELS")  # without importing torch

wf = to_workflow_config(validate_config({"datasets": ["fashion_mnist"], "data_root": "data", "models": ["mlp"],
                                         "seeds": [0], "ood": None, "validation_size": 0.1, "shifts": None,
                                         "methods": {"label_smoothing": [0.1], "focal": [1.0]}},
                                        load_schema()))
print(json.dumps({"methods": {m: plan.method_code_sha256(m) for m in METHODS},
                  "models": {m: plan.model_code_sha256(m) for m in MODELS},
                  "datasets": {d: plan.decoder_code_sha256(d) for d in DATASETS},
                  "runs": {r.method: r.run_dir for r in plan.WorkflowPlan(wf).runs}}))
"""


@pytest.fixture(scope="module")
def lsbench_copy(tmp_path_factory):
    """Digests of a copy of lsbench's source after an edit: edit(file, old, new, ...) -> DIGESTS' record."""
    import json
    import shutil
    import subprocess

    memo: dict[tuple[str, ...], dict] = {}

    def digests(*edits: str) -> dict:
        if edits in memo:
            return memo[edits]
        root = tmp_path_factory.mktemp("src")
        write_tiny_root(root / "data", n_train=20, n_test=10)
        shutil.copytree(REPO / "src" / "lsbench", root / "lsbench")
        for file, old, new in zip(edits[::3], edits[1::3], edits[2::3]):
            path = root / "lsbench" / file
            assert path.read_text().count(old) == 1, old
            path.write_text(path.read_text().replace(old, new))
        out = subprocess.run([sys.executable, "-c", DIGESTS], env={**os.environ, "PYTHONPATH": str(root)},
                             capture_output=True, text=True, cwd=root)
        assert out.returncode == 0, out.stderr
        memo[edits] = json.loads(out.stdout)
        return memo[edits]

    return digests


def changed(before: dict, after: dict, axis: str) -> set[str]:
    return {k for k in before[axis] if before[axis][k] != after[axis].get(k)}


def test_adding_a_method_changes_no_existing_runs_digest(lsbench_copy):
    before = lsbench_copy()
    poly1 = "def _poly1(logits, target, eps):\n    return _cross_entropy(logits, target, 0.0) + eps * MBLS_MARGIN\n"
    entry = 'Method("poly1", "Poly-1", "Leng et al. 2022", _poly1, Param("epsilon", "ε", -1.0), bench_param=1.0),\n    '
    after = lsbench_copy("methods.py", "def _mixup(", f"{poly1}\n\ndef _mixup(",
                         "methods.py", '    Method("mixup",', f'    {entry}Method("mixup",')
    assert "poly1" in after["methods"] and "poly1" not in before["methods"]
    assert changed(before, after, "methods") == set() and after["runs"] == before["runs"]
    assert changed(before, after, "models") == set() and changed(before, after, "datasets") == set()


def test_editing_one_objective_changes_the_digest_of_the_methods_that_compute_with_it_only(lsbench_copy):
    before = lsbench_copy()
    focal = lsbench_copy("methods.py", "return (-one_minus_pt ** g * log_pt).mean()",
                         "return -(one_minus_pt ** g * log_pt).mean()")
    assert changed(before, focal, "methods") == {"focal", "focal_adaptive"}  # FLSD-53 calls _focal
    assert focal["runs"]["focal"] != before["runs"]["focal"]
    assert {m: r for m, r in focal["runs"].items() if m != "focal"} == \
        {m: r for m, r in before["runs"].items() if m != "focal"}
    margin = lsbench_copy("methods.py", "MBLS_MARGIN = 10.0", "MBLS_MARGIN = 5.0")
    assert changed(before, margin, "methods") == {"margin_ls"}
    # Mixup trains on cross-entropy: an edit of it retrains both; the registry's validation, neither.
    ce = lsbench_copy("methods.py", "return F.cross_entropy(logits, target)\n\n\ndef _label_smoothing",
                      "return F.cross_entropy(logits, target, reduction=\"mean\")\n\n\ndef _label_smoothing",
                      "methods.py", "errors = []\n", "errors: list[str] = []\n")
    assert changed(before, ce, "methods") == {"cross_entropy", "mixup"}
    param = lsbench_copy("methods.py", 'Param("gamma", "γ", 0.0, FOCAL_GAMMA_MAX, neutral=0.0)',
                         'Param("gamma", "γ", 0.0, 10.0, neutral=0.0)')
    assert changed(before, param, "methods") == {"focal"}


def test_editing_one_model_or_one_dataset_reader_changes_its_own_digest_only(lsbench_copy):
    before = lsbench_copy()
    lenet = lsbench_copy("models.py", "nn.Conv2d(6, 16, 5, padding=pad)", "nn.Conv2d(6, 16, 3, padding=pad)")
    assert changed(before, lenet, "models") == {"lenet"}
    mlp = lsbench_copy("mlp.py", "for layer in self.layers:", "for layer in list(self.layers):")
    assert changed(before, mlp, "models") == {"linear", "mlp"} and changed(before, mlp, "methods") == set()
    cifar = lsbench_copy("data.py", "def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:",
                         "def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:  # edited")
    assert changed(before, cifar, "datasets") == {"cifar10"} and cifar["runs"] == before["runs"]
    digits = lsbench_copy("data.py", "DIGITS_SPLIT_SEED = 0", "DIGITS_SPLIT_SEED = 1")
    assert changed(before, digits, "datasets") == {"digits"} and digits["runs"] == before["runs"]
    # The grid's Fashion-MNIST is read by the IDX reader: its cache and every run move.
    idx = lsbench_copy("data.py", "size = math.prod(shape)", "size = int(math.prod(shape))")
    assert changed(before, idx, "datasets") == {"fashion_mnist", "mnist", "kmnist"}
    assert all(idx["runs"][m] != before["runs"][m] for m in before["runs"])
    checks = lsbench_copy("data.py", "def check_split(", "def check_split(  # every reader's output is checked\n")
    assert changed(before, checks, "datasets") == set(before["datasets"])


def test_a_shift_evaluation_is_named_by_the_runs_definitions_not_their_paths(tmp_path):
    """Renaming results_dir, or spelling it absolute, re-evaluates no shift; a run's definition does."""
    spellings = ("results", "renamed", str(tmp_path / "results"), "results/")
    plans = [plan_of(tmp_path, shifts=["rotation"], results_dir=r)() for r in spellings]
    names = [[Path(t).relative_to(Path(r)) for t in p.shift_tables()] for p, r in zip(plans, spellings)]
    assert all(n == names[0] for n in names) and len(names[0]) == len(plans[0].runs) >= 1
    assert len({p.grid_id for p in plans}) == 1  # the published tables' grid, too
    # One evaluation per run: another seed adds its own and re-evaluates none of the others; another
    # learning rate is another definition, so every run is evaluated again.
    seeds, lr = (plan_of(tmp_path, shifts=["rotation"], **cfg)() for cfg in ({"seeds": [0, 7]}, {"lr": 0.002}))
    relative = {str(Path(t).relative_to("results")) for t in seeds.shift_tables()}
    assert {str(n) for n in names[0] if "/seed0/" in str(n)} < relative and len(relative) == len(seeds.runs)
    assert not {str(Path(t).relative_to("results")) for t in lr.shift_tables()} & set(map(str, names[0]))
    assert len({seeds.grid_id, lr.grid_id, plans[0].grid_id}) == 3


def test_results_dir_dot_names_its_files_as_the_rules_do(tmp_path):
    # "./runs/..." is another file to Snakemake than the rules' "runs/...": a MissingInputException.
    plan = plan_of(tmp_path, results_dir=".", shifts=["contrast"])()
    paths = [plan.runs[0].run_dir, plan.data_cache("digits"), plan.shifted_data("digits"), *plan.shift_tables()]
    assert [p.split("/")[0] for p in paths[:3]] == ["runs", "data", "data"], paths
    assert {p.split("/")[0] for p in paths[3:]} == {"shift"}, paths


def test_the_report_id_follows_grid_tables_version_and_report_code_never_training(tmp_path, monkeypatch):
    import lsbench
    from lsbench import plan as plan_module

    make = plan_of(tmp_path)
    a = make()
    first = a.report_id  # read where the Snakefile reads it: in its working directory
    assert first == make().report_id and len(first) == 16
    assert plan_of(tmp_path, seeds=[0])().report_id != first  # another grid
    # The same grid's tables reached another way (absolute, or from another working directory): the
    # same report, rendered nothing again.
    assert plan_of(tmp_path, results_dir=str(tmp_path / "results"))().report_id == first
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert make().report_id == first
    monkeypatch.undo()
    monkeypatch.setattr(lsbench, "__version__", "99.0")  # an upgrade
    upgraded = make()
    assert upgraded.report_id != first and [r.run_dir for r in upgraded.runs] == [r.run_dir for r in a.runs]
    monkeypatch.undo()
    # An edit of the code that computes findings: another report, the same runs.
    code = tmp_path / "findings.py"
    code.write_text("x = 1\n")
    files = plan_module.report_code_files()
    monkeypatch.setattr(plan_module, "report_code_files", lambda: [*files, code])
    before = make().report_id
    code.write_text("x = 2\n")
    edited = make()
    assert edited.report_id != before and [r.run_dir for r in edited.runs] == [r.run_dir for r in a.runs]


def test_the_report_code_covers_every_lsbench_module_the_report_imports():
    import subprocess

    from lsbench.plan import report_code_files

    listed = {str(p) for p in report_code_files()}
    code = ("import sys, lsbench.report, lsbench.findings, lsbench.figures\n"
            "print('\\n'.join(m.__file__ for n, m in list(sys.modules.items())"
            " if n.split('.')[0] == 'lsbench' and getattr(m, '__file__', None)))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    from pathlib import Path

    assert {str(Path(f).resolve()) for f in imported} - listed == set()
    assert any(p.endswith("templates/index.html.j2") for p in listed)
