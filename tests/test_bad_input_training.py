"""Bad input to training and evaluation: one ConfigError/DataError naming the file or key, nothing lost.

Every run here trains BPR-MF for at most 3 epochs on a synthetic 50-user × 40-item CSV catalogue (fewer
items than the default K = 50).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recgoat.config import load_config, read_yaml_mapping
from recgoat.datasets import load
from recgoat.errors import ConfigError, DataError
from recgoat.evaluation.evaluator import SELECTIONS, Evaluator
from recgoat.models import BPRMF
from recgoat.training.run import evaluate, train
from recgoat.training.trainer import Trainer, TrainConfig

N_USERS, N_ITEMS = 50, 40


def write_catalogue(folder, seed: int = 0, t0: int = 1_600_000_000) -> None:
    """50 users with 15 distinct items each out of 40 (ids as strings, ratings, timestamps)."""
    rng = np.random.default_rng(seed)
    rows = [{"user_id": f"u_{u:03d}", "item_id": f"sku-{i:03d}", "rating": int(rng.integers(1, 6)),
             "timestamp": t0 + u * 1000 + j}
            for u in range(N_USERS) for j, i in enumerate(rng.choice(N_ITEMS, 15, replace=False))]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "interactions.csv", index=False)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "cat"
    write_catalogue(folder)
    return folder


def run_config(catalogue, *overrides: str):
    return load_config(None, [f"data.name={catalogue}", "model.name=bprmf", "model.params.embedding_dim=8",
                              "trainer.epochs=2", "trainer.batch_size=256", "trainer.ks=[5,10,20]",
                              "trainer.progress=false", *overrides])


def snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(catalogue, tmp_path_factory):
    """A 2-epoch run folder (copied by the tests that change it)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    train(run_config(catalogue), run_dir=run_dir)
    return run_dir


# ------------------------------------------------------------------ 1. resuming a changed configuration
@pytest.mark.parametrize("override, change", [
    ("trainer.lr=0.005", "trainer.lr: 0.001 → 0.005"),
    ("trainer.weight_decay=0.1", "trainer.weight_decay: 0.0 → 0.1"),
    ("trainer.batch_size=128", "trainer.batch_size: 256 → 128"),
    ("trainer.seed=7", "trainer.seed: 2026 → 7"),
    ("trainer.metric=ndcg@20", 'trainer.metric: "recall@20" → "ndcg@20"'),
    ("model.params.embedding_dim=16", "model.params.embedding_dim: 8 → 16"),  # was a size-mismatch traceback
    ("data.seed=5", "data (fingerprint)"),  # another split: was test leakage
    ("trainer.eval_selection=torch", 'trainer.eval_selection: "count" → "torch"'),  # ties pick another best
])
def test_resume_with_changed_config_is_refused_and_changes_nothing(catalogue, finished_run, tmp_path,
                                                                   override, change):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = snapshot(run_dir)
    with pytest.raises(ConfigError) as e:
        train(run_config(catalogue, override), run_dir=run_dir)
    msg = str(e.value)
    assert msg.startswith(f"{run_dir}: ") and change in msg and "trainer.resume=false" in msg
    if change == "data (fingerprint)":
        # that run is of other data: another folder first, not "to start afresh … (overwrites that run)"
        assert ("this run's data differs from that run's: give it a folder of its own with --run-dir DIR (or "
                "another --out) (Python: another run_dir); --set trainer.resume=false would overwrite that run of "
                "other data (Python: TrainConfig(resume=False))") in msg, msg
        assert "to start afresh" not in msg
    else:
        # another folder first (the earlier try is kept to compare with), overwriting it second; fit() callers
        # have no --set
        assert ("to start afresh give this run a folder of its own with --run-dir DIR (or another --out), or "
                "overwrite that run with --set trainer.resume=false (Python: another run_dir, or "
                "TrainConfig(resume=False))") in msg, msg
    assert snapshot(run_dir) == before  # run_config.json included


