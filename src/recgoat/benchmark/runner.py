"""Run every (dataset, model, seed) cell of a benchmark, resumably.

A benchmark is the product ``datasets × models × seeds``. Each cell trains one model with the shared
:class:`~recgoat.training.trainer.Trainer` into its own run folder::

    <out>/runs/<dataset>/<model>/seed<seed>/   cell.json, log.jsonl, checkpoint/, best/,
                                               result.json, test_per_user.npz

Model selection is validation-only: the trainer keeps the epoch with the best validation
``train.metric`` (Recall@20 by default) and reports test metrics for that checkpoint alone; the report
likewise ranks models by their mean *validation* metric (METHOD.md §6, §9).

Seeds: a cell's seed sets ``torch.manual_seed``/``numpy`` before ``Model.build`` (so initialisation
differs per seed) and ``TrainConfig.seed`` (negative sampling). The train/valid/test split is the same
for every seed (``split_seed``) unless ``split_seeds: true``, in which case seed *s* also re-splits.

Resume: a cell whose ``result.json`` holds the runner's ``benchmark`` entry (written last, after the
trainer's ``result.json`` and ``test_per_user.npz``) is not recomputed; a cell interrupted midway continues
from the trainer's last checkpoint. ``cell.json`` records what the cell was started with (model, params,
training settings, seed and the data: dataset spec, split seed, features, and the prepared data's fingerprint;
``paths``: the dataset and feature folders made absolute, the working folder and the cell's folder, so that
``evaluate``/``export`` of the cell and a resume from another working folder find them: :func:`locate_recorded`);
before anything trains, a folder holding cells of a different configuration, or of another version of the same
dataset, or that read other feature matrices than the folder holds now (:func:`check_feature_versions`), is refused
rather than silently mixing two experiments. A cell
that failed, or never reached its first checkpoint, holds nothing to mix: under a changed configuration it
is started afresh.

Hyper-parameter grids: a model entry's ``grid`` (:func:`expand_grid`) stands for one entry per point of the
Cartesian product of its settings' values, each an ordinary labelled model of the benchmark (its own cells,
resumed like any other) marked ``grid_of``; the report picks, per dataset, the point with the best mean
*validation* metric (:func:`recgoat.benchmark.report.tuned`), as MMRec's grid search does on validation.
With ``grid_seeds: N`` the points train on the first N seeds only; after every other cell, the point chosen over
those seeds (:func:`split_later_grid_cells`, the report's own choice) trains on the remaining seeds.

Workers: with ``jobs: N`` the cells still to train are handed to N processes (:func:`_run_in_workers`), each
cell trained exactly as one process trains it (:func:`run_cell`: same seeds, folders and files); the grid's
first-seed points are all trained before its chosen points' other seeds, as in one process. Once the run stops
(Ctrl-C, SIGTERM through the CLI, an error that stops it) no worker starts another cell, and no worker outlives the
parent (:func:`_stop_workers`, :func:`_watch_parent`); a worker still starting up handles a Ctrl-C once started
(:func:`_sigint_blocked`).
"""
from __future__ import annotations

import copy
import ctypes
import gc
import hashlib
import itertools
import json
import os
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recgoat.config import first_validation_error, parse_value, read_yaml_mapping, with_preset
from recgoat.errors import ConfigError, DataError, RecGOATError, TrainingDiverged
from recgoat.io import folder_lock, read_json, write_json
from recgoat.training.trainer import TrainConfig

# TrainConfig fields that change how a run is displayed or executed but not its results.
_COSMETIC_TRAIN_KEYS = ("progress", "num_threads", "eval_chunk_size", "resume")
_SAFE_NAME = "".join(chr(c) for c in range(128) if chr(c).isalnum()) + "-_.+="


def _check_name(kind: str, name: str) -> str:
    if not name or any(c not in _SAFE_NAME for c in name) or name.startswith("."):
        raise ConfigError(f"{kind} label {name!r} cannot name a folder; use letters, digits and -_.+=")
    return name


class ModelSpec(BaseModel):
    """One model of the benchmark: a registered model name, its hyper-parameters, training overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str
    label: str | None = None  # column/folder name; defaults to ``name`` (set it to compare two configs)
    # a preset (recgoat.config.with_preset: a packaged name such as "ml100k", or a YAML path); its values
    # are merged under ``params`` when the spec is read, so cells are signed by the settings themselves
    preset: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the benchmark's TrainConfig
    # settings → values, expanded by BenchmarkConfig into one entry per point (expand_grid); never kept
    grid: dict[str, Any] | None = Field(default=None, exclude=True)
    # the grid this entry is a point of (set by expand_grid, or by hand to group labelled variants): the report
    # keeps, per dataset, the group's point with the best mean validation metric
    grid_of: str | None = None

    @model_validator(mode="after")
    def _merge_preset(self) -> "ModelSpec":
        if self.grid is not None:  # a ModelSpec made directly: the grid would be dropped without a word
            raise ValueError("`grid` is expanded by BenchmarkConfig into one model per point: give the entry there")
        self.params = with_preset(self.name, self.preset, self.params)
        return self

    @property
    def key(self) -> str:
        return self.label or self.name


class DatasetSpec(BaseModel):
    """One dataset: a registered name or a folder, optional subsetting/preparation, and its features."""

    model_config = ConfigDict(extra="forbid")

    name: str  # a name known to recgoat.datasets.load, or a folder
    label: str | None = None
    features: str | None = "auto"  # a folder, "auto" (encode into <out>/features/<label>), or None
    max_users: int | None = Field(default=None, gt=0)  # keep the first N users of the raw data
    prepare: dict[str, Any] = Field(default_factory=dict)  # PrepareConfig fields (k_core, split…)


def _as_list(v: Any, key: str) -> list:
    """A YAML list (or nothing); a scalar or mapping where a list belongs is a validation error."""
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise ValueError(f"{key} must be a list, got {type(v).__name__} {v!r}")
    return v


GRID_SECTIONS = ("params", "train")


def _grid_value_text(value: Any, where: str) -> str:
    """A grid value as part of a label (a folder name): numbers as Python writes them back exactly."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, list):
        return "-".join(_grid_value_text(v, where) for v in value) or "none"
    raise ValueError(f"{where}: a grid value is a number, string, boolean or list, got {value!r}")


def expand_grid(entry: Any) -> list[Any]:
    """A model entry holding ``grid`` → one entry per point of its grid, in order, the last setting varying
    fastest; any other entry as it is.

    ``grid`` maps ``params.NAME`` / ``train.NAME`` (or ``params:`` / ``train:`` sub-mappings) to lists of
    values; each point's entry has them set over the entry's own ``params`` / ``train`` (and its preset),
    the label ``<key>+NAME=VALUE+…`` (``lightgcn+lr=0.001+n_layers=2``; ``section.NAME`` where a name is
    in both sections) and ``grid_of: <key>``, the entry's label or name."""
    if not isinstance(entry, dict) or "grid" not in entry:
        return [entry]
    key = entry.get("label") or entry.get("name")
    where = f"models.{key}.grid"
    grid = entry["grid"]
    example = "e.g. {train.lr: [0.001, 0.005], params.n_layers: [2, 3]}"
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"{where}: a mapping of settings to lists of values, {example}; got {grid!r}")
    if entry.get("grid_of") is not None:
        raise ValueError(f"models.{key}: give `grid` or `grid_of`, not both (a grid names its points' group)")
    nested = {f"{name}.{k}": v for name in GRID_SECTIONS if isinstance(grid.get(name), dict)
              for k, v in grid[name].items()}
    flat: dict[str, Any] = {}
    for name, values in grid.items():  # in the order given
        if name in GRID_SECTIONS and isinstance(values, dict):
            flat.update((k, v) for k, v in nested.items() if k.startswith(f"{name}."))
        else:
            flat[str(name)] = values
    # a section's mapping wins over a dotted key: `--set models.X.grid.train.lr=[…]` (which writes a mapping)
    # replaces the values a file gave as `train.lr`
    flat.update(nested)
    axes: list[tuple[str, str, list]] = []
    for name, values in flat.items():
        section, _, setting = name.partition(".")
        if section not in GRID_SECTIONS or not setting or "." in setting:
            hint = f" (params.{name} or train.{name}?)" if "." not in name else ""
            raise ValueError(f"{where}.{name}: a grid setting is params.NAME or train.NAME{hint}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{name}: a non-empty list of values, got {values!r}")
        texts = [_grid_value_text(v, f"{where}.{name}") for v in values]
        if len(set(texts)) < len(texts):
            raise ValueError(f"{where}.{name}: values repeat: {values!r}")
        axes.append((section, setting, values))
    settings = [s for _, s, _ in axes]
    base = {k: v for k, v in entry.items() if k != "grid"}
    points = []
    for values in itertools.product(*(v for _, _, v in axes)):
        point = copy.deepcopy(base)
        sections = {sec: dict(point.get(sec) or {}) for sec in GRID_SECTIONS}
        parts = [key]
        for (section, setting, _), value in zip(axes, values):
            sections[section][setting] = value
            shown = setting if settings.count(setting) == 1 else f"{section}.{setting}"
            parts.append(f"{shown}={_grid_value_text(value, where)}")
        point.update(sections, label="+".join(parts), grid_of=key)
        points.append(point)
    return points


