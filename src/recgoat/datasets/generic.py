"""The generic layout: an interactions file, an optional items table and an optional image folder.

Interactions may be CSV, TSV or Parquet, the items table also JSON (an array of objects, or JSON lines); column
names are given or guessed (``user``/``userId``/``user_id``…). Images are the items table's ``image`` column (or
``image_path``, ``poster``…: guessed as the ids are; a path, relative to the dataset folder or absolute, or a URL)
and, for rows it leaves empty, ``{image_dir}/{item_id}.jpg`` (or ``.png``/``.jpeg``/``.webp``).
"""
from __future__ import annotations

import csv
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from recgoat.errors import DataError
from recgoat.words import agree, plural

GUESSES = {
    "user": ["user", "user_id", "userid", "uid", "reviewerid", "user_id:token", "userID"],
    "item": ["item", "item_id", "itemid", "iid", "movieid", "asin", "parent_asin", "item_id:token", "itemID"],
    "rating": ["rating", "score", "overall", "stars", "rating:float"],
    "timestamp": ["timestamp", "time", "ts", "unixreviewtime", "date", "timestamp:float"],
    # an item table's picture: "image_path" or "poster" was silently taken as no image column at all (0 images,
    # no image features, not a word said), unless the files happened to be named images/<item_id>.jpg
    "image": ["image", "image_path", "image_file", "image_url", "imageurl", "imurl", "img", "img_path", "img_url",
              "picture", "photo", "poster", "poster_path", "thumbnail"],
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # the files images/<item_id>.* is matched with
TEXT_CANDIDATES = ["title", "brand", "categories", "category", "genres", "year", "description",
                   "overview", "tags", "features"]


def read_table(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet file with clear errors for missing, empty or malformed files."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix in JSON_SUFFIXES:
            df = _read_json_records(path)
        else:
            sep = _sep_for(path, sep)
            with warnings.catch_warnings():
                # index_col=False: rows with more fields than the header would otherwise make pandas take
                # the first field as the row index and silently shift every column (user ← item ← rating)
                warnings.simplefilter("error", pd.errors.ParserWarning)
                # a separator of several characters is a regex: only the python engine reads it (asked for
                # here, else pandas falls back to it with a ParserWarning, which would read as an error)
                df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                                 index_col=False, engine="python" if len(sep) > 1 else "c")
    except pd.errors.ParserWarning:
        raise DataError(path, f"data rows have more fields than the header's {_header_width(path, sep)}; "
                              "check the separator and the header line") from None
    except pd.errors.ParserError as e:
        if "EOF inside string" in str(e) or "unexpected end of data" in str(e):
            raise DataError(path, f"{_line_of(path, sep, -1)}: a quote opened here is never closed, so the rest of the "
                                  f"file was read into one field; {_QUOTE_FIX}") from None
        raise DataError(path, f"malformed line: {str(e).strip()}") from None
    except pd.errors.EmptyDataError:
        raise DataError(path, "file is empty") from None
    except UnicodeDecodeError:
        # pandas' message gives a byte offset inside its read buffer, which points nowhere in the file
        raise DataError(path, _not_utf8(path)) from None
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot be read: {e}") from None
    if len(df) == 0:
        raise DataError(path, "file has a header but no rows")
    return df


_QUOTE_FIX = 'close the quote, or double it ("") to write it literally'
JSON_SUFFIXES = (".json", ".jsonl")
# an item table may also be JSON (what a catalogue export or a scraper writes); items.json was silently ignored
ITEM_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", *JSON_SUFFIXES)


def _read_json_records(path: Path) -> pd.DataFrame:
    """A JSON file of records: an array of objects (``.json``) or one object per line (``.jsonl``, or a ``.json``
    holding lines), each cell as the text a CSV gives (lists joined with ", ", a number as written, an empty
    value missing), so the table is read as a CSV item table is."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
        line_of = None
    except json.JSONDecodeError as e:
        if path.suffix == ".json" and not (e.msg == "Extra data" and text.lstrip()[:1] == "{"):
            raise DataError(path, f"line {e.lineno}: not valid JSON ({e.msg}); expected an array of objects, "
                                  "one per item, or one object per line (JSON lines)") from None
        data, line_of = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as e2:
                raise DataError(path, f"line {n}: not valid JSON ({e2.msg}); expected one object per line") \
                    from None
            line_of.append(n)
    if isinstance(data, dict):
        data = [data] if path.suffix == ".jsonl" else data
    if not isinstance(data, list):
        raise DataError(path, f"holds a JSON {type(data).__name__}, not an array of objects (one per item)")
    if not data:
        raise DataError(path, "holds no records (one JSON object per item)")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            where = f"line {line_of[i]}" if line_of else f"entry {i + 1}"
            raise DataError(path, f"{where}: a JSON {type(rec).__name__}, not an object (one per item)")
    columns = list(dict.fromkeys(k for rec in data for k in rec))
    image_cols = {c for c in columns if str(c).lower() in GUESSES["image"]}
    # dtype=str: the columns read_csv(dtype=str) gives (missing cells stay NaN), so both read alike
    return pd.DataFrame({c: pd.Series([_json_cell(rec.get(c), c in image_cols) for rec in data], dtype=str)
                         for c in columns}, columns=columns)


def _json_cell(value, image: bool = False):
    """One JSON value as the text a CSV cell holds (NaN when empty): a list joined with ", " (an image column's
    list: its first entry), a whole float as an integer's text (a year 1995.0 is "1995"), an object as JSON."""
    if isinstance(value, list):
        parts = [v for v in (_json_cell(v, image) for v in value) if isinstance(v, str)]
        if image:
            return parts[0] if parts else np.nan
        return ", ".join(parts) if parts else np.nan
    if value is None or value == "":
        return np.nan
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return np.nan
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _sep_for(path: Path, sep: str | None) -> str:
    """The separator a text table is read with: tabs for .tsv/.inter/.tab, else commas, unless given."""
    if sep is not None:
        return sep
    return "\t" if path.suffix in (".tsv", ".inter", ".tab") else ","


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8 text, for the error message."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "is UTF-16 text (e.g. Excel's 'Unicode text'); save it as UTF-8"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return f"line {line} is not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8"
    return "is not UTF-8 text; save it as UTF-8"


def _record_lines(path: Path, sep: str) -> list[int] | None:
    """The 1-based line each record starts on (the header first), blank lines skipped as pandas skips them;
    a record cut off inside an open quote at the end comes last. None for a regex separator (no csv reader
    splits by one)."""
    if len(sep) != 1:
        return None
    starts: list[int] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        done = 0
        for record in reader:
            if record:
                starts.append(done + 1)
            done = reader.line_num
    return starts


def _line_of(path: Path, sep: str, row: int) -> str:
    """``line N`` where data row ``row`` (0-based; -1: the last record read) starts, else ``data row N``."""
    try:
        starts = _record_lines(path, sep)
    except (OSError, UnicodeDecodeError, csv.Error):
        starts = None
    if starts is None or len(starts) < 2:
        return f"data row {row + 1}" if row >= 0 else "a line"
    return f"line {starts[row + 1] if row >= 0 else starts[-1]}"


def _check_line_breaks(df: pd.DataFrame, path: Path, sep: str | None, keys: dict[str, str]) -> None:
    """An unclosed quote reads the following lines, rows and all, into one field. In a ``keys`` column (label →
    column: ids, ratings, times) no line break is ever valid: a DataError naming the line. Text columns may
    hold real line breaks, so there only lines shaped like whole rows (the header's field count) are warned
    about; pandas gave no sign of either."""
    if path.suffix == ".parquet":
        return
    sep = _sep_for(path, sep)
    broken = {c: _has_break(df[c]) for c in df.columns if not pd.api.types.is_numeric_dtype(df[c].dtype)}
    for label, col in keys.items():
        if col in broken and broken[col].any():
            row = int(np.flatnonzero(broken[col])[0])
            value = str(df[col].iloc[row])
            raise DataError(path, f"{_line_of(path, sep, row)}: the {label} runs over {len(_lines(value))} "
                                  f"lines ({value[:60]!r}): a quote opened there is never closed, so the lines "
                                  f"after it were read into it; {_QUOTE_FIX}")
    split = (lambda line: re.split(sep, line)) if len(sep) > 1 else (lambda line: line.split(sep))
    for col, mask in broken.items():
        for row in np.flatnonzero(mask):
            lines = _lines(str(df[col].iloc[row]))
            rows = sum(len(split(line)) == len(df.columns) for line in lines[1:])
            if rows and len(df.columns) > 1:
                warnings.warn(f"{path}: {_line_of(path, sep, int(row))}: column {col!r} runs over "
                              f"{len(lines)} lines, {rows} of them shaped like whole rows: if a quote "
                              f"is left open there, those rows were read into it ({_QUOTE_FIX})", stacklevel=3)
                return


def _lines(value: str) -> list[str]:
    return re.split(r"\r\n|\r|\n", value)


def _has_break(col: pd.Series) -> np.ndarray:
    return col.astype("string").str.contains(r"[\r\n]", regex=True).fillna(False).to_numpy(bool)


def _header_width(path: Path, sep: str) -> int:
    """Number of fields on the header line (for the error message only)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            line = fh.readline().rstrip("\r\n")
    except OSError:
        return 0
    try:  # pandas reads a separator of several characters as a regex
        return len(re.split(sep, line)) if len(sep) > 1 else len(line.split(sep))
    except re.error:
        return len(line.split(sep))


def guess_column(df: pd.DataFrame, role: str, given: str | None, path: Path, required: bool,
                 warn_several: bool = False) -> str | None:
    if given is not None:
        if given not in df.columns:
            spaced = [c for c in df.columns if str(c).strip() == given]
            hint = f"; column names have spaces around them ({spaced[0]!r}): remove them" if spaced else ""
            raise DataError(path, f"missing column {given!r} (for {role}); columns are {list(df.columns)}{hint}")
        return given
    order = [g.lower() for g in GUESSES[role]]
    # every column, not one per lower-cased name: "User" beside "user" silently took the last one
    matches = sorted((c for c in df.columns if str(c).lower() in order), key=lambda c: order.index(str(c).lower()))
    if matches:
        if len(matches) > 1 and warn_several:
            # e.g. item_id beside an item name, or asin beside parent_asin: the wrong one merges or splits ids
            what = f"{role} id" if role in ("user", "item") else f"{role} column"
            warnings.warn(f"{path}: columns {matches} could each be the {what}; using {matches[0]!r} (rename "
                          f"or drop the others, or name it with recgoat.datasets.generic.load_generic(root, "
                          f"{role}_col=...))", stacklevel=2)
        return matches[0]
    # " rating" or "timestamp ": an optional column was silently taken as absent (a required one was refused)
    spaced = [c for c in df.columns if str(c).strip().lower() in order]
    if spaced:
        raise DataError(path, f"column {spaced[0]!r} is not read as the {role}: column names have spaces around "
                              "them; remove the spaces after the separators")
    if required:
        raise DataError(path, f"missing column for {role}: none of {GUESSES[role]} among {list(df.columns)}"
                              + _header_hint(df, role))
    return None


def _header_hint(df: pd.DataFrame, role: str) -> str:
    """Why a header missed every guess, when it shows: another separator."""
    if len(df.columns) == 1:
        seps = [name for ch, name in ((";", "';'"), ("\t", "tabs"), (",", "','"), ("|", "'|'"))
                if ch in str(df.columns[0])]
        if seps:
            return f"; the header was read as one column: is the file separated by {seps[0]}?"
    return ""  # (spaces around the names are told by guess_column itself, for optional columns too)


def _numeric(df: pd.DataFrame, col: str, path: Path, dtype) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce")
    bad, what = values.isna().to_numpy(bool), "missing or non-numeric"
    if not bad.any():
        # "inf" parses as a number but is no rating or time: it would poison weights or wrap around in int64
        bad, what = ~np.isfinite(values.to_numpy(np.float64)), "infinite"
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(path, f"column {col!r} has {int(bad.sum())} {what} values "
                              f"(first at data row {first + 1}: {df[col].iloc[first]!r})")
    return values.to_numpy(dtype)


# Unix seconds beyond this (year ~2.9e11) are no time; int64 could not hold them as nanoseconds anyway.
MAX_SECONDS = 2**53
_EPOCH = pd.Timestamp(0, tz="UTC")


def timestamps(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    """Unix seconds from numbers, datetime columns (Parquet) or date strings, else a DataError: int64 when every
    time is a whole second, else float64. Cut to whole seconds, times within one second tied and a temporal or
    leave-one-out split broke the tie at random, putting a later item in training and an earlier one in test.

    Datetimes are converted through a Timedelta, never ``astype("int64")``: that gives the column's own
    unit (nanoseconds under pandas 2, microseconds for strings under pandas 3, milliseconds from Parquet),
    which was then read as seconds.
    """
    ts = df[col]
    dayfirst = False
    if pd.api.types.is_datetime64_any_dtype(ts.dtype):
        parsed = ts if getattr(ts.dt, "tz", None) is not None else ts.dt.tz_localize("UTC")
        bad = parsed.isna()
    else:
        numeric = pd.to_numeric(ts, errors="coerce")
        if numeric.notna().all():
            values = numeric.to_numpy(np.float64)
            out_of_range = ~(np.abs(values) < MAX_SECONDS)  # inf too: it would wrap around in int64
            if out_of_range.any():
                first = int(np.flatnonzero(out_of_range)[0])
                raise DataError(path, f"column {col!r} has {int(out_of_range.sum())} out-of-range timestamps "
                                      f"(first at data row {first + 1}: {ts.iloc[first]!r}); expected Unix "
                                      "seconds or dates")
            if pd.api.types.is_integer_dtype(numeric.dtype):
                return numeric.to_numpy(np.int64)
            return seconds_array(values)
        else:
            dayfirst = _day_first(ts, col, path)
            with warnings.catch_warnings():
                # pandas warns it parses element by element: the values are checked right below instead
                warnings.filterwarnings("ignore", message="Could not infer format", category=UserWarning)
                # and that 13/01/2020 is read day-first, telling to pass dayfirst=True (done: 13 is no month)
                warnings.filterwarnings("ignore", message="Parsing dates in", category=UserWarning)
                parsed = pd.to_datetime(ts, errors="coerce", utc=True, dayfirst=dayfirst)
                # the format is inferred from the first value: others in another (ISO) form, e.g. a date
                # then a date with a time, come out NaT; only those are parsed again one by one
                retry = parsed.isna() & ts.notna()
                if retry.any():
                    parsed[retry] = _retry_dates(ts, retry, dayfirst)
            # report the first value that is neither a number nor a date (not a valid number before it)
            bad = parsed.isna() & numeric.isna()
            if not bad.any():
                bad = parsed.isna()
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        value = ts.iloc[first]
        hint = ""
        if isinstance(value, str) and not pd.isna(pd.to_datetime(value, errors="coerce", format="mixed")):
            order = "day first" if dayfirst else "month first"
            hint = (f"; day and month in another order than the column's other dates ({order}): write all dates "
                    "in one order, or as ISO 8601 (2020-01-31)")
        raise DataError(path, f"column {col!r} has unparseable timestamps "
                              f"(first at data row {first + 1}: {value!r}){hint}")
    delta = parsed - _EPOCH
    whole = delta // pd.Timedelta(seconds=1)
    if (delta == whole * pd.Timedelta(seconds=1)).all():
        return whole.to_numpy(np.int64)
    return (delta / pd.Timedelta(seconds=1)).to_numpy(np.float64)


def seconds_array(values: np.ndarray) -> np.ndarray:
    """Unix seconds ``values`` (float64) as int64 when every one is a whole second, else as they are: a cut to
    whole seconds tied the times within one, and a temporal split broke such ties at random."""
    whole = np.floor(values)
    return whole.astype(np.int64) if (values == whole).all() else values


# the two leading numbers of a date such as 04/12/1997, 4.12.97 or 04-12-1997 15:55 (not 1997-12-04)
_DAY_MONTH = r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b"


def _day_first(ts: pd.Series, col: str, path: Path) -> bool:
    """Whether the column's dates are day first, decided by the whole column: a first or second number above
    12 tells the order. The first value alone could not: 04/12/1997 before 27/11/1997 made the file refused.
    Both orders in one column is a DataError naming one of each; when no value tells, the order pandas infers
    from the first value stays (month first for 04/12/1997, as in the US)."""
    values = ts[ts.notna()].astype(str)
    parts = values.str.extract(_DAY_MONTH).astype(float)
    # a part above 31 (97/12/04) is a year, no day
    day = parts[0].between(13, 31) & (parts[1] <= 12)
    month = parts[1].between(13, 31) & (parts[0] <= 12)
    if day.any() and month.any():
        rows = [ts.index.get_loc(values.index[int(np.flatnonzero(m.to_numpy())[0])]) for m in (day, month)]
        raise DataError(path, f"column {col!r} has dates with the day first (data row {rows[0] + 1}: "
                              f"{ts.iloc[rows[0]]!r}) and with the month first (data row {rows[1] + 1}: "
                              f"{ts.iloc[rows[1]]!r}): write all dates in one order, or as ISO 8601 (2020-01-31)")
    if day.any() or month.any():
        return bool(day.any())
    first = str(values.iloc[0]) if len(values) else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Parsing dates in %d/%m/%Y format when dayfirst=False"
        fmt = guess_datetime_format(first) or ""
    return "%d" in fmt and "%m" in fmt and fmt.index("%d") < fmt.index("%m")


def _retry_dates(ts: pd.Series, retry: pd.Series, dayfirst: bool) -> pd.Series:
    """The ``retry`` values parsed one by one, day and month in the column's order (:func:`_day_first`): read
    on its own, 01/02/2020 10:00 after 13/01/2020 was 2 January, not 1 February."""
    values = ts[retry].astype(str)
    # a value only readable in the other order was silently read in it: refused (kept as a guard)
    parts = values.str.extract(_DAY_MONTH).astype(float)
    other_order = (parts[1] if dayfirst else parts[0]) > 12
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed", dayfirst=dayfirst)
    if dayfirst:  # which dateutil applies to year-first dates too: 2020-01-02 became 1 February
        year_first = values.str.match(r"\s*[+-]?\d{4}[/.-]").to_numpy(bool)
        parsed[year_first] = pd.to_datetime(values[year_first], errors="coerce", utc=True, format="mixed")
    return parsed.mask(other_order.to_numpy())


def id_strings(ids: pd.Series) -> pd.Series:
    """Ids as the strings every loader and :func:`~recgoat.datasets.preprocess.prepare` use (one function: the
    two spelled float ids differently). When every float id is a whole number (Parquet written by pandas after
    a NaN passed through an int column, or a frame pandas upcast) they give ``"7"``, not ``"7.0"``: the same
    id as in a CSV, as typed to ``recommend --user 7``, and as an int 7 beside them in an object column. With
    a fractional one among them the floats are no integers: all keep their text (``"7.5"``, ``"2.0"``)."""
    if isinstance(ids.dtype, pd.StringDtype):
        return ids
    if isinstance(ids.dtype, pd.CategoricalDtype):
        return id_strings(ids.astype(object))
    if pd.api.types.is_float_dtype(ids.dtype):
        values = ids.to_numpy(np.float64, na_value=np.nan)
        if _whole(values).all():
            return pd.Series(values.astype(np.int64), index=ids.index, name=ids.name).astype(str)
    elif ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=True) not in ("string", "integer", "empty"):
        values = ids.to_numpy(object)
        floats = np.fromiter((isinstance(v, (float, np.floating)) for v in values), bool, len(values))
        if floats.any() and _whole(values[floats].astype(np.float64)).all():
            values = values.copy()
            values[floats] = values[floats].astype(np.float64).astype(np.int64)
            return pd.Series(values, index=ids.index, name=ids.name).astype(str)
    return ids.astype(str)


def _whole(values: np.ndarray) -> np.ndarray:
    """Which floats are whole numbers an int64 holds exactly."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values == np.floor(values)) & (np.abs(values) <= 2**53)


def _check_ids(ids: pd.Series, role: str, path: Path) -> None:
    """Refuse empty ids. Only a missing cell is empty: CSVs are read without NA conversion, so an id
    spelled ``nan``, ``None`` or ``NA`` is an ordinary id in every format (CSV, TSV, Parquet)."""
    empty = ids.isna() | (ids.astype(str) == "")
    if empty.any():
        first = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(path, f"column {ids.name!r} has {int(empty.sum())} empty {role} ids "
                              f"(first at data row {first + 1})")


def read_interactions(path: str | Path, user_col: str | None = None, item_col: str | None = None,
                      rating_col: str | None = None, timestamp_col: str | None = None,
                      sep: str | None = None) -> pd.DataFrame:
    """Interactions with standard columns ``user``, ``item`` (str) and ``rating``/``timestamp`` if present."""
    path = Path(path)
    df = read_table(path, sep)
    cols = {
        "user": guess_column(df, "user", user_col, path, True, warn_several=True),
        "item": guess_column(df, "item", item_col, path, True, warn_several=True),
        "rating": guess_column(df, "rating", rating_col, path, False),
        "timestamp": guess_column(df, "timestamp", timestamp_col, path, False),
    }
    _check_line_breaks(df, path, sep, {f"{role} {'id' if role in ('user', 'item') else 'value'}": col
                                       for role, col in cols.items() if col is not None})
    for role in ("user", "item"):
        _check_ids(df[cols[role]], role, path)
    out = pd.DataFrame({"user": id_strings(df[cols["user"]]), "item": id_strings(df[cols["item"]])})
    if cols["rating"]:
        out["rating"] = _numeric(df, cols["rating"], path, np.float32)
    if cols["timestamp"]:
        out["timestamp"] = timestamps(df, cols["timestamp"], path)
    return out


def read_items(path: str | Path, item_col: str | None = None, image_dir: str | Path | None = None,
               image_col: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Item table with ``item_id`` (str), text fields, and ``image`` (path) when images are known."""
    path = Path(path)
    df = read_table(path)
    col = guess_column(df, "item", item_col, path, True)
    if col != "item_id" and "item_id" in df.columns:
        # renaming col to item_id would give two item_id columns (a pandas traceback further on)
        raise DataError(path, f"columns {col!r} and 'item_id' both name the item; keep one, or rename the other")
    keys = {"item id": col}
    # " title" or "image ": a text or image column silently went unused
    spaced = [c for c in df.columns if str(c).strip().lower() in [*TEXT_CANDIDATES, *GUESSES["image"]]
              and str(c) != str(c).strip()]
    if spaced:
        raise DataError(path, f"column {spaced[0]!r} is not read as {str(spaced[0]).strip()!r}: column names have "
                              "spaces around them; remove the spaces after the separators")
    image = image_col if image_col is not None and image_col in df.columns else \
        guess_column(df, "image", None, path, False, warn_several=True)
    if image is not None:
        keys["image"] = image
    _check_line_breaks(df, path, None, keys)
    _check_ids(df[col], "item", path)
    item_ids = id_strings(df[col])
    dup = item_ids.duplicated(keep=False)
    if dup.any():
        # which row would describe the item is ambiguous: refuse rather than silently keep the first
        ids = item_ids[dup].unique()
        shown = ", ".join(repr(i) for i in ids[:5]) + (", …" if len(ids) > 5 else "")
        raise DataError(path, f"column {col!r} has {len(ids)} duplicated item ids ({shown}); "
                              "each item needs exactly one row")
    df = df.rename(columns={col: "item_id"})
    df["item_id"] = item_ids.to_numpy()
    for c in df.columns:
        df[c] = _whole_numbers(df[c])
    text_fields = [c for c in df.columns if c.lower() in TEXT_CANDIDATES]
    if image_col is not None:
        if image_col not in df.columns:
            raise DataError(path, f"missing image column {image_col!r}")
        df["image"] = df[image_col]
    elif image is not None and image != "image":
        df = df.rename(columns={image: "image"})  # the guessed spelling (image_path, poster…) is the image column
    if image_col is None and image_dir is not None:
        if "image" in df.columns:
            # the table's own image column wins (paths relative to the dataset folder, or URLs): the images/
            # folder, matched by item id stem, fills only the rows it leaves empty
            given = df["image"].where(df["image"].astype("string").str.strip().fillna("") != "")
            found = find_images(df["item_id"][given.isna()], image_dir).reindex(df.index)
            df["image"] = given.astype(object).where(given.notna(), found)
        else:
            df["image"] = find_images(df["item_id"], image_dir)
            _warn_unmatched_images(df["image"], Path(image_dir), path)
    return df, text_fields


def _warn_unmatched_images(found: pd.Series, image_dir: Path, items_path: Path) -> None:
    """An image folder beside an item table without an image column, none of whose pictures is named after
    an item id: every item was silently left without an image (``images: 0``), as when the pictures are
    named ``poster_0001.jpg`` and the table's column of paths has a name not recognised."""
    if found.notna().any():
        return
    n = sum(1 for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if n:
        warnings.warn(f"{image_dir}: none of its {n} image files is named after an item id of {items_path.name} "
                      f"(images/<item_id>.jpg), and {items_path.name} has no image column (one of "
                      f"{', '.join(GUESSES['image'])}): no item gets an image; name the column of image paths "
                      "'image', or the files after the item ids", UserWarning, stacklevel=4)


def _whole_numbers(col: pd.Series) -> pd.Series:
    """A float column holding only whole numbers (and gaps) as their integer text, as CSV columns are read.

    Parquet stores an integer column with a gap as floats, so a year 2000 became the text "2000.0" in the
    item texts the encoders read and on the service's cards; CSV columns are read as text and never are.
    """
    if not pd.api.types.is_float_dtype(col.dtype):
        return col
    v = col.to_numpy(np.float64, na_value=np.nan)
    known = ~np.isnan(v)
    if not known.any() or not (np.abs(v[known]) < 2**53).all() or not (v[known] == np.round(v[known])).all():
        return col
    return col.astype("Int64").astype("string")


def find_images(item_ids: pd.Series, image_dir: str | Path) -> pd.Series:
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(image_dir, "image folder not found")
    by_stem: dict[str, list[Path]] = {}
    for p in image_dir.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(p.stem, []).append(p)
    ids = item_ids.astype(str)
    # 7.jpg beside 7.png: which one came first in the folder listing (not the same on every disk) was used
    several = [i for i in pd.unique(ids) if len(by_stem.get(i, ())) > 1]
    if several:
        names = ", ".join(sorted(p.name for p in by_stem[several[0]]))
        raise DataError(image_dir, f"{plural(len(several), 'item has', 'items have')} several images (item "
                                   f"{several[0]!r}: {names}); "
                                   "keep one per item")
    return ids.map({stem: _absolute(paths[0]) for stem, paths in by_stem.items() if stem in set(ids)})


def _absolute(path: Path) -> str:
    """The file's resolved path; a symbolic link that loops as it is (Python 3.11 raises RuntimeError, 3.13
    OSError), for the image encoder to name it, not a traceback while the dataset loads."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path.absolute())


def load_generic(root: str | Path, interactions: str | None = None, items: str | None = None,
                 image_dir: str | None = None, **columns) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """Read a folder in the generic layout: ``interactions.{csv,tsv,parquet}``, ``items.*``, ``images/``."""
    root = Path(root)

    def pick(stem: str, given: str | None, suffixes: tuple[str, ...] = (".csv", ".tsv", ".parquet")) -> Path | None:
        if given is not None:
            return root / given
        found = [root / f"{stem}{ext}" for ext in suffixes if (root / f"{stem}{ext}").exists()]
        if len(found) > 1:
            # e.g. a CSV left beside the Parquet made from it: reading one silently may read stale data
            raise DataError(root, f"several {stem} files ({', '.join(p.name for p in found)}); keep one, or "
                                  f"name it with recgoat.datasets.generic.load_generic(root, {stem}=...)")
        return found[0] if found else None

    inter_path = pick("interactions", interactions)
    if inter_path is None:
        raise DataError(root, "no interactions.csv, .tsv or .parquet in this folder")
    inter = read_interactions(inter_path, **{k: v for k, v in columns.items() if k.endswith("_col")})
    items_path = pick("items", items, ITEM_TABLE_SUFFIXES)
    if items_path is None:
        _warn_unread_item_table(root)
    item_df, text_fields = None, []
    if items_path is not None:
        img = root / (image_dir or "images")
        item_df, text_fields = read_items(items_path, image_dir=img if img.is_dir() else None)
        warn_missing_items(inter, item_df, inter_path, items_path)
    elif (root / (image_dir or "images")).is_dir():
        # images/<item_id>.jpg with no item table: the pictures were silently left out (0 images, no image
        # features); the item table is then the interactions' item ids and their images
        ids = pd.Series(pd.unique(inter["item"]), dtype=object)
        item_df = pd.DataFrame({"item_id": ids, "image": find_images(ids, root / (image_dir or "images"))})
    return inter, item_df, text_fields


def _warn_unread_item_table(root: Path) -> None:
    """An ``items.<ext>`` file of a format not read (items.xlsx, items.txt): the items were silently left
    without text or images."""
    other = sorted(p.name for p in root.glob("items.*") if p.is_file() and p.stem == "items")
    if other:
        warnings.warn(f"{root / other[0]}: not read as the item table (items.csv, .tsv, .parquet, .json or "
                      ".jsonl are), so the items get no text or image features; save it in one of those formats",
                      UserWarning, stacklevel=3)


def warn_missing_items(inter: pd.DataFrame, items: pd.DataFrame, inter_path: Path, items_path: Path,
                       entry: str = "row in this table") -> None:
    """Items absent from the item table are allowed (they get no text or image), but said once (``entry``:
    what the item file holds per item, e.g. an Amazon meta file's "line in this file"). Called by a loader,
    so the warning points at the loader's caller. When not one item has an entry (and the table has rows),
    the two files spell their ids differently ('1 ' and '1', '00242' and '242', '1.0' and '1'): a DataError,
    as the dataset would silently load with no text or image at all."""
    used = pd.unique(inter["item"])
    table = pd.unique(items["item_id"])
    missing = used[~pd.Index(used).isin(table)]
    if not len(missing):
        return
    inter_name = Path(inter_path).name if Path(inter_path).parent == Path(items_path).parent else str(inter_path)
    hint = _id_spelling_hint(missing, table, inter_name)
    if len(missing) == len(used) and len(table):
        raise DataError(items_path, f"none of the {plural(len(used), 'item')} in {inter_name} "
                                    f"{agree(len(used), 'has', 'have')} a {entry}: ids here are e.g. "
                                    f"{_examples(table)}, in {inter_name} {_examples(used)}"
                                    + (f"; {hint}" if hint else "; are both files of the same catalogue?"))
    warnings.warn(f"{items_path}: {len(missing):,} of the {len(used):,} items in {inter_name} "
                  f"{agree(len(missing), 'has', 'have')} no {entry} (e.g. {_examples(missing)[1:-1]}); "
                  f"{agree(len(missing), 'it gets', 'they get')} no text or image features"
                  + (f"; {hint}" if hint else ""), UserWarning, stacklevel=3)


def _examples(ids, n: int = 3) -> str:
    """A few ids as Python literals, so that a space or a leading zero shows."""
    shown = [repr(str(i)) for i in ids[:n]]
    return "[" + ", ".join(shown) + (", …]" if len(ids) > n else "]")


# how two files commonly spell one id differently, each with the normal form both are compared in
_ID_SPELLINGS = (
    ("spaces around them", lambda s: s.str.strip()),
    ("leading zeros", lambda s: s.str.replace(r"^(\s*)0+(?=\d)", r"\1", regex=True)),
    ("a trailing '.0' (ids written as floats)",
     lambda s: s.str.replace(r"^(\s*[+-]?\d+)\.0+(?=\s*$)", r"\1", regex=True)),
    ("upper/lower case", lambda s: s.str.lower()),
)


def _id_spelling_hint(missing, table, inter_name: str) -> str:
    """Which spelling difference, if one, makes the missing ids match the table's: a hint for the message."""
    missing, table = pd.Series(missing, dtype=object).astype(str), pd.Series(table, dtype=object).astype(str)
    for what, normal in _ID_SPELLINGS:
        a, b = normal(missing), normal(table)
        hit = a.isin(set(b))
        if hit.any():
            first = int(np.flatnonzero(hit.to_numpy())[0])
            theirs = table[b == a.iloc[first]].iloc[0]
            return (f"the ids differ by {what} (item {theirs!r} here, {missing.iloc[first]!r} in {inter_name}): "
                    "write them the same way in both files")
    return ""
