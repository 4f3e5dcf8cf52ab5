"""Resume: what ``cell.json`` records, and whether a run folder is resumed, started afresh or refused.

A cell whose ``result.json`` holds the runner's ``benchmark`` entry (written last, after the trainer's
``result.json`` and ``test_per_user.npz``) is not recomputed; a cell interrupted midway continues from the trainer's
last checkpoint. ``cell.json`` records what the cell was started with (:func:`_signature`: model, params, training
settings, seed and the data: dataset spec, split seed, features, and the prepared data's fingerprint; ``paths``: the
dataset and feature folders made absolute, the working folder and the cell's folder, so that ``evaluate``/``export``
of the cell and a resume from another working folder find them: :func:`~recgoat.benchmark.paths.locate_recorded`);
before anything trains, a folder holding cells of a different configuration (:func:`_signature_diff`), or of
another version of the same dataset (:func:`~recgoat.benchmark.checks.check_data_versions`), or that read other
feature matrices than the folder holds now (:func:`~recgoat.benchmark.checks.check_feature_versions`), is refused
rather than silently mixing two experiments. A cell that failed, or never reached its first checkpoint, holds
nothing to mix: under a changed configuration it is started afresh (:func:`_restartable`). One change is not a
different experiment: a larger ``train.epochs`` alone (:func:`epochs_extension`). A cell that stopped early, before
its smaller cap, is what the larger cap gives too, and stands; a cell with a checkpoint trains on from it to the
larger cap (the trainer lets epochs grow), as if it had been run with that cap from the start.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from recgoat.benchmark.cells import Cell
from recgoat.benchmark.data import is_presplit, needs_features
from recgoat.benchmark.paths import _recorded_locations, recorded_paths
from recgoat.errors import ConfigError
from recgoat.io import read_json
from recgoat.training.trainer import TrainConfig


# TrainConfig fields that change how a run is displayed or executed but not its results (beyond float rounding:
# the thread count and the device change the order of sums, as a resumed cell on another machine would).
_COSMETIC_TRAIN_KEYS = ("progress", "num_threads", "eval_chunk_size", "resume", "device")


def _data_signature(cell: Cell) -> dict[str, Any]:
    """What decides a cell's data without loading it, so a finished cell is checked too: the dataset spec,
    the split seed and, for a model that reads them, the features."""
    from recgoat.models.base import get_model_class

    spec = cell.dataset
    features = spec.features if needs_features(get_model_class(cell.model.name)) else None
    return {"name": spec.name, "max_users": spec.max_users, "prepare": spec.prepare,
            "split_seed": None if is_presplit(spec) else cell.split_seed, "features": features}


def _signature(cell: Cell, train_cfg: TrainConfig, dataset=None) -> dict[str, Any]:
    train = {k: v for k, v in train_cfg.model_dump(mode="json").items() if k not in _COSMETIC_TRAIN_KEYS}
    sig = {"model": cell.model.name, "params": cell.model.params, "train": train, "seed": cell.seed}
    sig["hash"] = hashlib.sha256(json.dumps(sig, sort_keys=True, default=str).encode()).hexdigest()[:16]
    sig["data"] = _data_signature(cell)
    # every setting the model ran with, defaults included: a default that changes in a later version (or a new
    # key whose absence meant other behaviour, Config.legacy_settings) is then caught on resume, which `params`
    # (only what the user set) cannot show
    effective = _effective_params(cell.model.name, cell.model.params)
    if effective is not cell.model.params:
        sig["model_config"] = effective
    if dataset is not None:
        sig.update(dataset=dataset.name, dataset_fingerprint=dataset.fingerprint(),
                   paths=recorded_paths(cell, sig["data"]))
    return sig


def _signature_diff(cell: Cell, sig: dict[str, Any]) -> list[str]:
    """Each setting on which the cell's recorded ``cell.json`` differs from ``sig``, as ``KEY: OLD → NEW``
    (``train.lr: 0.001 → 0.01``, ``params.embedding_dim: 64 → 16``, values as JSON); none if unrecorded."""
    path = cell.run_dir / "cell.json"
    if not path.exists():
        return []
    old = read_json(path)
    # a cell.json from before "data" was recorded is not compared on it (nothing to compare with)
    keys = ["model", "params", "train", "seed", "data"] + (["dataset_fingerprint"] if "dataset_fingerprint" in sig else [])
    diff = [k for k in keys if k in old and _comparable(k, old[k]) != _comparable(k, sig[k])]
    if "data" in diff and _same_data_by_recorded_paths(old, sig["data"], cell.run_dir):
        diff.remove("data")
    if "params" in diff and "model" not in diff:  # `params: {dim: 64}` where 64 is the default is no change
        diff = [k for k in diff if k != "params" or _effective_params(sig["model"], old["params"])
                != _effective_params(sig["model"], sig["params"])]
    if not diff:
        return _model_config_changes(sig["model"], _recorded_model_config(cell, old), sig.get("model_config"))
    changes = []
    for k in diff:
        was, now = old[k], sig[k]
        if k == "params" and "model" not in diff:  # as compared: defaults filled, so `64 → 16`, not `unset → 16`
            filled = _effective_params(sig["model"], was), _effective_params(sig["model"], now)
            if filled[0] is not was and filled[1] is not now:  # both valid (else compared raw, as shown)
                was, now = filled
        elif k == "data":  # as compared (a folder by the folder it names) where only that shows the change
            was, now = _comparable_leaves(was, now)
        elif k == "train":  # as compared: a setting the cell's version lacked at its legacy value, not `unset`
            was = _comparable(k, was)
        changes += _setting_changes(k, was, now)
    return changes


_UNSET = object()


def _setting_changes(key: str, old: Any, new: Any) -> list[str]:
    """``KEY.SUB: OLD → NEW`` for each leaf of two signature entries that differs (a mapping is walked key by
    key, anything else is one value); a key only one side has is ``unset`` on the other."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in list(old) + [k for k in new if k not in old]:
            out += _setting_changes(f"{key}.{k}", old.get(k, _UNSET), new.get(k, _UNSET))
        return out
    if old == new:
        return []
    shown = ["unset" if v is _UNSET else json.dumps(v, default=str) for v in (old, new)]
    return [f"{key}: {shown[0]} → {shown[1]}"]


