"""Datasets by name or path: ``recgoat.datasets.load("ml-latest-small")``.

Known names:
- ``ml-latest-small``: MovieLens latest-small, shipped inside the package (text: title, genres, tags).
- ``ml100k-mm``: MovieLens-100K with plot text and posters, read from ``$RECGOAT_SHARED_DATA`` or
  ``../shared/datasets`` (never copied into the project: its licence forbids redistribution).
A path may be a prepared dataset folder (``manifest.json``), a folder in the generic layout, a folder
in MMRec's layout (``<name>.inter``, or that file itself), a line-per-user folder (``train.txt``,
``test.txt``), or an Amazon review file (or a folder holding one, with its ``meta_<Cat>`` file beside
it), Amazon 2014's ratings-only ``ratings_<Cat>.csv`` included. See :data:`LAYOUTS`.
"""
from __future__ import annotations

import os
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from recgoat.datasets.amazon import RATINGS_FILE
from recgoat.datasets.dataset import MANIFEST, Dataset, _read_manifest, folder_name
from recgoat.datasets.generic import load_generic, read_table
from recgoat.datasets.preprocess import PrepareConfig, prepare
from recgoat.errors import ConfigError, DataError, did_you_mean

EMBEDDED = ("ml-latest-small",)
SHARED = ("ml100k-mm",)
# What a path may hold, as listed in errors when none is recognised: layout → (files, Python loader).
LAYOUTS = {
    "prepared": ("manifest.json", "recgoat.datasets.Dataset.load"),
    "generic": ("interactions.{csv,tsv,parquet} [+ items.*, images/]", "recgoat.datasets.load"),
    "mmrec": ("<name>.inter [+ text_feat.npy, image_feat.npy]", "recgoat.datasets.load_mmrec"),
    "lines": ("train.txt + test.txt [+ valid.txt]", "recgoat.datasets.load_lines"),
    "amazon": ("reviews_<Cat>.json.gz | <Cat>.json.gz | <Cat>.jsonl[.gz] | ratings_<Cat>.csv[.gz] "
               "[+ meta_<Cat>.*]", "recgoat.datasets.load_amazon"),
}
_AMAZON = re.compile(r"\.jsonl?(\.gz)?$")


def _is_amazon_reviews(path: Path) -> bool:
    """A review file's name (JSON lines), or 2014's ratings-only ``ratings_<Cat>.csv[.gz]``."""
    return bool(_AMAZON.search(path.name) or RATINGS_FILE.match(path.name))


def layouts_help() -> str:
    """One line listing every recognised layout and its Python loader, for error messages."""
    return "; ".join(f"{k}: {files} ({loader})" for k, (files, loader) in LAYOUTS.items())


def _amazon_category(path: Path) -> str:
    """``reviews_Baby_5.json.gz`` / ``Baby.json.gz`` / ``Baby_Products.jsonl`` / ``ratings_Baby.csv`` →
    ``Baby…``."""
    stem = re.sub(r"(\.jsonl?|\.csv|\.gz)+$", "", path.name)
    return re.sub(r"_5$", "", re.sub(r"^(reviews|ratings)_", "", stem))


def _amazon_meta(reviews: Path) -> Path | None:
    """The ``meta_<Cat>`` file beside a review file, if there is exactly one; else in a ``meta_categories`` folder
    beside the review file's (Amazon Reviews 2023 as published: ``raw/review_categories/<Cat>.jsonl`` and
    ``raw/meta_categories/meta_<Cat>.jsonl``). None, with a warning, when there is none: the dataset then has no
    item text or images, which was only found out at ``encode text``."""
    cat = _amazon_category(reviews)
    for folder in (reviews.parent, reviews.parent.parent / "meta_categories"):
        found = [p for p in sorted(folder.glob(f"meta_{cat}.json*")) if _AMAZON.search(p.name)]
        if len(found) > 1:
            raise DataError(folder, f"several metadata files for {cat} ({', '.join(p.name for p in found)}); "
                                    "call recgoat.datasets.load_amazon(reviews, meta) with the one to use")
        if found:
            return found[0]
    warnings.warn(f"{reviews}: no metadata file meta_{cat}.json[l][.gz] beside it, so the dataset has no item text "
                  f"or images; put it beside the review file, or call recgoat.datasets.load_amazon(reviews, meta)",
                  UserWarning, stacklevel=2)
    return None


