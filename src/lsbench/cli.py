"""`lsbench` command line: one subcommand per workflow stage, plus `report` for published results.

Errors the user can fix (bad data, bad config, missing device) print one clear message and exit 1
instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lsbench.config import ConfigError, TrainConfig
from lsbench.data import DataError


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    p.add_argument("--data", type=Path, required=True, help="cached dataset from prepare-data")
    p.add_argument("--out-dir", type=Path, required=True, help="run directory for the three tables")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epsilon", type=float, required=True)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--model", default=defaults.model)
    p.add_argument("--device", default=defaults.device)
    p.add_argument("--threads", type=int, default=defaults.threads)
    p.add_argument("--validation-size", type=int, default=defaults.validation_size,
                   help="training images held out to fit a temperature (0: none)")
    p.add_argument("--keep-checkpoint", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare-data", help="decode, validate and cache Fashion-MNIST")
    p.add_argument("--data-dir", default=None, help="directory with the four IDX files (optional)")
    p.add_argument("--out", type=Path, required=True, help="cache file to write (.pt)")
    _add_train_args(sub.add_parser("train", help="train one (seed, epsilon) run"))
    p = sub.add_parser("collect", help="concatenate per-run tables and record the workflow's provenance")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--config-json", type=json.loads, default=None,
                   help="the validated workflow config, recorded in provenance.parquet")
    p.add_argument("--source-dir", type=Path, default=None,
                   help="the workflow's checkout, whose git commit is recorded")
    p.add_argument("run_dirs", type=Path, nargs="+")
    p = sub.add_parser("report", help="render the HTML report from a results directory")
    p.add_argument("results_dir", type=Path, help="directory with the parquet files written by collect")
    p.add_argument("-o", "--out", type=Path, default=Path("report/index.html"))
    return parser


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()  # before torch is imported: train logs its start-up cost
    # Imported here so `lsbench --help` does not pay for torch and matplotlib.
    from lsbench import pipeline

    if args.command == "prepare-data":
        pipeline.prepare_data(args.data_dir, args.out, log)
    elif args.command == "train":
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          model=args.model, device=args.device, threads=args.threads,
                          validation_size=args.validation_size)
        pipeline.train_one(args.data, args.out_dir, args.seed, args.epsilon, cfg, args.keep_checkpoint,
                           log, started)
    elif args.command == "collect":
        pipeline.collect(args.run_dirs, args.out_dir, log, args.config_json, args.source_dir)
    elif args.command == "report":
        from lsbench.report import write_report

        write_report(args.results_dir, args.out)
        log(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (DataError, ConfigError, FileNotFoundError) as exc:
        log(f"lsbench {args.command}: error: {exc}")
        return 1
    return 0
