"""Malformed catalogue files and frames: unclosed quotes, spaced header names, undecodable files, id spellings.

Datasets QA (third pass): one id spelling for files and Python frames, unclosed quotes, spaced header names,
undecodable files and item tables handed to ``prepare``."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_main
from recgoat.datasets import PrepareConfig, load, prepare
from recgoat.datasets.dataset import Dataset
from recgoat.datasets.generic import read_interactions, read_items
from recgoat.errors import DataError

FLAT = PrepareConfig(k_core=0, split="none")


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _index(ds: Dataset, kind: str, key: object) -> int | str:
    """The internal index of ``key``, or "unknown" where the lookup refuses it."""
    try:
        return ds.user_index(key) if kind == "user" else ds.item_index(key)
    except KeyError:
        return "unknown"


# ------------------------------------------------------------------------------ one id spelling
def test_float_ids_of_a_frame_are_the_ids_the_file_loader_gives(tmp_path):
    # pandas upcasts an int id column to float when a NaN passes through it: prepare() spelled those ids
    # "1.0" while the file loader spelled them "1", so user_index(1) and item titles missed on one path
    users, items = [1, 1, 2, 2, 3], [10, 20, 10, 30, 20]
    frame = pd.DataFrame({"user": np.array(users, float), "item": np.array(items, float)})
    table = pd.DataFrame({"item_id": [10.0, 20.0, 30.0], "title": ["Ten", "Twenty", "Thirty"]})
    from_frame = prepare("x", frame, table, ["title"], FLAT)
    folder = tmp_path / "x"
    _write(folder / "interactions.csv", "user,item\n" + "".join(f"{u},{i}\n" for u, i in zip(users, items)))
    _write(folder / "items.csv", "item_id,title\n10,Ten\n20,Twenty\n30,Thirty\n")
    from_file = load(folder, FLAT)
    assert list(from_frame.user_ids) == list(from_file.user_ids) == ["1", "2", "3"]
    assert list(from_frame.item_ids) == list(from_file.item_ids) == ["10", "20", "30"]
    assert from_frame.items["title"].tolist() == from_file.items["title"].tolist() == ["Ten", "Twenty", "Thirty"]
    for kind, key in [("user", 2), ("item", 30)]:
        looked = [(_index(from_frame, kind, k), _index(from_file, kind, k)) for k in (key, str(key), float(key))]
        assert all(a == b for a, b in looked), looked  # both paths agree for 1, "1" and 1.0
        # 1, "1" and 1.0 find the same id (a whole float key was str()-ed to "1.0", an unknown id)
        assert looked[0][0] == looked[1][0] == looked[2][0] != "unknown"
        assert _index(from_file, kind, key + 0.5) == "unknown"


def test_one_id_spelled_as_int_float_and_text_in_a_frame_is_one_user():
    frame = pd.DataFrame({"user": pd.Series([1, 1.0, "1", 2], dtype=object), "item": ["a", "b", "c", "a"]})
    assert list(prepare("x", frame, config=FLAT).user_ids) == ["1", "2"]
    cats = pd.DataFrame({"user": pd.Categorical([1.0, 2.0]), "item": ["a", "b"]})
    assert list(prepare("x", cats, config=FLAT).user_ids) == ["1", "2"]


# ------------------------------------------------------------------------------ unclosed quotes
@pytest.mark.parametrize(("name", "sep", "newline"), [("interactions.csv", ",", "\n"),
                                                      ("interactions.tsv", "\t", "\r\n")])
def test_an_unclosed_quote_swallowing_rows_into_an_id_names_its_line(tmp_path, monkeypatch, capsys, name, sep,
                                                                      newline):
    # u2's item opens a quote that only u3's row closes: u3 was silently read into u2's item id
    rows = ["user,item,rating", "u1,i1,5", "", 'u2,"i2,4', 'u3,i3",3', "u4,i4,5"]
    path = _write(tmp_path / "shop" / name, newline.join(r.replace(",", sep) for r in rows) + newline)
    with pytest.raises(DataError, match=r"line 4: the item id runs over 2 lines .*a quote opened there is never "
                                        r"closed") as e:
        read_interactions(path)
    assert e.value.path == str(path)
    code, err = run_main(monkeypatch, capsys, "datasets", "info", str(path.parent))
    assert code == 1 and "Traceback" not in err and name in err and "line 4" in err


def test_an_unclosed_quote_running_to_the_end_of_the_file_names_its_line(tmp_path):
    path = _write(tmp_path / "interactions.csv", 'user,item\nu1,i1\nu2,i2\n\nu3,"i3\nu4,i4\n')
    with pytest.raises(DataError, match="line 5: a quote opened here is never closed"):
        read_interactions(path)


def test_an_unclosed_quote_in_a_text_column_is_warned_with_its_line(tmp_path):
    path = _write(tmp_path / "items.csv", 'item_id,title,year\n1,"Heroes,1977\n2,Alien,1979\n3,Up",2009\n'
                                          '4,Jaws,1975\n')
    with pytest.warns(UserWarning, match=r"items.csv: line 2: column 'title' runs over 3 lines, 1 of them shaped "
                                         r"like whole rows"):
        items, _ = read_items(path)
    assert len(items) == 2  # read as pandas reads it, but no longer silently
    # real line breaks in a text (as in ml100k-mm's overviews) are no rows: nothing is said
    path = _write(tmp_path / "ok.csv", 'item_id,title,year\n1,"Heroes\r - Written by, him",1977\n2,Alien,1979\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_items(path)[0]["title"].tolist() == ["Heroes\r - Written by, him", "Alien"]


# ------------------------------------------------------------------------------ header names
@pytest.mark.parametrize("header", ["user,item, rating", "user,item,rating ", "user,item,timestamp "])
def test_spaces_around_an_optional_column_name_are_refused_not_read_as_absent(tmp_path, header):
    # the rating or time column was silently dropped (a spaced required column was already refused)
    path = _write(tmp_path / "interactions.csv", f"{header}\nu1,i1,4\n")
    with pytest.raises(DataError, match="is not read as the (rating|timestamp): column names have spaces around"):
        read_interactions(path)


def test_a_given_column_name_with_spaces_around_it_in_the_file_is_said(tmp_path):
    path = _write(tmp_path / "interactions.csv", "user,item, ts\nu1,i1,4\n")
    with pytest.raises(DataError, match=r"missing column 'ts' .*spaces around them \(' ts'\)"):
        read_interactions(path, timestamp_col="ts")


@pytest.mark.parametrize("column", [" title", "image "])
def test_spaces_around_an_item_text_or_image_column_name_are_refused(tmp_path, column):
    path = _write(tmp_path / "items.csv", f"item_id,{column}\n1,x\n")
    with pytest.raises(DataError, match=f"column {column!r} is not read as"):
        read_items(path)


def test_two_columns_differing_only_in_case_are_both_named(tmp_path):
    # "User" beside "user": one lower-cased name per column took the last one, with no word said
    path = _write(tmp_path / "interactions.csv", "User,user,item\na,b,i\n")
    with pytest.warns(UserWarning, match=r"columns \['User', 'user'\] could each be the user id"):
        read_interactions(path)


# ------------------------------------------------------------------------------ encodings
def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = _write(tmp_path / "items.csv", "item_id,title\n1,Alien\n2,Amélie\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"line 3 is not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        read_items(path)
    path = _write(tmp_path / "interactions.tsv", "user\titem\nu1\ti1\n".encode("utf-16"))
    with pytest.raises(DataError, match="is UTF-16 text"):
        read_interactions(path)


# ------------------------------------------------------------------------------ frames handed to prepare
@pytest.mark.parametrize(("items", "problem"), [
    (pd.DataFrame({"id": ["a"], "title": ["A"]}), "needs an 'item_id' column"),
    (pd.DataFrame({"item_id": [7, "7", "8"], "title": ["A", "B", "C"]}), "1 duplicated item id "),
    (pd.DataFrame({"item_id": ["7", None], "title": ["A", "B"]}), "1 row with no item_id"),
])
def test_prepare_refuses_a_bad_item_table(items, problem):
    frame = pd.DataFrame({"user": ["u", "u"], "item": ["7", "8"]})
    with pytest.raises(DataError, match=f"dataset 'x': the item table .*{problem}"):
        prepare("x", frame, items, ["title"], FLAT)


def test_prepare_refuses_interactions_that_are_no_frame():
    with pytest.raises(DataError, match="interactions must be a pandas DataFrame, got list"):
        prepare("x", [("u", "7")], config=FLAT)  # type: ignore[arg-type]
