"""End to end: the real Snakefile on tiny data (IDX files it writes, and scikit-learn's digits), in a
temporary working directory: 2 datasets x 2 models x 2 seeds x 2 epsilons."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import HUNG_S, LAYOUT, REPO, copy_config, run_file, snakemake_cmd, workflow_dir, write_tiny_idx

GRID = ["datasets=[fashion_mnist,digits]", "models=[mlp,lenet]", "seeds=[0,1]", "epsilons=[0.0,0.2]",
        "epochs=2", "batch_size=32", "validation_size={fashion_mnist: 32, digits: 0.1}",
        "shifts=[rotation,contrast]", "shift_images=50"]
N_TEST = 64
STUDIES = {("fashion_mnist", "mlp"), ("fashion_mnist", "lenet"), ("digits", "mlp"), ("digits", "lenet")}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, "--cores", "2", *args), capture_output=True, text=True,
                          timeout=HUNG_S)


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def jobs(run: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: count} from a dry run's job table."""
    counts = {}
    for line in run.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    wd = workflow_dir(tmp_path_factory.mktemp("wf"), idx={"n_test": N_TEST}, datasets=["fashion_mnist", "digits"])
    # The grid comes in as `--config` strings, exactly as a user overrides it.
    run = snakemake(wd, "--config", *GRID)
    assert run.returncode == 0, output(run)[-3000:]
    (wd / "terminal.txt").write_text(output(run))  # what the user saw
    return wd


def test_the_terminal_shows_every_epoch_of_every_job_as_a_whole_line(workdir):
    # Two train jobs at a time (--cores 2) write to one terminal: each line must come out whole.
    lines = [line for line in (workdir / "terminal.txt").read_text().splitlines() if "train_loss" in line]
    whole = re.compile(r"^[a-z_]+ \S+ .+ seed \d+ epoch \d+/\d+: train_loss \d+\.\d{4} test_nll \d+\.\d{4} "
                       r"acc \d\.\d{4} ece \d\.\d{4} conf \d\.\d{4} \(\d+\.\d\d s\)$")
    assert [line for line in lines if not whole.match(line)] == []
    assert len(lines) == len(read(workdir, "metrics"))  # once per run and epoch, not twice
    # The job's log has them too, after its start-up line.
    log = next((workdir / "results" / "logs" / "train").rglob("*.log")).read_text().splitlines()
    assert log[0].startswith("training ") and "epoch 1/" in log[1]


