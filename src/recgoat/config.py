"""Typed run configuration: YAML files plus ``key.sub=value`` command-line overrides.

Every section is a pydantic model with ``extra="forbid"``, so an unknown or ill-typed key is refused
with a message naming it (``trainer.lrr: unknown key``). Model hyper-parameters are validated against
the chosen model's own ``Config``.
"""
from __future__ import annotations

import json
import re
import textwrap
import types
import typing
from importlib import resources
from pathlib import Path, PurePath
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recgoat.datasets.preprocess import NO_HELD_OUT, RATIOS_RULE, SPLIT_METHODS, ratios_ok
from recgoat.errors import ConfigError, did_you_mean
from recgoat.strict import booleans_for_numbers
from recgoat.training.trainer import TrainConfig


class DataConfig(BaseModel):
    """Which dataset and how to prepare it. A folder already split (prepared, MMRec, line-per-user) keeps
    its split: preparation options set explicitly for one are refused, since they would be ignored."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field("ml-latest-small", min_length=1)  # "" would be the current folder
    """A dataset name (recgoat datasets list) or folder."""
    min_rating: float | None = None
    """Keep the interactions rated at least this as implicit feedback (null: every interaction counts)."""
    k_core: int = 5
    """Iterative k-core filter: every user and item keeps at least k interactions."""
    split: str = "random"
    """random (per user, by ratios), temporal (per user, by time) or loo (leave one out)."""
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train, validation and test shares of each user's interactions."""
    seed: int = 2026
    """The split's seed."""

    @field_validator("split")
    @classmethod
    def _known_split(cls, v: str) -> str:
        # checked here, naming data.split, rather than by the loader once the data is read
        methods = [m for m in SPLIT_METHODS if m != "none"]
        if v == "none":
            raise ValueError(f"{NO_HELD_OUT}; expected {', '.join(methods)}")
        if v not in methods:
            raise ValueError(f"unknown split {v!r}; expected {', '.join(methods)}")
        return v

    @field_validator("ratios")
    @classmethod
    def _ratios_split_everything(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not ratios_ok(v):  # the rule data preparation applies, checked here before anything loads
            raise ValueError(RATIOS_RULE)
        return v


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = "lightgcn"
    """The model (recgoat models list)."""
    preset: str | None = None
    """A packaged preset of the model's params (recgoat models list) or a YAML file of params; params override it."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The model's hyper-parameters (recgoat models show MODEL); a key left out takes the preset's or default value."""


class RunConfig(BaseModel):
    """A whole training run."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data: DataConfig = Field(default_factory=DataConfig)
    """Which dataset and how it is prepared."""
    model: ModelSection = Field(default_factory=ModelSection)
    """Which model, with which hyper-parameters."""
    trainer: TrainConfig = Field(default_factory=TrainConfig)
    """How the model is trained and selected (shared by every model)."""
    features: str | None = None
    """A folder written by `recgoat encode`, or auto: encoded into <out>/features/<dataset> and reused; null: ID
    embeddings only."""
    out: str = Field("runs", min_length=1)
    """The root folder of runs: <out>/<dataset>/<model>/seed<S>."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with two fixes for configuration files.

    * ``1e-3``, ``5E+4`` and ``1.0e5`` are floats, as in YAML 1.2 and JSON (YAML 1.1 wants a dot *and* a
      signed exponent, so PyYAML reads ``lr: 1e-3`` as the string ``'1e-3'``: refused for an integer key,
      kept as a string in ``model.params``);
    * a key given twice in one mapping is refused (PyYAML keeps the last silently, so a second
      ``trainer:`` section would drop every key of the first).
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"key {key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper knowing :class:`_Loader`'s floats: it quotes a string ``1e-3``, which it wrote bare
    (YAML 1.1 reads it as a string), and :func:`yaml_load` read back as the float 0.001."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789."))


