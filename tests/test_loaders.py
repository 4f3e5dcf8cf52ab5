"""Every dataset layout, read from real-format fixtures, and every bad input turned into one DataError."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import (PrepareConfig, load, load_amazon, load_lines, load_mmrec, save_lines,
                              save_mmrec)
from recgoat.datasets.amazon import read_amazon
from recgoat.datasets.generic import read_interactions, read_table
from recgoat.datasets.mmrec import read_mmrec_features
from recgoat.datasets.registry import shared_root
from recgoat.errors import DataError

FIX = Path(__file__).resolve().parent / "fixtures"
AMAZON = {
    "2014": (FIX / "amazon2014" / "reviews_Baby.json.gz", FIX / "amazon2014" / "meta_Baby.json.gz"),
    "2018": (FIX / "amazon2018" / "Baby.json.gz", FIX / "amazon2018" / "meta_Baby.json.gz"),
    "2023": (FIX / "amazon2023" / "Baby_Products.jsonl.gz", FIX / "amazon2023" / "meta_Baby_Products.jsonl.gz"),
}


def assert_split_dataset(ds) -> None:
    """Invariants every loader's output must satisfy."""
    inter = ds.interactions
    assert inter["user"].between(0, ds.n_users - 1).all()
    assert inter["item"].between(0, ds.n_items - 1).all()
    assert list(inter["split"].cat.categories) == ["train", "valid", "test"]
    assert ds.items is None or len(ds.items) == ds.n_items
    assert all(isinstance(u, str) for u in ds.user_ids) and all(isinstance(i, str) for i in ds.item_ids)


# ---------------------------------------------------------------------------------------- Amazon
@pytest.mark.parametrize("release", ["2014", "2018", "2023"])
def test_read_amazon_raw(release):
    reviews, meta = AMAZON[release]
    inter, items, fields = read_amazon(reviews, meta)
    # 8 users × 5 + 2 noise reviews + 1 repeated review
    assert len(inter) == 43
    assert inter["user"].nunique() == 9
    assert set(inter["item"]) == {f"B0000{i}" for i in range(1, 7)}  # 2023: parent_asin, not the variant
    assert inter["rating"].dtype == np.float32 and inter["rating"].between(1, 5).all()
    # seconds in every release (2023 publishes milliseconds, kept as fractional seconds: cut to whole ones,
    # reviews within a second tied in a temporal split)
    assert inter["timestamp"].dtype == (np.float64 if release == "2023" else np.int64)
    assert inter["timestamp"].between(1_388_534_400, 1_388_534_400 + 86_400 * 201).all()
    assert len(items) == 7 and "B00099" in set(items["item_id"])
    assert {"title", "brand", "categories", "description"} <= set(fields)
    row = items.set_index("item_id").loc["B00006"]
    assert row["title"] == "Diaper Rash Cream"
    assert row["brand"] == "Burt's Bees"  # the 2014 literal uses double quotes for this one
    assert row["categories"].split("|")[:2] == ["Baby Products", "Diapering"]
    assert row["categories"].count("Baby Products") == 1  # 2014's list of lists flattened, deduplicated
    assert "Zinc oxide" in row["description"]
    assert row["image"].startswith("http") and "41006Xy9ZL" in row["image"]


def test_amazon_image_choice_per_release():
    pick = {r: read_amazon(*AMAZON[r])[1].set_index("item_id").loc["B00001", "image"] for r in AMAZON}
    assert pick["2014"].endswith("._SY300_.jpg")  # imUrl
    assert pick["2018"] == "https://images-na.ssl-images-amazon.com/images/I/41001Xy9ZL.jpg"  # high-res
    assert pick["2023"] == "https://m.media-amazon.com/images/I/41001Xy9ZL.jpg"  # 'large'


@pytest.mark.parametrize("release", ["2014", "2018", "2023"])
def test_load_amazon_prepares_like_mmrec(release):
    ds = load_amazon(*AMAZON[release])
    assert_split_dataset(ds)
    # 5-core drops the 2-review shopper; dedup keeps one review per (user, item): the later one
    assert ds.n_users == 8 and ds.n_items == 6 and len(ds.interactions) == 40
    assert "B00099" not in set(ds.item_ids)  # metadata without reviews does not become an item
    assert ds.has_text and ds.has_images
    assert ds.items["item_id"].tolist() == list(ds.item_ids)
    # MMRec's split on users with 5 interactions: 3 train, 1 valid, 1 test each
    counts = ds.interactions.groupby(["user", "split"], observed=False).size().unstack()
    assert (counts["train"] == 3).all() and (counts["valid"] == 1).all() and (counts["test"] == 1).all()
    first_user = ds.user_index("A1B2C3D4E5F6G7" if release != "2023" else "AEB2C3D4E5F6G7")
    repeated = ds.interactions[(ds.interactions["user"] == first_user)
                               & (ds.interactions["item"] == ds.item_index("B00002"))]
    assert len(repeated) == 1 and repeated["rating"].iloc[0] == 2.0  # the later review's rating
    text = ds.item_texts()[ds.item_index("B00003")]
    assert "title: Anti-Colic Baby Bottle, 8 oz" in text and "brand: Philips Avent" in text


