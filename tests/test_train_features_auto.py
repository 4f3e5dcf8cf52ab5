"""`recgoat train --features auto`: the features the model reads encoded (an MMRec folder's own imported) into
`<out>/features/<dataset>`, shared by later runs, and recorded so that `recgoat evaluate` finds them. Before,
an MMRec folder's feature files needed a separate `encode import-mmrec` (only the benchmark had `auto`)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import run_main  # noqa: E402
from test_benchmark_mmrec_features import mmrec_folder  # noqa: E402

from recgoat.config import load_config  # noqa: E402
from recgoat.datasets.mmrec import load_mmrec  # noqa: E402
from recgoat.training.run import auto_feature_folder, own_feature_folder  # noqa: E402

torch.set_num_threads(1)
FAST = ["--set", "trainer.epochs=1", "--set", "trainer.num_threads=1", "--set", "trainer.batch_size=64"]


def test_train_auto_imports_an_mmrec_folders_features_and_evaluate_finds_them(tmp_path, monkeypatch, capsys):
    data = mmrec_folder(tmp_path / "baby")
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "vbpr",
                         "--features", "auto", *FAST)
    assert code == 0, err
    folder = tmp_path / "runs" / "features" / "baby"
    for kind in ("text", "image"):  # VBPR trained on the folder's own matrices, row for row
        assert np.array_equal(np.load(folder / f"{kind}.npy"), np.load(data / f"{kind}_feat.npy"))
    run_dir = tmp_path / "runs" / "baby" / "vbpr" / "seed2026"
    recorded = json.loads((run_dir / "run_config.json").read_text())
    assert recorded["features"] == str(folder.resolve())  # the folder, not "auto": evaluate reads it back
    digests = json.loads((run_dir / "best" / "model.json").read_text())["feature_digests"]
    assert {"text", "image"} <= set(digests)
    code, err = run_main(monkeypatch, capsys, "evaluate", str(run_dir))
    assert code == 0, err


def test_a_model_given_no_features_is_told_of_auto(tmp_path, monkeypatch, capsys):
    """The error said to run `recgoat encode all` and pass --features FOLDER, never that --features auto does both."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", "ml-latest-small", "--model", "vbpr", *FAST)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("error: vbpr needs item features (text and/or image) but none were given: let `recgoat "
                          "train --features auto` (`features: auto` in a config file) encode them, or encode them "
                          "with `recgoat encode all <dataset>` and give the folder: `--features FOLDER`"), err


def test_train_auto_reuses_the_folder_and_encodes_nothing_for_an_id_model(tmp_path, monkeypatch, capsys):
    data = mmrec_folder(tmp_path / "baby")
    monkeypatch.chdir(tmp_path)
    assert run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "vbpr", "--features", "auto",
                    *FAST)[0] == 0
    folder = tmp_path / "runs" / "features" / "baby"
    stamp = (folder / "text.npy").stat().st_mtime_ns
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "recgoat", "--features",
                         "auto", *FAST)
    assert code == 0, err
    assert (folder / "text.npy").stat().st_mtime_ns == stamp  # the second run read the first one's encode
    summary = json.loads((tmp_path / "runs" / "baby" / "recgoat" / "seed2026" / "result.json").read_text())["summary"]
    assert summary["profile_missing"] is True and "MMRec's" not in err  # no item text: no profiles; no warning
    # LightGCN reads no features: nothing is encoded for it, and its run records none
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "lightgcn", "--features",
                         "auto", "--out", "other", *FAST)
    assert code == 0, err
    assert not (tmp_path / "other" / "features").exists()
    recorded = json.loads((tmp_path / "other" / "baby" / "lightgcn" / "seed2026" / "run_config.json").read_text())
    assert recorded["features"] is None


def test_auto_folder_is_shared_unless_the_run_prepares_the_data_its_own_way(tmp_path):
    data = mmrec_folder(tmp_path / "baby")
    ds = load_mmrec(data)
    plain = load_config(None, values={"data.name": str(data), "features": "auto", "out": str(tmp_path / "r")})
    assert auto_feature_folder(plain, ds) == tmp_path / "r" / "features" / "baby"
    seeded = load_config(None, ["data.seed=7"], values={"data.name": str(data), "features": "auto",
                                                         "out": str(tmp_path / "r")})
    assert auto_feature_folder(seeded, ds) == own_feature_folder(seeded, ds)
    same = load_config(None, ["data.seed=2026", "data.k_core=5"], values={"data.name": str(data), "features": "auto",
                                                                         "out": str(tmp_path / "r")})
    assert auto_feature_folder(same, ds) == tmp_path / "r" / "features" / "baby"  # the defaults, spelt out
    # named by the prepared data and the folder read: another MMRec folder of one name and data gets another
    assert own_feature_folder(seeded, ds).name.startswith("baby-")
    twin = mmrec_folder(tmp_path / "twin" / "baby")
    assert own_feature_folder(seeded, load_mmrec(twin)) != own_feature_folder(seeded, ds)


