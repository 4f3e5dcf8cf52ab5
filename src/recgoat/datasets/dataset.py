"""The :class:`Dataset`: interactions with internal ids, the id maps, item metadata and images.

Internal ids are dense integers ``0..U-1`` and ``0..I-1``; ``user_ids[u]`` / ``item_ids[i]`` give the
original ids (as strings). The ``split`` column, when present, says for each interaction whether it is
``train``, ``valid`` or ``test``. A prepared dataset is a folder holding Parquet files and a JSON
manifest, reloaded without recomputing anything.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from recgoat.errors import DataError
from recgoat.io import atomic_folder, check_folder_path, folder_entries, is_url, read_json, write_json

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"
# every file a prepared folder may hold: saving over a folder with anything else would lose it
PREPARED_FILES = (MANIFEST, "interactions.parquet", "ids.parquet", "items.parquet")


def folder_name(path: Path) -> str:
    """A dataset folder's name, also when given as ``.`` or ``..`` (whose ``Path.name`` is "" and "..": the
    dataset was named "" and its features went to features/ itself, or to the working folder via features/..)."""
    return path.name if path.name not in ("", ".", "..") else path.resolve().name


@dataclass
class Dataset:
    """Interactions plus everything known about users and items.

    Attributes:
        name: a short name, used in run folders and reports.
        interactions: columns ``user``, ``item`` (internal int ids), and optionally ``rating``,
            ``timestamp`` and ``split`` (one of :data:`SPLITS`).
        user_ids: original user id (str) of each internal user id.
        item_ids: original item id (str) of each internal item id.
        items: item metadata, one row per internal item id in order (``item_id`` plus text fields such
            as ``title``, ``genres``, ``overview``; ``image`` holds a path or URL when known).
        text_fields: the ``items`` columns that describe an item in words.
        info: free-form provenance (source paths, preprocessing applied).
    """

    name: str
    interactions: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    items: pd.DataFrame | None = None
    text_fields: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ basic facts
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def has_split(self) -> bool:
        return "split" in self.interactions.columns

    @property
    def has_images(self) -> bool:
        return self.items is not None and "image" in self.items.columns and bool(
            self.items["image"].notna().any()
        )

    @property
    def has_text(self) -> bool:
        return self.items is not None and bool(self.text_fields)

    def stats(self) -> dict[str, Any]:
        n = len(self.interactions)
        out: dict[str, Any] = {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "sparsity": 1.0 - n / max(self.n_users * self.n_items, 1),
            "has_rating": "rating" in self.interactions.columns,
            "has_timestamp": "timestamp" in self.interactions.columns,
            "text_fields": list(self.text_fields),
            "images": int(self.items["image"].notna().sum()) if self.has_images else 0,
        }
        if self.has_split:
            counts = self.interactions["split"].value_counts()
            out["split"] = {s: int(counts.get(s, 0)) for s in SPLITS}
        return out

    def describe(self) -> dict[str, Any]:
        """:meth:`stats` and what else a first look at the data should show, as `recgoat datasets info` prints it:
        ``image_files_absent`` (:meth:`absent_image_files`, when any; ``images`` then counts only the images that are
        there, where :meth:`stats` counts every item naming one), ``feature_files`` (an MMRec folder's
        ``text_feat.npy`` / ``image_feat.npy``: rows x dims, when any) and ``removed`` (one line per preparation
        step that removed something; [] when nothing was, absent when the preparation recorded no counts)."""
        from recgoat.datasets.mmrec import mmrec_feature_files  # they import this module
        from recgoat.datasets.preprocess import removal_lines

        out = self.stats()
        absent = self.absent_image_files()
        if absent:
            # "images" counts the images there (a URL is taken as there: not fetched to check), as the absent ones
            # are listed beside it: it counted every item naming one, and said "images": 1036 beside 1036 absent
            out["images"] -= absent["count"]
            out["image_files_absent"] = absent
        feature_files = mmrec_feature_files(self)
        if feature_files:
            # "images": 0 counts image files (none in MMRec's layout); the folder's image features were not shown
            out["feature_files"] = feature_files
        if isinstance(self.info.get("prepare"), dict) and "removed" in self.info["prepare"]:
            # a shrunken catalogue says why; absent for an older folder or data split elsewhere
            out["removed"] = removal_lines(self.info)
        return out

    def absent_image_files(self) -> dict[str, Any] | None:
        """The items whose image is a local path with no file there: their count and the first few (item id: path),
        None when every local image path is a file (URLs are not fetched to check)."""
        sources = self.image_sources()
        absent = [i for i, v in enumerate(sources) if v is not None and not is_url(v) and not Path(v).is_file()]
        if not absent:
            return None
        return {"count": len(absent), "first": [f"item {self.item_ids[i]}: {sources[i]}" for i in absent[:3]]}

    # ------------------------------------------------------------------ split access
    def split_frame(self, split: str) -> pd.DataFrame:
        if not self.has_split:
            prep = self.info.get("prepare") if isinstance(self.info, dict) else None
            if isinstance(prep, dict) and prep.get("split") == "none":  # it was prepared: "prepare it first" misled
                raise DataError(None, f"dataset {self.name!r} was prepared without a split (split: none), so has no "
                                      f"train/valid/test split; prepare it with one (e.g. --split random)")
            raise DataError(None, f"dataset {self.name!r} has no train/valid/test split; prepare it first")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.interactions[self.interactions["split"] == split]

    def csr(self, split: str | None = "train", weight: str | None = None) -> sp.csr_matrix:
        """User × item CSR matrix of one split (or all interactions when ``split`` is None).

        Entries are 1 (or the ``weight`` column); duplicates are summed then clipped for binary data.
        """
        df = self.interactions if split is None else self.split_frame(split)
        if weight is None:
            data = np.ones(len(df), np.float32)
        else:
            try:  # a misspelt column silently gave ones without the binary clip: counts, not weights
                data = df[weight].to_numpy(np.float32)
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"dataset {self.name!r} has no numeric column {weight!r} to weight by; "
                                 f"columns: {', '.join(map(str, df.columns))}") from None
        m = sp.csr_matrix(
            (data, (df["user"].to_numpy(), df["item"].to_numpy())),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        if weight is None:
            m.data[:] = 1.0
        return m

    def train_csr(self) -> sp.csr_matrix:
        return self.csr("train")

    def item_texts(self, fields: list[str] | None = None) -> list[str]:
        """One plain text per item: ``field: value`` lines over ``fields`` (default: all text fields)."""
        if self.items is None:
            return [""] * self.n_items
        fields = fields or self.text_fields
        parts = []
        for f in fields:
            if f in self.items.columns:
                # as object first: fillna("") on a categorical column raises (no "" category)
                col = self.items[f].astype(object).fillna("").astype(str).str.replace("|", ", ", regex=False)
                parts.append(np.where(col.str.len() > 0, f + ": " + col, ""))
        if not parts:
            return [""] * self.n_items
        stacked = np.stack(parts, axis=1)
        return ["\n".join(p for p in row if p) for row in stacked]

    def image_sources(self) -> list[str | None]:
        """Per item: a local path (relative ones resolved against ``info["source"]``, the folder the
        dataset was read from), a URL, or None when the metadata names no image."""
        if not self.has_images:
            return [None] * self.n_items
        base = self._source_dir()
        out: list[str | None] = []
        for v in self.items["image"].tolist():
            if not isinstance(v, str) or not v.strip():
                out.append(None)
            elif is_url(v):
                out.append(v)
            else:
                p = Path(v)
                out.append(str(base / p if not p.is_absolute() and base is not None else p))
        return out

    def _source_dir(self) -> Path | None:
        src = self.info.get("source")
        if not isinstance(src, str) or not src or src.startswith("embedded:"):
            return None
        p = Path(src)
        # an Amazon source is the reviews file, also once moved or deleted (a prepared copy outlives it)
        return p.parent if p.is_file() or self.info.get("layout") == "amazon" else p

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """A hash of interactions, split and item metadata: caches keyed on it go stale when data changes.

        Every column is reduced to fixed-width little-endian numbers or UTF-8 text before hashing, so the value
        does not depend on the pandas/numpy version or on whether strings are ``object`` or ``str`` dtype
        (``pd.util.hash_pandas_object`` does, which made caches written under one pandas look stale under another).
        """
        h = hashlib.sha256()

        def text(values: list) -> None:
            h.update(_text_bytes(values))
            h.update(b"\x1e")

        h.update(self.name.encode())
        inter = self.interactions
        for col, dtype in (("user", "<i8"), ("item", "<i8"), ("rating", "<f8"), ("timestamp", "<i8")):
            if col in inter.columns:
                if col == "timestamp" and pd.api.types.is_float_dtype(inter[col].dtype):
                    # sub-second times (the file loaders keep them): as whole seconds, data whose order
                    # differs within a second (a temporal split, "most recent first") hashed the same;
                    # whole seconds stay <i8, so existing fingerprints do not move
                    dtype, col_name = "<f8", b"timestamp:f8"
                else:
                    col_name = col.encode()
                h.update(col_name)
                h.update(np.ascontiguousarray(inter[col].to_numpy(dtype=dtype)).tobytes())
        if "split" in inter.columns:
            text(_as_str_list(inter["split"]))
        text(self.item_ids.tolist())
        text(self.user_ids.tolist())
        if self.items is not None:
            for col in self.items.columns:
                h.update(str(col).encode())
                values = self.items[col].tolist()
                text(self._portable_images(values) if col == "image" else values)
        return h.hexdigest()[:16]

    def _portable_images(self, values: list) -> list:
        """Image paths inside the source folder as paths relative to it, so that moving a dataset folder
        (or reading it from another checkout) keeps its fingerprint, and with it caches and run folders."""
        base = self._source_dir()
        if base is None:
            return values
        prefixes = {str(b).rstrip("/\\") + os.sep for b in (base, base.resolve())}

        def portable(v: object) -> object:
            for prefix in prefixes:
                if isinstance(v, str) and v.startswith(prefix):
                    return v[len(prefix):].replace(os.sep, "/")
            return v

        return [portable(v) for v in values]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the dataset as a folder: ``interactions.parquet``, ``ids.parquet``, ``items.parquet``,
        ``manifest.json``.

        ``path`` must be new, empty, or a prepared dataset folder (which is replaced). Writing into any
        other folder would shadow the user's own files (a raw dataset folder would then load as this
        dataset), so it is refused. The folder is built aside and swapped in complete: a failure leaves
        the old folder as it was, never a mix of old and new files.
        """
        path = Path(path)
        _check_save_target(path)
        self._check_ids(path / "ids.parquet")
        with atomic_folder(path) as tmp:
            _write_parquet(self.interactions, tmp, path / "interactions.parquet", "interactions")
            ids = pd.DataFrame({"kind": ["user"] * self.n_users + ["item"] * self.n_items,
                                "id": list(map(str, self.user_ids)) + list(map(str, self.item_ids))})
            _write_parquet(ids, tmp, path / "ids.parquet", "ids")
            files = ["interactions.parquet", "ids.parquet"]
            if self.items is not None:
                _write_parquet(self.items, tmp, path / "items.parquet", "item table")
                _check_items_survive(self.items, tmp / "items.parquet", path / "items.parquet")
                files.append("items.parquet")
            write_json(tmp / MANIFEST, {
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "text_fields": self.text_fields,
                "info": self.info,
                "fingerprint": self.fingerprint(),
                "stats": self.stats(),
                "files": files,
            })
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        """Reload a folder written by :meth:`save`, refusing one that is incomplete, corrupt or edited.

        Every problem is a :class:`DataError` naming the file: a bad folder must fail here, not as a
        scipy or pyarrow error deep inside training. The manifest's counts and fingerprint are checked
        (for ml100k-mm the checks take ~10 ms of a ~17 ms load, the fingerprint ~7 ms of that).
        """
        path = Path(path)
        manifest_path = path / MANIFEST
        if not path.is_dir():
            raise DataError(path, "no such dataset folder")
        if not manifest_path.is_file():
            raise DataError(path, f"not a prepared dataset folder (no {MANIFEST})")
        manifest = _read_manifest(manifest_path)
        listed = manifest.get("files", ["interactions.parquet", "ids.parquet"])  # older manifests list none
        inter = _read_parquet(path / "interactions.parquet", ("user", "item"))
        ids = _read_parquet(path / "ids.parquet", ("kind", "id"))
        items_path = path / "items.parquet"
        items = _read_parquet(items_path, ()) if items_path.exists() or "items.parquet" in listed else None
        kinds = ids["kind"]
        unknown = sorted({str(k) for k in kinds.unique()} - {"user", "item"})
        if unknown:
            raise DataError(path / "ids.parquet", f"unknown kind(s) {unknown}; expected 'user' or 'item'")
        ds = cls(
            name=manifest["name"],
            interactions=inter,
            user_ids=ids.loc[kinds == "user", "id"].to_numpy(object),
            item_ids=ids.loc[kinds == "item", "id"].to_numpy(object),
            items=items,
            text_fields=list(manifest.get("text_fields", [])),
            info=manifest.get("info", {}),
        )
        ds._check_loaded(path, manifest)
        return ds

    def _check_ids(self, where: Path) -> None:
        """DataError unless every original id is present and unique as text (how ids.parquet stores them): a
        missing id was saved as "None" and no longer matched the fingerprint, so the folder could not load;
        two ids with one text made lookups (user_index, serving) silently pick one."""
        for kind, ids in (("user", self.user_ids), ("item", self.item_ids)):
            values = list(ids)
            missing = [i for i, v in enumerate(values) if _missing(v)]
            if missing:
                raise DataError(where, f"{len(missing)} {kind} id(s) are missing (None or NaN; first at internal "
                                       f"{kind} {missing[0]}): every {kind} needs its original id")
            text = pd.Series(list(map(str, values)), dtype=object)
            dup = text.duplicated(keep=False).to_numpy(bool)
            if dup.any():
                first = int(np.flatnonzero(dup)[0])
                raise DataError(where, f"{int(dup.sum())} {kind}s share an original id (first: {text.iloc[first]!r} "
                                       f"at internal {kind} {first}): each {kind} needs its own id")

    def _check_loaded(self, path: Path, manifest: dict[str, Any]) -> None:
        """Counts, index ranges and fingerprint of a just-loaded folder against its manifest."""
        stats = manifest.get("stats") if isinstance(manifest.get("stats"), dict) else {}
        for what, have, file in (("users", self.n_users, "ids.parquet"), ("items", self.n_items, "ids.parquet"),
                                 ("interactions", len(self.interactions), "interactions.parquet")):
            want = stats.get(what)
            if want is not None and want != have:
                raise DataError(path / file, f"holds {have} {what} but {MANIFEST} records {want}: the file is "
                                             f"truncated or was replaced; prepare the dataset again")
        inter = self.interactions
        for col, n in (("user", self.n_users), ("item", self.n_items)):
            values = inter[col]
            if not pd.api.types.is_integer_dtype(values.dtype) or values.hasnans:
                raise DataError(path / "interactions.parquet", f"column {col!r} is not integer internal ids "
                                                               f"(dtype {values.dtype})")
            if len(values) and (values.min() < 0 or values.max() >= n):
                bad = values[(values < 0) | (values >= n)]
                raise DataError(path / "interactions.parquet",
                                f"{len(bad)} row(s) refer to {col} index {int(bad.iloc[0])}"
                                f"{' and others' if len(bad) > 1 else ''}, outside the {n} {col}s listed in "
                                f"ids.parquet; prepare the dataset again")
        for col, dtype in (("rating", "<f8"), ("timestamp", "<i8")):
            if col in inter.columns:
                try:  # as the fingerprint reads it, which otherwise failed with a bare ValueError
                    inter[col].to_numpy(dtype=dtype)
                except (ValueError, TypeError):
                    raise DataError(path / "interactions.parquet", f"column {col!r} holds values that are not "
                                    f"numbers (dtype {inter[col].dtype}); prepare the dataset again") from None
        self._check_ids(path / "ids.parquet")
        if self.has_split:
            bad_split = sorted({str(v) for v in inter["split"].unique()} - set(SPLITS))  # NaN is "nan": bad
            if bad_split:
                raise DataError(path / "interactions.parquet", f"unknown split value(s) {bad_split}; "
                                                               f"expected {', '.join(SPLITS)}")
        if self.items is not None and len(self.items) != self.n_items:
            raise DataError(path / "items.parquet", f"holds {len(self.items)} rows for {self.n_items} items")
        recorded = manifest.get("fingerprint")
        if recorded is not None and recorded != self.fingerprint():
            raise DataError(path / MANIFEST, f"records fingerprint {recorded} but the files hash to "
                                             f"{self.fingerprint()}: they were changed after preparation; "
                                             f"prepare the dataset again")

    # ------------------------------------------------------------------ lookups
    def user_index(self, original_id: Any) -> int:
        return _lookup(self._user_map(), original_id, "user")

    def item_index(self, original_id: Any) -> int:
        return _lookup(self._item_map(), original_id, "item")

    # Each map is kept with the array it was built from: assigning new ids (or a copy.copy of the dataset
    # given new ids) must not answer from the old ones.
    def _user_map(self) -> dict[str, int]:
        if getattr(self, "_umap_of", None) is not self.user_ids:
            self._umap = {str(u): i for i, u in enumerate(self.user_ids)}
            self._umap_of = self.user_ids
        return self._umap

    def _item_map(self) -> dict[str, int]:
        if getattr(self, "_imap_of", None) is not self.item_ids:
            self._imap = {str(u): i for i, u in enumerate(self.item_ids)}
            self._imap_of = self.item_ids
        return self._imap


