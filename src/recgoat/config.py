"""Typed run configuration: YAML files plus ``key.sub=value`` command-line overrides.

Every section is a pydantic model with ``extra="forbid"``, so an unknown or ill-typed key is refused
with a message naming it (``trainer.lrr: unknown key``). Model hyper-parameters are validated against
the chosen model's own ``Config``.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recgoat.datasets.preprocess import RATIOS_RULE, ratios_ok
from recgoat.errors import ConfigError
from recgoat.training.trainer import TrainConfig


class DataConfig(BaseModel):
    """Which dataset and how to prepare it. A folder already split (prepared, MMRec, line-per-user) keeps
    its split: preparation options set explicitly for one are refused, since they would be ignored."""

    model_config = ConfigDict(extra="forbid")

    name: str = "ml-latest-small"
    min_rating: float | None = None
    k_core: int = 5
    split: str = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2026

    @field_validator("ratios")
    @classmethod
    def _ratios_split_everything(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not ratios_ok(v):  # the rule data preparation applies, checked here before anything loads
            raise ValueError(RATIOS_RULE)
        return v


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "lightgcn"
    preset: str | None = None  # see preset_params; ``params`` override the preset's values
    params: dict[str, Any] = Field(default_factory=dict)


class RunConfig(BaseModel):
    """A whole training run."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    trainer: TrainConfig = Field(default_factory=TrainConfig)
    features: str | None = None  # folder written by `recgoat encode`; None: no side features
    out: str = "runs"


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it (numbers, booleans, lists, null)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (creating sections as needed)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = parse_value(value)
    return data


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{loc}: {msg}" + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden"
                                         and "input" in e and not isinstance(e["input"], dict) else ""))
    return "; ".join(lines)


def first_validation_error(err: ValidationError) -> str:
    """``loc: message`` of the first error only (pydantic's ``Value error, `` prefix for our own validators
    dropped): one line for a command-line refusal."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def read_yaml_mapping(path: Path, not_mapping: str) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (empty file: ``{}``); a :class:`ConfigError` naming the file when it
    is a folder, unreadable, binary or not valid YAML, or ``not_mapping`` when its top level is not a mapping."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8), so not YAML") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {not_mapping}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run configuration, apply overrides, validate everything including model params."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: configuration file not found")
        data = read_yaml_mapping(path, "expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    try:
        cfg = RunConfig(**data)
    except ValidationError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(where + format_validation_error(e)) from None
    cfg.model.params = with_preset(cfg.model.name, cfg.model.preset, cfg.model.params)
    validate_model_params(cfg.model.name, cfg.model.params)
    return cfg


def read_run_config(path: Path) -> RunConfig:
    """The configuration a run folder's ``run_config.json`` records; a :class:`ConfigError` naming the file
    when it is unreadable, not JSON or not a valid run configuration (edited by hand, truncated)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable run configuration ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e)}") from None


def preset_params(model: str, preset: str) -> dict[str, Any]:
    """The hyper-parameters a preset sets: ``preset`` is a YAML file of model params, or the name of a
    preset packaged for this model (``recgoat/configs/<model>-<preset>.yaml``, e.g. ``recgoat`` +
    ``ml100k``). Run and benchmark configs name one with ``preset:``; their ``params`` override it."""
    path = Path(preset)
    if not path.is_file():
        configs = Path(str(resources.files("recgoat") / "configs"))
        path = configs / f"{model}-{preset}.yaml"
        if not path.is_file():
            known = sorted(f.name[len(model) + 1: -len(".yaml")] for f in configs.glob(f"{model}-*.yaml"))
            raise ConfigError(f"no preset {preset!r} for model {model!r} (packaged: {', '.join(known) or 'none'}; "
                              "or the path of a YAML file of model params)")
    return read_yaml_mapping(path, "a preset is a mapping of model params")


def with_preset(model: str, preset: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` over the preset's values (``params`` as they are when there is no preset)."""
    return params if preset is None else {**preset_params(model, preset), **params}


def validate_model_params(name: str, params: dict[str, Any]):
    from recgoat.models.base import get_model_class

    cls = get_model_class(name)
    try:
        return cls.Config(**params)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, prefix="model.params")) from None
