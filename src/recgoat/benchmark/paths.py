"""Recorded paths: ``cell.json``'s ``paths`` (:func:`recorded_paths`): the dataset and feature folders made
absolute, the working folder and the cell's folder, so that ``evaluate``/``export`` of the cell and a resume from
another working folder find them (:func:`locate_recorded`; for a whole benchmark, :func:`with_recorded_paths`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from recgoat.benchmark.cells import Cell, plan_cells
from recgoat.benchmark.config import BenchmarkConfig, dataset_label
from recgoat.io import read_json


def recorded_paths(cell: Cell, data: dict[str, Any]) -> dict[str, Any]:
    """What ``cell.json`` records as ``paths`` beside the dataset and feature folders as typed (``data.name``,
    ``data.features``): each made absolute as of the run (a registered dataset name stays a name; ``auto`` and
    no features: null, an ``auto`` folder is found beside the cell), the working folder then and the cell's
    folder. :func:`locate_recorded` reads it back."""
    from recgoat.datasets.registry import stable_reference

    feats = data.get("features")
    return {"dataset": stable_reference(cell.dataset.name),
            "features": os.path.abspath(feats) if isinstance(feats, str) and feats != "auto" else None,
            "cwd": os.getcwd(), "run_dir": os.path.abspath(cell.run_dir)}


def _consistent_absolute(typed: Any, paths: Any, key: str) -> str | None:
    """The absolute path ``paths[key]`` records for the ``typed`` one, when it is that path taken from the
    recorded working folder (a record edited by hand since, e.g. another ``data.features``, is not trusted)."""
    if not isinstance(typed, str) or not typed or not isinstance(paths, dict):
        return None
    absolute, cwd = paths.get(key), paths.get("cwd")
    if not isinstance(absolute, str) or not os.path.isabs(absolute) or not isinstance(cwd, str):
        return None
    return absolute if os.path.normpath(os.path.join(cwd, typed)) == os.path.normpath(absolute) else None


def _relocated(absolute: str, paths: dict[str, Any], record_dir: Path) -> str | None:
    """``absolute`` where it is now if the tree holding it and the run folder moved together: the run folder
    was ``paths["run_dir"]`` and is ``record_dir`` now; their common ancestor moved with it."""
    then, now = paths.get("run_dir"), os.path.abspath(record_dir)
    if not isinstance(then, str) or not os.path.isabs(then) or os.path.normpath(then) == now:
        return None
    try:
        base = os.path.commonpath([os.path.normpath(absolute), os.path.normpath(then)])
    except ValueError:  # different drives
        return None
    below = Path(os.path.relpath(then, base)).parts
    now_parts = Path(now).parts
    if not below or below == (".",) or len(now_parts) <= len(below) or now_parts[-len(below):] != below:
        return None
    return os.path.join(str(Path(*now_parts[:-len(below)])), os.path.relpath(absolute, base))


def _recorded_locations(typed: Any, paths: dict[str, Any], key: str, record_dir: Path) -> list[str]:
    """Where a ``paths`` record puts the folder typed as ``typed``: its absolute path (when consistent with the
    recorded working folder), then that path moved with the run folder (now ``record_dir``)."""
    absolute = _consistent_absolute(typed, paths, key)
    if absolute is None:
        return []
    moved = _relocated(absolute, paths, record_dir)
    return [absolute] if moved is None else [absolute, moved]


def locate_recorded(typed: str, meta: Any, key: str, record_dir: Path) -> tuple[str | None, list[str]]:
    """Where the dataset (``key="dataset"``) or feature folder (``"features"``) a cell record names as ``typed``
    is now, and the paths tried: the absolute path its ``paths`` record holds, that path moved with the run folder
    (``record_dir``: the folder holding cell.json now), then ``typed`` as given (relative to the working folder
    now). ``typed`` itself when that is the same folder (so messages show what was typed), else the absolute path;
    None when none exists. A registered dataset name stays a name; a record without ``paths`` (older versions)
    gives ``typed`` as before."""
    paths = meta.get("paths") if isinstance(meta, dict) else None
    if not isinstance(paths, dict) or (key == "dataset" and paths.get("dataset") == typed
                                      and not os.path.isabs(typed)):
        return typed, []  # an older record, or a registered name recorded as a name
    candidates = [*_recorded_locations(typed, paths, key, record_dir), os.path.abspath(typed)]
    tried = list(dict.fromkeys(os.path.normpath(c) for c in candidates))
    for c in tried:
        if os.path.exists(c):
            return (typed if os.path.abspath(typed) == c else c), tried
    return None, tried


def with_recorded_paths(config: BenchmarkConfig) -> BenchmarkConfig:
    """``config`` with each dataset or feature folder given by a path not found from the working folder replaced
    by the folder its cells' ``cell.json`` records for that same typed path (:func:`locate_recorded`), so that the
    benchmark resumes, or ``--report-only`` rebuilds its report, from another working folder. Each replacement is
    said on stderr; the data's fingerprint is still checked against every finished cell's."""
    from recgoat.datasets.registry import stable_reference

    cells = plan_cells(config)
    specs = []
    for spec in config.datasets:
        update: dict[str, Any] = {}
        for field_, key in (("name", "dataset"), ("features", "features")):
            typed = getattr(spec, field_)
            if not isinstance(typed, str) or typed == "auto" or Path(typed).exists() \
                    or (key == "dataset" and stable_reference(typed) == typed and not os.path.isabs(typed)):
                continue
            for cell in cells:
                if cell.dataset is not spec:
                    continue
                try:
                    meta = read_json(cell.run_dir / "cell.json")
                except (OSError, ValueError):
                    continue
                if not isinstance(meta, dict) or not isinstance(meta.get("data"), dict) \
                        or meta["data"].get(field_) != typed:
                    continue
                found, _ = locate_recorded(typed, meta, key, cell.run_dir)
                if found is not None and found != typed:
                    update[field_] = found
                    print(f"{dataset_label(spec)}: {field_} {typed} is not found from here; using {found}, as "
                          f"{cell.run_dir / 'cell.json'} records it", file=sys.stderr, flush=True)
                    break
        if update:
            update.setdefault("label", dataset_label(spec))  # a label taken from the typed folder's name
            spec = spec.model_copy(update=update)
        specs.append(spec)
    return config.model_copy(update={"datasets": specs})