def test_train_api_says_where_auto_encoded(tmp_path):
    from recgoat.training.run import train

    data = mmrec_folder(tmp_path / "baby")
    cfg = load_config(None, ["trainer.epochs=1", "trainer.num_threads=1", "trainer.batch_size=64",
                             "trainer.progress=false"],
                      values={"data.name": str(data), "model.name": "freedom", "features": "auto",
                              "out": str(tmp_path / "r")})
    result = train(cfg)
    assert result["notes"] == [f"features: auto, encoded into {tmp_path / 'r' / 'features' / 'baby'} "
                               f"(reused by later runs)"]


def test_a_repeated_import_rewrites_nothing_unless_the_source_changed(tmp_path):
    from recgoat.features import import_mmrec

    data = mmrec_folder(tmp_path / "baby")
    ds = load_mmrec(data)
    out = tmp_path / "f"
    import_mmrec(ds, data, out)
    stamps = {f: (out / f).stat().st_mtime_ns for f in ("text.npy", "image.npy", "image_mask.npy")}
    import_mmrec(ds, data, out)
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps
    edited = np.load(data / "text_feat.npy")
    edited[3] += 1.0  # same shape, so the same key: the values tell
    np.save(data / "text_feat.npy", edited)
    import_mmrec(ds, data, out)
    assert np.array_equal(np.load(out / "text.npy"), edited)
    assert (out / "image.npy").stat().st_mtime_ns == stamps["image.npy"]


def titled_shop(folder):
    """A generic folder: 12 users × 8 items with titles (item text, so user profiles can be written)."""
    folder.mkdir(parents=True)
    rows = ["user_id,item_id"] + [f"u{u},i{(u + j) % 8}" for u in range(12) for j in range(6)]
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
    titles = ["red kettle", "blue teapot", "green mug", "steel pan", "oak board", "glass jar", "clay bowl", "tin cup"]
    (folder / "items.csv").write_text("item_id,title\n" + "\n".join(f"i{k},{t}" for k, t in enumerate(titles)) + "\n")
    return folder


def test_auto_encodes_user_profiles_only_for_a_model_that_reads_them(tmp_path):
    from recgoat.training.run import train

    data = titled_shop(tmp_path / "shop")

    def run(model: str, *extra: str) -> dict:
        cfg = load_config(None, ["trainer.epochs=1", "trainer.num_threads=1", "trainer.batch_size=64",
                                 "trainer.progress=false", *extra],
                          values={"data.name": str(data), "model.name": model, "features": "auto",
                                  "out": str(tmp_path / "r")})
        return train(cfg)

    folder = tmp_path / "r" / "features" / "shop"
    run("vbpr")
    assert (folder / "text.npy").exists() and not (folder / "profile.npy").exists()  # VBPR reads no profiles
    run("recgoat", "model.params.use_profile=false")
    assert not (folder / "profile.npy").exists()
    result = run("recgoat", "trainer.resume=false")
    assert (folder / "profile.npy").exists() and result["summary"]["profile_branch"] is True


def test_export_refuses_text_features_the_model_was_not_trained_on(tmp_path, monkeypatch, capsys):
    from recgoat.features import import_mmrec

    data = mmrec_folder(tmp_path / "baby")
    monkeypatch.chdir(tmp_path)
    assert run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "vbpr", "--features", "auto",
                    *FAST)[0] == 0
    run_dir = tmp_path / "runs" / "baby" / "vbpr" / "seed2026"
    code, err = run_main(monkeypatch, capsys, "export", str(run_dir), "--out", "ok")
    assert code == 0, err
    edited = np.load(data / "text_feat.npy")
    edited[0] *= -1.0  # same shape: only the contents tell
    np.save(data / "text_feat.npy", edited)
    import_mmrec(load_mmrec(data), data, tmp_path / "runs" / "features" / "baby")
    code, err = run_main(monkeypatch, capsys, "export", str(run_dir), "--out", "bad")
    assert code == 1 and "are not those model 'vbpr' was trained on" in err, err
    assert not (tmp_path / "bad").exists()


