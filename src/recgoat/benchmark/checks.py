"""What is checked before anything trains, so that a benchmark is refused up front rather than stopped midway,
after earlier cells had trained and without a report: the configuration, the datasets' sources and feature folders,
the (dataset, model) pairs that cannot run (:func:`pair_problems`, on stand-in features of the kinds each dataset
has: :func:`feature_kinds`, :func:`build_problem`) and run folders of another configuration (:func:`preflight`);
cells trained on another version of their data (:func:`check_data_versions`) or on other feature matrices
(:func:`check_feature_versions`, on the one read of each feature folder: :func:`check_inputs_before_training`,
:func:`check_features_before_training`). ``--report-only`` checks its folder with :func:`check_report_cells`.

The datasets and features these checks load go into caches keyed by ``(dataset label, split seed)``, and the cells
take theirs from there (:func:`_cell_inputs`). It is here, beside the checks that fill the caches, so that the checks
and the cells look :func:`~recgoat.benchmark.data.load_dataset` and :func:`~recgoat.benchmark.data.resolve_features`
up in one namespace, this module's: replacing them here (a test counting the loads and reads) reaches both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recgoat.benchmark.cells import Cell, plan_cells, required_cells, split_grid_seeds
from recgoat.benchmark.config import BenchmarkConfig, DatasetSpec, ModelSpec, check_config, dataset_label
from recgoat.benchmark.data import (auto_kinds, feature_folder, is_presplit, load_dataset, needs_features,
                                    resolve_features)
from recgoat.benchmark.resume import (_MISMATCH_FIX, REFUSED, TRAIN_ON, _recorded_mapping, _restartable, _signature,
                                      resume_plan)
from recgoat.errors import ConfigError, DataError, RecGOATError
from recgoat.features.device import check_device
from recgoat.io import read_json
from recgoat.training.trainer import TrainConfig


# ------------------------------------------------------------------------------------- configuration and pairs
def check_dataset_source(spec: DatasetSpec) -> None:
    """The dataset can be found (a known name, or an existing folder), and an already split folder is given
    no subsetting/preparation; else the error :func:`load_dataset` would raise when the dataset's turn came,
    naming the config entry (``dataset LABEL: name PATH: …``: the path alone did not say which entry gave it)."""
    from recgoat.datasets.registry import find_source

    if is_presplit(spec):
        if spec.max_users or spec.prepare:
            raise ConfigError(f"dataset {spec.name}: already split; max_users/prepare do not apply")
        return
    try:
        find_source(spec.name)
    except DataError as e:
        label = dataset_label(spec)
        # the entry's label is the name given (`--dataset ml-latest-smal`): said once, not "dataset X: name X: …"
        raise DataError(None, f"dataset {label}: {e.problem}" if e.path == label else
                        f"dataset {label}: name {e}") from None


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
            raise DataError(None, f"dataset {dataset_label(cell.dataset)}: features {feats}: feature folder not "
                                  f"found; run `recgoat encode all <dataset>` first")
    problems = pair_problems(config, cells, data_cache if data_cache is not None else {})
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} (dataset, model) pairs cannot run, so nothing was trained: "
                          + "; ".join(problems))
    mismatched, devices = [], set()
    for c in cells:
        train_cfg = config.cell_train_config(c.model, c.seed)
        # a larger train.epochs alone is no other experiment: such a cell stands or trains on (resume_plan)
        plan, diff = resume_plan(c, _signature(c, train_cfg))
        if plan == REFUSED:
            mismatched.append((c, diff))
        if not c.done:
            devices.add(train_cfg.device)
    if mismatched:
        raise ConfigError(f"{_listed(_mismatches(mismatched))}; {_MISMATCH_FIX}")
    # a device this machine lacks (train.device: cuda without a GPU) would fail every cell that trains, one by one
    for device in sorted(devices):
        check_device(device, name="train.device", purpose="train on", fix="--set train.device=cpu")


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
    modality it needs is absent, a setting asks for a view the features lack) or trained (its class lacks a
    method training calls: :func:`~recgoat.training.trainer.check_implemented`), said as "cannot be built: …" or
    "cannot train: …"; else None. It is built with one user and one item, so it is cheap; the global random state
    is left as it was. Any other error (e.g. a plugin's ``dims_from`` reading the stand-in's absent dataset) proves
    nothing: the cell reports its own."""
    from recgoat.models.base import MissingMethod, get_model_class
    from recgoat.training.trainer import check_implemented

    cls = get_model_class(model.name)  # an unknown name is refused, not taken for "nothing to judge" below
    try:
        # a method the class lacks (a plugin without loss()) stopped its cell only, after earlier cells trained
        check_implemented(probe_model(cls, model.params, None, features))
    except MissingMethod as e:
        return f"cannot train: {e}"
    except ConfigError as e:
        return f"cannot be built: {e}"
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
                from recgoat.features.store import NOTHING_TO_ENCODE_FIX, what_it_lacks

                # the wording of `encode all` and `train --features auto` (loaded above, for its kinds)
                lacks = what_it_lacks(_load_cached(spec, cell.split_seed, data_cache))
                problems.append(f"dataset {label}: model {model.key!r} needs features but `features: auto` encodes "
                                f"none for it: {lacks}; {NOTHING_TO_ENCODE_FIX}")
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
            problems.append(f"dataset {label}: model {model.key!r} {built[key]}{where}")
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


