"""Generic layout loader: a user's own interactions/items files with the quirks real exports have."""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_main
from recgoat.datasets import PrepareConfig, load
from recgoat.datasets.generic import load_generic, read_interactions, read_items
from recgoat.errors import DataError

DAY1 = 1577836800  # 2020-01-01T00:00:00Z
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
                    "53de0000000c4944415478da63f8cfc000000301010018dd8db00000000049454e44ae426082")


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _grid(items: list[str], n_users: int = 3) -> str:
    """Every user with every item, as CSV rows (quoted, so ids with commas survive)."""
    return "".join(f'u{u},"{i}"\n' for u in range(n_users) for i in items)


# ------------------------------------------------------------------------------ CSV quirks that must load
def test_bom_crlf_quoted_fields_and_blank_tail_load_as_written(tmp_path):
    _write(tmp_path / "interactions.csv",
           b'\xef\xbb\xbfuser_id,item_id,rating\r\nu1,007,4\r\nu1,7,"5"\r\nu2,"x,y", 3.5 \r\n\r\n\r\n')
    _write(tmp_path / "items.csv", b'\xef\xbb\xbfitem_id,title\r\n007,"Bond, James\r\nline two"\r\n7,Seven\r\n'
                                   b'"x,y",XY\r\n')
    inter, items, fields = load_generic(tmp_path)
    # "007" and "7" stay two items; the BOM is not part of the first column's name
    assert inter["item"].tolist() == ["007", "7", "x,y"] and inter["user"].tolist() == ["u1", "u1", "u2"]
    assert inter["rating"].tolist() == [4.0, 5.0, 3.5]
    assert items["item_id"].tolist() == ["007", "7", "x,y"] and fields == ["title"]
    assert items["title"].tolist()[0].splitlines() == ["Bond, James", "line two"]


def test_leading_zero_and_unicode_ids_stay_distinct_through_prepare(tmp_path):
    src = _write(tmp_path / "shop" / "interactions.csv",
                 "user_id,item_id\n" + _grid(["007", "7", "07", "商品", "x" * 300]))
    load(src.parent, PrepareConfig(k_core=0)).save(tmp_path / "prepared")
    ds = load(tmp_path / "prepared")
    assert sorted(ds.item_ids) == sorted(["007", "7", "07", "商品", "x" * 300]) and ds.n_users == 3


def test_tsv_text_with_commas_and_quotes_inside(tmp_path):
    _write(tmp_path / "interactions.tsv", "user_id\titem_id\nu1\t1\nu1\t2\n")
    _write(tmp_path / "items.tsv", 'item_id\ttitle\n1\tHello, world\n2\t5" screen, black\n')
    _, items, _ = load_generic(tmp_path)
    assert items["title"].tolist() == ["Hello, world", '5" screen, black']


def test_parquet_categorical_nullable_and_text_typed_columns_load_like_plain_ones(tmp_path):
    plain = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["7", "8"], "rating": [4.0, 5.0],
                          "timestamp": [DAY1, DAY1 + 1]})
    odd = pd.DataFrame({"user_id": pd.Categorical(["a", "b"]), "item_id": pd.array([7, 8], dtype="Int64"),
                        "rating": ["4", "5.0"], "timestamp": pd.array([DAY1, DAY1 + 1], dtype="Int64")})
    for name, df in (("plain", plain), ("odd", odd)):
        df.to_parquet(_write(tmp_path / name / "interactions.parquet", b""))
    pd.testing.assert_frame_equal(load_generic(tmp_path / "odd")[0], load_generic(tmp_path / "plain")[0])


# ----------------------------------------------------------------- a wrong separator or header: one hint
@pytest.mark.parametrize(("sep", "said"), [(";", "';'"), ("\t", "tabs"), ("|", "'|'")])
def test_csv_with_another_separator_names_it(tmp_path, monkeypatch, capsys, sep, said):
    folder = tmp_path / "shop"
    _write(folder / "interactions.csv", sep.join(["user_id", "item_id", "rating"]) + "\n"
           + sep.join(["u1", "7", "4"]) + "\n")
    with pytest.raises(DataError, match=f"read as one column: is the file separated by {said}"):
        load_generic(folder)
    code, err = run_main(monkeypatch, capsys, "datasets", "info", str(folder))
    assert code == 1 and "Traceback" not in err and "interactions.csv" in err and said in err


def test_header_with_spaces_after_the_commas_is_said(tmp_path):
    path = _write(tmp_path / "interactions.csv", "user_id, item_id, rating\nu1, 7, 4\n")
    with pytest.raises(DataError, match="column names have spaces around them"):
        read_interactions(path)


def test_items_table_with_both_item_and_item_id_is_one_data_error(tmp_path):
    # "item" (a name) beside "item_id": renaming made two item_id columns, then an AttributeError from pandas
    path = _write(tmp_path / "items.csv", "item_id,item,title\n7,Red shirt,Shirt\n")
    with pytest.raises(DataError, match="columns 'item' and 'item_id' both name the item") as e:
        read_items(path)
    assert e.value.path == str(path)