def check_seeds(seeds: list[int]) -> None:
    """The rules every list of benchmark seeds obeys (``BenchmarkConfig.seeds``, ``recgoat.demo --seeds``)."""
    if not seeds:
        raise ValueError("no seed given")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds}")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0 (numpy's generators take no negative seed): {seeds}")


class BenchmarkConfig(BaseModel):
    """Everything a benchmark run depends on; read from YAML, overridable key by key."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[DatasetSpec]
    models: list[ModelSpec]
    seeds: list[int] = Field(default_factory=lambda: [2026])
    # a grid's points train on the first N seeds only; the point validation chooses there then trains on the
    # rest (MMRec tunes on one seed): P·N + S − N cells a grid of P points instead of P·S. None: every seed
    grid_seeds: int | None = Field(default=None, ge=1)
    train: TrainConfig = Field(default_factory=TrainConfig)
    split_seed: int = 2026
    split_seeds: bool = False  # re-split the data with every seed (else one fixed split)
    out: Path = Path("benchmark-results")
    significance: Literal["wilcoxon", "ttest"] = "wilcoxon"
    report_metrics: list[str] = Field(default_factory=lambda: ["recall", "ndcg", "precision", "hit", "map"])
    report_ks: list[int] | None = None  # the Ks of the tables; None: every evaluated K (train.ks)
    on_error: Literal["continue", "raise"] = "continue"
    progress: bool = True
    # cells trained at once, each in a worker process of its own (``train.num_threads`` threads each; unset:
    # the cores shared out); how a run is carried out, not a setting of its results
    jobs: int = Field(default=1, ge=1)

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets(cls, v: Any) -> Any:
        return [{"name": d} if isinstance(d, str) else d for d in _as_list(v, "datasets")]

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, v: Any) -> Any:
        return [p for m in _as_list(v, "models") for p in expand_grid({"name": m} if isinstance(m, str) else m)]

    @field_validator("seeds", "split_seed", "grid_seeds", mode="before")
    @classmethod
    def _no_bool_seeds(cls, v: Any) -> Any:
        # pydantic reads true/false as the integers 1/0: `seeds: [true]` trained seed 1 without a word
        if any(isinstance(x, bool) for x in (v if isinstance(v, list) else [v])):
            raise ValueError(f"seeds are integers, got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "BenchmarkConfig":
        if not self.datasets or not self.models or not self.seeds:
            raise ValueError("a benchmark needs at least one dataset, one model and one seed")
        for kind, keys in (("model", [m.key for m in self.models]),
                           ("dataset", [dataset_label(d) for d in self.datasets])):
            for k in keys:
                _check_name(kind, k)
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ValueError(f"{kind} labels must be unique; repeated: {dup} (set `label`)")
        # a grid's row in the report is its name: a model labelled so would be a second row of that name
        groups = {m.grid_of for m in self.models if m.grid_of is not None}
        for g in sorted(groups):
            _check_name("grid", g)
        clash = sorted(groups & {m.key for m in self.models})
        if clash:
            raise ValueError(f"{clash[0]!r} names both a model and a grid (grid_of): label one of them otherwise")
        check_seeds(self.seeds)
        # each cell's training seed is its entry of `seeds`: a train.seed would be silently replaced
        where = ["train"] * ("seed" in self.train.model_fields_set) + [f"models.{m.key}.train" for m in self.models
                                                                       if "seed" in m.train]
        if where:
            raise ValueError(f"{where[0]}.seed: the training seed of each cell is its entry of `seeds`; "
                             f"list the seeds there")
        # the report ranks models on each cell's selection metric: one model selected on another metric
        # would be ranked on a number the others do not report
        other = [m.key for m in self.models if m.train.get("metric", self.train.metric) != self.train.metric]
        if other:
            raise ValueError(f"models.{other[0]}.train.metric: every model is selected on the benchmark's "
                             f"train.metric ({self.train.metric}); set it there")
        from recgoat.evaluation.metrics import METRICS

        bad = [m for m in self.report_metrics if m not in METRICS]
        if bad:
            raise ValueError(f"unknown report metrics {bad}; expected some of {list(METRICS)}")
        missing = [k for k in self.report_ks or [] if k not in self.train.ks]
        if missing:
            raise ValueError(f"report_ks {missing} are not evaluated; add them to train.ks {list(self.train.ks)}")
        return self

    @property
    def ks_reported(self) -> list[int]:
        return list(self.report_ks) if self.report_ks else list(self.train.ks)

    def cell_train_config(self, model: ModelSpec, seed: int) -> TrainConfig:
        base = self.train.model_dump()
        try:
            return TrainConfig(**{**base, **model.train, "seed": seed})
        except ValidationError as e:
            raise ConfigError(f"model {model.key!r}: bad train override: "
                              f"{first_validation_error(e, TrainConfig)}") from None


def dataset_label(spec: DatasetSpec) -> str:
    if spec.label:
        return spec.label
    base = Path(spec.name).name if ("/" in spec.name or os.sep in spec.name) else spec.name
    return f"{base}-u{spec.max_users}" if spec.max_users else base


# ------------------------------------------------------------------------------------- config loading
def _set_splits(item: str) -> list[tuple[list[str], Any]]:
    """Every way to read ``item`` (``"train.lr=0.01"``) as a dotted key path and a value
    (:func:`recgoat.config.parse_value`), split at each ``=`` from the left: an entry's key may hold ``=``
    (a grid point's label, ``lightgcn+lr=0.01``), so which ``=`` ends the key is known only in the tree
    (:func:`_apply_set`)."""
    out = []
    for at, char in enumerate(item):
        if char != "=":
            continue
        key, value = item[:at], item[at + 1:]
        if key.strip():
            # read as `recgoat train --set` reads it: 1e-3 a float, "runs #2" not cut at a YAML comment
            out.append((key.strip().split("."), parse_value(value) if value.strip() else ""))
    if not out or not item.partition("=")[0].strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    return out


class _NoEntry(ConfigError):
    """A ``--set`` path naming no entry of a list."""


def _apply_set(tree: dict, item: str) -> None:
    """Apply one ``--set key=value``: the first split at an ``=`` (from the left) that reaches its entry wins. If
    none does, the error reported is the leftmost split's that got past the entries (the key reached an entry,
    something after it is wrong), else the leftmost's (the key as the first ``=`` ends it)."""
    errors: list[ConfigError] = []
    for path, value in _set_splits(item):
        trial = copy.deepcopy(tree)  # _apply edits as it goes (a plain entry becomes a mapping): only a success counts
        try:
            _apply(trial, path, value)
        except ConfigError as e:
            errors.append(e)
            continue
        tree.clear()
        tree.update(trial)
        return
    raise next((e for e in errors if not isinstance(e, _NoEntry)), errors[0])


def _entry_key(e: Any) -> Any:
    """A raw ``models``/``datasets`` entry's key: its label, else its name (a plain string entry is a name)."""
    return (e.get("label") or e.get("name")) if isinstance(e, dict) else e


def _find_entry(node: list, path: list[str], i: int) -> tuple[int, int]:
    """The entry of the list ``node`` that ``path[i:]`` starts with, and how many segments its key took: an entry
    key may hold dots (a label ``BPRMF.hand``, a dataset folder ``my.data``), so the longest key that the next
    segments spell wins. An entry's key is its label, else its name; a name reaches a labelled entry only when no
    entry has it as key and just one entry has that name."""
    where = ".".join(path[:i])
    spans = range(len(path) - i, 0, -1)
    for n in spans:
        part = ".".join(path[i:i + n])
        keyed = [j for j, e in enumerate(node) if _entry_key(e) == part]
        if keyed:
            return keyed[0], n
    for n in spans:
        part = ".".join(path[i:i + n])
        named = [j for j, e in enumerate(node) if isinstance(e, dict) and e.get("name") == part]
        if len(named) > 1:
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} names several entries of "
                              f"{where}; use a label: {[node[j].get('label') for j in named]}")
        if named:
            return named[0], n
    # name the keys there are: a dataset given as a folder is keyed by its path, not its label
    keys = [_entry_key(e) for e in node]
    raise _NoEntry(f"--set {'.'.join(path)}: no entry {path[i]!r} in {where}; "
                      f"its entries: {', '.join(map(repr, keys)) or 'none'}")


