"""Training checkpoints and killed runs, and other training and evaluation edge cases: each test pins a bug that
was found and fixed.

Runs train BPR-MF (d = 8) for a few epochs on a synthetic 50-user × 40-item catalogue: a second each.
"""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError

from recgoat.config import load_config
from recgoat.datasets import PrepareConfig, load
from recgoat.errors import ConfigError, DataError, TrainingDiverged
from recgoat.evaluation.evaluator import EvalResult, Evaluator
from recgoat.models import BPRMF, LightGCN, MostPop, Recommender
from recgoat.training import trainer as trainer_mod
from recgoat.training.run import train
from recgoat.training.sampling import NegativeSampler
from recgoat.training.trainer import Trainer, TrainConfig

from training_helpers import catalogue, ds, small_config  # noqa: F401  (module fixtures)


def _fit(ds, run_dir=None, model_cls=BPRMF, **kw):
    torch.manual_seed(0)
    model = model_cls.build(ds, {"embedding_dim": 8} if model_cls is not MostPop else None)
    return model, Trainer(small_config(**kw), run_dir=run_dir).fit(model, ds)


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ negative sampling
def test_sampler_handles_a_user_with_all_but_one_item():
    """Rejection sampling gave up after 100 rounds (RuntimeError) for a user missing 1 of 1000 items."""
    n_items = 1000
    m = np.zeros((3, n_items), np.float32)
    m[0, :n_items - 1] = 1  # only item 999 is a negative
    m[1, :5] = 1
    m[2, ::2] = 1
    users = np.repeat(np.arange(3), 200)
    neg = NegativeSampler(sp.csr_matrix(m)).sample_negatives(users, np.random.default_rng(0))
    assert (neg[users == 0] == n_items - 1).all()
    assert not m[users, neg].any()


def test_exact_fallback_is_uniform_over_non_positives():
    """max_rounds=0 sends every sample through the exact draw: never a positive, uniform over the rest."""
    rng = np.random.default_rng(1)
    m = (rng.random((20, 30)) < 0.6).astype(np.float32)
    m[0] = 1
    m[0, [3, 17]] = 0
    m[1] = 0
    sampler = NegativeSampler(sp.csr_matrix(m), max_rounds=0)
    users = np.repeat(np.arange(20), 3000)
    neg = sampler.sample_negatives(users, rng)
    assert not m[users, neg].any()
    for u in range(20):
        counts = np.bincount(neg[users == u], minlength=30)[m[u] == 0]
        expected = 3000 / len(counts)
        assert np.abs(counts - expected).max() < 5 * np.sqrt(expected), u


def test_user_with_every_training_item_is_one_data_error(tmp_path):
    """Pre-split data can give a user every item in train: a DataError naming that user, before any file
    is written (was the sampler's ValueError traceback)."""
    folder = tmp_path / "lines"
    folder.mkdir()
    (folder / "train.txt").write_text("0 0 1 2 3 4 5 6 7\n" + "".join(
        f"{u} {u} {(u + 1) % 8} {(u + 2) % 8} {(u + 3) % 8}\n" for u in range(1, 6)))
    (folder / "valid.txt").write_text("".join(f"{u} {(u + 4) % 8}\n" for u in range(1, 6)))
    (folder / "test.txt").write_text("".join(f"{u} {(u + 5) % 8}\n" for u in range(1, 6)))
    cfg = load_config(None, [f"data.name={folder}", "model.name=bprmf", "trainer.epochs=1",
                             "trainer.ks=[5]", "trainer.metric=recall@5", "trainer.progress=false"])
    run_dir = tmp_path / "run"
    with pytest.raises(DataError, match=r"1 user\(s\) \(0\) interacted with all 8 items in the training split"):
        train(cfg, run_dir=run_dir)
    assert not run_dir.exists()


# ------------------------------------------------------------------ early stopping
def test_patience_zero_stops_at_the_first_evaluation_without_improvement(ds, monkeypatch):
    """patience=0 stopped after the first evaluation even while validation improved."""
    scores = iter([0.1, 0.2, 0.15, 0.3, 0.4])
    real = Evaluator.evaluate

    def scripted(self, model):
        res = real(self, model)
        if self.target.nnz == ds.csr("valid").nnz and (self.target != ds.csr("valid")).nnz == 0:
            res.means["recall@20"] = next(scores)
        return res

    monkeypatch.setattr(Evaluator, "evaluate", scripted)
    _, res = _fit(ds, epochs=5, patience=0)
    assert res["epochs_run"] == 3 and res["best_epoch"] == 1


# ------------------------------------------------------------------ resume after a kill
class Killed(BaseException):
    pass


