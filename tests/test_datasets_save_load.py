"""The Dataset object: save/load round trips (ids, item tables), manifest checks on load, csr weights, item texts,
id lookups, and the MMRec / line-per-user exports of a prepared dataset."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import load_lines, load_mmrec, save_lines, save_mmrec
from recgoat.datasets.dataset import Dataset
from recgoat.errors import DataError


def _ds(user_ids: list | None = None, item_ids: list | None = None, items: pd.DataFrame | None = None,
        splits: tuple[str, ...] = ("train", "train", "valid", "test", "train"), **kw) -> Dataset:
    inter = pd.DataFrame({"user": [0, 0, 0, 0, 1], "item": [0, 1, 2, 3, 0], "rating": [1.0, 2, 3, 4, 5],
                          "split": pd.Categorical(list(splits), categories=["train", "valid", "test"])})
    return Dataset(name="t", interactions=inter, user_ids=np.array(user_ids or ["a", "b"], object),
                   item_ids=np.array(item_ids or ["w", "x", "y", "z"], object), items=items, **kw)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("user_ids", [[10, 20], ["é", "日本"], ["1.5", 2.0]])
def test_id_dtypes_round_trip(tmp_path: Path, user_ids: list) -> None:
    ds = _ds(user_ids=user_ids)
    back = Dataset.load(ds.save(tmp_path / "p"))
    assert back.fingerprint() == ds.fingerprint()
    assert back.user_index(user_ids[1]) == 1


def test_missing_id_refused_at_save_not_at_load(tmp_path: Path) -> None:
    # was saved as the text "None", so the folder then failed to load as "changed after preparation"
    with pytest.raises(DataError, match=r"ids\.parquet: 1 user id\(s\) are missing"):
        _ds(user_ids=["a", None]).save(tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_duplicate_ids_refused_at_save(tmp_path: Path) -> None:
    # item_index("x") silently answered the last of the two
    with pytest.raises(DataError, match="2 items share an original id"):
        _ds(item_ids=["x", "x", "y", "z"]).save(tmp_path / "p")
    with pytest.raises(DataError, match="share an original id"):  # 1 and "1" are one id once saved as text
        _ds(user_ids=[1, "1"]).save(tmp_path / "q")


@pytest.mark.parametrize("cells", [[["a", "b"], ["c"], [], None], [("a",), ("b",), None, None],
                                   [{"k": 1}, {"j": 2}, None, None]])
def test_item_column_that_does_not_read_back_refused_at_save(tmp_path: Path, cells: list) -> None:
    # Python lists, tuples and dicts came back from Parquet changed: the save "succeeded" and the load failed
    items = pd.DataFrame({"item_id": ["w", "x", "y", "z"], "tags": cells})
    with pytest.raises(DataError, match=r"items\.parquet: column 'tags' does not read back"):
        _ds(items=items, text_fields=["tags"]).save(tmp_path / "p")


def test_item_table_with_arrays_nan_text_and_number_column_names_round_trips(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": ["w", "x", "y", "z"], "title": ["A", np.nan, None, "D"],
                          "tags": [np.array(["a", "b"]), np.array(["c"]), None, np.array([], dtype=str)],
                          0: [1.0, np.nan, 2.0, 3.0]})
    ds = _ds(items=items, text_fields=["title", "tags"])
    back = Dataset.load(ds.save(tmp_path / "p"))
    assert back.fingerprint() == ds.fingerprint()
    assert back.item_texts() == ds.item_texts()


def test_item_texts_of_a_categorical_column(tmp_path: Path) -> None:
    items = pd.DataFrame({"item_id": ["w", "x", "y", "z"], "genre": pd.Categorical(["a|b", None, "c", None])})
    ds = _ds(items=items, text_fields=["genre"])
    assert ds.item_texts() == ["genre: a, b", "", "genre: c", ""]  # fillna("") raised TypeError
    assert Dataset.load(ds.save(tmp_path / "p")).item_texts() == ds.item_texts()


def test_amazon_source_file_gone_keeps_fingerprint(tmp_path: Path) -> None:
    # a prepared Amazon dataset outlives its reviews file: the image paths inside its folder still hash relative
    folder = tmp_path / "raw"
    folder.mkdir()
    reviews = folder / "Beauty.json.gz"
    reviews.write_bytes(b"x")
    items = pd.DataFrame({"item_id": ["w", "x", "y", "z"],
                          "image": [str(folder / "img" / f"{i}.jpg") for i in "wxyz"]})
    ds = _ds(items=items, info={"source": str(reviews), "layout": "amazon"})
    before = ds.fingerprint()
    ds.save(tmp_path / "p")
    reviews.unlink()
    assert ds.fingerprint() == before
    assert Dataset.load(tmp_path / "p").fingerprint() == before


# ------------------------------------------------------------------ manifest checks
def _saved(tmp_path: Path) -> Path:
    return _ds().save(tmp_path / "p")


def test_newer_format_version_says_upgrade(tmp_path: Path) -> None:
    p = _saved(tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    m["format_version"] = 2
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"manifest\.json: format version 2 was written by a newer recgoat"):
        Dataset.load(p)


def test_edited_timestamp_column_is_one_data_error(tmp_path: Path) -> None:
    p = _saved(tmp_path)
    inter = pd.read_parquet(p / "interactions.parquet")
    inter["timestamp"] = ["soon"] * len(inter)  # was a bare ValueError from the fingerprint
    inter.to_parquet(p / "interactions.parquet")
    with pytest.raises(DataError, match=r"interactions\.parquet: column 'timestamp' holds values that are not"):
        Dataset.load(p)


def test_duplicate_ids_in_edited_folder_without_fingerprint(tmp_path: Path) -> None:
    p = _saved(tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    del m["fingerprint"]  # older or hand-made manifests: the id check must not rely on the hash
    (p / "manifest.json").write_text(json.dumps(m))
    ids = pd.read_parquet(p / "ids.parquet")
    ids.loc[ids["id"] == "x", "id"] = "w"
    ids.to_parquet(p / "ids.parquet")
    with pytest.raises(DataError, match=r"ids\.parquet: 2 items share an original id"):
        Dataset.load(p)


# ------------------------------------------------------------------ csr, lookups
def test_csr_weight_column_must_exist_and_be_numeric() -> None:
    ds = _ds()
    with pytest.raises(ValueError, match="no numeric column 'ratng'"):  # gave unclipped ones
        ds.csr("train", weight="ratng")
    with pytest.raises(ValueError, match="no numeric column 'split'"):
        ds.csr(None, weight="split")
    assert ds.csr("train", weight="rating").toarray()[0, :2].tolist() == [1.0, 2.0]


def test_lookup_after_ids_replaced() -> None:
    ds = _ds()
    assert ds.user_index("b") == 1
    other = copy.copy(ds)
    other.user_ids = np.array(["p", "q"], object)
    other.item_ids = np.array(["k", "l", "m", "n"], object)
    assert other.user_index("q") == 1 and other.item_index("n") == 3  # answered from the old ids' map
    with pytest.raises(KeyError):
        other.user_index("b")


# ------------------------------------------------------------------ presplit exports of a prepared dataset
def test_prepared_then_mmrec_export_keeps_split_and_fingerprint(tmp_path: Path) -> None:
    ds = _ds(user_ids=['u "1"', "日本"], item_ids=["007", "a b", " sp", '"q"'])
    loaded = Dataset.load(ds.save(tmp_path / "p"))
    save_mmrec(loaded, tmp_path / "mm")
    back = load_mmrec(tmp_path / "mm")
    assert back.stats()["split"] == ds.stats()["split"]
    assert back.fingerprint() == Dataset.load(back.save(tmp_path / "p2")).fingerprint()
    assert list(back.item_ids) == list(ds.item_ids)


def test_mmrec_export_refuses_empty_id_before_writing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u_id_mapping\.csv: 1 user id\(s\) are empty"):
        save_mmrec(_ds(user_ids=["", "b"]), tmp_path / "mm")
    assert not (tmp_path / "mm").exists()


@pytest.mark.parametrize("name", ["../escaped", "a/b", "..", ""])
def test_mmrec_export_refuses_a_dataset_name_that_is_no_file_name(tmp_path: Path, name: str) -> None:
    """MMRec names the .inter file after the dataset: "../escaped" wrote outside the export folder."""
    ds = _ds()
    ds.name = name
    with pytest.raises(DataError, match="is not a file name"):
        save_mmrec(ds, tmp_path / "mm" / "out")
    assert not (tmp_path / "mm").exists() and not (tmp_path / "mm" / "escaped.inter").exists()


def test_lines_export_without_valid_removes_old_valid_file(tmp_path: Path) -> None:
    save_lines(_ds(), tmp_path / "ln")  # writes a valid.txt
    no_valid = Dataset.load(_ds(splits=("train", "train", "train", "test", "train")).save(tmp_path / "p"))
    save_lines(no_valid, tmp_path / "ln")
    back = load_lines(tmp_path / "ln")  # read the old valid.txt: a pair in two splits, refused
    assert back.stats()["split"] == {"train": 4, "valid": 0, "test": 1}
