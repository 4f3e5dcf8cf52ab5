"""Amazon review lines without a rating or a time (skipped, or the column left out), and Amazon 2014's
ratings-only ``ratings_<Cat>.csv`` files (headerless ``user,item,rating,timestamp``)."""
from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import PrepareConfig, load_amazon
from recgoat.datasets.amazon import category_name, read_amazon, read_reviews
from recgoat.errors import DataError

T0 = 1_383_523_200  # 2013-11-04, a 2014-release time


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _read(fn, *args, **kw):
    """``fn(*args, **kw)`` and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kw)
    return out, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _r2014(user: str, item: str, rating=None, ts=None) -> str:
    rec = {"reviewerID": user, "asin": item, "reviewText": "ok"}
    if rating is not None:
        rec["overall"] = rating
    if ts is not None:
        rec["unixReviewTime"] = ts
    return json.dumps(rec)


# ------------------------------------------------------------------------- reviews without rating or time
def test_reviews_lacking_a_rating_or_time_are_skipped_with_one_warning(tmp_path: Path) -> None:
    lines = [
        _r2014("A1", "B1", 5.0, T0),            # line 1
        _r2014("A2", "B1", None, T0 + 1),       # line 2: no overall
        "",                                     # line 3: blank (counted in line numbers, never a review)
        _r2014("A3", "B2", 4.0, T0 + 2),        # line 4
        _r2014("A4", "B2", 3.0, None),          # line 5: no unixReviewTime
        json.dumps({"reviewerID": "A5", "asin": "B3", "overall": None, "unixReviewTime": T0 + 4}),  # 6: null
        json.dumps({"reviewerID": "A6", "asin": "B3", "overall": "", "unixReviewTime": T0 + 5}),    # 7: empty
        _r2014("A7", "B4", 2.0, T0 + 6),        # line 8
    ]
    path = _write(tmp_path / "reviews_Baby.json", lines)
    (df, release), msgs = _read(read_reviews, path)
    assert release == "2014/2018"
    assert msgs == [f"{path}: 4 of 7 reviews skipped (3 without a rating (rating/overall), 1 without a time "
                    "(timestamp/unixReviewTime); first: line 2); the other 3 are read"]
    want = pd.DataFrame({"user": ["A1", "A3", "A7"], "item": ["B1", "B2", "B4"],
                         "rating": np.array([5.0, 4.0, 2.0], np.float32),
                         "timestamp": np.array([T0, T0 + 2, T0 + 6], np.int64)})
    assert df["user"].tolist() == want["user"].tolist() and df["item"].tolist() == want["item"].tolist()
    assert df["rating"].dtype == np.float32 and df["timestamp"].dtype == np.int64
    np.testing.assert_array_equal(df["rating"].to_numpy(), want["rating"].to_numpy())
    np.testing.assert_array_equal(df["timestamp"].to_numpy(), want["timestamp"].to_numpy())
    assert list(df.index) == [0, 1, 2]


def test_a_complete_file_reads_as_before_without_warnings(tmp_path: Path) -> None:
    lines = [_r2014(f"A{u}", f"B{i}", float(1 + (u + i) % 5), T0 + 10 * u + i) for u in range(3) for i in range(2)]
    path = _write(tmp_path / "Baby.json.gz", lines, gz=True)
    (df, _), msgs = _read(read_reviews, path)
    assert msgs == []
    assert list(df.columns) == ["user", "item", "rating", "timestamp"] and len(df) == 6
    assert df["timestamp"].tolist() == [T0 + 10 * u + i for u in range(3) for i in range(2)]


def test_2023_lines_skipped_keep_their_millisecond_conversion_and_line_numbers(tmp_path: Path) -> None:
    ms = 1_600_000_000_123
    recs = [{"user_id": "U1", "parent_asin": "P1", "rating": 5, "timestamp": ms},
            {"user_id": "U2", "parent_asin": "P1", "rating": 4},                      # line 2: no timestamp
            {"user_id": "U3", "parent_asin": "P2", "rating": 3, "timestamp": ms + 500},
            {"user_id": "U4", "parent_asin": "P2", "rating": "x", "timestamp": ms}]  # line 4: bad rating
    path = _write(tmp_path / "Baby_Products.jsonl", [json.dumps(r) for r in recs])
    # a bad value on a line after a skipped one is still refused, naming its own line
    with pytest.raises(DataError, match=r"Baby_Products\.jsonl: 1 review has a non-numeric or NaN rating "
                                        r"\(first: line 4, value 'x'\)"):
        _read(read_reviews, path)
    path = _write(path, [json.dumps(r) for r in recs[:3]])
    (df, release), msgs = _read(read_reviews, path)
    assert release == "2023" and df["user"].tolist() == ["U1", "U3"]
    np.testing.assert_array_equal(df["timestamp"].to_numpy(), [ms / 1000, (ms + 500) / 1000])
    assert msgs == [f"{path}: 1 of 3 reviews skipped (1 without a time (timestamp/unixReviewTime); first: "
                    "line 2); the other 2 are read"]


def test_a_missing_user_or_item_is_still_an_error(tmp_path: Path) -> None:
    lines = [_r2014("A1", "B1", 5.0, T0), _r2014("A2", "B1", None, T0),
             json.dumps({"asin": "B2", "overall": 4.0, "unixReviewTime": T0})]
    with pytest.raises(DataError, match=r"reviews_X\.json: malformed line 3: missing or empty user"):
        read_reviews(_write(tmp_path / "reviews_X.json", lines))
    lines[2] = json.dumps({"reviewerID": "A3", "asin": "", "unixReviewTime": T0})  # no rating either
    with pytest.raises(DataError, match=r"reviews_X\.json: malformed line 3: missing or empty item"):
        read_reviews(_write(tmp_path / "reviews_X.json", lines))


# ------------------------------------------------------------------- a column no line has: left out
def test_no_line_with_a_rating_reads_without_the_rating_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "Baby.json", [_r2014(f"A{u}", f"B{i}", None, T0 + u + i)
                                           for u in range(5) for i in range(5)])
    (df, _), msgs = _read(read_reviews, path)
    assert list(df.columns) == ["user", "item", "timestamp"] and len(df) == 25
    assert msgs == [f"{path}: no line has a rating (rating/overall), so the interactions have no rating column "
                    "(min_rating cannot filter them)"]
    ds, _ = _read(load_amazon, path)  # MMRec's default preparation needs no rating
    assert len(ds.interactions) == 25 and "rating" not in ds.interactions.columns
    with pytest.raises(DataError, match="min_rating=4.0 needs a 'rating' column"):
        _read(load_amazon, path, config=PrepareConfig(min_rating=4.0, k_core=0))


def test_no_line_with_a_time_reads_without_the_timestamp_column(tmp_path: Path) -> None:
    recs = [{"user_id": f"U{u}", "parent_asin": f"P{i}", "rating": 1 + (u + i) % 5}
            for u in range(5) for i in range(5)]
    path = _write(tmp_path / "Toys.jsonl", [json.dumps(r) for r in recs])
    (df, release), msgs = _read(read_reviews, path)
    assert release == "2023" and list(df.columns) == ["user", "item", "rating"]
    assert df["rating"].tolist() == [float(r["rating"]) for r in recs]
    assert len(msgs) == 1 and msgs[0].startswith(f"{path}: no line has a time (timestamp/unixReviewTime), so "
                                                 "the interactions have no timestamp column (no temporal split")
    with pytest.raises(DataError, match="a temporal split needs a timestamp column"):
        _read(load_amazon, path, config=PrepareConfig(split="temporal", k_core=0))
    ds, _ = _read(load_amazon, path)
    assert len(ds.interactions) == 25 and "timestamp" not in ds.interactions.columns


def test_neither_column_anywhere_and_both_partly(tmp_path: Path) -> None:
    path = _write(tmp_path / "Baby.json", [_r2014("A1", "B1"), _r2014("A2", "B2")])
    (df, _), msgs = _read(read_reviews, path)
    assert list(df.columns) == ["user", "item"] and df["item"].tolist() == ["B1", "B2"]
    assert len(msgs) == 1 and "no line has a rating (rating/overall) or a time" in msgs[0]
    # every line lacks one or the other: nothing would be left, so an error, not an empty dataset
    path = _write(tmp_path / "Toys.json", [_r2014("A1", "B1", 5.0, None), _r2014("A2", "B2", None, T0)])
    with pytest.raises(DataError, match=r"Toys\.json: no review has both a rating \(rating/overall\) and a time "
                                        r".*first without a rating: line 2, first without a timestamp: line 1"):
        _read(read_reviews, path)


# ---------------------------------------------------------------------- 2014 ratings-only CSV
RATINGS = ["A2XVJBSRI3SWDI,0000031887,5.0,1383523200",
           "A2ZY49IDE6TY5I,0000031887,4.0,1395273600",
           "A2XVJBSRI3SWDI,B00001W0DI,3.0,1314316800",
           "AJ9Z9TFFYF3ZS,0000031852,1.0,1395878400"]


def _check_ratings(df: pd.DataFrame) -> None:
    assert df["user"].tolist() == ["A2XVJBSRI3SWDI", "A2ZY49IDE6TY5I", "A2XVJBSRI3SWDI", "AJ9Z9TFFYF3ZS"]
    assert df["item"].tolist() == ["0000031887", "0000031887", "B00001W0DI", "0000031852"]  # leading zeros kept
    assert df["rating"].dtype == np.float32 and df["rating"].tolist() == [5.0, 4.0, 3.0, 1.0]
    assert df["timestamp"].dtype == np.int64
    assert df["timestamp"].tolist() == [1383523200, 1395273600, 1314316800, 1395878400]


@pytest.mark.parametrize("gz", [False, True])
def test_ratings_csv_is_read_exactly(tmp_path: Path, gz: bool) -> None:
    path = _write(tmp_path / ("ratings_Baby.csv" + (".gz" if gz else "")), RATINGS, gz=gz)
    (df, release), msgs = _read(read_reviews, path)
    assert msgs == [] and release == "2014" and list(df.columns) == ["user", "item", "rating", "timestamp"]
    _check_ratings(df)
    (inter, items, fields), _ = _read(read_amazon, path)
    assert items is None and fields == [] and inter.equals(df)
    assert category_name(path) == "amazon-baby"


def test_ratings_csv_with_its_meta_beside_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "ratings_Baby.csv", RATINGS)
    # 2014 meta lines are Python literals, read as for the review files
    meta = _write(tmp_path / "meta_Baby.json.gz", [repr({"asin": "0000031887", "title": "Tutu &amp; Bow",
                                                         "categories": [["Baby", "Clothing"]], "price": 6.5}),
                                                   repr({"asin": "B00001W0DI", "title": "Bib"})], gz=True)
    (inter, items, fields), msgs = _read(read_amazon, path, meta)
    _check_ratings(inter)
    assert fields == ["title", "categories"] and items["item_id"].tolist() == ["0000031887", "B00001W0DI"]
    assert items["title"].tolist() == ["Tutu & Bow", "Bib"]
    assert msgs == [f"{meta}: 1 of the 3 items in ratings_Baby.csv has no line in this file (e.g. "
                    "'0000031852'); it gets no text or image features"]
    ds, _ = _read(load_amazon, path, meta, config=PrepareConfig(k_core=0))
    assert ds.name == "amazon-baby" and len(ds.interactions) == 4 and ds.text_fields == ["title", "categories"]
    assert ds.info["layout"] == "amazon" and ds.info["meta"] == str(meta.resolve())


def test_ratings_csv_spaces_quotes_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "ratings_Baby.csv"
    text = ("\ufeff" + RATINGS[0] + "\r\n\r\n" + '"A2ZY49IDE6TY5I","0000031887","4.0","1395273600"\r\n'
            + RATINGS[2].replace(",", ", ") + "\r\n" + RATINGS[3] + "\r\n")
    path.write_bytes(text.encode("utf-8"))
    (df, _), msgs = _read(read_reviews, path)
    assert msgs == []
    _check_ratings(df)


def test_ratings_csv_empty_rating_or_time_skips_the_line(tmp_path: Path) -> None:
    lines = [RATINGS[0], "A2ZY49IDE6TY5I,0000031887,,1395273600", RATINGS[2], "AJ9Z9TFFYF3ZS,0000031852,1.0,"]
    path = _write(tmp_path / "ratings_Baby.csv", lines)
    (df, _), msgs = _read(read_reviews, path)
    assert msgs == [f"{path}: 2 of 4 ratings skipped (1 without a rating (field 3), 1 without a time (field 4); "
                    "first: line 2); the other 2 are read"]
    assert df["user"].tolist() == ["A2XVJBSRI3SWDI", "A2XVJBSRI3SWDI"]
    assert df["timestamp"].tolist() == [1383523200, 1314316800]


@pytest.mark.parametrize("bad, problem", [
    ("A1,B1,5.0", r"malformed line 3: 3 fields, expected 4 \(user,item,rating,timestamp\)"),
    ("A1,B1,5.0,1383523200,extra", r"malformed line 3: 5 fields, expected 4"),
    (",B1,5.0,1383523200", r"malformed line 3: missing or empty user \(field 1\)"),
    ("A1,,5.0,1383523200", r"malformed line 3: missing or empty item \(field 2\)"),
    ("A1,B1,five,1383523200", r"1 review has a non-numeric or NaN rating \(first: line 3, value 'five'\)"),
    ("A1,B1,5.0,2014-01-01", r"1 review has a non-numeric or NaN timestamp \(first: line 3, "
                             r"value '2014-01-01'\)"),
    ("A1,B1,5.0,1e999", r"1 review has an infinite or out-of-range timestamp \(first: line 3"),
    ('"A1,B1,5.0,1383523200', r"malformed line 3: unexpected end of data"),
])
def test_ratings_csv_bad_row_is_one_error_naming_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    path = _write(tmp_path / "ratings_Baby.csv", RATINGS[:2] + [bad] + RATINGS[2:])
    with pytest.raises(DataError, match=r"ratings_Baby\.csv: " + problem) as e:
        _read(read_reviews, path)
    assert e.value.path == str(path)


def test_ratings_csv_header_empty_and_wrong_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "ratings_Baby.csv", ["user,item,rating,timestamp", *RATINGS])
    with pytest.raises(DataError, match=r"ratings_Baby\.csv: line 1 looks like a header"):
        read_reviews(path)
    blank = _write(tmp_path / "ratings_Toys.csv", ["", " "])
    with pytest.raises(DataError, match=r"ratings_Toys\.csv: no ratings in this file"):
        read_reviews(blank)
    # 2018's ratings-only Baby.csv is item,user,rating,timestamp: never read with users and items swapped
    other = _write(tmp_path / "Baby.csv", RATINGS)
    with pytest.raises(DataError, match=r"Baby\.csv: not an Amazon ratings file"):
        read_reviews(other)


# ----------------------------------------------------------------------------------------- registry


def test_registry_loads_a_ratings_csv_file_or_folder_with_its_meta(tmp_path: Path) -> None:
    from recgoat.datasets import load_raw

    path = _write(tmp_path / "ratings_Baby.csv.gz", RATINGS, gz=True)
    meta = _write(tmp_path / "meta_Baby.json", [json.dumps({"asin": "0000031887", "title": "Tutu"})])
    for given in (path, tmp_path):
        (name, inter, items, fields, info), _ = _read(load_raw, given)
        assert name == "amazon-baby" and info["layout"] == "amazon" and info["meta"] == str(meta.resolve())
        _check_ratings(inter)
        assert fields == ["title"] and items["item_id"].tolist() == ["0000031887"]
