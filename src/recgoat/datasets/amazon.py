"""Amazon review data as published by McAuley et al., in its three releases.

- 2014: ``reviews_<Cat>.json.gz`` (JSON lines, or "loose" Python-literal lines: reviewerID, asin, overall,
  unixReviewTime) and
  ``meta_<Cat>.json.gz`` whose lines are *Python literals* (asin, title, brand, categories as a list
  of lists, description, imUrl), read with :func:`ast.literal_eval`, never ``eval``.
- 2018: ``<Cat>.json.gz`` (same review fields, JSON) and ``meta_<Cat>.json.gz`` (JSON lines: category
  and description lists, brand, title, feature list, imageURLHighRes/imageURL lists).
- 2023: ``<Cat>.jsonl(.gz)`` (user_id, parent_asin/asin, rating, timestamp in milliseconds) and
  ``meta_<Cat>.jsonl(.gz)`` (parent_asin, title, store, categories, description and features lists,
  images as dicts with large/hi_res/thumb URLs).

All three may give a ``price``: a number (2014, 2023) or a string such as ``"$12.99"`` (2018). It is
kept as a float column (not a text field) so profiles can speak of a typical price; anything that is
not one amount (a range ``"$5.99 - $9.99"``, an HTML fragment, empty) becomes NaN.

The format is recognised from the fields of each record, so the three can be read by one reader.
Files are streamed line by line (they reach several GB); frames are built once at the end.
"""
from __future__ import annotations

import ast
import codecs
import gzip
import html
import io
import json
import re
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from recgoat.datasets.dataset import Dataset
from recgoat.datasets.generic import MAX_SECONDS, seconds_array, warn_missing_items
from recgoat.datasets.preprocess import PrepareConfig, prepare
from recgoat.errors import DataError

TEXT_COLUMNS = ["title", "brand", "categories", "description", "features"]
ITEM_COLUMNS = ["item_id", *TEXT_COLUMNS, "image", "price"]
# one amount, optionally with a currency sign and thousands separators: "$1,299.00", "12.99", "€ 5"
_PRICE = re.compile(r"^\s*(?:US\s*)?[$£€]?\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*$")


