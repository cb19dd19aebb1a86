"""Workflow configuration: coerce command-line overrides, validate once, freeze.

Snakemake hands `--config seeds=[0,1]` to the workflow as a list of *strings*
(`['0', '1']`), so values are coerced to the types the schema declares before the
schema is checked. Validation happens once, in the Snakefile; everything downstream
receives the frozen `WorkflowConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (everything but seed and epsilon)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    model: str = "mlp"
    device: str = "auto"
    threads: int = 1
    validation_size: int = 0  # 0 trains on the whole training set, as the seed experiment did


@dataclass(frozen=True)
class WorkflowConfig:
    """The validated grid plus the training hyperparameters shared by every run."""

    seeds: tuple[int, ...]
    epsilons: tuple[float, ...]
    train: TrainConfig
    data_dir: str | None = None
    keep_checkpoints: bool = False


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _coerce_scalar(value: Any, types: list[str]) -> Any:
    """Turn a command-line string into the first schema type it parses as."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if "null" in types and text.lower() in ("null", "none", "~"):
        return None
    for kind in types:
        try:
            if kind == "integer":
                return int(text)
            if kind == "number":
                return float(text)
        except ValueError:
            continue
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    return value


def _schema_types(spec: Mapping[str, Any]) -> list[str]:
    kind = spec.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def coerce_config(raw: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce string values (and string list items) to the types the schema declares.

    Values that do not parse are left as they are, for validation to report.
    """
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        spec = props.get(key)
        if spec is None:
            out[key] = value
        elif "array" in _schema_types(spec) and isinstance(value, str):
            # `--config seeds=0` gives a bare scalar: a one-item list is what was meant.
            out[key] = [_coerce_scalar(value, _schema_types(spec.get("items", {})))]
        elif isinstance(value, (list, tuple)):
            item_types = _schema_types(spec.get("items", {}))
            out[key] = [_coerce_scalar(v, item_types) for v in value]
        else:
            out[key] = _coerce_scalar(value, _schema_types(spec))
    return out


def _describe(error: Any, schema: Mapping[str, Any]) -> str:
    path = list(error.absolute_path)
    if not path:
        allowed = ", ".join(sorted(schema.get("properties", {})))
        return f"config: {error.message}. Allowed keys: {allowed}"
    key = str(path[0])
    where = key + "".join(f"[{p}]" for p in path[1:])
    allowed = schema.get("properties", {}).get(key, {}).get("description", "")
    return f"config key '{where}' = {error.instance!r}: {error.message}. Allowed: {allowed}"


def validate_config(raw: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce and validate; raise ConfigError naming every bad key, its value and what is allowed."""
    import jsonschema  # only the workflow validates; training jobs need not import it

    config = coerce_config(raw, schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(_describe(e, schema) for e in errors))
    return config


def to_workflow_config(config: Mapping[str, Any]) -> WorkflowConfig:
    """Freeze an already validated config mapping."""
    train = TrainConfig(
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        lr=float(config["lr"]),
        model=config["model"],
        device=config["device"],
        threads=config["threads"],
        validation_size=config["validation_size"],
    )
    return WorkflowConfig(
        seeds=tuple(int(s) for s in config["seeds"]),
        epsilons=tuple(float(e) for e in config["epsilons"]),
        train=train,
        data_dir=config["data_dir"],
        keep_checkpoints=bool(config["keep_checkpoints"]),
    )


def format_epsilon(eps: float) -> str:
    """The epsilon as it appears in paths: the shortest repr that round-trips ("0.05")."""
    return repr(float(eps))
