"""A benchmark project moved to another folder (recorded paths), and other session-14 fixes: GAT activation of old
checkpoints, HNSW ef_search values, a feature chunk's text count.

Review of session 14's changes (gat_activation, recorded benchmark paths, feature device checks, strict
number checks, the trainer's thread count): reproductions of the bugs found, each failing before its fix."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import shutil

import numpy as np
import pytest
import torch

from recgoat.benchmark import run_benchmark
from recgoat.benchmark.runner import report_only
from recgoat.errors import ConfigError
from recgoat.models.recgoat import RecGOAT
from recgoat.training.trainer import Trainer, TrainConfig

from conftest import subset_users
from recgoat_helpers import build, random_features
from test_benchmark_paths import config, small_bench

torch.set_num_threads(1)


# ------------------------------------------------------------------ recorded paths: a moved project
def test_a_moved_project_resumes_and_reports_from_another_folder(tmp_path, monkeypatch):
    """The project (data and results) moved as a whole, the benchmark resumed from a third folder: the cells'
    records find the data beside the moved cell (and say so), so the same data is no configuration change.
    (The data was found, then every finished cell was refused: "was run with a different configuration (data
    differ)".)"""
    small_bench(tmp_path / "old", monkeypatch)
    shutil.move(tmp_path / "old", tmp_path / "new")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = config([{"name": "data/tiny", "features": None}], str(tmp_path / "new" / "results"), ["mostpop"])
    assert "tiny" in open(report_only(cfg)["md"]).read()
    run = run_benchmark(cfg)
    assert run.trained == [] and len(run.skipped) == 1 and not run.failed


def test_evaluate_dataset_takes_a_train_runs_data_moved_under_another_name(tmp_path, monkeypatch):
    """`recgoat evaluate RUN --dataset FOLDER` for a `recgoat train` run whose data folder was moved and renamed:
    the same data, prepared as recorded, under the run's dataset name (part of the fingerprint), as a benchmark
    cell keeps its label. It was refused: "trained on dataset fingerprint …, but 'kept' has …". `export --dataset`
    loads it the same way (it still refused it, and named another fingerprint for other data than evaluate did)."""
    from typer.testing import CliRunner

    from recgoat.cli import app
    from test_benchmark_paths import write_data

    cli = CliRunner()
    write_data(tmp_path / "data" / "tiny")
    monkeypatch.chdir(tmp_path)
    r = cli.invoke(app, ["train", "--dataset", "data/tiny", "--model", "mostpop", "--epochs", "1", "--run-dir",
                         "run", "--set", "trainer.progress=false"])
    assert r.exit_code == 0, (r.output, r.exception)
    shutil.move(tmp_path / "data" / "tiny", tmp_path / "kept")
    r = cli.invoke(app, ["evaluate", "run", "--dataset", str(tmp_path / "kept")])
    assert r.exit_code == 0, (r.output, r.exception)
    want = json.loads((tmp_path / "run" / "result.json").read_text())["test"]["recall@20"]
    assert json.loads((tmp_path / "run" / "evaluate_test.json").read_text())["recall@20"] == \
        pytest.approx(want, abs=1e-6)
    other = write_data(tmp_path / "other")  # other data under the run's name: still refused
    (other / "interactions.csv").write_text("\n".join((other / "interactions.csv").read_text().splitlines()[:-40]))
    r = cli.invoke(app, ["evaluate", "run", "--dataset", str(other)])
    assert r.exit_code == 1 and "not the same data" in str(r.exception)
    # the folder given is named, not the run's name it was loaded under (session 15's audit)
    assert f"but {other} (--dataset, loaded as 'tiny') has" in str(r.exception)
    refused = str(r.exception).split(": ", 1)[1]
    from recgoat.errors import DataError
    from recgoat.training.run import evaluate

    with pytest.raises(DataError) as e:  # the Python call names its argument where the command names --dataset
        evaluate("run", dataset_source=str(other))
    assert str(e.value).split(": ", 1)[1] == refused.replace("(--dataset, ", "(dataset_source=, ")

    r = cli.invoke(app, ["export", "run", "--dataset", str(tmp_path / "kept"), "--out", "art"])
    assert r.exit_code == 0, (r.output, r.exception)
    made = json.loads((tmp_path / "art" / "artifact.json").read_text())
    trained = json.loads((tmp_path / "run" / "result.json").read_text())["dataset_fingerprint"]
    assert made["dataset"] == "tiny" and made["dataset_fingerprint"] == trained
    r = cli.invoke(app, ["export", "run", "--dataset", str(other), "--out", "art2"])
    assert r.exit_code == 1 and refused in " ".join(r.output.split())  # as evaluate words it, the same figures
    assert not (tmp_path / "art2").exists()


# ------------------------------------------------------------------ legacy settings on resume
@pytest.fixture(scope="module")
def gat_data(ml_small):
    ds = subset_users(ml_small, 30)
    return ds, random_features(ds, 1, text=10, profile=10)


