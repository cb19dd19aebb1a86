"""How `lsbench collect` and `lsbench report` scale with the number of runs: wall time and peak memory.

    python benchmarks/report_scale.py [--runs 25 250 2000] [--work /tmp/report_scale] [--keep]

For each N it writes N synthetic run directories as `lsbench train` leaves them (tests/synthetic.py's
generator: 10 classes, 10,000 test images per run as Fashion-MNIST's test set, 5,000 OOD images for
every run), then runs `lsbench collect` and `lsbench report` as subprocesses of the
Python this script runs under (set PYTHONPATH to choose the lsbench) and prints each one's wall time
and peak resident memory (the child's own ru_maxrss, from os.wait4). The grid is 5 seeds x studies x
label-smoothing settings: 25 runs = 1 study x 5 settings; 250 = 2 x 25; 2,000 = 16 x 25 (N must be a
multiple of 5). Runs of one seed and setting share their numbers across studies (generated once), so
writing 2,000 runs takes minutes, not hours; the report computes each study anyway.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEEDS = 5
MAX_SETTINGS = 25  # label-smoothing settings per study, cross-entropy included
DATASETS = ("fashion_mnist", "mnist", "kmnist", "cifar10")
MODELS = ("mlp", "cnn", "resnet", "vit")


def grid_shape(n_runs: int) -> tuple[int, int]:
    """(studies, settings) with SEEDS x studies x settings = n_runs, the fewest studies that keep
    settings <= MAX_SETTINGS. ValueError when n_runs is not a positive multiple of SEEDS."""
    if n_runs < SEEDS or n_runs % SEEDS:
        raise ValueError(f"--runs {n_runs}: a positive multiple of {SEEDS} (the seeds)")
    per_seed = n_runs // SEEDS
    studies = next(s for s in range(1, per_seed + 1) if per_seed % s == 0 and per_seed // s <= MAX_SETTINGS)
    if studies > len(DATASETS) * len(MODELS):
        raise ValueError(f"--runs {n_runs}: at most {SEEDS * MAX_SETTINGS * len(DATASETS) * len(MODELS)}")
    return studies, per_seed // studies


def write_runs(n_runs: int, out: Path, n_test: int = 10_000) -> list[Path]:
    """N run directories under `out` (runs/<study>/<setting>/seed<s>), as training writes them."""
    sys.path.insert(0, str(ROOT / "tests"))
    from synthetic import make_tables  # tests/synthetic.py

    from lsbench import io

    n_studies, n_settings = grid_shape(n_runs)
    epsilons = [0.0, *(round(float(e), 4) for e in np.linspace(0.02, 0.48, n_settings - 1))]
    template = make_tables(seeds=range(SEEDS), epsilons=epsilons, n_test=n_test, num_classes=10,
                           sharpness=lambda eps: 2.0 - 3.5 * eps)
    studies = [(d, m) for m in MODELS for d in DATASETS][:n_studies]
    run_dirs = []
    for name in io.TABLES:
        frame = getattr(template, name)
        for key, rows in frame.groupby(io.KEY, sort=False):
            for dataset, model in studies:
                d = out / "runs" / f"{dataset}-{model}" / f"{key[2]}{key[3]}" / f"seed{key[4]}"
                if name == "runs":
                    run_dirs.append(d)
                io.write_parquet(rows.assign(dataset=dataset, model=model), d / f"{name}.parquet")
        # Runs without an OOD set still write an (empty) OOD table.
        for d in run_dirs:
            if not (d / f"{name}.parquet").exists():
                io.write_parquet(frame.iloc[:0], d / f"{name}.parquet")
    return run_dirs


def measure(command: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of `command` run to its end; SystemExit naming `log` when it fails."""
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... exited {child.returncode}; see {log}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[25, 250, 2000], help="grid sizes (multiples of 5)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/report_scale"), help="scratch folder (replaced)")
    parser.add_argument("--keep", action="store_true", help="keep each grid's files")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_only:  # in a child: a parent that held the tables would pass its peak on to the measured ones
        run_dirs = write_runs(args.runs[0], args.work)
        (args.work / "run_dirs.txt").write_text("\n".join(map(str, run_dirs)) + "\n")
        return
    for n in args.runs:
        try:
            grid_shape(n)
        except ValueError as exc:
            parser.error(str(exc))
    lsbench = [sys.executable, "-m", "lsbench"]
    print("runs  studies  predictions_MB  write_s  collect_s  collect_peak_MB  report_s  report_peak_MB", flush=True)
    for n in args.runs:
        work = args.work / f"n{n}"
        shutil.rmtree(work, ignore_errors=True)
        at = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--write-only", "--runs", str(n), "--work", str(work)], check=True)
        run_dirs = (work / "run_dirs.txt").read_text().split()
        written = time.perf_counter() - at
        collect = measure([*lsbench, "collect", "--out-dir", str(work / "results"), "--", *run_dirs],
                          work / "collect.log")
        report = measure([*lsbench, "report", str(work / "results"), "-o", str(work / "report" / "index.html")],
                         work / "report.log")
        size = (work / "results" / "predictions.parquet").stat().st_size / 1e6
        print(f"{n:>4}  {grid_shape(n)[0]:>7}  {size:>14.0f}  {written:>7.0f}  {collect[0]:>9.1f}  {collect[1]:>15.0f}"
              f"  {report[0]:>8.1f}  {report[1]:>14.0f}", flush=True)
        if not args.keep:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
