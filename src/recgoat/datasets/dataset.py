"""The :class:`Dataset`: interactions with internal ids, the id maps, item metadata and images.

Internal ids are dense integers ``0..U-1`` and ``0..I-1``; ``user_ids[u]`` / ``item_ids[i]`` give the
original ids (as strings). The ``split`` column, when present, says for each interaction whether it is
``train``, ``valid`` or ``test``. A prepared dataset is a folder holding Parquet files and a JSON
manifest, reloaded without recomputing anything.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recgoat.errors import DataError
from recgoat.io import atomic_path, read_json, write_json

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


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

    # ------------------------------------------------------------------ split access
    def split_frame(self, split: str) -> pd.DataFrame:
        if not self.has_split:
            raise DataError(None, f"dataset {self.name!r} has no train/valid/test split; prepare it first")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.interactions[self.interactions["split"] == split]

    def csr(self, split: str | None = "train", weight: str | None = None) -> sp.csr_matrix:
        """User × item CSR matrix of one split (or all interactions when ``split`` is None).

        Entries are 1 (or the ``weight`` column); duplicates are summed then clipped for binary data.
        """
        df = self.interactions if split is None else self.split_frame(split)
        data = (
            df[weight].to_numpy(np.float32)
            if weight is not None and weight in df.columns
            else np.ones(len(df), np.float32)
        )
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
                col = self.items[f].fillna("").astype(str).str.replace("|", ", ", regex=False)
                parts.append(np.where(col.str.len() > 0, f + ": " + col, ""))
        if not parts:
            return [""] * self.n_items
        stacked = np.stack(parts, axis=1)
        return ["\n".join(p for p in row if p) for row in stacked]

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """A hash of interactions, split and item metadata: caches keyed on it go stale when data changes.

        Every column is reduced to fixed-width little-endian numbers or UTF-8 text before hashing, so the value
        does not depend on the pandas/numpy version or on whether strings are ``object`` or ``str`` dtype
        (``pd.util.hash_pandas_object`` does, which made caches written under one pandas look stale under another).
        """
        h = hashlib.sha256()

        def text(values) -> None:  # missing values (None, NaN, pd.NA) all hash as the empty string
            h.update("\x1f".join("" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
                                  for v in values).encode("utf-8"))
            h.update(b"\x1e")

        h.update(self.name.encode())
        inter = self.interactions
        for col, dtype in (("user", "<i8"), ("item", "<i8"), ("rating", "<f8"), ("timestamp", "<i8")):
            if col in inter.columns:
                h.update(col.encode())
                h.update(np.ascontiguousarray(inter[col].to_numpy(dtype=dtype)).tobytes())
        if "split" in inter.columns:
            text(inter["split"].astype(str).tolist())
        text(self.item_ids.tolist())
        text(self.user_ids.tolist())
        if self.items is not None:
            for col in self.items.columns:
                h.update(str(col).encode())
                text(self.items[col].tolist())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the dataset as a folder: ``interactions.parquet``, ``items.parquet``, ``manifest.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / "interactions.parquet") as tmp:
            self.interactions.to_parquet(tmp, index=False)
        ids = pd.DataFrame({"kind": ["user"] * self.n_users + ["item"] * self.n_items,
                            "id": list(map(str, self.user_ids)) + list(map(str, self.item_ids))})
        with atomic_path(path / "ids.parquet") as tmp:
            ids.to_parquet(tmp, index=False)
        if self.items is not None:
            with atomic_path(path / "items.parquet") as tmp:
                self.items.to_parquet(tmp, index=False)
        write_json(path / "manifest.json", {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "text_fields": self.text_fields,
            "info": self.info,
            "fingerprint": self.fingerprint(),
            "stats": self.stats(),
        })
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise DataError(path, "not a prepared dataset folder (no manifest.json)")
        manifest = read_json(manifest_path)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DataError(manifest_path, f"format version {manifest.get('format_version')} "
                                           f"is not the supported {FORMAT_VERSION}")
        inter = pd.read_parquet(path / "interactions.parquet")
        ids = pd.read_parquet(path / "ids.parquet")
        items = pd.read_parquet(path / "items.parquet") if (path / "items.parquet").exists() else None
        return cls(
            name=manifest["name"],
            interactions=inter,
            user_ids=ids.loc[ids["kind"] == "user", "id"].to_numpy(object),
            item_ids=ids.loc[ids["kind"] == "item", "id"].to_numpy(object),
            items=items,
            text_fields=list(manifest.get("text_fields", [])),
            info=manifest.get("info", {}),
        )

    # ------------------------------------------------------------------ lookups
    def user_index(self, original_id: Any) -> int:
        return _lookup(self._user_map(), original_id, "user")

    def item_index(self, original_id: Any) -> int:
        return _lookup(self._item_map(), original_id, "item")

    def _user_map(self) -> dict[str, int]:
        if getattr(self, "_umap", None) is None:
            self._umap = {str(u): i for i, u in enumerate(self.user_ids)}
        return self._umap

    def _item_map(self) -> dict[str, int]:
        if getattr(self, "_imap", None) is None:
            self._imap = {str(u): i for i, u in enumerate(self.item_ids)}
        return self._imap


def _lookup(mapping: dict[str, int], original_id: Any, kind: str) -> int:
    key = str(original_id)
    if key not in mapping:
        raise KeyError(f"unknown {kind} id {original_id!r}")
    return mapping[key]