def _apply(tree: dict, path: list[str], value: Any) -> None:
    """Set a dotted path in a config dict; list entries (``models``/``datasets``) are chosen by key
    (:func:`_find_entry`)."""
    node: Any = tree
    i = 0
    while i < len(path):
        part = path[i]
        if isinstance(node, list):
            j, n = _find_entry(node, path, i)
            if i + n == len(path):
                raise ConfigError(f"--set {'.'.join(path)}: cannot replace a whole list entry")
            if not isinstance(node[j], dict):
                node[j] = {"name": node[j]}  # a plain string entry becomes a dict so it can receive keys
            node = node[j]
            i += n
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[:i])} is not a mapping")
        if i == len(path) - 1:
            node[part] = value
        else:
            node = node.setdefault(part, {})
        i += 1


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                sets: list[str] | None = None) -> BenchmarkConfig:
    """Read a YAML config (optional), apply top-level ``overrides`` then ``--set`` dotted overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        tree = read_yaml_mapping(p, "the config must be a mapping")
    return _config_from_tree(tree, path, overrides, sets)


RECORD = "benchmark.json"  # the whole configuration, written into the benchmark folder by every run


def load_recorded_config(out: str | Path, overrides: dict[str, Any] | None = None,
                         sets: list[str] | None = None) -> BenchmarkConfig:
    """The configuration a benchmark folder's ``benchmark.json`` records (every run writes it), with
    ``overrides`` and ``--set`` overrides applied as :func:`load_config` applies them to a file: what
    ``--report-only --out FOLDER`` reports when no config is given. A missing or unreadable record is one
    :class:`ConfigError` naming it."""
    p = Path(out) / RECORD
    if not p.is_file():
        raise ConfigError(f"{p}: not found, so the benchmark's configuration is unknown (every run writes it; "
                          f"is {out} a benchmark folder?); give --config FILE.yaml, or --dataset and --models")
    try:
        tree = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not a readable benchmark record ({e}); give --config FILE.yaml, or --dataset "
                          f"and --models") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{p}: not a benchmark record (expected a JSON object at the top level); give "
                          f"--config FILE.yaml, or --dataset and --models")
    # the record dumps every field: the training seed (each cell's is its entry of `seeds`, and a `train.seed`
    # is refused), the progress bars and the worker count (how the run was shown and carried out, left to the
    # command now) are not settings
    tree.pop("progress", None)
    tree.pop("jobs", None)
    if isinstance(tree.get("train"), dict):
        tree["train"] = {k: v for k, v in tree["train"].items() if k not in ("seed", "progress")}
    # a model's preset is recorded already merged into its params: read again, a relative preset path was
    # looked for from the working folder (refused from any other) and a deleted preset file refused the record
    for model in tree.get("models") or []:
        if isinstance(model, dict):
            model.pop("preset", None)
    return _config_from_tree(tree, p, overrides, sets)


def _config_from_tree(tree: dict[str, Any], path: str | Path | None, overrides: dict[str, Any] | None,
                      sets: list[str] | None) -> BenchmarkConfig:
    """The config ``tree`` (read from ``path``, named in errors) gives once ``overrides`` and ``sets`` apply."""
    where = path if path is not None else "benchmark config"
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        value = copy.deepcopy(value)  # --set edits the tree in place: never the caller's own lists and dicts
        if key == "epochs":
            if tree.get("train") is None:  # an empty `train:` section reads as null
                tree["train"] = {}
            if not isinstance(tree["train"], dict):
                raise ConfigError(f"{where}: train: must be a mapping of training settings, "
                                  f"got {type(tree['train']).__name__}")
            tree["train"]["epochs"] = value
        elif key in ("models", "datasets") and isinstance(tree.get(key), list) and isinstance(value, list):
            # --models/--dataset choose among the file's entries (keeping their params, preset, features…)
            picked: list[Any] = []
            joined: list[Any] = []  # entries brought by their grid's name: named again, they are not repeated
            for v in value:
                entry, members = _pick(tree[key], v, grid_members=key == "models")
                if entry is not None and entry not in joined:
                    picked.append(entry)
                new = [m for m in members if m not in picked]
                picked += new
                joined += new
            tree[key] = picked
        else:
            tree[key] = value
    for item in sets or []:
        _apply_set(tree, item)
    try:
        config = BenchmarkConfig(**tree)
    except ValidationError as e:
        hint = (" (a benchmark config's training section is `train`, e.g. --set train.lr=1e-3; `trainer` is the "
                "key of `recgoat train`'s run config)") if "trainer" in tree else ""
        if "model" in tree:  # `recgoat train`'s --set model.params.x=… does not carry over
            hint += (" (a benchmark config lists its models under `models`: set one's params with, e.g., "
                     "--set models.lightgcn.params.embedding_dim=16)")
        raise ConfigError(f"{where}: {first_validation_error(e, BenchmarkConfig)}{hint}") from None
    try:
        check_config(config)
    except RecGOATError as e:
        if path is None:
            raise
        raise ConfigError(f"{path}: {e}") from None
    return config


def _pick(entries: list, name: Any, grid_members: bool = False) -> tuple[Any, list[Any]]:
    """The config entry a ``--models``/``--dataset`` name stands for: the one whose key (label, else name) it
    is, else the only one of that name; another name is a new plain entry. (Replacing the file's entries by
    bare names dropped their params and features, and a label such as ``recgoat-ml100k`` was an unknown model.)
    With ``grid_members``, also the entries that join the grid of that name (``grid_of``), returned second:
    ``-m lightgcn`` ran LightGCN's grid without the extra point the file adds to it, and chose among fewer
    points than the file. A grid with no entry of its key (hand-labelled entries ``grid_of: lg``; or any grid in
    a run's ``benchmark.json``, which records it as its points) is ``(None, its entries)``, even where its name is
    also a model name."""
    def joining(group: Any) -> list[Any]:
        if not grid_members:
            return []
        return copy.deepcopy([e for e in entries if isinstance(e, dict) and e.get("grid_of") is not None
                              and e.get("grid_of") == group])

    keyed = [e for e in entries if _entry_key(e) == name]
    if not keyed:
        # a grid's name before a model's: the record of a run (benchmark.json) holds a grid as its points, every
        # one of that model name, and `-m lightgcn` named none of them alone but a new plain LightGCN
        members = joining(name)
        if members:
            return None, members
        keyed = [e for e in entries if isinstance(e, dict) and e.get("name") == name]
    if len(keyed) == 1:
        return copy.deepcopy(keyed[0]), joining(_entry_key(keyed[0]))
    return name, []


# ------------------------------------------------------------------------------------- data and features
def is_presplit(spec: DatasetSpec) -> bool:
    """A folder already split (prepared, MMRec, line-per-user): the split seed does not apply."""
    from recgoat.datasets.registry import presplit_layout

    return presplit_layout(spec.name) is not None


def load_dataset(spec: DatasetSpec, split_seed: int):
    """Load and prepare a dataset; ``max_users`` keeps the first users of the raw interactions."""
    from recgoat.datasets import PrepareConfig, load, load_raw, prepare
    from recgoat.datasets.registry import default_prepare_config

    p = Path(spec.name)
    if is_presplit(spec):
        if spec.max_users or spec.prepare:
            raise ConfigError(f"dataset {spec.name}: already split; max_users/prepare do not apply")
        ds = load(p)
    else:
        cfg = default_prepare_config(spec.name)
        try:
            cfg = PrepareConfig(**{**cfg.__dict__, **spec.prepare, "seed": split_seed})
        except TypeError as e:
            raise ConfigError(f"dataset {spec.name}: bad prepare option: {e}") from None
        name, inter, items, fields, info = load_raw(spec.name)
        if spec.max_users:
            keep = inter["user"].drop_duplicates().iloc[:spec.max_users]
            inter = inter[inter["user"].isin(keep)]
            info = {**info, "max_users": spec.max_users}
        ds = prepare(name, inter, items, fields, cfg, info)
    ds.name = dataset_label(spec)
    return ds


def needs_features(model_cls: type) -> bool:
    return bool(getattr(model_cls, "needs_features", False))


def auto_feature_folder(out: Path, label: str, split_seed: int | str | None = None) -> Path:
    """Where ``features: auto`` encodes a dataset: ``<out>/features/<label>``, or ``<label>-split<seed>`` when
    every seed re-splits the data (``split_seeds: true``; ``split_seed`` given)."""
    return out / "features" / (label if split_seed is None else f"{label}-split{split_seed}")


def feature_folder(spec: DatasetSpec, out: Path, split_seed: int | None) -> Path:
    """The folder a dataset's features are read from: the one given, or :func:`auto_feature_folder`."""
    return Path(spec.features) if spec.features != "auto" else auto_feature_folder(out, dataset_label(spec), split_seed)


def auto_kinds(config: BenchmarkConfig) -> tuple[str, ...]:
    """What ``features: auto`` encodes (``recgoat encode``'s kinds): those the benchmark's models read
    (:meth:`~recgoat.models.base.Recommender.feature_kinds`). User profiles only when one of them reads them
    (RecGOAT with its profile branch): with an LLM backend they cost hours a benchmark of peers never used."""
    from recgoat.features.auto import kinds_read
    from recgoat.features.store import KINDS

    kinds = {k for model in config.models for k in kinds_read(model.name, model.params)}
    return tuple(k for k in KINDS if k in kinds)


def resolve_features(spec: DatasetSpec, dataset, out: Path, split_seed: int | None, progress: bool,
                     which: tuple[str, ...] | None = None):
    """Features for a dataset: a given folder, or encoded once into :func:`auto_feature_folder` (the kinds
    ``which``, default all; see :func:`auto_kinds`)."""
    from recgoat.features import load_features

    if spec.features is None:
        raise ConfigError(f"dataset {dataset_label(spec)}: a model needs features but `features` is null")
    folder = feature_folder(spec, out, split_seed)
    if spec.features == "auto":
        from recgoat.features.auto import encode_auto

        return encode_auto(dataset, folder, progress, which)
    from recgoat.features.store import named_as_encoded

    return load_features(named_as_encoded(dataset, folder), folder)


# ------------------------------------------------------------------------------------- recorded paths
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


# ------------------------------------------------------------------------------------- memory
class PeakRSS:
    """Peak resident memory of this process while a block runs, sampled from ``/proc/self/statm``.

    ``getrusage`` only knows the lifetime peak, which would charge every cell with the largest earlier
    one; a 5 ms sampler gives a per-cell peak (short spikes can be missed). Before the block, garbage is
    collected and glibc is asked to hand freed heap back (``malloc_trim``), so the starting level is what
    is really held (the loaded dataset and features) and ``growth_mb`` = peak − start is what the block
    itself needed: comparable between cells of one benchmark, unlike the process level, which keeps
    memory an earlier cell freed. ``None`` where /proc is absent.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    @property
    def growth_mb(self) -> float | None:
        return None if self.peak_mb is None or self.start_mb is None else self.peak_mb - self.start_mb

    def _rss(self) -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / 2**20
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _release_free_memory() -> None:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: the start level is a little high, nothing worse
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            r = self._rss()
            if r is not None and (self.peak_mb is None or r > self.peak_mb):
                self.peak_mb = r

    def __enter__(self) -> "PeakRSS":
        self._release_free_memory()
        self.start_mb = self.peak_mb = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        r = self._rss()
        if r is not None and self.peak_mb is not None:
            self.peak_mb = max(self.peak_mb, r)


# ------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    dataset: DatasetSpec
    model: ModelSpec
    seed: int
    run_dir: Path
    split_seed: int | None = None  # the seed of the cell's train/valid/test split

    @property
    def title(self) -> str:
        return f"{dataset_label(self.dataset)}/{self.model.key}/seed{self.seed}"

    @property
    def done(self) -> bool:
        # the trainer writes result.json before test_per_user.npz, and run_cell rewrites it with its
        # "benchmark" entry only after both: a cell killed in between is unfinished, not read back
        path = self.run_dir / "result.json"
        try:
            return path.exists() and "benchmark" in read_json(path)
        except (OSError, ValueError):
            return False


@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` did: every cell's result and the files of the report."""

    config: BenchmarkConfig
    results: list[dict] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)  # cells computed now (others were resumed)
    skipped: list[str] = field(default_factory=list)
    # cells of grid points beyond ``grid_seeds`` that validation did not choose: never trained
    unchosen: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell title → error message
    report: dict[str, Path] = field(default_factory=dict)


