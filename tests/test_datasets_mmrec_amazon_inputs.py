"""Audit (session 16): MMRec folders and Amazon review files as a user with the paper's data brings them."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from recgoat.datasets.amazon import read_reviews  # noqa: E402
from recgoat.datasets.mmrec import load_mmrec  # noqa: E402
from recgoat.errors import DataError  # noqa: E402


def _mmrec(folder: Path, label_of_row_1: str = "0", sep: str = "\t") -> Path:
    """A small MMRec folder: 6 users × 5 items, x_label 0/0/0/1/2 per user, text features one row per item."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [sep.join(["userID", "itemID", "rating", "timestamp", "x_label"])]
    for u in range(6):
        for j, label in enumerate([0, 0, 0, 1, 2]):
            rows.append(sep.join(map(str, [u, (u + j) % 5, 5, 1_500_000_000 + j, label])))
    rows[1] = sep.join(["0", "0", "5", "1500000000", label_of_row_1])
    (folder / f"{folder.name}.inter").write_text("\n".join(rows) + "\n")
    np.save(folder / "text_feat.npy", np.ones((5, 4), np.float32))
    return folder


def test_valid_mmrec_folder_loads(tmp_path):
    ds = load_mmrec(_mmrec(tmp_path / "baby"))
    assert (ds.n_users, ds.n_items) == (6, 5)
    assert ds.interactions["split"].astype(str).value_counts().to_dict() == {"train": 18, "valid": 6, "test": 6}


@pytest.mark.parametrize("label, shown", [("-1", "'-1'"), ("test", "'test'"), ("0.5", "'0.5'"), ("", "empty")])
def test_bad_x_label_says_which_values_it_takes(tmp_path, label, shown):
    # was "column 'x_label' has 1 ids that are not integers ≥ 0 (…)": x_label is no id; say what it must be
    folder = _mmrec(tmp_path / "baby", label_of_row_1=label)
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert e.value.path == str(folder / "baby.inter")
    assert f"data row 1: {shown}" in e.value.problem
    assert "x_label must be 0, 1 or 2 (train/valid/test)" in e.value.problem


def test_comma_separated_inter_says_it_is_not_tab_separated(tmp_path):
    folder = _mmrec(tmp_path / "baby", sep=",")
    with pytest.raises(DataError) as e:
        load_mmrec(folder)
    assert e.value.path == str(folder / "baby.inter")
    assert "missing column 'userID'" in e.value.problem  # the message as before, with the cause after it
    assert "tab-separated, but this header line holds ','" in e.value.problem


def _reviews_2023(path: Path, times: list[float]) -> Path:
    with open(path, "w") as f:
        for n, t in enumerate(times):
            f.write(json.dumps({"rating": 5.0, "title": "ok", "text": "ok", "asin": f"B{n}", "parent_asin": f"P{n}",
                                "user_id": f"U{n % 3}", "timestamp": t, "verified_purchase": True}) + "\n")
    return path


def test_amazon_2023_milliseconds_become_seconds(tmp_path):
    path = _reviews_2023(tmp_path / "Baby_Products.jsonl", [1_588_615_855_070, 1_588_615_856_000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df, release = read_reviews(path)
    assert release == "2023"
    assert df["timestamp"].tolist() == [1_588_615_855.07, 1_588_615_856.0]


def test_amazon_2023_file_saved_in_seconds_is_not_divided_again(tmp_path):
    # a 2023 file re-saved with Unix seconds came out in January 1970 (1588615855 / 1000 = 1588615.855)
    path = _reviews_2023(tmp_path / "Baby_Products.jsonl", [1_588_615_855, 1_588_615_900])
    with pytest.warns(UserWarning, match=r"Baby_Products\.jsonl: every timestamp is below 1e11, so in seconds"):
        df, _ = read_reviews(path)
    assert df["timestamp"].tolist() == [1_588_615_855, 1_588_615_900]
    assert df["timestamp"].dtype == np.int64


def test_amazon_2023_file_mixing_seconds_and_milliseconds_is_refused(tmp_path):
    path = _reviews_2023(tmp_path / "Baby_Products.jsonl", [1_588_615_855_070, 1_588_615_900, 1_588_615_856_000])
    with pytest.raises(DataError) as e:
        read_reviews(path)
    assert e.value.path == str(path)
    assert "1 timestamp is in seconds but the others in milliseconds" in e.value.problem
    assert "line 2, value 1588615900" in e.value.problem


def test_an_mmrec_folder_without_validation_rows_names_the_file_not_ratios(tmp_path):
    from recgoat.training.trainer import check_held_out

    folder = tmp_path / "novalid"
    folder.mkdir()
    rows = ["userID\titemID\trating\ttimestamp\tx_label"]
    rows += [f"{u}\t{(u + j) % 5}\t5\t{1_500_000_000 + j}\t{label}" for u in range(6)
             for j, label in enumerate([0, 0, 0, 2])]
    (folder / "novalid.inter").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as e:
        check_held_out(load_mmrec(folder))
    assert e.value.path == str(folder.resolve())
    assert e.value.problem == ("the valid split holds no interactions; validation and test need users with held-out "
                               "items (the .inter file's rows with x_label 1 are validation, 2 test)")
