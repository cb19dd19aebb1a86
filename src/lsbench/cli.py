"""`lsbench` command line: one subcommand per workflow stage, plus `report` for published results.

Options are checked against the workflow's config schema (`lsbench.config.validate_options`), so a
value the workflow would reject is rejected here too, with the same message, before any work.
Errors the user can fix (bad data, bad config, a missing device, unwritable paths, mismatched
runs, broken tables) print one line (or one message) and exit 1 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from lsbench.config import ConfigError, TrainConfig, cross_key_errors, validate_options
from lsbench.data import DataError

# Option -> (config key, "[]" for one item of a list key) for the options that are config values.
TRAIN_OPTIONS = {"--dataset": "datasets[]", "--model": "models[]", "--seed": "seeds[]",
                 "--epochs": "epochs", "--batch-size": "batch_size", "--lr": "lr",
                 "--validation-size": "validation_size", "--device": "device", "--threads": "threads"}


# Where messages go: stderr, or with `--log FILE` that file (and stderr gets only the progress
# lines and errors). One write per line, so lines of jobs that share a terminal do not interleave.
_LOG_FILE = None


def _write(stream, message: str) -> None:
    stream.write(message + "\n")
    stream.flush()


def log(message: str) -> None:
    _write(_LOG_FILE or sys.stderr, message)


def progress(message: str) -> None:
    """A line for the terminal (one per epoch of training; errors too), also in the log file."""
    if _LOG_FILE is not None:
        _write(_LOG_FILE, message)
    _write(sys.stderr, message)


def run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories from the command line: a file names the run directory it is in (the
    workflow passes each run's runs.parquet or model.pt, its inputs)."""
    return [p.parent if p.is_file() else p for p in paths]


def check_overwrites(args: argparse.Namespace) -> None:
    """ConfigError, before anything is read or written, when a file the command writes is one it
    reads (an input given as the output by mistake, e.g. `shift-data --out` the cache itself, or
    `collect --out-dir` a run's own folder). `report` checks its own outputs
    (`lsbench.report.check_not_inputs`), which it knows only once the page is rendered."""
    from lsbench import io

    optional = [Path(p) for p in (getattr(args, "shifted", None), getattr(args, "ood_data", None)) if p]
    if args.command == "shift-data":
        outputs, inputs = [args.out], [args.data]
    elif args.command == "evaluate-shifts":
        outputs = [args.out]
        inputs = [args.data, *optional, *(p for d in run_dirs(args.run_dirs)
                                          for p in (*io.run_paths(d).values(), d / "model.pt"))]
    elif args.command == "collect":
        outputs = [args.out_dir / f"{name}.parquet" for name in (*io.PUBLISHED, *io.OPTIONAL_PUBLISHED)]
        outputs += [args.manifest] if args.manifest else []
        inputs = [p for d in run_dirs(args.run_dirs) for p in io.run_paths(d).values()]
        inputs += [*(args.data_summary or ()), *(args.shift_table or ()), *(args.shifted_data or ())]
    elif args.command == "train":
        outputs, inputs = [*io.run_paths(args.out_dir).values(), args.out_dir / "model.pt"], [args.data, *optional]
    else:
        return
    hit = io.overwritten_input(outputs, inputs)
    if hit:
        raise ConfigError(f"{hit[0]}: an input of lsbench {args.command}{io.same_file_note(*hit)}; write the output "
                          "elsewhere")


TRAIN_EXTRA = "pip install 'lsbench[train]' (torch, torchvision and label-relaxation; see the README)"


