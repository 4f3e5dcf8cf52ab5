"""Exporting a run folder: what ``recgoat export`` does, as one Python call.

:func:`~recgoat.serving.artifacts.export_run` takes a model and a dataset in hand. A trainer run folder (or a
benchmark cell) holds the best model but not the dataset: :func:`export_run_dir` finds ``best/``, loads the
model, recovers the dataset the run's ``run_config.json`` or ``cell.json`` records (checked against the
fingerprint it was trained on) and the feature folder it trained with, so a Python user gets the command's
checks and messages rather than redoing them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from recgoat.errors import DataError, RecGOATError, option

if TYPE_CHECKING:
    from recgoat.datasets import Dataset
    from recgoat.training.run import RunRecord


@dataclass(frozen=True)
class RunExport:
    """What :func:`export_run_dir` wrote, and the lines saying which dataset and feature folder it took from the
    run's records (none for one given by the caller, or a train run recording no feature folder)."""

    path: Path  # the artefact folder
    model: str  # the model's name
    dataset: str  # the dataset's name (a benchmark cell's: its label)
    notes: tuple[str, ...] = ()


def export_run_dir(run_dir: str | Path, out: str | Path, dataset: str | Path | Dataset | None = None,
                   features: str | Path | None = None, overwrite: bool = False, seen: str = "all",
                   warn: Optional[Callable[[str], None]] = None) -> RunExport:
    """Export the run in ``run_dir`` (a `recgoat train` run or benchmark cell folder holding ``best/``, or a saved
    model folder) as a servable artefact in ``out``, as ``recgoat export`` does.

    ``dataset`` (a name or folder, or a :class:`~recgoat.datasets.Dataset` in hand): the data the run was trained
    on; default: the one its run_config.json or cell.json records, prepared as for training. A name or folder is
    prepared as the run recorded and named as its data, as ``evaluate --dataset`` does (a saved model's folder
    records nothing: loaded as named). Any of them is checked against the fingerprint the run recorded.
    ``features``: the feature folder (enables profile texts); default: the one the run recorded, if found.
    ``overwrite`` and ``seen``: as :func:`~recgoat.serving.artifacts.export_run`, which writes the artefact.

    The destination is checked first, before the slow loads; a run that has not finished (its best model so far
    is exported) is reported through ``warn`` (default: a ``UserWarning``, as ``evaluate`` gives) at once, so
    it is said also when the export then fails. Refusals are :class:`~recgoat.errors.RecGOATError` with the
    command's messages, naming this function's arguments (``dataset=``) where the command names its options.
    """
    from recgoat.datasets import Dataset, load
    from recgoat.serving.artifacts import check_destination, check_seen, export_run
    from recgoat.training.run import read_run_record, unfinished_note

    run_dir, out = Path(run_dir), Path(out)
    check_seen(seen)
    check_destination(out, overwrite)  # first: fail before the slow loads
    unfinished = unfinished_note(run_dir)
    if unfinished:
        (warn or _warn)(unfinished)
    model = _load_model(run_dir / "best" if (run_dir / "best").is_dir() else run_dir)
    record = read_run_record(run_dir)  # once, for the dataset and the feature folder
    if dataset is None:
        ds, used = _recorded_dataset(run_dir, record)
    elif isinstance(dataset, Dataset):  # loaded already: not loaded again, checked the same way
        ds, used = dataset, None
        _check_trained_on(run_dir, repr(dataset.name), ds)
    elif record is None:  # a saved model's folder: nothing says how its data was prepared
        ds, used = load(str(dataset)), None
        _check_trained_on(run_dir, repr(str(dataset)), ds)
    else:
        # as `evaluate --dataset` loads it: prepared as the run's record says and under the run's name (part of the
        # fingerprint: a folder moved under another name holds the same data), which plain loading refused
        ds, used = replace(record, source=str(dataset)).load_dataset(), None  # the record read above
        _check_trained_on(run_dir, f"{dataset} ({option('--dataset', 'dataset=')}, loaded as {ds.name!r})", ds)
    note = None
    if features is None:  # the run's own feature folder, so a text-trained model keeps its text encoder
        features, note = _recorded_features(record)
    path = export_run(model, ds, out, features, overwrite=overwrite, seen=seen)
    return RunExport(path, model.name, ds.name, tuple(line for line in (used, note) if line))


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)  # at the caller of export_run_dir


def _load_model(model_dir: Path):
    """The saved model in ``model_dir``; any failure to read it as a :class:`DataError` naming the folder."""
    from recgoat.models.base import Recommender

    try:
        return Recommender.load(model_dir)
    except RecGOATError:
        raise
    except Exception as e:  # safetensors/torch errors on a tampered file: still the user's folder
        raise DataError(model_dir, f"not a loadable saved model ({type(e).__name__}: {e})") from None


def _check_trained_on(run_dir: Path, given: str, ds: Dataset) -> None:
    """Refuse a dataset given by the caller (``given``: how the message names it) whose fingerprint is not the one
    the run recorded (its result.json, or the checkpoint of a run not finished:
    :func:`~recgoat.training.run.trained_fingerprint`)."""
    from recgoat.training.run import trained_fingerprint

    where, fp = trained_fingerprint(run_dir)
    if fp is not None and fp != ds.fingerprint():
        raise DataError(where, f"the run was trained on dataset fingerprint {fp}, but {given} has "
                               f"{ds.fingerprint()}: not the same data")


