"""Workflow configuration: coerce command-line overrides, validate once, freeze.

Snakemake hands `--config seeds=[0,1]` to the workflow as a list of *strings* (`['0', '1']`),
`--config epochs=2.0` as a float and `--config data_root=2024` as an int, so values are coerced
to the types the schema declares before it is checked: whole floats become integers, numbers
become strings where the schema wants a string (with the text as typed on the command line when
Snakemake kept it). On top of the schema every number must be finite (JSON schema cannot say so,
and NaN compares false to every bound). Validation happens once, in the Snakefile; everything
downstream receives the frozen `WorkflowConfig`. `lsbench train` checks its options against the
same schema (`validate_options`), with the same messages. The module imports no torch.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from lsbench.methods import grid_variants, method_errors

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
# Keys that earlier versions accepted, with what replaced them.
RENAMED = {"data_dir": "data_root (a directory in torchvision's layout: put the IDX files in "
                       "DATA_ROOT/FashionMNIST/raw/)",
           "model": "models (a list, e.g. models: [mlp])"}
_FACTORY_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$", re.ASCII)


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


def or_exit(check: Any, *args: Any, **kwargs: Any) -> Any:
    """`check(*args, **kwargs)`, or exit with its ConfigError or DataError as one message and no
    traceback: how the Snakefile reports a bad config or data location before any job."""
    from lsbench.data import DataError

    try:
        return check(*args, **kwargs)
    except (ConfigError, DataError) as exc:
        raise SystemExit(f"lsbench: error: {exc}") from None


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (everything but dataset, model, method and seed).

    validation_size: images held out, or a fraction (0 < f < 1) of the training set.
    device and threads choose how a run executes, not what it computes (see README).
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    validation_size: int | float = 0  # 0 trains on the whole training set, as the seed experiment did
    device: str = "auto"
    threads: int = 1


@dataclass(frozen=True)
class WorkflowConfig:
    """The validated grid plus the training hyperparameters shared by every run."""

    datasets: tuple[str, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: tuple[tuple[str, float], ...]  # (method, param) of every run; cross-entropy first
    train: TrainConfig
    validation_sizes: Mapping[str, int | float]
    data_root: str | None = None
    keep_checkpoints: bool = False
    ood: Mapping[str, str | None] | None = None  # dataset -> its OOD set, for every dataset of the grid
    shifts: tuple[str, ...] = ()  # lsbench.shifts names the final models are evaluated under; () for none
    shift_images: int = 2000  # test images per shift and severity (at most the test set)
    results_dir: str = "results"  # runs, logs, data caches and published tables
    report_dir: str = "report"  # the HTML report, its figures and tables

    def ood_set(self, dataset: str) -> str | None:
        return (self.ood or {}).get(dataset)

    def train_config(self, dataset: str) -> TrainConfig:
        """The TrainConfig of `dataset`'s runs (its own validation_size)."""
        return TrainConfig(**{**self.train.__dict__, "validation_size": self.validation_sizes[dataset]})


def registry_names() -> dict[str, list]:
    """The names each registry holds, as the schema's `x-registry` refers to them."""
    from lsbench.datasets import DATASETS
    from lsbench.methods import METHODS
    from lsbench.shifts import SHIFTS

    return {"datasets": list(DATASETS), "datasets-or-null": [*DATASETS, None], "shifts": list(SHIFTS),
            "methods": list(METHODS)}


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config's JSON schema with the registries' names filled in: every `{"x-registry": R}`
    becomes `{"enum": names of R}` and every "{R}" in a description the names, comma-separated.

    Raises:
        KeyError: the schema names a registry that `registry_names` does not know.
    """
    with open(path, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    names = registry_names()

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: fill(v) for k, v in node.items()}
            if "x-registry" in node:
                node["enum"] = names[node.pop("x-registry")]
            if isinstance(node.get("description"), str):
                for registry, values in names.items():
                    node["description"] = node["description"].replace(
                        "{" + registry + "}", ", ".join(str(v) for v in values if v is not None))
            return node
        return [fill(v) for v in node] if isinstance(node, list) else node

    return fill(schema)


def is_factory_path(name: str) -> bool:
    """Whether a model name is a user's "package.module:function" factory path."""
    return bool(_FACTORY_PATH.match(name))