def _open_binary(path: Path) -> io.BufferedIOBase:
    """A byte stream over ``path``, gunzipped when the file starts with the gzip magic bytes."""
    if not path.exists():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _parse_json(path: Path, n: int, line: str) -> tuple[Any, str | None]:
    """``(json.loads(line), None)``, or ``(None, why)`` when the line is no JSON (a Python literal may still
    read it); a DataError for JSON that cannot be held (nested too deeply, an integer of 5000 digits)."""
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        return None, e.msg
    except RecursionError:
        raise DataError(path, f"malformed line {n}: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise DataError(path, f"malformed line {n}: {e}") from None


def _records(path: Path, literal_ok: bool) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line; JSON, or a Python literal where allowed.

    Lines are decoded one by one: a leading byte-order mark is dropped, and bytes that are not UTF-8 are
    read as U+FFFD with one warning naming the first such line (never silently).
    """
    use_literal = False  # switches on after the first line that only parses as a literal
    not_utf8, first_not_utf8 = 0, 0
    try:
        with _open_binary(path) as fh:
            for n, raw in enumerate(fh, 1):
                if n == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    not_utf8, first_not_utf8 = not_utf8 + 1, first_not_utf8 or n
                    line = raw.decode("utf-8", errors="replace")
                line = line.strip()
                if not line:
                    continue
                rec: Any = None
                if not use_literal:
                    rec, why = _parse_json(path, n, line)
                    if why is not None:
                        if not literal_ok:
                            raise DataError(path, f"malformed line {n}: not valid JSON ({why})")
                        use_literal = True
                if use_literal:
                    try:
                        rec = ast.literal_eval(line)
                    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
                        # TypeError: an unhashable key, {['a']: 1}. Else perhaps a JSON line after
                        # literal ones (true/false/null are no Python literals)
                        rec, why = _parse_json(path, n, line)
                        if why is not None:
                            raise DataError(path, f"malformed line {n}: neither JSON nor a Python literal "
                                                  f"({type(e).__name__})") from None
                if not isinstance(rec, dict):
                    raise DataError(path, f"malformed line {n}: expected an object, got "
                                          f"{type(rec).__name__}")
                yield n, rec
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        # zlib.error (a damaged deflate stream inside a .gz) is no OSError: it escaped as a bare traceback
        raise DataError(path, f"cannot be read: {e}") from None
    if not_utf8:
        warnings.warn(f"{path}: {not_utf8} lines are not valid UTF-8 (first: line {first_not_utf8}); their "
                      "undecodable bytes were read as U+FFFD (check the file's encoding)", UserWarning, stacklevel=3)


def _first(rec: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        v = rec.get(k)
        if v is not None:
            return v
    return None


def _id(path: Path, n: int, value: Any, what: str) -> str | None:
    """A user or item id as text; None when missing or empty. A list or object is no id (its repr would
    become one, silently), and an id of 0 is an id, not a missing one."""
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list, tuple, set)):
        raise DataError(path, f"malformed line {n}: {what} is a {type(value).__name__}, not a string or number")
    return str(value)


def read_reviews(path: str | Path) -> tuple[pd.DataFrame, str]:
    """Interactions (user, item, rating, timestamp in seconds) and the release they look like."""
    path = Path(path)
    users: list[str] = []
    items: list[str] = []
    ratings: list[Any] = []
    times: list[Any] = []
    line_of: list[int] = []
    release = None
    # the 2014 files are read by their authors' own code with eval(): "loose" Python-literal lines too
    for n, rec in _records(path, literal_ok=True):
        if release is None:
            release = "2023" if "user_id" in rec else "2014/2018"
        user = _id(path, n, _first(rec, ("user_id", "reviewerID")), "user (user_id/reviewerID)")
        item = _id(path, n, _first(rec, ("parent_asin", "asin")), "item (parent_asin/asin)")
        rating = _first(rec, ("rating", "overall"))
        ts = _first(rec, ("timestamp", "unixReviewTime"))
        for field, value in (("user (user_id/reviewerID)", user), ("item (parent_asin/asin)", item),
                             ("rating (rating/overall)", rating), ("time (timestamp/unixReviewTime)", ts)):
            if value is None or value == "":
                raise DataError(path, f"malformed line {n}: missing or empty {field}")
        users.append(user)
        items.append(item)
        ratings.append(rating)
        times.append(ts)
        line_of.append(n)
    if not users:
        raise DataError(path, "no reviews in this file")
    df = pd.DataFrame({"user": users, "item": items})
    for col, values in (("rating", ratings), ("timestamp", times)):
        num = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        if num.isna().any():
            first = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise DataError(path, f"{int(num.isna().sum())} reviews have a non-numeric or NaN {col} "
                                  f"(first: line {line_of[first]}, value {values[first]!r})")
        # JSON's 1e999 is inf: a rating that poisons weights, a time that wraps around in int64
        huge = ~(np.abs(num.to_numpy(np.float64)) < MAX_SECONDS)
        if huge.any():
            first = int(np.flatnonzero(huge)[0])
            raise DataError(path, f"{int(huge.sum())} reviews have an infinite or out-of-range {col} "
                                  f"(first: line {line_of[first]}, value {values[first]!r})")
        df[col] = num.to_numpy(np.float32 if col == "rating" else np.float64)
    ts = df["timestamp"].to_numpy()
    if release == "2023":
        ts = _seconds_2023(path, ts, line_of)
    # 2023 timestamps are milliseconds; store seconds like every other loader (fractions kept)
    df["timestamp"] = seconds_array(ts) if release == "2023" else ts.astype(np.int64)
    return df, release


# 1e11 ms is 3 March 1973, before any Amazon review; 1e11 s is the year 5138: below it, a time is in seconds
_MS_FLOOR = 1e11


def _seconds_2023(path: Path, ts: np.ndarray, line_of: list[int]) -> np.ndarray:
    """Seconds from a 2023 file's times: its milliseconds divided by 1000, or the times as they are (with a
    warning) when all are seconds already (a file re-saved so), which divided came out in January 1970; a
    DataError when the file mixes both."""
    in_seconds = np.abs(ts) < _MS_FLOOR
    if not in_seconds.any():
        return ts / 1000
    if in_seconds.all():
        warnings.warn(f"{path}: every timestamp is below 1e11, so in seconds, not in the milliseconds of Amazon's "
                      "2023 files: read as seconds", UserWarning, stacklevel=3)
        return ts
    first = int(np.flatnonzero(in_seconds)[0])
    raise DataError(path, f"{int(in_seconds.sum())} timestamps are in seconds but the others in milliseconds "
                          f"(Amazon's 2023 files use milliseconds; first in seconds: line {line_of[first]}, "
                          f"value {ts[first]:.15g}); write every time in one unit")


_WS = re.compile(r"\s+")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")  # an HTML tag, not a lone "<" ("< 5 lbs")


def _text(value: Any, sep: str = " ") -> str | None:
    """Plain text from a string or a (nested) list of strings, HTML tags removed and entities decoded; None
    when empty."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [p for p in (_text(v, sep) for v in value) if p]
        return sep.join(parts) or None
    # titles and categories carry HTML entities ("Sports &amp; Outdoors") and 2018 descriptions HTML tags
    # ("<p>…</p>", "<br>"): the text the encoders read is plain. Tags go first, so an escaped "&lt;b&gt;" stays
    s = _WS.sub(" ", html.unescape(_TAG.sub(" ", str(value)))).strip()
    return s or None


