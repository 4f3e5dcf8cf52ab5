"""Shared model API on the ID-based models: recommend, score, save/load round trip, LightGCN maths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat.errors import DataError
from recgoat.graphs.bipartite import normalized_bipartite, spmm, sym_spmm
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
    # a user who has seen everything (the model is told so): nothing left, as two empty 1-D arrays
    model.seen_items = lambda user: np.arange(small.n_items)
    items, scores = model.recommend(0, k=5)
    assert items.shape == (0,) and scores.shape == (0,)


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


def test_spmm_is_the_sparse_product_bit_for_bit(small):
    """The fast path (addmm into an uninitialised tensor, β = 0) gives exactly ``a @ x``, with the fused
    add ``add + a @ x``; where autograd must see the product it falls back to ``@`` and keeps the graph."""
    adj = normalized_bipartite(small.csr("train"))
    x = torch.randn(adj.shape[0], 5)
    assert torch.equal(spmm(adj, x), adj @ x)
    assert torch.equal(spmm(adj, x.t().contiguous().t()), adj @ x)  # a column-major input too
    add = torch.randn(adj.shape[0], 5)
    assert torch.equal(spmm(adj, x, add=add), add + adj @ x)
    # rows of the garbage the output starts as must not leak in: an isolated node's row stays exactly 0
    empty = torch.nonzero(adj.crow_indices()[1:] == adj.crow_indices()[:-1]).ravel()
    lone = torch.sparse_csr_tensor(torch.tensor([0, 0, 1]), torch.tensor([0]), torch.tensor([2.0]), size=(2, 2))
    for _ in range(3):
        junk = torch.full((2, 3), float("nan"))  # freed just before: malloc tends to hand the block back
        del junk
        assert torch.equal(spmm(lone, torch.ones(2, 3)), torch.tensor([[0.0] * 3, [2.0] * 3]))
    assert torch.equal(spmm(adj, x)[empty], torch.zeros(len(empty), 5))
    xg = x.clone().requires_grad_()
    spmm(adj, xg).sum().backward()
    assert torch.allclose(xg.grad, adj.to_dense().T @ torch.ones(adj.shape[0], 5), atol=1e-5)


def test_mostpop_ranks_by_training_popularity(small):
    model = MostPop.build(small)
    items, _ = model.recommend(0, k=5, remove_seen=False)
    counts = np.asarray(small.csr("train").sum(0)).ravel()
    assert np.array_equal(np.sort(counts[items])[::-1], np.sort(counts)[::-1][:5])
