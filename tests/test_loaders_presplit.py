"""Pre-split layouts (MMRec, line-per-user): leaks across splits, repeats, sparse ids, CLI detection."""
from __future__ import annotations

import gzip
import json
import shutil
import warnings
from pathlib import Path

import pytest

from recgoat.datasets import load, load_lines, load_mmrec
from recgoat.errors import DataError

FIX = Path(__file__).resolve().parent / "fixtures"
H = "userID\titemID\tx_label\n"


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_lines_pair_in_train_and_test_refused(tmp_path):
    d = _write(tmp_path / "d", {"train.txt": "0 1 2 3\n1 2 3\n", "test.txt": "0 1\n1 4\n"})
    with pytest.raises(DataError) as e:
        load_lines(d)
    assert "1 (user, item) pairs appear in more than one split" in e.value.problem
    assert "user 0 item 1 in train.txt and test.txt" in e.value.problem


def test_lines_pair_in_valid_and_test_refused(tmp_path):
    d = _write(tmp_path / "d", {"train.txt": "0 1\n1 2\n", "valid.txt": "0 3\n", "test.txt": "0 3\n1 0\n"})
    with pytest.raises(DataError, match=r"valid\.txt and test\.txt: 1"):
        load_lines(d)


def test_lines_repeated_items_dropped_with_one_warning(tmp_path):
    d = _write(tmp_path / "d", {"train.txt": "0 1 1 1\n1 2\n", "test.txt": "0 3\n1 0\n"})  # ids dense
    with pytest.warns(UserWarning, match=r"train\.txt: dropped 2 repeated") as rec:
        ds = load_lines(d)
    assert len(rec) == 1
    assert ds.stats()["split"] == {"train": 2, "valid": 0, "test": 2}


def test_lines_huge_id_refused(tmp_path):
    d = _write(tmp_path / "d", {"train.txt": "0 1 2\n", "test.txt": "0 99999999999\n"})
    with pytest.raises(DataError) as e:
        load_lines(d)
    assert e.value.path.endswith("test.txt") and "item id 99999999999" in e.value.problem
    assert "2 × distinct + 1000" in e.value.problem


def test_lines_huge_user_and_int64_overflow_refused(tmp_path):
    d = _write(tmp_path / "d", {"train.txt": "5000 1 2\n", "test.txt": "0 1\n"})
    with pytest.raises(DataError, match=r"train\.txt: user id 5000 is far above"):
        load_lines(d)
    (d / "train.txt").write_text("0 1 99999999999999999999999\n")
    with pytest.raises(DataError, match=r"train\.txt: line 1: id 99999999999999999999999 is above 2\*\*53"):
        load_lines(d)


def test_mmrec_pair_in_two_splits_refused(tmp_path):
    d = _write(tmp_path / "m", {"m.inter": H + "0\t1\t0\n0\t1\t2\n1\t2\t0\n1\t0\t2\n"})
    with pytest.raises(DataError) as e:
        load_mmrec(d)
    assert e.value.path.endswith("m.inter")
    assert "1 (user, item) pairs appear in more than one split" in e.value.problem
    assert "user 0 item 1 in train (x_label 0) and test (x_label 2)" in e.value.problem


def test_mmrec_repeated_rows_keep_latest(tmp_path):
    d = _write(tmp_path / "m", {"m.inter": "userID\titemID\ttimestamp\tx_label\n"
                                           "0\t1\t20\t0\n0\t1\t10\t0\n0\t2\t5\t2\n1\t0\t7\t0\n1\t2\t8\t2\n"})
    with pytest.warns(UserWarning, match=r"m\.inter: dropped 1 repeated") as rec:
        ds = load_mmrec(d)
    assert len(rec) == 1
    assert ds.interactions["timestamp"].tolist() == [20, 5, 7, 8]  # order kept, latest of the pair kept


def test_mmrec_huge_id_refused(tmp_path):
    d = _write(tmp_path / "m", {"m.inter": H + "0\t1\t0\n0\t2\t2\n1\t3000000000\t0\n"})
    with pytest.raises(DataError) as e:
        load(d)
    assert e.value.path.endswith("m.inter") and "item id 3000000000" in e.value.problem


def test_valid_presplit_fixtures_load_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_mmrec(FIX / "mmrec_tiny").stats()["split"] == {"train": 9, "valid": 3, "test": 4}
        assert load_lines(FIX / "lines_tiny").stats()["split"] == {"train": 13, "valid": 3, "test": 5}


def test_registry_detects_lines_folder(tmp_path):
    d = shutil.copytree(FIX / "lines_tiny", tmp_path / "lines_tiny")
    ds = load(d)
    assert ds.info["layout"] == "lines" and ds.stats()["split"] == {"train": 13, "valid": 3, "test": 5}
    (d / "test.txt").unlink()
    with pytest.raises(DataError, match=r"test\.txt: file not found"):
        load(d)