def test_resume_with_more_epochs_extends_the_run(catalogue, finished_run, tmp_path):
    """Epochs, patience, eval_every are not part of the signature: raising epochs continues the run."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    result = train(run_config(catalogue, "trainer.epochs=3", "trainer.patience=5", "trainer.eval_every=2"),
                   run_dir=run_dir)
    assert result["epochs_run"] == 3
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]


def test_resume_false_starts_afresh_and_overwrites_the_checkpoint(catalogue, finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    train(run_config(catalogue, "trainer.lr=0.005", "model.params.embedding_dim=16", "trainer.resume=false"),
          run_dir=run_dir)
    state = json.loads((run_dir / "checkpoint/state.json").read_text())
    assert state["signature"]["train"]["lr"] == 0.005 and state["signature"]["model_config"]["embedding_dim"] == 16
    assert json.loads((run_dir / "run_config.json").read_text())["trainer"]["lr"] == 0.005
    # and it now resumes under the new configuration
    assert train(run_config(catalogue, "trainer.lr=0.005", "model.params.embedding_dim=16", "trainer.epochs=3"),
                 run_dir=run_dir)["epochs_run"] == 3


def test_checkpoint_without_signature_is_resumed_as_before(catalogue, finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    path = run_dir / "checkpoint/state.json"
    state = json.loads(path.read_text())
    del state["signature"]  # as written by older versions
    path.write_text(json.dumps(state))
    result = train(run_config(catalogue, "trainer.epochs=3", "trainer.lr=0.002"), run_dir=run_dir)
    assert result["epochs_run"] == 3  # epochs 0 and 1 come from the checkpoint


def test_model_fit_api_refuses_a_changed_checkpoint(catalogue, tmp_path):
    ds = load(catalogue)
    cfg = TrainConfig(epochs=1, batch_size=256, progress=False)
    BPRMF.build(ds, {"embedding_dim": 8}).fit(ds, cfg, run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"model\.params\.embedding_dim: 8 → 16"):
        BPRMF.build(ds, {"embedding_dim": 16}).fit(ds, cfg, run_dir=tmp_path / "r")


def test_checkpoint_of_an_older_signature_resumes(catalogue, finished_run, tmp_path):
    """Keys a checkpoint did not record (added to the signature later) are not compared."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    path = run_dir / "checkpoint/state.json"
    state = json.loads(path.read_text())
    del state["signature"]["features"], state["signature"]["train"]["eval_selection"]
    path.write_text(json.dumps(state))
    assert train(run_config(catalogue, "trainer.epochs=3"), run_dir=run_dir)["epochs_run"] == 3


def test_resume_refuses_features_with_the_same_shape_but_other_values(catalogue, tmp_path):
    """Re-encoded features (another encoder or template) keep their shape: the checkpoint hashes their
    values, so a resumed run does not continue on other inputs; features a model does not read do not count."""
    from recgoat.features.store import Features
    from recgoat.models import VBPR, LightGCN

    ds = load(catalogue)
    rng = np.random.default_rng(0)
    first = Features(text=rng.normal(size=(ds.n_items, 8)).astype(np.float32))
    other = Features(text=rng.normal(size=(ds.n_items, 8)).astype(np.float32))
    cfg = TrainConfig(epochs=1, batch_size=256, progress=False)
    VBPR.build(ds, {"embedding_dim": 8}, first).fit(ds, cfg, run_dir=tmp_path / "vbpr")
    before = snapshot(tmp_path / "vbpr")
    with pytest.raises(ConfigError, match=r"feature values: \{\"text\": \"[0-9a-f]{16}\"\} → \{\"text\""):
        VBPR.build(ds, {"embedding_dim": 8}, other).fit(ds, cfg.model_copy(update={"epochs": 2}),
                                                          run_dir=tmp_path / "vbpr")
    assert snapshot(tmp_path / "vbpr") == before
    same = Features(text=first.text.copy())
    assert VBPR.build(ds, {"embedding_dim": 8}, same).fit(ds, cfg.model_copy(update={"epochs": 2}),
                                                           run_dir=tmp_path / "vbpr")["epochs_run"] == 2
    LightGCN.build(ds, {"embedding_dim": 8}, first).fit(ds, cfg, run_dir=tmp_path / "lgcn")
    assert LightGCN.build(ds, {"embedding_dim": 8}, other).fit(ds, cfg.model_copy(update={"epochs": 2}),
                                                              run_dir=tmp_path / "lgcn")["epochs_run"] == 2


# ------------------------------------------------------------------ 2. K beyond the catalogue, ks/metric
def test_default_ks_work_on_a_catalogue_of_fewer_than_50_items(catalogue, tmp_path):
    ds = load(catalogue)
    assert ds.n_items < 50
    result = BPRMF.build(ds, {"embedding_dim": 8}).fit(ds, TrainConfig(epochs=1, progress=False))
    # every item is ranked at K = 50: each held-out item is found
    assert result["test"]["recall@50"] == 1.0 and result["test"]["hit@50"] == 1.0