def test_load_amazon_plain_jsonl_and_config(tmp_path):
    # 2023 files are also distributed uncompressed
    for src in AMAZON["2023"]:
        (tmp_path / src.name[:-3]).write_bytes(gzip.decompress(src.read_bytes()))
    ds = load_amazon(tmp_path / "Baby_Products.jsonl", tmp_path / "meta_Baby_Products.jsonl",
                     config=PrepareConfig(min_rating=4, k_core=0, split="loo"), name="baby23")
    assert ds.name == "baby23"
    assert (ds.interactions["rating"] >= 4).all()
    inter, _, _ = read_amazon(tmp_path / "Baby_Products.jsonl")
    assert len(ds.interactions) == len(inter[inter["rating"] >= 4].drop_duplicates(["user", "item"]))


def test_load_amazon_without_meta_has_no_text():
    ds = load_amazon(AMAZON["2018"][0])
    assert ds.name == "amazon-baby" and ds.items is None and not ds.has_text


def _gz(path: Path, lines: list[str]) -> Path:
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_amazon_price_kept_as_a_number(tmp_path):
    # every fixture release gives 12.99: a number in 2014/2023, "$12.99" in 2018
    for release in AMAZON:
        items = read_amazon(*AMAZON[release])[1]
        assert items["price"].dtype == np.float64 and (items["price"] == 12.99).all(), release
        assert "price" not in read_amazon(*AMAZON[release])[2]  # a number, not a text field
    prices = {"B1": "$1,299.00", "B2": "£5", "B3": "", "B4": "$5.99 - $9.99", "B5": "<span>call</span>",
              "B6": 7, "B7": None, "B8": "-3"}
    # B00002, one of the reviews' items: a meta file sharing no item with them is refused
    meta = _gz(tmp_path / "meta_X.json.gz",
               [json.dumps({"asin": a, "title": "t", "price": v}) for a, v in prices.items()]
               + [json.dumps({"asin": "B00002", "title": "t"})])
    got = read_amazon(AMAZON["2018"][0], meta)[1].set_index("item_id")["price"]
    assert got.loc[["B1", "B2", "B6"]].tolist() == [1299.0, 5.0, 7.0]
    assert got.loc[["B3", "B4", "B5", "B7", "B8"]].isna().all()  # not one amount: NaN, never an error
    no_price = _gz(tmp_path / "meta_Y.json.gz", [json.dumps({"asin": a, "title": "t"}) for a in ("B1", "B00002")])
    assert "price" not in read_amazon(AMAZON["2018"][0], no_price)[1].columns


