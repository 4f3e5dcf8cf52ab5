"""Shared model API on the ID-based models: recommend, score, save/load round trip, LightGCN maths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat.errors import DataError
from recgoat.graphs.bipartite import normalized_bipartite, sym_spmm
from recgoat.models import BPRMF, LightGCN, MostPop, Recommender
from recgoat.models.lightgcn import propagate

from conftest import subset_users


@pytest.fixture(scope="module")
def small(ml_small):
    return subset_users(ml_small, 80)


@pytest.mark.parametrize("cls", [MostPop, BPRMF, LightGCN])
def test_recommend_never_returns_seen_items(cls, small):
    model = cls.build(small)
    seen = small.csr("train")
    for u in range(0, small.n_users, 7):
        items, scores = model.recommend(u, k=20)
        assert len(items) == 20 and np.all(np.diff(scores) <= 0)
        assert not set(items) & set(seen[u].indices)
    items, _ = model.recommend(0, k=small.n_items, remove_seen=False)
    assert len(items) == small.n_items


@pytest.mark.parametrize("cls", [MostPop, BPRMF, LightGCN])
def test_save_load_round_trip_is_exact(cls, small, tmp_path):
    torch.manual_seed(3)
    model = cls.build(small)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert type(loaded) is cls
    users = np.arange(small.n_users)
    assert torch.equal(model.score(users), loaded.score(users))
    assert np.array_equal(model.recommend(3, 10)[0], loaded.recommend(3, 10)[0])


def test_load_refuses_corrupt_or_mismatched_folders(small, tmp_path):
    BPRMF.build(small).save(tmp_path / "m")
    w = tmp_path / "m/weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        Recommender.load(tmp_path / "m")
    with pytest.raises(DataError, match="not a saved model"):
        Recommender.load(tmp_path / "nothing")
    MostPop.build(small).save(tmp_path / "p")
    with pytest.raises(DataError, match="not a bprmf"):
        BPRMF.load(tmp_path / "p")


def test_lightgcn_propagation_equals_dense_formula(small):
    adj = normalized_bipartite(small.csr("train"))
    dense = adj.to_dense()
    # symmetric normalisation: Â = D^-1/2 A D^-1/2 is symmetric with entries 1/sqrt(d_u d_i)
    assert torch.allclose(dense, dense.T)
    deg = (dense > 0).sum(1).float()
    u, i = torch.nonzero(dense, as_tuple=True)
    assert torch.allclose(dense[u, i], 1 / torch.sqrt(deg[u] * deg[i]))
    x = torch.randn(dense.shape[0], 4, dtype=torch.float32)
    expected = (x + dense @ x + dense @ dense @ x + dense @ dense @ dense @ x) / 4
    assert torch.allclose(propagate(adj, x, 3), expected, atol=1e-5)


def test_symmetric_spmm_gradient_matches_dense(small):
    adj = normalized_bipartite(small.csr("train"))
    x = torch.randn(adj.shape[0], 3, requires_grad=True)
    w = torch.randn(adj.shape[0], 3)
    (sym_spmm(adj, x) * w).sum().backward()
    assert torch.allclose(x.grad, adj.to_dense().T @ w, atol=1e-5)


def test_mostpop_ranks_by_training_popularity(small):
    model = MostPop.build(small)
    items, _ = model.recommend(0, k=5, remove_seen=False)
    counts = np.asarray(small.csr("train").sum(0)).ravel()
    assert np.array_equal(np.sort(counts[items])[::-1], np.sort(counts)[::-1][:5])