def read(workdir: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(workdir / "results" / f"{table}.parquet")


def test_metrics_table(workdir):
    df = read(workdir, "metrics")
    expected = ["dataset", "model", "method", "param", "seed", "epoch", "train_loss", "test_loss", "test_nll",
                "accuracy", "ece", "mce", "mean_confidence", "overconfidence", "brier", "entropy", "epoch_seconds"]
    assert set(expected) <= set(df.columns) and list(df.columns[:5]) == expected[:5]
    assert len(df) == 4 * 2 * 2 * 2
    assert set(map(tuple, df[["dataset", "model"]].drop_duplicates().to_numpy())) == STUDIES
    assert sorted(df["seed"].unique()) == [0, 1] and sorted(df["param"].unique()) == [0.0, 0.2]
    assert set(df[["method", "param"]].itertuples(index=False, name=None)) == {("cross_entropy", 0.0),
                                                                                ("label_smoothing", 0.2)}
    assert sorted(df["epoch"].unique()) == [1, 2]
    assert df["seed"].dtype == "int64" and df["epoch"].dtype == "int64" and df["param"].dtype == "float64"
    for col in ("accuracy", "ece", "mce", "mean_confidence"):
        assert df[col].between(0, 1).all(), col
    assert df["brier"].between(0, 2).all() and (df["entropy"] >= 0).all() and (df["epoch_seconds"] > 0).all()
    assert (df["overconfidence"] - (df["mean_confidence"] - df["accuracy"])).abs().max() < 1e-12
    assert not df["diverged"].any()


def test_runs_table_records_each_run(workdir):
    runs = read(workdir, "runs")
    assert len(runs) == 16
    digits = runs[runs["dataset"] == "digits"]
    assert (digits["n_validation"] == 143).all() and (digits["n_test"] == 360).all()  # 10 % of 1437
    assert (digits["image_shape"] == "1x8x8").all()
    fashion = runs[runs["dataset"] == "fashion_mnist"]
    assert (fashion["n_validation"] == 32).all() and (fashion["n_test"] == N_TEST).all()
    assert json.loads(fashion["class_names"].iloc[0])[0] == "T-shirt/top"
    assert json.loads(digits["class_names"].iloc[0]) == [str(d) for d in range(10)]
    for dataset, group in runs.groupby("dataset"):
        (summary_file,) = (workdir / "results" / "data").glob(f"{dataset}-*.json")  # the cache's fingerprint
        summary = json.loads(summary_file.read_text())
        assert set(group["data_sha256"]) == {summary["sha256"]} and summary["dataset"] == dataset


def test_final_metrics_recompute_from_predictions_alone(workdir):
    """One probability path: every final-epoch number follows from predictions.parquet exactly."""
    from lsbench.metrics import evaluate_logits, probabilities, reliability_table

    pred, metrics, rel = read(workdir, "predictions"), read(workdir, "metrics"), read(workdir, "reliability")
    for (dataset, model, method, eps, seed), run in pred.groupby(["dataset", "model", "method", "param", "seed"]):
        logits = run[[f"logit_{c}" for c in range(10)]].to_numpy()
        probs = run[[f"prob_{c}" for c in range(10)]].to_numpy()
        assert np.array_equal(probabilities(logits), probs)
        mine = (metrics["dataset"] == dataset) & (metrics["model"] == model) & (metrics["seed"] == seed) \
            & (metrics["method"] == method) & (metrics["param"] == eps)
        final = metrics[mine].iloc[-1]
        for name, value in evaluate_logits(logits, run["label"].to_numpy()).items():
            assert final[name] == value or (np.isnan(final[name]) and np.isnan(value)), name
        bins = rel[(rel["dataset"] == dataset) & (rel["model"] == model) & (rel["seed"] == seed)
                   & (rel["method"] == method) & (rel["param"] == eps)]
        assert bins["count"].tolist() == reliability_table(probs, run["label"].to_numpy())["count"]


def test_reliability_and_predictions_tables(workdir):
    rel = read(workdir, "reliability")
    assert list(rel.columns) == ["dataset", "model", "method", "param", "seed", "bin", "bin_lower", "bin_upper", "count",
                                 "mean_confidence", "accuracy"]
    assert len(rel) == 16 * 15
    counts = rel.groupby(["dataset", "model", "method", "param", "seed"])["count"].sum()
    assert set(counts.groupby(level="dataset").unique().map(tuple)) == {(N_TEST,), (360,)}
    pred = read(workdir, "predictions")
    assert list(pred.columns) == (["dataset", "model", "method", "param", "seed", "index", "label"]
                                  + [f"logit_{c}" for c in range(10)] + [f"prob_{c}" for c in range(10)])
    assert pred["logit_0"].dtype == "float32" and pred["prob_0"].dtype == "float64"
    assert len(pred) == 8 * N_TEST + 8 * 360
    assert (pred[[f"prob_{c}" for c in range(10)]].sum(axis=1) - 1).abs().max() < 1e-12
    cal = read(workdir, "calibrated")
    assert list(cal.columns[:9]) == ["dataset", "model", "method", "param", "seed", "temperature",
                                     "temperature_at_bound", "ece_ts", "nll_ts"]
    assert (cal["val_nll"] > 0).all()
    assert len(cal) == 16 and (cal["temperature"] > 0).all() and np.isfinite(cal["temperature"]).all()
    assert cal["ece_ts"].between(0, 1).all()


def test_report_is_self_contained_with_a_section_per_study(workdir):
    html = (workdir / "report" / "index.html").read_text()
    assert 'id="studies"' in html and 'id="provenance"' in html
    for dataset, model in STUDIES:
        for section in ("methods", "headline", "summary", "statistics", "temperature", "reliability", "sample"):
            assert f'id="{dataset}-{model}-{section}"' in html
    # 7 per study, risk-coverage per study, OOD (fashion_mnist's 2), a shift gallery per dataset and
    # the severity figure and heat map per study.
    assert html.count("data:image/png;base64,") == 7 * 4 + 4 + 2 + 2 + 2 * 4
    assert "http://" not in html and "https://" not in html


def test_ood_and_findings(workdir):
    ood = read(workdir, "ood")
    # fashion_mnist's default OOD set is digits; digits has none.
    assert set(ood["dataset"]) == {"fashion_mnist"} and set(ood["ood_set"]) == {"digits"}
    assert len(ood) == 2 * 2 * 2 * 3 and set(ood["score"]) == {"msp", "max_logit", "energy"}
    assert ood["auroc"].between(0, 1).all() and ood["fpr95"].between(0, 1).all()
    ood_pred = read(workdir, "ood_predictions")
    assert len(ood_pred) == 8 * 360  # the digits test split, resized to 28x28, for every fashion_mnist run
    cal = read(workdir, "calibrated")
    assert (cal["ece_low"] <= cal["ece_high"]).all() and (cal["smece_low"] <= cal["smece_high"]).all()
    records = json.loads((workdir / "report" / "findings.json").read_text())["findings"]
    chosen = [r for r in records if r["id"] == "method_setting"]
    assert {(r["dataset"], r["model"]) for r in chosen} == STUDIES
    assert all((r["setting_of"], r["selection"], r["candidates"]) == ("label_smoothing", "val_nll", 2) for r in chosen)
    assert all((r["method"], r["param"]) in {("label_smoothing", 0.2), ("cross_entropy", 0.0)} for r in chosen)
    assert {(r["dataset"], r["model"]) for r in records if r["id"] == "best_method"} == STUDIES


def test_provenance_tables(workdir):
    env = read(workdir, "environment")
    assert len(env) == 16 and set(env["device"]) == {"cpu"}
    for column in ("python", "torch", "torchvision", "pandas", "cpu_model", "data_source", "job_seconds"):
        assert env[column].notna().all(), column
    prov = read(workdir, "provenance")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert len(prov) == 1 and prov.loc[0, "git_commit"].startswith(head)
    config = yaml.safe_load(prov.loc[0, "config_yaml"])
    # The config as validated: the --config strings arrive typed, defaults are filled in.
    assert config["seeds"] == [0, 1] and config["methods"] == {"label_smoothing": [0.0, 0.2]} and config["epochs"] == 2
    assert config["lr"] == 0.001 and config["models"] == ["mlp", "lenet"]
    assert config["validation_size"] == {"fashion_mnist": 32, "digits": 0.1}
    assert prov.loc[0, "snakemake"].startswith("9.")


def test_second_run_does_nothing(workdir):
    run = snakemake(workdir, "-n", "--config", *GRID)
    assert run.returncode == 0 and "Nothing to be done" in output(run)


def test_execution_settings_rerun_nothing(workdir):
    run = snakemake(workdir, "-n", "--config", *GRID, "keep_checkpoints=true", "device=cpu", "threads=2")
    assert run.returncode == 0 and "Nothing to be done" in output(run), output(run)[-2000:]


@pytest.mark.parametrize("override,trains", [("lr=0.002", 16),
                                             ("validation_size={fashion_mnist: 16, digits: 0.1}", 8)])
def test_settings_that_change_numbers_rerun_training(workdir, override, trains):
    grid = [g for g in GRID if g.split("=")[0] != override.split("=")[0]]
    run = snakemake(workdir, "-n", "--config", *grid, override)
    assert run.returncode == 0, output(run)[-2000:]
    assert jobs(run).get("train") == trains, run.stdout[-2000:]


def test_default_grid_has_25_train_jobs(workdir):
    # The test directory's config switches shifts off (conftest.workflow_dir); the repo's default is all.
    assert yaml.safe_load((REPO / "config" / "config.yaml").read_text())["shifts"] == "all"
    run = snakemake(workdir, "-n", "--forceall", "--config", "datasets=[fashion_mnist]", "models=[mlp]",
                    "validation_size=32", "shifts=all")
    assert run.returncode == 0, output(run)[-2000:]
    assert jobs(run)["train"] == 25  # 5 epsilons x 5 seeds
    # The whole shift suite by default: one shifted test set per dataset, one evaluation per run
    # (each starts as soon as its run has trained).
    assert jobs(run)["shift_data"] == 1 and jobs(run)["evaluate_shifts"] == 25


def test_shift_tables(workdir):
    shift = read(workdir, "shift")
    runs = read(workdir, "runs")
    assert len(shift) == len(runs) * (1 + 2 * 5)
    assert set(shift["shift"]) == {"none", "rotation", "contrast"} and sorted(shift["severity"].unique()) == [0, 1, 2,
                                                                                                         3, 4, 5]
    assert (shift.loc[shift["dataset"] == "fashion_mnist", "n_images"] == 50).all()
    assert shift["accuracy"].between(0, 1).all() and shift["ece_ts"].notna().all()
    gallery = read(workdir, "shift_gallery")
    assert len(gallery) == 2 * (1 + 2 * 5) and set(gallery["height"]) == {28, 8}
    html = (workdir / "report" / "index.html").read_text()
    assert '<section id="shift">' in html and "Distribution shift" in html
    assert (workdir / "report" / "figures" / "fashion_mnist-shift-gallery.svg").is_file()


def _src_copy(tmp_path: Path, edit) -> dict:
    """An environment whose lsbench is a copy of this one's with `edit(text)` applied to shifts.py."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "lsbench", src / "lsbench")
    path = src / "lsbench" / "shifts.py"
    path.write_text(edit(path.read_text()))
    return {**os.environ, "PYTHONPATH": str(src)}


def test_a_shift_change_reevaluates_and_never_retrains(workdir, tmp_path):
    added = snakemake(workdir, "-n", "--config", *GRID[:-2], "shifts=[rotation,contrast,fog]", "shift_images=50")
    assert added.returncode == 0, output(added)[-2000:]
    counts = jobs(added)
    assert counts.get("shift_data") == 2 and counts.get("evaluate_shifts") == 16, counts
    assert "train" not in counts and "prepare_data" not in counts
    # One severity constant of one shift edited: the suite's hash, so every shifted set, changes.
    env = _src_copy(tmp_path, lambda t: t.replace("(0.4, 0.3, 0.2, 0.1, 0.05)", "(0.4, 0.3, 0.2, 0.1, 0.06)"))
    edited = subprocess.run(snakemake_cmd(workdir, "--cores", "2", "-n", "--config", *GRID), capture_output=True,
                            text=True, timeout=HUNG_S, env=env)
    counts = jobs(edited)
    assert counts.get("shift_data") == 2 and counts.get("evaluate_shifts") == 16, output(edited)[-2000:]
    assert "train" not in counts


def test_switching_shifts_off_removes_their_tables(workdir, tmp_path):
    wd = copy_workdir(workdir, tmp_path)
    run = snakemake(wd, "--config", *GRID[:-2], "shifts=null")
    assert run.returncode == 0, output(run)[-2000:]
    assert "rule train" not in output(run) and "rule evaluate_shifts" not in output(run)
    assert not (wd / "results" / "shift.parquet").exists() and not (wd / "results" / "shift_gallery.parquet").exists()
    html = (wd / "report" / "index.html").read_text()
    assert "No shift was evaluated" in html


def copy_workdir(workdir: Path, tmp_path: Path) -> Path:
    """A copy that Snakemake sees as up to date: its metadata is keyed by relative path, data_root
    is relative, and copytree keeps modification times."""
    copy = tmp_path / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    return copy


def test_a_missing_published_table_is_rebuilt(workdir, tmp_path):
    wd = copy_workdir(workdir, tmp_path)
    assert jobs(snakemake(wd, "-n", "--config", *GRID)).get("train") is None
    before = pd.read_parquet(wd / "results" / "metrics.parquet")
    (wd / "results" / "metrics.parquet").unlink()
    run = snakemake(wd, "--config", *GRID)
    assert run.returncode == 0, output(run)[-2000:]
    assert "rule collect" in output(run) and "rule train" not in output(run)
    pd.testing.assert_frame_equal(pd.read_parquet(wd / "results" / "metrics.parquet"), before)


def test_changed_data_is_noticed_even_with_an_older_mtime(workdir, tmp_path):
    wd = copy_workdir(workdir, tmp_path)
    raw = wd / "data" / LAYOUT["fashion_mnist"]
    stamp = os.stat(raw / "t10k-images-idx3-ubyte.gz").st_mtime
    write_tiny_idx(raw, n_test=N_TEST, seed=7)  # other images at the same paths
    for f in raw.iterdir():
        os.utime(f, (stamp - 3600, stamp - 3600))  # older than every output: mtime alone misses it
    run = snakemake(wd, "-n", "--config", *GRID)
    assert run.returncode == 0, output(run)[-2000:]
    counts = jobs(run)
    assert counts.get("prepare_data") == 1 and counts.get("train") == 8  # fashion_mnist's runs only


def test_collect_refuses_runs_that_do_not_match_the_config(workdir, tmp_path):
    wd = copy_workdir(workdir, tmp_path)
    # A run directory whose tables were made otherwise (copied in by hand): collect must notice.
    runs_file = run_file(wd, "runs.parquet", eps="0.2")
    runs = pd.read_parquet(runs_file)
    runs_file.write_bytes(runs.assign(lr=0.005).to_parquet(index=False))
    run = snakemake(wd, "--forcerun", "collect", "--config", *GRID)
    assert run.returncode != 0
    out = output(run)
    assert "do not match the workflow's config" in out and "recorded lr=0.005, the config says 0.001" in out


def test_a_failing_jobs_reason_reaches_the_terminal(tmp_path):
    wd = workflow_dir(tmp_path / "broken")
    bad = wd / "data" / LAYOUT["fashion_mnist"] / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    run = snakemake(wd, "--config", "seeds=[0]", "epsilons=[0.0]", "epochs=1")
    assert run.returncode != 0
    assert "t10k-images-idx3-ubyte.gz: cannot decompress" in output(run)


def test_an_out_of_range_target_path_fails_before_training(workdir, tmp_path):
    wd = copy_workdir(workdir, tmp_path)
    target = "results/runs/fashion_mnist/mlp/0123456789abcdef/seed0/label_smoothing/p1.5/metrics.parquet"
    run = snakemake(wd, target, "--config", *GRID)
    assert run.returncode != 0
    assert "--param = 1.5: not an allowed epsilon for label smoothing. Allowed:" in output(run)
    assert "{0} ∪ [1e-06, 1)" in output(run)  # the range, with the numerical floor of its parameter
    assert not (wd / "results/runs/fashion_mnist/mlp/0123456789abcdef/seed0/label_smoothing/p1.5/checkpoint.pt").exists()


# Several bad keys in one run: validation reports every error at once. Same-key variants need runs of their own.
BAD_CONFIGS = [
    (["epsilons=[0.0,1.5]", "seeds=[0,-2]", "epochs=2.5", "batch_size=0", "lr=nan", "models=[resnet]",
      "datasets=[cifar100]", "device=gpu", "validation_size=-1"],
     ["epsilons[1]", "[0, 1)", "seeds[1]", "[0, 2^32 - 1]", "'epochs' = 2.5", "integer", "batch_size",
      "[1, 1000000]", "'lr' = nan", "not a finite number", "models[0]", "linear, mlp, lenet, resnet20",
      "datasets[0]", "fashion_mnist, mnist, kmnist, cifar10, digits", "'gpu'", "auto, cpu, cuda",
      "at least one training image"]),
    (["epsilons=[0.1,0.1]", "seeds=[9223372036854775808]", "lr=inf", "models=[mlp,mlp]", "epoch=3"],
     ["'epoch' was unexpected", "Allowed keys"]),
    (["epsilons=[0.1,0.1]", "seeds=[9223372036854775808]", "lr=inf", "models=[mlp,mlp]"],
     ["epsilons", "non-unique", "9223372036854775808", "'lr' = inf", "models"]),
    (["data_dir=/x", "model=mlp"], ["'data_dir' was replaced by data_root", "FashionMNIST/raw",
                                    "'model' was replaced by models"]),
    (["ood={fashion_mnist: cifar10}"], ["ood[fashion_mnist]", "3 channel(s)", "same number"]),
]


@pytest.mark.parametrize("overrides,needles", BAD_CONFIGS)
def test_bad_config_fails_before_any_job(tmp_path, overrides, needles):
    copy_config(tmp_path)
    # A real run for the first case, a dry run (`snakemake -n`) for the rest: both validate first.
    dry_run = overrides is not BAD_CONFIGS[0][0]
    run = snakemake(tmp_path, *(["-n"] if dry_run else []), "--config", *overrides)
    out = output(run)  # Snakemake prints workflow errors on stdout
    assert run.returncode != 0
    for needle in needles:
        assert needle in out, (needle, out[-3000:])
    assert not (tmp_path / "results").exists()


MISTYPED = {"epochs=2.0": ("epochs", 2), "data_root=007": ("data_root", "007"),
            "seeds=[4294967295]": ("seeds", [4294967295])}


def test_values_snakemake_mistypes_are_coerced(tmp_path):
    from snakemake.cli import parse_config

    from lsbench.config import load_schema, raw_overrides, validate_config

    copy_config(tmp_path)
    write_tiny_idx(tmp_path / "007" / LAYOUT["fashion_mnist"])  # a data_root must hold the dataset
    run = snakemake(tmp_path, "-n", "--config", *MISTYPED)
    assert run.returncode == 0, output(run)[-2000:]
    # The same path the Snakefile takes, with what Snakemake's parser makes of each override.
    for override, (key, value) in MISTYPED.items():
        config = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text()), **parse_config([override])}
        assert validate_config(config, load_schema(), raw_overrides([override]))[key] == value
    assert validate_config({**yaml.safe_load((REPO / "config" / "config.yaml").read_text()), "data_root": 2024},
                           load_schema())["data_root"] == "2024"


def test_collect_refuses_a_run_twice_and_names_a_missing_table(workdir, tmp_path, capsys):
    from lsbench.cli import main as cli_main

    run = sorted((workdir / "results" / "runs").glob("*/*/*/*/*/*"))[0]  # D/M/definition/seed/method/param
    assert cli_main(["collect", "--out-dir", str(tmp_path / "out"), str(run), str(run)]) == 1
    err = capsys.readouterr().err
    assert "2 run directories hold the same run" in err and str(run) in err and "Traceback" not in err
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "metrics.parquet").unlink()
    assert cli_main(["collect", "--out-dir", str(tmp_path / "out"), str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"{copy / 'metrics.parquet'}: that run has not finished" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_same_data_reached_another_way_reruns_nothing(workdir, tmp_path):
    """A copy of data_root elsewhere, or the same one by its absolute path: the caches' names are
    their content's fingerprint, so nothing is prepared or trained again."""
    wd = copy_workdir(workdir, tmp_path)
    shutil.copytree(wd / "data", wd / "moved")
    for root in ("moved", str(wd / "data")):
        run = snakemake(wd, "-n", "--config", *GRID, f"data_root={root}")
        assert run.returncode == 0 and "Nothing to be done" in output(run), output(run)[-2000:]


def test_without_snakemake_metadata_a_changed_config_still_reruns(workdir, tmp_path):
    """The run's path carries its definition, and collect's manifest the grid's: deleting
    .snakemake/ hides nothing (Snakemake's params trigger needs its metadata)."""
    wd = copy_workdir(workdir, tmp_path)
    shutil.rmtree(wd / ".snakemake")
    assert "Nothing to be done" in output(snakemake(wd, "-n", "--config", *GRID))
    counts = jobs(snakemake(wd, "-n", "--config", *GRID, "lr=0.002"))
    assert counts.get("train") == 16 and counts.get("collect") == 1 and counts.get("report") == 1, counts
    grid = [g for g in GRID if not g.startswith("validation_size")] + ["validation_size={fashion_mnist: 16, digits: 0.1}"]
    assert jobs(snakemake(wd, "-n", "--config", *grid)).get("train") == 8  # fashion_mnist's runs only


def test_a_data_root_that_is_gone_stops_even_a_finished_workflow(workdir, tmp_path):
    wd = copy_workdir(workdir, tmp_path)
    for extra in ((), ("--forceall",)):
        run = snakemake(wd, "-n", *extra, "--config", *GRID, "data_root=data/typo")
        out = output(run)
        assert run.returncode != 0 and "lsbench: error: data_root data/typo: no such directory" in out, out[-2000:]
        assert 'File "' not in out and "Traceback" not in out  # one line, not Snakemake's traceback


def test_switching_back_to_an_earlier_grid_collects_it_again(workdir, tmp_path):
    """Only the grid whose tables are in results/ has a manifest, so an older one is not taken as current."""
    wd = copy_workdir(workdir, tmp_path)
    small = [g for g in GRID if not g.startswith("seeds")] + ["seeds=[0]"]
    assert snakemake(wd, "--config", *small).returncode == 0
    assert len(read(wd, "runs")) == 8
    run = snakemake(wd, "--config", *GRID)
    assert run.returncode == 0 and "rule train" not in output(run) and "rule collect" in output(run)
    assert len(read(wd, "runs")) == 16 and len(list((wd / "results").glob("grid-*.json"))) == 1


def test_negative_zero_epsilon_is_zero(workdir):
    grid = [g for g in GRID if not g.startswith("epsilons")] + ["epsilons=[-0.0,0.2]"]
    run = snakemake(workdir, "-n", "--config", *grid)
    assert run.returncode == 0 and "Nothing to be done" in output(run), output(run)[-2000:]


def test_yaml_octal_numbers_in_a_config_file_are_refused(tmp_path):
    copy_config(tmp_path)
    (tmp_path / "mine.yaml").write_text("seeds: [010, 011]\nood: {fashion_mnist: {digits: 1}}\n".replace(
        "{digits: 1}", "digits"))
    run = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "mine.yaml"))
    out = output(run)
    assert run.returncode != 0 and "config key 'seeds[0]' = 010" in out and "reads 010 as 8" in out, out[-2000:]