def test_amazon_malformed_review_line(tmp_path):
    good = json.dumps({"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1})
    path = _gz(tmp_path / "reviews_X.json.gz", [good, good, '{"reviewerID": "A2", "asin": '])
    with pytest.raises(DataError) as e:
        read_amazon(path)
    assert e.value.path == str(path) and "malformed line 3" in e.value.problem and "JSON" in e.value.problem


def test_amazon_review_missing_field(tmp_path):
    # no line has a rating: read without the column, said once; a line without its user is still an error
    path = _gz(tmp_path / "X.json.gz", [json.dumps({"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1})])
    with pytest.warns(UserWarning, match=r"X\.json\.gz: no line has a rating"):
        inter, _, _ = read_amazon(path)
    assert list(inter.columns) == ["user", "item", "timestamp"]
    path = _gz(tmp_path / "Y.json.gz", [json.dumps({"asin": "B1", "overall": 5.0, "unixReviewTime": 1})])
    with pytest.raises(DataError, match=r"Y\.json\.gz: malformed line 1: missing or empty user"):
        read_amazon(path)


def test_amazon_nan_rating(tmp_path):
    lines = [json.dumps({"user_id": "U1", "parent_asin": "P1", "rating": r, "timestamp": 1000})
             for r in (5.0, "NaN")]
    path = tmp_path / "X.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"X\.jsonl: 1 review has a non-numeric or NaN rating"):
        read_amazon(path)


def test_amazon_malformed_meta_literal_never_evaluated(tmp_path):
    reviews = AMAZON["2014"][0]
    ok = repr({"asin": "B00001", "title": "Tutu"})
    # a call is not a literal: literal_eval refuses it (eval would run it)
    meta = _gz(tmp_path / "meta_X.json.gz", [ok, "__import__('os').system('false')"])
    with pytest.raises(DataError) as e:
        read_amazon(reviews, meta)
    assert e.value.path == str(meta) and "malformed line 2" in e.value.problem


def test_amazon_empty_files(tmp_path):
    empty = tmp_path / "reviews_X.json.gz"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="file is empty"):
        read_amazon(empty)
    blank = _gz(tmp_path / "Y.json.gz", ["", "  "])
    with pytest.raises(DataError, match=r"Y\.json\.gz: no reviews"):
        read_amazon(blank)
    with pytest.raises(DataError, match="file not found"):
        read_amazon(tmp_path / "missing.json.gz")


# ---------------------------------------------------------------------------------------- MMRec
def test_load_mmrec_fixture_via_registry():
    ds = load(FIX / "mmrec_tiny")
    assert_split_dataset(ds)
    assert ds.name == "mmrec_tiny" and (ds.n_users, ds.n_items) == (4, 5)
    assert ds.stats()["split"] == {"train": 9, "valid": 3, "test": 4}
    assert list(ds.user_ids)[:2] == ["A1B2C3D4E5F6G7", "A2QWERTYUIOP12"]  # from u_id_mapping.csv
    assert ds.item_ids[4] == "B00005"
    row = ds.interactions.iloc[3]  # "0 3 5 1388793600 2"
    assert (row["user"], row["item"], row["rating"], row["timestamp"], row["split"]) == (0, 3, 5.0, 1388793600, "test")
    feats = read_mmrec_features(FIX / "mmrec_tiny", ds.n_items)
    assert feats["text"].shape == (5, 4) and feats["image"].shape == (5, 3)
    assert set(ds.info["features"]) == {"text", "image"}


def test_mmrec_without_mappings_uses_dense_ids(tmp_path):
    shutil.copy(FIX / "mmrec_tiny" / "mmrec_tiny.inter", tmp_path / "baby.inter")
    ds = load_mmrec(tmp_path)
    assert ds.name == "baby" and list(ds.user_ids) == ["0", "1", "2", "3"]
    assert read_mmrec_features(tmp_path, ds.n_items) == {}


@pytest.mark.parametrize("features", [False, True])
def test_mmrec_round_trip(tmp_path, features):
    ds = load_amazon(*AMAZON["2014"])
    feats = {"text": np.arange(ds.n_items * 3, dtype=np.float32).reshape(-1, 3),
             "image": np.ones((ds.n_items, 2), np.float32)} if features else None
    inter_path = save_mmrec(ds, tmp_path / "out", feats)
    assert inter_path.name == "amazon-baby.inter"
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporaries
    back = load_mmrec(tmp_path / "out")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    assert list(back.user_ids) == list(ds.user_ids) and list(back.item_ids) == list(ds.item_ids)
    if features:
        got = read_mmrec_features(tmp_path / "out", back.n_items)
        np.testing.assert_array_equal(got["text"], feats["text"])
        np.testing.assert_array_equal(got["image"], feats["image"])


def test_save_mmrec_rejects_wrong_feature_rows(tmp_path):
    ds = load_mmrec(FIX / "mmrec_tiny")
    with pytest.raises(DataError, match=r"text_feat\.npy: has shape \(4, 2\) but the dataset has 5 items"):
        save_mmrec(ds, tmp_path, {"text": np.zeros((4, 2))})


def _mmrec_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIX / "mmrec_tiny", tmp_path / "mmrec_tiny"))


def test_mmrec_feature_row_count_mismatch(tmp_path):
    folder = _mmrec_copy(tmp_path)
    np.save(folder / "image_feat.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert e.value.path.endswith("image_feat.npy")
    assert e.value.problem == "shape (4, 3), expected 5 rows (one per item)"


def test_mmrec_nan_features(tmp_path):
    folder = _mmrec_copy(tmp_path)
    arr = np.zeros((5, 4), np.float32)
    arr[2, 1] = np.nan
    np.save(folder / "text_feat.npy", arr)
    with pytest.raises(DataError, match=r"text_feat\.npy: 1 row holds NaN or inf \(first: row 2, item_id 'B00003'\)"):
        load_mmrec(folder)


@pytest.mark.parametrize("arr, problem", [
    (np.zeros((5, 0), np.float32), "shape (5, 0): no feature columns"),  # a view with nothing in it
    (np.ones((5, 3), np.complex64), "dtype complex64 is not a number type (expected float32)"),
    (np.ones((5, 3), bool), "dtype bool is not a number type (expected float32)"),
    (np.full((5, 3), 1e39), "5 rows hold NaN or inf (first: row 0, item_id 'B00001')"),  # overflows float32
])
def test_mmrec_features_refused_as_the_feature_store_refuses_them(tmp_path, arr, problem):
    """Loading an MMRec folder checks its features with the feature store's check: what `recgoat encode
    import-mmrec` would refuse later is refused when the folder is read, with the same words."""
    folder = _mmrec_copy(tmp_path)
    np.save(folder / "image_feat.npy", arr)
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert e.value.path.endswith("image_feat.npy") and e.value.problem == problem


def test_mmrec_features_not_npy(tmp_path):
    folder = _mmrec_copy(tmp_path)
    (folder / "text_feat.npy").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"text_feat\.npy: not a \.npy file \(no NumPy header\)"):
        load_mmrec(folder)


def _edit_inter(folder: Path, fn) -> Path:
    path = folder / "mmrec_tiny.inter"
    path.write_text(fn(path.read_text()))
    return path


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.replace("\tx_label", "\tlabel"), "missing column 'x_label'"),
    (lambda t: t.replace("2\t0\t4\t1388534600", "2\t-1\t4\t1388534600"),
     "column 'itemID' has 1 id that is not an integer ≥ 0 (first at data row 9: '-1')"),
    (lambda t: t.replace("0\t1\t4\t1388620800", "0\tB2\t4\t1388620800"), "column 'itemID' has 1 id "),
    (lambda t: t.replace("1\t4\t4\t1388707300\t1", "1\t4\t4\t1388707300\t7"), "must be 0, 1 or 2"),
    (lambda t: t.replace("0\t2\t3\t1388707200", "0\t2\tNaN\t1388707200"),
     "column 'rating' has 1 missing or non-numeric values (first at data row 3"),
    (lambda t: t.splitlines()[0] + "\n", "file has a header but no rows"),
])
def test_mmrec_bad_inter(tmp_path, edit, problem):
    path = _edit_inter(_mmrec_copy(tmp_path), edit)
    with pytest.raises(DataError) as e:
        load_mmrec(path.parent)
    assert e.value.path == str(path) and problem in e.value.problem