def _lookup(mapping: dict[str, int], original_id: Any, kind: str) -> int:
    key = str(original_id)
    if key not in mapping and isinstance(original_id, (float, np.floating)) and float(original_id).is_integer():
        key = str(int(original_id))  # 7.0 is id "7", as the loaders spell whole-number float ids
    if key not in mapping:
        raise KeyError(f"unknown {kind} id {original_id!r}")
    return mapping[key]


# ---------------------------------------------------------------------------------------------- helpers
def _text_bytes(values: list) -> bytes:
    """The bytes :meth:`Dataset.fingerprint` hashes for a column; missing values (None, NaN, pd.NA) all
    hash as the empty string."""
    try:  # fast path, same bytes: a column of str only (the common case) needs no per-value test
        joined = "\x1f".join(values)
    except TypeError:
        joined = "\x1f".join("" if _missing(v) else str(v) for v in values)
    return joined.encode("utf-8")


def _missing(v: Any) -> bool:
    """None, NaN or pd.NA: a missing value (hashed as the empty string; no id)."""
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


def _as_str_list(col: pd.Series) -> list[str]:
    """``col.astype(str).tolist()``, without converting every value of a categorical column."""
    if isinstance(col.dtype, pd.CategoricalDtype) and not col.isna().any():
        cats = np.array([str(c) for c in col.cat.categories], dtype=object)
        return cats[col.cat.codes.to_numpy()].tolist()
    return col.astype(str).tolist()


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0  # not isinstance: JSON true is a Python int too


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# Every manifest field that loading reads (Dataset.load, registry.refuse_ignored_prepare_options), with the
# type it must have when present (a manifest of an older version may lack any but the name). Checked here
# because a wrong type went on unchecked: a hand-edited "users": "943" was compared with the 943 users read
# and reported as a truncated ids.parquet.
_MANIFEST_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("name", lambda v: isinstance(v, str) and v != "", "a non-empty string (the dataset name)"),
    ("text_fields", _is_str_list, "a list of column names (strings)"),
    ("info", lambda v: isinstance(v, dict), "a JSON object"),
    ("info.source", lambda v: v is None or isinstance(v, str), "a path (string) or null"),
    ("info.prepare", lambda v: v is None or isinstance(v, dict), "a JSON object or null"),
    ("fingerprint", lambda v: isinstance(v, str), "a string (the data's hash)"),
    ("stats", lambda v: isinstance(v, dict), "a JSON object"),
    ("stats.users", _is_count, "a non-negative integer"),
    ("stats.items", _is_count, "a non-negative integer"),
    ("stats.interactions", _is_count, "a non-negative integer"),
    ("files", _is_str_list, "a list of file names (strings)"),
)