def plan_cells(config: BenchmarkConfig) -> list[Cell]:
    out = Path(config.out)
    return [Cell(d, m, s, out / "runs" / dataset_label(d) / m.key / f"seed{s}",
                 s if config.split_seeds else config.split_seed)
            for d in config.datasets for m in config.models for s in config.seeds]


def split_grid_seeds(config: BenchmarkConfig, cells: list[Cell]) -> tuple[list[Cell], list[Cell]]:
    """``cells`` as (those always trained, the grid points' seeds beyond ``grid_seeds``: trained only for the
    point validation chooses, :func:`split_later_grid_cells`), each in ``cells``' order."""
    from recgoat.benchmark.report import grid_seed_count

    first_seeds = config.seeds[:grid_seed_count(config)]
    later = [c.model.grid_of is not None and c.seed not in first_seeds for c in cells]
    return [c for c, k in zip(cells, later) if not k], [c for c, k in zip(cells, later) if k]


def split_later_grid_cells(config: BenchmarkConfig, later: list[Cell],
                           picks: dict[tuple[str, str], tuple[str, int, float]] | None = None
                           ) -> tuple[list[Cell], list[Cell]]:
    """``later`` (the second list of :func:`split_grid_seeds`) as (those of the points validation chooses over the first
    ``grid_seeds`` seeds' finished cells, the others). The choice is the report's (:func:`~recgoat.benchmark.
    report.chosen_points`; ``picks``, when made already), so the point trained on every seed is the point the report
    shows as tuned."""
    from recgoat.benchmark.report import chosen_points, collect_runs

    if not later:
        return [], []
    if picks is None:
        picks = chosen_points(collect_runs(config), config)
    labels = {k: v[0] for k, v in picks.items()}
    chosen = [labels.get((dataset_label(c.dataset), c.model.grid_of)) == c.model.key for c in later]
    return [c for c, k in zip(later, chosen) if k], [c for c, k in zip(later, chosen) if not k]


def required_cells(config: BenchmarkConfig, cells: list[Cell]) -> list[Cell]:
    """The cells a finished benchmark holds, in training order: all of ``cells`` but the later-seed cells of the
    grid points validation did not choose (``grid_seeds``)."""
    first, later = split_grid_seeds(config, cells)
    return first + split_later_grid_cells(config, later)[0]


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
    relative to the working directory), so ``features/x`` and its absolute path are one configuration."""
    from recgoat.datasets.registry import stable_reference

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


def check_signature(cell: Cell, sig: dict[str, Any]) -> None:
    """Refuse to resume or reuse a run folder that was started with another configuration."""
    diff = _signature_diff(cell, sig)
    if diff and not _restartable(cell):
        raise ConfigError(f"{_mismatch_message(cell, diff)}; {_MISMATCH_FIX}")


def check_model_params(model: ModelSpec) -> None:
    """The model's ``params`` are valid settings of that model; else a ConfigError naming it."""
    from recgoat.models.base import get_model_class

    cls = get_model_class(model.name).Config
    try:
        cls(**model.params)
    except ValidationError as e:
        raise ConfigError(f"model {model.key!r}: bad params: {first_validation_error(e, cls)}") from None


def check_prepare(spec: DatasetSpec) -> None:
    """A dataset's ``prepare`` options are valid preparation settings for a benchmark (a ConfigError naming
    the dataset otherwise); checked before anything trains, not when the dataset's turn comes."""
    from recgoat.datasets import PrepareConfig
    from recgoat.datasets.preprocess import NO_HELD_OUT
    from recgoat.datasets.registry import default_prepare_config

    label = dataset_label(spec)
    if "seed" in spec.prepare:
        # load_dataset splits with split_seed (or the cell's seed): a prepare.seed would be silently replaced
        raise ConfigError(f"dataset {label}: prepare.seed: the split seed is the benchmark's `split_seed` (each "
                          f"cell's seed with `split_seeds: true`); set it there")
    if spec.prepare.get("split") == "none":
        raise ConfigError(f"dataset {label}: prepare.split {NO_HELD_OUT}")
    try:
        PrepareConfig(**{**default_prepare_config(spec.name).__dict__, **spec.prepare})
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"dataset {label}: bad prepare option: {e}") from None


def check_config(config: BenchmarkConfig) -> None:
    """What can be checked without data or run folders: every model is known, with valid params and train
    overrides, and every dataset's preparation options are valid (:func:`load_config` names the file). Every
    problem is named in one ConfigError: fixing them one run at a time took as many runs as there were."""
    problems: list[str] = []
    said: set[str] = set()  # a grid's points share their problems: one of them is named
    for m in config.models:
        try:
            check_model_params(m)  # an unknown name fails here as "unknown model"
            config.cell_train_config(m, config.seeds[0])
        except ConfigError as e:
            shared = str(e).replace(repr(m.key), repr(m.grid_of)) if m.grid_of else str(e)
            if shared not in said:
                said.add(shared)
                problems.append(str(e))
    for d in config.datasets:
        try:
            check_prepare(d)
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("; ".join(problems))


def check_dataset_source(spec: DatasetSpec) -> None:
    """The dataset can be found (a known name, or an existing folder), and an already split folder is given
    no subsetting/preparation; else the error :func:`load_dataset` would raise when the dataset's turn came."""
    from recgoat.datasets.registry import find_source

    if is_presplit(spec):
        if spec.max_users or spec.prepare:
            raise ConfigError(f"dataset {spec.name}: already split; max_users/prepare do not apply")
        return
    find_source(spec.name)


def preflight(config: BenchmarkConfig, cells: list[Cell],
              data_cache: dict[tuple[str, int | None], Any] | None = None) -> None:
    """Refuse, before anything trains, what would otherwise stop the benchmark midway: unknown models, bad
    model params or preparation options, a missing dataset, a model that cannot be built on a dataset's
    features (:func:`pair_problems`: none, or without the kinds it needs), or run folders started with another
    configuration. Datasets loaded to see what ``features: auto`` will encode go into ``data_cache``."""
    from recgoat.models.base import get_model_class

    check_config(config)
    for d in config.datasets:
        check_dataset_source(d)
    for cell in cells:
        feats = cell.dataset.features
        if needs_features(get_model_class(cell.model.name)) and feats not in (None, "auto") \
                and not Path(feats).is_dir():  # else found when the first such cell came
            raise DataError(feats, "feature folder not found; run `recgoat encode all <dataset>` first")
    problems = pair_problems(config, cells, data_cache if data_cache is not None else {})
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} (dataset, model) pairs cannot run, so nothing was trained: "
                          + "; ".join(problems))
    mismatched = [_mismatch_message(c, d) for c in cells
                  if (d := _signature_diff(c, _signature(c, config.cell_train_config(c.model, c.seed))))
                  and not _restartable(c)]
    if mismatched:
        raise ConfigError(f"{_listed(mismatched)}; {_MISMATCH_FIX}")


_STAND_IN_DIM = 8  # any width: a model's build checks which feature matrices exist, not how wide they are


def feature_kinds(spec: DatasetSpec, dataset=None, profiles: bool = True) -> tuple[str, ...] | None:
    """The feature matrices (``text``, ``image``, ``profile``) a model of this dataset would be given, known
    before anything is encoded: a folder's files, or what ``auto`` makes (:func:`~recgoat.features.auto.
    encodable_kinds`; profiles when ``profiles`` is true: some model reads them, :func:`auto_kinds`). ``auto``
    needs the loaded ``dataset``; None when ``features`` is null."""
    from recgoat.features.auto import encodable_kinds
    from recgoat.features.store import FEATURE_FILES

    if spec.features is None:
        return None
    if spec.features != "auto":
        return tuple(k for k, f in FEATURE_FILES.items() if (Path(spec.features) / f).exists())
    return encodable_kinds(dataset, profiles)


