"""Cold-start fold-in of a model whose score carries an item bias as an inner product, ``[p_u, 1]·[q_i, b_i]``
(docs/extending.md's LogMF; VBPR with ``use_bias``): the folded-in user keeps the constant 1. Averaged with
the item side like the other coordinates, it became the basket's mean bias, and a basket of unpopular items
(negative biases) ranked the catalogue anti-popular."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat.models.base import MODELS
from recgoat.serving import create_app, export_run, load_run

from serving_helpers import shop_rows

pytest.importorskip("httpx")

PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


@pytest.fixture(scope="module")
def logmf_class():
    """docs/extending.md's LogMF (tests/fixtures/plugins/logmf.py); the registry and sys.modules restored after."""
    sys.path.insert(0, str(PLUGINS))
    before = dict(MODELS)
    try:
        from logmf import LogMF
        yield LogMF
    finally:
        MODELS.clear()
        MODELS.update(before)
        sys.modules.pop("logmf", None)
        sys.path.remove(str(PLUGINS))


@pytest.fixture(scope="module")
def served(tmp_path_factory, logmf_class):
    """A LogMF artefact whose item biases fall with the internal item id (item 0 the most popular) and whose
    factors are small; ``(client, run)``."""
    from fastapi.testclient import TestClient

    from recgoat.datasets import PrepareConfig, load_raw, prepare

    root = tmp_path_factory.mktemp("bias")
    folder = root / "shop"
    folder.mkdir()
    users, items = [f"u{i}" for i in range(12)], [f"i{j}" for j in range(10)]
    pd.DataFrame(shop_rows(users, items), columns=["user_id", "item_id", "timestamp"]).to_csv(
        folder / "interactions.csv", index=False)
    pd.DataFrame({"item_id": items, "title": items}).to_csv(folder / "items.csv", index=False)
    name, inter, table, fields, info = load_raw(str(folder))
    ds = prepare(name, inter, table, fields, PrepareConfig(k_core=0), info)
    torch.manual_seed(0)
    model = logmf_class(ds.n_users, ds.n_items, {"embedding_dim": 3})
    with torch.no_grad():
        model.user_emb.weight.mul_(0.01)
        model.item_emb.weight.mul_(0.01)
        model.item_bias.copy_(torch.linspace(2.0, -2.0, ds.n_items))
    model.prepare(ds)
    model.eval()
    export_run(model, ds, root / "art")
    run = load_run(root / "art")
    return TestClient(create_app(run)), run


def test_fold_in_keeps_the_constant_user_coordinate(served):
    """The folded-in vector is the basket's mean over the factor coordinates and 1 on the bias coordinate
    (every training user's value there), not the basket's mean bias."""
    client, run = served
    assert np.all(run.user_emb[:, -1] == 1.0)
    basket = np.array([7, 9])
    z = client.app.state.service.fold_in(basket, None)[0]
    np.testing.assert_allclose(z[:-1], run.item_emb[basket, :-1].mean(0), rtol=1e-6)
    assert z[-1] == 1.0


def test_a_basket_of_unpopular_items_is_not_ranked_anti_popular(served):
    """Biases dominate the scores: a new user who liked the least popular item gets the most popular ones,
    as every training user does, where the folded-in mean bias (-2) reversed the ranking."""
    client, run = served
    ids = lambda body: [run.item_index[x["item_id"]] for x in body["items"]]  # noqa: E731
    trained = client.get("/recommend", params={"user_id": run.user_ids[0], "k": 4, "exclude_seen": False}).json()
    assert ids(trained) == [0, 1, 2, 3]
    r = client.post("/recommend", json={"item_ids": [run.item_ids[9]], "k": 4})
    assert r.status_code == 200, r.text
    assert ids(r.json()) == [0, 1, 2, 3]
