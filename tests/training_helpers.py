"""The synthetic catalogue the training, model-API and export tests train on (imported as their module fixtures)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import load
from recgoat.evaluation.evaluator import Evaluator
from recgoat.training.trainer import TrainConfig


def write_catalogue(folder) -> None:
    """50 users with 15 distinct items each out of 40, as ``folder/interactions.csv``."""
    rng = np.random.default_rng(0)
    rows = [{"user_id": f"u{u}", "item_id": f"i{i}", "rating": 4, "timestamp": u * 1000 + j}
            for u in range(50) for j, i in enumerate(rng.choice(40, 15, replace=False))]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "interactions.csv", index=False)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """The catalogue of :func:`write_catalogue` in a folder of its own."""
    folder = tmp_path_factory.mktemp("data") / "cat"
    write_catalogue(folder)
    return folder


@pytest.fixture(scope="module")
def ds(catalogue):
    return load(str(catalogue))


def small_config(**kw) -> TrainConfig:
    """3 epochs of batch 64 at lr 0.05, no progress bar; ``kw`` overrides."""
    return TrainConfig(**{"epochs": 3, "lr": 0.05, "batch_size": 64, "ks": (5, 10, 20), "progress": False, **kw})


def script_validation(ds, monkeypatch, metric: Callable[[int], float]) -> None:
    """The validation metric at the n-th evaluation (from 0) becomes ``metric(n)``; test metrics stay real."""
    real, calls = Evaluator.evaluate, []

    def scripted(self, model):
        res = real(self, model)
        if self.target.nnz == ds.csr("valid").nnz and (self.target != ds.csr("valid")).nnz == 0:
            res.means = {k: metric(len(calls)) for k in res.means}
            calls.append(1)
        return res

    monkeypatch.setattr(Evaluator, "evaluate", scripted)


def write_stub_text_features(ds, folder) -> None:
    """A stand-in 8-d text.npy (+ manifest) for ``ds`` in ``folder`` (created), as `recgoat encode text` writes
    them: for tests of which feature folder a command finds, not of the features themselves."""
    import json

    folder.mkdir(parents=True)
    np.save(folder / "text.npy", np.random.default_rng(0).standard_normal((ds.n_items, 8)).astype(np.float32))
    (folder / "text.json").write_text(json.dumps({"kind": "text", "file": "text.npy", "dataset": ds.name,
                                                  "dataset_fingerprint": ds.fingerprint(), "rows": ds.n_items,
                                                  "dim": 8, "encoder": "stub-encoder"}))


def popularity_recall(ds, split: str = "valid", k: int = 20) -> float:
    """Recall@``k`` on ``split`` of ranking each user's unseen items by training popularity, computed here by hand
    (not by the evaluator or the MostPop model, which a broken scoring path would break alike): the bar a model
    that learned anything personal is held to. As the evaluator does by default, test ranks items outside training
    and validation (masking training items only left validation items in the top ``k``: a bar below MostPop's)."""
    train, held_out = ds.csr("train"), ds.csr(split)
    masked = [train] + ([ds.csr("valid")] if split == "test" else [])
    order = np.argsort(-np.asarray(train.sum(0)).ravel(), kind="stable")
    recalls = []
    for u in range(ds.n_users):
        held = set(held_out.indices[held_out.indptr[u]:held_out.indptr[u + 1]].tolist())
        if not held:
            continue
        seen = {int(i) for m in masked for i in m.indices[m.indptr[u]:m.indptr[u + 1]]}
        top = [i for i in order[: k + len(seen)] if i not in seen][:k]
        recalls.append(len(held.intersection(top)) / len(held))
    return float(np.mean(recalls))