def _categories(value: Any) -> str | None:
    """``|``-joined unique categories from a list or 2014's list of lists, in first-seen order."""
    if not value:
        return None
    flat: list[Any] = []
    for v in value if isinstance(value, (list, tuple)) else [value]:
        flat.extend(v if isinstance(v, (list, tuple)) else [v])
    seen = dict.fromkeys(s for s in (_text(v) for v in flat) if s)
    return "|".join(seen) or None


# an Amazon image URL's size modifiers, ``<id>._SS40_.jpg``: without them the CDN serves the original
_AMAZON_THUMB = re.compile(r"^(https?://[^?#]*(?:amazon|media-amazon|ssl-images-amazon)[^?#]*/images/I/[^/.]+)"
                           r"\._[^/]*_(\.[A-Za-z]+)$")


def _full_size(url: str) -> str:
    """The full-size picture behind an Amazon thumbnail URL (``…/I/41abc._SS40_.jpg`` → ``…/I/41abc.jpg``):
    the ``imageURL`` and ``image`` lists of 2018 meta files hold 40-pixel thumbnails (``_US40_``,
    ``_SS40_``), too small for an image encoder (224-pixel input). Other URLs are returned as they are."""
    m = _AMAZON_THUMB.match(url)
    return m.group(1) + m.group(2) if m else url


def _image(rec: dict) -> str | None:
    """One image URL: 2014 imUrl, 2018 high-res then normal lists (or the ``image`` list most 2018 meta files
    hold instead; the last two of thumbnails, so their full-size picture), 2023 large/hi_res/thumb dicts."""
    if rec.get("imUrl"):
        return str(rec["imUrl"])
    for key in ("imageURLHighRes", "imageURL", "image"):
        urls = rec.get(key)
        if isinstance(urls, str):
            urls = [urls]
        if isinstance(urls, list):
            url = next((u for u in urls if isinstance(u, str) and u.strip()), None)
            if url:
                return url.strip() if key == "imageURLHighRes" else _full_size(url.strip())
    images = rec.get("images")
    if isinstance(images, list):
        # the MAIN picture first when variants are labelled
        ordered = sorted((im for im in images if isinstance(im, dict)), key=lambda im: im.get("variant") != "MAIN")
        for im in ordered:
            url = _first(im, ("large", "hi_res", "thumb"))
            if url:
                return str(url)
    return None


def _as_float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # an integer beyond float's range: no price (NaN below)
        return np.inf