def test_mmrec_unknown_item_id(tmp_path):
    folder = _mmrec_copy(tmp_path)
    _edit_inter(folder, lambda t: t.replace("3\t4\t4\t1388793900", "3\t9\t4\t1388793900"))
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert e.value.path.endswith("i_id_mapping.csv") and "unknown item id" in e.value.problem


def test_mmrec_empty_inter(tmp_path):
    (tmp_path / "x.inter").write_text("")
    with pytest.raises(DataError, match=r"x\.inter: file is empty"):
        load_mmrec(tmp_path)


# ---------------------------------------------------------------------------------------- lines
def test_load_lines_fixture():
    ds = load_lines(FIX / "lines_tiny")
    assert_split_dataset(ds)
    assert ds.name == "lines_tiny"
    assert ds.n_users == 5  # user 4 appears alone in train.txt
    assert ds.n_items == 6
    assert ds.stats()["split"] == {"train": 13, "valid": 3, "test": 5}
    test = ds.split_frame("test")
    assert sorted(test.loc[test["user"] == 1, "item"]) == [0, 3]
    assert ds.csr("train")[0].indices.tolist() == [0, 1, 2, 3]


def test_lines_round_trip(tmp_path):
    ds = load_amazon(*AMAZON["2018"])
    save_lines(ds, tmp_path)
    back = load_lines(tmp_path, name=ds.name)
    cols = ["user", "item", "split"]
    key = ["user", "item"]
    pd.testing.assert_frame_equal(back.interactions[cols].sort_values(key).reset_index(drop=True),
                                  ds.interactions[cols].sort_values(key).reset_index(drop=True))
    assert (back.n_users, back.n_items) == (ds.n_users, ds.n_items)
    # time order kept inside each line
    first = (tmp_path / "train.txt").read_text().splitlines()[0].split()
    ts = ds.interactions.set_index(["user", "item"])["timestamp"]
    assert [ts[(0, int(i))] for i in first[1:]] == sorted(ts[(0, int(i))] for i in first[1:])