def _yaml_number(loader: _Loader, node: yaml.ScalarNode) -> int | float | str:
    """YAML 1.1's numbers a user does not mean, read as YAML 1.2 reads them: ``010`` is 10, not octal 8
    (``data.seed: 0123`` was 83), and ``1:30`` the string it looks like, not base-60 90."""
    text = loader.construct_scalar(node)
    if ":" in text:
        return text
    if re.fullmatch(r"[-+]?0[0-7_]+", text):
        return int(text.replace("_", ""))
    return (loader.construct_yaml_int if node.tag.endswith(":int") else loader.construct_yaml_float)(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _yaml_number)
_Loader.add_constructor("tag:yaml.org,2002:float", _yaml_number)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with :class:`_Loader`'s fixes (scientific-notation floats, duplicate keys refused)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_line(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line (``line 3, column 1: expected ',' or ']' … (while parsing a flow sequence)``)
    instead of its several lines quoting ``<unicode string>``."""
    mark = getattr(e, "problem_mark", None)
    problem, context = getattr(e, "problem", None), getattr(e, "context", None)
    if mark is None or not (problem or context):
        return " ".join(str(e).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return f"{where}: {problem or context}" + (f" ({context})" if problem and context else "")


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it (numbers, booleans, lists, null).

    A value YAML reads as a plain string is kept exactly as typed (stripped): ``data.name=runs #2`` is
    ``'runs #2'``, not ``'runs'`` with ``#2`` taken for a YAML comment. Quote it (``'"x"'``) for YAML's own
    reading of a string."""
    try:
        value = yaml_load(text)
    except yaml.YAMLError:
        return text
    plain = text.strip()
    if isinstance(value, str) and plain and plain[0] not in "\"'!|>":
        return plain
    return value


def _override_items(overrides: list[str]) -> list[tuple[tuple[str, ...], str, str]]:
    """``(key path, raw value text, item)`` of each ``key=value`` override, refusing malformed ones."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        parts = tuple(p.strip() for p in key.strip().split("."))
        if "" in parts:
            raise ConfigError(f"override {item!r}: empty key name in {key.strip()!r}")
        out.append((parts, value, item))
    return out


def _set_path(data: dict[str, Any], parts: tuple[str, ...], value: Any, item: str) -> None:
    node = data
    for p in parts[:-1]:
        if node.get(p) is None:  # absent, or an empty YAML section (``params:`` with nothing under it)
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {p!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (creating sections as needed)."""
    for parts, value, item in _override_items(overrides):
        _set_path(data, parts, parse_value(value), item)
    return data


def _string_fallbacks(data: dict[str, Any], err: ValidationError, raw: dict[tuple[str, ...], str]) -> bool:
    """Where a string key set on the command line got a YAML non-string (``data.name=2024`` → ``2024``,
    ``out=on`` → ``True``, ``0123`` → ``83``), put back the text as typed; True if anything changed."""
    changed = False
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        text = raw.get(loc)
        if e["type"] == "string_type" and text is not None and text.strip() and not isinstance(e.get("input"), str):
            node = data
            for p in loc[:-1]:
                node = node[p]
            node[loc[-1]] = text.strip()
            changed = True
    return changed


def _section_keys(model: Any, loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the section holding ``loc``'s last key accepts (None when ``model`` does not say). An index
    steps into a list's items (``models.0.parms``: a benchmark's ``ModelSpec``)."""
    for part in loc[:-1]:
        if isinstance(part, int):  # a list entry: the list's item model
            args = typing.get_args(model) if typing.get_origin(model) in (list, tuple) else ()
            model = args[0] if args else None
            continue
        field = (getattr(model, "model_fields", None) or {}).get(str(part))
        model = _section_model(field.annotation) if field is not None else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    return list(model.model_fields)


def _section_model(annotation: Any) -> Any:
    """``annotation`` without an optional ``None`` (``Spec | None`` is the section ``Spec``)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return annotation


def _unknown_key(e: dict[str, Any], model: type[BaseModel] | None) -> str:
    """``unknown key``, with the closest valid key and all of them when ``model`` tells them: a typo
    (``trainer.epoch``) is fixed from the message alone."""
    keys = _section_keys(model, tuple(e["loc"]))
    if not keys:
        return "unknown key"
    return f"unknown key ({did_you_mean(str(e['loc'][-1]), keys)}valid keys: {', '.join(keys)})"


