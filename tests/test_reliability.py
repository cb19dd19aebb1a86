"""A crash loses nothing, reruns are exact, failures leave no half-written files."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from lsbench import io
from lsbench.cli import main as cli_main
from lsbench.report import render
from lsbench.tables import Tables, read_tables

import conftest
from conftest import HUNG_S, run_file, write_tiny_root


def workflow_dir(root: Path, **overrides) -> Path:
    return conftest.workflow_dir(root, idx={"n_train": 2048, "n_test": 64}, seeds=[0], epsilons=[0.0], ood=None,
                                 batch_size=8, validation_size=256, **overrides)


TABLES = "results/metrics.parquet"  # one of collect's outputs: asking for it makes every table


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return conftest.snakemake_cmd(workdir, "--cores", "1", *args)


def run_ok(workdir: Path, *args: str) -> None:
    run = subprocess.run(snakemake_cmd(workdir, *args), capture_output=True, text=True, timeout=HUNG_S)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0


def job_pids(pattern: str, workdir: Path) -> list[int]:
    """PIDs of processes matching `pattern` that run in `workdir` (other tests may run jobs too)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    pids = []
    for pid in map(int, out.split()):
        try:
            if Path(f"/proc/{pid}/cwd").resolve() == workdir.resolve():
                pids.append(pid)
        except OSError:  # it ended meanwhile
            pass
    return pids