def _stand_in_features(kinds: tuple[str, ...], folder: str | None = None):
    """Zero matrices (one row) of the given kinds: enough for ``dims_from`` and a model's constructor. Each is as
    wide as the ``folder``'s file where its header says (read alone, not the matrix), else any width: ``auto``
    features' widths are the encoders', unknown before encoding."""
    from recgoat.features.store import FEATURE_FILES, Features

    def width(kind: str) -> int:
        try:
            shape = np.load(Path(folder) / FEATURE_FILES[kind], mmap_mode="r").shape if folder else ()
        except (OSError, ValueError, EOFError):  # unreadable: load_features reports it, in the cell
            shape = ()
        return int(shape[1]) if len(shape) == 2 and shape[1] > 0 else _STAND_IN_DIM

    def one(kind: str) -> np.ndarray | None:
        return np.zeros((1, width(kind)), np.float32) if kind in kinds else None

    return Features(text=one("text"), image=one("image"), profile=one("profile"),
                    image_mask=np.ones(1, bool) if "image" in kinds else None)


def build_problem(model: ModelSpec, features) -> str | None:
    """Why ``model`` cannot be built on ``features`` (a ConfigError of its ``dims_from`` or constructor: a
    modality it needs is absent, a setting asks for a view the features lack), else None. It is built with one
    user and one item, so it is cheap; the global random state is left as it was. Any other error (e.g. a
    plugin's ``dims_from`` reading the stand-in's absent dataset) proves nothing: the cell reports its own."""
    from recgoat.models.base import get_model_class

    cls = get_model_class(model.name)  # an unknown name is refused, not taken for "nothing to judge" below
    try:
        probe_model(cls, model.params, None, features)
    except ConfigError as e:
        return str(e)
    except Exception:  # noqa: BLE001 — not a configuration the stand-in can judge
        return None
    return None


def probe_model(cls: type, params: dict[str, Any], dataset, features):
    """A ``cls`` model of ``params`` built with one user and one item on ``features`` (its ``dims_from`` sees
    ``dataset``): what those settings make of the features (which views it reads, whether it can be built),
    cheaply; the global random state is left as it was. A constructor's error is raised."""
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            return cls(1, 1, dict(params), **cls.dims_from(dataset, features))
    finally:
        np.random.set_state(np_state)


def pair_problems(config: BenchmarkConfig, cells: list[Cell],
                  data_cache: dict[tuple[str, int | None], Any]) -> list[str]:
    """Every (dataset, model) pair with a cell still to run that cannot run, with why: a model that reads
    features on a dataset whose ``features`` is null, a feature folder holding no feature file, or a model
    that cannot be built on the kinds of features the dataset has (:func:`build_problem`). Found in the cell
    loop, each stopped the benchmark midway, after earlier cells had trained and without a report.

    ``auto`` features are known from the loaded dataset (whether it has item text, images), not encoded;
    the datasets loaded for that are put into ``data_cache`` by ``(label, split_seed)`` for the run to reuse.
    """
    from recgoat.features.store import FEATURE_FILES
    from recgoat.models.base import get_model_class

    todo: dict[tuple[str, str], Cell] = {}  # (dataset label, model key) → its first cell still to run
    for cell in cells:
        if not cell.done:
            todo.setdefault((dataset_label(cell.dataset), cell.model.key), cell)
    problems: list[str] = []
    built: dict[tuple[str, tuple[str, ...] | None, str | None], str | None] = {}
    kinds_of: dict[str, tuple[str, ...] | None] = {}
    encodes_profiles = "users" in auto_kinds(config)
    for (label, _), cell in todo.items():  # in the cells' order: datasets, then models, as configured
        spec, model = cell.dataset, cell.model
        kinds: tuple[str, ...] | None = None
        if needs_features(get_model_class(model.name)):
            if spec.features is None:
                problems.append(f"dataset {label}: model {model.key!r} needs features but `features` is null; "
                                f"give a feature folder or `auto`")
                continue
            if label not in kinds_of:
                kinds_of[label] = _kinds_before_encoding(spec, cell.split_seed, data_cache, encodes_profiles)
            kinds = kinds_of[label]
            if kinds is None:  # the dataset did not load: the cell loop reports that as its failure
                continue
            if not kinds and spec.features == "auto":  # no folder to fill: the data has nothing to encode
                problems.append(f"dataset {label}: model {model.key!r} needs features but `features: auto` encodes "
                                f"none for it: its items have no text or images (and user profiles are written "
                                f"from item text); give the dataset an items file with text or images")
                continue
            if not kinds:
                problems.append(f"dataset {label}: model {model.key!r} needs features but its feature folder "
                                f"{spec.features} holds no feature file ({', '.join(FEATURE_FILES.values())}); "
                                f"run `recgoat encode all <dataset>`")
                continue
        folder = spec.features if kinds is not None and spec.features != "auto" else None
        key = (model.key, kinds, folder)
        if key not in built:
            built[key] = build_problem(model, None if kinds is None else _stand_in_features(kinds, folder))
        if built[key] is not None:
            where = "" if kinds is None else (
                f" (`features: auto` encodes {' and '.join(kinds)} for it)" if spec.features == "auto"
                else f" (its feature folder {spec.features} holds {' and '.join(kinds)})")
            problems.append(f"dataset {label}: model {model.key!r} cannot be built: {built[key]}{where}")
    return problems


def _kinds_before_encoding(spec: DatasetSpec, split_seed: int | None,
                           data_cache: dict[tuple[str, int | None], Any], profiles: bool = True
                           ) -> tuple[str, ...] | None:
    """:func:`feature_kinds`, loading the dataset (into ``data_cache``) where ``auto`` needs it; None when it
    cannot be loaded for a reason other than a RecGOATError (raised, as the cell loop would raise it)."""
    if spec.features != "auto":
        return feature_kinds(spec)
    dataset = _load_cached(spec, split_seed, data_cache)
    return None if dataset is None else feature_kinds(spec, dataset, profiles)


def _load_cached(spec: DatasetSpec, split_seed: int | None, cache: dict[tuple[str, int | None], Any]) -> Any:
    """The dataset of ``spec`` split with ``split_seed``, from ``cache`` or loaded into it, for the checks before
    the run; None when it cannot be loaded for a reason other than a RecGOATError (that is raised, as the cell
    loop would raise it; anything else the cell loop reports as that cell's failure)."""
    key = (dataset_label(spec), split_seed)
    if key not in cache:
        try:
            cache[key] = load_dataset(spec, split_seed)
        except RecGOATError:
            raise
        except Exception:  # noqa: BLE001 — left to the cell loop
            return None
    return cache[key]


def _listed(items: list[str], limit: int = 10) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; … and {len(items) - limit} more" if len(items) > limit else "")


def check_report_cells(config: BenchmarkConfig) -> list[Cell]:
    """Check that every cell of ``config`` is finished and was run with ``config``; return the cells.

    This is what ``--report-only`` relies on: a report is only rebuilt from a folder holding exactly the
    requested benchmark. A finished cell is checked against its ``cell.json`` as a resumed run checks it;
    a folder that is missing, holds no finished cell of this benchmark, holds a cell run with another
    configuration, or lacks some requested cells is refused with one :class:`ConfigError`.
    """
    from recgoat.models.base import get_model_class

    for m in config.models:
        get_model_class(m.name)  # unknown names fail as in a normal run
    out = Path(config.out)
    if not out.is_dir():
        raise ConfigError(f"{out}: no such benchmark folder; run the benchmark without --report-only first")
    cells = required_cells(config, plan_cells(config))
    done = [c for c in cells if c.done]
    if not done:
        raise ConfigError(f"{out}: holds no finished cell of this benchmark ({len(cells)} requested, e.g. "
                          f"{cells[0].title}); run it without --report-only first")
    mismatched = []
    for cell in done:
        diff = _signature_diff(cell, _signature(cell, config.cell_train_config(cell.model, cell.seed)))
        if diff:
            mismatched.append(_mismatch_message(cell, diff))
    if mismatched:
        raise ConfigError(f"{_listed(mismatched)}; --report-only reports the requested configuration only: "
                          f"give the options those cells were run with, or use another --out")
    missing = [c for c in cells if not c.done]
    if missing:
        names = [c.title + (" (failed: see its error.txt)" if (c.run_dir / "error.txt").exists() else "")
                 for c in missing]
        raise ConfigError(f"{out}: {len(missing)} of {len(cells)} requested cells are not finished: "
                          f"{_listed(names)}; run the benchmark without --report-only to compute them "
                          f"(finished cells are kept), or request only the finished models/seeds")
    return cells


def report_only(config: BenchmarkConfig) -> dict[str, Path]:
    """Rebuild ``results.csv``/``results.md``/``report.html`` of a finished benchmark without training.

    Every requested cell must be finished with this configuration (:func:`check_report_cells`); nothing
    is written otherwise.
    """
    from recgoat.benchmark.report import write_report as _write

    config = with_recorded_paths(config)
    check_report_cells(config)
    return _write(Path(config.out), config)


