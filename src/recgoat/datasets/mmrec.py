"""MMRec's dataset layout, read and written.

A folder ``data/<name>/`` holds ``<name>.inter`` (tab-separated; ``userID``, ``itemID``, optional
``rating`` and ``timestamp``, and ``x_label`` with 0/1/2 = train/valid/test; ids are already dense
integers), optional ``text_feat.npy`` / ``image_feat.npy`` (one row per item id) and optional
``u_id_mapping.csv`` / ``i_id_mapping.csv`` (tab-separated: original id, dense id) that give back the
original user and item ids. Without an item mapping the items are 0..N-1, N the largest itemID + 1 or the
feature files' row count when they agree on more (items with no interaction are still catalogue items).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recgoat.datasets.dataset import SPLITS, Dataset
from recgoat.datasets.generic import _numeric, read_table, timestamps
from recgoat.errors import DataError
from recgoat.words import plural
from recgoat.io import atomic_path

FEATURE_FILES = {"text": "text_feat.npy", "image": "image_feat.npy"}
MAPPING_FILES = {"user": ("u_id_mapping.csv", "userID"), "item": ("i_id_mapping.csv", "itemID")}


def find_inter(folder: Path, name: str | None) -> Path:
    """The ``.inter`` file of a folder: ``<name>.inter``, or the only one there."""
    if name is not None:
        path = folder / f"{name}.inter"
        if not path.exists():
            raise DataError(path, "file not found")
        return path
    found = sorted(folder.glob("*.inter"))
    if not found:
        raise DataError(folder, "no <name>.inter file in this folder (MMRec layout)")
    if len(found) > 1:
        same = folder / f"{folder.name}.inter"
        if same.exists():
            return same
        raise DataError(folder, f"several .inter files ({', '.join(p.name for p in found)}); pass name=")
    return found[0]


# Ids beyond this cannot be held exactly by the float64 pandas may parse them into, nor safely by int64.
MAX_ID = 2**53


def _dense_ids(df: pd.DataFrame, col: str, path: Path, hint: str = "") -> np.ndarray:
    """Integer ids ≥ 0, or a DataError naming the first bad row (``hint`` appended to it)."""
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | (values < 0) | (values != np.floor(values))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        what = "empty" if pd.isna(raw.iloc[first]) else f"{raw.iloc[first]!r}"
        not_ids = plural(int(bad.sum()), "id that is not an integer", "ids that are not integers")
        raise DataError(path, f"column {col!r} has {not_ids} ≥ 0 (first at data row {first + 1}: {what}){hint}")
    huge = (values > MAX_ID).to_numpy(bool)
    if huge.any():
        first = int(np.flatnonzero(huge)[0])
        raise DataError(path, f"column {col!r} has {plural(int(huge.sum()), 'id', 'ids')} above 2**53 (first at "
                              f"data row {first + 1}: {raw.iloc[first]!r}); this layout uses dense ids 0..N-1")
    return values.to_numpy(np.int64)


# --------------------------------------------------------------------- checks shared by pre-split layouts
def dense_limit(n_distinct: int) -> int:
    """Largest ``max id + 1`` accepted for ``n_distinct`` ids: 2 × distinct + 1000.

    Pre-split layouts (MMRec, line-per-user) use dense ids 0..N-1 and the loaders allocate one row per
    id up to the largest; a few gaps are normal (users or items dropped after numbering), but an id far
    above the number of distinct ids is a wrong column or a corrupt value, and would exhaust memory.
    """
    return 2 * n_distinct + 1000


def check_dense(ids: np.ndarray, kind: str, path: Path) -> None:
    """DataError naming ``path`` and the largest id when ``ids`` are not (nearly) dense 0..N-1; a warning
    when some ids below the largest never occur (each becomes a user or item without data)."""
    if len(ids) == 0:
        return
    top = int(ids.max())
    n = len(np.unique(ids))
    if top < 0 or top + 1 > dense_limit(n):
        raise DataError(path, f"{kind} id {top} is far above the {n} distinct {kind} ids: this layout "
                              f"uses dense ids 0..N-1, so the largest id + 1 must be at most "
                              f"2 × distinct + 1000 = {dense_limit(n)}")
    if n < top + 1:
        # said, not silent: a file of raw ids (e.g. MovieLens') loaded here got hundreds of made-up users and
        # items, and the empty items were recommended like any other
        kept = "an item with no interaction, which models still rank" if kind == "item" else \
            "a user with no interaction"
        gap = top + 1 - n
        warnings.warn(f"{path}: {gap} of the {kind} ids 0..{top} never {'occurs' if gap == 1 else 'occur'} ({n} "
                      f"distinct); this layout "
                      f"numbers {kind}s 0..N-1, so each missing id is kept as {kept}. If the ids are not such "
                      f"indices, load the file as a generic dataset (interactions.csv) instead",
                      UserWarning, stacklevel=3)


def drop_split_duplicates(inter: pd.DataFrame, where: str | dict[str, Path]) -> pd.DataFrame:
    """``inter`` without repeated (user, item) rows inside one split, with one warning saying how many.

    Like the generic loader's deduplication, the latest row is kept when timestamps exist (else the
    last); the remaining rows keep their order. Valid data (no repeats) is returned unchanged.
    ``where`` is the file, or a file per split (the warning then names those holding repeats).
    """
    key = ["user", "item", "split"]
    order = (np.argsort(inter["timestamp"].to_numpy(), kind="stable") if "timestamp" in inter.columns
             else np.arange(len(inter)))
    dup_sorted = inter.iloc[order].duplicated(key, keep="last").to_numpy(bool)
    if not dup_sorted.any():
        return inter
    drop = np.zeros(len(inter), bool)
    drop[order[dup_sorted]] = True
    if isinstance(where, dict):
        hit = set(inter["split"].astype(str)[drop])
        where = ", ".join(str(p) for s, p in where.items() if s in hit)
    warnings.warn(f"{where}: dropped {int(drop.sum())} repeated (user, item) rows within a split "
                  "(one kept per user, item and split)", UserWarning, stacklevel=3)
    return inter[~drop].reset_index(drop=True)


def drop_held_out_without_train(inter: pd.DataFrame, where: str | Path) -> pd.DataFrame:
    """``inter`` without the validation/test rows of users who have no training row, with one warning.

    The protocol (METHOD.md §6) drops users with no training item: no model learns anything about them,
    so their held-out items would be ranked by an untrained embedding and only add noise to every
    model's metrics. Data split by this toolkit never has them; data split elsewhere may. The users keep
    their ids (nothing is held out for them, so they are not evaluated)."""
    has_train = np.zeros(int(inter["user"].max()) + 1 if len(inter) else 0, bool)
    has_train[inter.loc[inter["split"] == "train", "user"].to_numpy(np.int64)] = True
    drop = ~has_train[inter["user"].to_numpy(np.int64)]
    if drop.all():
        # nothing would be left to train on or evaluate: an empty dataset would only fail later, far from here
        raise DataError(where, "no user has a training interaction: every row is valid or test, so nothing "
                               "can be trained or evaluated")
    if not drop.any():
        return inter
    n_users = len(np.unique(inter["user"].to_numpy()[drop]))
    warnings.warn(f"{where}: dropped the {int(drop.sum())} held-out rows of {n_users} user(s) with no training "
                  "item (nothing can be learnt about them; METHOD.md §6)", UserWarning, stacklevel=3)
    return inter[~drop].reset_index(drop=True)


def check_split_overlap(inter: pd.DataFrame, path: Path, names: dict[str, str]) -> None:
    """DataError when a (user, item) pair sits in more than one split.

    Evaluation masks a user's training items, so a held-out pair also in train can never be hit and
    silently lowers recall; the data was split by the user, so it is refused rather than re-split.
    ``names`` maps each split to how the message names it (a file, or an ``x_label`` value).
    """
    both = inter.duplicated(["user", "item"], keep=False).to_numpy(bool)
    if not both.any():
        return
    sub = inter.loc[both, ["user", "item", "split"]].copy()
    sub["split"] = sub["split"].astype(str)
    rank = {s: i for i, s in enumerate(SPLITS)}
    sub = sub.sort_values("split", key=lambda c: c.map(rank), kind="stable")
    groups = sub.groupby(["user", "item"], sort=True)["split"].agg(lambda s: " and ".join(names[x] for x in s))
    kinds = groups.value_counts()
    shown = "; ".join(f"user {u} item {i} in {w}" for (u, i), w in groups.head(3).items())
    raise DataError(path, f"{len(groups)} (user, item) pairs appear in more than one split "
                          f"({', '.join(f'{k}: {v}' for k, v in kinds.items())}), e.g. {shown}; held-out "
                          "items the user already has in an earlier split can never be hit (evaluation "
                          "masks them): fix the split, each pair belongs to one split only")


# MMRec reads whatever columns its config names: RecBole-style ``name:type`` headers, and its overall.yaml
# default ``user_id:token`` / ``item_id:token``, are as much MMRec's format as the ``userID`` of its datasets.
_ALIASES = {"user_id": "userID", "item_id": "itemID"}
_ROLES = ("userID", "itemID", "rating", "timestamp", "x_label")


def _canonical_columns(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``df`` with headers such as ``userID:token``, ``user_id:token`` or ``x_label `` renamed to MMRec's
    ``userID`` … ``x_label``; a DataError when two columns would take one name. Plain headers are unchanged."""
    if all(c in df.columns for c in ("userID", "itemID", "x_label")):
        return df  # MMRec's own datasets: nothing to rename (and nothing else read differently)
    rename: dict[str, str] = {}
    for col in df.columns:
        base = str(col).strip().split(":", 1)[0].strip()
        base = _ALIASES.get(base, base)
        if base in _ROLES and base != col:
            rename[col] = base
    names = [rename.get(c, c) for c in df.columns]
    clash = sorted({n for n in names if names.count(n) > 1 and n in _ROLES})
    if clash:
        both = ", ".join(repr(c) for c in df.columns if rename.get(c, c) == clash[0])
        raise DataError(path, f"several columns give {clash[0]!r} ({both}); keep one")
    return df.rename(columns=rename)