_FOLDERS_SHOWN = 3  # of the cells refused for one difference


def _by_reason(refused: list[tuple[Cell, str]]) -> list[str]:
    """The refusals of ``refused`` cells (each with what it ``was``: ``run with a different configuration (…)``,
    ``trained on another version of dataset …``), one per reason: a cell's own (``FOLDER: was …``) where it alone has
    that reason, else how many cells do and the first of their folders. (One changed ``train.lr``, or one re-encoded
    feature kind, was told once per cell, the same sentence ten times over.)"""
    groups: dict[str, list[Cell]] = {}
    for cell, why in refused:
        groups.setdefault(why, []).append(cell)
    out = []
    for why, group in groups.items():
        if len(group) == 1:
            out.append(f"{group[0].run_dir}: was {why}")
            continue
        folders = ", ".join(str(c.run_dir) for c in group[:_FOLDERS_SHOWN])
        more = f" and {len(group) - _FOLDERS_SHOWN} more" if len(group) > _FOLDERS_SHOWN else ""
        out.append(f"{len(group)} cells were {why}: {folders}{more}")
    return out


def _mismatches(mismatched: list[tuple[Cell, list[str]]]) -> list[str]:
    """The refusals of cells run with another configuration (each with its :func:`_signature_diff`), one per
    difference (:func:`_by_reason`; a single cell's as :func:`_mismatch_message` words it)."""
    return _by_reason([(cell, f"run with a different configuration ({'; '.join(diff)})") for cell, diff in mismatched])


# ------------------------------------------------------------------------------------- data and feature versions
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
    # encoded (auto) on the device of the first cell to train: its own train settings, which preflight checked
    first = next((c for c in group if not c.done), group[0])
    device = config.cell_train_config(first.model, first.seed).device
    features = resolve_features(spec, dataset, out, split, config.progress, auto_kinds(config), device)
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
            mismatched.append((cell, f"trained on another version of dataset {key[0]} (its data fingerprint "
                                     f"differs)"))
    if mismatched:
        raise ConfigError(f"{_listed(_by_reason(mismatched))}; {_MISMATCH_FIX}")
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
            mismatched.append((cell, f"trained on other {' and '.join(changed)} features than {folder} holds "
                                     f"now (their contents differ, or the kind was added or removed)"))
    if mismatched:
        raise ConfigError(f"{_listed(_by_reason(mismatched))}; {_MISMATCH_FIX}")


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