def _error_line(e: dict[str, Any], prefix: str = "", model: type[BaseModel] | None = None) -> str:
    loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
    msg = _unknown_key(e, model) if e["type"] == "extra_forbidden" else str(e["msg"]).removeprefix("Value error, ")
    # a validator's own message often quotes the value already ("…, got 'auc@20'"): not twice
    said = "input" in e and f"got {e['input']!r}" in msg
    return f"{loc}: {msg}" + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" and not said
                              and "input" in e and not isinstance(e["input"], dict) else "")


def format_validation_error(err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """Every error of ``err`` as ``key: message``; ``model`` (the class validated) lists the valid keys
    beside an unknown one."""
    return "; ".join(_error_line(e, prefix, model) for e in err.errors())


def first_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """``loc: message`` of the first error only (pydantic's ``Value error, `` prefix for our own validators
    dropped): one line for a command-line refusal. Given ``model`` (the class validated), an unknown key is
    told as :func:`format_validation_error` tells it: the closest valid key and all of them."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    if model is not None and first.get("type") == "extra_forbidden":
        msg = _unknown_key(first, model)
    else:
        msg = str(first.get("msg")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def read_yaml_mapping(path: Path, not_mapping: str) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (empty file: ``{}``); a :class:`ConfigError` naming the file when it
    is a folder, unreadable, binary or not valid YAML, or ``not_mapping`` when its top level is not a mapping."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML file")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))  # UTF-8 whatever the locale says
        data = {} if data is None else data
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_line(e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8), so not YAML") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {not_mapping}")
    return data


def read_config_file(path: str | Path | None, not_mapping: str) -> dict[str, Any]:
    """The mapping in the configuration file ``path`` (``{}`` without one), for the run's and the benchmark's
    ``load_config``: a :class:`ConfigError` naming the path when there is nothing there, else as
    :func:`read_yaml_mapping` says."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: configuration file not found")
    return read_yaml_mapping(path, not_mapping)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run configuration, apply overrides, validate everything including model params.

    ``values`` (``{"data.name": "my data #2"}``) are set as given, not read as YAML (the CLI's ``--dataset``,
    ``--out``…), before the ``key=value`` ``overrides``, which win over them and over the file."""
    data = read_config_file(path, "expected a mapping at the top level")
    for section in ("data", "model", "trainer"):  # an empty YAML section (all keys commented out) is {}
        if section in data and data[section] is None:
            data[section] = {}
    if isinstance(data.get("model"), dict) and "params" in data["model"] and data["model"]["params"] is None:
        data["model"]["params"] = {}
    # before the CLI's values go in: `trainer: 5` was blamed on an override "trainer.epochs=1" never typed
    nested = [(("model", "params"), data["model"]["params"])] \
        if isinstance(data.get("model"), dict) and "params" in data["model"] else []
    for keys, node in [((s,), data.get(s)) for s in ("data", "model", "trainer") if s in data] + nested:
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {'.'.join(keys)}: expected a section (key: value lines under it), "
                              f"got {node!r}")
    raw: dict[tuple[str, ...], str] = {}  # key → the text typed for it, for the string fallback
    given: set[tuple[str, ...]] = set()  # keys set on the command line (errors there are not the file's)
    for key, value in (values or {}).items():
        parts = tuple(key.split("."))
        _set_path(data, parts, value, f"{key}={value}")
        given.add(parts)
    for parts, text, item in _override_items(overrides or []):
        _set_path(data, parts, parse_value(text), item)
        raw[parts] = text
        given.add(parts)
    cfg = _validated(RunConfig, data, raw, lambda errors: _located_errors(errors, RunConfig, path, given))
    from recgoat.models.base import get_model_class

    cls = get_model_class(cfg.model.name)  # an unknown model before "no preset 'x' for model 'nope'"
    preset: tuple[Path, set[str]] | None = None  # the preset file and the params only it sets, for errors
    if cfg.model.preset is not None:
        preset_file = _preset_path(cfg.model.name, cfg.model.preset)
        preset_data = read_yaml_mapping(preset_file, "a preset is a mapping of model params")
        preset = (preset_file, {str(k) for k in preset_data} - {str(k) for k in cfg.model.params})
        cfg.model.params = {**preset_data, **cfg.model.params}
    params_raw = {k[2:]: v for k, v in raw.items() if len(k) == 3 and k[:2] == ("model", "params")}
    _validated(cls.Config, cfg.model.params, params_raw,
               lambda errors: _located_errors(errors, cls.Config, path, given, ("model", "params"), preset))
    return cfg


def _validated(model: type[BaseModel], data: dict[str, Any], raw: dict[tuple[str, ...], str],
               message: Callable[[list[dict[str, Any]]], str]) -> Any:
    """``model`` validated from ``data``, after putting back the typed text of string keys YAML read as something
    else (:func:`_string_fallbacks`); else a :class:`ConfigError` with ``message(errors)``."""
    bools = booleans_for_numbers(model, data)  # before validation: True is 1 to a validator (ks=[true, 5])
    if bools:
        raise ConfigError(message(bools))
    while True:
        try:
            # not model(**data): a YAML key that is not a string (``~: 1``, ``1: x``) was a TypeError traceback
            return model.model_validate(data)
        except ValidationError as e:
            if not _string_fallbacks(data, e, raw):
                raise ConfigError(message(e.errors())) from None


def _located_errors(errors: list[dict[str, Any]], model: type[BaseModel], path: Path | None,
                    given: set[tuple[str, ...]], prefix: tuple[str, ...] = (),
                    preset: tuple[Path, set[str]] | None = None) -> str:
    """The validation errors, each naming the file that set its key: none for keys the command line set
    (``--set trainer.lr=fast`` is not a fault of ``run.yaml``), the preset file for params only it sets, else
    the configuration file (a bad ``model.params`` key in ``run.yaml`` named no file)."""
    lines = []
    for e in errors:
        loc = (*prefix, *(str(p) for p in e["loc"]))
        source = path
        if any(loc[:len(k)] == k or k[:len(loc)] == loc for k in given):
            source = None
        elif preset is not None and len(loc) > len(prefix) and loc[len(prefix)] in preset[1]:
            source = preset[0]
        line = _error_line(e, ".".join(prefix), model)
        lines.append(line if source is None else f"{source}: {line}")
    return "; ".join(lines)


def read_run_config(path: Path) -> RunConfig:
    """The configuration a run folder's ``run_config.json`` records; a :class:`ConfigError` naming the file
    when it is unreadable, not JSON or not a valid run configuration (edited by hand, truncated)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable run configuration ({e})") from None
    return run_config_from(data, path)


