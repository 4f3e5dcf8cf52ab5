"""`recgoat train --features auto`: one feature folder per dataset fingerprint, and refusals before it encodes
(a session-23 probe, as a user runs it).

- Two datasets of one name (an MMRec folder `shop` and another folder `shop`) trained into one `--out` shared
  `<out>/features/shop`: the second run re-encoded it for its own data, removing the first's imported features,
  and the first run's `export` then failed ("made for dataset fingerprint …"). The second now gets a folder of
  its own, named with its data's fingerprint.
- A run refused by its run folder's checkpoint (another dataset, another model in a reused `--run-dir`, or
  `--set data.seed=7` in the default folder of an earlier run) was refused only after `--features auto` had
  encoded (minutes to hours), and that encode went into the shared folder; it is now refused before.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import run_main  # noqa: E402
from test_benchmark_mmrec_features import mmrec_folder  # noqa: E402

from recgoat.config import load_config  # noqa: E402
from recgoat.datasets.mmrec import load_mmrec  # noqa: E402
from recgoat.training.run import auto_feature_folder, own_feature_folder  # noqa: E402

torch.set_num_threads(1)
FAST = ["--set", "trainer.epochs=1", "--set", "trainer.num_threads=1", "--set", "trainer.batch_size=64"]


def other_baby(parent: Path) -> Path:
    """An MMRec folder also named ``baby``, with the same ``.inter`` file but other features: the same data
    fingerprint (it hashes no feature file)."""
    data = mmrec_folder(parent / "baby")
    rng = np.random.default_rng(1)
    np.save(data / "text_feat.npy", rng.normal(size=(8, 6)).astype(np.float32))
    np.save(data / "image_feat.npy", rng.normal(size=(8, 5)).astype(np.float32))
    return data


def generic_baby(parent: Path) -> Path:
    """A generic folder named ``baby`` (other data than :func:`mmrec_folder`'s: another fingerprint)."""
    data = parent / "baby"
    data.mkdir(parents=True)
    rows = ["user_id,item_id"] + [f"u{u},i{(u + j) % 8}" for u in range(12) for j in range(6)]
    (data / "interactions.csv").write_text("\n".join(rows) + "\n")
    return data


def rerated_baby(parent: Path) -> Path:
    """:func:`mmrec_folder` with other ratings: other data (another fingerprint), under the same name."""
    data = mmrec_folder(parent / "baby")
    inter = data / "baby.inter"
    head, *rows = inter.read_text().splitlines()
    rows = ["\t".join(f[:2] + ["4"] + f[3:]) for f in (r.split("\t") for r in rows)]
    inter.write_text("\n".join([head, *rows]) + "\n")
    return data


def train(monkeypatch, capsys, data: Path, model: str, *args: str) -> None:
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", model, "--features", "auto",
                         *args, *FAST)
    assert code == 0, err


def recorded_features(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "run_config.json").read_text())["features"])


def test_datasets_of_one_name_do_not_take_each_others_feature_folder(tmp_path, monkeypatch, capsys):
    first, second, third = mmrec_folder(tmp_path / "a" / "baby"), other_baby(tmp_path / "b"), \
        other_baby(tmp_path / "c")
    np.save(third / "text_feat.npy", np.ones((8, 6), np.float32))
    fp = load_mmrec(first).fingerprint()
    assert load_mmrec(second).fingerprint() == fp
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    for i, data in enumerate((first, second, third)):
        train(monkeypatch, capsys, data, "vbpr", "--run-dir", str(out / f"run{i}"))
    folders = [recorded_features(out / f"run{i}") for i in range(3)]
    assert len(set(folders)) == 3, folders
    assert folders[0].name == "baby" and folders[1].name.startswith("baby-") and folders[2].name.startswith("baby-")
    for folder, data in zip(folders, (first, second, third)):  # each holds its own dataset's features, unchanged
        for kind in ("text", "image"):
            assert np.array_equal(np.load(folder / f"{kind}.npy"), np.load(data / f"{kind}_feat.npy"))
    for i in range(3):  # every run exports, with the features its model was trained on
        code, err = run_main(monkeypatch, capsys, "export", str(out / f"run{i}"), "--out", f"e{i}")
        assert code == 0, err
    # a run again on the first dataset still shares its folder (resumed: nothing re-imported)
    stamp = (folders[0] / "text.npy").stat().st_mtime_ns
    train(monkeypatch, capsys, first, "freedom")
    assert recorded_features(tmp_path / "runs" / "baby" / "freedom" / "seed2026") == folders[0]
    assert (folders[0] / "text.npy").stat().st_mtime_ns == stamp