def find_amazon(path: Path) -> tuple[Path, Path | None] | None:
    """(reviews, meta) when ``path`` is an Amazon review file or a folder holding exactly one; else None."""
    if path.is_file():
        if not _is_amazon_reviews(path):
            return None
        if path.name.startswith("meta_"):
            raise DataError(path, "this is an Amazon metadata file; pass the review file (the meta_ file "
                                  "beside it is found automatically)")
        return path, _amazon_meta(path)
    reviews = [p for p in sorted([*path.glob("*.json*"), *path.glob("ratings_*.csv*")])
               if _is_amazon_reviews(p) and not p.name.startswith("meta_")]
    if not reviews:
        return None
    if len(reviews) > 1:
        raise DataError(path, f"several Amazon review files ({', '.join(p.name for p in reviews)}); pass "
                              "one file, or call recgoat.datasets.load_amazon(reviews, meta)")
    return reviews[0], _amazon_meta(reviews[0])


def _is_inter_file(path: Path) -> bool:
    """An MMRec ``<name>.inter`` file given itself rather than its folder."""
    return path.is_file() and path.suffix == ".inter"


def _is_lines(path: Path) -> bool:
    """train.txt is enough: load_lines then names a missing test.txt itself."""
    return path.is_dir() and (path / "train.txt").is_file()


def _has_generic(path: Path) -> bool:
    return path.is_dir() and any((path / f"interactions{e}").exists() for e in (".csv", ".tsv", ".parquet"))


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("recgoat.datasets") / "embedded" / name))


def shared_root() -> Path | None:
    """Where the shared real datasets live: ``$RECGOAT_SHARED_DATA`` or a ``shared/datasets`` above."""
    env = os.environ.get("RECGOAT_SHARED_DATA")
    if env:
        return Path(env).expanduser()  # "~/shared/datasets" as a shell would read it (a quoted ~ is not)
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


def find_source(name_or_path: str | Path) -> Path:
    """Where a dataset name or path is read from: the embedded copy, the shared folder, or the path itself;
    a :class:`DataError` when it cannot be found (what :func:`load_raw` raises, for a check made early)."""
    s = str(name_or_path)
    if s in EMBEDDED:
        return embedded_path(s)
    if s in SHARED:
        root = shared_root()
        if root is None or not (root / s).is_dir():
            raise DataError(s, _shared_missing(s, root))
        return root / s
    path = Path(s)
    if not path.exists():
        raise DataError(path, f"no such dataset name or folder ({_suggestion(s)}known names: "
                              f"{', '.join(EMBEDDED + SHARED)})")
    return path


def _shared_missing(name: str, root: Path | None) -> str:
    """Why shared dataset ``name`` is not found, naming where it was looked for."""
    env = os.environ.get("RECGOAT_SHARED_DATA")
    if not env:
        return "shared dataset not found; set RECGOAT_SHARED_DATA to the folder holding it (no shared/datasets " \
               "folder was found above the working folder or the package)"
    where = f"RECGOAT_SHARED_DATA={env}"
    if root is not None and root.name == name and root.is_dir():  # the dataset's own folder, not its parent
        return f"shared dataset not found: {where} is the dataset's own folder; set it to the folder holding it " \
               f"({root.parent})"
    if root is None or not root.is_dir():
        return f"shared dataset not found: {where} is not a folder; set it to the folder holding {name}/"
    return f"shared dataset not found: {where} holds no {name}/ folder; set it to the folder holding it"


def _suggestion(given: str) -> str:
    """``did you mean 'ml100k-mm'? `` for a near miss of a known name (case, - and _ ignored), else '' (and
    for a path: a folder not found is no misspelt name)."""
    if "/" in given or os.sep in given:
        return ""
    return did_you_mean(given, (*EMBEDDED, *SHARED), lambda n: n.lower().replace("_", "-"))


def stable_reference(name_or_path: str | Path, names: tuple[str, ...] = (*EMBEDDED, *SHARED)) -> str:
    """``name_or_path`` as a string that means the same from any working folder: a name in ``names`` stays a
    name (unless a pre-split folder of that name here wins over it, as :func:`load` lets it); anything else is
    a path, made absolute (normalised as spelled: symlinks are kept; it need not exist, e.g. a features folder
    deleted since a benchmark cell ran). What ``run_config.json`` records and what the benchmark compares
    cell configurations by."""
    s = str(name_or_path)
    if s in names and presplit_layout(s) is None:
        return s
    return os.path.abspath(s)


