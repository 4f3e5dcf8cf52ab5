"""MMRec interop puts every feature row on its own item, and profiles need item text (QA pass 6).

`encode import-mmrec` copied MMRec's rows in file order: MMRec numbers items by first appearance (recorded in
i_id_mapping.csv), recgoat a dataset prepared from raw files by sorted id, so 119 of Amazon-Baby's 120 rows sat
on other items, exit 0. Rows are now reordered by the mapping, a folder without one is accepted only when the
dataset's item ids are the row numbers, and `export-mmrec` writes the mapping. `encode users` on a dataset
without item text wrote "profiles" listing item ids; it is now refused (`encode all`: skipped, said).
Small constructed datasets and a digest text encoder; nothing is downloaded."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import recgoat.features.text as text_mod  # noqa: E402
from features_helpers import toy_dataset  # noqa: E402
from recgoat.datasets import load  # noqa: E402
from recgoat.datasets.mmrec import read_mapping, load_mmrec  # noqa: E402
from recgoat.errors import DataError  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, export_mmrec, import_mmrec, load_features  # noqa: E402
from recgoat.features.cli import app  # noqa: E402
from recgoat.features.profiles import make_profiles  # noqa: E402
from recgoat.features.store import NothingToEncode  # noqa: E402

runner = CliRunner()


class DigestText:
    """Stands in for the sentence-transformers encoder: one digest row per text (no model loaded)."""

    def __init__(self, model=None, device="cpu", batch_size=64):
        self.name, self.dim = "digest", 6

    def encode(self, texts, on_progress=None):
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:6], np.uint8).astype(np.float32) / 255
                for t in texts]
        if on_progress:
            on_progress(len(texts))
        return np.stack(rows) if rows else np.zeros((0, 6), np.float32)


@pytest.fixture(autouse=True)
def digest_text(monkeypatch):
    monkeypatch.setattr(text_mod, "TextEncoder", DigestText)


def raw_catalogue(folder: Path, n_items: int = 12, titles: bool = False) -> pd.DataFrame:
    """A generic dataset folder (interactions.csv, ids i0..i{n-1}; with ``titles`` an items.csv) as a raw
    Amazon file prepares: recgoat numbers its items in sorted id order. Returns the interactions."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}") for u in range(30) for i in rng.choice(n_items, 6, replace=False)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"])
    folder.mkdir(parents=True)
    inter.to_csv(folder / "interactions.csv", index=False)
    if titles:
        pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)],
                      "title": [f"thing number {i}" for i in range(n_items)]}).to_csv(folder / "items.csv", index=False)
    return inter


def mmrec_features(folder: Path, order: list[str], mapping: bool = True) -> np.ndarray:
    """MMRec's files for the items ``order`` (row r = item order[r]): column 0 holds the item's number, so a
    row on the wrong item shows. Written with its i_id_mapping.csv (MMRec's columns) when ``mapping``."""
    folder.mkdir(parents=True, exist_ok=True)
    feat = np.zeros((len(order), 4), np.float32)
    feat[:, 0] = [int(a[1:]) for a in order]
    feat[:, 1] = 1
    np.save(folder / "text_feat.npy", feat)
    np.save(folder / "image_feat.npy", feat[:, ::-1] + 1)
    if mapping:
        pd.DataFrame({"asin": order, "itemID": range(len(order))}).to_csv(folder / "i_id_mapping.csv", sep="\t",
                                                                          index=False)
    return feat


def own_number(item_ids) -> list[int]:
    return [int(str(i)[1:]) for i in item_ids]


