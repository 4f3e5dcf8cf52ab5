"""A benchmark resume refuses cells trained on other features than the folder holds now.

The dataset's fingerprint is checked against every finished cell, but the features were not: re-encoding a
feature folder with another encoder or template (same shapes), or adding a kind to it, and then adding a seed
reported the old cells beside new ones trained on other inputs. The check compares the digests a cell's saved
best model (or checkpoint) recorded of the matrices it read with those a model of the same settings reads now,
and names every such cell before another one trains.

Benchmarks run VBPR (it reads every item feature kind present) on a constructed generic folder (40 users × 12
interactions) with a stand-in 8-d text matrix, 1 epoch, one thread.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recgoat.benchmark import load_config, run_benchmark
from recgoat.errors import ConfigError

from test_benchmark_paths import write_data, write_text_features

torch.set_num_threads(1)
SETS = ["train.num_threads=1", "train.batch_size=1024"]


def config(root: Path, seeds: list[int], max_epochs: int = 1):
    base = {"datasets": [{"name": str(root / "data"), "label": "tiny", "features": str(root / "feats")}],
            "models": ["mostpop", "vbpr"], "seeds": seeds, "epochs": max_epochs, "out": str(root / "out"),
            "progress": False}
    return load_config(None, base, SETS)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A benchmark folder whose seed-1 cells are finished (copied afresh for each test)."""
    root = tmp_path_factory.mktemp("fv")
    write_data(root / "data")
    write_text_features({"name": str(root / "data"), "label": "tiny"}, root / "feats")
    run = run_benchmark(config(root, [1]))
    assert not run.failed and len(run.trained) == 2
    return root


@pytest.fixture
def root(finished, tmp_path) -> Path:
    """A copy of the finished benchmark; the copied cells record their (then) absolute paths, so each copy
    names its own data and features by the same absolute paths as the original: fine, nothing is moved."""
    dest = tmp_path / "b"
    shutil.copytree(finished, dest)
    for meta in (dest / "out" / "runs").rglob("cell.json"):  # point the copy's records at the copy
        meta.write_text(meta.read_text().replace(str(finished), str(dest)))
    return dest


def cell(root: Path, model: str = "vbpr", seed: int = 1) -> Path:
    return root / "out" / "runs" / "tiny" / model / f"seed{seed}"


def test_the_same_features_resume_and_train_the_new_seed(root):
    run = run_benchmark(config(root, [1, 2]))
    assert not run.failed and len(run.trained) == 2 and len(run.skipped) == 2
    assert (cell(root, seed=2) / "result.json").exists()


def _rewrite_text(root: Path) -> None:
    """Same shape and manifest, other values: what re-encoding with another 8-d encoder gives."""
    x = np.load(root / "feats" / "text.npy")
    np.save(root / "feats" / "text.npy", (x[::-1] * 2).astype(np.float32))


def _add_image(root: Path) -> None:
    """An image matrix and its mask beside the text one, with a manifest as `recgoat encode image` writes."""
    man = json.loads((root / "feats" / "text.json").read_text())
    rows = man["rows"]
    np.save(root / "feats" / "image.npy", np.random.default_rng(1).standard_normal((rows, 4)).astype(np.float32))
    np.save(root / "feats" / "image_mask.npy", np.ones(rows, bool))
    (root / "feats" / "image.json").write_text(json.dumps({**man, "kind": "image", "file": "image.npy", "dim": 4}))


@pytest.mark.parametrize("change, named", [(_rewrite_text, "other text features"),
                                           (_add_image, "other image features")])
def test_a_finished_cell_of_other_features_is_named_before_another_trains(root, change, named):
    change(root)
    record = (root / "out" / "benchmark.json").read_text()
    with pytest.raises(ConfigError, match="was trained on other") as e:
        run_benchmark(config(root, [1, 2]))
    msg = str(e.value)
    assert f"{cell(root)}: was trained on {named} than {root / 'feats'} holds now" in msg
    assert "mostpop" not in msg  # a model reading no features is not concerned
    # refused before anything trained (MostPop's new seed comes first) or the record named seeds [1, 2]
    assert not (cell(root, seed=2) / "result.json").exists()
    assert not (cell(root, "mostpop", seed=2) / "result.json").exists()
    assert (root / "out" / "benchmark.json").read_text() == record


def test_a_checkpointed_cell_of_other_features_is_named(root):
    """An unfinished cell with a checkpoint: what it trained on so far is its checkpoint's record."""
    done = cell(root)
    meta = json.loads((done / "result.json").read_text())
    meta.pop("benchmark")  # no longer finished: resumed from its checkpoint
    (done / "result.json").write_text(json.dumps(meta))
    assert (done / "checkpoint" / "state.json").exists()
    _rewrite_text(root)
    with pytest.raises(ConfigError, match=f"{done}: was trained on other text features"):
        run_benchmark(config(root, [1]))


def test_cells_recording_no_digests_are_not_judged(root):
    """Cells of versions that recorded no feature digests: nothing to compare, resumed as before."""
    model_json = cell(root) / "best" / "model.json"
    meta = json.loads(model_json.read_text())
    meta.pop("feature_digests")
    model_json.write_text(json.dumps(meta))
    _rewrite_text(root)
    run = run_benchmark(config(root, [1, 2]))
    assert not run.failed and (cell(root, seed=2) / "result.json").exists()