def model_slug(name: str) -> str:
    """A model's name in paths: built-in names as they are; "pkg.mod:fn" becomes "pkg.mod-fn"
    (a "-" cannot occur in a Python module path, so distinct models keep distinct slugs)."""
    return name.replace(":", "-")


def model_from_slug(slug: str) -> str:
    """The inverse of `model_slug`: "pkg.mod-fn" -> "pkg.mod:fn"; a built-in name is its own slug."""
    return slug.replace("-", ":") if "-" in slug else slug




# --- coercion ------------------------------------------------------------------------------------

def _resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = spec.get("$ref")
    if ref is None:
        return spec
    node: Any = schema
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _alternatives(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The spec itself plus every oneOf/anyOf branch, $refs resolved."""
    spec = _resolve(spec, schema)
    out = [spec]
    for branch in (*spec.get("oneOf", ()), *spec.get("anyOf", ())):
        out.extend(_alternatives(branch, schema))
    return out


def _types(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    kinds: list[str] = []
    for alt in _alternatives(spec, schema):
        kind = alt.get("type", [])
        kinds.extend([kind] if isinstance(kind, str) else kind)
    return kinds


def _subspec(spec: Mapping[str, Any], schema: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    for alt in _alternatives(spec, schema):
        if isinstance(alt.get(key), Mapping):
            return alt[key]
    return {}


def _coerce(value: Any, spec: Mapping[str, Any], schema: Mapping[str, Any], raw_text: str | None = None) -> Any:
    """Turn `value` into the schema's type where it unambiguously parses as one; leave it for
    validation to report otherwise."""
    kinds = _types(spec, schema)
    if "null" in kinds and (value is None or isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
        return None  # before a scalar becomes a one-item list: `focal_adaptive: null` is no parameter
    if isinstance(value, Mapping) and "object" in kinds:
        item = _subspec(spec, schema, "additionalProperties")
        return {k: _coerce(v, item, schema) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and "array" in kinds:
        item = _subspec(spec, schema, "items")
        return [_coerce(v, item, schema) for v in value]
    if isinstance(value, str) and any(value in alt.get("enum", ()) for alt in _alternatives(spec, schema)
                                      if alt.get("type") == "string"):
        return value  # a word the key allows as itself (`shifts: all`), not a list of one
    if "array" in kinds and not isinstance(value, (list, tuple, Mapping)):
        # `--config seeds=0` gives a bare scalar: a one-item list is what was meant.
        return [_coerce(value, _subspec(spec, schema, "items"), schema)]
    if isinstance(value, str):
        value = _parse_text(value, kinds)
    if isinstance(value, float) and "integer" in kinds and "number" not in kinds and math.isfinite(value) \
            and value.is_integer():
        # epochs=2.0 means 2, and argparse in the job would reject "2.0". Not where a float means
        # something else (validation_size: 1.0 is refused as ambiguous, not taken as one image).
        return int(value)
    if isinstance(value, float) and value == 0:
        return 0.0  # -0.0 is 0.0: one value, one path ("eps0.0"), one table key
    if "string" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        # Snakemake turned a digit-only directory name into a number; keep the text as typed.
        return raw_text if raw_text is not None else str(value)
    return value


def _parse_text(text: str, kinds: list[str]) -> Any:
    stripped = text.strip()
    if "null" in kinds and stripped.lower() in ("null", "none", "~"):
        return None
    if "boolean" in kinds and stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    if "string" in kinds:
        return text
    for kind, parse in (("integer", int), ("number", float)):
        if kind in kinds:
            try:
                return parse(stripped)
            except ValueError:
                continue
    if "integer" in kinds:
        try:
            return float(stripped)  # "2.0": a whole float, made an integer by the caller
        except ValueError:
            pass
    return text


def raw_overrides(config_args: list[str] | None) -> dict[str, str]:
    """{key: text} of `--config key=text` arguments as typed (Snakemake keeps them in
    `workflow.config_settings.config_args`), to recover strings that it parsed as numbers."""
    out = {}
    for arg in config_args or ():
        key, sep, text = str(arg).partition("=")
        if sep:
            out[key.strip()] = text
    return out


# A YAML 1.1 number (what PyYAML and so Snakemake read) whose text is a plain decimal literal.
_DECIMAL = re.compile(r"[-+]?(\d[\d_]*)?(\.[\d_]*)?([eE][-+]?\d+)?")


def _number_surprises(typed: Any, text: Any, path: tuple) -> Iterator[tuple[tuple, str, Any]]:
    """(path, text, value) of every number YAML 1.1 reads otherwise than as the decimal it looks
    like: a leading zero is octal (010 is 8), 0x.. hex, 1:20 base 60 (80)."""
    if isinstance(typed, Mapping) and isinstance(text, Mapping):
        for k, v in typed.items():
            yield from _number_surprises(v, text.get(str(k)), (*path, k))
    elif isinstance(typed, list) and isinstance(text, list) and len(typed) == len(text):
        for i, (v, t) in enumerate(zip(typed, text)):
            yield from _number_surprises(v, t, (*path, i))
    elif isinstance(typed, (int, float)) and not isinstance(typed, bool) and isinstance(text, str):
        written = text.strip()
        if written.lower() in (".inf", "-.inf", "+.inf", ".nan"):
            return  # not finite: refused with its own message
        decimal = _DECIMAL.fullmatch(written) and not re.match(r"[-+]?0\d", written)
        if not decimal:
            yield path, written, typed


def yaml_number_errors(config: Mapping[str, Any], paths: list[str | Path]) -> list[str]:
    """A ConfigError message for every number in the YAML files `paths` that YAML 1.1 reads as
    something else than the decimal it looks like (`seeds: [010]` is [8]), where the config still
    holds that value (a later file or `--config` may have replaced it). Missing files are skipped."""
    errors = []
    for path in paths:
        try:
            typed, text = load_config_yaml(path), load_config_yaml(path, text_only=True)
        except (OSError, yaml.YAMLError, ConfigError):  # a repeated key: yaml_file_errors says so
            continue
        if not isinstance(typed, Mapping):
            continue
        for where, written, value in _number_surprises(typed, text, ()):
            if _lookup(config, where) in (value, [value]):  # [value]: a scalar given for a list (focal: 010)
                meant = written.lstrip("0") if re.fullmatch(r"0\d+", written) else None
                hint = f"{meant} or {value!r}" if meant else repr(value)
                errors.append(f"config key {_where(where)!r} = {written} in {path}: YAML 1.1 reads {written} as "
                              f"{value!r}, not the decimal number it may look like. Allowed: a plain decimal number "
                              f"(write {hint}), or quote it to make it a string")
    return errors


def _lookup(config: Any, path: tuple) -> Any:
    for part in path:
        try:
            config = config[part]
        except (KeyError, IndexError, TypeError):
            return None
    return config


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping; `path` is its config key path, outermost first."""

    def __init__(self, key: str, first_line: int, line: int) -> None:
        super().__init__(key)
        self.path: tuple = (key,)
        self.lines = (first_line, line)


def _refusing_duplicate_keys(loader: type) -> type:
    """`loader` (a PyYAML Loader class) that raises DuplicateKeyError for a key repeated in any
    mapping, at any depth: PyYAML keeps the last value silently (`focal: [1.0]` ... `focal: [3.0]`
    trains only 3.0), and so does Snakemake, which loads config files with it."""

    class Strict(loader):  # type: ignore[misc, valid-type]
        def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
            node = super().compose_mapping_node(anchor)
            seen: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":  # a merge key may repeat
                    continue
                line = key.start_mark.line + 1
                if (key.tag, key.value) in seen:
                    raise DuplicateKeyError(key.value, seen[(key.tag, key.value)], line)
                seen[(key.tag, key.value)] = line
            return node

        def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
            try:
                return super().compose_node(parent, index)
            except DuplicateKeyError as exc:  # name the key path from the outside in
                if isinstance(index, yaml.ScalarNode):
                    exc.path = (index.value, *exc.path)
                elif isinstance(index, int) and isinstance(parent, yaml.SequenceNode):
                    exc.path = (index, *exc.path)
                raise

    return Strict


STRICT_SAFE_LOADER = _refusing_duplicate_keys(yaml.SafeLoader)
STRICT_BASE_LOADER = _refusing_duplicate_keys(yaml.BaseLoader)  # every scalar stays a string


def load_config_yaml(path: str | Path, text_only: bool = False) -> Any:
    """A YAML config file's content (`text_only`: every scalar as written, a string); ConfigError
    naming the key path and the file for a key repeated in a mapping. OSError and other YAML
    errors propagate."""
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.load(f, Loader=STRICT_BASE_LOADER if text_only else STRICT_SAFE_LOADER)
        except DuplicateKeyError as exc:
            first, again = exc.lines
            raise ConfigError(f"config key {_where(exc.path)!r} in {path}: given twice in one mapping (lines {first} "
                              f"and {again}); YAML would keep only the last silently. Allowed: each key once "
                              "(merge the values into one entry)") from None


def yaml_file_errors(paths: list[str | Path]) -> list[str]:
    """A message for every config file among `paths` that repeats a key (`load_config_yaml`);
    missing or unreadable files are left to the reader that needs them."""
    errors = []
    for path in paths:
        try:
            load_config_yaml(path)
        except ConfigError as exc:
            errors.append(str(exc))
        except (OSError, yaml.YAMLError):
            continue
    return errors


def raw_yaml_texts(paths: list[str | Path]) -> dict[str, str]:
    """{key: text} of the top-level scalars of YAML config files as written (`data_root: 2024.10`
    is the float 2024.1 to YAML, "2024.10" here); later files win, missing files are skipped.
    ConfigError naming the key and file where a file repeats a key (`load_config_yaml`)."""
    out: dict[str, str] = {}
    for path in paths:
        try:
            doc = load_config_yaml(path, text_only=True)  # ConfigError for a repeated key
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict):
            out.update({k: v for k, v in doc.items() if isinstance(v, str)})
    return out