def _amazon_reviews(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"reviewerID": f"U{u}", "asin": f"B{i}", "overall": 5.0, "unixReviewTime": 1_400_000_000 + u * 10 + i}
            for u in range(6) for i in range(6)]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_registry_detects_amazon_file_and_folder(tmp_path):
    reviews = _amazon_reviews(tmp_path / "reviews_Toys_5.json.gz")
    by_file = load(reviews)
    assert by_file.name == "amazon-toys" and by_file.info["layout"] == "amazon"
    assert (by_file.n_users, by_file.n_items) == (6, 6)
    by_folder = load(tmp_path)
    assert by_folder.fingerprint() == by_file.fingerprint()
    _amazon_reviews(tmp_path / "Games.json.gz")
    with pytest.raises(DataError, match="several Amazon review files"):
        load(tmp_path)


def test_registry_unknown_folder_lists_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DataError) as e:
        load(tmp_path)
    for loader in ("load_mmrec", "load_lines", "load_amazon", "interactions.{csv,tsv,parquet}"):
        assert loader in e.value.problem


def test_stable_reference_matches_what_load_reads(tmp_path, monkeypatch):
    # run_config.json and the benchmark's cell comparison both use this (they once decided "is it a
    # folder?" each in its own way: a pre-split folder named like a known dataset compared as the name)
    from recgoat.benchmark.runner import _comparable
    from recgoat.datasets.registry import stable_reference

    monkeypatch.chdir(tmp_path)
    assert stable_reference("ml-latest-small") == "ml-latest-small"  # a known name, nothing of that name here
    assert stable_reference("data/../x") == str(tmp_path / "x")  # a path, absolute and normalised
    assert stable_reference("ml-latest-small", names=()) == str(tmp_path / "ml-latest-small")
    (tmp_path / "ml-latest-small").mkdir()
    (tmp_path / "ml-latest-small" / "manifest.json").write_text("{}")  # a prepared folder wins over the name
    assert stable_reference("ml-latest-small") == str(tmp_path / "ml-latest-small")
    assert _comparable("data", {"name": "ml-latest-small", "features": "f"}) == {
        "name": str(tmp_path / "ml-latest-small"), "features": str(tmp_path / "f")}


@pytest.mark.parametrize("layout", ["mmrec", "lines"])
def test_ids_missing_below_the_largest_are_said(tmp_path, layout):
    # raw, non-dense ids (users 3 and 9, items 10..12): loaded as 0..max, so 8 users and 10 items without data
    if layout == "mmrec":
        d = _write(tmp_path / "m", {"m.inter": H + "3\t10\t0\n3\t11\t2\n9\t11\t0\n9\t12\t2\n"})
        ds = None
        with pytest.warns(UserWarning) as rec:
            ds = load_mmrec(d)
        where = "m.inter"
    else:
        d = _write(tmp_path / "d", {"train.txt": "3 10\n9 11\n", "test.txt": "3 11\n9 12\n"})
        with pytest.warns(UserWarning) as rec:
            ds = load_lines(d)
        where = ".txt"
    said = [str(w.message) for w in rec]
    assert any(where in m and "8 of the user ids 0..9 never occur (2 distinct)" in m for m in said), said
    assert any("10 of the item ids 0..12 never occur (3 distinct)" in m and "models still rank" in m for m in said)
    assert (ds.n_users, ds.n_items) == (10, 13)


@pytest.mark.parametrize("layout", ["mmrec", "lines"])
def test_dense_ids_load_without_a_warning(tmp_path, layout):
    if layout == "mmrec":
        d = _write(tmp_path / "m", {"m.inter": H + "0\t0\t0\n0\t1\t2\n1\t1\t0\n1\t2\t2\n"})
    else:
        d = _write(tmp_path / "d", {"train.txt": "0 0\n1 1\n", "test.txt": "0 1\n1 2\n"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_mmrec(d) if layout == "mmrec" else load_lines(d)
    assert (ds.n_users, ds.n_items) == (2, 3)


def test_amazon_review_file_without_metadata_warns_and_2023_meta_folder_is_found(tmp_path):
    """Without its meta_ file the dataset has no item text or images: said at load, not first at `encode text`.
    Amazon Reviews 2023 publishes reviews and metadata in sibling folders: that metadata is found."""
    reviews = _amazon_reviews(tmp_path / "review_categories" / "Toys.json.gz")
    with pytest.warns(UserWarning, match=r"no metadata file meta_Toys\.json\[l\]\[\.gz\] beside it, so the dataset "
                                         r"has no item text or images"):
        assert not load(reviews).has_text
    (tmp_path / "meta_categories").mkdir()
    asins = sorted({json.loads(line)["asin"] for line in gzip.open(reviews, "rt")})
    (tmp_path / "meta_categories" / "meta_Toys.json").write_text(
        "\n".join(json.dumps({"asin": a, "title": f"Toy {a}"}) for a in asins) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load(reviews)
    assert ds.has_text and ds.info["meta"] == str((tmp_path / "meta_categories" / "meta_Toys.json").resolve())