# ---------------------------------------------------------------------------------------------- import
def test_rows_are_put_on_their_items_by_the_mapping(tmp_path):
    inter = raw_catalogue(tmp_path / "gen")
    order = list(pd.unique(inter["item_id"]))  # MMRec's numbering: first appearance, not sorted
    mmrec_features(tmp_path / "mm", order)
    res = runner.invoke(app, ["import-mmrec", str(tmp_path / "mm"), str(tmp_path / "gen"), "--out", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    ds = load(str(tmp_path / "gen"))
    assert list(ds.item_ids) != order  # the two numberings differ: the file order is not the dataset's
    f = load_features(ds, tmp_path / "f")
    assert f.text[:, 0].astype(int).tolist() == own_number(ds.item_ids)  # each item its own row
    assert f.image[:, -1].astype(int).tolist() == [n + 1 for n in own_number(ds.item_ids)]
    how = f.manifests["text"]["row_alignment"]
    assert how["by"] == "i_id_mapping.csv" and how["rows_moved"] > 0 and how["file_rows"] == 12
    assert how["mapping"] == str((tmp_path / "mm" / "i_id_mapping.csv").resolve())


def test_a_mapping_of_more_items_gives_the_dataset_its_own(tmp_path):
    """MMRec's catalogue may hold items the dataset lacks (another k-core): those rows are left out."""
    raw_catalogue(tmp_path / "gen")
    order = ["i13", "i5", "i12", *[f"i{i}" for i in (3, 0, 11, 1, 7, 9, 2, 4, 10, 6, 8)]]
    mmrec_features(tmp_path / "mm", order)
    ds = load(str(tmp_path / "gen"))
    f = load_features(ds, import_mmrec(ds, tmp_path / "mm", tmp_path / "f"))
    assert f.text.shape == (12, 4) and f.text[:, 0].astype(int).tolist() == own_number(ds.item_ids)


def test_an_item_missing_from_the_mapping_is_refused_naming_it(tmp_path):
    raw_catalogue(tmp_path / "gen")
    mmrec_features(tmp_path / "mm", [f"i{i}" for i in range(11)] + ["i99"])  # i11 is not in MMRec's catalogue
    res = runner.invoke(app, ["import-mmrec", str(tmp_path / "mm"), str(tmp_path / "gen"), "--out", str(tmp_path / "f")])
    assert res.exit_code == 1
    assert res.output == (f"error: {tmp_path / 'mm' / 'i_id_mapping.csv'}: 1 of the 12 items of dataset gen is not in "
                          "it (e.g. 'i11'), so its rows of text_feat.npy and image_feat.npy cannot be found: the "
                          "features describe another catalogue\n")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("mapping, problem", [
    ("asin\titemID\ni0\t0\ni0\t1\n", "column 'asin' has 2 rows with repeated item ids (first at data row 1: 'i0')"),
    ("asin\titemID\ni0\t0\ni1\t0\n", "column 'itemID' is not a permutation of 0..1"),
    ("asin,itemID\ni0,0\ni1,1\n", "missing column 'itemID'"),
])
def test_a_malformed_mapping_is_one_error_naming_it(tmp_path, mapping, problem):
    raw_catalogue(tmp_path / "gen")
    mmrec_features(tmp_path / "mm", [f"i{i}" for i in range(12)], mapping=False)
    (tmp_path / "mm" / "i_id_mapping.csv").write_text(mapping)
    with pytest.raises(DataError) as e:
        import_mmrec(load(str(tmp_path / "gen")), tmp_path / "mm", tmp_path / "f")
    assert str(e.value).startswith(f"{tmp_path / 'mm' / 'i_id_mapping.csv'}: {problem}")


def test_rows_not_matching_the_mapping_are_refused(tmp_path):
    raw_catalogue(tmp_path / "gen")
    mmrec_features(tmp_path / "mm", [f"i{i}" for i in range(12)])
    np.save(tmp_path / "mm" / "text_feat.npy", np.ones((11, 4), np.float32))
    with pytest.raises(DataError) as e:
        import_mmrec(load(str(tmp_path / "gen")), tmp_path / "mm", tmp_path / "f")
    assert str(e.value) == (f"{tmp_path / 'mm' / 'text_feat.npy'}: shape (11, 4), expected 12 rows: one per item of "
                            "i_id_mapping.csv")


def test_without_a_mapping_unknown_row_order_is_refused(tmp_path):
    inter = raw_catalogue(tmp_path / "gen")
    mmrec_features(tmp_path / "mm", list(pd.unique(inter["item_id"])), mapping=False)
    res = runner.invoke(app, ["import-mmrec", str(tmp_path / "mm"), str(tmp_path / "gen"), "--out", str(tmp_path / "f")])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1
    assert res.output == (f"error: {tmp_path / 'mm'}: no i_id_mapping.csv beside text_feat.npy and image_feat.npy, so "
                          "which item each row describes cannot be known: MMRec numbers items in its own order (first "
                          "appearance in the raw data), and the items of dataset gen are not numbered by row (e.g. "
                          "'i0'); add the i_id_mapping.csv MMRec wrote with these features (tab-separated: original "
                          "item id, then itemID = its row)\n")
    assert not (tmp_path / "f").exists()


def test_without_a_mapping_item_ids_that_are_row_numbers_name_their_rows(tmp_path):
    """Ids 0..11 sort as strings ('0', '1', '10', '11', '2', …): row 10 belongs to item '10', not to the
    dataset's third item."""
    items = pd.DataFrame({"item_id": [str(i) for i in range(12)], "title": [f"t{i}" for i in range(12)]})
    ds = toy_dataset(items.sort_values("item_id"), [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9, 10, 11]])
    assert list(ds.item_ids[:4]) == ["0", "1", "10", "11"]
    (tmp_path / "mm").mkdir()
    np.save(tmp_path / "mm" / "text_feat.npy", np.arange(12, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32))
    f = load_features(ds, import_mmrec(ds, tmp_path / "mm", tmp_path / "f"))
    assert f.text[:, 0].astype(int).tolist() == [int(i) for i in ds.item_ids]
    assert f.manifests["text"]["row_alignment"]["by"] == "row numbers: the dataset's item ids are 0..n-1"


def test_an_mmrec_folder_imports_its_own_features_unchanged(tmp_path):
    mm = tmp_path / "baby"
    mm.mkdir()
    rows = ["userID\titemID\tx_label"] + [f"{u}\t{(u + j) % 5}\t{[0, 0, 0, 1, 2][j]}" for u in range(6) for j in range(5)]
    (mm / "baby.inter").write_text("\n".join(rows) + "\n")
    feat = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.save(mm / "text_feat.npy", feat)
    ds = load_mmrec(mm)
    f = load_features(ds, import_mmrec(ds, mm, tmp_path / "f"))
    np.testing.assert_array_equal(f.text, feat)
    assert f.manifests["text"]["row_alignment"]["by"] == ("row numbers: the dataset is this MMRec folder, whose item "
                                                          "ids are its rows")


# ---------------------------------------------------------------------------------------------- export
def test_export_writes_the_mapping_and_the_round_trip_keeps_every_row_on_its_item(tmp_path):
    inter = raw_catalogue(tmp_path / "gen")
    mmrec_features(tmp_path / "mm", list(pd.unique(inter["item_id"])))
    ds = load(str(tmp_path / "gen"))
    import_mmrec(ds, tmp_path / "mm", tmp_path / "f")
    # the CLI without the dataset: the folder records its items (item_ids.json)
    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "f"), "--dest", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith(f"{tmp_path / 'out' / 'i_id_mapping.csv'}")
    mapping = read_mapping(tmp_path / "out", "item", 0)  # MMRec's format, as load_mmrec reads it
    assert list(mapping) == list(ds.item_ids)
    exported = np.load(tmp_path / "out" / "text_feat.npy")
    assert exported[:, 0].astype(int).tolist() == own_number(mapping)
    f = load_features(ds, import_mmrec(ds, tmp_path / "out", tmp_path / "back"))
    assert f.text[:, 0].astype(int).tolist() == own_number(ds.item_ids)
    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "f"), "--dest", str(tmp_path / "out2"), "--dataset",
                              str(tmp_path / "gen")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out2" / "i_id_mapping.csv").read_text() == (tmp_path / "out" / "i_id_mapping.csv").read_text()


