"""A benchmark on an MMRec folder with `features: auto` trains on the folder's own text_feat.npy /
image_feat.npy (imported), not on profiles alone: the paper's Amazon data ships its features so, and they
were silently ignored (session-16 audit of MMRec journeys)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from recgoat.benchmark import load_config, run_benchmark  # noqa: E402
from recgoat.errors import DataError  # noqa: E402
from recgoat.features import load_features  # noqa: E402

torch.set_num_threads(1)


def mmrec_folder(folder: Path) -> Path:
    """12 users × 8 items, x_label 0/0/0/0/1/2 per user, distinct text (6-d) and image (5-d) features."""
    folder.mkdir(parents=True)
    rows = ["userID\titemID\trating\ttimestamp\tx_label"]
    for u in range(12):
        for j, label in enumerate([0, 0, 0, 0, 1, 2]):
            rows.append(f"{u}\t{(u + j) % 8}\t5\t{1_500_000_000 + j}\t{label}")
    (folder / f"{folder.name}.inter").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    np.save(folder / "text_feat.npy", rng.normal(size=(8, 6)).astype(np.float32))
    np.save(folder / "image_feat.npy", rng.normal(size=(8, 5)).astype(np.float32))
    return folder


def run_auto(data, out, model: str):
    """``model`` benchmarked for one epoch on ``data`` with ``features: auto`` into ``out``; it must not fail."""
    cfg = load_config(None, {"datasets": [str(data)], "models": [model], "seeds": [1], "epochs": 1,
                             "out": str(out), "progress": False}, ["train.num_threads=1", "train.batch_size=64"])
    run = run_benchmark(cfg)
    assert not run.failed, run.failed


def test_auto_features_of_an_mmrec_folder_are_its_own(tmp_path, capsys):
    data = mmrec_folder(tmp_path / "baby")
    run_auto(data, tmp_path / "b", "vbpr")
    folder = tmp_path / "b" / "features" / "baby"
    for kind in ("text", "image"):
        assert np.array_equal(np.load(folder / f"{kind}.npy"), np.load(data / f"{kind}_feat.npy"))
        manifest = json.loads((folder / f"{kind}.json").read_text())
        assert manifest["imported_from"] == str((data / f"{kind}_feat.npy").resolve())
        # no i_id_mapping.csv: the dataset is the folder itself, whose item ids are the rows
        assert manifest["row_alignment"]["by"] == ("row numbers: the dataset is this MMRec folder, whose item ids "
                                                   "are its rows")
    assert not (folder / "profile.npy").exists()
    # VBPR reads no profiles: auto does not try to write them (nor says why it could not)
    assert "users:" not in capsys.readouterr().err
    digests = json.loads((tmp_path / "b" / "runs" / "baby" / "vbpr" / "seed1" / "best" / "model.json").read_text())[
        "feature_digests"]
    assert {"text", "image"} <= set(digests)


def test_recgoat_on_an_mmrec_folder_runs_without_a_profile_branch(tmp_path, capsys):
    """`features: auto` on an MMRec folder (no item text) encoded "profiles" of item-id strings, and RecGOAT's
    profile branch and user-user graph were built on them while the summary said profile."""
    run_auto(mmrec_folder(tmp_path / "baby"), tmp_path / "b", "recgoat")
    assert not (tmp_path / "b" / "features" / "baby" / "profile.npy").exists()
    # the folder has no item text: profiles would be written from item ids, so none are made, and it is said
    assert "users: dataset baby has no item text: a user profile written from item ids alone says nothing" in \
        capsys.readouterr().err
    result = json.loads((tmp_path / "b" / "runs" / "baby" / "recgoat" / "seed1" / "result.json").read_text())
    summary = json.dumps(result)
    assert '"profile_branch": false' in summary and '"profile_missing": true' in summary
    assert "profile_source" not in summary


def test_an_mmrec_folder_given_as_features_says_to_import_it(tmp_path):
    from recgoat.datasets.mmrec import load_mmrec

    data = mmrec_folder(tmp_path / "baby")
    with pytest.raises(DataError) as e:
        load_features(load_mmrec(data), data)
    assert "MMRec's text_feat.npy and image_feat.npy: import them first, `recgoat encode import-mmrec" in str(e.value)



def test_train_on_an_mmrec_folder_without_features_names_its_feature_files(tmp_path, monkeypatch, capsys):
    import warnings

    from conftest import run_main

    data = mmrec_folder(tmp_path / "baby")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as outside pytest: shown, not recorded or raised
        code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "recgoat", "--set",
                             "trainer.epochs=1", "--set", "trainer.num_threads=1")
        assert code == 0, err
        assert (f"warning: {data.resolve()} holds MMRec's text_feat.npy and image_feat.npy, but no feature folder "
                f"was given: recgoat does not read them; give --features auto (imports them, and encodes what they "
                f"lack), or import them with `recgoat encode import-mmrec") in err
        code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "lightgcn", "--set",
                             "trainer.epochs=1", "--set", "trainer.num_threads=1")
        assert code == 0 and "MMRec's" not in err  # a model that reads no features: no word