def coerce_config(raw: Mapping[str, Any], schema: Mapping[str, Any],
                  typed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Coerce values (and list items, mapping values) to the types the schema declares. `typed`:
    the `--config` texts as typed (see `raw_overrides`). Values that do not parse are left as they
    are, for validation to report."""
    props = schema.get("properties", {})
    typed = typed or {}
    return {key: _coerce(value, props[key], schema, typed.get(key)) if key in props else value
            for key, value in raw.items()}


def with_defaults(raw: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with every key it leaves out set to the schema's `default` (a copy): what a project
    importing the workflow as a module gets, since a module ignores the workflow's own configfile.
    `methods` and its shorthand `epsilons` are one choice: when either is given, the other is null;
    when neither is, the defaults (epsilons) stand."""
    import copy

    props = schema.get("properties", {})
    given = dict(raw)
    if any(k in given for k in METHOD_KEYS):
        given = {**{k: None for k in METHOD_KEYS}, **given}
    return {**{k: copy.deepcopy(spec["default"]) for k, spec in props.items() if "default" in spec}, **given}


# --- validation ----------------------------------------------------------------------------------

def _non_finite(value: Any, path: tuple) -> Iterator[tuple[tuple, float]]:
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _non_finite(v, (*path, i))


def _where(path: tuple) -> str:
    return str(path[0]) + "".join(f"[{p}]" for p in path[1:])


def _allowed(path: tuple, schema: Mapping[str, Any]) -> str:
    """The description of the innermost schema node on `path` that has one: a list item's own
    ("an integer in [0, 2^32 - 1]") rather than its list's, where the item is at fault."""
    node: Any = schema.get("properties", {}).get(path[0], {})
    allowed = node.get("description", "")
    for part in path[1:]:
        node = node.get("items") if isinstance(part, int) else node.get("additionalProperties")
        if not isinstance(node, Mapping):
            break
        allowed = node.get("description", allowed)
    return allowed


def _describe(error: Any, schema: Mapping[str, Any], name: str | None = None) -> str:
    path = tuple(error.absolute_path)
    if not path:
        unknown = [k for k in RENAMED if f"'{k}'" in error.message]
        hint = "".join(f" ('{k}' was replaced by {RENAMED[k]})" for k in unknown)
        allowed = ", ".join(sorted(schema.get("properties", {})))
        return f"config: {error.message}{hint}. Allowed keys: {allowed}"
    allowed = _allowed(path, schema)
    return f"{name or 'config key ' + repr(_where(path))} = {error.instance!r}: {_message(error)}. Allowed: {allowed}"


def _leaves(error: Any) -> Iterator[Any]:
    """The innermost errors under a oneOf/anyOf error (each branch's own reasons)."""
    if not error.context:
        yield error
    for sub in error.context or ():
        yield from _leaves(sub)


def _message(error: Any) -> str:
    if error.validator in ("oneOf", "anyOf") and error.context:
        # "is not valid under any of the given schemas" says nothing; a branch's reason does. A
        # bound or a name ("-1 is less than the minimum of 0") says more than a wrong-type reason
        # from a branch the value was never meant for ("-1 is not of type 'object'").
        leaves = list(_leaves(error))
        return next((e.message for e in leaves if e.validator != "type"), leaves[0].message)
    return error.message


def schema_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    """[(path, message)] for every violation: the schema's, and every non-finite number."""
    import jsonschema  # only validation needs it; training jobs need not import it

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    non_finite = dict(_non_finite(dict(config), ()))
    # A non-finite number gets one message, "not a finite number", not also the schema's
    # ("nan is not of type 'integer'", "-inf is less than the minimum of 0").
    found = [(tuple(e.absolute_path), _describe(e, schema)) for e in errors
             if tuple(e.absolute_path) not in non_finite]
    for path, value in non_finite.items():
        allowed = _allowed(path, schema)
        found.append((path, f"config key {_where(path)!r} = {value!r}: not a finite number. Allowed: {allowed}"))
    return found


def validate_config(raw: Mapping[str, Any], schema: Mapping[str, Any],
                    typed: Mapping[str, str] | None = None, yaml_files: list[str | Path] = (),
                    override_keys: set[str] | None = None) -> dict[str, Any]:
    """Coerce and validate; raise ConfigError naming every bad key, its value and what is allowed.
    `yaml_files`: the config files the values came from, checked for repeated keys
    (`yaml_file_errors`) and by `yaml_number_errors`, and with
    `override_keys` (the keys given by `--config`) the layers that decide between `methods` and its
    shorthand `epsilons` (`resolve_methods`)."""
    config = coerce_config(with_defaults(raw, schema), schema, typed)
    # `methods` is checked by its registry (`method_errors`: names, types and ranges, item by item);
    # the schema's own messages for it would say less.
    errors = (yaml_file_errors(list(yaml_files)) or yaml_number_errors(config, list(yaml_files))
              or [message for path, message in schema_errors(config, schema)
                  if path[:1] not in (("methods",), ("shifts",), *((k,) for k in OUTPUT_DIR_KEYS))]
              + shift_errors(config.get("shifts")) + output_dir_errors(config))
    errors = errors or override_errors({k: typed[k] for k in override_keys or () if typed and k in typed})
    if not errors:
        sources = [*((str(f), _top_keys(f)) for f in yaml_files), ("--config", set(override_keys or ()))]
        shorthand = config.get("epsilons")
        config, errors = resolve_methods(config, sources)
        if not errors and shorthand is not None and config["methods"] == {"label_smoothing": list(shorthand)}:
            # Name the key the user wrote: epsilons[1], not the methods entry it stands for.
            errors = [e.replace("'methods[label_smoothing]", "'epsilons") for e in method_errors(config["methods"])]
    errors = errors or method_errors(config["methods"]) + cross_key_errors(config)
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def _top_keys(path: str | Path) -> set[str]:
    try:
        doc = load_config_yaml(path)
    except (OSError, yaml.YAMLError, ConfigError):
        return set()
    return set(doc) if isinstance(doc, dict) else set()


METHOD_KEYS = ("methods", "epsilons")
NO_METHOD = ("config key 'methods' (from --config) names no method (an empty mapping or null). Allowed: a mapping "
             "from method to its parameter values, e.g. methods={focal: [1.0, 3.0]} (cross-entropy, the baseline, is "
             "always trained); to keep the config file's methods, leave the key out")


def override_errors(texts: Mapping[str, str]) -> list[str]:
    """A message for each `--config key=text` (`texts`: as typed) that repeats a key in a mapping
    (Snakemake's YAML keeps the last silently) or, for `methods`, names no method: Snakemake's merge
    keeps a config file's `methods` under `methods={}`, so the merged value cannot tell."""
    errors = []
    for key, text in texts.items():
        try:
            value = yaml.load(text, Loader=STRICT_SAFE_LOADER)
        except DuplicateKeyError as exc:
            errors.append(f"config key {_where((key, *exc.path))!r} (from --config): given twice in one mapping; "
                          "YAML would keep only the last silently. Allowed: each key once (merge the values into "
                          "one entry)")
            continue
        except yaml.YAMLError:
            continue  # Snakemake reads it as a string; the schema names the key
        if key == "methods" and not value:
            errors.append(NO_METHOD)
    return errors


def resolve_methods(config: dict[str, Any], sources: list[tuple[str, set[str]]]) -> tuple[dict[str, Any], list[str]]:
    """Turn `epsilons` (shorthand) into `methods: {label_smoothing: [...]}`, returning (config,
    errors). `sources`: (name, keys it set) of each config source in order (config files, then
    `--config`): the last source that sets either key decides, so `--config epsilons=[0,0.2]`
    replaces the config file's `methods` (and the other way round); one source setting both is an
    error naming it, and so is a config with neither. An empty `--config methods={}` is an error
    too (Snakemake's merge would otherwise leave the file's value in its place)."""
    from_command_line = bool(sources) and "methods" in sources[-1][1]
    if from_command_line and not config.get("methods"):
        # Not the merged value: Snakemake leaves the file's `methods: null` for `methods={}`, so
        # quoting it would show "None", which the user never typed.
        return config, [NO_METHOD]
    given = [k for k in METHOD_KEYS if config.get(k) is not None]
    both_in = "one source"
    if len(given) == 2:
        for name, keys in reversed(sources):
            present = [k for k in METHOD_KEYS if k in keys]
            if len(present) == 1:
                given = present
                break
            if len(present) == 2:
                both_in = name
                break
    if len(given) == 2:
        return config, [f"config keys 'methods' and 'epsilons' are both given (in {both_in}): 'epsilons' is a "
                        f"shorthand for methods: {{label_smoothing: {config['epsilons']!r}}}; give one of them"]
    if not given:
        return config, ["config: neither 'methods' nor 'epsilons' is given. Allowed: methods: a mapping from method "
                        "to its parameter values, e.g. {label_smoothing: [0.0, 0.1], focal: [3.0]}, or epsilons: a "
                        "list of label-smoothing values"]
    methods = config["methods"] if given == ["methods"] else {"label_smoothing": list(config["epsilons"])}
    return {**config, "methods": methods, "epsilons": None}, []


def cross_key_errors(config: Mapping[str, Any]) -> list[str]:
    """Rules that involve the dataset registry: an OOD set must be another dataset with the same
    number of channels; validation_size must leave training images in each dataset's real set."""
    from lsbench.datasets import DATASETS

    errors = []
    for dataset, ood in (config.get("ood") or {}).items():
        if ood is None:
            continue
        if ood == dataset:
            errors.append(f"config key 'ood[{dataset}]' = {ood!r}: a dataset cannot be its own "
                          "out-of-distribution set")
        elif DATASETS[ood].image_shape[0] != DATASETS[dataset].image_shape[0]:
            errors.append(f"config key 'ood[{dataset}]' = {ood!r}: {ood} has {DATASETS[ood].image_shape[0]} "
                          f"channel(s), {dataset} {DATASETS[dataset].image_shape[0]}; an out-of-distribution "
                          "set needs the same number")
    sizes = config.get("validation_size", 0)
    for dataset in config.get("datasets") or ():
        size = sizes.get(dataset, 0) if isinstance(sizes, Mapping) else sizes
        n_train = DATASETS[dataset].sizes[0]  # the real set's; a data_root copy may hold fewer
        problem = _validation_problem(size, n_train)
        if problem:
            key = f"validation_size[{dataset}]" if isinstance(sizes, Mapping) else "validation_size"
            errors.append(f"config key {key!r} = {size!r}: {dataset} has {n_train} training images; this "
                          f"{problem}. Allowed: fewer images than each dataset has, a fraction in (0, 1), or "
                          f"a mapping such as {{{dataset}: 0.1}}")
    return errors


def validate_options(options: Mapping[str, tuple[str, Any]], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check command-line options against the workflow schema: {option: (schema key, value)}, a
    key ending in "[]" meaning one item of that list key. Returns {option: coerced value};
    ConfigError names the option, the value and what is allowed, as the workflow would."""
    schema = schema or load_schema()
    partial = {k: v for k, v in schema.items() if k != "required"}
    config, owner = {}, {}
    for option, (key, value) in options.items():
        item = key.endswith("[]")
        key = key.removesuffix("[]")
        config[key] = [value] if item else value
        owner[key] = option
    config = coerce_config(config, partial)
    errors = schema_errors(config, partial)
    if errors:
        raise ConfigError("\n".join(
            f"{owner[path[0]]}{m[m.index(' = '):]}" for path, m in errors))
    return {owner[k]: (v[0] if options[owner[k]][0].endswith("[]") else v) for k, v in config.items()}


def to_workflow_config(config: Mapping[str, Any]) -> WorkflowConfig:
    """Freeze an already validated config mapping (`validate_config`: every key present)."""
    sizes = config["validation_size"]
    per_dataset = {d: (sizes.get(d, 0) if isinstance(sizes, Mapping) else sizes) for d in config["datasets"]}
    train = TrainConfig(epochs=config["epochs"], batch_size=config["batch_size"], lr=float(config["lr"]),
                        device=config["device"], threads=config["threads"])
    return WorkflowConfig(
        datasets=tuple(config["datasets"]),
        models=tuple(config["models"]),
        seeds=tuple(int(s) for s in config["seeds"]),
        variants=grid_variants(config["methods"]),
        train=train,
        validation_sizes=per_dataset,
        # "~" and "~user" are the home folder, as a shell would read them (Snakemake and the jobs' quoted
        # arguments would otherwise make a folder named "~").
        data_root=None if config["data_root"] is None else os.path.expanduser(config["data_root"]),
        keep_checkpoints=bool(config["keep_checkpoints"]),
        ood={d: (config["ood"] or {}).get(d) for d in config["datasets"]},
        shifts=shift_list(config["shifts"]),
        shift_images=int(config["shift_images"]),
        # Normalised ("results/" -> "results"): the plan's paths must be the rules' patterns.
        results_dir=os.path.normpath(os.path.expanduser(config["results_dir"])),
        report_dir=os.path.normpath(os.path.expanduser(config["report_dir"])),
    )


def shift_errors(value: object, key: str = "shifts") -> list[str]:
    """What is wrong with a `shifts` value, item by item ([] when it is "all", null or a list of
    unique shift names): the schema's own message for it names no item."""
    from lsbench.shifts import SHIFTS

    allowed = f"Allowed: all, null, or a list of unique names of: {', '.join(SHIFTS)}"
    if value is None or value == "all":
        return []
    if not isinstance(value, list):
        return [f"config key {key!r} = {value!r}: not all, null or a list of shift names. {allowed}"]
    if not value:
        return [f"config key {key!r} = []: an empty list (use null for no shifts). {allowed}"]
    errors = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or name not in SHIFTS:
            errors.append(f"config key '{key}[{i}]' = {name!r}: unknown shift. {allowed}")
        elif name in value[:i]:
            errors.append(f"config key '{key}[{i}]' = {name!r}: a repeated shift. {allowed}")
    return errors


OUTPUT_DIR_KEYS = ("results_dir", "report_dir")


def output_dir_errors(config: Mapping[str, Any]) -> list[str]:
    """results_dir and report_dir: non-empty paths without braces (Snakemake would read a brace as
    a wildcard in every output under them), and a leading "~" only where it names a home folder
    (`to_workflow_config` expands it); the schema's own message is a regular expression."""
    allowed = "Allowed: a folder, relative to the working directory, absolute or under ~, without { or }"
    errors = []
    for key in OUTPUT_DIR_KEYS:
        value = config.get(key)
        if not isinstance(value, str):
            errors.append(f"config key {key!r} = {value!r}: not a path. {allowed}")
        elif not value.strip():
            errors.append(f"config key {key!r} = {value!r}: an empty path. {allowed}")
        elif "{" in value or "}" in value:
            errors.append(f"config key {key!r} = {value!r}: braces would be read as wildcards. {allowed}")
        elif os.path.expanduser(value).startswith("~"):
            errors.append(f"config key {key!r} = {value!r}: {value.split(os.sep)[0]} names no home folder here. "
                          f"{allowed}")
    return errors


def shift_list(value: str | list[str] | None) -> tuple[str, ...]:
    """The `shifts` key as names in the registry's order: "all" is every shift, null none."""
    from lsbench.shifts import SHIFTS

    if value is None:
        return ()
    chosen = set(SHIFTS) if value == "all" else set(value)
    return tuple(name for name in SHIFTS if name in chosen)


def validation_count(size: int | float, n_train: int) -> int:
    """Images to hold out of `n_train`: `size` itself, or floor(size * n_train) for a fraction;
    ConfigError unless at least one training image is left."""
    problem = _validation_problem(size, n_train)
    if problem:
        raise ConfigError(f"config key 'validation_size' = {size!r}: of the {n_train} training images, this {problem}")
    return _held_out(size, n_train)


def _held_out(size: int | float, n_train: int) -> int:
    fraction = not (isinstance(size, int) or float(size).is_integer())
    return math.floor(size * n_train) if fraction else int(size)


def _validation_problem(size: int | float, n_train: int) -> str | None:
    """Why `size` cannot be held out of `n_train` images, or None."""
    if isinstance(size, float) and size.is_integer() and size != 0:
        return (f"is a whole number written as a float, which is ambiguous (all images, or {int(size)}?): write "
                f"{int(size)} for {int(size)} image(s), or a fraction below 1")
    count = _held_out(size, n_train)
    if not 0 <= count < n_train:
        return f"holds out {count} and must leave at least one"
    if count == 0 and size != 0:  # a temperature fitted on nothing would silently be NaN
        return f"holds out 0 (use 0 for none, or a fraction of at least 1/{n_train})"
    return None