def test_export_into_an_mmrec_dataset_folder_follows_its_numbering(tmp_path):
    """Its i_id_mapping.csv numbers the items of its .inter file: the rows go in that order and the mapping is
    left as it is (rewritten, the .inter file's items would be renumbered)."""
    inter = raw_catalogue(tmp_path / "gen")
    ds = load(str(tmp_path / "gen"))
    mmrec_features(tmp_path / "mm", list(ds.item_ids))  # features in the dataset's own (sorted) order
    import_mmrec(ds, tmp_path / "mm", tmp_path / "f")
    order = list(pd.unique(inter["item_id"]))  # the MMRec dataset's numbering: first appearance
    dest = tmp_path / "baby"
    dest.mkdir()
    (dest / "baby.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n")
    pd.DataFrame({"asin": order, "itemID": range(12)}).to_csv(dest / "i_id_mapping.csv", sep="\t", index=False)
    before = (dest / "i_id_mapping.csv").read_text()
    written = export_mmrec(tmp_path / "f", dest)
    assert sorted(p.name for p in written) == ["image_feat.npy", "text_feat.npy"]
    assert (dest / "i_id_mapping.csv").read_text() == before
    assert np.load(dest / "text_feat.npy")[:, 0].astype(int).tolist() == own_number(order)