def _recorded_dataset(run_dir: Path, record: RunRecord | None) -> tuple[Dataset, str]:
    """The dataset ``run_dir``'s record (training.run.read_run_record: run_config.json of `recgoat train`, or cell.json
    of a benchmark cell) names, prepared as it was for training, checked against the fingerprint the run recorded;
    and a line saying so."""
    from recgoat.training.run import trained_fingerprint

    if record is None:
        parent = run_dir.parent  # `export RUN/best`: the model folder, its records are one level up
        ran = run_dir.name == "best" and any((parent / f).is_file() for f in ("run_config.json", "cell.json"))
        hint = f"give the run folder {parent} instead, or " if ran else ""
        given = option("--dataset NAME_OR_FOLDER", "dataset=NAME_OR_FOLDER")
        raise DataError(run_dir, f"records no dataset (no run_config.json or cell.json: not a `recgoat train` run "
                                 f"or benchmark cell folder): {hint}pass {given}")
    name = record.dataset_name  # a cell's where it is now: an error naming the paths tried if nowhere
    ds = record.load_dataset()  # a recorded folder moved away: an error naming the record and --dataset
    where, fp = trained_fingerprint(run_dir)
    where, fp = (where, fp) if fp is not None else (record.path, record.recorded_fingerprint)
    if fp is not None and fp != ds.fingerprint():
        raise DataError(where, f"the run was trained on dataset fingerprint {fp}, but {name} (as {record.path.name} "
                               f"records it) now has {ds.fingerprint()}: the data changed since; pass "
                               f"{option('--dataset', 'dataset=')} with the data the run was trained on")
    return ds, (f"dataset: {name}, prepared as the run's {record.path.name} records "
                f"({option('--dataset', 'dataset=')} to choose another)")


def _recorded_features(record: RunRecord | None) -> tuple[Optional[Path], Optional[str]]:
    """The feature folder recorded in a trainer run's run_config.json or a benchmark cell's cell.json, and a
    line saying what was done; (None, None) when there is no record, or a run's names none or is not readable."""
    if record is not None and record.is_cell:
        return _cell_features(record)
    recorded = record.content.get("features") if record is not None and isinstance(record.content, dict) else None
    if not recorded:
        return None, None
    if Path(recorded).is_dir():
        return Path(recorded), f"features: {recorded} (the run's, from run_config.json; {_choose_features()})"
    return None, f"features: the run's folder {recorded} is not found from here; {_without()}"


def _without() -> str:
    return f"exporting without text features (pass {option('--features', 'features=')} to enable profile texts)"


def _choose_features() -> str:
    return f"{option('--features', 'features=')} to choose another"


def _cell_features(record: RunRecord) -> tuple[Optional[Path], Optional[str]]:
    """The feature folder a benchmark cell trained with, as cell.json's ``data.features`` records it: a folder as
    typed (relative to where the benchmark ran), or ``auto``: ``<out>/features/<label>[-split<seed>]``
    (:func:`~recgoat.benchmark.data.auto_feature_folder`), the cell folder being
    ``<out>/runs/<label>/<model>/seed<seed>``. Always with a line: a cell exported without text features used to
    lose its profile texts silently."""
    from recgoat.benchmark.paths import locate_recorded

    meta, run_dir = record.content, record.path.parent
    try:
        recorded = meta["data"].get("features")
    except (KeyError, TypeError, AttributeError):  # not readable (None), an older record, or not a dict
        return None, f"features: cell.json records no feature folder; {_without()}"
    if not recorded or not isinstance(recorded, str):  # null, or its model reads none (the runner records none)
        return None, f"features: the cell trained without a feature folder (cell.json records none); {_without()}"
    if recorded != "auto":
        # where cell.json's `paths` records it (absolute; moved with the benchmark folder), else as typed
        found, tried = locate_recorded(recorded, meta, "features", run_dir)
        if found is not None and Path(found).is_dir():
            return Path(found), f"features: {found} (the cell's, from cell.json; {_choose_features()})"
        why = "" if Path(recorded).is_absolute() else \
            " (a relative path is relative to the folder the benchmark was started in)"
        looked = f"; looked for it at {', '.join(tried)}" if len(tried) > 1 else ""
        return None, f"features: the cell's folder {recorded} is not found from here{why}; {_without()}{looked}"
    folder = _auto_features(run_dir.absolute())
    if folder is not None and folder.is_dir():
        return folder, f"features: {folder} (the cell's `features: auto` folder; {_choose_features()})"
    where = f" ({folder} does not exist)" if folder is not None else \
        " (the cell folder is not <benchmark out>/runs/<dataset>/<model>/seed<seed>)"
    return None, f"features: the cell's `features: auto` folder is not found{where}; {_without()}"


def _auto_features(run_dir: Path) -> Optional[Path]:
    """``<out>/features/<label><tag>`` for a cell at ``<out>/runs/<label>/<model>/seed<seed>`` (None if it is not
    there); ``<tag>`` is ``-split<seed>`` under benchmark.json's ``split_seeds: true`` (each seed re-splits)."""
    from recgoat.benchmark.data import auto_feature_folder
    from recgoat.io import read_json

    if len(run_dir.parents) < 4 or run_dir.parents[2].name != "runs" or not run_dir.name.startswith("seed"):
        return None
    out, label = run_dir.parents[3], run_dir.parents[1].name
    plain, split = auto_feature_folder(out, label), auto_feature_folder(out, label, run_dir.name[len("seed"):])
    try:
        split_seeds = read_json(out / "benchmark.json").get("split_seeds")
    except (OSError, ValueError, AttributeError):
        split_seeds = None
    if isinstance(split_seeds, bool):
        return split if split_seeds else plain
    # no readable benchmark.json: the one of the two that exists (plain when neither or both do)
    return split if split.is_dir() and not plain.is_dir() else plain