def test_kill_between_checkpoint_files_resumes_like_the_uninterrupted_run(ds, tmp_path, monkeypatch):
    """Killed after epoch 1's weights were written but before its optimizer and state.json: the resumed run
    re-trained epoch 1 from epoch 1's weights with epoch 0's state (another trajectory)."""
    full_model, full = _fit(ds, tmp_path / "full", epochs=4)
    real_save, calls = torch.save, []

    def killing_save(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # epoch 1's optimizer.pt
            raise Killed
        return real_save(*args, **kw)

    monkeypatch.setattr(trainer_mod.torch, "save", killing_save)
    with pytest.raises(Killed):
        _fit(ds, tmp_path / "resumed", epochs=4)
    monkeypatch.setattr(trainer_mod.torch, "save", real_save)
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["epoch"] == 0
    model, resumed = _fit(ds, tmp_path / "resumed", epochs=4)
    assert [r["loss"] for r in _log(tmp_path / "resumed")] == [r["loss"] for r in _log(tmp_path / "full")]
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
    ck = sorted(p.name for p in (tmp_path / "resumed/checkpoint").iterdir())
    assert ck == ["model-000003.safetensors", "optimizer-000003.pt", "state.json"]  # earlier epochs' pairs gone


def _best_digest(run) -> str:
    return json.loads((run / "best" / "model.json").read_text())["weights_sha256"]


@pytest.mark.parametrize("kill_in", ["_save_checkpoint", "_promote_best"])
def test_best_model_always_matches_the_checkpoint_after_a_kill(ds, tmp_path, monkeypatch, kill_in):
    """best/ was written before the checkpoint: a kill between them left best/ holding the lost epoch's
    weights while state.json named an earlier best. Now a new best is staged in best.new/ and promoted after
    the checkpoint; a resume finishes or drops the staging, so best/ is always the checkpoint's best."""
    kw = {"epochs": 6, "lr": 0.01}  # validation improves at epochs 0, 3 and 5 on this data
    _, full = _fit(ds, tmp_path / "full", **kw)
    assert not (tmp_path / "full" / "best.new").exists()
    real = getattr(Trainer, kill_in)
    calls = []

    def killing(self, *a, **kw):
        calls.append(1)
        if len(calls) >= 2 and (self.run_dir / "best.new").is_dir():  # a later epoch that found a new best
            raise Killed
        return real(self, *a, **kw)

    monkeypatch.setattr(Trainer, kill_in, killing)
    with pytest.raises(Killed):
        _fit(ds, tmp_path / "run", **kw)
    monkeypatch.setattr(Trainer, kill_in, real)
    run = tmp_path / "run"
    assert (run / "best.new").is_dir()  # the lost epoch's best, staged
    state = json.loads((run / "checkpoint/state.json").read_text())
    staged = json.loads((run / "best.new/model.json").read_text())["weights_sha256"]
    # killed before the checkpoint: it names the earlier best (best/ still holds it); after: the staged one
    assert (staged == state["best"]["weights_sha256"]) == (kill_in == "_promote_best")
    assert (_best_digest(run) == state["best"]["weights_sha256"]) == (kill_in == "_save_checkpoint")
    _, resumed = _fit(ds, run, **kw)
    assert not (run / "best.new").exists()
    state = json.loads((run / "checkpoint/state.json").read_text())
    assert _best_digest(run) == state["best"]["weights_sha256"]
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
    assert _best_digest(run) == _best_digest(tmp_path / "full")


def test_log_line_cut_by_a_kill_is_dropped_on_resume(ds, tmp_path):
    """A kill in the middle of appending to log.jsonl left half a line: resuming was a JSONDecodeError."""
    run = tmp_path / "run"
    _fit(ds, run, epochs=2)
    with open(run / "log.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_sec')
    _, res = _fit(ds, run, epochs=3)
    assert [r["epoch"] for r in _log(run)] == [0, 1, 2] and res["epochs_run"] == 3


def _without_digests(run) -> None:
    """Make ``run``'s checkpoint one of a version that recorded no file digests, so that a damaged file reaches
    the loader (with digests it is refused as a checksum mismatch before it is read)."""
    path = run / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    del state["files_sha256"]
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("damage, where", [
    (lambda ck: (ck / "state.json").write_text("[1]"), "checkpoint/state.json"),
    (lambda ck: next(ck.glob("model-*")).unlink(), "checkpoint/model-000001.safetensors"),
    (lambda ck: next(ck.glob("model-*")).write_bytes(b"garbage"), "checkpoint/model-000001.safetensors"),
    (lambda ck: next(ck.glob("optimizer-*")).write_bytes(b"garbage"), "checkpoint/optimizer-000001.pt"),
    (lambda ck: shutil.rmtree(ck.parent / "best"), "best/weights.safetensors"),
])
@pytest.mark.parametrize("digests", [True, False], ids=["digests", "older-checkpoint"])
def test_damaged_checkpoint_is_one_data_error_naming_the_file(ds, tmp_path, damage, where, digests):
    """Was AttributeError, FileNotFoundError, a safetensors / pickle error, or (best/ gone and no later
    improvement) an UnboundLocalError after training. A checkpoint recording its files' digests is refused by
    the checksum; one of an older version by the loader."""
    run = tmp_path / "run"
    _fit(ds, run, epochs=2, lr=0.0)
    if not digests:
        _without_digests(run)
    damage(run / "checkpoint")
    with pytest.raises(DataError, match="trainer.resume=false") as e:
        _fit(ds, run, epochs=3, lr=0.0)
    assert str(e.value).startswith(f"{run / where}: ")


def test_checkpoint_of_another_model_is_one_line_naming_the_difference(ds, tmp_path):
    """Another model's weights in the checkpoint: the error was load_state_dict's page listing every key."""
    from safetensors.torch import save_file

    run = tmp_path / "run"
    _fit(ds, run, epochs=2, lr=0.0)
    _without_digests(run)
    weights = next((run / "checkpoint").glob("model-*"))
    save_file({"branches.image.att": torch.zeros(3), "user_emb.weight": torch.zeros(2, 5)}, str(weights))
    with pytest.raises(DataError) as e:
        _fit(ds, run, epochs=3, lr=0.0)
    msg = str(e.value)
    assert msg.startswith(f"{weights}: holds weights of another model than this run's BPRMF") and "\n" not in msg
    assert "1 unexpected tensor(s), e.g. 'branches.image.att'" in msg
    assert "1 missing tensor(s), e.g. 'item_emb.weight'" in msg
    assert "1 of another shape, e.g. 'user_emb.weight' (2, 5) against" in msg and "trainer.resume=false" in msg


def test_corrupt_optimizer_checkpoint_is_one_line_without_torchs_advice(ds, tmp_path):
    """torch.load's error on a corrupt file advises weights_only=False and filing an issue: wrong here."""
    run = tmp_path / "run"
    _fit(ds, run, epochs=2, lr=0.0)
    _without_digests(run)
    next((run / "checkpoint").glob("optimizer-*")).write_text("garbage\n")
    with pytest.raises(DataError) as e:
        _fit(ds, run, epochs=3, lr=0.0)
    msg = str(e.value)
    assert "corrupt or not a torch optimizer state" in msg and "trainer.resume=false" in msg
    assert "\n" not in msg and "weights_only" not in msg and "issue" not in msg


def test_a_run_that_never_leaves_the_bpr_plateau_is_warned_about(ds):
    """RecGOAT at lr 1e-3 (the README's command) stays at BPR = ln 2 and ends with a useless "best" model
    without a word. lr 0 keeps every score at its initial value, which the Xavier-scaled tables make tiny."""
    with pytest.warns(UserWarning, match=r"bprmf: the BPR loss stayed at ln 2 = 0.693 in all 3 epochs .* raise "
                                         r"the learning rate \(trainer.lr; a benchmark's train.lr;"):
        _fit(ds, epochs=3, lr=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _fit(ds, epochs=3, lr=0.05)  # leaves it at once


@pytest.mark.parametrize("bpr, said", [([0.6931, 0.6930, 0.6932], True), ([0.6931, 0.6850], False),
                                       ([0.6931], False), ([0.69, float("nan"), 0.6931], True), ([], False)])
def test_plateau_message_reads_the_bpr_term_of_every_epoch(bpr, said):
    history = [{"epoch": i, "loss": 1.0, "bpr": v} for i, v in enumerate(bpr)] + [{"epoch": 9, "loss": 0.1}]
    assert (trainer_mod.plateau_message("m", history) is not None) == said


# ------------------------------------------------------------------ models and data
def test_trainer_fits_a_loaded_graph_model(ds, tmp_path):
    """Trainer.fit on a loaded LightGCN skipped prepare() (it has a training matrix): a TypeError on its
    missing graph."""
    _fit(ds, tmp_path / "run", model_cls=LightGCN, epochs=1)
    loaded = Recommender.load(tmp_path / "run/best")
    res = Trainer(small_config(epochs=1)).fit(loaded, ds)
    assert res["test"]["recall@20"] > 0


def test_model_prepared_on_another_split_is_refused(catalogue):
    """A model built on one split and trained/evaluated on another trained on (MostPop: counted) the other
    split's held-out pairs: test Recall@20 0.85 instead of 0.75 on this catalogue, silently."""
    a, b = (load(str(catalogue), PrepareConfig(seed=s)) for s in (1, 2))
    with pytest.raises(DataError, match="prepared on another training split"):
        Trainer(small_config()).fit(MostPop.build(a), b)


# ------------------------------------------------------------------ divergence and bad values
def test_non_finite_parameters_with_a_finite_loss_stop_at_that_epoch(ds, tmp_path, monkeypatch):
    """A step can leave NaN parameters while every loss was finite: that epoch was evaluated, kept as the
    best and checkpointed, and training only stopped on the next epoch's NaN loss."""
    real = BPRMF.loss

    def loss(self, users, pos, neg):
        out = real(self, users, pos, neg)
        out["loss"] = out["loss"] + torch.sqrt(self.user_emb.weight * 0).sum()  # value 0, gradient NaN
        return out

    monkeypatch.setattr(BPRMF, "loss", loss)
    with pytest.raises(TrainingDiverged, match=r"parameter user_emb.weight became non-finite at epoch 0"):
        _fit(ds, tmp_path / "run", epochs=2, batch_size=10_000)  # one step per epoch
    assert not (tmp_path / "run/checkpoint/state.json").exists()


@pytest.mark.parametrize("override", ["trainer.lr=1e38", "trainer.weight_decay=1e39"])
def test_lr_beyond_float32_is_refused_by_the_config(override):
    """lr 3e38 was accepted, then Adam's float32 step raised a RuntimeError traceback mid-epoch."""
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}: .*must be at most"):
        load_config(None, [override])


def test_metric_with_a_leading_zero_is_normalised():
    """"recall@020" passed validation, then model selection raised KeyError 'recall@020' after epoch 0."""
    assert TrainConfig(metric="recall@020").metric == "recall@20"
    with pytest.raises(ValidationError, match="metric must look like recall@20"):
        TrainConfig(metric="recall@²")


def test_one_propagation_per_validation_including_saving_the_best(ds, tmp_path, monkeypatch):
    """Saving a new best model propagated the graph a second time (the evaluation's embeddings were not
    cached because the model was still in training mode)."""
    calls: list[bool] = []
    real = LightGCN.embeddings

    def counting(self):
        calls.append(self.training)
        return real(self)

    monkeypatch.setattr(LightGCN, "embeddings", counting)
    _fit(ds, tmp_path / "run", model_cls=LightGCN, epochs=1, batch_size=10_000)
    # one training step (one batch), one validation whose embeddings best/ reuses, one test evaluation
    assert calls == [True, False, False]


@pytest.mark.parametrize("selection", ["count", "faiss", "torch"])
def test_nan_scores_rank_against_the_model_in_every_selection(selection):
    """Counting and faiss skipped NaN-scored items (Recall@1 = 1 here), torch.topk ranked them first and
    counted a NaN held-out item as a hit. Now in all three a NaN item ranks above every held-out item, and a
    NaN held-out item is never a hit."""
    n_items = 10
    target = np.zeros((3, n_items), np.float32)
    target[:, 9] = 1  # item 9 held out for every user
    mask = sp.csr_matrix((3, n_items), dtype=np.float32)
    user = torch.tensor([[1.0], [1.0], [-1.0]])
    item = torch.arange(n_items, dtype=torch.float32)[:, None]  # item 9 scores best for users 0 and 1
    item[:3] = float("nan")  # items 0-2 unscoreable: 3 items ahead of item 9
    ev = Evaluator(mask, sp.csr_matrix(target), (1, 3, 4, 10), 2, selection)
    res = ev.evaluate_embeddings(user, item)
    recall = {k: res.per_user[f"recall@{k}"].tolist() for k in (1, 3, 4, 10)}
    assert recall[1] == recall[3] == [0.0, 0.0, 0.0]
    assert recall[4] == [1.0, 1.0, 0.0]  # behind the 3 NaN items; user 2 ranks item 9 last
    assert recall[10] == [1.0, 1.0, 1.0]
    item[9] = float("nan")
    assert ev.evaluate_embeddings(user, item).means["recall@10"] == 0.0


@pytest.mark.parametrize("selection", ["count", "faiss", "torch"])
def test_masked_held_out_item_is_never_a_hit_with_fewer_items_than_k(selection):
    """torch.topk fills K slots even from masked (−∞) items: a held-out item that is also masked (a pair in
    both validation and test, which test masks) was a hit when fewer than K items were left."""
    mask = np.zeros((1, 5), np.float32)
    mask[0, :4] = 1
    target = np.zeros((1, 5), np.float32)
    target[0, [0, 4]] = 1  # item 0 is held out and masked
    ev = Evaluator(sp.csr_matrix(mask), sp.csr_matrix(target), (5,), 8, selection)
    assert ev.evaluate_embeddings(torch.ones(1, 1), torch.arange(5.0)[:, None]).means["recall@5"] == 0.5