# ------------------------------------------------------------------------------------- a cell's inputs
def _cell_inputs(config: BenchmarkConfig, cell: Cell, model_classes: dict[str, Any],
                 data_cache: dict[tuple[str, int | None], Any], feat_cache: dict[tuple[str, int | None], Any],
                 encoded: bool = False) -> tuple[Any, Any, TrainConfig]:
    """The dataset, the features (None for a model that reads none) and the training settings of ``cell``;
    datasets and features loaded once per ``(dataset, split seed)`` into the caches. ``encoded``: ``auto``
    features were encoded already (by the parent of a worker), so they are read, not encoded
    (:func:`~recgoat.benchmark.data.resolve_features`)."""
    key = (dataset_label(cell.dataset), cell.split_seed)
    if key not in data_cache:
        data_cache[key] = load_dataset(cell.dataset, cell.split_seed)
    dataset = data_cache[key]
    features = None
    train_cfg = config.cell_train_config(cell.model, cell.seed)
    if needs_features(model_classes[cell.model.key]):
        if key not in feat_cache and encoded and cell.dataset.features == "auto":
            # only read: encoding checks its cache under the folder's writer lock, and two workers starting their
            # first feature-reading cells at the same moment refused each other ("another recgoat process is
            # writing to this folder"), failing the run
            from recgoat.features import load_features

            feat_cache[key] = load_features(dataset, feature_folder(cell.dataset, Path(config.out),
                                                                    _feature_split(config, cell)))
        if key not in feat_cache:
            feat_cache[key] = resolve_features(cell.dataset, dataset, Path(config.out), _feature_split(config, cell),
                                               config.progress, auto_kinds(config), train_cfg.device)
        features = feat_cache[key]
    if not config.progress:
        train_cfg = train_cfg.model_copy(update={"progress": False})
    return dataset, features, train_cfg


# ------------------------------------------------------------------------------------- report only
def check_report_cells(config: BenchmarkConfig,
                       picks: dict[tuple[str, str], tuple[str, int, float]] | None = None) -> list[Cell]:
    """Check that every cell of ``config`` is finished and was run with ``config``; return the cells (with
    ``grid_seeds``, the later seeds of the points ``picks`` names: :func:`~recgoat.benchmark.cells.required_cells`).

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
    cells = required_cells(config, plan_cells(config), picks)
    done = [c for c in cells if c.done]
    if not done:
        raise ConfigError(f"{out}: holds no finished cell of this benchmark ({len(cells)} requested, e.g. "
                          f"{cells[0].title}); run it without --report-only first")
    mismatched, shorter = [], []
    for cell in done:
        sig = _signature(cell, config.cell_train_config(cell.model, cell.seed))
        plan, diff = resume_plan(cell, sig)
        if plan == TRAIN_ON:  # not reported: a run to this train.epochs would have trained on
            shorter.append(f"{cell.title} (to {sig['train']['epochs']})")
        elif plan == REFUSED:
            mismatched.append((cell, diff))
    if mismatched:
        raise ConfigError(f"{_listed(_mismatches(mismatched))}; --report-only reports the requested configuration "
                          f"only: give the options those cells were run with, or use another --out")
    if shorter:
        cells = "1 finished cell" if len(shorter) == 1 else f"{len(shorter)} finished cells"
        raise ConfigError(f"{cells} ran to a smaller train.epochs than requested without stopping early: "
                          f"{_listed(shorter)}; run the benchmark without --report-only to train them on, or give "
                          f"the train.epochs they were run with")
    missing = [c for c in cells if not c.done]
    if missing:
        names = [c.title + (" (failed: see its error.txt)" if (c.run_dir / "error.txt").exists() else "")
                 for c in missing]
        raise ConfigError(f"{out}: {len(missing)} of {len(cells)} requested cells are not finished: "
                          f"{_listed(names)}; run the benchmark without --report-only to compute them "
                          f"(finished cells are kept), or request only the finished models/seeds")
    return cells
