"""What each model is and what it can be set to: the facts behind ``recgoat models list`` and ``recgoat models
show``, read off the registered classes themselves (the module's reference line, the ``Config`` fields with their
types, bounds, defaults and docstrings, the packaged presets), so the listing cannot drift from the code.

>>> info = model_info("lightgcn")
>>> [p.name for p in info.params]
['embedding_dim', 'n_layers', 'reg_weight']
"""
from __future__ import annotations

import inspect
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from recgoat.config import format_validation_error, one_line, packaged_presets, preset_params
from recgoat.errors import ConfigError
from recgoat.models.base import Recommender, available_models, get_model_class, is_builtin


@dataclass(frozen=True)
class ParamInfo:
    """One hyper-parameter: ``model.params.<name>`` in a run config, ``params.<name>`` in a benchmark's."""

    name: str
    type: str  # e.g. "int", "float or null", "one of: elu, none", "list of text, image"
    bounds: str  # e.g. ">= 1", "0 <= x < 1"; "" when unbounded
    default: Any
    value: Any  # the value with the preset asked for (the default without one)
    doc: str  # the field's docstring, on one line

    @property
    def from_preset(self) -> bool:
        """The preset sets another value than the default (one setting it to the default shows as the default)."""
        return self.value != self.default


@dataclass(frozen=True)
class ModelInfo:
    name: str
    class_path: str  # module.Class
    summary: str  # the first paragraph of the class's own docstring, else its module's, on one line
    builtin: bool  # recgoat's own, not a plugin's
    trainable: bool  # trained by gradient: trainable, and implements what it needs (Recommender.unimplemented)
    reads: tuple[str, ...]  # feature kinds read with these settings (`recgoat encode`'s text, image, users)
    presets: tuple[str, ...]  # packaged presets (`model.preset`)
    preset: str | None  # the preset the values are shown with
    params: tuple[ParamInfo, ...]
    unimplemented: tuple[str, ...] = ()  # required methods the class lacks: `recgoat train` refuses it

    @property
    def trains(self) -> str:
        """The "trains" column: yes, no, or no with the methods the model lacks (it cannot train, or run)."""
        missing = ", ".join(f"{m}()" for m in self.unimplemented)
        return f"no (implements no {missing})" if missing else "yes" if self.trainable else "no"

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("name", "class_path", "summary", "builtin", "trainable", "preset")}
        out.update(reads=list(self.reads), presets=list(self.presets), unimplemented=list(self.unimplemented))
        out["params"] = [{"name": p.name, "type": p.type, "bounds": p.bounds, "default": p.default,
                          "value": p.value, "doc": p.doc} for p in self.params]
        return out


def _summary(cls: type[Recommender]) -> str:
    """The first paragraph of the class's docstring, else of its module's (recgoat's models cite their paper
    there): the base class's docstring is no model's."""
    own = cls.__dict__.get("__doc__")
    module = sys.modules.get(cls.__module__)
    for doc in (own, getattr(module, "__doc__", None)):
        doc = inspect.cleandoc(doc or "")
        if doc:
            return one_line(doc.split("\n\n")[0])
    return ""


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        inner = _type_name(args[0]) if args else "any"
        return "list of " + (inner[len("one of: "):] if inner.startswith("one of: ") else inner)
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    """``Field(ge=…, lt=…)``'s bounds as text (pydantic keeps them as annotated-types constraints in ``metadata``)."""
    got = {op: getattr(m, op) for m in field.metadata for op in ("ge", "gt", "le", "lt") if hasattr(m, op)}
    low = f"{got['ge']} <=" if "ge" in got else f"{got['gt']} <" if "gt" in got else ""
    high = f"<= {got['le']}" if "le" in got else f"< {got['lt']}" if "lt" in got else ""
    if low and high:
        return f"{low} x {high}"
    if "ge" in got:
        return f">= {got['ge']}"
    if "gt" in got:
        return f"> {got['gt']}"
    return f"x {high}" if high else ""


def model_info(name: str, preset: str | None = None) -> ModelInfo:
    """What ``recgoat models show NAME [--preset P]`` prints. A ConfigError for an unknown model (listing the
    available ones), an unknown preset (listing the packaged ones) or a preset whose values the model refuses."""
    cls = get_model_class(name)
    values: dict[str, Any] = {}
    if preset is not None:
        values = preset_params(name, preset)
    try:
        config = cls.Config(**values)
    except ValidationError as e:  # worded as `recgoat train --set model.preset=…` words it
        raise ConfigError(f"preset {preset!r} of {name}: {format_validation_error(e, prefix='model.params')}") from None
    params = tuple(
        ParamInfo(name=k, type=_type_name(f.annotation), bounds=_bounds(f), default=f.get_default(call_default_factory=True),
                  value=getattr(config, k), doc=one_line(f.description))
        for k, f in cls.Config.model_fields.items())
    return ModelInfo(name=name, class_path=f"{cls.__module__}.{cls.__qualname__}", summary=_summary(cls),
                     # a trainable class without loss() trains no epoch: the trainer refuses it (with
                     # parameters) or evaluates it once (without), as one with trainable = False
                     builtin=is_builtin(cls), trainable=bool(cls.trainable) and not cls.unimplemented(),
                     reads=tuple(cls.feature_kinds(config)), presets=tuple(packaged_presets(name)),
                     preset=preset, params=params, unimplemented=cls.unimplemented())


def list_models(failures: list[str] | None = None) -> list[ModelInfo]:
    """Every available model's :class:`ModelInfo`: recgoat's own, then the plugins' (RECGOAT_PLUGINS' modules and
    installed entry points, loaded to describe them), each group by name. A plugin that fails to load (or to be
    described) is its one error (a ConfigError naming it), as for every command that looks models up; given
    ``failures``, each such error's message is appended there instead and every other model is listed."""
    infos = []
    for name in available_models(failures):
        try:
            infos.append(model_info(name))
        except ConfigError as e:
            if failures is None:
                raise
            failures.append(str(e))
    return sorted(infos, key=lambda i: (not i.builtin, i.name))