def _fit(ds, feats, run_dir, epochs, **params):
    model = build(ds, feats, gat_layers=2, **params)
    cfg = TrainConfig(epochs=epochs, batch_size=4096, progress=False, num_threads=1)
    return Trainer(cfg, run_dir=run_dir).fit(model, ds)


def test_a_checkpoint_of_bare_stacked_gat_layers_is_not_resumed_with_elu(gat_data, tmp_path):
    """A two-layer RecGOAT checkpointed before gat_activation existed (its state.json's signature has no such
    key) stacked its layers bare: resuming it under the new default (ELU) silently trained another model from
    its weights. The signature's absent key reads as the model's legacy setting, as Recommender.load reads it."""
    ds, feats = gat_data
    _fit(ds, feats, tmp_path / "run", 1, gat_activation="none")
    state_path = tmp_path / "run" / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    del state["signature"]["model_config"]["gat_activation"]  # as an older version wrote it
    state_path.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="gat_activation"):
        _fit(ds, feats, tmp_path / "run", 2)  # the default: elu
    _fit(ds, feats, tmp_path / "run", 2, gat_activation="none")  # the model it was: resumed


# ------------------------------------------------------------------ ItemIndex: ef_search
@pytest.mark.parametrize("kind", ["hnsw", "hnsw-l2"])
def test_a_numpy_integer_ef_search_is_accepted_as_hnsw_m_is(kind):
    """hnsw_m, nlist and nprobe take numpy integers (strict.is_int); ef_search failed with faiss's bare
    "TypeError in method 'HNSW_efSearch_set'"."""
    from recgoat.serving.retrieval import ItemIndex

    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    got = ItemIndex(x, kind, hnsw_m=np.int64(8), ef_search=np.int64(64)).search(x[:3], 5)
    want = ItemIndex(x, kind, hnsw_m=8, ef_search=64).search(x[:3], 5)
    assert np.array_equal(got[0], want[0])


@pytest.mark.parametrize("bad", [2.5, "64", True, 0])
def test_a_bad_ef_search_is_refused_by_name(bad):
    """A float, a string, a boolean or 0 as ef_search: a ConfigError naming it (a bare faiss TypeError, or
    True read as 1, before)."""
    from recgoat.serving.retrieval import ItemIndex

    x = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="ef_search"):
        ItemIndex(x, "hnsw", ef_search=bad)
    ItemIndex(x, "flat", ef_search=bad)  # not read by a flat index: as before


# ------------------------------------------------------------------ truncated-text count: edited chunk
def test_a_chunk_count_larger_than_its_chunk_is_recounted(tmp_path, capsys, monkeypatch):
    """A chunk checkpoint whose kept count cannot be its texts' (edited, damaged: more than the chunk's rows)
    is counted again, not added: the manifest said "101 of the 5 item texts" were cut."""
    import warnings

    import pandas as pd

    import recgoat.features.text as text_mod
    from features_helpers import toy_dataset
    from recgoat.features.store import FeatureConfig, encode_all
    from recgoat.io import read_json

    long = "word " * 300
    items = pd.DataFrame({"item_id": list("abcde"),
                          "title": [long, "a short title", long + "x", "short again", long + "y"]})
    ds = toy_dataset(items, [[0, 1], [1, 2], [3, 4], [0, 4]])
    out = tmp_path / "f"
    real, calls = text_mod.TextEncoder.encode, []

    def killed_at_the_second_chunk(self, texts, on_progress=None):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, texts, on_progress)

    def encode():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encode_all(ds, out, FeatureConfig(max_chars=5000, chunk_size=2), which=["text"], progress=False)

    monkeypatch.setattr(text_mod.TextEncoder, "encode", killed_at_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        encode()
    monkeypatch.setattr(text_mod.TextEncoder, "encode", real)
    [partial] = (out / ".partial").iterdir()
    meta = json.loads((partial / "00000.json").read_text())
    assert meta["truncated"] == 1
    (partial / "00000.json").write_text(json.dumps({**meta, "truncated": 99}))
    encode()
    assert read_json(out / "text.json")["truncated_texts"] == 3


def test_a_one_layer_model_saved_before_the_option_with_noted_settings_still_loads(gat_data, tmp_path):
    """A saved config holds every key of its day, so its inert settings are noted, not refused (is_full_config).
    Without gat_activation (saved before it existed), a one-layer model's legacy value was dropped rather than
    given as the default: the config was no longer full and the model failed to load ("set, but nothing reads
    them: gat_heads=4 …")."""
    from recgoat.models import Recommender
    from recgoat.models.recgoat import RecGOATConfig

    ds, feats = gat_data
    full = RecGOATConfig(embedding_dim=8, projection_dtype="float32").model_dump(mode="json")
    full.update(item_graph=False, user_graph=False, gat_heads=4)  # a full config: gat_heads is noted
    model = RecGOAT.build(ds, full, feats)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    del meta["config"]["gat_activation"]  # as an older version saved it
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.config.gat_activation == "elu"
    note = loaded.summary.get("note", "")
    assert "gat_heads=4" in note and "gat_activation" not in note
