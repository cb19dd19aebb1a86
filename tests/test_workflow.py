"""End to end: the real Snakefile on tiny IDX data, in a temporary working directory."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, snakemake_cmd, workflow_dir

GRID = ["seeds=[0,1]", "epsilons=[0.0,0.2]", "epochs=2", "batch_size=32", "validation_size=32"]
N_TEST = 64


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, "--cores", "2", *args), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    wd = workflow_dir(tmp_path_factory.mktemp("wf"), idx={"n_test": N_TEST})
    # The grid comes in as `--config` strings, exactly as a user overrides it.
    run = snakemake(wd, "--config", *GRID)
    assert run.returncode == 0, run.stderr[-3000:]
    return wd


def test_metrics_table(workdir):
    df = pd.read_parquet(workdir / "results" / "metrics.parquet")
    expected = ["seed", "epsilon", "epoch", "train_loss", "test_loss", "test_nll", "accuracy", "ece",
                "mce", "mean_confidence", "overconfidence", "brier", "entropy", "epoch_seconds"]
    assert set(expected) <= set(df.columns)
    assert len(df) == 2 * 2 * 2
    assert sorted(df["seed"].unique()) == [0, 1] and sorted(df["epsilon"].unique()) == [0.0, 0.2]
    assert sorted(df["epoch"].unique()) == [1, 2]
    assert df["seed"].dtype == "int64" and df["epoch"].dtype == "int64" and df["epsilon"].dtype == "float64"
    for col in ("accuracy", "ece", "mce", "mean_confidence"):
        assert df[col].between(0, 1).all(), col
    assert df["brier"].between(0, 2).all() and (df["entropy"] >= 0).all() and (df["epoch_seconds"] > 0).all()
    assert (df["overconfidence"] - (df["mean_confidence"] - df["accuracy"])).abs().max() < 1e-12
    assert not df["diverged"].any()


def test_final_metrics_recompute_from_predictions_alone(workdir):
    """One probability path: every final-epoch number follows from predictions.parquet exactly."""
    from lsbench.metrics import evaluate_logits, probabilities, reliability_table

    pred = pd.read_parquet(workdir / "results" / "predictions.parquet")
    metrics = pd.read_parquet(workdir / "results" / "metrics.parquet")
    rel = pd.read_parquet(workdir / "results" / "reliability.parquet")
    for (seed, eps), run in pred.groupby(["seed", "epsilon"]):
        logits = run[[f"logit_{c}" for c in range(10)]].to_numpy()
        probs = run[[f"prob_{c}" for c in range(10)]].to_numpy()
        assert np.array_equal(probabilities(logits), probs)
        final = metrics[(metrics["seed"] == seed) & (metrics["epsilon"] == eps)].iloc[-1]
        again = evaluate_logits(logits, run["label"].to_numpy(), eps)
        for name, value in again.items():
            assert final[name] == value, name
        bins = rel[(rel["seed"] == seed) & (rel["epsilon"] == eps)]
        assert bins["count"].tolist() == reliability_table(probs, run["label"].to_numpy())["count"]


def test_reliability_and_predictions_tables(workdir):
    rel = pd.read_parquet(workdir / "results" / "reliability.parquet")
    assert list(rel.columns) == ["seed", "epsilon", "bin", "bin_lower", "bin_upper", "count",
                                 "mean_confidence", "accuracy"]
    assert len(rel) == 4 * 15
    assert (rel.groupby(["seed", "epsilon"])["count"].sum() == N_TEST).all()
    pred = pd.read_parquet(workdir / "results" / "predictions.parquet")
    assert list(pred.columns) == (["seed", "epsilon", "index", "label"] + [f"logit_{c}" for c in range(10)]
                                  + [f"prob_{c}" for c in range(10)])
    assert pred["logit_0"].dtype == "float32" and pred["prob_0"].dtype == "float64"
    assert len(pred) == 4 * N_TEST
    sums = pred[[f"prob_{c}" for c in range(10)]].sum(axis=1)
    assert (sums - 1).abs().max() < 1e-5
    cal = pd.read_parquet(workdir / "results" / "calibrated.parquet")
    assert list(cal.columns) == ["seed", "epsilon", "temperature", "ece_ts", "nll_ts", "mean_confidence_ts"]
    assert len(cal) == 4 and cal["temperature"].between(0.05, 20).all() and cal["ece_ts"].between(0, 1).all()


def test_report_is_self_contained(workdir):
    html = (workdir / "report" / "index.html").read_text()
    for section in ('id="headline"', 'id="summary"', 'id="statistics"', 'id="vs-epsilon"', 'id="curves"',
                    'id="temperature"', 'id="reliability"', 'id="confidence"', 'id="sample"',
                    'id="provenance"'):
        assert section in html
    assert html.count("data:image/png;base64,") == 6
    assert "ece_ts" in html.split('id="temperature"')[1].split("</section>")[0]
    assert "http://" not in html and "https://" not in html


def test_provenance_tables(workdir):
    env = pd.read_parquet(workdir / "results" / "environment.parquet")
    assert len(env) == 4 and set(env["device"]) == {"cpu"}
    for column in ("python", "torch", "torchvision", "pandas", "cpu_model", "data_sha256", "job_seconds"):
        assert env[column].notna().all(), column
    data = json.loads((workdir / "results" / "data" / "fashion_mnist.json").read_text())
    assert set(env["data_sha256"]) == {data["sha256"]}
    prov = pd.read_parquet(workdir / "results" / "provenance.parquet")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert len(prov) == 1 and prov.loc[0, "git_commit"].startswith(head)
    config = yaml.safe_load(prov.loc[0, "config_yaml"])
    # The config as validated: the --config strings arrive typed, defaults are filled in.
    assert config["seeds"] == [0, 1] and config["epsilons"] == [0.0, 0.2] and config["epochs"] == 2
    assert config["lr"] == 0.001 and config["model"] == "mlp"
    assert prov.loc[0, "snakemake"].startswith("9.")


def test_second_run_does_nothing(workdir):
    run = snakemake(workdir, "-n", "--config", *GRID)
    assert run.returncode == 0
    assert "Nothing to be done" in run.stdout + run.stderr


def test_default_grid_has_15_train_jobs(workdir):
    run = snakemake(workdir, "-n", "--forceall")
    assert run.returncode == 0, run.stderr[-2000:]
    line = next(l for l in run.stdout.splitlines() if l.strip().startswith("train "))
    assert line.split()[1] == "15"


@pytest.mark.parametrize("override,needles", [
    ("epsilons=[0.0,1.5]", ["epsilons[1]", "1.5", "[0, 1)"]),
    ("epsilons=[0.1,0.1]", ["epsilons", "non-unique"]),
    ("seeds=[0,-2]", ["seeds[1]", "-2", "non-negative"]),
    ("seeds=[3,3]", ["seeds", "non-unique"]),
    ("epochs=0", ["epochs", "0", ">= 1"]),
    ("batch_size=0", ["batch_size", "0", ">= 1"]),
    ("lr=-1", ["lr", "-1", "> 0"]),
    ("validation_size=60000", ["validation_size", "60000", "smaller than the training set"]),
    ("model=resnet", ["model", "'resnet'", "mlp, linear"]),
    ("device=gpu", ["device", "'gpu'", "auto, cpu, cuda"]),
    ("epoch=3", ["'epoch' was unexpected", "Allowed keys"]),
])
def test_bad_config_fails_before_any_job(tmp_path, override, needles):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    # A real run for two cases, a dry run (`snakemake -n`) for the rest: both validate first.
    dry_run = override not in ("epsilons=[0.0,1.5]", "epoch=3")
    run = snakemake(tmp_path, *(["-n"] if dry_run else []), "--config", override)
    out = run.stdout + run.stderr  # Snakemake prints workflow errors on stdout
    assert run.returncode != 0
    for needle in needles:
        assert needle in out, (needle, out[-2000:])
    assert not (tmp_path / "results").exists()