def _json_kind(v: Any) -> str:
    """What a JSON value is, in the words of someone editing the file."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return "a string" if isinstance(v, str) else "a list" if isinstance(v, list) else "an object"


def _bad_field(where: str, value: Any, expected: str) -> str:
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{where} is {shown} ({_json_kind(value)}), expected {expected}; correct it or prepare the dataset again"


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, every field that loading reads of the right type (:data:`_MANIFEST_FIELDS`),
    or one :class:`DataError` naming the file, the field and the expected type."""
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:  # ValueError covers JSONDecodeError and bad UTF-8
        raise DataError(path, f"not readable JSON ({e}); prepare the dataset again") from None
    if not isinstance(manifest, dict):
        raise DataError(path, "is not a JSON object; prepare the dataset again")
    version = manifest.get("format_version")
    if type(version) is not int:  # a string "1" read as "format version 1 is not the supported 1"
        raise DataError(path, _bad_field("format_version", version, f"the integer {FORMAT_VERSION}")
                        if "format_version" in manifest else
                        f"has no format_version (expected {FORMAT_VERSION}): not a manifest written by recgoat")
    if version > FORMAT_VERSION:
        raise DataError(path, f"format version {version} was written by a newer recgoat (this one reads version "
                              f"{FORMAT_VERSION}): upgrade recgoat, or prepare the dataset again with this one")
    if version != FORMAT_VERSION:
        raise DataError(path, f"format version {version} is not the supported {FORMAT_VERSION}; "
                              f"prepare the dataset again")
    if manifest.get("name") is None:
        raise DataError(path, "has no dataset name")
    for where, ok, expected in _MANIFEST_FIELDS:
        parent, _, key = where.rpartition(".")
        holder = manifest.get(parent) if parent else manifest  # a parent is checked (an object) before its keys
        if isinstance(holder, dict) and key in holder and not ok(holder[key]):
            raise DataError(path, _bad_field(where, holder[key], expected))
    return manifest