def run_config_from(data: Any, path: Path) -> RunConfig:
    """``data`` read from a run's ``run_config.json`` (``path``, named in errors) as a :class:`RunConfig`; a
    :class:`ConfigError` naming the file when it is not a valid run configuration."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e, model=RunConfig)}") from None


def preset_params(model: str, preset: str) -> dict[str, Any]:
    """The hyper-parameters a preset sets: ``preset`` is a YAML file of model params, or the name of a
    preset packaged for this model (``recgoat/configs/<model>-<preset>.yaml``, e.g. ``recgoat`` +
    ``ml100k``). Run and benchmark configs name one with ``preset:``; their ``params`` override it."""
    return read_yaml_mapping(_preset_path(model, preset), "a preset is a mapping of model params")


def _configs_folder() -> Path:
    return Path(str(resources.files("recgoat") / "configs"))


def packaged_presets(model: str) -> list[str]:
    """The names of the presets packaged for ``model`` (``recgoat/configs/<model>-<name>.yaml``), sorted."""
    return sorted(f.name[len(model) + 1: -len(".yaml")] for f in _configs_folder().glob(f"{model}-*.yaml"))


def _preset_path(model: str, preset: str) -> Path:
    """The YAML file ``preset`` names (see :func:`preset_params`)."""
    path = Path(preset)
    if not path.is_file():
        path = _configs_folder() / f"{model}-{preset}.yaml"
        if not path.is_file():
            known = packaged_presets(model)
            raise ConfigError(f"no preset {preset!r} for model {model!r} ({did_you_mean(preset, known)}packaged: "
                              f"{', '.join(known) or 'none'}; or the path of a YAML file of model params)")
    return path


def with_preset(model: str, preset: str | None, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` over the preset's values (``params`` as they are when there is no preset)."""
    return params if preset is None else {**preset_params(model, preset), **params}


