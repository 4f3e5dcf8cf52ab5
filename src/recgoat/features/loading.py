"""Reading feature matrices back, checked: one check behind every reader.

:func:`load_features` (a model's features, the CLI's ``--features``), MMRec's export and the encoder's "up to
date" all go through :func:`_checked_matrix`, so a matrix one of them refuses (rows other than the dataset's, NaN
or inf, a missing or edited manifest, another dataset's fingerprint) is refused, or re-made, by all; and
:func:`check_feature_matrix` checks the matrices a user hands the models from Python alike. Every problem is a
:class:`~recgoat.errors.DataError` naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recgoat.datasets import Dataset
from recgoat.datasets.mmrec import FEATURE_FILES as MMREC_FILES
from recgoat.errors import DataError
from recgoat.io import read_json


@dataclass
class Features:
    """The feature matrices of one dataset (rows = internal item / user ids) and their manifests."""

    text: np.ndarray | None = None
    image: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    profile: np.ndarray | None = None
    manifests: dict[str, dict] = field(default_factory=dict)


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """The array in ``path`` (memory-mapped read-only with ``mmap``), or a DataError naming the file."""
    try:
        with open(path, "rb") as f:
            # checked first: for any other file numpy says it "contains pickled (object) data"
            if f.read(6) != b"\x93NUMPY":
                raise DataError(path, "not a .npy file (no NumPy header); save it with numpy.save")
            _check_npy_size(path, f)
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable .npy array: {exc}") from exc


def _check_npy_size(path: Path, f) -> None:
    """A DataError when the data the header announces is not all in the file (a copy cut short, a damaged
    header): numpy would first try to allocate it all, a bare MemoryError for a shape gone wrong."""
    from numpy.lib import format as npy_format

    f.seek(0)
    major, minor = npy_format.read_magic(f)
    reader = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get((major, minor))
    if reader is None:  # a newer format version: numpy itself says what it makes of it
        return
    shape, _, dtype = reader(f)
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False) with its own message
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = os.fstat(f.fileno()).st_size - f.tell()
    if have < need:
        raise DataError(path, f"truncated or damaged .npy: its header announces shape {shape} {dtype} "
                              f"({need:,} bytes of data) but the file holds {have:,}; write it again")


_FILE = {"text": "text", "image": "image", "users": "profile", "profile": "profile"}


# the matrix files load_features reads, by the Features attribute each fills
FEATURE_FILES = {kind: f"{_FILE[kind]}.npy" for kind in ("text", "image", "profile")}


def read_manifest(path: Path) -> dict:
    """A manifest as a dict, or a DataError naming the file (unreadable, not JSON, or not an object)."""
    try:
        man = read_json(path)
    except (OSError, ValueError) as exc:  # ValueError covers JSON and UTF-8 decoding errors
        raise DataError(path, f"manifest is not readable JSON: {exc}") from exc
    if not isinstance(man, dict):
        raise DataError(path, f"manifest is a JSON {type(man).__name__}, not an object; re-run `recgoat encode`")
    return man


class FingerprintMismatch(DataError):
    """A feature file made for another dataset fingerprint: ``mismatch`` says whose and which, apart from the
    store's advice (re-encode), which callers that know the cause replace (a run preparing the data with options of
    its own, a benchmark given another dataset's folder) without parsing the message. ``other_dataset``: the
    manifest names another dataset than the one loading it (not the same one's data changed since encoding)."""

    def __init__(self, path: str | Path, mismatch: str, advice: str, other_dataset: bool = False):
        self.mismatch = mismatch
        self.other_dataset = other_dataset
        super().__init__(path, f"{mismatch}: {advice}")


class FeatureMatrixError(ValueError):
    """What is wrong with a feature matrix (:func:`check_feature_matrix`); callers turn it into a
    :class:`DataError` naming the file, or the model and matrix, it came from."""


def _first_row(row: int, per: str, ids: Any = None) -> str:
    """How a refusal names a matrix row: ``row 5, item_id '1022'`` when the dataset's ids (row order) are
    known, else ``row 5``. Why: the row index was printed as ``item 5``, read as item id 5."""
    if ids is None or not 0 <= row < len(ids):
        return f"row {row}"
    return f"row {row}, {per}_id {str(ids[row])!r}"


def _not_2d(shape: tuple[int, ...], rows: int | None, per: str) -> str:
    """The refusal of an array that is not 2-D. Why: a 1-D array of one value per item was told "shape (60,),
    expected 60 rows", which it has; what it lacks is the second axis (the feature dimensions)."""
    if rows is None:
        return f"shape {shape}, expected a 2-D matrix (one row per {per})"
    return (f"shape {shape} is {len(shape)}-D, expected a 2-D matrix: {rows} rows (one per {per}) x feature "
            f"dimensions")


def check_feature_matrix(x: Any, rows: int | None = None, per: str = "item", ids: Any = None) -> np.ndarray:
    """``x`` as a float32 feature matrix: 2-D with ``rows`` rows (when given; one per ``per``), at least
    one column, an integer or floating dtype, every value finite; else :class:`FeatureMatrixError`.
    ``ids`` (the dataset's ``item_ids`` / ``user_ids``, one per row) lets a refusal name a row's id.

    The one check behind feature files (:func:`as_feature_matrix`) and features handed to a model from
    Python (``recgoat.models.modalities.feature_matrix``), so both refuse the same matrices."""
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise FeatureMatrixError(f"not a matrix: {e}") from None
    if arr.ndim != 2:
        raise FeatureMatrixError(_not_2d(arr.shape, rows, per))
    if rows is not None and arr.shape[0] != rows:
        raise FeatureMatrixError(f"shape {arr.shape}, expected {rows} rows (one per {per})")
    if arr.shape[1] == 0:
        raise FeatureMatrixError(f"shape {arr.shape}: no feature columns")
    # bool and complex would cast silently (True → 1.0, the imaginary part dropped)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FeatureMatrixError(f"dtype {arr.dtype} is not a number type (expected float32)")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused just below
        arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        first = _first_row(int(np.flatnonzero(bad)[0]), per, ids)
        n = int(bad.sum())
        raise FeatureMatrixError(f"{n} {'row holds' if n == 1 else 'rows hold'} NaN or inf (first: {first})")
    return arr


def as_feature_matrix(path: Path, arr: np.ndarray, rows: int | None = None, who: str = "item",
                      ids: Any = None) -> np.ndarray:
    """:func:`check_feature_matrix`, its refusal a :class:`DataError` naming ``path``."""
    try:
        return check_feature_matrix(arr, rows, who, ids)
    except FeatureMatrixError as e:
        raise DataError(path, str(e)) from None


def _checked_matrix(folder: Path, kind: str, fp: str | None, rows: int | None, refused: str = "",
                    mmap: bool = False, rows_from_manifest: bool = False,
                    ids: Any = None, name: str | None = None) -> tuple[np.ndarray, dict]:
    """``kind``'s matrix in ``folder`` as float32, and its manifest, both checked; else a DataError naming
    the file. The one check behind load_features, export_mmrec and the encoder's "up to date", so a matrix
    one of them refuses is refused (or re-made) by all.

    The manifest must exist, be ``kind``'s and (``fp`` given) name that dataset fingerprint; the array must
    be a finite floating 2-D matrix of ``rows`` rows (when given) and the manifest's shape. ``refused`` goes
    before the advice of a fingerprint error (export's "not exported: "). ``rows_from_manifest`` (export
    without a dataset): with ``rows`` None, the manifest's own row count (an int) is the one expected, read
    from the manifest checked here rather than from a second read of it. ``ids`` (the dataset's, one per
    row) name the first non-finite row's id. ``name``: the dataset's name, for a fingerprint refusal of features
    whose manifest names another dataset (told as such, not as "the data changed since encoding")."""
    who = "user" if kind == "users" else "item"
    arr_path, man_path = folder / f"{_FILE[kind]}.npy", folder / f"{_FILE[kind]}.json"
    # no manifest: a replacement cut short (write_matrix drops it first) or a file put there by hand
    if not man_path.exists():
        raise DataError(man_path, f"manifest missing for {arr_path.name}; re-run `recgoat encode`")
    man = read_manifest(man_path)
    # another kind's pair copied in its place (text.npy + text.json over image.*) matches in rows and shape
    if man.get("kind", kind) != kind:
        raise DataError(man_path, f"is the manifest of {man.get('kind')} features ({man.get('file')}), "
                                  f"not of {arr_path.name}: files copied in their place; re-run `recgoat encode`")
    if fp is not None and man.get("dataset_fingerprint") != fp:
        made_for = man.get("dataset")
        if name is not None and isinstance(made_for, str) and made_for and made_for != name:
            # another dataset altogether: nothing changed, and re-encoding this folder would overwrite its features
            raise FingerprintMismatch(man_path, f"features encoded for dataset {made_for}, not for dataset {name} "
                                                f"(dataset fingerprint {man.get('dataset_fingerprint')}, this "
                                                f"dataset's is {fp})",
                                      f"{refused}encode dataset {name}'s own features, `recgoat encode all {name} "
                                      f"--out DIR` (or use --features auto)", other_dataset=True)
        raise FingerprintMismatch(man_path, f"made for dataset fingerprint {man.get('dataset_fingerprint')} "
                                            f"({made_for}), but this dataset's is {fp}",
                                  f"the data changed since encoding; {refused}re-run `recgoat encode {kind}`")
    if rows is None and rows_from_manifest and type(man.get("rows")) is int:
        rows = man["rows"]
    arr = load_array(arr_path, mmap)
    if arr.ndim != 2:
        raise DataError(arr_path, _not_2d(arr.shape, rows, who))
    if rows is not None and arr.shape[0] != rows:
        raise DataError(arr_path, f"shape {arr.shape}, expected {rows} rows (one per {who}) for {rows} {who}s")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(arr_path, f"dtype {arr.dtype} is not floating point")
    # the manifest describes one file: another one put in its place (text.npy copied over image.npy,
    # an edit) has the dataset's row count but not the manifest's shape
    if arr.shape != (man.get("rows"), man.get("dim")):
        raise DataError(arr_path, f"shape {arr.shape}, but its manifest {man_path.name} says "
                                  f"({man.get('rows')}, {man.get('dim')}): the file was replaced or edited "
                                  f"after encoding; re-run `recgoat encode`")
    return as_feature_matrix(arr_path, arr, rows, who, ids), man


def _checked_mask(folder: Path, rows: int, mmap: bool = False) -> np.ndarray:
    """``image_mask.npy`` beside image.npy: a bool vector of ``rows``; else a DataError naming it."""
    mask_path = folder / "image_mask.npy"
    if not mask_path.exists():
        raise DataError(mask_path, "image mask missing beside image.npy; re-run `recgoat encode image`")
    mask = load_array(mask_path, mmap)
    if mask.shape != (rows,):
        raise DataError(mask_path, f"shape {mask.shape}, expected ({rows},)")
    if mask.dtype != bool:  # casting would read any non-zero value (0.5, -1) as "has an image"
        raise DataError(mask_path, f"dtype {mask.dtype}, expected bool (True where the item has an image)")
    return mask


def load_features(dataset: Dataset, folder: str | Path) -> Features:
    """Read and validate the feature matrices in ``folder`` for ``dataset``.

    Raises :class:`DataError` naming the file when rows do not match the dataset, values are not finite,
    a manifest is missing, or the manifest's dataset fingerprint is not ``dataset.fingerprint()``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "feature folder not found; run `recgoat encode all <dataset>` first")
    fp = dataset.fingerprint()
    feats = Features()
    for kind, attr, ids in (("text", "text", dataset.item_ids), ("image", "image", dataset.item_ids),
                            ("users", "profile", dataset.user_ids)):
        if not (folder / f"{_FILE[kind]}.npy").exists():
            continue
        arr, man = _checked_matrix(folder, kind, fp, len(ids), ids=ids, name=dataset.name)
        setattr(feats, attr, arr)
        feats.manifests[attr] = man
    if feats.image is not None:
        feats.image_mask = _checked_mask(folder, dataset.n_items)
    if feats.text is None and feats.image is None and feats.profile is None:
        none = f"no feature files ({', '.join(FEATURE_FILES.values())})"
        mmrec = [n for n in MMREC_FILES.values() if (folder / n).exists()]
        if mmrec:  # an MMRec folder given as the feature folder: its matrices are imported into one first
            raise DataError(folder, f"{none}, but MMRec's {' and '.join(mmrec)}: import them first, `recgoat "
                                    f"encode import-mmrec {folder} DATASET --out FEATURES`, then give --features "
                                    f"FEATURES")
        raise DataError(folder, f"{none}; {_encode_advice(dataset, folder)}")
    return feats


def _encode_advice(dataset: Dataset, folder: Path) -> str:
    """What fills a feature folder with none of its files for ``dataset``: `recgoat encode all` where the dataset
    has something to encode, else what it lacks (the wording of `encode all`'s own refusal). Why: the advice was
    `recgoat encode all` always, which for a dataset without item text or images encodes nothing."""
    from recgoat.features.store import nothing_encodable

    nothing = nothing_encodable(dataset)  # its problem is `encode all`'s refusal, said here as it says it
    if nothing is None:
        return f"run `recgoat encode all DATASET --out {folder}` (or use --features auto)"
    return f"{nothing.problem}, or train a model that reads no features"