def test_lines_malformed_line(tmp_path):
    shutil.copytree(FIX / "lines_tiny", tmp_path / "d")
    (tmp_path / "d" / "test.txt").write_text("0 5\n\n1 0 3x\n")
    with pytest.raises(DataError) as e:
        load_lines(tmp_path / "d")
    assert e.value.path.endswith("test.txt")
    assert e.value.problem.startswith("malformed line 3: '3x' is not a non-negative integer id")


def test_lines_missing_and_empty_files(tmp_path):
    (tmp_path / "train.txt").write_text("0 1 2\n")
    with pytest.raises(DataError, match=r"test\.txt: file not found"):
        load_lines(tmp_path)
    (tmp_path / "test.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"test\.txt: file is empty"):
        load_lines(tmp_path)


# ---------------------------------------------------------------------------------------- generic
def test_embedded_ml_latest_small():
    ds = load("ml-latest-small")
    assert_split_dataset(ds)
    s = ds.stats()
    # 5-core of 100,836 ratings: every user has >= 20 ratings, many movies fewer than 5
    assert (s["users"], s["items"], s["interactions"]) == (610, 3650, 90274)
    assert ds.text_fields == ["title", "genres", "year", "tags"]
    toy = ds.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == "1995"


def test_shared_ml100k_mm():
    root = shared_root()
    if root is None or not (root / "ml100k-mm").is_dir():
        pytest.skip("shared dataset ml100k-mm not found: set RECGOAT_SHARED_DATA or put "
                    "../shared/datasets beside the checkout")
    ds = load("ml100k-mm")
    assert_split_dataset(ds)
    assert ds.n_users == 943 and 1300 < ds.n_items <= 1682 and len(ds.interactions) > 95_000
    assert {"title", "genres", "year", "overview"} <= set(ds.text_fields)
    assert ds.has_images
    assert Path(ds.items["image"].dropna().iloc[0]).is_file()


@pytest.mark.parametrize("fname, problem", [
    ("missing_item_column.csv", "missing column for item"),
    ("empty_user_id.csv", "column 'user_id' has 1 empty user ids (first at data row 2)"),
    ("empty.csv", "file is empty"),
    ("header_only.csv", "file has a header but no rows"),
    ("malformed.csv", "malformed line"),
    ("nan_rating.csv", "column 'rating' has 1 missing or non-numeric values (first at data row 2: 'NaN')"),
    ("bad_timestamp.csv", "column 'timestamp' has unparseable timestamps (first at data row 2"),
])
@pytest.mark.filterwarnings("ignore:Could not infer format")  # pandas, on the non-date timestamp
def test_generic_bad_inputs(fname, problem):
    path = FIX / "generic_bad" / fname
    with pytest.raises(DataError) as e:
        read_interactions(path)
    assert e.value.path == str(path)
    assert problem in e.value.problem


def test_generic_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no interactions.csv"):
        load(tmp_path)
    with pytest.raises(DataError, match="no such dataset name or folder"):
        load(tmp_path / "nope")
    shutil.copy(FIX / "generic_bad" / "header_only.csv", tmp_path / "interactions.csv")
    with pytest.raises(DataError, match=r"interactions\.csv: file has a header but no rows"):
        load(tmp_path)


def test_read_table_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "x.csv")


@pytest.mark.parametrize("layout", ["generic", "lines"])
def test_a_folder_given_as_dot_or_dotdot_is_named_after_the_folder(tmp_path, monkeypatch, layout):
    """'.' was named "" (its features went to features/ itself) and '..' was named ".." (features/.. is the
    working folder)."""
    data = tmp_path / "my-data"
    (data / "sub").mkdir(parents=True)
    if layout == "generic":
        rows = [(u, i) for u in range(6) for i in range(6) if (u + i) % 3]
        pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(data / "interactions.csv", index=False)
    else:
        (data / "train.txt").write_text("0 1 2\n1 0 2\n")
        (data / "test.txt").write_text("0 0\n1 1\n")
    cfg = PrepareConfig(k_core=0) if layout == "generic" else None  # a split folder takes no preparation options
    monkeypatch.chdir(data)
    assert load(".", cfg).name == "my-data"
    monkeypatch.chdir(data / "sub")
    assert load("..", cfg).name == "my-data"