@pytest.mark.parametrize("selection", SELECTIONS)
def test_k_beyond_the_catalogue_equals_k_at_the_catalogue_size(selection):
    """Recall, Hit, NDCG and MAP at K = 50 of 40 items equal their value at K = 40; Precision divides by 50
    (slots past the last item are empty, like the slots left by masked items)."""
    rng = np.random.default_rng(0)
    dense = rng.random((30, N_ITEMS))
    mask = sp.csr_matrix(dense < 0.3, dtype=np.float32)
    target = sp.csr_matrix((dense >= 0.3) & (dense < 0.4), dtype=np.float32)
    ue, ie = torch.randn(30, 4), torch.randn(N_ITEMS, 4)
    big = Evaluator(mask, target, ks=(5, 50), selection=selection).evaluate_embeddings(ue, ie)
    at_n = Evaluator(mask, target, ks=(5, N_ITEMS), selection=selection).evaluate_embeddings(ue, ie)
    for name in ("recall", "hit", "ndcg", "map"):
        assert np.array_equal(big.per_user[f"{name}@50"], at_n.per_user[f"{name}@{N_ITEMS}"]), name
    assert np.allclose(big.per_user["precision@50"] * 50, at_n.per_user[f"precision@{N_ITEMS}"] * N_ITEMS)
    assert big.means["recall@50"] == 1.0
    for name in at_n.means:  # K within the catalogue: unchanged
        if name.endswith("@5"):
            assert big.means[name] == at_n.means[name]


@pytest.mark.parametrize("override, message", [
    ("trainer.ks=[]", "trainer.ks: "),  # was `max() arg is an empty sequence`
    ("trainer.ks=[0]", "trainer.ks: "),  # was an IndexError
    ("trainer.ks=[5,-1]", "trainer.ks: "),
    ("trainer.metric=recall@30", "metric recall@30 is not evaluated"),  # was a KeyError after epoch 0
    ("trainer.metric=ndcg@0", "metric ndcg@0 is not evaluated"),
])
def test_ks_and_metric_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override, "trainer.ks=[5,10,20]"] if "metric" in override else [override])


# ------------------------------------------------------------------ 3. trainer bounds
@pytest.mark.parametrize("override", [
    "trainer.batch_size=0", "trainer.epochs=0", "trainer.epochs=-1", "trainer.eval_every=0",
    "trainer.eval_chunk_size=0", "trainer.lr=-1", "trainer.lr=.nan", "trainer.lr=.inf",
    "trainer.weight_decay=-0.1", "trainer.weight_decay=.nan", "trainer.patience=-1", "trainer.min_epochs=-1",
    "trainer.seed=-1",
])
def test_out_of_range_trainer_values_are_refused_with_the_key_named(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match="^" + re.escape(f"{key}: ")):
        load_config(None, [override])


def test_bad_yaml_trainer_value_names_the_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("trainer:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{f}: trainer.epochs: ")):
        load_config(f)


# ------------------------------------------------------------------ 4. evaluate: split, run_config.json
def test_evaluate_unknown_split_is_a_config_error(finished_run):
    # evaluate's arguments, as a Python caller gives them; the command names --split and --test-mask (below)
    with pytest.raises(ConfigError, match=r"^unknown split 'foo' \(split=\); expected valid or test$"):
        evaluate(finished_run, "foo")
    with pytest.raises(ConfigError, match=r"^unknown test mask 'all' \(test_mask=\); expected "):
        evaluate(finished_run, test_mask="all")
    with pytest.raises(ConfigError, match=r"^test_mask= applies to the test split; "):
        evaluate(finished_run, "valid", test_mask="train")


@pytest.mark.parametrize("content, message", [
    (b"garbage{", "not a readable run configuration"),
    (b"\xff\xfe\x00binary", "not a readable run configuration"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"trainer": {"lrr": 1}}', "trainer.lrr: unknown key"),
])
def test_evaluate_with_a_bad_run_config_names_the_file(finished_run, tmp_path, content, message):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "run_config.json").write_bytes(content)
    with pytest.raises(ConfigError) as e:
        evaluate(run_dir)
    assert str(e.value).startswith(f"{run_dir / 'run_config.json'}: ") and message in str(e.value)


def test_evaluate_a_run_stopped_before_its_first_validation_says_so(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    shutil.rmtree(run_dir / "best")  # as after a kill during the first epochs (eval_every > 1)
    with pytest.raises(DataError, match="no best model yet: the run stopped before its first validation") as e:
        evaluate(run_dir)
    assert str(e.value).startswith(f"{run_dir}: ")


# ------------------------------------------------------------------ 5. evaluate on edited data
def test_evaluate_refuses_data_with_another_fingerprint(catalogue, tmp_path):
    data = tmp_path / "cat"
    shutil.copytree(catalogue, data)
    run_dir = tmp_path / "run"
    train(run_config(data), run_dir=run_dir)
    assert evaluate(run_dir) == pytest.approx(json.loads((run_dir / "result.json").read_text())["test"])
    write_catalogue(data, t0=1_700_000_000)  # same users and items, other timestamps
    with pytest.raises(DataError, match="not the same data") as e:
        evaluate(run_dir)
    assert str(e.value).startswith(f"{run_dir / 'result.json'}: ")
    (run_dir / "result.json").unlink()  # a run stopped before its end: the checkpoint records the data
    (run_dir / "evaluate_test.json").unlink()
    with pytest.raises(DataError, match="not the same data") as e:
        evaluate(run_dir)
    assert str(e.value).startswith(f"{run_dir / 'checkpoint' / 'state.json'}: ")
    assert not (run_dir / "evaluate_test.json").exists()  # nothing is written on refusal


# ------------------------------------------------------------------ 6. unreadable config, run folder a file
def test_binary_or_folder_config_is_a_config_error_naming_it(tmp_path):
    binary = tmp_path / "cfg.yaml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="^" + re.escape(f"{binary}: not a text file")):
        load_config(binary)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{tmp_path}: is a folder")):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{tmp_path}: is a folder")):
        read_yaml_mapping(tmp_path, "a mapping")