def run_cell(cell: Cell, dataset, features, train_cfg: TrainConfig) -> dict[str, Any]:
    """Train one cell (resuming its checkpoint if any) and return its ``result.json`` content."""
    from recgoat.models.base import get_model_class
    from recgoat.training.trainer import Trainer

    model_cls = get_model_class(cell.model.name)
    check_model_params(cell.model)  # before cell.json records them: bad params must not claim the folder
    sig = _signature(cell, train_cfg, dataset)
    check_signature(cell, sig)
    if _signature_diff(cell, sig):  # a failed or never-checkpointed cell of another configuration: afresh
        train_cfg = train_cfg.model_copy(update={"resume": False})
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cell.run_dir / "cell.json", sig)
    (cell.run_dir / "error.txt").unlink(missing_ok=True)  # an earlier failure's report no longer applies
    # seed initialisation: differs per seed, identical when a cell is re-run
    # torch takes no seed >= 2**64; reduced as `recgoat train` reduces it (run.py), so a cell and a run of the
    # same seed start alike (modulo 2**63 gave seeds 2**63 + s the initialisation of seed s)
    torch.manual_seed(cell.seed % 2**64)
    np.random.seed(cell.seed % 2**32)
    with PeakRSS() as mem:
        model = model_cls.build(dataset, cell.model.params, features)
        result = Trainer(train_cfg, run_dir=cell.run_dir).fit(model, dataset)
    result = {**result, "benchmark": {"label": cell.model.key, "seed": cell.seed,
                                      "dataset": dataset.name, "cell_peak_rss_mb": mem.peak_mb,
                                      "cell_start_rss_mb": mem.start_mb, "cell_rss_growth_mb": mem.growth_mb}}
    write_json(cell.run_dir / "result.json", result)
    return result


def run_benchmark(config: BenchmarkConfig, on_cell: Callable[[Cell, str], None] | None = None,
                  write_report: bool = True) -> BenchmarkRun:
    """Run (or resume) every cell, then write ``results.csv``, ``results.md`` and ``report.html``.

    ``on_cell(cell, status)`` is told ``"skipped"``, ``"start"``, ``"done"``, ``"failed"``, or ``"unchosen"``
    (a grid point's seed beyond ``grid_seeds``, not trained: validation chose another point).
    """
    from recgoat.models.base import get_model_class

    model_classes = {m.key: get_model_class(m.name) for m in config.models}  # unknown names fail early
    config = with_recorded_paths(config)  # relative paths of a benchmark run from another working folder
    out = Path(config.out)
    cells = plan_cells(config)
    data_cache: dict[tuple[str, int | None], Any] = {}  # datasets loaded by the checks, for the cells to reuse
    preflight(config, cells, data_cache)  # before benchmark.json is replaced: a refused run leaves the folder as it was
    data_cache = check_data_versions(cells, data_cache)  # the datasets it loads are the ones the cells train on
    # each feature folder is read once by the checks: a given one here (a refused run leaves no folder behind), an
    # `auto` one under the lock (encoding writes into the benchmark folder)
    feat_cache = check_inputs_before_training(config, cells, model_classes, data_cache)
    with folder_lock(out):  # one writer per benchmark folder: two would train the same cells at once
        feat_cache = check_features_before_training(config, cells, model_classes, data_cache, feat_cache)
        return _run_cells(config, cells, model_classes, on_cell, write_report, data_cache, feat_cache)


def _feature_groups(config: BenchmarkConfig, cells: list[Cell], model_classes: dict[str, Any]
                    ) -> dict[tuple[str, int | None], list[Cell]]:
    """The cells of models that read features, by ``(dataset label, split seed)``, of each dataset where such a cell
    is still to train: the datasets in the order their first such cell trains (the grid's first seeds first), each
    one's cells in plan order."""
    groups: dict[tuple[str, int | None], list[Cell]] = {}
    for cell in cells:
        if needs_features(model_classes[cell.model.key]):
            groups.setdefault((dataset_label(cell.dataset), cell.split_seed), []).append(cell)
    first, later = split_grid_seeds(config, cells)
    order = [(dataset_label(c.dataset), c.split_seed) for c in first + later
             if needs_features(model_classes[c.model.key]) and not c.done]
    return {key: groups[key] for key in dict.fromkeys(order)}


def _checked_features(config: BenchmarkConfig, group: list[Cell], dataset) -> Any:
    """The features of ``group`` (:func:`_feature_groups`: one dataset's feature-reading cells), read, or encoded
    for ``auto``, as its first cell would read them (raising that cell's error), and checked on that same read
    against what its finished or checkpointed cells read (:func:`check_feature_versions`)."""
    out, spec, split = Path(config.out), group[0].dataset, _feature_split(config, group[0])
    features = resolve_features(spec, dataset, out, split, config.progress, auto_kinds(config))
    check_feature_versions(group, dataset, features, feature_folder(spec, out, split))
    return features


def _keeps_checked_features(config: BenchmarkConfig, key: tuple[str, int | None],
                            groups: dict[tuple[str, int | None], list[Cell]]) -> bool:
    """Whether the features the checks read for ``key`` are kept for its cells: only the first dataset's to train,
    in one process (``jobs > 1``: the workers read their own).

    Why not every dataset's: a folder's matrices can be hundreds of MB, and one kept from the checks is held through
    every earlier dataset's cells (and counted in their peak memory) until its own turn; so a later folder is read
    once by the checks, let go, and read again when its first cell comes: one more read of each later folder,
    against holding all of them at once before the first cell trains."""
    return config.jobs == 1 and key == next(iter(groups), None)


def check_inputs_before_training(config: BenchmarkConfig, cells: list[Cell], model_classes: dict[str, Any],
                                 data_cache: dict[tuple[str, int | None], Any]) -> dict[tuple[str, int | None], Any]:
    """Load every dataset with a cell still to train (into ``data_cache``, for the cells to reuse), and read the given
    feature folder of each one a model still to train reads (:func:`_checked_features`: raising the error its first
    cell would raise, and refusing features other than its finished or checkpointed cells read), before the
    benchmark folder is locked and written or any cell trains: a dataset or features found bad at their turn stopped
    the run after earlier datasets' cells had trained. Each folder is read once here; ``features: auto`` folders
    are left to :func:`check_features_before_training` (encoded under the benchmark folder's lock), and
    :func:`pair_problems` judged what they will hold from the dataset loaded here. Returns the features kept for the
    cells (:func:`_keeps_checked_features`), by ``(label, split_seed)``. An error other than a RecGOATError is left
    to the cell, which reports it as its failure, as before."""
    groups = _feature_groups(config, cells, model_classes)
    feat_cache: dict[tuple[str, int | None], Any] = {}
    checked: set[tuple[str, int | None]] = set()
    first, later = split_grid_seeds(config, cells)
    for cell in first + later:  # in training order: the first error is the one the cell loop met first
        if cell.done:
            continue
        dataset = _load_cached(cell.dataset, cell.split_seed, data_cache)
        key = (dataset_label(cell.dataset), cell.split_seed)
        if dataset is None or key in checked or cell.dataset.features in (None, "auto") \
                or not needs_features(model_classes[cell.model.key]):
            continue
        checked.add(key)
        try:
            features = _checked_features(config, groups[key], dataset)
        except RecGOATError:
            raise
        except Exception:  # noqa: BLE001 — left to the cell loop
            continue
        if _keeps_checked_features(config, key, groups):
            feat_cache[key] = features
        del features  # one not kept is let go now, not held while the next folder is read
    return feat_cache


def check_data_versions(cells: list[Cell], cache: dict[tuple[str, int | None], Any] | None = None
                        ) -> dict[tuple[str, int | None], Any]:
    """Refuse finished or checkpointed cells trained on another version of their data (the dataset's files or
    its preparation changed under the same spec): their ``cell.json`` fingerprint differs from the data's now.

    :func:`preflight` compares the spec only; without this, a finished cell of the old data was read back
    beside new cells of the new data. Returns the loaded datasets by ``(label, split_seed)`` for the run to reuse
    (``cache``: those already loaded).
    """
    cache = dict(cache or {})
    unloadable: set[tuple[str, int | None]] = set()
    fingerprints: dict[tuple[str, int | None], str] = {}
    mismatched = []
    for cell in cells:
        if _restartable(cell):  # nothing of it is read back or resumed
            continue
        try:
            recorded = read_json(cell.run_dir / "cell.json").get("dataset_fingerprint")
        except (OSError, ValueError, AttributeError):
            continue
        key = (dataset_label(cell.dataset), cell.split_seed)
        if not isinstance(recorded, str) or key in unloadable:
            continue
        if key not in fingerprints:
            dataset = _load_cached(cell.dataset, cell.split_seed, cache)
            if dataset is None:
                unloadable.add(key)
                continue
            fingerprints[key] = dataset.fingerprint()  # once per dataset, not per cell
        if recorded != fingerprints[key]:
            mismatched.append(f"{cell.run_dir}: was trained on another version of dataset {key[0]} (its data "
                              f"fingerprint differs)")
    if mismatched:
        raise ConfigError(f"{_listed(mismatched)}; {_MISMATCH_FIX}")
    return cache


def _trained_feature_digests(cell: Cell) -> dict[str, str] | None:
    """The digests of the feature matrices a finished cell's best model (``best/model.json``) or an unfinished
    cell's checkpoint read (:func:`~recgoat.models.base.feature_digests`); None when neither records them."""
    if cell.done:
        return _recorded_mapping(cell.run_dir / "best" / "model.json", "feature_digests")
    return _recorded_mapping(cell.run_dir / "checkpoint" / "state.json", "signature", "features")


