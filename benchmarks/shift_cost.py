"""The shift stage's cost against training's, from a finished grid's own records.

    python benchmarks/shift_cost.py [results]

Training: each run's `job_seconds` (environment.parquet: the job's wall time from its start-up to
its tables, interpreter start excluded). Shift stage: the wall time Snakemake's `benchmark:` files
record for every shift_data and evaluate_shifts job (results/benchmarks/; the whole job,
interpreter start included, so the ratio is if anything overstated). Prints the sums, per-job
figures and the ratio. The two stages ran under the same conditions only if the machine was as
busy during both; time them side by side for a clean ratio (the README says how it was taken).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def benchmark_seconds(files: list[Path]) -> pd.Series:
    """Wall seconds ("s") of each Snakemake benchmark file, by file."""
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: no benchmark file (was the job run by this version of the workflow?)")
    return pd.Series({str(f): float(pd.read_csv(f, sep="\t")["s"].iloc[-1]) for f in files}, dtype=float)


def main(results: Path) -> None:
    import json

    env = pd.read_parquet(results / "environment.parquet")
    train = env["job_seconds"]
    # The grid's manifest names the shift files collected, so older benchmark files do not count.
    manifest = json.loads(next(results.glob("grid-*.json")).read_text())
    if not manifest.get("shift"):
        raise SystemExit(f"{results}: the grid evaluated no shifts")
    bench = results / "benchmarks"
    shift_data = benchmark_seconds([bench / "shift_data" / Path(p).relative_to("results/data/shifted").with_suffix(".tsv")
                                    for p in manifest["shifted_data"]])
    evaluate = benchmark_seconds([bench / "evaluate_shifts" / Path(p).relative_to("results/shift").with_suffix(".tsv")
                                  for p in manifest["shift"]])
    shift = shift_data.sum() + evaluate.sum()
    print(f"CPU: {env['cpu_model'].iloc[0]}, capability {', '.join(sorted(set(env.get('cpu_capability', ['?']))))}")
    print(f"training: {len(train)} jobs, {train.sum():.0f} s in all (mean {train.mean():.1f} s, "
          f"min {train.min():.1f}, max {train.max():.1f})")
    print(f"shift_data: {len(shift_data)} job(s), {shift_data.sum():.1f} s; evaluate_shifts: {len(evaluate)} job(s), "
          f"{evaluate.sum():.1f} s")
    print(f"shift stage / training = {shift:.0f} s / {train.sum():.0f} s = {shift / train.sum():.1%}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results"))