def read_mapping(folder: Path, kind: str, n_seen: int) -> np.ndarray | None:
    """Original ids (as str) indexed by dense id, from MMRec's mapping file when there is one."""
    fname, dense_col = MAPPING_FILES[kind]
    path = folder / fname
    if not path.exists():
        return None
    df = read_table(path, sep="\t")
    if dense_col not in df.columns or len(df.columns) < 2:
        raise DataError(path, f"missing column {dense_col!r}; columns are {list(df.columns)}")
    orig_col = next(c for c in df.columns if c != dense_col)
    dense = _dense_ids(df, dense_col, path)
    n = int(dense.max()) + 1
    if len(np.unique(dense)) != len(dense) or n != len(dense):
        raise DataError(path, f"column {dense_col!r} is not a permutation of 0..{len(dense) - 1}")
    if n < n_seen:
        raise DataError(path, f"maps {n} {kind}s but the .inter file uses {kind} id {n_seen - 1} "
                              f"(unknown {kind} id)")
    missing = df[orig_col].isna().to_numpy(bool)
    if missing.any():
        # an empty cell would come back as NaN (or "nan"): an original id no lookup can match
        first = int(np.flatnonzero(missing)[0])
        raise DataError(path, f"column {orig_col!r} has {int(missing.sum())} empty {kind} ids "
                              f"(first at data row {first + 1}); each dense id needs its original id")
    original = df[orig_col].astype(str)
    dup = original.duplicated(keep=False).to_numpy(bool)
    if dup.any():
        # two dense ids for one original id: recommend/serve could not tell which is meant
        first = int(np.flatnonzero(dup)[0])
        raise DataError(path, f"column {orig_col!r} has {plural(int(dup.sum()), 'row', 'rows')} with repeated "
                              f"{kind} ids "
                              f"(first at data row {first + 1}: {original.iloc[first]!r}); each original id "
                              "maps to one dense id")
    out = np.empty(n, dtype=object)
    out[dense] = original.to_numpy()
    return out


