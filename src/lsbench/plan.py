"""What the workflow will run, worked out once when the Snakefile is read: every run's definition
and the paths that carry it. No torch, and no user code is imported here.

A run's directory carries a digest of everything that defines its numbers besides its seed and
parameter (`WorkflowPlan.run_definition`): the training hyperparameters, the content of its data
and of its OOD data and the code that decodes them (`data_fingerprint`), the code of its model
(`model_code_sha256`) and of its method (`method_code_sha256`). Each entry's code digest covers
that entry's code only (`lsbench.codedigest`): adding a method, or editing another method, model or
dataset reader, leaves a run's directory as it is. A dataset's cache carries its fingerprint the
same way. So whatever exists at a path was made from
that definition, whether or not Snakemake's metadata (`.snakemake/`) is
still there: a changed config key, data file or model trains new runs at new paths, and the same
content reached another way (a relative or an absolute data_root, a copy of the files elsewhere)
finds the runs it already has.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lsbench.codedigest import DIGEST_CHARS, builtin_registry, code_digest
from lsbench.config import ConfigError, WorkflowConfig, is_factory_path, model_slug
from lsbench.methods import format_param
from lsbench.data import DataError, files_sha256
from lsbench.datasets import get_dataset, source_files



def data_fingerprint(dataset: str, data_root: str | None) -> str:
    """`DIGEST_CHARS` hex digits of what a dataset's cache is made from: `files_sha256` over the
    files `dataset` will be read from (`lsbench.datasets.source_files`: their content, not their
    paths or dates) and the code that decodes them (`decoder_code_sha256`). DataError (naming the
    folder) when data_root does not hold the dataset."""
    files = files_sha256(source_files(get_dataset(dataset), data_root))
    return _digest({"files": files, "decoder": decoder_code_sha256(dataset)})


def model_search_path(hidden: tuple[str, ...] = ()) -> list[str]:
    """Where a training job imports a user's model from: its working directory (`lsbench train`
    puts it first, as `python -m` does), then this process's path without `hidden` folders (the
    Snakefile's own, which Snakemake adds for itself and a job does not have)."""
    hide = {os.path.abspath(h) for h in hidden}
    return [os.getcwd(), *(p for p in sys.path if p and os.path.abspath(p) not in hide)]


def model_code_sha256(name: str, hidden: tuple[str, ...] = ()) -> str:
    """The digest (`lsbench.codedigest.code_digest`, `DIGEST_CHARS` hex digits) of a model's code:
    for a built-in model its builder in `lsbench.models` and the lsbench code it names (LeNet's
    class; the MLP's classes in `lsbench.mlp`), not the other models'; for a user's
    "package.module:function", the factory's module and every module of the user's own folders it
    imports, directly or transitively (a sibling file, a package's other modules, their
    `__init__.py`). Found where a training job imports it (`model_search_path(hidden)`) without
    importing anything; ConfigError naming the module when it is not there."""
    search = model_search_path(hidden)
    if not is_factory_path(name):
        builders = builtin_registry(Path(__file__).parent / "models.py", "MODELS")
        if name not in builders:
            raise ConfigError(f"model {name!r} is not one of {', '.join(builders)}, "
                              "nor a 'package.module:function' path")
        return code_digest([("lsbench.models", builders[name])], search)
    module = name.partition(":")[0]
    try:
        return code_digest([(module, None)], search)
    except LookupError:
        raise ConfigError(f"model {name!r}: cannot find module {module!r} in the working directory or on "
                          "PYTHONPATH; the training jobs import it from there") from None


def method_code_sha256(method: str) -> str:
    """The digest (`DIGEST_CHARS` hex digits) of what one method computes with: its objective
    (`Method.loss`) and batch mixing (`Method.mix`) and the helpers and constants of lsbench they
    use (FLSD-53's `_focal`, MbLS's margin), and its parameter's range and neutral value. Adding a
    method or editing another leaves it as it is; KeyError for an unknown method. No torch."""
    from lsbench.methods import get_method

    entry = get_method(method)
    roots = [(f.__module__, f.__name__) for f in (entry.loss, entry.mix) if f is not None]
    return code_digest(roots, model_search_path(), extra=[repr((entry.name, entry.param))])


# `decode` dispatches on the layout to every reader; a dataset counts its own reader only.
DECODE_DISPATCH = frozenset({"_DECODERS", "load_digits_split"})


def decoder_code_sha256(dataset: str) -> str:
    """The digest (`DIGEST_CHARS` hex digits) of the code that turns `dataset`'s files into its
    cache: `lsbench.datasets.decode` (the checks), the reader of its layout (IDX, CIFAR pickles,
    scikit-learn's digits) and the lsbench code they use, and its registry entry (shape, classes,
    normalisation). Editing another layout's reader leaves it as it is. No torch."""
    from lsbench import datasets
    from lsbench.data import load_digits_split

    spec = get_dataset(dataset)
    reader = load_digits_split if spec.layout == "digits" else datasets._DECODERS[spec.layout]
    roots = [("lsbench.datasets", "decode"), (reader.__module__, reader.__name__)]
    return code_digest(roots, model_search_path(), skip=DECODE_DISPATCH, extra=[repr(spec)])


