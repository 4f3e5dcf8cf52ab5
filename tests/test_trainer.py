"""Trainer: early stopping on validation, best checkpoint, exact resume, reproducibility."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recgoat.models import BPRMF, LightGCN, MostPop, Recommender
from recgoat.training.trainer import Trainer, TrainConfig

from conftest import subset_users


@pytest.fixture(scope="module")
def small(ml_small):
    return subset_users(ml_small, 120)


def _fit(model_cls, data, run_dir, epochs=4, on_epoch_end=None, **cfg):
    torch.manual_seed(0)
    model = model_cls.build(data)
    cfg = TrainConfig(**{"epochs": epochs, "batch_size": 512, "lr": 5e-3, "progress": False, **cfg})
    return model, Trainer(cfg, run_dir=run_dir, on_epoch_end=on_epoch_end).fit(model, data)


class Killed(Exception):
    pass


@pytest.mark.parametrize("model_cls", [BPRMF, LightGCN])
def test_resume_after_kill_equals_uninterrupted_run(model_cls, small, tmp_path):
    full_model, full = _fit(model_cls, small, tmp_path / "full")

    def kill(epoch, row):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        _fit(model_cls, small, tmp_path / "resumed", on_epoch_end=kill)
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["epoch"] == 1
    resumed_model, resumed = _fit(model_cls, small, tmp_path / "resumed")
    assert resumed["valid"] == full["valid"]
    assert resumed["test"] == full["test"]
    assert resumed["best_epoch"] == full["best_epoch"]
    for (k, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    log = [json.loads(line) for line in (tmp_path / "resumed/log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]


def test_same_seed_same_result_and_other_seed_differs(small, tmp_path):
    _, a = _fit(BPRMF, small, tmp_path / "a", epochs=2)
    _, b = _fit(BPRMF, small, tmp_path / "b", epochs=2)
    _, c = _fit(BPRMF, small, tmp_path / "c", epochs=2, seed=7)
    assert a["valid"] == b["valid"] and a["test"] == b["test"]
    assert a["valid"] != c["valid"]


def test_two_threads_same_seed_same_model(small, tmp_path):
    """With two threads the backward of a row gather accumulates from both threads; the trainer's
    deterministic kernels make two runs with one seed end in identical weights, and it leaves torch's
    global setting as it found it."""
    before = torch.get_num_threads()
    try:
        runs = [_fit(LightGCN, small, tmp_path / f"r{i}", epochs=3, num_threads=2, batch_size=2048,
                     eval_every=3)[0].state_dict() for i in range(3)]
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        for k in runs[0]:
            assert torch.equal(runs[0][k], other[k]), k
    assert not torch.are_deterministic_algorithms_enabled()


def test_best_checkpoint_is_the_best_validation_epoch(small, tmp_path):
    model, res = _fit(BPRMF, small, tmp_path / "r", epochs=6, patience=2)
    log = [json.loads(line) for line in (tmp_path / "r/log.jsonl").read_text().splitlines()]
    scores = [r["valid"]["recall@20"] for r in log]
    assert res["best_epoch"] == int(np.argmax(scores))
    assert res["valid"]["recall@20"] == max(scores)
    # the model left in memory and the saved best model are the best-validation ones
    best = Recommender.load(tmp_path / "r/best")
    assert torch.equal(best.score([0, 1]), model.score([0, 1]))
    assert json.loads((tmp_path / "r/result.json").read_text())["test"] == res["test"]


def test_early_stopping_stops_after_patience(small, tmp_path):
    # a learning rate of 0 never improves after the first evaluation
    _, res = _fit(BPRMF, small, tmp_path / "r", epochs=50, patience=3, lr=0.0)
    assert res["best_epoch"] == 0 and res["epochs_run"] == 4


def test_min_epochs_defers_early_stopping(small, tmp_path):
    _, res = _fit(BPRMF, small, tmp_path / "r", epochs=50, patience=3, lr=0.0, min_epochs=9)
    assert res["best_epoch"] == 0 and res["epochs_run"] == 9


def _popularity_recall_ties_against(ds, split: str, k: int = 20) -> float:
    """Recall@``k`` of ranking each user's candidates (items outside training, and outside validation for test) by
    training count, by hand, with ties ranked as the evaluator ranks them: an item tied with a held-out one is
    ahead of it, tied held-out items take the last places of their tie group."""
    pop = np.asarray(ds.csr("train").sum(0)).ravel()
    masked = ds.csr("train") + (ds.csr("valid") if split == "test" else 0)
    held_out = ds.csr(split)
    recalls = []
    for u in range(ds.n_users):
        held = held_out.indices[held_out.indptr[u]:held_out.indptr[u + 1]]
        if len(held) == 0:
            continue
        cand = np.setdiff1d(np.arange(ds.n_items), masked.indices[masked.indptr[u]:masked.indptr[u + 1]])
        hits = 0
        for level in np.unique(pop[held]):
            above, tied = (pop[cand] > level).sum(), (pop[cand] == level).sum()
            tied_held = (pop[held] == level).sum()
            hits += max(0, min(tied_held, k - (above + tied - tied_held)))  # ranks above+tied-tied_held, …
        recalls.append(hits / len(held))
    return float(np.mean(recalls))


def test_untrainable_model_is_evaluated_once(small, tmp_path, monkeypatch):
    """A model without parameters to train (MostPop) is not trained: one validation and one test evaluation, no
    epoch, no checkpoint or log, and its best/ is the model itself; its figures are those of the popularity
    ranking, computed here by hand."""
    from recgoat.evaluation.evaluator import Evaluator

    calls: list[str] = []
    real = Evaluator.evaluate

    def counted(self, model, *a, **kw):
        calls.append(next((s for s in ("valid", "test") if (self.target != small.csr(s)).nnz == 0), "other"))
        return real(self, model, *a, **kw)

    monkeypatch.setattr(Evaluator, "evaluate", counted)
    _, res = _fit(MostPop, small, tmp_path / "p")
    assert calls == ["valid", "test"]  # validation, then test: once each
    assert res["epochs_run"] == 0 and res["best_epoch"] == 0 and res["history"] == []
    for split in ("valid", "test"):  # 0.0936 and 0.1151 on these 120 users
        assert res[split]["recall@20"] == pytest.approx(_popularity_recall_ties_against(small, split), abs=1e-6)
    assert not (tmp_path / "p" / "log.jsonl").exists() and not (tmp_path / "p" / "checkpoint" / "state.json").exists()
    assert Recommender.load(tmp_path / "p" / "best").name == "mostpop"


def test_dropout_is_off_at_evaluation(small):
    class DropBPR(BPRMF):
        def embeddings(self):
            u, i = super().embeddings()
            return torch.nn.functional.dropout(u, 0.5, self.training), i

    model = DropBPR.build(small)
    model.train()
    a, b = model.final_embeddings(), model.final_embeddings()
    assert torch.equal(a[0], b[0])


def test_eval_selection_reaches_the_evaluator(small, tmp_path):
    """A trained model's scores do not tie, so the three rankings give the same run; MostPop's popularity
    counts do tie, and counting ranks those ties against it (never above an arbitrary top-K order)."""
    runs = {s: _fit(LightGCN, small, tmp_path / s, epochs=2, eval_selection=s)[1] for s in ("count", "torch")}
    assert runs["count"]["valid"] == runs["torch"]["valid"] and runs["count"]["test"] == runs["torch"]["test"]
    pop = {s: _fit(MostPop, small, tmp_path / f"pop-{s}", eval_selection=s)[1] for s in ("count", "torch")}
    assert pop["count"]["test"]["recall@20"] <= pop["torch"]["test"]["recall@20"]
    assert pop["count"]["test"] != pop["torch"]["test"]
    with pytest.raises(ValueError, match="eval_selection"):
        TrainConfig(eval_selection="heap")
