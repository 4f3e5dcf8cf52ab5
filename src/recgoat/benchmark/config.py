"""A benchmark's configuration: its datasets, models and seeds (:class:`BenchmarkConfig`, :class:`DatasetSpec`,
:class:`ModelSpec`), read from YAML with ``--set`` overrides (:func:`load_config`) or from the record every run
writes into the benchmark folder (:func:`load_recorded_config`), checked as far as it can be without data or run
folders (:func:`check_config`), and printed as commented YAML that reads back as the same benchmark
(:func:`benchmark_config_yaml`, ``recgoat benchmark --print-config``).

Hyper-parameter grids: a model entry's ``grid`` (:func:`expand_grid`) stands for one entry per point of the
Cartesian product of its settings' values, each an ordinary labelled model of the benchmark (its own cells,
resumed like any other) marked ``grid_of``; the report picks, per dataset, the point with the best mean
*validation* metric (:func:`recgoat.benchmark.report.tuned`), as MMRec's grid search does on validation.
With ``grid_seeds: N`` the points train on the first N seeds only; after every other cell, the point chosen over
those seeds (:func:`~recgoat.benchmark.cells.split_later_grid_cells`, the report's own choice) trains on the
remaining seeds.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recgoat.config import (Nested, field_values, first_validation_error, parse_value, read_config_file, with_preset,
                            yaml_fields, yaml_scalar)
from recgoat.errors import ConfigError, RecGOATError
from recgoat.training.trainer import TrainConfig


_SAFE_NAME = "".join(chr(c) for c in range(128) if chr(c).isalnum()) + "-_.+="


def _check_name(kind: str, name: str) -> str:
    if not name or any(c not in _SAFE_NAME for c in name) or name.startswith("."):
        raise ConfigError(f"{kind} label {name!r} cannot name a folder; use letters, digits and -_.+=")
    return name


class ModelSpec(BaseModel):
    """One model of the benchmark: a registered model name, its hyper-parameters, training overrides."""

    # a field's docstring is its description: `recgoat benchmark --print-config` writes it above the key
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """The model (recgoat models list)."""
    label: str | None = None
    """Its column and folder name (null: the name); set it to compare two settings of one model."""
    # its values are merged under ``params`` when the spec is read, so cells are signed by the settings themselves
    preset: str | None = None
    """A packaged preset of the model's params (recgoat models list) or a YAML file of params; params override it."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The model's hyper-parameters (recgoat models show MODEL); a key left out takes the preset's or default value."""
    train: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the benchmark's train section for this model, e.g. {lr: 0.005}."""
    # expanded by BenchmarkConfig into one entry per point (expand_grid); never kept
    grid: dict[str, Any] | None = Field(default=None, exclude=True)
    """A hyper-parameter grid, params.NAME or train.NAME → a list of values, e.g. {train.lr: [0.001, 0.005],
    params.n_layers: [2, 3]}: one model per point, labelled <label or name>+NAME=VALUE+..., the report keeping per
    dataset the point with the best mean validation metric."""
    grid_of: str | None = None
    """The grid this entry joins as one more point (a grid's points get it by themselves): the report keeps, per
    dataset, the group's point with the best mean validation metric."""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `params:` or `train:` with nothing under it (every key commented out, as --print-config writes a model's
        # params) reads as null: no settings, as when the key is left out
        if isinstance(data, dict) and any(data.get(k, {}) is None for k in ("params", "train")):
            return {k: v for k, v in data.items() if not (k in ("params", "train") and v is None)}
        return data

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

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """A dataset name (recgoat datasets list) or folder."""
    label: str | None = None
    """Its name in the report and the run folders (null: the name, a folder's last part, with -u<max_users> when
    that is set)."""
    features: str | None = "auto"
    """A folder written by `recgoat encode`, or auto: encoded into <out>/features/<label> if a model needs features,
    and reused; null: ID embeddings only."""
    max_users: int | None = Field(default=None, gt=0)
    """Keep the first N users of the raw data (quick runs); null: every user."""
    prepare: dict[str, Any] = Field(default_factory=dict)
    """How the data is prepared (min_rating, k_core, split, ratios; recgoat train's data section): the split's
    seed is split_seed."""


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


def flat_grid(grid: dict[str, Any]) -> dict[str, Any]:
    """A model entry's ``grid`` (a mapping) as ``section.NAME`` → values, one key per axis in the order given:
    ``params:`` / ``train:`` sub-mappings spelled out as dotted keys. A section's mapping wins over a dotted key:
    ``--set models.X.grid.train.lr=[…]`` (which writes a mapping) replaces the values a file gave as ``train.lr``.
    The same grid as ``grid``, in the form :func:`benchmark_config_yaml` prints."""
    nested = {f"{name}.{k}": v for name in GRID_SECTIONS if isinstance(grid.get(name), dict)
              for k, v in grid[name].items()}
    flat: dict[str, Any] = {}
    for name, values in grid.items():  # in the order given
        if name in GRID_SECTIONS and isinstance(values, dict):
            flat.update((k, v) for k, v in nested.items() if k.startswith(f"{name}."))
        else:
            flat[str(name)] = values
    flat.update(nested)
    return flat


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
    axes: list[tuple[str, str, list]] = []
    for name, values in flat_grid(grid).items():
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

    # a field's docstring is its description: `recgoat benchmark --print-config` writes it above the key
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    datasets: list[DatasetSpec]
    """The datasets, each a name or folder or a mapping of the keys below; every model trains on each."""
    models: list[ModelSpec]
    """The models, each a name or a mapping of the keys below: one column of the report each (a grid, one per
    point)."""
    seeds: list[int] = Field(default_factory=lambda: [2026])
    """The training seeds: each model trains once per seed on each dataset (a cell), the report giving the mean
    and standard deviation."""
    # with more than the seeds: every seed, with a warning (_warn_grid_seeds)
    grid_seeds: int | None = Field(default=None, ge=1)
    """A grid's points train on the first N seeds only, and the point validation chooses there on the other seeds
    too (MMRec tunes on one seed): P·N + S − N cells for a grid of P points instead of P·S; null: every seed."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """How every model is trained and selected (a model's own train overrides it); the training seed of each
    cell is its entry of seeds."""
    split_seed: int = 2026
    """The seed of the one train/valid/test split every cell shares."""
    split_seeds: bool = False
    """Re-split the data with every seed (each cell's split seed is its training seed) instead of split_seed's
    one fixed split."""
    out: Path = Path("benchmark-results")
    """The benchmark folder: runs/<dataset>/<model>/seed<S>, features/, the report (results.md, .csv, .tex,
    report.html)."""
    significance: Literal["wilcoxon", "ttest"] = "wilcoxon"
    """The paired test over users between the best and second-best models: wilcoxon or ttest."""
    baseline: str | None = None
    """A model (or grid) every other is compared with: relative difference and paired test per model,
    Holm-corrected over the models; null: no such comparison."""
    report_metrics: list[str] = Field(default_factory=lambda: ["recall", "ndcg", "precision", "hit", "map"])
    """The metrics of the report's tables (recall, ndcg, precision, hit, map)."""
    report_ks: list[int] | None = None
    """The cut-offs K of the report's tables, each one of train.ks; null: every K of train.ks."""
    on_error: Literal["continue", "raise"] = "continue"
    """A cell that fails: continue (recorded in its folder's error.txt, the other cells run) or raise (stop)."""
    progress: bool = True
    """Progress bars: left unset, only on a terminal (or in Jupyter); set true, always."""
    # how a run is carried out, not a setting of its results
    jobs: int = Field(default=1, ge=1)
    """Cells trained at once, each in a worker process of its own (train.num_threads threads each; unset: the
    cores shared out)."""

    @model_validator(mode="before")
    @classmethod
    def _empty_train(cls, data: Any) -> Any:
        # `train:` with nothing under it (every key commented out, as --print-config writes it) reads as null: the
        # defaults, as when the section is left out
        if isinstance(data, dict) and "train" in data and data["train"] is None:
            return {k: v for k, v in data.items() if k != "train"}
        return data

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

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_list(cls, v: Any) -> Any:
        # pydantic said only "Input should be a valid list" for `seeds: 2026` or `seeds: "2026,2027"` (the form
        # --seeds takes on the command line), which tells neither the form wanted nor how to write it
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            raise ValueError(f"a list of integers, e.g. seeds: [2026, 2027] in YAML, --seeds 2026,2027 or --set "
                             f"'seeds=[2026,2027]' on the command line; got {v!r}")
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
        if self.baseline is not None:
            # a grid's points stand for it in the tuned rows that are compared: the grid's name, not a point's
            rows = [m.key for m in self.models if m.grid_of is None] + sorted(groups)
            if self.baseline not in rows:
                point = any(m.key == self.baseline for m in self.models)
                raise ValueError(f"baseline {self.baseline!r} " + (
                    "is a grid point: name its grid (the point validation chooses is the one compared)" if point
                    else f"is not among the models ({', '.join(rows)}); add it, or set baseline: null"))
        missing = [k for k in self.report_ks or [] if k not in self.train.ks]
        if missing:
            raise ValueError(f"report_ks {missing} are not evaluated; add them to train.ks {list(self.train.ks)}")
        return self

    @property
    def ks_reported(self) -> list[int]:
        return list(self.report_ks) if self.report_ks else list(self.train.ks)

    def where_watched(self) -> BenchmarkConfig:
        """This configuration with ``progress`` off where nobody watches the bars (stderr no terminal, no Jupyter
        kernel), unless it or ``train.progress`` was set. tqdm redraws with carriage returns, garbage in a log or
        a pipe: only the CLI checked, so ``run_benchmark`` called from a script drew them there."""
        asked = "progress" in self.model_fields_set or "progress" in self.train.model_fields_set
        if asked or not self.progress or sys.stderr.isatty() or "ipykernel" in sys.modules:
            return self
        return self.model_copy(update={"progress": False})

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
            if node.get(part) is None:  # absent, or a section with nothing under it (`params:`, read as null)
                node[part] = {}
            node = node[part]
        i += 1


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                sets: list[str] | None = None) -> BenchmarkConfig:
    """Read a YAML config (optional), apply top-level ``overrides`` then ``--set`` dotted overrides."""
    return load_config_tree(path, overrides, sets)[1]


def load_config_tree(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                     sets: list[str] | None = None) -> tuple[dict[str, Any], BenchmarkConfig]:
    """:func:`load_config`'s configuration, after the tree it was validated from: the file's mapping once
    ``overrides`` and ``sets`` apply, grids and presets as given (the configuration holds a grid's points and
    presets merged into params), which :func:`benchmark_config_yaml` prints."""
    tree = read_config_file(path, "the config must be a mapping")
    return _tree_and_config(tree, path, overrides, sets)


RECORD = "benchmark.json"  # the whole configuration, written into the benchmark folder by every run


def load_recorded_config(out: str | Path, overrides: dict[str, Any] | None = None,
                         sets: list[str] | None = None) -> BenchmarkConfig:
    """The configuration a benchmark folder's ``benchmark.json`` records, as :func:`load_recorded_config_tree`
    reads it."""
    return load_recorded_config_tree(out, overrides, sets)[1]


def load_recorded_config_tree(out: str | Path, overrides: dict[str, Any] | None = None,
                              sets: list[str] | None = None) -> tuple[dict[str, Any], BenchmarkConfig]:
    """The configuration a benchmark folder's ``benchmark.json`` records (every run writes it), with
    ``overrides`` and ``--set`` overrides applied as :func:`load_config` applies them to a file: what
    ``--report-only --out FOLDER`` reports when no config is given. A missing or unreadable record is one
    :class:`ConfigError` naming it. Returned after the tree it was validated from, as :func:`load_config_tree`
    returns it."""
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
    return _tree_and_config(tree, p, overrides, sets)


def _config_from_tree(tree: dict[str, Any], path: str | Path | None, overrides: dict[str, Any] | None,
                      sets: list[str] | None) -> BenchmarkConfig:
    """The config ``tree`` (read from ``path``, named in errors) gives once ``overrides`` and ``sets`` apply."""
    return _tree_and_config(tree, path, overrides, sets)[1]


def _tree_and_config(tree: dict[str, Any], path: str | Path | None, overrides: dict[str, Any] | None,
                     sets: list[str] | None) -> tuple[dict[str, Any], BenchmarkConfig]:
    """``tree`` (read from ``path``, named in errors) once ``overrides`` and ``sets`` apply to it (in place), and
    the config it gives: the one path of both the loaders and the printer (:func:`benchmark_config_yaml`)."""
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
    # an error is then told against the file only if the file (not a --set on top of it) holds the wrong value
    before_sets = copy.deepcopy(tree) if sets and path is not None else None
    for item in sets or []:
        _apply_set(tree, item)
    try:
        config = BenchmarkConfig(**copy.deepcopy(tree))  # the tree stays as given, for the printer
    except ValidationError as e:
        hint = (" (a benchmark config's training section is `train`, e.g. --set train.lr=1e-3; `trainer` is the "
                "key of `recgoat train`'s run config)") if "trainer" in tree else ""
        if "model" in tree:  # `recgoat train`'s --set model.params.x=… does not carry over
            hint += (" (a benchmark config lists its models under `models`: set one's params with, e.g., "
                     "--set models.lightgcn.params.embedding_dim=16)")
        source = _failing_set(before_sets, sets) or where
        raise ConfigError(f"{source}: {first_validation_error(e, BenchmarkConfig)}{hint}") from None
    try:
        check_config(config)
    except RecGOATError as e:
        source = _failing_set(before_sets, sets) or path
        if source is None:
            raise
        raise ConfigError(f"{source}: {e}") from None
    _warn_grid_seeds(config, where)
    return tree, config


def _warn_grid_seeds(config: BenchmarkConfig, where: str | Path) -> None:
    """Warn when ``grid_seeds`` exceeds the seeds: it then means every seed (:func:`~recgoat.benchmark.report.
    grid_seed_count`), as without it. Not refused: ``--seeds`` narrowing a file's seeds (``-s 2026`` to try a
    config with ``grid_seeds: 2``), or a report of fewer seeds than a run's ``benchmark.json`` records, gives
    such a pair with that meaning."""
    n = len(config.seeds)
    if config.grid_seeds is not None and config.grid_seeds > n:
        warnings.warn(f"{where}: grid_seeds: {config.grid_seeds} is more than the {n} seed{'' if n == 1 else 's'} "
                      f"given; every grid point trains on every seed, as without grid_seeds", UserWarning,
                      stacklevel=3)


def _valid(tree: dict[str, Any]) -> bool:
    """Whether ``tree`` makes a benchmark configuration that passes :func:`check_config`."""
    try:
        check_config(BenchmarkConfig(**copy.deepcopy(tree)))
    except (ValidationError, RecGOATError):
        return False
    return True


def _failing_set(before: dict[str, Any] | None, sets: list[str] | None) -> str | None:
    """``--set ITEM``, the first of ``sets`` after which a configuration valid without them (``before``: the file
    with the command's options) is no longer valid; None when it was not valid before them (or there are none, or
    no file: the error then says "benchmark config", which blames nothing wrongly).

    Why: an error a ``--set`` caused was prefixed with the config file's name (``run.yaml: train.epoch: unknown
    key`` for ``--set train.epoch=3``), sending the reader to a file that holds no such key."""
    if not sets or before is None or not _valid(before):
        return None
    tree = copy.deepcopy(before)
    for item in sets:
        _apply_set(tree, item)
        if not _valid(tree):
            return f"--set {item}"
    return None


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


# ------------------------------------------------------------------------------------- checks without data
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


# ------------------------------------------------------------------------------------- printing (--print-config)
def benchmark_config_yaml(tree: dict[str, Any], config: BenchmarkConfig) -> str:
    """``config`` as a commented YAML file that ``recgoat benchmark --config`` reads back as the same benchmark,
    ``tree`` being the mapping it was validated from (:func:`load_config_tree`). Every key is written under its
    description (the fields' docstrings; a list entry's keys described in its first entry), those the configuration
    sets at their values and the others commented out at their defaults, since an unset key can mean more than its
    default (``progress`` unset: bars on a terminal only). Datasets are mappings of every key; a model entry is
    written as given, its grid as a grid (not its points) and its preset by name, then the model's params it does
    not set commented out at their preset or default values. After the models, what the grids expand to and how
    many cells the benchmark has."""
    from recgoat.models.base import get_model_class

    entries = [{"name": e} if isinstance(e, str) else e for e in _as_list(tree.get("models"), "models")]

    def entry(model: type[BaseModel], values: dict[str, Any], given: set[str], indent: str,
              nested: Nested | None, describe: bool) -> list[str]:
        lines = yaml_fields(model, values, given, indent + "    ", nested, describe)
        first = next(i for i, line in enumerate(lines) if not line.lstrip().startswith("#"))  # `name:`, always set
        lines[first] = f"{indent}  - {lines[first].lstrip()}"
        return lines

    def model_entry(raw: dict[str, Any], indent: str, describe: bool) -> list[str]:
        # `params:` / `train:` with nothing under them read as absent (ModelSpec._empty_sections)
        given = {k for k, v in raw.items() if v is not None or k not in ("params", "train")}
        values = {name: raw[name] if name in given else field.get_default(call_default_factory=True)
                  for name, field in ModelSpec.model_fields.items()}
        if "grid" in given:
            values["grid"] = flat_grid(raw["grid"])  # a --set into a section of the grid merged with the file's

        def params(owner: type[BaseModel], name: str, indent: str) -> list[str] | None:
            if owner is not ModelSpec or name != "params":
                return None
            own = dict(raw.get("params") or {})
            cls = get_model_class(raw["name"]).Config
            effective = {k: f.get_default(call_default_factory=True) for k, f in cls.model_fields.items()
                         if not f.is_required()}
            effective.update(with_preset(raw["name"], raw.get("preset"), own))
            extra = [f"{indent}  {k}: {yaml_scalar(v)}" for k, v in own.items() if k not in cls.model_fields]
            under = [*yaml_fields(cls, effective, set(own), indent + "  "), *extra]
            if not under:  # a model without params (mostpop)
                return [f"{indent}{'' if 'params' in given else '# '}params: {{}}"]
            # `params: {}` given: kept so (a header alone reads as no params given)
            return [f"{indent}params:" + (" {}" if "params" in given and not own else ""), *under]

        return entry(ModelSpec, values, given, indent, params, describe)

    def sections(owner: type[BaseModel], name: str, indent: str) -> list[str] | None:
        if owner is not BenchmarkConfig:
            return None
        if name == "datasets":
            return [f"{indent}datasets:", *(line for i, d in enumerate(config.datasets) for line in entry(
                DatasetSpec, field_values(d), d.model_fields_set, indent, None, i == 0))]
        if name == "models":
            return [f"{indent}models:",
                    *(line for i, e in enumerate(entries) for line in model_entry(e, indent, i == 0)),
                    *_cells_note(config)]
        if name == "train":  # each cell's training seed is its entry of `seeds`: train.seed is refused, not shown
            given = config.train.model_fields_set
            values = {k: v for k, v in field_values(config.train).items() if k != "seed"}
            head = f"{indent}train:" + (" {}" if "train" in config.model_fields_set and not given else "")
            return [head, *yaml_fields(TrainConfig, values, given, indent + "  ")]
        return None

    lines = ["# recgoat benchmark configuration, for recgoat benchmark --config FILE; a commented-out key is at its "
             "default",
             *yaml_fields(BenchmarkConfig, field_values(config), config.model_fields_set, nested=sections)]
    return "\n".join(lines) + "\n"


def _cells_note(config: BenchmarkConfig) -> list[str]:
    """Comment lines on what ``config``'s grids expand to (the points' labels) and how many cells it has, both
    read off the loaded configuration (its points, :func:`~recgoat.benchmark.cells.plan_cells`)."""
    from recgoat.benchmark.cells import plan_cells, split_grid_seeds

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'' if n == 1 else 's'}"

    groups: dict[str, list[str]] = {}
    for m in config.models:
        if m.grid_of is not None:
            groups.setdefault(m.grid_of, []).append(m.key)
    notes = [f"Grid {g}: {count(len(keys), 'point')}, {', '.join(keys)}." for g, keys in groups.items()]
    first, later = split_grid_seeds(config, plan_cells(config))
    # of a grid's cells beyond grid_seeds, only the point validation chooses trains: one per dataset and seed
    chosen = {(dataset_label(c.dataset), c.model.grid_of, c.seed) for c in later}
    cells = (f"{count(len(config.datasets), 'dataset')} × {count(len(config.models), 'model')}"
             f"{' (grid points included)' if groups else ''} × {count(len(config.seeds), 'seed')}")
    if later:
        tuned = [s for s in config.seeds if s not in {c.seed for c in later}]
        cells += (f" = {len(first) + len(later)} cells; with grid_seeds: {config.grid_seeds}, a grid's points train "
                  f"on {'seed' if len(tuned) == 1 else 'seeds'} {', '.join(map(str, tuned))} only and the point "
                  f"chosen there on the other {len(config.seeds) - len(tuned)}: {len(first) + len(chosen)} cells.")
    else:
        cells += f": {count(len(first), 'cell')}."
    return [f"# {line}" for note in [*notes, cells] for line in textwrap.wrap(
        note, 108, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)]