@pytest.mark.parametrize("sub", ["", "sub"])
def test_run_dir_that_is_a_file_is_refused(catalogue, tmp_path, sub):
    f = tmp_path / "afile"
    f.write_text("keep me")
    run_dir = f / sub if sub else f
    with pytest.raises(ConfigError, match="^" + re.escape(f"{run_dir}: ")):
        train(run_config(catalogue), run_dir=run_dir)
    assert f.read_text() == "keep me"
    with pytest.raises(ConfigError, match="^" + re.escape(f"{run_dir}: ")):  # the Python API too
        Trainer(TrainConfig(epochs=1), run_dir=run_dir).fit(BPRMF.build(load(catalogue)), load(catalogue))


# ------------------------------------------------------------------ 7. split ratios
@pytest.mark.parametrize("ratios", ["[0.5,0.6,0.7]", "[0,0.5,0.5]", "[1.2,-0.1,-0.1]", "[.nan,0.5,0.5]"])
def test_split_ratios_are_validated(ratios):
    with pytest.raises(ConfigError, match=r"^data\.ratios: .*summing to 1"):
        load_config(None, [f"data.ratios={ratios}"])


@pytest.mark.parametrize("ratios, empty", [("[1.0,0,0]", "valid and test splits"), ("[0.9,0.1,0]", "test split")])
def test_empty_held_out_split_is_refused_before_training(catalogue, tmp_path, ratios, empty):
    run_dir = tmp_path / "run"
    with pytest.raises(DataError, match=f"the {empty} holds? no interactions.*held-out items"):
        train(run_config(catalogue, f"data.ratios={ratios}"), run_dir=run_dir)
    assert not run_dir.exists()


# ------------------------------------------------------------------ the CLI: one line, exit 1
@pytest.mark.parametrize("args, message", [
    (["evaluate", "RUN", "--split", "foo"], "unknown split 'foo' (--split)"),
    (["evaluate", "RUN", "--test-mask", "all"], "unknown test mask 'all' (--test-mask)"),
    (["evaluate", "RUN", "--split", "valid", "--test-mask", "train"], "error: --test-mask applies to the test split"),
    (["train", "--config", "."], "is a folder"),
    (["train", "--set", "trainer.epochs=0"], "trainer.epochs"),
])
def test_cli_prints_one_line_and_exits_1(finished_run, tmp_path, args, message):
    args = [str(finished_run) if a == "RUN" else a for a in args]
    p = subprocess.run([sys.executable, "-m", "recgoat.cli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr


def test_diverging_loss_is_one_error_and_keeps_the_last_good_checkpoint(catalogue, tmp_path, monkeypatch):
    """A NaN loss (here forced from epoch 1 on) stops training with a RecGOATError naming the run folder;
    the checkpoint of epoch 0, the last finite one, stays on disk."""
    from recgoat.errors import RecGOATError, TrainingDiverged

    cfg = run_config(catalogue, "trainer.epochs=3")
    real = BPRMF.loss

    def loss(self, users, pos, neg):
        out = real(self, users, pos, neg)
        if self._epoch_for_test >= 1:
            out["loss"] = out["loss"] * float("nan")
        return out

    def on_epoch_start(self, epoch, rng):
        self._epoch_for_test = epoch

    monkeypatch.setattr(BPRMF, "loss", loss)
    monkeypatch.setattr(BPRMF, "on_epoch_start", on_epoch_start)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1") as e:
        train(cfg, run_dir=run_dir)
    assert isinstance(e.value, RecGOATError) and isinstance(e.value, FloatingPointError)
    assert str(run_dir) in str(e.value)
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["epoch"] == 0


def test_missing_features_tell_a_cli_user_the_flag_not_only_the_python_call():
    from recgoat.models.modalities import item_modalities

    with pytest.raises(ConfigError) as e:
        item_modalities(None, "vbpr")
    assert "--features FOLDER" in str(e.value) and "load_features(dataset, folder)" in str(e.value)
