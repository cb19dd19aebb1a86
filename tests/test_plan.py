"""lsbench.plan: what the workflow will run, worked out before any job."""

import sys

import pytest
import yaml

from conftest import REPO
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


def test_the_objectives_digest_follows_the_objectives_not_the_registrys_other_code(monkeypatch):
    from lsbench import methods
    from lsbench.plan import objective_code_sha256

    before = objective_code_sha256()

    def method_errors(methods_, key="methods"):  # validation code: no run's numbers depend on it
        return []

    monkeypatch.setattr(methods, "method_errors", method_errors)
    assert objective_code_sha256() == before

    def _focal(logits, target, gamma, gamma_of=None):  # an objective's code: every run reruns
        return logits.sum() * 0

    _focal.__module__ = methods.__name__  # as if edited in place
    monkeypatch.setattr(methods, "_focal", _focal)
    assert objective_code_sha256() != before
    monkeypatch.undo()
    monkeypatch.setattr(methods, "MBLS_MARGIN", 5.0)
    assert objective_code_sha256() != before


def test_results_dir_dot_names_its_files_as_the_rules_do(tmp_path):
    # "./runs/..." is another file to Snakemake than the rules' "runs/...": a MissingInputException.
    plan = plan_of(tmp_path, results_dir=".", shifts=["contrast"])()
    paths = [plan.runs[0].run_dir, plan.data_cache("digits"), plan.shifted_data("digits"), *plan.shift_tables()]
    assert [p.split("/")[0] for p in paths] == ["runs", "data", "data", "shift"], paths


def test_the_report_id_follows_grid_tables_version_and_report_code_never_training(tmp_path, monkeypatch):
    import lsbench
    from lsbench import plan as plan_module

    make = plan_of(tmp_path)
    a = make()
    first = a.report_id  # read where the Snakefile reads it: in its working directory
    assert first == make().report_id and len(first) == 16
    assert plan_of(tmp_path, seeds=[0])().report_id != first  # another grid
    assert plan_of(tmp_path, results_dir=str(tmp_path / "results"))().report_id != first  # other tables
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the same relative results_dir in another working directory
    assert make().report_id != first
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