def test_export_into_an_mmrec_dataset_folder_without_a_mapping_is_refused_when_ids_are_not_rows(tmp_path):
    raw_catalogue(tmp_path / "gen")
    mmrec_features(tmp_path / "mm", [f"i{i}" for i in range(12)])
    ds = load(str(tmp_path / "gen"))
    import_mmrec(ds, tmp_path / "mm", tmp_path / "f")
    dest = tmp_path / "baby"
    dest.mkdir()
    (dest / "baby.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n")
    with pytest.raises(DataError) as e:
        export_mmrec(tmp_path / "f", dest)
    assert str(e.value) == (f"{dest}: holds MMRec's baby.inter without i_id_mapping.csv: its itemIDs are the rows of "
                            f"the feature files, and the items of {tmp_path / 'f'} are not numbered so (e.g. 'i0'); "
                            "add the folder's i_id_mapping.csv, or export into another folder")
    assert sorted(p.name for p in dest.iterdir()) == ["baby.inter"]


def test_export_without_the_dataset_or_recorded_items_is_refused(tmp_path):
    raw_catalogue(tmp_path / "gen")
    mmrec_features(tmp_path / "mm", [f"i{i}" for i in range(12)])
    ds = load(str(tmp_path / "gen"))
    import_mmrec(ds, tmp_path / "mm", tmp_path / "f")
    (tmp_path / "f" / "item_ids.json").unlink()  # a folder made by an older recgoat
    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "f"), "--dest", str(tmp_path / "out")])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1
    assert res.output.startswith(f"error: {tmp_path / 'f'}: holds no item_ids.json (features made by an older "
                                 "recgoat), so which item each row of text.npy and image.npy is cannot be known")
    assert "--dataset DATASET" in res.output and not (tmp_path / "out").exists()
    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "f"), "--dest", str(tmp_path / "out"), "--dataset",
                              str(tmp_path / "gen")])
    assert res.exit_code == 0, res.output
    assert list(read_mapping(tmp_path / "out", "item", 0)) == list(ds.item_ids)


def test_encode_mmrec_writes_the_mapping_beside_the_rows(tmp_path):
    raw_catalogue(tmp_path / "gen", titles=True)
    ds = load(str(tmp_path / "gen"))
    out = encode_all(ds, tmp_path / "f", FeatureConfig(export_mmrec=True), which=("text",), progress=False)
    assert list(read_mapping(out, "item", 0)) == list(ds.item_ids)
    assert json.loads((out / "item_ids.json").read_text())["item_ids"] == list(ds.item_ids)
    back = load_features(ds, import_mmrec(ds, out, tmp_path / "back"))
    np.testing.assert_array_equal(back.text, np.load(out / "text.npy"))