def test_auto_waits_for_another_process_encoding_into_its_folder(tmp_path):
    """Seeds started together (`train … --features auto &` three times): the second and third refused at once
    ("another recgoat process is writing"); they now wait for the lock, say so once, and reuse the encode."""
    import subprocess
    import sys
    import time

    from recgoat.features.auto import encode_auto

    data = mmrec_folder(tmp_path / "baby")
    folder = tmp_path / "f"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from recgoat.io import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(1.5)"), str(folder)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said: list[str] = []
        start = time.monotonic()
        feats = encode_auto(load_mmrec(data), folder, progress=False, on_wait=said.append)
        assert time.monotonic() - start > 0.5  # it did wait for the holder
        assert said == [f"{folder}: waiting for recgoat process {holder.pid}, which is writing to this folder"]
        assert np.array_equal(feats.text, np.load(data / "text_feat.npy"))
    finally:
        holder.kill()
        holder.wait()


def test_benchmark_auto_encodes_user_profiles_only_when_a_model_reads_them(tmp_path):
    from recgoat.benchmark import load_config as bench_config
    from recgoat.benchmark import run_benchmark
    from recgoat.benchmark.runner import auto_kinds

    data = titled_shop(tmp_path / "shop")

    def bench(models: list[str]):
        cfg = bench_config(None, {"datasets": [str(data)], "models": models, "seeds": [1], "epochs": 1,
                                  "out": str(tmp_path / "b"), "progress": False},
                           ["train.num_threads=1", "train.batch_size=64"])
        run = run_benchmark(cfg)
        assert not run.failed, run.failed
        return cfg

    folder = tmp_path / "b" / "features" / "shop"
    assert auto_kinds(bench(["lightgcn", "vbpr", "freedom"])) == ("text", "image")
    assert (folder / "text.npy").exists() and not (folder / "profile.npy").exists()
    assert auto_kinds(bench(["vbpr", "recgoat"])) == ("text", "image", "users")
    assert (folder / "profile.npy").exists()


def devices_asked(monkeypatch) -> list[str]:
    """The devices the feature store is asked to encode on, in order, as the calls come; each encoding itself runs
    on the CPU (this machine may have no GPU)."""
    import recgoat.features.store as store

    asked: list[str] = []
    real = store.encode_all

    def spy(dataset, out_dir, config=None, **kw):
        asked.append(config.device)
        return real(dataset, out_dir, store.FeatureConfig(device="cpu"), **kw)

    monkeypatch.setattr(store, "encode_all", spy)
    return asked


def test_auto_encodes_on_the_trainers_device(tmp_path, monkeypatch):
    """A run (or benchmark) training on a GPU encodes its `features: auto` there too (it encoded on the CPU
    whatever the trainer's device). Spied at the store: this machine may have no GPU, so the encoding itself
    runs on the CPU."""
    from recgoat.benchmark.config import DatasetSpec
    from recgoat.benchmark.data import resolve_features
    from recgoat.datasets import load
    from recgoat.training.run import encode_auto_features

    asked = devices_asked(monkeypatch)
    data = titled_shop(tmp_path / "shop")
    dataset = load(str(data))
    for device in ("cpu", "cuda:1"):
        cfg = load_config(None, ["trainer.progress=false", f"trainer.device={device}"],
                          values={"data.name": str(data), "model.name": "vbpr", "features": "auto",
                                  "out": str(tmp_path / f"r-{device}")})
        _, features, _ = encode_auto_features(cfg, dataset)
        assert features.text is not None
    spec = DatasetSpec(name=str(data), features="auto")
    resolve_features(spec, dataset, tmp_path / "b", None, False, ("text",), "cuda")
    assert asked == ["cpu", "cuda:1", "cuda"]


def test_a_benchmark_encodes_on_the_device_its_cells_train_on(tmp_path, monkeypatch):
    """A model entry's own `train.device` is where its cells train, and the device preflight checks: `auto`
    encodes there, not on the benchmark-wide `train.device` (cuda here, which this machine may lack: no cell
    trains on it, so nothing refused it, and the encoding did)."""
    from recgoat.benchmark import load_config as bench_config
    from recgoat.benchmark import run_benchmark

    asked = devices_asked(monkeypatch)
    data = titled_shop(tmp_path / "shop")
    cfg = bench_config(None, {"datasets": [str(data)], "models": [{"name": "vbpr", "train": {"device": "cpu"}}],
                              "seeds": [1], "epochs": 1, "out": str(tmp_path / "b"), "progress": False},
                       ["train.num_threads=1", "train.batch_size=64", "train.device=cuda"])
    run = run_benchmark(cfg)
    assert not run.failed, run.failed
    assert asked == ["cpu"]