def test_kill_minus_9_mid_run_then_rerun_resumes_exactly(tmp_path):
    killed = workflow_dir(tmp_path / "killed", epochs=6)
    # The tables are the target (collect's outputs): the report adds nothing to what is compared.
    proc = subprocess.Popen(snakemake_cmd(killed, TABLES), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + HUNG_S
    while checkpoint_epoch(run_file(killed, "checkpoint.pt", eps="0.0")) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    ckpt = run_file(killed, "checkpoint.pt", eps="0.0")
    assert checkpoint_epoch(ckpt) >= 2, "the train job never reached epoch 2"
    pids = job_pids("lsbench train", killed)
    assert pids, "no running train job to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=HUNG_S)
    assert proc.returncode != 0  # the workflow saw its job die
    metrics = run_file(killed, "metrics.parquet", eps="0.0")
    assert not metrics.exists()
    done_before = checkpoint_epoch(ckpt)
    assert 2 <= done_before < 6
    run_ok(killed, TABLES)
    definition = ckpt.parent.parent.parent.parent.name
    log = (killed / "results" / "logs" / "train" / "fashion_mnist" / "mlp" / definition / "seed0"
           / "cross_entropy-p0.0.log").read_text()
    assert "resuming from" in log and f"after epoch {done_before}" in log
    assert not ckpt.exists()  # removed once the run is done

    straight = workflow_dir(tmp_path / "straight", epochs=6)
    run_ok(straight, TABLES)
    env = pd.read_parquet(killed / "results" / "environment.parquet")
    assert env.loc[0, "resumed_after_epoch"] == done_before  # provenance says the run was resumed
    for table in io.RESULT_TABLES:
        a = pd.read_parquet(killed / "results" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        b = pd.read_parquet(straight / "results" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_two_runs_give_identical_results(tmp_path):
    first, second = (workflow_dir(tmp_path / name, epochs=2) for name in ("a", "b"))
    run_ok(first, TABLES)
    run_ok(second, TABLES)
    a = pd.read_parquet(first / "results" / "metrics.parquet")
    b = pd.read_parquet(second / "results" / "metrics.parquet")
    pd.testing.assert_frame_equal(a.drop(columns="epoch_seconds"), b.drop(columns="epoch_seconds"), check_exact=True)
    for table in ("reliability", "predictions"):  # no timing columns: the files are byte-identical
        assert (first / "results" / f"{table}.parquet").read_bytes() == (second / "results" / f"{table}.parquet").read_bytes()


def half_write(table, path, **kwargs):
    """pyarrow's writer killed half-way: some bytes land, then it fails."""
    Path(path).write_bytes(b"PAR1 half a file")
    raise OSError("disk full")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "metrics.parquet"
    target.parent.mkdir()
    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        io.write_parquet(pd.DataFrame({"a": [1]}), target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_existing_file_survives_a_failed_rewrite(tmp_path, monkeypatch):
    target = tmp_path / "metrics.parquet"
    io.write_parquet(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()
    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        io.write_parquet(pd.DataFrame({"a": [2]}), target)
    assert target.read_bytes() == before


def _tables_with_divergence(tmp_path: Path, tiny_dataset_file: Path, lr: float) -> Tables:
    from lsbench.config import TrainConfig
    from lsbench.pipeline import collect

    ok = TrainConfig(epochs=2, batch_size=32, device="cpu")
    bad = TrainConfig(epochs=5, batch_size=32, lr=lr, device="cpu")
    conftest.train_run(tiny_dataset_file, tmp_path / "r0", 0, 0.0, ok)
    conftest.train_run(tiny_dataset_file, tmp_path / "r1", 0, 0.2, bad)
    collect([tmp_path / "r0", tmp_path / "r1"], tmp_path / "results", lambda m: None)
    return read_tables(tmp_path / "results")


@pytest.mark.parametrize("lr,reason", [(1e30, "non-finite training loss"),
                                       (10.0, "above 100 × log(10) = 230 (100 times a uniform guess)")])
def test_diverged_run_is_recorded_and_reported_with_its_reason(tmp_path, tiny_dataset_file, lr, reason):
    tables = _tables_with_divergence(tmp_path, tiny_dataset_file, lr)
    diverged = tables.metrics[tables.metrics["param"] == 0.2]
    assert diverged["diverged"].iloc[-1] and len(diverged) < 5
    html = render(tables)
    section = html.split('id="diverged"')[1].split("</section>")[0]
    assert "seed 0, label smoothing ε = 0.2" in section and reason in section
    assert ("non-finite" in section) == ("non-finite" in reason)  # the test that fired, not the other
    # The diverged run is out of the summary table: only cross-entropy has a row.
    summary = html.split('id="fashion_mnist-mlp-summary"')[1].split("</section>")[0]
    assert "<td>cross-entropy</td>" in summary and "ε = 0.2" not in summary


def test_cli_reports_bad_data_without_traceback(tmp_path, capsys):
    root = write_tiny_root(tmp_path / "root")
    (root / "FashionMNIST/raw/train-labels-idx1-ubyte.gz").unlink()
    out = tmp_path / "data" / "ds.npz"
    assert cli_main(["prepare-data", "--dataset", "fashion_mnist", "--data-root", str(root), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "train-labels-idx1-ubyte" in err and "Traceback" not in err
    assert not out.exists()


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    """A write that the OS refuses (here a file-size limit, as a full disk refuses with ENOSPC)."""
    root = write_tiny_root(tmp_path / "root")
    out = tmp_path / "cache" / "fashion_mnist.npz"
    # bash's ulimit -f counts 1024-byte blocks: the 250 kB cache cannot be written. Python ignores
    # SIGXFSZ, so the write fails with EFBIG instead of killing the process.
    run = subprocess.run(["bash", "-c", 'ulimit -f 100; exec "$0" -m lsbench prepare-data --dataset fashion_mnist '
                          '--data-root "$1" --out "$2"', sys.executable, str(root), str(out)],
                         capture_output=True, text=True, timeout=HUNG_S)
    assert run.returncode == 1
    err = run.stderr.strip().splitlines()
    assert err == [f"lsbench prepare-data: error: {out}: File too large"], err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_kill_minus_9_during_collect_then_rerun_rebuilds_the_tables(tmp_path):
    wd = workflow_dir(tmp_path / "wf", epochs=1)
    run_ok(wd)  # a finished run with its report, as in the bug report; then collect is redone and killed
    proc = subprocess.Popen(snakemake_cmd(wd, "--forcerun", "collect"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, pids = time.time() + HUNG_S, []
    while not pids and proc.poll() is None and time.time() < deadline:
        pids = job_pids("lsbench collect --out-dir results", wd)
        time.sleep(0.02)
    assert pids, "collect never started"
    time.sleep(0.3)  # collect is importing pandas or writing the tables now
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=HUNG_S) != 0  # the workflow saw its job die
    run_ok(wd)  # no --forcerun: the missing tables alone must bring collect back
    for table in io.PUBLISHED:
        assert (wd / "results" / f"{table}.parquet").exists(), table
    assert len(read_tables(wd / "results").runs) == 1  # whole, consistent tables
    dry = subprocess.run(snakemake_cmd(wd, "-n"), capture_output=True, text=True, timeout=HUNG_S)
    assert "Nothing to be done" in dry.stdout + dry.stderr