# ---------------------------------------------------------------------------------------------- profiles
def test_encode_users_without_item_text_is_one_error(tmp_path):
    raw_catalogue(tmp_path / "gen")
    res = runner.invoke(app, ["users", str(tmp_path / "gen"), "--out", str(tmp_path / "f"), "--no-progress"])
    assert res.exit_code == 1
    assert res.output == (f"error: {tmp_path / 'gen'}: dataset gen has no item text: a user profile written from item "
                          "ids alone says nothing about the user's preferences; nothing to encode: give the dataset "
                          "an items file with text, e.g. by preparing it from the raw files with their metadata\n")
    assert not (tmp_path / "f").exists()


def test_encode_all_without_item_text_skips_the_profiles_and_says_so(tmp_path, capsys):
    """Among kinds the dataset has (images here), profiles without item text are skipped, saying why."""
    from PIL import Image

    from features_helpers import TinyNet

    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(tmp_path / "a.png")
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["", " ", ""], "image": [str(tmp_path / "a.png")] * 3})
    ds = toy_dataset(items, [[0, 1], [1, 2]])
    encode_all(ds, tmp_path / "f", FeatureConfig(image_model=TinyNet()), progress=False)
    assert (tmp_path / "f" / "image.npy").exists()
    assert not (tmp_path / "f" / "profile.npy").exists() and not (tmp_path / "f" / "profiles.jsonl").exists()
    err = " ".join(capsys.readouterr().err.split())
    assert "users: dataset toy has no item text (its text field title blank for every item): a user profile " \
           "written from item ids alone says nothing" in err
    with pytest.raises(DataError, match="no item text"):  # the profile stage itself refuses it too
        make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")


def test_profiles_an_older_recgoat_wrote_from_item_ids_are_removed(tmp_path, capsys):
    raw_catalogue(tmp_path / "gen")
    ds = load(str(tmp_path / "gen"))
    out = tmp_path / "f"
    out.mkdir()
    np.save(out / "profile.npy", np.ones((ds.n_users, 6), np.float32))
    (out / "profile.json").write_text(json.dumps({"kind": "users", "rows": ds.n_users, "dim": 6,
                                                  "dataset_fingerprint": ds.fingerprint()}))
    load_features(ds, out)  # readable: a model would have read them
    # with another kind: asked for alone, users are refused ("nothing to encode") before anything is touched;
    # with text, which it has neither, the folder's stale profiles are removed, then nothing to encode is the error
    with pytest.raises(NothingToEncode, match=r"^.*: dataset gen has nothing to encode: its items have no text "):
        encode_all(ds, out, FeatureConfig(), which=("text", "users"), progress=False)
    assert not (out / "profile.npy").exists() and not (out / "profile.json").exists()
    assert f"users: removed {out / 'profile.npy'}: its profiles were written from item ids" in capsys.readouterr().err


def test_items_without_text_in_a_dataset_with_text_keep_their_placeholder(tmp_path):
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Red kettle", "", "Blue mug"]})
    ds = toy_dataset(items, [[0, 1, 2], [1, 2]])
    run = make_profiles(ds, FeatureConfig(), tmp_path / "p.jsonl")
    assert "item b" in run.answers[1] and "Blue mug" in run.answers[1]
    blank = toy_dataset(pd.DataFrame({"item_id": ["a", "b"], "title": ["", " "]}), [[0, 1]])
    res_dir = tmp_path / "blank"
    blank.save(res_dir)
    res = runner.invoke(app, ["users", str(res_dir), "--out", str(tmp_path / "f"), "--no-progress"])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1
    assert "dataset toy has no item text (its text field title blank for every item)" in res.output