def check_feature_versions(cells: list[Cell], dataset, features, folder: Path) -> None:
    """Refuse finished or checkpointed ``cells`` (of one dataset) whose model read other feature matrices than
    a model of the same settings reads from ``features`` now: re-encoded with another encoder or template
    (same shapes), edited, or a kind added or removed. Without this, a resume reported cells of the old
    features beside new cells of the new ones; the data's fingerprint (:func:`check_data_versions`) does not
    cover the features, and ``features: auto`` re-encodes when its encoder changed. The trainer refuses a
    checkpoint of other features on resume too; here every such cell is named before one more trains."""
    from recgoat.models.base import feature_digests, get_model_class

    now_by_label: dict[str, dict[str, str] | None] = {}
    mismatched = []
    for cell in cells:
        if _restartable(cell):
            continue
        recorded = _trained_feature_digests(cell)
        if recorded is None:
            continue
        label = cell.model.key
        if label not in now_by_label:
            try:  # which matrices this model's settings read
                probe = probe_model(get_model_class(cell.model.name), cell.model.params, dataset, features)
                now_by_label[label] = feature_digests(features, probe.read_dims())
            except Exception:  # noqa: BLE001 — a model that cannot be built: its cells report that themselves
                now_by_label[label] = None
        now = now_by_label[label]
        if now is None:
            continue
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        if changed:
            mismatched.append(f"{cell.run_dir}: was trained on other {' and '.join(changed)} features than "
                              f"{folder} holds now (their contents differ, or the kind was added or removed)")
    if mismatched:
        raise ConfigError(f"{_listed(mismatched)}; {_MISMATCH_FIX}")


def _feature_split(config: BenchmarkConfig, cell: Cell) -> int | None:
    """The split seed naming a cell's ``features: auto`` folder: only when every seed re-splits the data."""
    return cell.split_seed if config.split_seeds else None


def check_features_before_training(config: BenchmarkConfig, cells: list[Cell], model_classes: dict[str, Any],
                                   data_cache: dict[tuple[str, int | None], Any],
                                   feat_cache: dict[tuple[str, int | None], Any] | None = None
                                   ) -> dict[tuple[str, int | None], Any]:
    """:func:`check_feature_versions` for every ``features: auto`` dataset with a cell still to train beside finished
    or checkpointed ones that recorded the features they read, before ``benchmark.json`` is written or any cell
    trains (checked at a dataset's first cell to train, it came after other models' cells had trained and
    ``benchmark.json`` recorded the refused configuration). Runs under the benchmark folder's lock: ``auto``
    encodes. Given folders were checked, on the one read of each, by :func:`check_inputs_before_training`; an
    ``auto`` folder no cell recorded is encoded when a cell needs it (nothing would be mixed). Returns ``feat_cache``
    with the features kept for the cells (:func:`_keeps_checked_features`); ``data_cache`` gets the datasets
    loaded."""
    feat_cache = dict(feat_cache or {})
    groups = _feature_groups(config, cells, model_classes)
    for key, group in groups.items():
        if group[0].dataset.features != "auto" \
                or not any(not _restartable(c) and _trained_feature_digests(c) is not None for c in group):
            continue
        if key not in data_cache:
            data_cache[key] = load_dataset(group[0].dataset, key[1])
        features = _checked_features(config, group, data_cache[key])
        if _keeps_checked_features(config, key, groups):
            feat_cache[key] = features
        del features
    return feat_cache


def _run_cells(config: BenchmarkConfig, cells: list[Cell], model_classes: dict[str, Any],
               on_cell: Callable[[Cell, str], None] | None, write_report: bool,
               data_cache: dict[tuple[str, int | None], Any] | None = None,
               feat_cache: dict[tuple[str, int | None], Any] | None = None) -> BenchmarkRun:
    out = Path(config.out)
    write_json(out / "benchmark.json", config.model_dump(mode="json"))
    run = BenchmarkRun(config)
    notify = on_cell or (lambda c, s: None)
    data_cache = dict(data_cache or {})
    feat_cache = dict(feat_cache or {})
    first, later = split_grid_seeds(config, cells)
    # before the choice is made: the later seeds of one point per (dataset, grid)
    one_point_each = {(dataset_label(c.dataset), c.model.grid_of, c.seed) for c in later}
    bar = _CellBar(len(first) + len(one_point_each), config.progress)

    def finished(cell: Cell, result: dict[str, Any], seconds: float) -> None:
        run.results.append(result)
        run.trained.append(cell.title)
        bar.write(f"{cell.title}: {config.train.metric} valid "
                  f"{result['valid'][config.train.metric]:.4f} test {result['test'][config.train.metric]:.4f}"
                  f" ({seconds:.1f}s)")
        notify(cell, "done")
        bar.advance()

    def failed(cell: Cell, msg: str, trace: str) -> None:
        run.failed[cell.title] = msg
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        (cell.run_dir / "error.txt").write_text(trace)
        bar.write(f"FAILED {cell.title}: {msg}")
        notify(cell, "failed")
        bar.advance()

    def skip(cell: Cell) -> None:  # its cell.json was checked by preflight
        run.results.append(read_json(cell.run_dir / "result.json"))
        run.skipped.append(cell.title)
        notify(cell, "skipped")
        bar.advance()

    def one(cell: Cell) -> None:
        bar.describe(cell.title)
        if cell.done:
            skip(cell)
            return
        notify(cell, "start")
        t0 = time.perf_counter()
        try:
            dataset, features, train_cfg = _cell_inputs(config, cell, model_classes, data_cache, feat_cache)
            result = run_cell(cell, dataset, features, train_cfg)
        except Exception as e:  # noqa: BLE001 — one diverging model must not sink the benchmark
            # a configuration error would fail every later cell the same way; a diverging loss is this
            # cell's own (its model's lr or loss weights), so the other cells still run
            if config.on_error == "raise" or _fatal(e):
                raise
            failed(cell, f"{type(e).__name__}: {e}", traceback.format_exc())
        else:
            finished(cell, result, time.perf_counter() - t0)

    def phase(batch: list[Cell]) -> None:
        if config.jobs > 1:
            to_train = [not c.done for c in batch]  # a file test each: read once
            if sum(to_train) >= 2:
                for cell, train in zip(batch, to_train):
                    if not train:
                        skip(cell)
                todo = [c for c, train in zip(batch, to_train) if train]
                _run_in_workers(config, todo, model_classes, data_cache, feat_cache, notify, finished, failed)
                return
        for cell in batch:
            one(cell)

    from recgoat.benchmark.report import chosen_points, collect_runs, write_report as _write

    rows: dict[str, dict[str, Any]] = {}  # the finished cells' report rows (collect_runs): each cell read once
    picks = None
    try:
        phase(first)
        # grid_seeds: every point has its first seeds now; the chosen ones train on the rest. Chosen once, here, for
        # the report too: the later seeds trained next choose nothing (only the first seeds are compared)
        if later:
            picks = chosen_points(collect_runs(config, rows), config)
        chosen, unchosen = split_later_grid_cells(config, later, picks)
        run.unchosen = [c.title for c in unchosen]
        bar.set_total(len(first) + len(chosen))
        phase(chosen)
        for cell in unchosen:
            notify(cell, "unchosen")
    finally:
        bar.close()
    if write_report:
        run.report = _write(out, config, failed=run.failed, runs=collect_runs(config, rows), picks=picks)
    return run


def _fatal(e: BaseException) -> bool:
    """An error that would fail every later cell alike (the user's data or configuration): it stops the run. A
    diverging loss (:class:`TrainingDiverged`) and any other exception are the cell's own."""
    return isinstance(e, RecGOATError) and not isinstance(e, TrainingDiverged)


def _cell_inputs(config: BenchmarkConfig, cell: Cell, model_classes: dict[str, Any],
                 data_cache: dict[tuple[str, int | None], Any], feat_cache: dict[tuple[str, int | None], Any]
                 ) -> tuple[Any, Any, TrainConfig]:
    """The dataset, the features (None for a model that reads none) and the training settings of ``cell``;
    datasets and features loaded once per ``(dataset, split seed)`` into the caches."""
    key = (dataset_label(cell.dataset), cell.split_seed)
    if key not in data_cache:
        data_cache[key] = load_dataset(cell.dataset, cell.split_seed)
    dataset = data_cache[key]
    features = None
    if needs_features(model_classes[cell.model.key]):
        if key not in feat_cache:
            feat_cache[key] = resolve_features(cell.dataset, dataset, Path(config.out), _feature_split(config, cell),
                                               config.progress, auto_kinds(config))
        features = feat_cache[key]
    train_cfg = config.cell_train_config(cell.model, cell.seed)
    if not config.progress:
        train_cfg = train_cfg.model_copy(update={"progress": False})
    return dataset, features, train_cfg


# a worker process's datasets and features, loaded by its first cell of each and reused by the next
_WORKER_CACHE: tuple[dict, dict] = ({}, {})
# a worker's view of the run: the stop flag shared with the parent and the other workers (a lock-free shared byte:
# it is set from signal handlers, where a lock held by the interrupted code would deadlock), whether a cell is
# training now, and whether this worker has been interrupted already
_WORKER_STOP: Any = None
_WORKER_IN_CELL = False
_WORKER_INTERRUPTED = False
_PARENT_POLL_S = 1.0  # how often a worker checks that its parent is alive