def _digest(value: object) -> str:
    """The first `DIGEST_CHARS` hex digits of the sha256 of `value` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:DIGEST_CHARS]


@dataclass(frozen=True)
class RunPlan:
    """One run of the grid and the directory its tables go to."""

    dataset: str
    model: str
    method: str
    param: float
    seed: int
    definition: str
    results: str = "results"  # the config's results_dir

    @property
    def run_dir(self) -> str:
        return run_dir(self.results, self.dataset, self.model, self.definition, self.seed, self.method,
                       format_param(self.param))


def under(folder: str, path: str) -> str:
    """`path` inside `folder` (a normalised results_dir or report_dir), as the rules spell it:
    "runs/x" for folder ".", not "./runs/x", which Snakemake matches as another file (the plan's
    inputs would then be no rule's outputs: a MissingInputException)."""
    return path if folder == os.curdir else os.path.join(folder, path)


# Every path below is relative to the working directory (or absolute) and starts with the config's
# results_dir (`results` by default); the rule files declare the same patterns.
def run_dir(results: str, dataset: str, model: str, definition: str, seed: int | str, method: str, param: str) -> str:
    """<results>/runs/<dataset>/<model slug>/<definition>/seed<seed>/<method>/p<param>."""
    return under(results, f"runs/{dataset}/{model_slug(model)}/{definition}/seed{seed}/{method}/p{param}")


def shifted_data(results: str, dataset: str, fingerprint: str, suite: str) -> str:
    """<results>/data/shifted/<dataset>-<fingerprint>-<suite>.npz: a dataset's test subset under
    every shift of the grid; `suite` is `WorkflowPlan.shift_suite` (the shifts' code and names, the
    subset's size and seed)."""
    return under(results, f"data/shifted/{dataset}-{fingerprint}-{suite}.npz")


def shift_table(results: str, dataset: str, model: str, definition: str, seed: int | str, method: str, param: str,
                suite: str) -> str:
    """<results>/shift/<dataset>/<model slug>/<definition>/seed<seed>/<method>/p<param>/<suite>.parquet:
    one run's final model under the grid's shifts (`suite`: `WorkflowPlan.shift_suite`). The path
    names the run by its definition, never by where its run directory is, so another spelling of
    results_dir (renamed, absolute) finds the evaluation it already has."""
    run = f"{dataset}/{model_slug(model)}/{definition}/seed{seed}/{method}/p{param}"
    return under(results, f"shift/{run}/{suite}.parquet")


def data_cache(results: str, dataset: str, fingerprint: str) -> str:
    """<results>/data/<dataset>-<fingerprint>.npz (its summary: the same name with .json)."""
    return under(results, f"data/{dataset}-{fingerprint}.npz")


class WorkflowPlan:
    """The grid of a validated config with every definition worked out (fingerprints and model
    code hashed once each). DataError or ConfigError, before any job, when data_root is not a
    directory, a dataset is not where data_root says, or a user's model cannot be found where the
    training jobs will import it from (`hidden_paths`: folders on this process's path that a job
    does not have, see `model_search_path`)."""

    def __init__(self, wf: WorkflowConfig, hidden_paths: tuple[str, ...] = ()) -> None:
        self.wf = wf
        if wf.data_root is not None and not Path(wf.data_root).is_dir():  # even if no dataset reads it
            raise DataError(f"data_root {wf.data_root}: no such directory")
        needed = sorted(set(wf.datasets) | {wf.ood_set(d) for d in wf.datasets if wf.ood_set(d)})
        self.fingerprints = {d: data_fingerprint(d, wf.data_root) for d in needed}
        self.model_sha256 = {m: model_code_sha256(m, hidden_paths) for m in wf.models}
        self.method_sha256 = {method: method_code_sha256(method) for method in sorted({v[0] for v in wf.variants})}
        self.definition_ids = {(d, m): _digest(self.definition(d, m)) for d in wf.datasets for m in wf.models}
        self.runs = [RunPlan(d, m, method, param, s, self.run_definition(d, m, method), wf.results_dir)
                     for d in wf.datasets for m in wf.models for s in wf.seeds for method, param in wf.variants]
        # What a shifted test set depends on besides its dataset's data: the shifts' code (their
        # constants) and names, the subset's size and seed; an evaluation adds the runs evaluated.
        # Both go into paths, so an edited constant re-evaluates and nothing stale is collected.
        from lsbench.shifts import SHIFT_SEED, suite_sha256

        self.shift_suite = (_digest({"code": suite_sha256(list(wf.shifts)), "images": wf.shift_images,
                                     "seed": SHIFT_SEED}) if wf.shifts else "")

    def definition(self, dataset: str, model: str) -> dict:
        """What defines the numbers of (dataset, model)'s runs besides seed, method and parameter:
        the study's definition, whose digest names its shift evaluations."""
        train, ood = self.wf.train_config(dataset), self.wf.ood_set(dataset)
        return {"dataset": dataset, "data": self.fingerprints[dataset], "model": model,
                "model_code": self.model_sha256[model], "epochs": train.epochs, "batch_size": train.batch_size,
                "lr": float(train.lr), "validation_size": train.validation_size,
                "ood_set": ood or "", "ood_data": self.fingerprints[ood] if ood else ""}

    def run_definition(self, dataset: str, model: str, method: str) -> str:
        """The digest in the directory of (dataset, model)'s runs of `method`: the study's
        definition and that method's code (`method_code_sha256`), so editing one method's
        objective retrains its runs only."""
        return _digest({**self.definition(dataset, model), "method": method,
                        "method_code": self.method_sha256[method]})

    def data_cache(self, dataset: str) -> str:
        return data_cache(self.wf.results_dir, dataset, self.fingerprints[dataset])

    def shifted_data(self, dataset: str) -> str | None:
        """`dataset`'s shifted test set (None when shifts are off)."""
        return (shifted_data(self.wf.results_dir, dataset, self.fingerprints[dataset], self.shift_suite)
                if self.wf.shifts else None)

    def shift_table(self, run: RunPlan) -> str:
        """`run`'s shift evaluation: one job per run, which starts as soon as that run has trained."""
        return shift_table(self.wf.results_dir, run.dataset, run.model, run.definition, run.seed, run.method,
                           format_param(run.param), self.shift_suite)

    def shift_tables(self) -> list[str]:
        """Every run's shift evaluation (none when shifts are off)."""
        return [self.shift_table(run) for run in self.runs] if self.wf.shifts else []

    @property
    def grid_id(self) -> str:
        """A digest of the run directories and data caches the published tables are collected
        from: collect writes `results/grid-<grid_id>.json`, so a grid whose tables are not the
        ones in results/ has no such file and is collected again, even without Snakemake's
        metadata (a file Snakemake sees missing is the one trigger that needs none). The paths are
        taken relative to results_dir, where each names its content by digests: the grid-<id>.json
        moves with its tables, so a renamed or absolute results_dir collects nothing again."""
        paths = [[run.run_dir for run in self.runs], self.data_summaries(), self.shift_tables()]
        return _digest([[os.path.relpath(p, self.wf.results_dir) for p in group] for group in paths])

    @property
    def report_id(self) -> str:
        """A digest of what the report's pages are made from and with: the grid's tables
        (`grid_id`: the runs' definitions and data, named relative to results_dir), lsbench's
        version and the report's code (`report_code_sha256`). The workflow's report rule writes
        `<report_dir>/report-<id>.json`, so a report of another grid, of other tables or of other
        code is rendered again, even without Snakemake's metadata; the same tables reached another
        way (a copied or renamed results_dir) render nothing again."""
        return _digest([self.grid_id, report_code_sha256()])

    def data_summaries(self) -> list[str]:
        """The summary (.json) of every cache a run reads: the grid's datasets and their OOD sets."""
        return [str(Path(self.data_cache(d)).with_suffix(".json")) for d in sorted(self.fingerprints)]


def report_code_files() -> list[Path]:
    """The files that compute the report's findings, figures and page: `lsbench.report` and every
    module of the lsbench package it imports, directly or not (read from their import statements,
    function-level imports included, without importing them), the package's __init__ (the
    version) and the page's templates. Sorted paths."""
    import ast

    package = Path(__file__).resolve().parent
    found: set[Path] = set()
    todo = [package / "report.py", package / "__init__.py"]
    while todo:
        path = todo.pop()
        if path in found or not path.is_file():
            continue
        found.add(path)
        for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from lsbench import x`: x is a module or a name of lsbench/__init__.py.
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "lsbench" and len(parts) > 1:
                    todo.append(package.joinpath(*parts[1:]).with_suffix(".py"))
    return sorted(found | {p for p in (package / "templates").rglob("*") if p.is_file()})


def report_code_sha256() -> str:
    """sha256 (first `DIGEST_CHARS` hex digits) of lsbench's version and of `report_code_files`
    (each file's name inside the package and its bytes): what an upgrade of lsbench changes in the
    report. Training digests none of it, so an edit here re-renders the report and trains
    nothing."""
    from lsbench import __version__

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256(__version__.encode() + b"\0")
    for path in report_code_files():
        digest.update(os.path.relpath(path, package).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:DIGEST_CHARS]
