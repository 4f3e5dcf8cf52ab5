"""MMRec folders' feature files (image_feat.npy, text_feat.npy): three gaps found in session 23.

1. `recgoat datasets info <MMRec folder>` said "images": 0 and nothing else about the folder's image_feat.npy /
   text_feat.npy: it now lists them (kind, file, rows, dims) under "feature_files".
2. A folder without i_id_mapping.csv whose largest item ids have no interaction left in the .inter file was
   refused with an error blaming the feature files' row count; the agreeing feature files' row count now
   gives the catalogue (items with no interaction, with a warning), while files that disagree with each other,
   or lack rows for items that occur, are still refused, naming the file at fault.
3. `recgoat encode export-mmrec` of a feature folder written before item_ids.json existed asked for
   --dataset; it now finds the dataset the manifests name (the MMRec folder imported from, or a dataset name
   or folder here) when its fingerprint is the recorded one, and asks for --dataset only when none is.
Small constructed folders and a digest text encoder; nothing is downloaded.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from conftest import run_main  # noqa: E402
from recgoat.datasets import load  # noqa: E402
from recgoat.datasets.mmrec import load_mmrec, read_mapping  # noqa: E402
from recgoat.errors import DataError  # noqa: E402
from recgoat.features import export_mmrec, import_mmrec, load_features  # noqa: E402
from recgoat.features.cli import app as encode_app  # noqa: E402

runner = CliRunner()
GROWN = "item ids 5..6 never occur, but"


def mmrec_folder(folder: Path, text_rows: int | None = 5, image_rows: int | None = 5) -> Path:
    """6 users x items 0..4 (x_label 0/0/0/1/2 per user), no mapping files; feature files of the given row
    counts (None: no file), row r holding r in column 0 so a row on the wrong item shows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["userID\titemID\trating\ttimestamp\tx_label"]
    rows += [f"{u}\t{(u + j) % 5}\t5\t{1_500_000_000 + j}\t{label}" for u in range(6)
             for j, label in enumerate([0, 0, 0, 1, 2])]
    (folder / f"{folder.name}.inter").write_text("\n".join(rows) + "\n")
    for name, n, dim in (("text_feat.npy", text_rows, 4), ("image_feat.npy", image_rows, 3)):
        if n is not None:
            arr = np.ones((n, dim), np.float32)
            arr[:, 0] = np.arange(n)
            np.save(folder / name, arr)
    return folder