def test_a_generic_folder_of_an_mmrec_folders_name_leaves_its_features_alone(tmp_path, monkeypatch, capsys):
    mmrec, generic = mmrec_folder(tmp_path / "a" / "baby"), generic_baby(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    train(monkeypatch, capsys, mmrec, "vbpr")
    run_dir = tmp_path / "runs" / "baby" / "vbpr" / "seed2026"
    # the generic folder has no item text nor images: nothing to encode for FREEDOM, said as such (it was "no
    # feature files; run `recgoat encode all`", just run by auto), and the encode had removed the MMRec folder's
    # imported matrices ("made for other data … which this dataset can no longer replace")
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(generic), "--model", "freedom",
                         "--features", "auto", "--run-dir", "other", *FAST)
    assert code == 1 and "`features: auto` has nothing to encode for dataset baby" in err, err
    assert "runs/features/baby-" in err  # its own folder, not the MMRec folder's
    # said before anything is written: no folder holding only the lock file is left behind
    assert [p.name for p in (tmp_path / "runs" / "features").iterdir()] == ["baby"]
    shared = tmp_path / "runs" / "features" / "baby"
    for kind in ("text", "image"):
        assert np.array_equal(np.load(shared / f"{kind}.npy"), np.load(mmrec / f"{kind}_feat.npy"))
    code, err = run_main(monkeypatch, capsys, "export", str(run_dir), "--out", "e")
    assert code == 0, err


def test_auto_folder_of_other_data_is_not_reused(tmp_path):
    data = mmrec_folder(tmp_path / "baby")
    ds = load_mmrec(data)
    cfg = load_config(None, values={"data.name": str(data), "features": "auto", "out": str(tmp_path / "r")})
    plain = tmp_path / "r" / "features" / "baby"
    plain.mkdir(parents=True)
    (plain / "text.json").write_text(json.dumps({"kind": "text", "dataset_fingerprint": ds.fingerprint()}))
    assert auto_feature_folder(cfg, ds) == plain  # its own data's folder: shared, as before
    (plain / "text.json").write_text(json.dumps({"kind": "text", "dataset_fingerprint": "0123456789abcdef"}))
    assert auto_feature_folder(cfg, ds) == own_feature_folder(cfg, ds) != plain


def test_a_run_its_folder_refuses_is_refused_before_features_auto_encodes(tmp_path, monkeypatch, capsys):
    first, second = mmrec_folder(tmp_path / "a" / "baby"), rerated_baby(tmp_path / "b")
    assert load_mmrec(first).fingerprint() != load_mmrec(second).fingerprint()
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(first), "--model", "vbpr",
                         "--features", "auto", "--run-dir", "run", *FAST)
    assert code == 0, err
    features = tmp_path / "runs" / "features"
    before = sorted(p.name for p in features.iterdir())
    stamp = (features / "baby" / "text.npy").stat().st_mtime_ns
    # other data in the same run folder: refused, and nothing encoded for it
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(second), "--model", "vbpr",
                         "--features", "auto", "--run-dir", "run", *FAST)
    assert code == 1 and "was run with a different configuration (data (fingerprint)" in err, err
    # another model in the same run folder: refused too, before encoding
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(first), "--model", "freedom",
                         "--features", "auto", "--run-dir", "run", *FAST)
    assert code == 1 and 'model.name: "vbpr" → "freedom"' in err, err
    assert sorted(p.name for p in features.iterdir()) == before
    assert (features / "baby" / "text.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(np.load(features / "baby" / "text.npy"), np.load(first / "text_feat.npy"))
    # the same run again still resumes (nothing refused), and resume=false still starts afresh
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(first), "--model", "vbpr",
                         "--features", "auto", "--run-dir", "run", *FAST)
    assert code == 0, err
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(second), "--model", "vbpr",
                         "--features", "auto", "--run-dir", "run", "--set", "trainer.resume=false", *FAST)
    assert code == 0, err