def test_a_repeated_key_in_a_config_file_is_refused(tmp_path):
    # PyYAML, and so Snakemake, keeps the last of two `focal:` entries silently (issue 28, item 8).
    copy_config(tmp_path)
    (tmp_path / "mine.yaml").write_text("methods:\n  focal: [1.0]\n  mixup: [0.2]\n  focal: [3.0]\n")
    run = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "mine.yaml"))
    out = output(run)
    assert run.returncode != 0 and "Traceback" not in out, out[-2000:]
    assert f"config key 'methods[focal]' in {tmp_path / 'mine.yaml'}: given twice in one mapping (lines 2 and 4)" in out


USER_NETS = """
import torch
from torch import nn


def small(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))
"""


def test_editing_a_user_models_code_reruns_its_runs(tmp_path):
    wd = workflow_dir(tmp_path / "user", datasets=["digits"], models=["lsbench_wf_nets:small"], seeds=[0],
                      epsilons=[0.0], epochs=1, validation_size=0.1)
    # The factory's module imports a sibling module of the same folder (not a package).
    nets = USER_NETS + "\nfrom lsbench_wf_layers import WIDTH  # noqa: E402\n"
    (wd / "lsbench_wf_nets.py").write_text(nets)
    (wd / "lsbench_wf_layers.py").write_text("WIDTH = 16\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(wd), os.environ.get("PYTHONPATH")) if p)}

    def run(*args):
        return subprocess.run(snakemake_cmd(wd, "--cores", "2", *args), capture_output=True, text=True,
                              timeout=HUNG_S, env=env)

    first = run()
    assert first.returncode == 0, output(first)[-3000:]
    assert "Nothing to be done" in output(run("-n"))
    (wd / "lsbench_wf_layers.py").write_text("WIDTH = 16  # edited: an edit of the model's code\n")
    assert jobs(run("-n")).get("train") == 1
    (wd / "lsbench_wf_nets.py").write_text(nets.replace("16", "64").replace("nn.ReLU()", "nn.Tanh()"))
    assert jobs(run("-n")).get("train") == 1
    assert run().returncode == 0
    runs = read(wd, "runs")
    assert len(runs) == 1 and runs.loc[0, "parameters"] == 64 * 64 + 64 + 64 * 10 + 10


def test_a_methods_grid_trains_each_run_once_around_one_shared_baseline(tmp_path):
    wd = workflow_dir(tmp_path / "methods", datasets=["digits"], models=["linear"], seeds=[0, 1], epochs=1,
                      validation_size=0.2, ood=None)
    methods = "methods={label_smoothing: [0.0, 0.1], focal: [0.0, 2.0], focal_adaptive: null, mixup: [0.2]}"
    run = snakemake(wd, "--config", methods)
    assert run.returncode == 0, output(run)[-3000:]
    runs = read(wd, "runs")
    # Every neutral value (eps 0, gamma 0) is the one cross-entropy run of a seed.
    assert sorted(set(runs[["method", "param"]].itertuples(index=False, name=None))) == [
        ("cross_entropy", 0.0), ("focal", 2.0), ("focal_adaptive", 0.0), ("label_smoothing", 0.1), ("mixup", 0.2)]
    assert len(runs) == 10
    metrics = read(wd, "metrics")
    focal = metrics[metrics["method"] == "focal"]
    assert (focal["test_loss"] < focal["test_nll"]).all()  # its own objective, not the NLL
    html = (wd / "report" / "index.html").read_text()
    assert 'id="digits-linear-methods"' in html and "FLSD-53" in html and "mixup α = 0.2" in html
    records = json.loads((wd / "report" / "findings.json").read_text())["findings"]
    assert {r["setting_of"] for r in records if r["id"] == "method_setting"} == {"label_smoothing", "focal",
                                                                            "focal_adaptive", "mixup"}
    # The shorthand names runs that exist already: nothing trains again.
    again = snakemake(wd, "-n", "--config", "epsilons=[0.0,0.1]")
    assert again.returncode == 0 and "train" not in jobs(again), output(again)[-2000:]
    both = snakemake(wd, "-n", "--config", "epsilons=[0.1]", methods)
    assert both.returncode != 0 and "'methods' and 'epsilons' are both given" in output(both)


def test_braces_and_spaces_in_paths(tmp_path):
    """Snakemake formats rule paths with wildcards: braces in data_root or in the checkout's path must survive."""
    checkout = tmp_path / "re{p}o"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(".git", "results", "report", ".snakemake",
                                                                    "__pycache__", "*.egg-info"))
    wd = workflow_dir(tmp_path / "work", datasets=["fashion_mnist"], seeds=[0], epsilons=[0.0], epochs=1,
                      validation_size=32, ood=None, shifts=["contrast"])
    (wd / "data").rename(wd / "d a{t}a")
    cmd = [a if a != str(REPO / "workflow" / "Snakefile") else str(checkout / "workflow" / "Snakefile") for a in snakemake_cmd(wd)]
    run = subprocess.run([*cmd, "--cores", "2", "--config", "data_root=d a{t}a"], capture_output=True, text=True,
                         timeout=HUNG_S)
    assert run.returncode == 0, output(run)[-3000:]
    assert len(read(wd, "runs")) == 1 and len(read(wd, "shift")) == 1 + 5


