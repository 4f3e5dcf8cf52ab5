"""MMRec interop: a feature folder's matrices to and from MMRec's ``text_feat.npy`` / ``image_feat.npy``.

MMRec (and the paper's data) ship item features as row-per-itemID matrices beside ``i_id_mapping.csv``;
:func:`import_mmrec` aligns such matrices to a dataset's items and writes them into a feature folder with
manifests, as an encode would (``features: auto`` imports an MMRec folder's own first), and
:func:`export_mmrec` writes a feature folder in MMRec's layout, with or without the dataset at hand (the rows'
items are recorded in ``item_ids.json``, :func:`record_item_ids`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from recgoat.datasets import Dataset
from recgoat.datasets.mmrec import FEATURE_FILES as MMREC_FILES
from recgoat.datasets.mmrec import MAPPING_FILES as MMREC_MAPPINGS, read_mapping
from recgoat.errors import DataError, RecGOATError
from recgoat.features.loading import _FILE, _checked_matrix, as_feature_matrix, load_array, read_manifest
from recgoat.features.store import _key, _locked_output, _manifest, _writing_into, save_array, write_matrix
from recgoat.words import agree, plural
from recgoat.io import atomic_path, read_json


# MMRec's record of its row order: original item id -> itemID = the row of text_feat.npy / image_feat.npy
MMREC_MAPPING, _MMREC_DENSE = MMREC_MAPPINGS["item"]
# in a feature folder: which item each row of text.npy / image.npy is, so that an export without the dataset
# can still write MMRec's mapping (a manifest names the dataset, not its items)
ITEM_IDS_FILE = "item_ids.json"


def _item_mapping(folder: Path) -> np.ndarray | None:
    """The original item ids of ``folder``'s ``i_id_mapping.csv``, indexed by row (itemID), or None without
    one; a malformed one (a column missing, repeated or empty ids, itemIDs not 0..n-1) is the DataError of
    :func:`recgoat.datasets.mmrec.read_mapping`, naming the file."""
    path = folder / MMREC_MAPPING
    if not path.exists():
        return None
    try:
        ids = read_mapping(folder, "item", 0)
    except OSError as e:  # a folder by that name, no permission: one line, not a traceback
        raise DataError(path, f"not readable: {e.strerror or e}") from None
    return np.asarray(ids).astype(str)


def _rows_by_id(ids: np.ndarray, by_row: np.ndarray) -> np.ndarray:
    """For each of ``ids``, its row in ``by_row`` (the ids of a file's rows, unique), or -1; vectorised."""
    return pd.Index(by_row).get_indexer(pd.Index(np.asarray(ids).astype(str)))


def _row_number_ids(n: int) -> np.ndarray:
    """The ids ``"0" .. "n-1"``: an MMRec folder without a mapping names its items by their rows."""
    return np.arange(n).astype(str)


def _is_source(dataset: Dataset, folder: Path) -> bool:
    """Whether ``dataset`` was read from the MMRec ``folder`` itself (:func:`recgoat.datasets.mmrec.load_mmrec`)."""
    info = dataset.info or {}
    source = info.get("source")
    return info.get("layout") == "mmrec" and source is not None and Path(str(source)).resolve() == folder.resolve()


def record_item_ids(out: Path, dataset: Dataset, fp: str) -> None:
    """Write ``item_ids.json`` into the feature folder ``out``: ``dataset``'s item ids in row order, under its
    fingerprint ``fp``, for :func:`export_mmrec` without the dataset. Unchanged when it already holds them."""
    path = out / ITEM_IDS_FILE
    try:
        old = read_json(path)
        if isinstance(old, dict) and old.get("dataset_fingerprint") == fp:
            return  # the fingerprint covers the item ids
    except (OSError, ValueError):
        pass
    text = json.dumps({"dataset": dataset.name, "dataset_fingerprint": fp,
                       "item_ids": [str(i) for i in dataset.item_ids]})
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def _recorded_item_ids(folder: Path, fps: set[Any], names: str) -> tuple[np.ndarray | None, Path, str]:
    """The item ids ``folder``'s ``item_ids.json`` records for the matrices ``names`` (made for the dataset
    fingerprints ``fps``), as ``(ids, path, "")``; else ``(None, file, why)``: why they cannot be taken, for
    :func:`_unknown_rows` to say, naming ``file``."""
    path = folder / ITEM_IDS_FILE
    try:
        rec = read_json(path)
    except FileNotFoundError:
        return None, folder, f"holds no {ITEM_IDS_FILE} (features made by an older recgoat)"
    except (OSError, ValueError) as e:
        return None, path, f"not readable ({e})"
    ids = rec.get("item_ids") if isinstance(rec, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None, path, "holds no list of item ids"
    made_for = rec.get("dataset_fingerprint")
    if len(fps) != 1 or made_for not in fps:
        return None, path, (f"records the items of dataset fingerprint {made_for}, but {names} "
                            f"{'were made for ' + ', '.join(map(str, sorted(fps, key=str)))}")
    return np.asarray(ids, dtype=object), path, ""


def _unknown_rows(folder: Path, names: str, path: Path, why: str, searched: str) -> DataError:
    """The refusal of an export whose rows' items are unknown: ``why`` (of ``path``), then that the mapping
    cannot be written, where the dataset was looked for (``searched``), and to pass the dataset."""
    return DataError(path, f"{why}, so which item each row of {names} is cannot be known, and MMRec's "
                           f"{MMREC_MAPPING} cannot be written{'; ' + searched if searched else ''}; pass the "
                           f"dataset they were made for (`recgoat encode export-mmrec {folder} --dataset DATASET`, "
                           f"or export_mmrec(..., dataset=...))")


def dataset_of_features(manifests: list[dict]) -> tuple[Dataset | None, str]:
    """The dataset feature matrices were made for, found from what their ``manifests`` record, and how it was
    found; else (None, where it was looked for in vain).

    Why: a feature folder written before ``item_ids.json`` existed does not say which item each row is, but
    its manifests name the dataset (``dataset``: a name such as ``ml-latest-small``, or a folder's name) and
    its fingerprint, and an imported matrix the MMRec folder it came from (``imported_from``). Each candidate
    (that folder when it holds an MMRec dataset; the name when it is a known dataset name or a folder here) is
    loaded as `recgoat encode` loads it and taken only if its fingerprint is the recorded one, so another
    dataset, other data or other preparation options are never taken for it."""
    from recgoat.datasets import load
    from recgoat.datasets.registry import EMBEDDED, SHARED, presplit_layout

    fps = {m.get("dataset_fingerprint") for m in manifests}
    named = sorted({str(m["dataset"]) for m in manifests if isinstance(m.get("dataset"), str) and m["dataset"]})
    if len(fps) != 1 or None in fps:
        return None, ""  # no single fingerprint to match: _recorded_item_ids' own refusal says why
    fp = next(iter(fps))
    candidates: list[str] = []
    for m in manifests:
        source = m.get("imported_from")
        if isinstance(source, str) and source and presplit_layout(Path(source).parent) == "MMRec":
            candidates.append(str(Path(source).parent))  # the MMRec folder, which import-mmrec may have read
    for name in named:
        if name in EMBEDDED or name in SHARED or Path(name).is_dir():
            candidates.append(name)
    tried: list[str] = []
    for cand in dict.fromkeys(candidates):
        try:
            with warnings.catch_warnings():
                # a candidate's loading notes (dropped rows, gaps) are about that dataset, not this export
                warnings.simplefilter("ignore")
                ds = load(cand)
            got = ds.fingerprint()
        except (RecGOATError, OSError) as e:
            tried.append(f"{cand!r} did not load ({e})")
            continue
        if got == fp:
            return ds, f"dataset {ds.name} ({cand}), whose fingerprint {fp} the manifests record"
        tried.append(f"{cand!r} has fingerprint {got} (other data, or prepared with other options)")
    what = f"the manifests name dataset {' and '.join(repr(n) for n in named) or '(none)'} of fingerprint {fp}"
    if not tried:
        return None, f"{what}, neither a known dataset name nor a folder here"
    return None, f"{what}, not found: {'; '.join(tried)}"


def _export_rows(dest: Path, ids: np.ndarray, folder: Path) -> tuple[np.ndarray | None, bool]:
    """How to write features whose rows are the items ``ids`` into ``dest``: (for each row written, the
    feature row it copies, or None for all rows as they are; whether to write ``i_id_mapping.csv``).

    A folder holding an MMRec dataset (a ``.inter`` file) numbers its items already: by its
    ``i_id_mapping.csv``, else by the item ids themselves (its itemIDs are the rows); the rows are put in that
    order and the mapping is left as it is (rewriting it would renumber the items of the ``.inter`` file).
    Anywhere else the rows stay in the features' order and the mapping is written to record it."""
    inter = sorted(dest.glob("*.inter")) if dest.is_dir() else []
    if not inter:
        return None, True
    mapping = _item_mapping(dest)
    by_row = mapping if mapping is not None else _row_number_ids(len(ids))
    rows = _rows_by_id(by_row, np.asarray(ids).astype(str))
    lost = np.flatnonzero(rows < 0)
    if len(lost) and mapping is None:
        raise DataError(dest, f"holds MMRec's {inter[0].name} without {MMREC_MAPPING}: its itemIDs are the rows of "
                              f"the feature files, and the items of {folder} are not numbered so (e.g. "
                              f"{str(ids[0])!r}); add the folder's {MMREC_MAPPING}, or export into another folder")
    if len(lost):
        raise DataError(dest / MMREC_MAPPING, f"{len(lost)} of its {plural(len(by_row), 'item')} "
                                              f"{agree(len(lost), 'has', 'have')} no row in the features of {folder} "
                                              f"(e.g. {str(by_row[lost[0]])!r}): they were made for another "
                                              f"catalogue")
    return rows, False


def has_exportable(folder: Path) -> bool:
    """Whether ``folder`` holds a ``text.npy`` or ``image.npy`` for :func:`export_mmrec` to write."""
    return any((folder / f"{kind}.npy").is_file() for kind in MMREC_FILES)


def check_export_source(folder: str | Path) -> None:
    """A DataError unless ``folder`` is a feature folder holding a matrix to export: the first check of
    :func:`export_mmrec`, which `recgoat encode export-mmrec` makes before loading its ``--dataset``.

    Why: nothing to export is an error, not a success that wrote nothing: a mistyped folder returned ``[]``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such feature folder")
    if not has_exportable(folder):
        raise DataError(folder, "holds no text.npy or image.npy to export; run `recgoat encode text` or "
                                "`recgoat encode image` first")


def check_import_source(src: str | Path) -> None:
    """A DataError unless ``src`` is a folder: the first check of :func:`import_mmrec`, which `recgoat encode
    import-mmrec` makes before loading its dataset. Why: a mistyped folder was said to hold no feature files."""
    if not Path(src).is_dir():
        raise DataError(src, "no such folder")


def export_mmrec(folder: str | Path, dest: str | Path, dataset: Dataset | None = None,
                 on_notice: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``text_feat.npy`` / ``image_feat.npy`` (MMRec's layout: row = item index, float32) and MMRec's
    ``i_id_mapping.csv`` recording which item each row is; returns the files written.

    Every source is checked as load_features checks it (:func:`_checked_matrix`: its own kind's manifest,
    made for ``dataset`` when given, a finite floating matrix of the manifest's shape) before anything is
    written, so a bad one gives load_features' error and no half export. The rows' items are ``dataset``'s,
    else those the folder records (``item_ids.json``, for the same data as the manifests), else those of the
    dataset the manifests name, when it is found with their fingerprint (:func:`dataset_of_features`;
    ``on_notice`` is told which). Into a folder that holds an MMRec dataset (a ``.inter`` file) the rows
    follow its own numbering (:func:`_export_rows`). A folder that is not there or holds neither matrix is a
    DataError (:func:`check_export_source`)."""
    folder, dest = Path(folder), Path(dest)
    check_export_source(folder)
    fp = dataset.fingerprint() if dataset is not None else None
    todo, fps, mans = [], set(), []
    for kind, name in MMREC_FILES.items():
        if not (folder / f"{kind}.npy").exists():
            continue
        rows = dataset.n_items if dataset is not None else None  # no dataset: the manifest's row count
        # `encode image --mmrec` exported a text.npy left from another dataset (or older data) beside it
        arr, man = _checked_matrix(folder, kind, fp, rows, "not exported: ", rows_from_manifest=True,
                                   ids=dataset.item_ids if dataset is not None else None,
                                   name=dataset.name if dataset is not None else None)
        todo.append((dest / name, arr))
        fps.add(man.get("dataset_fingerprint"))
        mans.append(man)
    order, write_mapping = None, False
    if todo:
        names = " and ".join(f"{k}.npy" for k in MMREC_FILES if (folder / f"{k}.npy").exists())
        if dataset is not None:
            ids = np.asarray(dataset.item_ids)
        else:
            recorded, path, why = _recorded_item_ids(folder, fps, names)
            if recorded is not None:
                ids = recorded
            else:
                # an older folder: the dataset its manifests name, when found with their fingerprint, names the rows
                found, how = dataset_of_features(mans)
                if found is None:
                    raise _unknown_rows(folder, names, path, why, how)
                ids = np.asarray(found.item_ids)
                if on_notice is not None:
                    on_notice(f"{folder}: {why}; its rows are the items of {how}")
        if len({arr.shape[0] for _, arr in todo} | {len(ids)}) != 1:
            raise DataError(folder / ITEM_IDS_FILE, f"records {plural(len(ids), 'item')}, but {names} hold "
                                                    f"{', '.join(str(a.shape[0]) for _, a in todo)} rows; "
                                                    f"re-run `recgoat encode`")
        order, write_mapping = _export_rows(dest, ids, folder)
        empty = np.flatnonzero(np.asarray(ids).astype(str) == "")
        if write_mapping and len(empty):  # load_mmrec and import_mmrec refuse an empty original id
            raise DataError(dest / MMREC_MAPPING, f"{plural(len(empty), 'item id')} {agree(len(empty), 'is', 'are')} "
                                                  f"empty (first at row {empty[0]}): MMRec's mapping cannot hold an "
                                                  f"empty id")
    with _writing_into(dest, "the export destination"):
        if write_mapping:
            # the old mapping goes first, the new one comes last: a run killed between leaves rows without a
            # mapping (refused by import_mmrec), never new rows under another catalogue's mapping
            (dest / MMREC_MAPPING).unlink(missing_ok=True)
        for path, arr in todo:
            save_array(path, arr if order is None else arr[order])
        if write_mapping:
            with atomic_path(dest / MMREC_MAPPING) as tmp:
                pd.DataFrame({"asin": np.asarray(ids).astype(str), _MMREC_DENSE: np.arange(len(ids))}).to_csv(
                    tmp, sep="\t", index=False)
    return [path for path, _ in todo] + ([dest / MMREC_MAPPING] if write_mapping else [])


def import_mmrec(dataset: Dataset, src: str | Path, out_dir: str | Path) -> Path:
    """Turn MMRec-layout ``text_feat.npy`` / ``image_feat.npy`` into a feature folder with manifests, each
    row put on its own item. An all-zero image row is taken as a missing image.

    Why the alignment: MMRec numbers items in order of first appearance and records it in
    ``i_id_mapping.csv`` (original id, itemID = row), while a dataset prepared from raw files is numbered in
    sorted id order; copying the rows in file order put 119 of Amazon-Baby's 120 test items on another
    item's features. So with a mapping the rows are reordered to ``dataset.item_ids`` by original id (every
    item of the dataset must be in it; it may hold more). Without one, only a dataset whose item ids are the
    row numbers 0..n-1 (an MMRec folder read as the dataset, whose ids are its rows) is accepted; any other
    is refused, its row order unknown. Each manifest records how its rows were aligned (``row_alignment``).
    A ``src`` that is not a folder is a DataError (:func:`check_import_source`)."""
    src, out = Path(src), Path(out_dir)
    check_import_source(src)
    files = [(kind, name, src / name) for kind, name in MMREC_FILES.items() if (src / name).exists()]
    if not files:
        raise DataError(src, "no text_feat.npy or image_feat.npy in this folder")
    mapping = _item_mapping(src)
    ids = np.asarray(dataset.item_ids).astype(str)
    by_number = _rows_by_id(ids, _row_number_ids(len(ids)))  # each id's row when the ids are the row numbers
    numbered = bool((by_number >= 0).all())  # ids a permutation of 0..n-1
    # the ids of the files' rows, as far as known: a refused row is named by its own id, never another item's
    by_row = mapping if mapping is not None else (_row_number_ids(len(ids)) if numbered else None)
    # both files are checked before either is written: a bad image_feat.npy leaves no half import
    found = []
    for kind, name, path in files:
        arr = load_array(path)
        if mapping is not None and arr.ndim == 2 and arr.shape[0] != len(mapping):
            raise DataError(path, f"shape {arr.shape}, expected {len(mapping)} rows: one per item of {MMREC_MAPPING}")
        rows = len(mapping) if mapping is not None else dataset.n_items
        found.append((kind, name, path, as_feature_matrix(path, arr, rows, ids=by_row)))
    names = " and ".join(name for _, name, _ in files)
    if mapping is not None:
        order = _rows_by_id(ids, mapping)
        lost = np.flatnonzero(order < 0)
        if len(lost):
            raise DataError(src / MMREC_MAPPING, f"{len(lost)} of the {plural(len(ids), 'item')} of dataset "
                                                 f"{dataset.name} {agree(len(lost), 'is', 'are')} not in it (e.g. "
                                                 f"{str(ids[lost[0]])!r}), so {agree(len(lost), 'its', 'their')} rows "
                                                 f"of {names} cannot be found: the features describe another catalogue")
        how = {"by": MMREC_MAPPING, "mapping": str((src / MMREC_MAPPING).resolve()), "file_rows": len(mapping)}
    elif numbered:
        order = by_number
        how = {"by": "row numbers: " + ("the dataset is this MMRec folder, whose item ids are its rows"
                                        if _is_source(dataset, src) else "the dataset's item ids are 0..n-1"),
               "file_rows": len(ids)}
    else:
        raise DataError(src, f"no {MMREC_MAPPING} beside {names}, so which item each row describes cannot be "
                             f"known: MMRec numbers items in its own order (first appearance in the raw data), and "
                             f"the items of dataset {dataset.name} are not numbered by row (e.g. {str(ids[0])!r}); add "
                             f"the {MMREC_MAPPING} MMRec wrote with these features (tab-separated: original item id, "
                             f"then {_MMREC_DENSE} = its row)")
    how["rows_moved"] = int((order != np.arange(len(order))).sum())
    fp = dataset.fingerprint()
    with _writing_into(out, "the import output"), _locked_output(out):
        for kind, name, path, arr in found:
            _import_one(dataset, fp, kind, name, path, arr[order], out, how)
        record_item_ids(out, dataset, fp)
    return out


def _imported_already(out: Path, kind: str, key: str, arr: np.ndarray) -> bool:
    """Whether ``out`` already holds this import: the same key (source, data, alignment) and the same values.
    Why: ``features: auto`` imports an MMRec folder's matrices on every run; rewriting identical files (an image
    matrix of 7,050 × 4,096 on Amazon Baby) under a folder other runs may be reading gained nothing. The key
    does not cover the source's contents, so the values are compared too (a source edited in place is
    re-imported)."""
    try:
        man = read_manifest(out / f"{_FILE[kind]}.json")
        if man.get("key") != key or (kind == "image" and not (out / "image_mask.npy").exists()):
            return False
        old = load_array(out / f"{_FILE[kind]}.npy", mmap=True)
    except (DataError, OSError, ValueError):
        return False  # absent or unreadable: written afresh
    return old.shape == arr.shape and old.dtype == arr.dtype and bool(np.array_equal(old, arr))


def _import_one(dataset: Dataset, fp: str, kind: str, name: str, path: Path, arr: np.ndarray, out: Path,
                how: dict[str, Any]) -> None:
    """Write one imported matrix (rows already in the dataset's item order, aligned as ``how`` says) and
    for images the mask into ``out``, its manifest last; ``fp``: the dataset's fingerprint."""
    key = _key({"imported": str(path.resolve()), "fp": fp, "shape": arr.shape, "rows": how})
    if _imported_already(out, kind, key, arr):
        return
    extra: dict[str, Any] = {"imported_from": str(path.resolve()), "row_alignment": how}
    beside = {}
    if kind == "image":
        mask = np.abs(arr).sum(axis=1) > 0
        beside["image_mask.npy"] = mask
        extra["images"] = {"ok": int(mask.sum()), "missing": int((~mask).sum())}
    write_matrix(out, kind, arr, _manifest(kind, dataset, fp, arr, f"imported from MMRec ({name})", key, **extra),
                 beside)
