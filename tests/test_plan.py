"""lsbench.plan: what the workflow will run, worked out before any job."""

import sys
from pathlib import Path

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


def test_a_shift_evaluation_is_named_by_the_runs_definitions_not_their_paths(tmp_path):
    """Renaming results_dir, or spelling it absolute, re-evaluates no shift; a run's definition does."""
    spellings = ("results", "renamed", str(tmp_path / "results"), "results/")
    plans = [plan_of(tmp_path, shifts=["rotation"], results_dir=r)() for r in spellings]
    names = [[Path(t).relative_to(Path(r)) for t in p.shift_tables()] for p, r in zip(plans, spellings)]
    assert all(n == names[0] for n in names) and len(names[0]) == 1
    assert len({p.grid_id for p in plans}) == 1  # the published tables' grid, too
    other = [plan_of(tmp_path, shifts=["rotation"], **cfg)() for cfg in ({"seeds": [0, 7]}, {"lr": 0.002})]
    assert all(Path(p.shift_tables()[0]).name != names[0][0].name and p.grid_id != plans[0].grid_id for p in other)