def load_raw(name_or_path: str | Path) -> tuple[str, pd.DataFrame, pd.DataFrame | None, list[str], dict]:
    """Raw interactions (original ids), item table, text fields and provenance for a name or folder."""
    s = str(name_or_path)
    path = find_source(s)
    if s == "ml-latest-small":
        return ("ml-latest-small", *_load_ml_latest(path), {"source": "embedded:ml-latest-small"})
    if s in SHARED:
        inter, items, fields = load_generic(path)
        return s, inter, items, fields, {"source": str(path)}
    if _is_inter_file(path) or list(path.glob("*.inter")):
        raise DataError(path, "MMRec layout folders are already split: load them with recgoat.datasets.load")
    if _is_lines(path) and not _has_generic(path):
        raise DataError(path, "line-per-user folders are already split: load them with recgoat.datasets.load")
    if not _has_generic(path):
        amazon = find_amazon(path)
        if amazon is not None:
            from recgoat.datasets.amazon import category_name, read_amazon

            reviews, meta = amazon
            inter, items, fields = read_amazon(reviews, meta)
            info = {"source": str(reviews.resolve()), "layout": "amazon",
                    "meta": str(meta.resolve()) if meta is not None else None}
            return category_name(reviews), inter, items, fields, info
        what = "no interactions.csv, .tsv or .parquet in this folder" if path.is_dir() else "not a dataset file"
        raise DataError(path, f"{what}, nor another recognised layout ({layouts_help()})")
    inter, items, fields = load_generic(path)
    return folder_name(path), inter, items, fields, {"source": str(path.resolve())}



PREPARE_OPTIONS = ("min_rating", "k_core", "split", "ratios", "seed")


def presplit_layout(name_or_path: str | Path) -> str | None:
    """``prepared``, ``MMRec`` or ``line-per-user`` for a folder that is already split (:func:`load` reads
    its split as stored), else None."""
    p = Path(str(name_or_path))
    if p.is_dir() and (p / "manifest.json").exists():
        return "prepared"
    if _is_inter_file(p) or (p.is_dir() and list(p.glob("*.inter"))):
        return "MMRec"
    if _is_lines(p) and not _has_generic(p):
        return "line-per-user"
    return None


def refuse_ignored_prepare_options(name_or_path: str | Path, options: dict[str, Any]) -> None:
    """A :class:`ConfigError` when preparation ``options`` the user gave (``seed``, ``split``, …) would be
    ignored: a folder that is already split keeps its own split (a prepared folder's options are in its
    manifest; given values equal to those are fine)."""
    layout = presplit_layout(name_or_path)
    if layout is None or not options:
        return
    stored: dict[str, Any] = {}
    if layout == "prepared":
        # the checked read Dataset.load makes: a hand-edited "prepare": ["seed"] was a TypeError below
        stored = (_read_manifest(Path(str(name_or_path)) / MANIFEST).get("info") or {}).get("prepare") or {}

    def same(a: Any, b: Any) -> bool:
        return (list(a) if isinstance(a, (list, tuple)) else a) == (list(b) if isinstance(b, (list, tuple)) else b)

    ignored = {k: v for k, v in options.items() if not (k in stored and same(stored[k], v))}
    if ignored:
        given = ", ".join(f"{k}={v}" for k, v in ignored.items())
        kept = f" (it was prepared with {', '.join(f'{k}={stored[k]}' for k in ignored if k in stored)})" \
            if any(k in stored for k in ignored) else ""
        # a folder prepared with split=none is not "already split": it keeps its preparation all the same
        keeps = "keeps its preparation, without a split" if stored.get("split") == "none" else \
            "is already split and keeps its split"
        raise ConfigError(f"{name_or_path}: a {layout} dataset folder {keeps}{kept}; "
                          f"{given} would be ignored. Prepare the raw data with these options instead, or drop them")


def load(name_or_path: str | Path, config: PrepareConfig | None = None) -> Dataset:
    """Load a dataset by name or path and prepare it (filter, remap, split) unless already prepared.

    A folder that is already split keeps its split: a ``config`` whose options differ from the defaults there is
    a :class:`ConfigError` (:func:`refuse_ignored_prepare_options`, as the CLI's), not silently ignored."""
    p = Path(str(name_or_path))
    layout = presplit_layout(p)
    if layout is not None and config is not None:
        defaults = PrepareConfig().__dict__
        refuse_ignored_prepare_options(p, {k: v for k, v in config.__dict__.items() if v != defaults[k]})
    if layout == "prepared":
        return Dataset.load(p)
    if layout == "MMRec":
        from recgoat.datasets.mmrec import load_mmrec

        # the .inter file itself names the dataset; its folder holds the features and id mappings
        return load_mmrec(p.parent, p.stem) if _is_inter_file(p) else load_mmrec(p)
    if layout == "line-per-user":
        from recgoat.datasets.lines import load_lines

        return load_lines(p)
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
    # an empty tag cell (NaN) became the tag "nan" through astype(str), and fails the join under pandas 3
    tag = tags["tag"].str.strip().str.lower()
    tag_text = (tags.assign(tag=tag)[tag.notna() & (tag != "")]
                .drop_duplicates(["movieId", "tag"])
                .groupby("movieId")["tag"].agg(lambda t: ", ".join(t)))
    movies["tags"] = movies["item_id"].map(tag_text)
    movies["genres"] = movies["genres"].replace("(no genres listed)", pd.NA)
    return inter, movies[["item_id", "title", "genres", "year", "tags"]], ["title", "genres", "year", "tags"]
