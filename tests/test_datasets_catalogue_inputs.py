"""Dataset layer: inputs a user's own catalogue may hold (dates and timestamps, ratings, ids, split options),
each pinning a bug found in a QA pass."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import Dataset, PrepareConfig, load, load_lines, load_mmrec, prepare
from recgoat.datasets.generic import load_generic, read_interactions
from recgoat.datasets.preprocess import assign_split
from recgoat.errors import DataError

DAY1 = 1577836800  # 2020-01-01T00:00:00Z


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ CSV reading
def test_row_with_more_fields_than_header_is_refused_not_shifted(tmp_path):
    # pandas took the extra first field as the row index: user became "x", item became "5", silently
    path = _write(tmp_path / "interactions.csv", "user,item\na,x,5\nb,y,4\n")
    with pytest.raises(DataError, match="more fields than the header's 2") as e:
        read_interactions(path)
    assert e.value.path == str(path)
    # the same with a regex separator (read by pandas' python engine, which warns differently)
    _write(path, "user::item\na::x::5\nb::y::4\n")
    with pytest.raises(DataError, match="more fields than the header's 2"):
        read_interactions(path, sep=r"\s*::\s*")
    _write(path, "user :: item\na :: x\nb::y\n")
    assert read_interactions(path, sep=r"\s*::\s*")["item"].tolist() == ["x", "y"]


def test_trailing_separator_on_every_row_is_accepted(tmp_path):
    path = _write(tmp_path / "interactions.csv", "user,item\na,x,\nb,y,\n")
    df = read_interactions(path)
    assert df["user"].tolist() == ["a", "b"] and df["item"].tolist() == ["x", "y"]


# ------------------------------------------------------------------------------------------ timestamps
def test_date_strings_become_unix_seconds(tmp_path):
    # datetime64 under pandas 3 is in microseconds: "// 10**9" gave 1577836 for 2020-01-01
    path = _write(tmp_path / "interactions.csv",
                  "user,item,timestamp\na,x,2020-01-01\na,y,2020-01-02\nb,x,2020-01-01\n")
    assert read_interactions(path)["timestamp"].tolist() == [DAY1, DAY1 + 86400, DAY1]


def test_dates_in_several_iso_forms_are_all_read(tmp_path):
    # the format pandas infers from the first value made the others NaT, refused as "unparseable"
    path = _write(tmp_path / "interactions.csv",
                  "user,item,timestamp\na,x,2020-01-01\na,y,2020-01-01 10:00\nb,x,2020-01-01T12:00:00+02:00\n")
    assert read_interactions(path)["timestamp"].tolist() == [DAY1, DAY1 + 36000, DAY1 + 36000]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_parquet_datetime_column_becomes_unix_seconds(tmp_path, unit):
    # a datetime column went through to_numeric: its own unit (ms, us or ns) was stored as seconds
    t = pd.to_datetime(["2020-01-01", "2020-01-02"]).as_unit(unit)
    path = tmp_path / "interactions.parquet"
    pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "timestamp": t}).to_parquet(path)
    assert read_interactions(path)["timestamp"].tolist() == [DAY1, DAY1 + 86400]


def test_parquet_tz_aware_datetimes_and_missing_times(tmp_path):
    path = tmp_path / "interactions.parquet"
    t = pd.to_datetime(["2020-01-01 01:00", "2020-01-02 01:00"]).tz_localize("Europe/Paris")
    pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "timestamp": t}).to_parquet(path)
    assert read_interactions(path)["timestamp"].tolist() == [DAY1, DAY1 + 86400]
    # NaT became -2**63, silently
    pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"],
                  "timestamp": [pd.Timestamp("2020-01-01"), pd.NaT]}).to_parquet(path)
    with pytest.raises(DataError, match=r"unparseable timestamps \(first at data row 2"):
        read_interactions(path)


@pytest.mark.parametrize("value", ["inf", "1e20", "-inf"])
def test_out_of_range_timestamps_are_refused(tmp_path, value):
    # they wrapped around to -2**63 in the int64 cast (with only a numpy RuntimeWarning)
    path = _write(tmp_path / "interactions.csv", f"user,item,timestamp\na,x,1\na,y,{value}\n")
    with pytest.raises(DataError, match=r"1 out-of-range timestamps \(first at data row 2"):
        read_interactions(path)
    folder = tmp_path / "mm"
    _write(folder / "mm.inter", f"userID\titemID\ttimestamp\tx_label\n0\t0\t1\t0\n0\t1\t{value}\t2\n")
    with pytest.raises(DataError, match="out-of-range timestamps") as e:
        load_mmrec(folder)
    assert e.value.path == str(folder / "mm.inter")


def test_infinite_ratings_are_refused(tmp_path):
    path = _write(tmp_path / "interactions.csv", "user,item,rating\na,x,4\na,y,inf\n")
    with pytest.raises(DataError, match=r"column 'rating' has 1 infinite values \(first at data row 2: 'inf'\)"):
        read_interactions(path)
    folder = tmp_path / "mm"
    _write(folder / "mm.inter", "userID\titemID\trating\tx_label\n0\t0\tinf\t0\n0\t1\t1\t2\n")
    with pytest.raises(DataError, match="infinite values"):
        load_mmrec(folder)


# ------------------------------------------------------------------------------------------ ids
def test_whole_number_float_ids_from_parquet_read_as_integers(tmp_path):
    # float64 ids (pandas upcasts an int column that once held NaN) became "10.0", matching no row of
    # an items table saying "10" and no id a user types
    pd.DataFrame({"user": [1.0, 1.0, 2.0, 2.0], "item": [10.0, 11.0, 10.0, 11.0]}).to_parquet(
        tmp_path / "interactions.parquet")
    _write(tmp_path / "items.csv", "item_id,title\n10,Ten\n11,Eleven\n")
    inter, items, _ = load_generic(tmp_path)
    assert sorted(set(inter["user"])) == ["1", "2"] and sorted(set(inter["item"])) == ["10", "11"]
    ds = load(tmp_path, PrepareConfig(k_core=0))
    assert ds.items["title"].tolist() == ["Ten", "Eleven"] and ds.user_index(1) == 0
    # a column with one fractional id is no integer column: every id stays as written
    pd.DataFrame({"user": [1.5, 2.0], "item": [3.0, 10.0]}).to_parquet(tmp_path / "interactions.parquet")
    with pytest.warns(UserWarning, match="1 of the 2 items in interactions.parquet has no row"):
        inter, _, _ = load_generic(tmp_path)
    assert inter["user"].tolist() == ["1.5", "2.0"] and inter["item"].tolist() == ["3", "10"]


@pytest.mark.parametrize(("table_ids", "inter_ids", "shown", "hint"), [
    (["1 ", "2 ", "3 "], ["1", "2", "3"], r"\['1 ', '2 ', '3 '\], in interactions.csv \['1', '2', '3'\]",
     r"the ids differ by spaces around them \(item '1 ' here, '1' in interactions.csv\)"),
    (["1", "2", "3"], ["001", "002", "003"], r"\['1', '2', '3'\], in interactions.csv \['001', '002', '003'\]",
     r"the ids differ by leading zeros \(item '1' here, '001' in interactions.csv\)"),
    (["1.0", "2.0", "3.0", "4.0"], ["1", "2", "3"], r"\['1.0', '2.0', '3.0', …\], in interactions.csv",
     r"the ids differ by a trailing '.0' \(ids written as floats\) \(item '1.0' here, '1' in interactions.csv"),
    (["a", "b", "c"], ["1", "2", "3"], r"\['a', 'b', 'c'\], in interactions.csv \['1', '2', '3'\]",
     "are both files of the same catalogue"),
])
def test_items_table_sharing_no_id_with_the_interactions_is_an_error_with_examples(
        tmp_path, monkeypatch, capsys, table_ids, inter_ids, shown, hint):
    # 1,507 of the 1,507 items had no row: only a warning, and the dataset loaded with no text or image
    rows = "".join(f"u{u},{i}\n" for u in range(2) for i in inter_ids)
    _write(tmp_path / "interactions.csv", "user_id,item_id\n" + rows)
    _write(tmp_path / "items.csv", "item_id,title\n" + "".join(f"{i},T\n" for i in table_ids))
    with pytest.raises(DataError, match=rf"none of the 3 items in interactions.csv have a row in this table: ids "
                                        rf"here are e.g. {shown}.*; {hint}") as e:
        load_generic(tmp_path)
    assert e.value.path == str(tmp_path / "items.csv")
    from conftest import run_main
    code, err = run_main(monkeypatch, capsys, "datasets", "info", str(tmp_path))
    assert code == 1 and err.startswith(f"error: {tmp_path / 'items.csv'}: none of") and "Traceback" not in err


def test_items_partly_missing_from_the_table_stay_a_warning_with_examples_and_hint(tmp_path):
    _write(tmp_path / "interactions.csv", "user_id,item_id\nu,1\nu,2\nu,3\n")
    _write(tmp_path / "items.csv", "item_id,title\n1,A\n2 ,B\n")
    with pytest.warns(UserWarning, match=r"2 of the 3 items in interactions.csv have no row in this table \(e.g. "
                                         r"'2', '3'\); they get no text or image features; the ids differ by "
                                         r"spaces around them \(item '2 ' here, '2' in interactions.csv\)"):
        _, items, _ = load_generic(tmp_path)
    assert items["item_id"].tolist() == ["1", "2 "]


def test_mmrec_mapping_with_a_repeated_original_id_is_refused(tmp_path):
    # two dense users both mapped back to "A": user_index("A") picked one of them silently
    _write(tmp_path / "d.inter", "userID\titemID\tx_label\n0\t0\t0\n1\t1\t2\n")
    _write(tmp_path / "u_id_mapping.csv", "user_id\tuserID\nA\t0\nA\t1\n")
    with pytest.raises(DataError, match=r"column 'user_id' has 2 rows with repeated user ids .*'A'") as e:
        load_mmrec(tmp_path)
    assert e.value.path == str(tmp_path / "u_id_mapping.csv")


def test_lines_files_with_a_byte_order_mark(tmp_path):
    # a BOM (Windows editors) glued to the first user id: "\ufeff0 is not a non-negative integer id"
    (tmp_path / "train.txt").write_bytes("\ufeff0 1 2\r\n1 0\r\n".encode("utf-8"))
    _write(tmp_path / "test.txt", "0 3\n")
    ds = load_lines(tmp_path)
    assert ds.n_users == 2 and len(ds.interactions) == 4


# ------------------------------------------------------------------------------------------ layout
def test_several_interactions_files_are_refused(tmp_path):
    # interactions.csv was read silently, the Parquet made from it (perhaps edited since) ignored
    _write(tmp_path / "interactions.csv", "user,item\na,x\n")
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"]}).to_parquet(tmp_path / "interactions.parquet")
    with pytest.raises(DataError, match=r"several interactions files \(interactions.csv, interactions.parquet\)") as e:
        load(tmp_path)
    assert e.value.path == str(tmp_path)


# ------------------------------------------------------------------------------------------ protocol
def _repeats(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user": rng.integers(0, 30, n).astype(str), "item": rng.integers(0, 20, n).astype(str),
                         "timestamp": rng.integers(0, 10**6, n)})


@pytest.mark.parametrize("how", ["random", "temporal", "loo"])
def test_repeated_pairs_kept_without_dedup_never_straddle_splits(how):
    # split row by row, a repeated (user, item) was both trained on and held out
    raw = _repeats()
    ds = prepare("r", raw, config=PrepareConfig(k_core=0, dedup=False, split=how))
    inter = ds.interactions
    assert len(inter) == len(raw)  # the repeats are kept
    assert inter.groupby(["user", "item"])["split"].nunique().max() == 1
    # per user the held-out share is that of the deduplicated pairs
    dedup = prepare("r", raw, config=PrepareConfig(k_core=0, split=how)).interactions
    pairs = inter.drop_duplicates(["user", "item"]).sort_values(["user", "item"])["split"].astype(str)
    assert pairs.value_counts().to_dict() == dedup["split"].astype(str).value_counts().to_dict()


def test_temporal_split_orders_nanosecond_times_exactly():
    # times + noise as float64: 1.6e18 ns are 256 apart in float64, so the order collapsed to row order
    base = 1_600_000_000_000_000_000
    df = pd.DataFrame({"user": np.zeros(10, np.int64), "item": np.arange(10),
                       "timestamp": base + 9 - np.arange(10)})  # the latest first
    labels = assign_split(df, "temporal").astype(str).tolist()
    assert labels[0] == "test" and labels[1] == "valid" and set(labels[2:]) == {"train"}


# ------------------------------------------------------------------------------------------ saving
def test_save_item_table_with_mixed_types_is_a_data_error(tmp_path):
    raw = pd.DataFrame({"user": ["a", "a", "b", "b"], "item": ["1", "2", "1", "2"]})
    items = pd.DataFrame({"item_id": ["1", "2"], "year": [1999, "unknown"]})
    ds = prepare("m", raw, items, ["year"], PrepareConfig(k_core=0))
    out = tmp_path / "prepared"
    with pytest.raises(DataError, match=r"item table cannot be saved as Parquet: column\(s\) 'year'") as e:
        ds.save(out)
    assert e.value.path == str(out / "items.parquet")
    assert not out.exists()  # nothing half-written
    ds.items["year"] = ds.items["year"].astype(str)
    assert Dataset.load(ds.save(out)).fingerprint() == ds.fingerprint()


@pytest.mark.parametrize("field, value", [("overall", "1e999"), ("unixReviewTime", "1e999"),
                                          ("unixReviewTime", "1e20")])
def test_amazon_infinite_rating_or_time_is_refused(tmp_path, field, value):
    # JSON's 1e999 parses as inf: kept as a rating, or wrapped to -2**63 as a time
    from recgoat.datasets.amazon import read_reviews

    rec = {"reviewerID": "A", "asin": "X", "overall": 5, "unixReviewTime": 1400000000}
    line = ", ".join(f'"{k}": {value if k == field else json.dumps(v)}' for k, v in rec.items())
    path = _write(tmp_path / "Toys.jsonl", "{" + line + "}\n")
    what = "rating" if field == "overall" else "timestamp"
    with pytest.raises(DataError, match=f"1 review has an infinite or out-of-range {what}") as e:
        read_reviews(path)
    assert e.value.path == str(path)


@pytest.mark.parametrize("frame, problem", [
    (pd.DataFrame({"user": ["a", None], "item": ["x", "y"]}), r"1 interaction has no user id \(first at row 2\)"),
    (pd.DataFrame({"uid": ["a"], "item": ["x"]}), r"interactions lack column\(s\) user"),
    (pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "rating": ["5", "x"]}), "column 'rating' must hold finite"),
    (pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "timestamp": ["5", "x"]}),
     "column 'timestamp' must hold numbers or datetimes"),
])
def test_prepare_refuses_a_bad_frame_built_in_python(frame, problem):
    # a frame from Python skips the loaders' checks: KeyError, or TypeError sorting None against str
    with pytest.raises(DataError, match=problem) as e:
        prepare("mine", frame, config=PrepareConfig(k_core=0, min_rating=3))
    assert e.value.path == "dataset 'mine'"


# ---------------------------------------------------------------------------------------------- ignored options
def _prepared_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(0, 30, 600).astype(str), "item": rng.integers(0, 40, 600).astype(str)})
    ds = prepare("toy", df, config=PrepareConfig(k_core=2, seed=7))
    ds.save(tmp_path / "prep")
    return tmp_path / "prep"


def test_split_options_for_an_already_split_folder_are_refused_not_ignored(tmp_path):
    """`datasets prepare prepared/ --seed 9` and `train --set data.split=temporal` on a prepared folder
    silently reused the stored split; options equal to the stored ones stay fine."""
    from typer.testing import CliRunner

    from recgoat.cli import app
    from recgoat.config import load_config
    from recgoat.datasets.registry import refuse_ignored_prepare_options
    from recgoat.errors import ConfigError
    from recgoat.training.run import load_dataset

    folder = _prepared_folder(tmp_path)
    refuse_ignored_prepare_options(folder, {"seed": 7, "k_core": 2, "ratios": (0.8, 0.1, 0.1)})  # as stored
    refuse_ignored_prepare_options(folder, {})
    with pytest.raises(ConfigError, match=r"already split and keeps its split \(it was prepared with seed=7\); "
                                          r"seed=9 would be ignored"):
        refuse_ignored_prepare_options(folder, {"seed": 9})
    res = CliRunner().invoke(app, ["datasets", "prepare", str(folder), "--out", str(tmp_path / "again"), "--seed", "9"])
    assert isinstance(res.exception, ConfigError) and "seed=9 would be ignored" in str(res.exception)
    assert not (tmp_path / "again").exists()
    res = CliRunner().invoke(app, ["datasets", "info", str(folder)])  # no option given: the stored split
    assert res.exit_code == 0, res.output
    cfg = load_config(None, [f"data.name={folder}", "data.split=temporal"])
    with pytest.raises(ConfigError, match="split=temporal would be ignored"):
        load_dataset(cfg, check_options=True)
    assert load_dataset(load_config(None, [f"data.name={folder}"]), check_options=True).n_users > 0
    # an MMRec folder records no preparation: any option is refused
    mm = tmp_path / "mm"
    mm.mkdir()
    (mm / "toy.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n")
    with pytest.raises(ConfigError, match=r"a MMRec dataset folder is already split"):
        refuse_ignored_prepare_options(mm, {"k_core": 5})


@pytest.mark.parametrize("layout", ["mmrec", "lines"])
def test_held_out_rows_of_users_without_training_items_are_dropped(tmp_path, layout):
    """METHOD.md §6 drops users with no training item; data split elsewhere can hold them, and their held-out
    items were evaluated against an untrained embedding. User 2 has only a test item (item 3, which no one
    else has: the item keeps its id)."""
    folder = tmp_path / layout
    folder.mkdir()
    rows = [(0, 0, 0), (0, 1, 2), (1, 1, 0), (1, 2, 1), (1, 0, 2), (2, 3, 2)]
    if layout == "mmrec":
        _write(folder / "toy.inter", "userID\titemID\tx_label\n" + "".join(f"{u}\t{i}\t{s}\n" for u, i, s in rows))
        load_fn = load_mmrec
    else:
        for s, name in enumerate(("train.txt", "valid.txt", "test.txt")):
            users = sorted({u for u, _, x in rows if x == s})
            _write(folder / name, "".join(f"{u} " + " ".join(str(i) for v, i, x in rows if v == u and x == s) + "\n"
                                          for u in users))
        load_fn = load_lines
    with pytest.warns(UserWarning, match=r"dropped the 1 held-out rows of 1 user\(s\) with no training item"):
        ds = load_fn(folder)
    assert (ds.n_users, ds.n_items) == (3, 4)
    assert ds.csr("test")[2].nnz == 0 and ds.csr("test").nnz == 2 and ds.csr("train").nnz == 2


def test_a_parquet_year_with_gaps_reads_as_whole_years(tmp_path):
    # Parquet keeps an integer column with a gap as floats: "year: 2000.0" reached the text encoder and
    # the service's cards, where the same table as CSV gives "year: 2000"
    pd.DataFrame({"item": ["i1", "i2", "i3"], "title": ["A", "B", "C"], "year": [2000.0, np.nan, 1999.0],
                  "rating_avg": [3.5, 4.0, np.nan]}).to_parquet(tmp_path / "items.parquet")
    rows = [f"u{u},{i}" for u in range(6) for i in ["i1", "i2", "i3", "x1", "x2", "x3"]]
    _write(tmp_path / "interactions.csv", "user,item\n" + "\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="no row in this table"):
        ds = load(tmp_path)
    texts = dict(zip(ds.item_ids, ds.item_texts()))
    assert texts["i1"] == "title: A\nyear: 2000" and texts["i2"] == "title: B" and texts["i3"] == "title: C\nyear: 1999"
    # a column with fractions is left as numbers
    assert ds.items["rating_avg"].dtype == np.float64
