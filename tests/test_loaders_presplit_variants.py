"""Pre-split loaders (MMRec, line-per-user) on the variants real folders have.

QA pass 2 on the pre-split loaders (MMRec, line-per-user): header variants, line endings, id mappings,
held-out-only users, and split counts / fingerprints checked against an independent pandas reading."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import load
from recgoat.errors import DataError

H = "userID\titemID\trating\ttimestamp\tx_label\n"
ROWS = ("0\t0\t5.0\t100\t0\n0\t1\t4.0\t101\t0\n1\t1\t3.0\t102\t0\n"
        "1\t2\t5.0\t103\t1\n0\t2\t5.0\t104\t2\n1\t0\t5.0\t105\t2\n")
TRAIN, TEST = "0 0 1\n1 1 2\n2 2\n", "0 2\n1 0\n2 1\n"


def _write(folder: Path, files: dict[str, str | bytes | np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, np.ndarray):
            np.save(folder / name, content)
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return folder


def _quiet_load(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load(folder)


@pytest.mark.parametrize("header", ["userID:token\titemID:token\trating:float\ttimestamp:float\tx_label:token\n",
                                    "user_id:token\titem_id:token\trating:float\ttimestamp:float\tx_label\n",
                                    "userID\titemID\trating\ttimestamp\tx_label \n"])
def test_mmrec_typed_or_aliased_headers_read_as_the_plain_header(tmp_path, header):
    plain = _quiet_load(_write(tmp_path / "a" / "baby", {"baby.inter": H + ROWS}))
    typed = _quiet_load(_write(tmp_path / "b" / "baby", {"baby.inter": header + ROWS}))
    assert typed.fingerprint() == plain.fingerprint()
    assert typed.interactions["split"].astype(str).tolist() == plain.interactions["split"].astype(str).tolist()


def test_mmrec_two_columns_for_one_role_are_refused(tmp_path):
    d = _write(tmp_path / "x", {"x.inter": "user_id:token\tuserID:token\titemID\tx_label\n0\t1\t0\t0\n"})
    with pytest.raises(DataError, match=r"x\.inter.*several columns give 'userID'"):
        load(d)


@pytest.mark.parametrize("eol", ["\r\n", "\r"])
def test_mmrec_windows_line_endings_change_nothing(tmp_path, eol):
    m = "asin\titemID\nA\t0\nB\t1\nC\t2\n"
    unix = _quiet_load(_write(tmp_path / "a" / "baby", {"baby.inter": H + ROWS, "i_id_mapping.csv": m}))
    win = _quiet_load(_write(tmp_path / "b" / "baby", {"baby.inter": (H + ROWS).replace("\n", eol),
                                                        "i_id_mapping.csv": m.replace("\n", eol)}))
    assert list(win.item_ids) == ["A", "B", "C"]
    assert win.fingerprint() == unix.fingerprint()


def test_mmrec_mapping_with_an_empty_original_id_is_refused(tmp_path):
    d = _write(tmp_path / "x", {"x.inter": H + ROWS, "i_id_mapping.csv": "asin\titemID\n\t0\nB\t1\nC\t2\n"})
    with pytest.raises(DataError, match=r"i_id_mapping\.csv: column 'asin' has 1 empty item ids \(first at data row 1"):
        load(d)


def test_mmrec_mapping_rows_in_any_order_give_ids_by_dense_id(tmp_path):
    d = _write(tmp_path / "x", {"x.inter": H + ROWS, "i_id_mapping.csv": "itemID\tasin\n2\tC\n0\t0000032069\n1\tB\n",
                                "u_id_mapping.csv": "user_id\tuserID\nAX\t0\nBX\t1\n",
                                "text_feat.npy": np.arange(6, dtype=np.float32).reshape(3, 2)})
    ds = _quiet_load(d)
    assert list(ds.item_ids) == ["0000032069", "B", "C"]  # leading zeros of an ASIN kept
    assert list(ds.user_ids) == ["AX", "BX"]
    assert ds.item_index("C") == 2


def test_mmrec_feature_rows_must_match_the_mapping_not_the_largest_id(tmp_path):
    # item 3 is in the mapping but in no interaction: the feature file has one row per mapped item
    m = "asin\titemID\nA\t0\nB\t1\nC\t2\nD\t3\n"
    ok = _quiet_load(_write(tmp_path / "ok", {"x.inter": H + ROWS, "i_id_mapping.csv": m,
                                              "image_feat.npy": np.ones((4, 2), np.float32)}))
    assert ok.n_items == 4
    with pytest.raises(DataError, match=r"image_feat\.npy: shape \(3, 2\), expected 4 rows"):
        load(_write(tmp_path / "bad", {"x.inter": H + ROWS, "i_id_mapping.csv": m,
                                       "image_feat.npy": np.ones((3, 2), np.float32)}))


@pytest.mark.parametrize("label, problem", [("3", r"must be 0, 1 or 2.*data row 2 has 3"),
                                            ("-1", r"'x_label' has 1 id that is not an integer ≥ 0"),
                                            ("test", r"'x_label' has 1 id that is not an integer ≥ 0.*'test'"),
                                            ("", r"'x_label' has 1 id .*data row 2: empty")])
def test_mmrec_bad_x_label_is_one_clear_error(tmp_path, label, problem):
    d = _write(tmp_path / "x", {"x.inter": f"userID\titemID\tx_label\n0\t0\t0\n0\t1\t{label}\n"})
    with pytest.raises(DataError, match=r"x\.inter: .*" + problem):
        load(d)


def test_mmrec_ids_not_starting_at_zero_and_items_only_held_out_keep_their_ids(tmp_path):
    # as MMRec: user_num / item_num are max id + 1 over all rows, also those of items only in test
    d = _write(tmp_path / "x", {"x.inter": "userID\titemID\tx_label\n5\t7\t0\n6\t8\t0\n5\t9\t2\n6\t7\t1\n"})
    with pytest.warns(UserWarning) as said:  # kept, but said: the ids below the smallest never occur
        ds = load(d)
    assert sorted(str(w.message).split(": ", 1)[1][:32] for w in said) == [
        "5 of the user ids 0..6 never occ", "7 of the item ids 0..9 never occ"]
    assert (ds.n_users, ds.n_items) == (7, 10)
    assert ds.split_frame("test")[["user", "item"]].values.tolist() == [[5, 9]]


@pytest.mark.parametrize("layout", ["mmrec", "lines"])
def test_no_training_row_at_all_is_refused_not_an_empty_dataset(tmp_path, layout):
    files = ({"x.inter": "userID\titemID\tx_label\n0\t0\t2\n0\t1\t1\n"} if layout == "mmrec"
             else {"train.txt": "0\n1\n", "test.txt": "0 1\n1 0\n"})
    with pytest.raises(DataError, match="no user has a training interaction"):
        load(_write(tmp_path / "x", files))


@pytest.mark.parametrize("variant", ["crlf", "trailing", "blank", "tabs", "no_final_newline"])
def test_lines_whitespace_variants_give_the_same_dataset(tmp_path, variant):
    edit = {"crlf": lambda t: t.replace("\n", "\r\n"), "trailing": lambda t: t.replace("\n", " \t \n"),
            "blank": lambda t: "\n \n" + t.replace("\n", "\n\n"), "tabs": lambda t: t.replace(" ", "\t"),
            "no_final_newline": lambda t: t.rstrip("\n")}[variant]
    plain = _quiet_load(_write(tmp_path / "a" / "d", {"train.txt": TRAIN, "test.txt": TEST}))
    other = _quiet_load(_write(tmp_path / "b" / "d", {"train.txt": edit(TRAIN), "test.txt": edit(TEST)}))
    assert other.fingerprint() == plain.fingerprint()


def test_lines_user_alone_on_a_line_counts_but_has_no_rows(tmp_path):
    ds = _quiet_load(_write(tmp_path / "d", {"train.txt": TRAIN + "3 1\n4\n", "test.txt": TEST + "3\n"}))
    assert ds.n_users == 5
    assert set(ds.interactions["user"]) == {0, 1, 2, 3}


def test_lines_non_ascii_digits_are_refused(tmp_path):
    d = _write(tmp_path / "d", {"train.txt": "0 \u0661\n1 1\n", "test.txt": "0 0\n1 0\n"})
    with pytest.raises(DataError, match=r"train\.txt: malformed line 1: '\u0661' is not"):
        load(d)


def test_lines_user_on_two_lines_is_read_together_with_a_warning(tmp_path):
    d = _write(tmp_path / "d", {"train.txt": "0 0\n1 1 2\n2 2\n0 1\n", "test.txt": TEST})
    with pytest.warns(UserWarning, match=r"train\.txt: 1 user\(s\) on more than one line \(first: user 0\)"):
        ds = load(d)
    assert sorted(ds.split_frame("train").query("user == 0")["item"]) == [0, 1]


def _pandas_counts(inter: pd.DataFrame) -> dict:
    return {"rows": len(inter), "users": int(inter["user"].max()) + 1, "items": int(inter["item"].max()) + 1,
            "per_split": inter["split"].value_counts().to_dict()}


def test_mmrec_counts_and_fingerprint_match_an_independent_reading(tmp_path):
    rng = np.random.default_rng(0)
    pairs = {(int(u), int(i)) for u, i in rng.integers(0, [40, 60], size=(400, 2))}
    df = pd.DataFrame(sorted(pairs), columns=["userID", "itemID"])
    df["rating"], df["timestamp"] = 5.0, np.arange(len(df)) + 1_000
    df["x_label"] = rng.choice([0, 0, 0, 1, 2], size=len(df))
    d = tmp_path / "a" / "baby"
    d.mkdir(parents=True)
    df.to_csv(d / "baby.inter", sep="\t", index=False)
    with pytest.warns(UserWarning, match="held-out rows of 1 user"):
        ds = load(d)
    with pytest.warns(UserWarning, match="held-out rows of 1 user"):
        again = load(d / "baby.inter")
    assert ds.fingerprint() == again.fingerprint()
    # independent reading, MMRec's protocol: held-out rows of users with no train row are dropped
    raw = pd.read_csv(d / "baby.inter", sep="\t")
    keep = (raw["x_label"] == 0) | raw["userID"].isin(raw.loc[raw["x_label"] == 0, "userID"])
    want = raw[keep].rename(columns={"userID": "user", "itemID": "item"})
    want["split"] = want["x_label"].map({0: "train", 1: "valid", 2: "test"})
    got = _pandas_counts(ds.interactions.assign(split=ds.interactions["split"].astype(str)))
    assert got["rows"] == len(want) and got["per_split"] == want["split"].value_counts().to_dict()
    assert (ds.n_users, ds.n_items) == (int(raw["userID"].max()) + 1, int(raw["itemID"].max()) + 1)
    assert sorted(map(tuple, ds.interactions[["user", "item"]].to_numpy().tolist())) == \
        sorted(map(tuple, want[["user", "item"]].to_numpy().tolist()))


def test_lines_counts_match_an_independent_reading(tmp_path):
    rng = np.random.default_rng(1)
    items = rng.permutation(50)
    train = "".join(f"{u} {' '.join(map(str, items[u:u + 5]))}\n" for u in range(30))
    test = "".join(f"{u} {items[(u + 7) % 50]}\n" for u in range(0, 34, 2))  # users 30, 32: no train line
    d = _write(tmp_path / "d", {"train.txt": train, "test.txt": test})
    with pytest.warns(UserWarning, match="2 user"):
        ds = load(d)
    rows = [(int(t[0]), int(i), s) for s, text in (("train", train), ("test", test))
            for t in (line.split() for line in text.splitlines()) for i in t[1:]]
    want = pd.DataFrame(rows, columns=["user", "item", "split"])
    want = want[(want["split"] == "train") | want["user"].isin(want.loc[want["split"] == "train", "user"])]
    assert ds.n_users == 33 and ds.n_items == 50
    assert len(ds.interactions) == len(want)
    assert ds.interactions["split"].astype(str).value_counts().to_dict() == want["split"].value_counts().to_dict()