def one_line(text: str | None) -> str:
    """``text`` (a docstring, a description) on one line: each run of whitespace, newlines included, one space."""
    return " ".join((text or "").split())


def yaml_scalar(value: Any) -> str:
    """``value`` as one line of YAML that reads back as the same value: a string YAML would read as something
    else (``2024``, ``null``, ``runs #2: final``) quoted, a tuple as a list, a path as its text."""
    value = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, PurePath) else value
    # keys in their order: a grid's order is its points' (and their labels')
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=2**31, allow_unicode=True,
                     sort_keys=False).strip()
    return text[:-len("...")].strip() if text.endswith("...") else text  # a bare scalar ends with "..."


def field_values(model: BaseModel) -> dict[str, Any]:
    """Each field of ``model`` → its value (the instance's own, not a dump: a nested section stays a model)."""
    return {name: getattr(model, name) for name in type(model).model_fields}


# a key whose lines a caller writes itself (model params, a list of entries): (the model holding it, the key, the
# indent) → its lines, or None to write it as any other
Nested = Callable[[type[BaseModel], str, str], "list[str] | None"]


def yaml_fields(model: type[BaseModel], values: dict[str, Any], given: set[str] | frozenset[str], indent: str = "",
                nested: Nested | None = None, describe: bool = True) -> list[str]:
    """The lines of a commented YAML section holding ``model``'s fields, in their order, each under its
    description (the field's docstring) unless not ``describe``: a key in ``given`` written at its value, any other
    commented out (``# key: value``), a field absent from ``values`` left out. A value that is itself a model is a
    section of its own (its set keys given); ``nested`` may write a key's lines instead (see :data:`Nested`)."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        if name not in values:
            continue
        if describe:
            lines.extend(f"{indent}# {part}" for part in textwrap.wrap(one_line(field.description), 110 - len(indent)))
        value = values[name]
        own = nested(model, name, indent) if nested is not None else None
        if own is not None:
            lines.extend(own)
        elif isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            lines.extend(yaml_fields(type(value), field_values(value), value.model_fields_set, indent + "  ", nested))
        else:
            lines.append(f"{indent}{'' if name in given else '# '}{name}: {yaml_scalar(value)}")
    return lines


def run_config_yaml(cfg: RunConfig, run_dir: str | None = None) -> str:
    """``cfg`` (from :func:`load_config`) as a commented YAML file that ``recgoat train --config`` reads back as the
    same run: every key of every section, the model's params included, under its description (the fields'
    docstrings). The keys the configuration sets are written; the others are commented out with their defaults,
    since an unset key can mean more than its default value (``trainer.progress`` unset: a bar on a terminal only;
    a data option given for a folder already split is refused; a model config with every key given reads as a saved
    model's). ``run_dir`` (train's ``--run-dir``, not a key of the configuration) is named in a comment, so that the
    file's reader knows the run folder must be given again."""
    from recgoat.models.base import get_model_class

    model_config = get_model_class(cfg.model.name).Config(**cfg.model.params)
    lines = ["# recgoat run configuration, for recgoat train --config FILE; a commented-out key is at its default"]
    if run_dir is not None:
        lines.append(f"# printed with --run-dir {one_line(run_dir)}: not a key of this file, give it again "
                     "(recgoat train --config FILE --run-dir …)")

    def params(owner: type[BaseModel], name: str, indent: str) -> list[str] | None:
        if owner is not ModelSection or name != "params":
            return None
        return [f"{indent}{name}:", *yaml_fields(type(model_config), field_values(model_config),
                                                 set(cfg.model.params), indent + "  ")]

    lines += yaml_fields(RunConfig, field_values(cfg), cfg.model_fields_set, nested=params)
    return "\n".join(lines) + "\n"