def test_a_report_dir_shared_by_two_grids_shows_the_grid_run_last_and_keeps_the_users_files(tmp_path):
    """Two grids with their own results_dir and one report_dir: the report carries its grid, tables,
    lsbench version and code (report/report-<id>.json), so it is rendered again even without
    .snakemake/; Snakemake never empties report/figures or report/tables."""
    wd = workflow_dir(tmp_path / "two", datasets=["digits"], models=["linear"], epsilons=[0.0, 0.1], epochs=1,
                      validation_size=0.1, ood=None)
    grids = {"A": ["results_dir=resA", "seeds=[0,1]"], "B": ["results_dir=resB", "seeds=[0]"]}

    def run(grid, *args, env=None):
        return subprocess.run(snakemake_cmd(wd, "--cores", "2", *args, "--config", *grids[grid]), capture_output=True,
                              text=True, timeout=900, env=env)

    def seeds():
        return json.loads((wd / "report" / "findings.json").read_text())["metadata"]["seeds"]

    mine = {wd / "report" / "figures" / "my-own.svg": "<svg/>", wd / "report" / "tables" / "my-table.csv": "a\n"}
    first = run("A")
    assert first.returncode == 0, output(first)[-3000:]
    for path, text in mine.items():
        path.write_text(text)
    assert run("B").returncode == 0 and seeds() == [0]
    shutil.rmtree(wd / ".snakemake")
    counts = jobs(run("A", "-n"))
    assert counts.get("report") == 1 and "train" not in counts and "collect" not in counts, counts
    assert run("A").returncode == 0 and seeds() == [0, 1]
    assert {path: path.read_text() for path in mine} == mine
    assert len(list((wd / "report").glob("report-*.json"))) == 1
    assert "Nothing to be done" in output(run("A", "-n"))
    # An upgraded lsbench (here: an edit of the code that computes findings) renders again, trains nothing.
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "lsbench", src / "lsbench")
    with (src / "lsbench" / "findings.py").open("a") as f:
        f.write("\n# edited\n")
    counts = jobs(run("A", "-n", env={**os.environ, "PYTHONPATH": str(src)}))
    assert counts.get("report") == 1 and "train" not in counts and "collect" not in counts, counts


def test_results_dir_dot_or_nested_with_report_dir_plans_every_job(tmp_path):
    """"." gave the plan "./runs/..." against the rules' "runs/..." (MissingInputException), a
    results_dir inside report_dir a ChildIOException (report's directory() outputs)."""
    wd = workflow_dir(tmp_path / "paths", datasets=["digits"], models=["linear"], seeds=[0], epsilons=[0.0, 0.1],
                      epochs=1, validation_size=0.1, ood=None)
    for paths in (["results_dir=."], ["results_dir=report/tables"], ["results_dir=report"],
                  ["results_dir=res", "report_dir=res/report"], ["report_dir=."]):
        run = snakemake(wd, "-n", "--config", *paths)
        counts = jobs(run)
        planned = run.returncode == 0 and counts.get("train") == 2 and counts.get("report") == 1
        assert planned, (paths, output(run)[-2000:])
        assert "starts with './'" not in output(run)
