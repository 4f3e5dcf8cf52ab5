"""Datasets by name or path: ``recgoat.datasets.load("ml-latest-small")``.

Known names:
- ``ml-latest-small``: MovieLens latest-small, shipped inside the package (text: title, genres, tags).
- ``ml100k-mm``: MovieLens-100K with plot text and posters, read from ``$RECGOAT_SHARED_DATA`` or
  ``../shared/datasets`` (never copied into the project: its licence forbids redistribution).
A path may be a prepared dataset folder (``manifest.json``), a folder in the generic layout, or a
folder in MMRec's layout (``<name>.inter``).
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pandas as pd

from recgoat.datasets.dataset import Dataset
from recgoat.datasets.generic import load_generic, read_table
from recgoat.datasets.preprocess import PrepareConfig, prepare
from recgoat.errors import DataError

EMBEDDED = ("ml-latest-small",)
SHARED = ("ml100k-mm",)


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("recgoat.datasets") / "embedded" / name))


def shared_root() -> Path | None:
    """Where the shared real datasets live: ``$RECGOAT_SHARED_DATA`` or a ``shared/datasets`` above."""
    env = os.environ.get("RECGOAT_SHARED_DATA")
    if env:
        return Path(env)
    for base in [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parent,
                 *Path(__file__).resolve().parents]:
        for cand in (base / "shared" / "datasets", base.parent / "shared" / "datasets"):
            if cand.is_dir():
                return cand
    return None


def available() -> list[dict]:
    rows = [{"name": n, "where": "embedded", "path": str(embedded_path(n))} for n in EMBEDDED]
    root = shared_root()
    for n in SHARED:
        p = root / n if root else None
        rows.append({"name": n, "where": "shared" if p and p.is_dir() else "missing",
                     "path": str(p) if p else "(set RECGOAT_SHARED_DATA)"})
    return rows


def default_prepare_config(name: str) -> PrepareConfig:
    # MovieLens: every rating counts as an implicit interaction; 5-core as MMRec; random 8:1:1.
    return PrepareConfig(min_rating=None, k_core=5, split="random", seed=2026)


def load_raw(name_or_path: str | Path) -> tuple[str, pd.DataFrame, pd.DataFrame | None, list[str], dict]:
    """Raw interactions (original ids), item table, text fields and provenance for a name or folder."""
    s = str(name_or_path)
    if s == "ml-latest-small":
        return ("ml-latest-small", *_load_ml_latest(embedded_path(s)), {"source": "embedded:ml-latest-small"})
    if s in SHARED:
        root = shared_root()
        if root is None or not (root / s).is_dir():
            raise DataError(s, "shared dataset not found; set RECGOAT_SHARED_DATA to the folder holding it")
        inter, items, fields = load_generic(root / s)
        return s, inter, items, fields, {"source": str(root / s)}
    path = Path(s)
    if not path.exists():
        raise DataError(path, f"no such dataset name or folder (known names: {', '.join(EMBEDDED + SHARED)})")
    if list(path.glob("*.inter")):
        raise DataError(path, "MMRec layout folders are already split: load them with recgoat.datasets.load")
    inter, items, fields = load_generic(path)
    return path.name, inter, items, fields, {"source": str(path.resolve())}


def load(name_or_path: str | Path, config: PrepareConfig | None = None) -> Dataset:
    """Load a dataset by name or path and prepare it (filter, remap, split) unless already prepared."""
    p = Path(str(name_or_path))
    if p.is_dir() and (p / "manifest.json").exists():
        return Dataset.load(p)
    if p.is_dir() and list(p.glob("*.inter")):
        from recgoat.datasets.mmrec import load_mmrec

        return load_mmrec(p)
    name, inter, items, fields, info = load_raw(name_or_path)
    return prepare(name, inter, items, fields, config or default_prepare_config(name), info)


def _load_ml_latest(root: Path):
    ratings = read_table(root / "ratings.csv")
    inter = pd.DataFrame({
        "user": ratings["userId"].astype(str),
        "item": ratings["movieId"].astype(str),
        "rating": pd.to_numeric(ratings["rating"]).astype("float32"),
        "timestamp": pd.to_numeric(ratings["timestamp"]).astype("int64"),
    })
    movies = read_table(root / "movies.csv").rename(columns={"movieId": "item_id"})
    movies["year"] = movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False)
    tags = read_table(root / "tags.csv")
    tag_text = (tags.assign(tag=tags["tag"].astype(str).str.strip().str.lower())
                .drop_duplicates(["movieId", "tag"])
                .groupby("movieId")["tag"].agg(lambda t: ", ".join(t)))
    movies["tags"] = movies["item_id"].map(tag_text)
    movies["genres"] = movies["genres"].replace("(no genres listed)", pd.NA)
    return inter, movies[["item_id", "title", "genres", "year", "tags"]], ["title", "genres", "year", "tags"]
