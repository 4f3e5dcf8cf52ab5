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
- 2014 "ratings only": ``ratings_<Cat>.csv(.gz)``, headerless CSV ``user,item,rating,timestamp`` (seconds),
  e.g. ``A2XVJBSRI3SWDI,0000031887,5.0,1383523200``; its ``meta_<Cat>`` file is read as for the reviews.
  Only this name is read as CSV: 2018's ratings-only ``<Cat>.csv`` files put the item first.

A review without a user or item id is an error, as is any malformed line. A review without a rating or a
time (the field absent, null or empty) is skipped, with one warning saying how many and the first line;
when no line of a file has one, the interactions are read without that column (with a warning), which
the preparation supports (only ``min_rating`` and a temporal split need it, and say so).

All three may give a ``price``: a number (2014, 2023) or a string such as ``"$12.99"`` (2018). It is
kept as a float column (not a text field) so profiles can speak of a typical price; anything that is
not one amount (a range ``"$5.99 - $9.99"``, an HTML fragment, empty) becomes NaN.

The format is recognised from the fields of each record, so the three can be read by one reader.
Files are streamed line by line (they reach several GB); frames are built once at the end.
"""
from __future__ import annotations

import ast
import codecs
import csv
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
from recgoat.words import plural

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


def _decode(n: int, raw: bytes) -> tuple[str, bool]:
    """Line ``n`` as text, a leading byte-order mark dropped, and whether it was UTF-8 (bytes that are not are
    read as U+FFFD: the caller warns once)."""
    if n == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) for each non-blank line of a plain or gzipped file.

    Lines are decoded one by one: a leading byte-order mark is dropped, and bytes that are not UTF-8 are
    read as U+FFFD with one warning naming the first such line (never silently). A file that cannot be
    read (a damaged .gz included) is one DataError naming it.
    """
    not_utf8, first_not_utf8 = 0, 0
    try:
        with _open_binary(path) as fh:
            for n, raw in enumerate(fh, 1):
                line, utf8 = _decode(n, raw)
                if not utf8:
                    not_utf8, first_not_utf8 = not_utf8 + 1, first_not_utf8 or n
                line = line.strip()
                if line:
                    yield n, line
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        # zlib.error (a damaged deflate stream inside a .gz) is no OSError: it escaped as a bare traceback
        raise DataError(path, f"cannot be read: {e}") from None
    if not_utf8:
        warnings.warn(f"{path}: {plural(not_utf8, 'line is', 'lines are')} not valid UTF-8 (first: line "
                      f"{first_not_utf8}); {'its' if not_utf8 == 1 else 'their'} undecodable bytes were read as U+FFFD "
                      "(check the file's encoding)", UserWarning, stacklevel=4)