def _add_train_args(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    p.add_argument("--dataset", required=True, help="dataset name (config key datasets)")
    p.add_argument("--model", required=True, help="model name or 'package.module:function' (config key models)")
    p.add_argument("--data", type=Path, required=True, help="dataset cache from prepare-data")
    p.add_argument("--out-dir", type=Path, required=True, help="run directory for the tables and model.pt")
    p.add_argument("--seed", required=True, help="random seed, an integer in [0, 2^32 - 1] (config key seeds)")
    p.add_argument("--method", default=None, help="training method (lsbench.methods; default: label_smoothing with "
                   "--epsilon, else cross_entropy)")
    p.add_argument("--param", default=None, help="the method's parameter value (none for a method without one)")
    p.add_argument("--epsilon", default=None, help="shorthand for --method label_smoothing --param EPSILON")
    p.add_argument("--epochs", default=str(defaults.epochs), help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", default=str(defaults.batch_size), help="mini-batch size (default: %(default)s)")
    p.add_argument("--lr", default=str(defaults.lr), help="Adam learning rate (default: %(default)s)")
    p.add_argument("--device", default=defaults.device, help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--threads", default=str(defaults.threads), help="torch threads (default: %(default)s)")
    p.add_argument("--validation-size", default=str(defaults.validation_size),
                   help="training images held out to fit a temperature (0: none), or a fraction in (0, 1) "
                        "(default: %(default)s; the workflow's default is 5000)")
    p.add_argument("--ood-set", default=None, help="dataset whose test images are the out-of-distribution set "
                   "(empty: none)")
    p.add_argument("--ood-data", default=None, help="its cache from prepare-data (empty: none)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the last epoch's checkpoint after the run finishes (config key keep_checkpoints)")
    p.add_argument("--log", type=Path, default=None, help="write every message to this file; the terminal then "
                   "shows one line per epoch (epoch, loss, accuracy, ECE) and errors")


def build_parser() -> argparse.ArgumentParser:
    from lsbench import __version__

    parser = argparse.ArgumentParser(prog="lsbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lsbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare-data", help="decode, validate and cache one dataset")
    p.add_argument("--dataset", required=True, help="dataset name (config key datasets)")
    p.add_argument("--data-root", default=None, help="directory in torchvision's layout (optional)")
    p.add_argument("--out", type=Path, required=True, help="cache file to write (.npz)")
    p.add_argument("--fingerprint", default=None,
                   help="the data fingerprint the workflow planned with (refused if the files now differ)")
    _add_train_args(sub.add_parser("train", help="train one (dataset, model, method, param, seed) run"))
    p = sub.add_parser("collect", help="concatenate per-run tables and record the workflow's provenance")
    p.add_argument("--out-dir", type=Path, required=True, help="directory for the published tables (results_dir)")
    p.add_argument("--config-json", type=json.loads, default=None,
                   help="the validated workflow config: runs are checked against it and it is recorded")
    p.add_argument("--source-dir", type=Path, default=None,
                   help="the workflow's checkout, whose git commit is recorded")
    p.add_argument("--data-summary", type=Path, action="extend", nargs="*", default=None,
                   help="the .json summary prepare-data wrote beside a cache (one for each dataset, or repeat the "
                        "option): runs must have used that data")
    p.add_argument("--model-code-json", type=json.loads, default=None,
                   help='{"model": code sha256} as the workflow planned it: runs must have used that model code')
    p.add_argument("--manifest", type=Path, default=None,
                   help="results/grid-<id>.json to write last, listing what was collected (other grid-*.json "
                        "beside it are removed)")
    p.add_argument("--shift-table", type=Path, action="extend", nargs="*", default=None,
                   help="a study's shift evaluation from evaluate-shifts (one for each, or repeat the option): "
                        "collected into shift.parquet; without any, shift.parquet and shift_gallery.parquet are "
                        "removed")
    p.add_argument("--shifted-data", type=Path, action="extend", nargs="*", default=None,
                   help="a shifted test set from shift-data (one for each dataset): its first image per severity "
                        "goes into shift_gallery.parquet")
    p.add_argument("run_dirs", type=Path, nargs="+", help="the run directories to collect (train's --out-dir), or "
                   "a file in each (e.g. its runs.parquet); put -- before them after a list option")
    p = sub.add_parser("shift-data", help="apply distribution shifts (lsbench.shifts) at severities 1..5 to a "
                       "seeded subset of a dataset's test images")
    p.add_argument("--dataset", required=True, help="dataset name (config key datasets)")
    p.add_argument("--data", type=Path, required=True, help="the dataset's cache from prepare-data")
    p.add_argument("--images", default="2000", help="test images to shift (config key shift_images; default: "
                   "%(default)s)")
    p.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    p.add_argument("shifts", nargs="+", help="shift names (lsbench.shifts.SHIFTS; config key shifts), or all")
    p = sub.add_parser("evaluate-shifts", help="evaluate runs' final models on a shifted test set (no training)")
    p.add_argument("--model", required=True, help="the runs' model as the workflow defines it: a name or "
                   "'package.module:function' (config key models); it is what is built, and model.pt must name it")
    p.add_argument("--data", type=Path, required=True, help="the runs' dataset cache from prepare-data")
    p.add_argument("--shifted", type=Path, default=None, help="the shifted test set from shift-data (without it: "
                   "the unshifted subset only)")
    p.add_argument("--out", type=Path, required=True, help="the .parquet file to write")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (config key device; default: %(default)s)")
    p.add_argument("--threads", default="1", help="torch threads (config key threads; default: %(default)s)")
    p.add_argument("run_dirs", type=Path, nargs="+", help="run directories (train's --out-dir) of one dataset, "
                   "each holding model.pt, runs.parquet and calibrated.parquet, or a file in each (its model.pt)")
    p = sub.add_parser("report", help="render the HTML report from a results directory")
    p.add_argument("results_dir", type=Path, help="directory with the parquet files written by collect")
    p.add_argument("-o", "--out", default="report/index.html", help="the HTML file to write (default: "
                   "%(default)s); findings.json, figures/ and tables/ go beside it")
    p.add_argument("--stamp", type=Path, default=None, help="the workflow's record of this report, "
                   "report-<id>.json beside the HTML file (written last; every earlier one there is removed)")
    p = sub.add_parser("docs", help="rewrite the docs' tables of datasets, models, methods and shifts from the "
                       "registries (lsbench.docs_tables)")
    p.add_argument("--root", type=Path, default=Path("."), help="the repository's root (default: .)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each stale file")
    p = sub.add_parser("compare-findings", help="the claims of two findings.json side by side (e.g. the same grid "
                       "on AVX2 and AVX-512 kernels), as a Markdown table")
    p.add_argument("a", type=Path, help="findings.json of the first grid")
    p.add_argument("b", type=Path, help="findings.json of the second grid")
    p.add_argument("--only-differences", action="store_true", help="list only the claims that are not the same")
    p.add_argument("--fail-on-difference", action="store_true",
                   help="exit with status 1 when a claim differs or contradicts (e.g. to gate CI)")
    return parser


def train_config(args: argparse.Namespace) -> tuple[dict, TrainConfig]:
    """The train options, validated by the config schema's rules."""
    options = {opt: (key, getattr(args, opt[2:].replace("-", "_"))) for opt, key in TRAIN_OPTIONS.items()}
    v = validate_options(options)
    cfg = TrainConfig(epochs=v["--epochs"], batch_size=v["--batch-size"], lr=float(v["--lr"]),
                      validation_size=v["--validation-size"], device=v["--device"], threads=v["--threads"])
    return v, cfg


def method_option(args: argparse.Namespace) -> tuple[str, float]:
    """The run's (method, param) from --method/--param or --epsilon, checked by the registry's rules
    (`lsbench.methods.method_errors`) and made canonical (`lsbench.methods.variant`)."""
    from lsbench.methods import METHODS, get_method, method_errors, variant

    if args.epsilon is not None and (args.method is not None or args.param is not None):
        raise ConfigError("--epsilon is a shorthand for --method label_smoothing --param EPSILON; give one of them")
    method, text = ("label_smoothing", args.epsilon) if args.epsilon is not None else (args.method or "cross_entropy",
                                                                                       args.param)
    if method not in METHODS:
        raise ConfigError(f"--method = {method!r}: unknown method. Allowed: {', '.join(METHODS)}")
    param = None
    if text is not None:
        try:
            param = float(text)
        except ValueError:
            raise ConfigError(f"--param = {text!r}: not a number") from None
    if args.method is None and args.epsilon is None and param is not None:
        raise ConfigError(f"--param = {text}: given without --method (the default, cross_entropy, takes none). "
                          f"Allowed: --method one of {', '.join(METHODS)} with its --param")
    if get_method(method).param is None and param == 0:
        param = None  # how the tables and run paths write "no parameter"
    if get_method(method).param is not None and param is None:
        raise ConfigError(f"--method {method} needs --param (its {get_method(method).param.name})")
    errors = [e.split(": ", 1)[1] for e in method_errors({method: None if param is None else [param]})]
    if errors:
        option = "--epsilon" if args.epsilon is not None else "--param"
        raise ConfigError(f"{option} = {text}: " + "; ".join(errors))
    return variant(method, param)


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()  # before torch is imported: train logs its start-up cost
    # Imported here so `lsbench --help` does not pay for pandas, torch and matplotlib.
    from lsbench import pipeline

    check_overwrites(args)
    if args.command == "prepare-data":
        v = validate_options({"--dataset": ("datasets[]", args.dataset), "--data-root": ("data_root", args.data_root)})
        pipeline.prepare_data(v["--dataset"], v["--data-root"], args.out, log, args.fingerprint)
    elif args.command == "train":
        # A user's model is imported from the working directory first, as `python -m` would, and as
        # the workflow looked for it (lsbench.plan.model_search_path).
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        v, cfg = train_config(args)
        ood_set, ood_data = args.ood_set or None, args.ood_data or None  # empty: none (the workflow's --ood-set=)
        if (ood_set is None) != (ood_data is None):
            raise ConfigError("--ood-set and --ood-data go together")
        ood = None
        if ood_set is not None:
            ood = (validate_options({"--ood-set": ("datasets[]", ood_set)})["--ood-set"], Path(ood_data))
            errors = cross_key_errors({"ood": {v["--dataset"]: ood[0]}})
            if errors:
                raise ConfigError(f"--ood-set = {ood[0]!r}: " + "; ".join(e.split(": ", 1)[1] for e in errors))
        method, param = method_option(args)
        pipeline.train_one(v["--dataset"], v["--model"], args.data, args.out_dir, v["--seed"], method, param,
                           cfg, args.keep_checkpoint, log, started, ood,
                           progress=progress if _LOG_FILE is not None else None)
    elif args.command == "collect":
        pipeline.collect(run_dirs(args.run_dirs), args.out_dir, log, args.config_json, args.source_dir, args.data_summary,
                         args.model_code_json, args.manifest, args.shift_table, args.shifted_data)
    elif args.command == "shift-data":
        from lsbench.config import shift_errors, shift_list

        names = args.shifts[0] if args.shifts == ["all"] else args.shifts
        errors = shift_errors(names)
        if errors:  # "config key 'shifts[1]' = 'x': ..." -> "shift 2 = 'x': ..."
            raise ConfigError("\n".join(re.sub(r"^config key 'shifts\[(\d+)\]'", lambda m: f"shift {int(m[1]) + 1}", e)
                                        for e in errors))
        v = validate_options({"--dataset": ("datasets[]", args.dataset), "--images": ("shift_images", args.images)})
        pipeline.shift_data(v["--dataset"], args.data, list(shift_list(names)), args.out, v["--images"], log)
    elif args.command == "evaluate-shifts":
        # A user's model is imported from where train imported it (the working directory first).
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        v = validate_options({"--model": ("models[]", args.model), "--device": ("device", args.device),
                              "--threads": ("threads", args.threads)})
        pipeline.evaluate_shifts(run_dirs(args.run_dirs), v["--model"], args.data, args.shifted, args.out,
                                 v["--device"], v["--threads"], log)
    elif args.command == "report":
        from lsbench.report import write_report

        if not args.out.strip():
            raise ConfigError(f"-o = {args.out!r}: an empty path; give the HTML file to write, e.g. report/index.html")
        if args.out.endswith(("/", os.sep)):  # Path() would drop the slash and write a file of that name
            raise IsADirectoryError(21, "names a directory (it ends with /); give the HTML file to write, e.g. "
                                    f"{Path(args.out) / 'index.html'}", args.out.rstrip("/" + os.sep))
        write_report(args.results_dir, Path(args.out), args.stamp)
        log(f"wrote {args.out}")
    elif args.command == "docs":
        from lsbench.docs_tables import update

        stale = update(args.root, check=args.check)
        if args.check and stale:
            raise ConfigError(f"generated tables are stale in {', '.join(stale)}: run `lsbench docs` and commit")
        log(f"{'stale' if args.check else 'rewrote'}: {', '.join(stale) or 'none'}")
    elif args.command == "compare-findings":
        from lsbench.report import claims_differ, compare_findings_markdown, read_findings

        a, b = read_findings(args.a), read_findings(args.b)
        print(compare_findings_markdown(a, b, args.only_differences), end="")
        if args.fail_on_difference and claims_differ(a, b):
            raise ConfigError(f"{args.a} and {args.b} make different claims (see the table)")


def describe_os_error(exc: OSError) -> str:
    """One line: the path(s) and the OS's reason (e.g. "report/x: Is a directory")."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or str(exc)
    return f"{paths}: {reason}" if paths else reason


def main(argv: list[str] | None = None) -> int:
    global _LOG_FILE
    args = build_parser().parse_args(argv)
    from lsbench.tables import TablesError
    from lsbench.pipeline import CollectError

    try:
        if getattr(args, "log", None) is not None:
            args.log.parent.mkdir(parents=True, exist_ok=True)
            _LOG_FILE = open(args.log, "w", encoding="utf-8")
        run(args)
    except (DataError, ConfigError, CollectError, TablesError) as exc:
        progress(f"lsbench {args.command}: error: {exc}")
        return 1
    except OSError as exc:  # FileNotFoundError, IsADirectoryError, a full disk (ENOSPC), ...
        progress(f"lsbench {args.command}: error: {describe_os_error(exc)}")
        return 1
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
        # Code lsbench runs (a user's model, outside the places that name it) ended the process
        # "successfully" before the command finished: that must not pass for success.
        progress(f"lsbench {args.command}: error: code it ran called sys.exit({exc.code}) (SystemExit) before "
                 f"the command finished; its outputs are not complete")
        return 1
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "torchvision", "label_relaxation"):
            raise
        progress(f"lsbench {args.command}: error: needs {exc.name}, which the base install leaves out: {TRAIN_EXTRA}")
        return 1
    except BaseException:
        if _LOG_FILE is not None:  # the traceback in the job's log too, not only on the terminal
            import traceback

            traceback.print_exc(file=_LOG_FILE)
        raise
    finally:
        if _LOG_FILE is not None:
            _LOG_FILE.close()
            _LOG_FILE = None
    return 0


if __name__ == "__main__":  # python -m lsbench.cli
    sys.exit(main())
