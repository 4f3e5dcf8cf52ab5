"""Plugin models: how a model name that recgoat itself does not define is found.

A model is found by name in :data:`recgoat.models.base.MODELS`. When a name is missing there, two explicit
sources are consulted, in this order, and nothing else:

1. installed packages' entry points in the group ``recgoat.models`` (the entry point's *name* is the model
   name; its value is a module that registers the model with ``@register``, or a ``Recommender`` subclass,
   which is registered under the entry point's name);
2. the comma-separated module names in the environment variable ``RECGOAT_PLUGINS`` (quick experiments
   without packaging; the folder holding them must be on ``PYTHONPATH``).

A model name read from a data file (``run_config.json``, a saved ``model.json``, a benchmark YAML) is only
ever looked up this way: it is never taken for a module to import, since importing a module that an
untrusted file names would run its code.

Discovery is lazy (built-in names never trigger it) and needs no state of its own: an imported plugin stays
in ``sys.modules`` and its models in ``MODELS``. A plugin that fails to load is reported as one
:class:`PluginError` naming it and the exception's message; the names it registered before failing are
removed again, and a plugin that would replace a built-in model is refused.
"""
from __future__ import annotations

import importlib
import os
import re
import threading
from importlib.metadata import EntryPoint
from types import ModuleType
from typing import Any, Callable

from recgoat.errors import ConfigError

ENTRY_POINT_GROUP = "recgoat.models"
ENV_VAR = "RECGOAT_PLUGINS"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# a plugin module may itself look a model up while it is imported: re-entrant
_lock = threading.RLock()


class PluginError(ConfigError):
    """A plugin model could not be loaded (one line naming the plugin and the problem)."""


def env_modules() -> list[str]:
    """The module names listed in ``RECGOAT_PLUGINS`` (empty entries ignored); a :class:`PluginError` for an
    entry that is not a dotted module name (a file path, say), which ``import`` would misread."""
    names = [n.strip() for n in os.environ.get(ENV_VAR, "").split(",") if n.strip()]
    for n in names:
        if not _MODULE_NAME.fullmatch(n):
            raise PluginError(f"{ENV_VAR}: {n!r} is not a module name; list importable module names separated by "
                              f"commas (my_models, mypkg.models) and put the folder holding them on PYTHONPATH")
    return names


def entry_points(name: str | None = None) -> list[EntryPoint]:
    """The installed entry points of group ``recgoat.models`` (those called ``name`` when given)."""
    from importlib.metadata import entry_points as _eps

    found = _eps(group=ENTRY_POINT_GROUP) if name is None else _eps(group=ENTRY_POINT_GROUP, name=name)
    unique: dict[tuple[str, str], EntryPoint] = {}
    for ep in found:  # one distribution seen twice on sys.path (a path listed twice) is one plugin
        unique.setdefault((ep.name, ep.value), ep)
    return list(unique.values())


def _describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" of package {dist.name}" if dist is not None and getattr(dist, "name", None) else ""
    return f"plugin entry point {ep.name!r} = {ep.value!r}{where} (group {ENTRY_POINT_GROUP!r})"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _guarded(label: str, load: Callable[[], Any]) -> Any:
    """Run one plugin's ``load`` as a unit: any exception becomes one :class:`PluginError` naming ``label``,
    and it may not change a built-in model's entry (its partial registrations are undone on failure)."""
    from recgoat.models.base import MODELS, ModelNameTaken, is_builtin

    before = dict(MODELS)
    try:
        out = load()
    except ModelNameTaken as e:
        _restore(before)
        raise PluginError(f"{label}: {e}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - foreign code: any import-time failure is its own
        _restore(before)
        raise PluginError(f"{label} failed to load: {_one_line(e)}") from None
    # a plugin writing MODELS["lightgcn"] = ... directly bypasses register(): check the result too
    replaced = sorted(n for n, c in before.items() if is_builtin(c) and MODELS.get(n) is not c)
    if replaced:
        _restore(before)
        raise PluginError(f"{label}: replaces the built-in model(s) {', '.join(map(repr, replaced))}; refused "
                          f"(a plugin adds models under names of its own)")
    return out


def _restore(before: dict[str, Any]) -> None:
    from recgoat.models.base import MODELS

    MODELS.clear()
    MODELS.update(before)


def load_entry_point(name: str) -> None:
    """Load the installed entry point called ``name`` (if any), so that model ``name`` is registered."""
    from recgoat.models.base import MODELS, Recommender, register

    eps = entry_points(name)
    if not eps:
        return
    if len(eps) > 1:
        raise PluginError(f"model {name!r} is provided by several installed plugins: "
                          f"{'; '.join(_describe(ep) for ep in eps)}; uninstall all but one")
    ep = eps[0]
    label = _describe(ep)
    if not ep.pattern.match(ep.value):  # ep.load() would fail with "'NoneType' object has no attribute 'group'"
        raise PluginError(f"{label}: {ep.value!r} is not an entry point value; write 'module' or 'module:Class' "
                          f"in the package's entry point")
    obj = _guarded(label, ep.load)
    if isinstance(obj, type) and issubclass(obj, Recommender):
        if MODELS.get(name) is not obj:
            own = getattr(obj, "name", None)
            if own != name and MODELS.get(own) is obj:  # decorated with another name than the entry point's
                raise PluginError(f"{label}: {obj.__module__}.{obj.__qualname__} is registered as {own!r}; the "
                                  f"entry point's name must be the model name (rename it {own!r})")
            _guarded(label, lambda: register(name)(obj))
    elif not isinstance(obj, ModuleType):
        raise PluginError(f"{label}: names a {type(obj).__name__}, not a module or a Recommender subclass")
    if name not in MODELS:
        raise PluginError(f"{label}: loaded, but registers no model named {name!r}; the entry point's name must "
                          f"be the name given to @register (or point it at the model class: 'module:Class')")


def load_env_plugins(failures: list[str] | None = None) -> None:
    """Import every module listed in ``RECGOAT_PLUGINS`` (each once: an imported module is kept). The first
    that fails raises its :class:`PluginError`; given ``failures``, each failure's message is appended there
    instead and the other modules are still imported (a listing shows what does load)."""
    def failed(e: PluginError) -> None:
        if failures is None:
            raise e
        failures.append(str(e))

    try:
        modules = env_modules()
    except PluginError as e:
        failed(e)
        return
    for module in modules:
        try:
            _guarded(f"plugin module {module!r} (from {ENV_VAR})", lambda m=module: importlib.import_module(m))
        except PluginError as e:
            failed(e)


def discover(name: str | None = None, failures: list[str] | None = None) -> None:
    """Make model ``name`` available if a plugin provides it; ``None``: load what the full list of model
    names needs (the ``RECGOAT_PLUGINS`` modules; entry points are listed by name without being loaded).
    ``failures``: as for :func:`load_env_plugins`."""
    from recgoat.models.base import MODELS

    with _lock:
        if name is not None and name not in MODELS:
            load_entry_point(name)  # the one installed plugin for that name, not every installed one
        if name is None or name not in MODELS:
            load_env_plugins(failures)


def plugin_names() -> list[str]:
    """Names of the models installed plugins offer (entry point names, not loaded)."""
    return sorted({ep.name for ep in entry_points()})
