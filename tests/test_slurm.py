"""The workflow submitted to a real one-node SLURM through profiles/slurm.

Starts munged, slurmctld and slurmd on this machine (root, Debian's slurm-wlm), runs the tiny
2 seeds x 2 eps x 2 epochs grid with `snakemake --profile profiles/slurm`, and checks that the
tables equal a local run's. Test-only settings (status command, poll delay, 2-CPU groups for the
2-CPU test node) are passed on the command line so the site profile stays as users get it.
"""

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import slurm_cluster
from conftest import HUNG_S, REPO, snakemake_cmd, workflow_dir
from lsbench.io import RESULT_TABLES

GRID = ["seeds=[0,1]", "epsilons=[0.0,0.2]", "epochs=2", "batch_size=32"]
TEST_ONLY = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
             "--group-components", "train=2"]  # the test node has 2 CPUs: 2 one-thread jobs per group

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():
    c = slurm_cluster.start(cpus=2, memory_mb=8000)
    yield c
    c.stop()


def make_workdir(root: Path) -> Path:
    return workflow_dir(root, idx={"n_test": 64}, validation_size=32, shifts=["contrast"])


def snakemake(workdir: Path, *args: str, config: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(workdir, *args, "--config", *GRID, *config)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=HUNG_S)


def test_slurm_results_equal_local_results(cluster, tmp_path):
    on_slurm = make_workdir(tmp_path / "slurm")
    run = snakemake(on_slurm, "--profile", str(REPO / "profiles" / "slurm"), "--verbose", *TEST_ONLY)
    log = run.stdout + run.stderr
    (tmp_path / "slurm.log").write_text(log)
    assert run.returncode == 0, log[-5000:]
    sbatch = [line for line in log.splitlines() if "sbatch call" in line]
    print("\n".join(sbatch))
    # prepare_data once per dataset (Fashion-MNIST and its default OOD set, digits), the shifted
    # test set, then the 4 train jobs, each with its run's shift evaluation, as 2 groups of 2 runs;
    # collect and report run locally.
    prepare = [line for line in sbatch if "rule_prepare_data" in line]
    # The comment names the wildcards: dataset, then the data's fingerprint.
    datasets = sorted(re.search(r"wildcards_(\w+?)_[0-9a-f]{16}", line).group(1) for line in prepare)
    assert datasets == ["digits", "fashion_mnist"]
    assert len(sbatch) == 5, sbatch
    assert sum("rule_shift_data" in line for line in sbatch) == 1
    assert sum("rule_evaluate_shifts" in line for line in sbatch) == 0  # in its run's group
    groups = [line for line in sbatch if "group_train" in line or "--cpus-per-task=2" in line]
    assert len(groups) == 2 and all(re.search(r"--mem 3000\b", line) for line in groups), sbatch

    local = make_workdir(tmp_path / "local")
    run = snakemake(local, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    for table in (*RESULT_TABLES, "shift"):
        a = pd.read_parquet(on_slurm / "results" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        b = pd.read_parquet(local / "results" / f"{table}.parquet").drop(columns="epoch_seconds", errors="ignore")
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (on_slurm / "report" / "index.html").exists()


# A stand-in for `lsbench` on the jobs' PATH: `train` records its SLURM job, its CUDA_VISIBLE_DEVICES
# and when it ran, holds its GPU a few seconds (so two jobs on two GPUs visibly overlap), then trains
# for real on the CPU (the test machine's GPUs are empty files); every other command passes through.
SHIM = """#!/usr/bin/env bash
if [ "$1" = train ]; then
    echo "start $(date +%s.%N) job=$SLURM_JOB_ID gpus=${CUDA_VISIBLE_DEVICES-unset}" >> "$LSBENCH_GPU_LOG"
    sleep 5
    args=(); for a in "$@"; do [ "$a" = cuda ] && a=cpu; args+=("$a"); done
    "$LSBENCH_REAL" "${args[@]}"; rc=$?
    echo "end $(date +%s.%N) job=$SLURM_JOB_ID" >> "$LSBENCH_GPU_LOG"
    exit $rc
fi
exec "$LSBENCH_REAL" "$@"
"""


def test_two_gpu_train_jobs_run_at_once_each_on_its_own_gpu(cluster, tmp_path):
    import os
    import shutil

    workdir = workflow_dir(tmp_path / "gpu", datasets=["digits"], models=["linear"], validation_size={"digits": 100},
                           ood=None)
    shim = tmp_path / "bin" / "lsbench"
    shim.parent.mkdir()
    shim.write_text(SHIM)
    shim.chmod(0o755)
    gpu_log = tmp_path / "gpu.log"
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "LSBENCH_GPU_LOG": str(gpu_log),
           "LSBENCH_REAL": shutil.which("lsbench")}
    cmd = snakemake_cmd(workdir, "--profile", str(REPO / "profiles" / "slurm"), "--verbose", *TEST_ONLY,
                        "--config", "seeds=[0]", "epsilons=[0.0,0.1]", "epochs=1", "device=cuda")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=HUNG_S, env=env)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:]
    train = [line for line in log.splitlines() if "sbatch call" in line and "rule_train" in line]
    # One sbatch per GPU job, each asking for one GPU (not a group summing them).
    assert len(train) == 2 and all("--gpus=1" in line and "group" not in line for line in train), train
    print("\n".join(train), gpu_log.read_text(), sep="\n")  # shown with pytest -s
    events = [line.split() for line in gpu_log.read_text().splitlines()]
    starts = {e[2]: (float(e[1]), e[3]) for e in events if e[0] == "start"}
    ends = {e[2]: float(e[1]) for e in events if e[0] == "end"}
    assert len(starts) == 2 and starts.keys() == ends.keys(), events
    # Each job sees exactly one device, not the other's.
    devices = sorted(gpus for _, gpus in starts.values())
    assert devices == ["gpus=0", "gpus=1"], events
    # Both ran at once: each started before the other ended.
    (a_start, _), (b_start, _) = starts.values()
    a_end, b_end = (ends[job] for job in starts)
    assert a_start < b_end and b_start < a_end, events


def test_cpu_jobs_declare_no_gpu(cluster, tmp_path):
    # The Kubernetes executor refuses a job that declares `gpu` (even 0) without a manufacturer.
    workdir = make_workdir(tmp_path / "cpu")
    run = snakemake(workdir, "--profile", str(REPO / "profiles" / "slurm"), "-n", config=("device=cpu",))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "gpu=" not in run.stdout and "resources: " in run.stdout