def _records(path: Path, literal_ok: bool) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line (:func:`_lines`); JSON, or a Python literal where allowed."""
    use_literal = False  # switches on after the first line that only parses as a literal
    for n, line in _lines(path):
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
            raise DataError(path, f"malformed line {n}: expected an object, got {type(rec).__name__}")
        yield n, rec


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


# the two columns a review may lack (skipped, or the column left out: see _interactions), and how the JSON
# releases name them
_OPTIONAL = {"rating": "rating (rating/overall)", "timestamp": "time (timestamp/unixReviewTime)"}
# what a column left out of every line costs: said in the warning
_WITHOUT = {"rating": "min_rating cannot filter them",
            "timestamp": "no temporal split, and a repeated (user, item) pair keeps its last line"}
#: Amazon 2014's ratings-only files, headerless ``user,item,rating,timestamp`` CSV (plain or gzipped)
RATINGS_FILE = re.compile(r"^ratings_.+\.csv(\.gz)?$")
_CSV = re.compile(r"\.csv(\.gz)?$")


def read_reviews(path: str | Path) -> tuple[pd.DataFrame, str]:
    """Interactions (user, item, rating, timestamp in seconds) and the release they look like.

    A review with no rating or time is skipped (one warning); a file with none at all is read without that
    column (see the module docstring). ``ratings_<Cat>.csv`` files are read by :func:`read_ratings_csv`.
    """
    path = Path(path)
    if _CSV.search(path.name):
        return read_ratings_csv(path), "2014"
    users: list[str] = []
    items: list[str] = []
    values: dict[str, list[Any]] = {"rating": [], "timestamp": []}
    missing: dict[str, list[int]] = {"rating": [], "timestamp": []}  # row positions lacking the value
    line_of: list[int] = []
    release = None
    # the 2014 files are read by their authors' own code with eval(): "loose" Python-literal lines too
    for n, rec in _records(path, literal_ok=True):
        if release is None:
            release = "2023" if "user_id" in rec else "2014/2018"
        user = _id(path, n, _first(rec, ("user_id", "reviewerID")), "user (user_id/reviewerID)")
        item = _id(path, n, _first(rec, ("parent_asin", "asin")), "item (parent_asin/asin)")
        for field, value in (("user (user_id/reviewerID)", user), ("item (parent_asin/asin)", item)):
            if value is None:
                raise DataError(path, f"malformed line {n}: missing or empty {field}")
        for col, keys in (("rating", ("rating", "overall")), ("timestamp", ("timestamp", "unixReviewTime"))):
            value = _first(rec, keys)
            if value is None or (isinstance(value, str) and value == ""):
                missing[col].append(len(users))
                value = None
            values[col].append(value)
        users.append(user)
        items.append(item)
        line_of.append(n)
    if not users:
        raise DataError(path, "no reviews in this file")
    df, kept_lines = _interactions(path, users, items, values, missing, line_of, _OPTIONAL)
    if "timestamp" not in df.columns:
        return df, release
    ts = df["timestamp"].to_numpy()
    if release == "2023":
        ts = _seconds_2023(path, ts, kept_lines)
    # 2023 timestamps are milliseconds; store seconds like every other loader (fractions kept)
    df["timestamp"] = seconds_array(ts) if release == "2023" else ts.astype(np.int64)
    return df, release


def _interactions(path: Path, users: list[str], items: list[str], values: dict[str, list[Any]],
                  missing: dict[str, list[int]], line_of: list[int], labels: dict[str, str]
                  ) -> tuple[pd.DataFrame, list[int]]:
    """The interactions frame (rating float32, timestamp float64 as read) and the line of each kept row.

    Rows lacking a rating or time (``missing``: their positions) are dropped with one warning; a column no
    row has is left out (one warning), so a file without ratings still loads. Values present must be finite
    numbers: else one DataError naming the first bad line, as before.
    """
    n = len(users)
    absent = [col for col in values if len(missing[col]) == n]
    if absent:
        warnings.warn(f"{path}: no line has a " + " or a ".join(labels[c] for c in absent) + ", so the interactions "
                      "have no " + " and no ".join(f"{c} column ({_WITHOUT[c]})" for c in absent),
                      UserWarning, stacklevel=3)
    keep = np.ones(n, bool)
    for col in values:
        if col not in absent:
            keep[missing[col]] = False
    n_skipped = n - int(keep.sum())
    lines = "ratings" if _CSV.search(path.name) else "reviews"  # a ratings_<Cat>.csv line is no review
    if n_skipped == n:
        # each column is missing on some lines but not all (else it would be absent): both lists hold a line
        firsts = ", ".join(f"first without a {c}: line {line_of[missing[c][0]]}" for c in values)
        raise DataError(path, f"no {lines[:-1]} has both a {' and a '.join(labels.values())} ({firsts})")
    if n_skipped:
        # rows skipped, never silently: a research user must be able to tell the dataset shrank and where
        why = ", ".join(f"{len(missing[c])} without a {labels[c]}" for c in values
                        if c not in absent and missing[c])
        first = line_of[int(np.flatnonzero(~keep)[0])]
        warnings.warn(f"{path}: {n_skipped} of {n} {lines} skipped ({why}; first: line {first}); the other "
                      f"{n - n_skipped} are read", UserWarning, stacklevel=3)
        where = np.flatnonzero(keep)
        users, items = [users[i] for i in where], [items[i] for i in where]
        line_of = [line_of[i] for i in where]
        values = {c: [v[i] for i in where] for c, v in values.items()}
    df = pd.DataFrame({"user": users, "item": items})
    for col, vals in values.items():
        if col in absent:
            continue
        num = pd.to_numeric(pd.Series(vals, dtype=object), errors="coerce")
        if num.isna().any():
            first = int(np.flatnonzero(num.isna().to_numpy())[0])
            raise DataError(path, f"{plural(int(num.isna().sum()), 'review has', 'reviews have')} a non-numeric "
                                  f"or NaN {col} "
                                  f"(first: line {line_of[first]}, value {vals[first]!r})")
        # JSON's 1e999 is inf: a rating that poisons weights, a time that wraps around in int64
        huge = ~(np.abs(num.to_numpy(np.float64)) < MAX_SECONDS)
        if huge.any():
            first = int(np.flatnonzero(huge)[0])
            raise DataError(path, f"{plural(int(huge.sum()), 'review has', 'reviews have')} an infinite or "
                                  f"out-of-range {col} "
                                  f"(first: line {line_of[first]}, value {vals[first]!r})")
        df[col] = num.to_numpy(np.float32 if col == "rating" else np.float64)
    return df, line_of


def read_ratings_csv(path: str | Path) -> pd.DataFrame:
    """Interactions from Amazon 2014's ratings-only ``ratings_<Cat>.csv``: headerless ``user,item,rating,
    timestamp`` lines (timestamps in seconds), plain or gzipped.

    Bad lines are treated as in the JSON files: a wrong number of fields, a missing user or item, or a line
    that is a header is one DataError naming the line; an empty rating or time skips the line (one warning).
    """
    path = Path(path)
    if not RATINGS_FILE.match(path.name):
        # 2018's ratings-only <Cat>.csv is item,user,rating,timestamp: read by this order, users and items swap
        raise DataError(path, "not an Amazon ratings file: only Amazon 2014's ratings_<Cat>.csv[.gz] "
                              "(headerless user,item,rating,timestamp) is read as CSV; rename a file in that "
                              "format to ratings_<Cat>.csv, or convert other CSVs to the generic layout "
                              "(interactions.csv with a header)")
    users: list[str] = []
    items: list[str] = []
    values: dict[str, list[Any]] = {"rating": [], "timestamp": []}
    missing: dict[str, list[int]] = {"rating": [], "timestamp": []}
    line_of: list[int] = []
    for n, line in _lines(path):
        fields = _csv_fields(path, n, line)
        if len(fields) != 4:
            raise DataError(path, f"malformed line {n}: {len(fields)} fields, expected 4 "
                                  "(user,item,rating,timestamp)")
        if " " in line or "\t" in line:  # "A1, B1, 5.0, 1": rare, so stripped only then (speed)
            fields = [f.strip() for f in fields]
        user, item, rating, ts = fields
        # a header (a file re-saved with one) read as data was a "non-numeric rating" error at best
        if not users and rating and ts and not _is_number(rating) and not _is_number(ts):
            raise DataError(path, f"line {n} looks like a header ({line[:80]!r}): Amazon's ratings_<Cat>.csv "
                                  "files have none; remove it (the columns are read as user,item,rating,"
                                  "timestamp in this order)")
        for field, value in (("user (field 1)", user), ("item (field 2)", item)):
            if not value:
                raise DataError(path, f"malformed line {n}: missing or empty {field}")
        for col, value in (("rating", rating), ("timestamp", ts)):
            if not value:
                missing[col].append(len(users))
            values[col].append(value or None)
        users.append(user)
        items.append(item)
        line_of.append(n)
    if not users:
        raise DataError(path, "no ratings in this file")
    df, _ = _interactions(path, users, items, values, missing, line_of,
                          {"rating": "rating (field 3)", "timestamp": "time (field 4)"})
    if "timestamp" in df.columns:
        df["timestamp"] = df["timestamp"].to_numpy().astype(np.int64)  # seconds, as 2014's review files
    return df


def _csv_fields(path: Path, n: int, line: str) -> list[str]:
    """The comma-separated fields of one line; quoted fields (a file re-saved by a spreadsheet) are unquoted."""
    if '"' not in line:
        return line.split(",")  # Amazon's own files: no quotes, and split is far faster than csv
    try:
        return next(csv.reader([line], strict=True))
    except csv.Error as e:
        raise DataError(path, f"malformed line {n}: {e}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    raise DataError(path, f"{plural(int(in_seconds.sum()), 'timestamp is', 'timestamps are')} in seconds but the "
                          f"others in milliseconds "
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
        warnings.warn(f"{path}: {plural(len(ids), 'item has', 'items have')} several different lines (e.g. "
                      f"{ids[0]!r}); the first line "
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
    """``reviews_Baby_5.json.gz`` / ``Baby.json.gz`` / ``Baby_Products.jsonl`` / ``ratings_Baby.csv`` →
    ``amazon-baby…``."""
    stem = Path(reviews_path).name
    stem = re.sub(r"(\.jsonl?|\.csv|\.gz)+$", "", stem)
    stem = re.sub(r"^(reviews|ratings)_", "", stem)
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