def quiet_load(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_mmrec(folder)


# ---------------------------------------------------------------------------------------- 1. datasets info
def info_json(monkeypatch, capsys, folder: Path) -> dict:
    from recgoat.cli import main
    import sys

    monkeypatch.setattr(sys, "argv", ["recgoat", "datasets", "info", str(folder)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    return json.loads(out.out)


def test_info_lists_the_feature_files_an_mmrec_folder_brings(tmp_path, monkeypatch, capsys):
    folder = mmrec_folder(tmp_path / "baby")
    out = info_json(monkeypatch, capsys, folder)
    assert out["items"] == 5
    assert out["images"] == 0  # no image files: the features are reported as what they are, not as images
    assert out["feature_files"] == {
        "text": {"file": str((folder / "text_feat.npy").resolve()), "rows": 5, "dims": 4},
        "image": {"file": str((folder / "image_feat.npy").resolve()), "rows": 5, "dims": 3}}


def test_describe_lists_the_feature_files_as_info_does(tmp_path, monkeypatch, capsys):
    """Dataset.describe(): the Python call behind `datasets info`, feature files included."""
    folder = mmrec_folder(tmp_path / "baby")
    out = quiet_load(folder).describe()
    assert out == info_json(monkeypatch, capsys, folder)
    assert set(out["feature_files"]) == {"text", "image"} and out["images"] == 0


def test_info_lists_only_the_files_present(tmp_path, monkeypatch, capsys):
    out = info_json(monkeypatch, capsys, mmrec_folder(tmp_path / "baby", image_rows=None))
    assert list(out["feature_files"]) == ["text"] and out["feature_files"]["text"]["rows"] == 5


def test_info_of_a_folder_without_feature_files_says_nothing_of_them(tmp_path, monkeypatch, capsys):
    out = info_json(monkeypatch, capsys, mmrec_folder(tmp_path / "baby", text_rows=None, image_rows=None))
    assert "feature_files" not in out and out["images"] == 0


def test_info_of_a_prepared_copy_names_the_source_files_and_one_gone(tmp_path, monkeypatch, capsys):
    """A prepared copy keeps its source's provenance (training reads the same files): listed where they are,
    and one deleted since is said to be missing rather than failing the command."""
    folder = mmrec_folder(tmp_path / "baby")
    quiet_load(folder).save(tmp_path / "prepared")
    (folder / "image_feat.npy").unlink()
    out = info_json(monkeypatch, capsys, tmp_path / "prepared")
    assert out["feature_files"] == {
        "text": {"file": str((folder / "text_feat.npy").resolve()), "rows": 5, "dims": 4},
        "image": {"file": str((folder / "image_feat.npy").resolve()), "missing": True}}


# ------------------------------------------------------------------- 2. items beyond the largest itemID
def test_feature_rows_beyond_the_largest_item_id_are_items_without_interactions(tmp_path):
    folder = mmrec_folder(tmp_path / "baby", text_rows=7, image_rows=7)
    said = f"{folder / 'baby.inter'}: {GROWN} text_feat.npy and image_feat.npy have 7 rows: kept as 2 item(s) with no"
    with pytest.warns(UserWarning, match=re.escape(said)):
        ds = load_mmrec(folder)
    assert ds.n_items == 7 and list(ds.item_ids) == [str(i) for i in range(7)]
    assert ds.csr("train").shape == (6, 7) and ds.csr(None)[:, 5:].nnz == 0
    # the features go on their own items: imported, every row is where it was
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = load_features(ds, import_mmrec(ds, folder, tmp_path / "f"))
    assert f.text[:, 0].astype(int).tolist() == list(range(7))
    assert f.image.shape == (7, 3) and f.image_mask.all()


def test_one_feature_file_alone_gives_the_catalogue_too(tmp_path):
    with pytest.warns(UserWarning, match="item ids 5..7 never occur, but image_feat.npy has 8 rows"):
        ds = load_mmrec(mmrec_folder(tmp_path / "baby", text_rows=None, image_rows=8))
    assert ds.n_items == 8


def test_info_reports_the_grown_catalogue(tmp_path, monkeypatch, capsys):
    out = info_json(monkeypatch, capsys, mmrec_folder(tmp_path / "baby", text_rows=7, image_rows=7))
    assert out["items"] == 7 and out["feature_files"]["image"]["rows"] == 7


def test_a_model_trains_on_items_without_interactions(tmp_path, monkeypatch, capsys):
    """A graph model (node degree 0 for the items with no interaction: 1/√0 in the normalisation) trains and
    evaluates: finite metrics, and finite scores for those items too."""
    import math

    from recgoat.models.base import Recommender

    folder = mmrec_folder(tmp_path / "baby", text_rows=7, image_rows=7)
    code, err = run_main(monkeypatch, capsys, "train", "--model", "lightgcn", "--dataset", str(folder),
                         "--epochs", "2", "--run-dir", str(tmp_path / "run"))
    assert code == 0, err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs_run"] == 2
    assert all(math.isfinite(v) for split in ("valid", "test") for v in result[split].values()), result
    model = Recommender.load(tmp_path / "run" / "best")
    scores = model.score(list(range(model.n_users)))
    assert scores.shape[1] == 7 and torch.isfinite(scores).all()  # items 5 and 6 occur in no interaction


def test_feature_files_that_disagree_above_the_largest_id_are_refused_naming_both(tmp_path):
    folder = mmrec_folder(tmp_path / "baby", text_rows=7, image_rows=6)
    with pytest.raises(DataError) as e:
        quiet_load(folder)
    assert str(e.value) == (f"{folder / 'image_feat.npy'}: 6 rows, but text_feat.npy has 7: both hold one row per "
                            "item, so they must agree (without i_id_mapping.csv the items are numbered by these rows, "
                            "and baby.inter uses item ids up to 4)")


@pytest.mark.parametrize("text_rows, image_rows", [(7, 4), (5, 4), (4, 7)])
def test_a_file_short_of_the_items_that_occur_is_the_one_refused(tmp_path, text_rows, image_rows):
    """Items 0..4 occur: a file of 4 rows lacks one, whatever the other holds (with 7 rows the text file was
    blamed for not having 5)."""
    folder = mmrec_folder(tmp_path / "baby", text_rows=text_rows, image_rows=image_rows)
    short, dim = ("image_feat.npy", 3) if image_rows == 4 else ("text_feat.npy", 4)
    with pytest.raises(DataError) as e:
        quiet_load(folder)
    assert str(e.value) == f"{folder / short}: shape (4, {dim}), expected 5 rows (one per item)"


def test_a_mapping_still_decides_the_catalogue(tmp_path):
    folder = mmrec_folder(tmp_path / "baby", text_rows=7, image_rows=7)
    pd.DataFrame({"asin": list("ABCDE"), "itemID": range(5)}).to_csv(folder / "i_id_mapping.csv", sep="\t",
                                                                      index=False)
    with pytest.raises(DataError, match=r"text_feat\.npy: shape \(7, 4\), expected 5 rows"):
        quiet_load(folder)


# -------------------------------------------------------------- 3. export-mmrec of an older feature folder
def older_features(ds, src: Path, out: Path) -> Path:
    """``src``'s features imported for ``ds`` into ``out``, then made as an older recgoat left them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import_mmrec(ds, src, out)
    (out / "item_ids.json").unlink()
    return out


def test_export_finds_the_mmrec_folder_the_features_were_imported_from(tmp_path):
    folder = mmrec_folder(tmp_path / "baby", text_rows=7, image_rows=7)
    feats = older_features(quiet_load(folder), folder, tmp_path / "f")
    res = runner.invoke(encode_app, ["export-mmrec", str(feats), "--dest", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (f"{feats}: holds no item_ids.json (features made by an older recgoat); its rows are the items of "
            f"dataset baby ({folder})") in res.output
    assert list(read_mapping(tmp_path / "out", "item", 0)) == [str(i) for i in range(7)]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "text_feat.npy"), np.load(folder / "text_feat.npy"))


def generic_folder(folder: Path) -> Path:
    """A generic dataset (ids i0..i11 prepared in sorted order) and MMRec features for it with a mapping."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    pd.DataFrame([(f"u{u}", f"i{i}") for u in range(30) for i in rng.choice(12, 6, replace=False)],
                 columns=["user_id", "item_id"]).to_csv(folder / "interactions.csv", index=False)
    return folder


def mmrec_features_for(folder: Path, ids: list[str]) -> Path:
    folder.mkdir(parents=True)
    feat = np.ones((len(ids), 4), np.float32)
    feat[:, 0] = [int(i[1:]) for i in ids]
    np.save(folder / "text_feat.npy", feat)
    pd.DataFrame({"asin": ids, "itemID": range(len(ids))}).to_csv(folder / "i_id_mapping.csv", sep="\t", index=False)
    return folder


def test_export_finds_the_dataset_by_its_name_here(tmp_path, monkeypatch):
    gen = generic_folder(tmp_path / "gen")
    ds = load(str(gen))
    feats = older_features(ds, mmrec_features_for(tmp_path / "mm", [f"i{i}" for i in range(12)]), tmp_path / "f")
    monkeypatch.chdir(tmp_path)  # the manifests name dataset 'gen': the folder of that name here
    written = export_mmrec(feats, tmp_path / "out")
    assert [p.name for p in written] == ["text_feat.npy", "i_id_mapping.csv"]
    assert list(read_mapping(tmp_path / "out", "item", 0)) == list(ds.item_ids)


def test_export_asks_for_the_dataset_when_the_one_found_holds_other_data(tmp_path, monkeypatch):
    gen = generic_folder(tmp_path / "gen")
    ds = load(str(gen))
    feats = older_features(ds, mmrec_features_for(tmp_path / "mm", [f"i{i}" for i in range(12)]), tmp_path / "f")
    # the data changed since the features were made (item i3 renamed: a row appended could be k-cored away)
    (gen / "interactions.csv").write_text((gen / "interactions.csv").read_text().replace(",i3\n", ",i3x\n"))
    monkeypatch.chdir(tmp_path)
    fp = json.loads((feats / "text.json").read_text())["dataset_fingerprint"]
    res = runner.invoke(encode_app, ["export-mmrec", str(feats), "--dest", str(tmp_path / "out")])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1
    assert res.output.startswith(f"error: {feats}: holds no item_ids.json (features made by an older recgoat), so "
                                 "which item each row of text.npy is cannot be known")
    assert f"the manifests name dataset 'gen' of fingerprint {fp}, not found: 'gen' has fingerprint " in res.output
    assert "(other data, or prepared with other options)" in res.output
    assert "--dataset DATASET" in res.output and not (tmp_path / "out").exists()


def test_export_asks_for_the_dataset_when_its_name_is_nowhere(tmp_path, monkeypatch):
    ds = load(str(generic_folder(tmp_path / "gen")))
    feats = older_features(ds, mmrec_features_for(tmp_path / "mm", [f"i{i}" for i in range(12)]), tmp_path / "f")
    monkeypatch.chdir(tmp_path / "mm")  # no folder 'gen' here
    with pytest.raises(DataError) as e:
        export_mmrec(feats, tmp_path / "out")
    assert "the manifests name dataset 'gen' of fingerprint " in str(e.value)
    assert "neither a known dataset name nor a folder here; pass the dataset they were made for" in str(e.value)
    written = export_mmrec(feats, tmp_path / "out", ds)  # given, it is used as before
    assert list(read_mapping(tmp_path / "out", "item", 0)) == list(ds.item_ids) and len(written) == 2