def parse_prices(values: pd.Series) -> pd.Series:
    """Prices as float64: numbers kept, strings like ``"$12.99"`` / ``"$1,299.00"`` parsed, anything
    else (ranges, text, empty, negative or infinite values) NaN."""
    values = pd.Series(values, dtype=object)
    is_text = values.map(lambda v: isinstance(v, str)).to_numpy(bool)
    is_number = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).to_numpy(bool)
    out = pd.Series(np.nan, index=values.index, dtype=np.float64)
    out[is_number] = values[is_number].map(_as_float).astype(np.float64)
    parts = values[is_text].astype(str).str.extract(_PRICE)
    out[is_text] = pd.to_numeric(parts[0].str.replace(",", "", regex=False) + parts[1].fillna(""),
                                 errors="coerce").to_numpy(np.float64)
    return out.where(np.isfinite(out) & (out >= 0))


_FIELDS: dict[str, Callable[[dict], Any]] = {
    "item_id": lambda r: _first(r, ("parent_asin", "asin")),
    "title": lambda r: _text(r.get("title")),
    "brand": lambda r: _text(_first(r, ("brand", "store"))),
    "categories": lambda r: _categories(_first(r, ("categories", "category")) or r.get("main_category")),
    "description": lambda r: _text(r.get("description")),
    "features": lambda r: _text(_first(r, ("features", "feature")), sep="; "),
    "image": _image,
    "price": lambda r: r.get("price"),
}


def read_meta(path: str | Path) -> pd.DataFrame:
    """Item table (``item_id``, title, brand, categories, description, features, image, price)."""
    path = Path(path)
    columns: dict[str, list[Any]] = {c: [] for c in ITEM_COLUMNS}
    for n, rec in _records(path, literal_ok=True):
        item = columns["item_id"]
        for col, get in _FIELDS.items():
            columns[col].append(get(rec))
        item[-1] = _id(path, n, item[-1], "item id (parent_asin/asin)")
        if item[-1] is None:
            raise DataError(path, f"malformed line {n}: missing or empty item id (parent_asin/asin)")
    if not columns["item_id"]:
        raise DataError(path, "no items in this file")
    df = pd.DataFrame(columns)
    df["price"] = parse_prices(df["price"])
    # repeated lines for one item are common (2018 files); repeats that disagree lose data: said once
    distinct = df.drop_duplicates(keep="first")
    clash = distinct["item_id"].duplicated(keep="first").to_numpy(bool)
    if clash.any():
        ids = distinct["item_id"][clash].unique()
        warnings.warn(f"{path}: {len(ids)} items have several different lines (e.g. {ids[0]!r}); the first line "
                      "of each is kept", UserWarning, stacklevel=2)
    return distinct[~clash].reset_index(drop=True)


def read_amazon(reviews_path: str | Path, meta_path: str | Path | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """Raw interactions (original ids), item table and its text fields for any of the three releases."""
    inter, release = read_reviews(reviews_path)
    if meta_path is None:
        return inter, None, []
    items = read_meta(meta_path)
    warn_missing_items(inter, items, reviews_path, meta_path, entry="line in this file")
    text_fields = [c for c in TEXT_COLUMNS if items[c].notna().any()]
    keep = ["item_id", *text_fields] + [c for c in ("image", "price") if items[c].notna().any()]
    return inter, items[keep], text_fields


def category_name(reviews_path: str | Path) -> str:
    """``reviews_Baby_5.json.gz`` / ``Baby.json.gz`` / ``Baby_Products.jsonl`` → ``amazon-baby…``."""
    stem = Path(reviews_path).name
    stem = re.sub(r"(\.jsonl?|\.gz)+$", "", stem)
    stem = re.sub(r"^reviews_", "", stem)
    stem = re.sub(r"_5$", "", stem)
    return "amazon-" + stem.lower().replace("_", "-")


def load_amazon(reviews_path: str | Path, meta_path: str | Path | None = None,
                config: PrepareConfig | None = None, name: str | None = None) -> Dataset:
    """Read and prepare an Amazon category.

    Default preparation follows MMRec: every review counts as an implicit interaction, 5-core,
    random 8:1:1 per user.
    """
    inter, items, fields = read_amazon(reviews_path, meta_path)
    info = {"source": str(Path(reviews_path).resolve()), "layout": "amazon",
            "meta": str(Path(meta_path).resolve()) if meta_path is not None else None}
    cfg = config or PrepareConfig(min_rating=None, k_core=5, split="random")
    return prepare(name or category_name(reviews_path), inter, items, fields, cfg, info)