def _read_parquet(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A Parquet table holding ``columns``, or a DataError naming the file (pyarrow raises many types)."""
    if not path.is_file():
        raise DataError(path, "missing: the prepared dataset is incomplete; prepare the dataset again")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # ArrowInvalid, OSError, ... : whatever the reader says, the file is unusable
        raise DataError(path, f"not a readable Parquet file ({type(e).__name__}: {e}); prepare the dataset again") \
            from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(path, f"lacks column(s) {', '.join(missing)}; prepare the dataset again")
    return df


def _write_parquet(df: pd.DataFrame, tmp: Path, dest: Path, what: str) -> None:
    """``df.to_parquet`` into the folder ``tmp`` (to become ``dest``'s), with a DataError naming ``dest`` and
    the column when pyarrow cannot type one (an item table built in Python may mix numbers and text in a
    column, e.g. years 1999 and "unknown")."""
    try:
        df.to_parquet(tmp / dest.name, index=False)
    except Exception as e:  # ArrowInvalid, ArrowTypeError, ArrowNotImplementedError, ...: a column's values
        if isinstance(e, OSError):
            raise
        bad = []
        for col in df.columns:
            try:
                pa.array(df[col], from_pandas=True)
            except Exception:  # noqa: BLE001 - any failure marks the column
                bad.append(str(col))
        cols = f"column(s) {', '.join(repr(c) for c in bad)}" if bad else "a column"
        raise DataError(dest, f"the {what} cannot be saved as Parquet: {cols} mix value types or hold objects "
                              f"Parquet cannot store ({type(e).__name__}: {e}); convert them, e.g. "
                              f".astype(str), and save again") from None


def _check_items_survive(items: pd.DataFrame, written: Path, dest: Path) -> None:
    """DataError naming the column when a column of ``items`` reads back from ``written`` hashing differently
    (Python lists and tuples come back as arrays, dicts with every key): the folder would refuse to load
    ("changed after preparation"), so it is refused here, before it replaces anything."""
    back = pd.read_parquet(written)
    for i, col in enumerate(items.columns):  # by position: Parquet turns a column name 0 into "0"
        if _text_bytes(items[col].tolist()) != _text_bytes(back.iloc[:, i].tolist()):
            kinds = sorted({type(v).__name__ for v in items[col].tolist()} - {"str", "NoneType", "float"})
            raise DataError(dest, f"column {col!r} does not read back from Parquet as it was saved (it holds "
                                  f"{', '.join(kinds) or 'values'}): store it as text, e.g. '|'-joined lists, "
                                  f"or as numpy arrays, and save again")


def _check_save_target(path: Path) -> None:
    """Refuse to save over anything but a new, empty or prepared dataset folder (see :meth:`Dataset.save`)."""
    check_folder_path(path, "the prepared dataset must go into a folder")
    names = folder_entries(path)
    if not names:
        return  # a new or empty folder
    if MANIFEST not in names:
        raise DataError(path, f"is not empty and is not a prepared dataset folder (no {MANIFEST}): refusing to "
                              f"write into it, which would shadow its files; choose a new or empty folder")
    foreign = sorted(names - set(PREPARED_FILES))
    if foreign:
        raise DataError(path, f"is a prepared dataset folder but also holds {', '.join(foreign)}, which replacing "
                              f"it would delete; choose a new or empty folder")