def _comparable_leaves(old: Any, new: Any) -> tuple[Any, Any]:
    """Two data entries with a folder shown as compared (:func:`_comparable`) where its typed spelling is the
    same on both sides but names another folder (a relative path from another working folder)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return old, new
    old_c, new_c = _comparable("data", old), _comparable("data", new)
    old, new = dict(old), dict(new)
    for k in ("name", "features"):
        if old.get(k) == new.get(k) and old_c.get(k) != new_c.get(k):
            old[k], new[k] = old_c.get(k), new_c.get(k)
    return old, new


def _recorded_model_config(cell: Cell, old: dict[str, Any]) -> Any:
    """The model configuration ``cell`` ran with: ``cell.json``'s ``model_config``, else (a cell of a version
    that did not record it) the one its saved best model or checkpoint holds, so that such a cell is compared
    too (a two-layer RecGOAT cell of bare stacking was reported beside ELU-stacked ones); None if neither."""
    if "model_config" in old:
        return old["model_config"]
    return (_recorded_mapping(cell.run_dir / "best" / "model.json", "config")
            or _recorded_mapping(cell.run_dir / "checkpoint" / "state.json", "signature", "model_config"))


def _recorded_mapping(path: Path, *keys: str) -> dict[str, Any] | None:
    """The JSON object at ``keys`` in the JSON file ``path``; None when the file, a key or an object is missing
    (a cell of an older version, a run stopped before its first checkpoint)."""
    try:
        record = read_json(path)
        for key in keys:
            record = record[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if isinstance(record, dict) else None


def _model_config_changes(model: str, old: Any, new: Any) -> list[str]:
    """``model config KEY`` for each setting the cell recorded in ``model_config`` (older cells recorded none)
    whose value the same ``params`` now give differently: a changed default, or a key added since whose absence
    meant other behaviour (its legacy value, as loading a saved model reads it). Keys added since with the old
    behaviour as their default are not compared."""
    from recgoat.models.base import get_model_class

    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    recorded = get_model_class(model).Config.with_legacy_settings(old)
    return [f"model config {k}: {json.dumps(v)} → {json.dumps(new.get(k))}" for k, v in recorded.items()
            if k in new and new[k] != v]


def _effective_params(model: str, params: Any) -> Any:
    """``params`` with every default of the model's config filled in (the trainer's config is compared the same
    way: as validated); the raw value where it does not validate, e.g. a ``cell.json`` of an older version."""
    from recgoat.models.base import get_model_class

    try:
        return get_model_class(model).Config(**params).model_dump(mode="json")
    except (ConfigError, ValidationError, TypeError, ValueError):
        return params


def _comparable(key: str, value: Any) -> Any:
    """A signature entry as compared: a dataset or features folder by the folder it names (a relative path is
    relative to the working directory), so ``features/x`` and its absolute path are one configuration; the
    training settings with those a cell of an older version lacks at their legacy values
    (``TrainConfig.with_legacy_settings``)."""
    from recgoat.datasets.registry import stable_reference

    if key == "train" and isinstance(value, dict):  # a cell recorded before a setting existed ran with its legacy value
        return TrainConfig.with_legacy_settings(value)
    if key != "data" or not isinstance(value, dict):
        return value
    value = dict(value)
    feats = value.get("features")
    if isinstance(feats, str) and feats != "auto":
        value["features"] = stable_reference(feats, names=())
    name = value.get("name")
    if isinstance(name, str):
        value["name"] = stable_reference(name)
    return value


def _same_data_by_recorded_paths(old: dict[str, Any], data: Any, record_dir: Path) -> bool:
    """Whether ``old``'s data entry names the data of ``data`` (a signature's) when its dataset and feature
    folders are taken as its ``paths`` record has them (absolute, as at the time of the run, or moved with the
    run folder, now ``record_dir``: :func:`locate_recorded`): a resume from another working folder, its relative
    paths found through the cells' records (:func:`with_recorded_paths`), is the same configuration. The typed
    paths (relative to the working folder now) are compared first."""
    recorded = old.get("data")
    if not isinstance(recorded, dict) or not isinstance(data, dict) or not isinstance(old.get("paths"), dict):
        return False
    alt = dict(recorded)
    for field_, key in (("name", "dataset"), ("features", "features")):
        for candidate in _recorded_locations(recorded.get(field_), old["paths"], key, record_dir):
            if _comparable("data", {field_: data.get(field_)}) == _comparable("data", {field_: candidate}):
                alt[field_] = candidate
                break
    return _comparable("data", alt) == _comparable("data", data)


STANDS, TRAIN_ON = "stands", "train on"


def epochs_extension(cell: Cell, sig: dict[str, Any]) -> str | None:
    """How ``cell``, recorded with a smaller ``train.epochs`` than ``sig`` and otherwise ``sig``'s configuration, meets
    the larger cap: :data:`STANDS` for a finished cell that stopped early (its ``epochs_run`` below its cap: a run to
    the larger cap draws the same epochs, stops at the same one and reports the same result), :data:`TRAIN_ON` for
    any other cell with a checkpoint (the trainer resumes it up to the new cap), None when the difference is not a
    larger ``train.epochs`` alone (or there is no checkpoint to go on from)."""
    path = cell.run_dir / "cell.json"
    if not path.exists():
        return None
    try:
        was, now = read_json(path)["train"]["epochs"], sig["train"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if type(was) is not int or type(now) is not int or not was < now:
        return None
    if _signature_diff(cell, {**sig, "train": {**sig["train"], "epochs": was}}):
        return None  # something else differs too
    result = _recorded_mapping(cell.run_dir / "result.json") if cell.done else None
    if result is not None and type(result.get("epochs_run")) is int and result["epochs_run"] < was:
        return STANDS
    return TRAIN_ON if (cell.run_dir / "checkpoint" / "state.json").is_file() else None


def reopen_extended(cells: list[Cell], sig_of: Callable[[Cell], dict[str, Any]]) -> list[Cell]:
    """Mark the finished ``cells`` that train on to a larger ``train.epochs`` (:func:`epochs_extension`; ``sig_of``:
    a cell's signature now) as not done for this run (:attr:`Cell.reopened`); returns them. Nothing is written:
    :func:`run_cell <recgoat.benchmark.runner.run_cell>` takes the smaller cap's ``benchmark`` entry out of
    ``result.json`` when the cell starts."""
    reopened = []
    for cell in cells:
        if cell.done and epochs_extension(cell, sig_of(cell)) == TRAIN_ON:
            cell.reopened = True
            reopened.append(cell)
    return reopened


def _mismatch_message(cell: Cell, diff: list[str]) -> str:
    """The refusal of a cell run with another configuration, naming each setting that differs (``diff``:
    :func:`_signature_diff`), as ``recgoat train`` names them."""
    return f"{cell.run_dir}: was run with a different configuration ({'; '.join(diff)})"


_MISMATCH_FIX = "use another --out, give the changed model or dataset another `label`, or delete that folder"


def _restartable(cell: Cell) -> bool:
    """An unfinished cell that failed (``error.txt``) or holds no checkpoint: nothing of it is reported or
    resumed under another configuration, so a changed configuration starts it afresh instead of being refused
    (a model that could not be built, or a loss that diverged, is fixed by changing its settings)."""
    return not cell.done and ((cell.run_dir / "error.txt").exists()
                              or not (cell.run_dir / "checkpoint" / "state.json").exists())


AFRESH, REFUSED = "afresh", "refused"


def resume_plan(cell: Cell, sig: dict[str, Any]) -> tuple[str | None, list[str]]:
    """How ``cell``'s folder meets the configuration ``sig``, and the settings that differ (:func:`_signature_diff`):
    ``None`` (as recorded, or nothing recorded), an :func:`epochs_extension` (a larger ``train.epochs`` alone),
    :data:`AFRESH` (a cell of another configuration holding nothing to mix, :func:`_restartable`), or :data:`REFUSED`
    (any other cell of another configuration)."""
    diff = _signature_diff(cell, sig)
    if not diff:
        return None, diff
    extension = epochs_extension(cell, sig)
    if extension is not None:
        return extension, diff
    return (AFRESH if _restartable(cell) else REFUSED), diff


def check_signature(cell: Cell, sig: dict[str, Any]) -> str | None:
    """Refuse to resume or reuse a run folder that was started with another configuration; else how the cell goes
    on (:func:`resume_plan`)."""
    plan, diff = resume_plan(cell, sig)
    if plan == REFUSED:
        raise ConfigError(f"{_mismatch_message(cell, diff)}; {_MISMATCH_FIX}")
    return plan