def read_mmrec_features(folder: str | Path, n_items: int, item_ids: Any = None) -> dict[str, np.ndarray]:
    """``{"text": …, "image": …}`` for the feature files present, as float32, checked against ``n_items``
    rows by the feature store's one check (:func:`recgoat.features.loading.as_feature_matrix`), so a folder
    loads here only if ``recgoat encode import-mmrec`` accepts its features too; ``item_ids`` (one per row)
    name a refused row's original id."""
    # imported here: recgoat.features imports recgoat.datasets
    from recgoat.features.loading import as_feature_matrix, load_array

    folder = Path(folder)
    return {key: as_feature_matrix(folder / fname, load_array(folder / fname), n_items, ids=item_ids)
            for key, fname in FEATURE_FILES.items() if (folder / fname).exists()}


def feature_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The shape of each feature file present in ``folder`` (``text`` / ``image``), read from its header
    (memory-mapped: nothing is loaded); a DataError naming a file that is not a readable .npy array."""
    from recgoat.features.loading import load_array  # recgoat.features imports recgoat.datasets

    return {key: tuple(load_array(folder / fname, mmap=True).shape)
            for key, fname in FEATURE_FILES.items() if (folder / fname).exists()}


def catalogue_size(folder: Path, inter: Path, seen: int) -> int:
    """How many items a folder without ``i_id_mapping.csv`` has: ``seen`` (the largest itemID of ``inter``
    + 1), or more when its feature files agree on more rows (with a warning naming the ids).

    Why: items are numbered by the feature rows, and the items with the largest ids may have no interaction
    left in the ``.inter`` file (filtered out, or a catalogue larger than its interactions); their rows are
    the evidence that they exist, so they are kept as items with no interaction (as :func:`check_dense` keeps
    a gap below the largest id) rather than the feature files blamed for a row count "mismatch". A file with
    fewer rows than ``seen`` lacks rows for items that occur, and is the one refused (by
    :func:`read_mmrec_features`' row check, or here when a longer file would be read, and blamed, first).
    Files that disagree with each other above ``seen`` are refused here, naming both counts: which one is
    right cannot be told."""
    shapes = {key: shape for key, shape in feature_shapes(folder).items() if len(shape) == 2}
    rows = {key: shape[0] for key, shape in shapes.items()}
    short = [key for key, n in rows.items() if n < seen]
    if short and max(rows.values()) > seen:
        # the short file is the one certainly wrong: the row check would blame the longer one, if read first
        key = short[0]
        raise DataError(folder / FEATURE_FILES[key], f"shape {shapes[key]}, expected {seen} rows (one per item)")
    if not rows or short:
        return seen  # no files, or one short of rows: refused by the row check with "expected {seen} rows"
    if len(set(rows.values())) > 1:
        (k1, n1), (k2, n2) = rows.items()
        raise DataError(folder / FEATURE_FILES[k2],
                        f"{n2} rows, but {FEATURE_FILES[k1]} has {n1}: both hold one row per item, so they must "
                        f"agree (without {MAPPING_FILES['item'][0]} the items are numbered by these rows, and "
                        f"{inter.name} uses item ids up to {seen - 1})")
    n = next(iter(rows.values()))
    if n > seen:
        files = " and ".join(FEATURE_FILES[k] for k in rows)
        warnings.warn(f"{inter}: item ids {seen}..{n - 1} never occur, but {files} "
                      f"{'has' if len(rows) == 1 else 'have'} {n} rows: kept as {n - seen} item(s) with no "
                      f"interaction, which models still rank. If these rows are not this folder's items 0..{n - 1}, "
                      f"add the {MAPPING_FILES['item'][0]} naming each row's item", UserWarning, stacklevel=3)
    return n


def mmrec_feature_files(dataset: Dataset) -> dict[str, dict[str, Any]]:
    """``{kind: {"file", "rows", "dims"}}`` for the feature files an MMRec folder's dataset brings
    (``text_feat.npy`` / ``image_feat.npy``, as :func:`mmrec_feature_kinds` names them), read from their
    headers; ``{}`` for a dataset of another layout. What `recgoat datasets info` reports: such a folder
    holds no image files (``images`` counts those), but it does bring image (and text) features."""
    from recgoat.features.loading import load_array  # recgoat.features imports recgoat.datasets

    info = getattr(dataset, "info", None) or {}
    paths = info.get("features") if isinstance(info.get("features"), dict) else {}
    out: dict[str, dict[str, Any]] = {}
    for kind in mmrec_feature_kinds(dataset):
        if kind not in paths:
            continue
        path = Path(str(paths[kind]))
        if not path.exists():  # moved or deleted since the folder was read (the source of a prepared copy)
            out[kind] = {"file": str(path), "missing": True}
            continue
        shape = load_array(path, mmap=True).shape
        out[kind] = {"file": str(path), "rows": int(shape[0]) if shape else None,
                     "dims": int(shape[1]) if len(shape) == 2 else None}
    return out


def load_mmrec(folder: str | Path, name: str | None = None) -> Dataset:
    """Read an MMRec folder into a split :class:`Dataset` (split from ``x_label``), validating features.

    Items are numbered by ``i_id_mapping.csv`` when there is one; else they are 0..N-1 where N is the largest
    itemID + 1, or the feature files' row count when they agree on more (:func:`catalogue_size`): items with
    no interaction are catalogue items all the same."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    path = find_inter(folder, name)
    name = name or path.stem
    df = _canonical_columns(read_table(path, sep="\t"), path)
    for col in ("userID", "itemID", "x_label"):
        if col not in df.columns:
            # a comma- or space-separated file reads as one column named after its whole header line
            seps = [s for s in (",", ";", " ") if len(df.columns) == 1 and s in str(df.columns[0])]
            hint = (f"; MMRec's .inter file is tab-separated, but this header line holds {seps[0]!r}"
                    if seps else "")
            raise DataError(path, f"missing column {col!r}; columns are {list(df.columns)}{hint}")
    users = _dense_ids(df, "userID", path)
    items = _dense_ids(df, "itemID", path)
    # a label of -1, "test" or an empty cell was reported as bad "ids" only: say which values x_label takes
    labels = _dense_ids(df, "x_label", path, hint="; x_label must be 0, 1 or 2 (train/valid/test)")
    if (labels > 2).any():
        first = int(np.flatnonzero(labels > 2)[0])
        raise DataError(path, f"column 'x_label' must be 0, 1 or 2 (train/valid/test); "
                              f"data row {first + 1} has {labels[first]}")
    inter = pd.DataFrame({"user": users, "item": items})
    if "rating" in df.columns:
        inter["rating"] = _numeric(df, "rating", path, np.float32)
    if "timestamp" in df.columns:
        inter["timestamp"] = timestamps(df, "timestamp", path)  # inf or 1e20 would wrap around in int64
    inter["split"] = pd.Categorical.from_codes(labels, categories=list(SPLITS))
    inter = drop_split_duplicates(inter, str(path))
    check_split_overlap(inter, path, {s: f"{s} (x_label {i})" for i, s in enumerate(SPLITS)})
    inter = drop_held_out_without_train(inter, path)

    user_ids = read_mapping(folder, "user", int(users.max()) + 1)
    item_ids = read_mapping(folder, "item", int(items.max()) + 1)
    # without a mapping file the ids are numbered 0..max: refuse sparse ids before allocating that many
    if user_ids is None:
        check_dense(users, "user", path)
        user_ids = np.arange(int(users.max()) + 1).astype(str).astype(object)
    if item_ids is None:
        check_dense(items, "item", path)
        n_items = catalogue_size(folder, path, int(items.max()) + 1)
        item_ids = np.arange(n_items).astype(str).astype(object)
    features = read_mmrec_features(folder, len(item_ids), item_ids)  # validates rows and NaNs up front
    info = {"source": str(folder.resolve()), "layout": "mmrec",
            "features": {k: str((folder / FEATURE_FILES[k]).resolve()) for k in features}}
    return Dataset(name=name, interactions=inter, user_ids=user_ids, item_ids=item_ids,
                   items=pd.DataFrame({"item_id": item_ids}), text_fields=[], info=info)


def mmrec_feature_kinds(dataset) -> tuple[str, ...]:
    """The feature kinds (``text``, ``image``) an MMRec folder's dataset brings as ``text_feat.npy`` /
    ``image_feat.npy``; none for a dataset of another layout."""
    info = getattr(dataset, "info", None) or {}
    return tuple(info.get("features") or ()) if info.get("layout") == "mmrec" else ()


def save_mmrec(dataset: Dataset, folder: str | Path,
               features: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``dataset`` in MMRec's layout; ``features`` maps ``text``/``image`` to (items × dims) arrays.

    Returns the path of the written ``.inter`` file.
    """
    folder = Path(folder)
    if not dataset.has_split:
        raise DataError(None, f"dataset {dataset.name!r} has no split; MMRec's x_label needs one")
    name = str(dataset.name)
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        # MMRec names the .inter file after the dataset: "../x" or "a/b" wrote outside the folder
        raise DataError(folder, f"dataset name {name!r} is not a file name, and MMRec names the .inter file after "
                                f"it; give the dataset a plain name")
    features = features or {}
    unknown = set(features) - set(FEATURE_FILES)
    if unknown:
        raise ValueError(f"unknown feature keys {sorted(unknown)}; expected {sorted(FEATURE_FILES)}")
    for key, arr in features.items():
        if np.ndim(arr) != 2 or len(arr) != dataset.n_items:
            raise DataError(FEATURE_FILES[key], f"has shape {np.shape(arr)} but the dataset has "
                                                f"{dataset.n_items} items")
    df = dataset.interactions
    split = df["split"].astype(str)
    if not split.isin(SPLITS).all():
        raise DataError(None, f"split column holds values other than {SPLITS}")
    out = pd.DataFrame({"userID": df["user"].to_numpy(np.int64), "itemID": df["item"].to_numpy(np.int64)})
    for col in ("rating", "timestamp"):
        if col in df.columns:
            out[col] = df[col].to_numpy()
    # Categorical codes follow SPLITS order only if the categories do: map by name instead.
    out["x_label"] = split.map({s: i for i, s in enumerate(SPLITS)}).to_numpy(np.int64)
    for kind, ids in (("user", dataset.user_ids), ("item", dataset.item_ids)):
        empty = [i for i, v in enumerate(map(str, ids)) if not v]
        if empty:  # written as an empty cell, which load_mmrec refuses: refused here, before any file changes
            raise DataError(folder / MAPPING_FILES[kind][0], f"{len(empty)} {kind} id(s) are empty (first at "
                                                             f"internal {kind} {empty[0]}): MMRec's mapping "
                                                             "files cannot hold an empty id")
    folder.mkdir(parents=True, exist_ok=True)
    inter_path = folder / f"{dataset.name}.inter"
    with atomic_path(inter_path) as tmp:
        out.to_csv(tmp, sep="\t", index=False)
    for kind, ids in (("user", dataset.user_ids), ("item", dataset.item_ids)):
        fname, dense_col = MAPPING_FILES[kind]
        orig_col = "asin" if kind == "item" else "user_id"  # MMRec's own column names
        with atomic_path(folder / fname) as tmp:
            pd.DataFrame({orig_col: list(map(str, ids)), dense_col: np.arange(len(ids))}).to_csv(
                tmp, sep="\t", index=False)
    for key, arr in features.items():
        with atomic_path(folder / FEATURE_FILES[key]) as tmp:
            # np.save appends .npy to names without it; write through a file object to keep tmp's name
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(arr, dtype=np.float32))
    return inter_path