# ------------------------------------------------------------------------------ day/month order of dates
def _times(tmp_path: Path, *values: str) -> list[int]:
    rows = "".join(f"u,{i},{v}\n" for i, v in enumerate(values))
    path = _write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\n" + rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pandas warning telling to pass dayfirst=True reaches the user
        return read_interactions(path)["timestamp"].tolist()


def test_dates_with_and_without_time_keep_the_first_values_day_month_order(tmp_path):
    day_first = DAY1 + 12 * 86400, DAY1 + 31 * 86400 + 36000  # 13 January; 1 February 10:00
    # the second value, in another form, was read alone, month first: 2 January 10:00
    assert _times(tmp_path, "13/01/2020", "01/02/2020 10:00") == list(day_first)
    assert _times(tmp_path, "13.01.2020", "01.02.2020 10:00") == list(day_first)
    assert _times(tmp_path, "01/02/2020", "01/13/2020 10:00") == [DAY1 + 86400, DAY1 + 12 * 86400 + 36000]
    assert _times(tmp_path, "2020-01-01", "2020/01/02") == [DAY1, DAY1 + 86400]
    # year-first dates after a day-first one stay year-month-day (dateutil's dayfirst made 2020-01-02 1 February)
    assert _times(tmp_path, "13/01/2020", "2020-01-02 10:00", "2020/01/02") == [DAY1 + 12 * 86400, DAY1 + 122400,
                                                                              DAY1 + 86400]


def test_day_month_order_is_told_by_any_value_not_only_the_first(tmp_path):
    # 04/12/1997 alone reads either way; 27/11/1997 further down tells day first: the file was refused
    assert _times(tmp_path, "04/12/1997 15:55", "07/11/1997", "27/11/1997 05:02") == [
        int(pd.Timestamp(t, tz="UTC").timestamp()) for t in ("1997-12-04 15:55", "1997-11-07", "1997-11-27 05:02")]
    day_first = [DAY1 + 31 * 86400, DAY1 + 12 * 86400]  # 1 February, 13 January
    assert _times(tmp_path, "01/02/2020", "13/01/2020") == day_first
    assert _times(tmp_path, "01/02/2020 10:00", "13/01/2020") == [day_first[0] + 36000, day_first[1]]
    assert _times(tmp_path, "2020-01-01", "01.02.2020", "13.01.2020") == [DAY1] + day_first
    # and month first, told by the second number
    assert _times(tmp_path, "02/01/2020", "01/13/2020") == day_first
    # no value tells: read month first, as pandas infers from the first value (02/01/2020 is 1 February)
    assert _times(tmp_path, "02/01/2020", "01/02/2020") == [DAY1 + 31 * 86400, DAY1 + 86400]
    # a year written first or in two digits tells nothing: 97 is no day
    assert _times(tmp_path, "02/01/2020", "2020/01/13")[0] == DAY1 + 31 * 86400


@pytest.mark.parametrize("first", ["01/02/2020", "2020-01-01"])
def test_dates_in_both_day_month_orders_are_refused_naming_one_of_each(tmp_path, first):
    # 13/01/2020 is day first and 01/13/2020 month first: two conventions in one column
    with pytest.raises(DataError, match=r"column 'timestamp' has dates with the day first \(data row 2: "
                                        r"'13/01/2020'\) and with the month first \(data row 3: '01/13/2020'\): "
                                        "write all dates in one order"):
        _times(tmp_path, first, "13/01/2020", "01/13/2020", "14/01/2020")


# --------------------------------------------------------------------------------------------- images
def test_two_images_for_one_item_are_refused_not_picked_by_folder_order(tmp_path):
    _write(tmp_path / "interactions.csv", "user_id,item_id\nu1,7\nu1,8\n")
    _write(tmp_path / "items.csv", "item_id,title\n7,a\n8,b\n")
    for name in ("7.jpg", "7.png", "8.png"):
        _write(tmp_path / "images" / name, PNG)
    with pytest.raises(DataError, match=r"1 item has several images \(item '7': 7.jpg, 7.png\)") as e:
        load_generic(tmp_path)
    assert e.value.path == str(tmp_path / "images")
    # the table's own image column names item 7's picture: the folder is not asked for it
    _write(tmp_path / "items.csv", "item_id,title,image\n7,a,images/7.png\n8,b,\n")
    _, items, _ = load_generic(tmp_path)
    assert items["image"].tolist() == ["images/7.png", str((tmp_path / "images" / "8.png").resolve())]


def test_interactions_with_two_possible_item_columns_say_which_one_is_used(tmp_path):
    # item_id beside an item name: the name was used silently, merging two items of the same name
    path = _write(tmp_path / "interactions.csv", "user_id,item_id,item\nu1,1,Shirt\nu1,2,Shirt\n")
    with pytest.warns(UserWarning, match=r"columns \['item', 'item_id'\] could each be the item id; using 'item'"):
        df = read_interactions(path)
    assert list(df["item"]) == ["Shirt", "Shirt"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # naming the column: no warning, and the two items stay apart
        assert list(read_interactions(path, item_col="item_id")["item"]) == ["1", "2"]