def _worker_sigint(signum: int, frame: Any) -> None:
    """SIGINT in a worker (Ctrl-C reaches the whole process group; the parent sends it to stop its workers): no
    further cell starts in any worker, and the cell training here stops as a Ctrl-C stops it in one process (its
    checkpoint kept). An idle worker is not interrupted: a KeyboardInterrupt inside the pool's own queue handling
    would kill it with a traceback."""
    global _WORKER_INTERRUPTED
    if _WORKER_STOP is not None:
        _WORKER_STOP.value = 1
    if _WORKER_IN_CELL and not _WORKER_INTERRUPTED:
        _WORKER_INTERRUPTED = True
        raise KeyboardInterrupt


def _watch_parent(parent: int) -> None:
    """Exit the worker once its parent is gone (``kill -9``, or a parent stopped before it could stop its
    workers): an orphan would write cells into a benchmark folder whose lock died with the parent. Exiting
    at once loses nothing finished: every file is written atomically, and the cell resumes from its checkpoint."""
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def _worker_init(stop: Any, parent: int) -> None:
    """Initializer of a ``jobs > 1`` worker process: the shared stop flag, its SIGINT handling, the parent watch."""
    import signal

    global _WORKER_STOP
    _WORKER_STOP = stop
    signal.signal(signal.SIGINT, _worker_sigint)
    if hasattr(signal, "pthread_sigmask"):
        # blocked since the process started (_sigint_blocked): a Ctrl-C, or _stop_workers' SIGINT, that came during
        # the start-up was kept pending and is handled now, as one coming later is
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread for the block, where the platform can block it.

    Why: a process started in the block inherits the blocked signal (across exec), and the pool starts its workers
    inside ``submit``. A worker's start-up (the interpreter, then the imports of torch and this module) takes
    seconds before :func:`_worker_init` installs its handler; a Ctrl-C there (it reaches the whole process group)
    killed the worker with a KeyboardInterrupt traceback from the middle of an import. Blocked, it waits pending
    until the initializer unblocks it under the worker's own handler (so a run stopped then ends once its workers
    have started, seconds later, rather than at once with a traceback). Nothing is lost here either: a SIGINT that
    came during the block is delivered to this process when the block ends. (CPython starts its resource tracker
    process so.)"""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: no signals to block
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _train_in_worker(config: BenchmarkConfig, cell: Cell, model_cls: Any) -> dict[str, Any]:
    """One cell in a worker process of a ``jobs > 1`` run; its result, or its error as plain data (an exception
    object need not survive pickling). ``model_cls`` travels with the cell: unpickling it imports the module that
    defines (and registers) it, so a model registered in the parent's script is known here too."""
    global _WORKER_IN_CELL
    t0 = time.perf_counter()
    try:
        _WORKER_IN_CELL = True  # set inside the try: a SIGINT right after it is caught below
        # a cell already queued to this worker when the run was stopped (Ctrl-C, SIGTERM, an error that stops
        # the run): cancelling its future cannot take it back, so it is dropped here, before it starts
        if _WORKER_INTERRUPTED or (_WORKER_STOP is not None and _WORKER_STOP.value):
            return {"stopped": True}
        dataset, features, train_cfg = _cell_inputs(config, cell, {cell.model.key: model_cls}, *_WORKER_CACHE)
        # no bars from workers (their lines would interleave), and the cores shared out unless a count is set
        update: dict[str, Any] = {"progress": False}
        if not train_cfg.num_threads:
            update["num_threads"] = max(1, (os.cpu_count() or 1) // config.jobs)
        result = run_cell(cell, dataset, features, train_cfg.model_copy(update=update))
    except KeyboardInterrupt:  # stopped by the run (see _worker_sigint): what it finished is kept, nothing to report
        return {"stopped": True}
    except Exception as e:  # noqa: BLE001 — reported by the parent as the sequential run reports it
        return {"error": f"{type(e).__name__}: {e}", "message": str(e), "trace": traceback.format_exc(),
                "fatal": _fatal(e), "user_error": isinstance(e, RecGOATError)}
    finally:
        _WORKER_IN_CELL = False
    return {"result": result, "seconds": time.perf_counter() - t0}


def _run_in_workers(config: BenchmarkConfig, cells: list[Cell], model_classes: dict[str, Any],
                    data_cache: dict, feat_cache: dict, notify: Callable[[Cell, str], None],
                    finished: Callable[[Cell, dict, float], None], failed: Callable[[Cell, str, str], None]) -> None:
    """Train ``cells`` in ``config.jobs`` worker processes, each cell as :func:`run_cell` trains it alone (same
    seeds, same files), reported as each finishes.

    Workers are started by ``spawn`` (a forked child of a process that has run torch's thread pool can hang).
    ``auto`` features are encoded here first, once, rather than by several workers at the same time. An error
    that stops a sequential run (bad data or configuration, or any error with ``on_error: raise``) stops this one
    too: cells not started are cancelled, and the ones running finish and keep their results.
    """
    import multiprocessing
    import pickle
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    for cell in cells:
        if cell.dataset.features == "auto" and needs_features(model_classes[cell.model.key]):
            _cell_inputs(config, cell, model_classes, data_cache, feat_cache)
    stop: BaseException | None = None

    def outcome(cell: Cell, fut) -> BaseException | None:
        """Report a finished future; the error that stops the run, if it is one."""
        try:
            out = fut.result()
        except BrokenProcessPool:
            return RecGOATError(f"a worker process died (killed, or out of memory?) while {cell.title} or another "
                                f"cell trained; what finished is kept and a rerun resumes the rest from their "
                                f"checkpoints")
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # the cell or its model class
            return ConfigError(f"jobs: {config.jobs}: {cell.title} cannot be sent to a worker process "
                               f"({type(e).__name__}: {e}); a model defined where a new process cannot import it "
                               f"(a notebook, a function) needs jobs: 1")
        if "stopped" in out:  # not started, or interrupted, after the run was stopped: not a result nor a failure
            return None
        if "result" in out:
            finished(cell, out["result"], out["seconds"])
        elif out["fatal"] or (config.on_error == "raise" and out["user_error"]):  # one line, as the CLI prints it
            return RecGOATError(out["message"])
        elif config.on_error == "raise":
            return RuntimeError(f"{cell.title} failed in a worker process:\n{out['trace']}")
        else:
            failed(cell, out["error"], out["trace"])
        return None

    ctx = multiprocessing.get_context("spawn")
    # set once the run stops: a worker starts no cell after it (cancelling a future cannot recall the cells the
    # pool has already queued to its workers)
    stop_flag = ctx.Value("b", 0, lock=False)
    pool = ProcessPoolExecutor(max_workers=min(config.jobs, len(cells)), mp_context=ctx,
                               initializer=_worker_init, initargs=(stop_flag, os.getpid()))
    ended = False
    try:
        futures = {}
        for cell in cells:
            with _sigint_blocked():  # a worker started by this submit starts with SIGINT blocked (_worker_init)
                future = pool.submit(_train_in_worker, config, cell, model_classes[cell.model.key])
            futures[future] = cell
            notify(cell, "start")
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:  # every finished cell is reported, after an error too
                error = outcome(futures[fut], fut)
                stop = stop or error
            if stop is not None:  # cancel what has not started (waited on no more); the running cells finish
                stop_flag.value = 1
                pending = {f for f in pending if not f.cancel()}
        ended = True
    finally:
        if ended:
            pool.shutdown(wait=True, cancel_futures=True)
        else:  # Ctrl-C, SIGTERM (the CLI raises KeyboardInterrupt for it) or an error of the parent's own
            _stop_workers(pool, stop_flag)
    if stop is not None:
        raise stop


_STOP_GRACE_S = 15.0  # how long interrupted workers get to stop before they are killed


def _stop_workers(pool: Any, stop_flag: Any, grace: float = _STOP_GRACE_S) -> None:
    """Stop a worker pool on the parent's way out: no cell starts any more, the running ones are interrupted as
    Ctrl-C interrupts them (a SIGINT, whether or not they had one already: ``kill -INT``/``-TERM`` of the parent
    alone reaches no worker), and a worker still alive after ``grace`` seconds is killed, so that none outlives
    the parent and its folder lock. Nothing finished is lost: files are written atomically, cells resume from
    their checkpoints."""
    import signal

    stop_flag.value = 1
    # The pool's own processes, read from the executor: it has no public way to reach them before Python 3.14,
    # whose terminate_workers()/kill_workers() end them at once rather than interrupting their cells as Ctrl-C
    # does. The public alternatives miss some or take too many: multiprocessing.active_children() is every child
    # of this process (a caller's own pool too), and pids recorded by the workers' initializer leave out a worker
    # still starting up (the one a Ctrl-C during start-up finds) and give no handle to join or kill. Read only, and
    # guarded: without it the workers still stop, after their cell (the shutdown below) or with this process
    # (_watch_parent).
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive() and p.pid is not None:
            try:
                os.kill(p.pid, signal.SIGINT)
            except ProcessLookupError:  # ended meanwhile
                pass
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


class _CellBar:
    """A tqdm bar over cells (the trainer's epoch bar nests below it)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="benchmark", unit="cell", dynamic_ncols=True, position=0)

    def describe(self, title: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(title)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def set_total(self, total: int) -> None:
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()

    def write(self, text: str) -> None:
        """One line per finished or failed cell: above the bar, or on stderr without one (a log or a pipe
        otherwise saw nothing for the whole run, failures included)."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
