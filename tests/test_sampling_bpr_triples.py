"""BPR triple sampling (training/sampling.py) and graph construction checked against brute-force references.

QA pins for graph construction (graphs/knn.py, graphs/bipartite.py) and BPR triple sampling
(training/sampling.py): the bugs found, then small brute-force regression nets for the documented rules."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recgoat.graphs.bipartite import bipartite_adjacency, normalized_bipartite, sym_normalize
from recgoat.graphs.knn import knn_graph
from recgoat.training.sampling import NegativeSampler


def _epoch_arrays(sampler: NegativeSampler, batch_size: int, seed: int):
    batches = list(sampler.epoch(batch_size, np.random.default_rng(seed)))
    return [torch.cat([b[j] for b in batches]).numpy() for j in range(3)] if batches else [np.zeros(0)] * 3


# ------------------------------------------------------------------------------------------------ bugs found
def test_is_positive_takes_int32_ids_without_overflow():
    """``users * n_items`` stayed int32 for int32 ids (NumPy 2 keeps the array's type with a Python int) and
    wrapped around: a stored interaction of user 70000 with item 69999 was reported as not positive."""
    train = sp.csr_matrix((np.ones(2, np.float32), (np.array([70000, 1]), np.array([69999, 0]))),
                          shape=(70001, 70000))
    s = NegativeSampler(train)
    for dt in (np.int32, np.int64):
        users, items = np.array([70000, 70000, 1], dt), np.array([69999, 5, 0], dt)
        assert s.is_positive(users, items).tolist() == [True, False, True]


def test_sampler_on_a_matrix_without_interactions():
    """``is_positive`` read ``keys[-1]`` of an empty key array: an IndexError for any query."""
    s = NegativeSampler(sp.csr_matrix((3, 4), dtype=np.float32))
    assert s.is_positive(np.array([0, 2]), np.array([1, 3])).tolist() == [False, False]
    neg = s.sample_negatives(np.array([0, 1, 2, 2]), np.random.default_rng(0))
    assert neg.dtype == np.int64 and ((neg >= 0) & (neg < 4)).all()
    assert s.n_batches(8) == 0 and list(s.epoch(8, np.random.default_rng(0))) == []


def test_a_duplicated_entry_is_one_training_pair_per_epoch():
    """A non-canonical CSR storing (0, 1) twice (it is one interaction: scipy sums duplicates) gave the pair
    twice per epoch, though negatives already treated it once."""
    train = sp.csr_matrix((np.ones(4, np.float32), np.array([1, 1, 3, 2]), np.array([0, 3, 4])), shape=(2, 5))
    assert not train.has_canonical_format
    s = NegativeSampler(train)
    u, p, n = _epoch_arrays(s, 2, 0)
    assert sorted(zip(u.tolist(), p.tolist())) == [(0, 1), (0, 3), (1, 2)]
    assert s.n_batches(2) == 2 and u.dtype == p.dtype == n.dtype == np.int64
    assert not s.is_positive(u, n).any()
    # a canonical matrix keeps its row-major pair order
    c = train.copy()
    c.sum_duplicates()
    s = NegativeSampler(c)
    assert s.users.tolist() == [0, 0, 1] and s.items.tolist() == [1, 3, 2]


@pytest.mark.parametrize("bad", [0, -1, -4096])
def test_epoch_refuses_a_batch_size_below_one(bad):
    """``batch_size=-1`` yielded no batch at all (a silent empty epoch) and ``n_batches`` was negative;
    0 was a bare "range() arg 3 must not be zero" / ZeroDivisionError."""
    s = NegativeSampler(sp.csr_matrix(np.eye(3, 4, dtype=np.float32)))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(s.epoch(bad, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        s.n_batches(bad)
    assert s.n_batches(np.int64(2)) == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_knn_object_array_with_nan_or_inf_isolates_the_row(bad):
    """An object array skipped the finiteness check, and a NaN/inf row then crashed in ``np.linalg.norm``
    ("float which has no callable sqrt method") instead of being isolated as documented."""
    x = np.random.default_rng(0).normal(size=(6, 4))
    o = x.astype(object)
    o[2, 1] = bad
    ref = knn_graph(x, 2, mask=np.arange(6) != 2)
    g = knn_graph(o, 2)
    assert g[2].nnz == 0 and g[:, 2].nnz == 0
    assert (g != ref).nnz == 0
    assert (knn_graph(x.astype(object), 2) != knn_graph(x, 2)).nnz == 0


# ------------------------------------------------------------------------------ regression nets (pass before)
def _brute_topk_ok(x: np.ndarray, k: int, mask: np.ndarray | None, g: sp.csr_matrix) -> None:
    """``g`` (directed, weighted) against a float64 dense reference: each valid row keeps min(k, #other valid)
    nodes, all valid and not itself, none less similar than a node left out; weights are the cosines."""
    x64 = np.asarray(x, np.float64)
    norms = np.linalg.norm(x64, axis=1)
    valid = np.isfinite(x64).all(axis=1) & (norms > 0)
    if mask is not None:
        valid &= mask
    xn = np.where(valid[:, None], x64 / np.where(norms > 0, norms, 1)[:, None], 0)
    sims = xn @ xn.T
    for i in range(len(x)):
        cols = g[i].indices
        if not valid[i]:
            assert len(cols) == 0 and g[:, i].nnz == 0
            continue
        others = np.flatnonzero(valid & (np.arange(len(x)) != i))
        assert len(cols) == min(k, len(others)) and i not in cols and valid[cols].all()
        rest = np.setdiff1d(others, cols)
        if len(cols) and len(rest):
            assert sims[i, rest].max() <= sims[i, cols].min() + 1e-6
        np.testing.assert_allclose(g[i].data, sims[i, cols], atol=1e-5)


def test_knn_matches_a_brute_force_reference_with_ties_duplicates_zero_and_masked_rows():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n, d = int(rng.integers(1, 26)), int(rng.integers(1, 5))
        x = rng.normal(size=(n, d))
        if trial % 2:
            x = np.round(x)  # exact ties (and zero rows)
        if n > 3:
            x[n - 1] = x[0]  # a duplicate row
            x[1] = 0
        mask = rng.random(n) < 0.8 if trial % 3 == 0 else None
        x = x.astype(np.float32) if trial % 4 else x  # float64 too
        k = int(rng.integers(0, n + 2))  # k >= n included
        d_ref = knn_graph(x, k, mask=mask, symmetrize=False, weighted=False)
        # pattern from the unweighted graph (a weighted edge of similarity exactly 0 is not stored)
        weighted = knn_graph(x, k, mask=mask, symmetrize=False, weighted=True)
        assert set(zip(*weighted.nonzero())) <= set(zip(*d_ref.nonzero()))
        _brute_topk_ok(x, k, mask, _with_zeros(d_ref, weighted))
        for block in (1, 3, 20):
            assert (knn_graph(x, k, mask=mask, symmetrize=False, weighted=True, block=block) != weighted).nnz == 0
        s = knn_graph(x, k, mask=mask)
        assert (s != s.T).nnz == 0 and s.diagonal().sum() == 0
        assert set(zip(*s.nonzero())) == set(zip(*d_ref.nonzero())) | {(j, i) for i, j in zip(*d_ref.nonzero())}
        for m in (s, weighted, d_ref):
            assert m.has_canonical_format and not (m.data == 0).any() and m.dtype == np.float32
    x = np.random.default_rng(1).normal(size=(7, 5))
    assert (knn_graph(x[:, ::2], 3) != knn_graph(np.ascontiguousarray(x[:, ::2]), 3)).nnz == 0
    assert (knn_graph(x[::-1], 3) != knn_graph(np.ascontiguousarray(x[::-1]), 3)).nnz == 0


def _with_zeros(pattern: sp.csr_matrix, weighted: sp.csr_matrix) -> sp.csr_matrix:
    """``weighted``'s values on ``pattern``'s entries (explicit zeros where the cosine was exactly 0)."""
    p = pattern.tocoo()
    vals = np.asarray(weighted[p.row, p.col]).ravel() if p.nnz else np.zeros(0)
    return sp.csr_matrix((vals, (p.row, p.col)), shape=pattern.shape)


def test_normalised_bipartite_matches_the_dense_formula_with_isolated_users_and_items():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n_users, n_items = (int(v) for v in rng.integers(1, 7, 2))
        r = (rng.random((n_users, n_items)) < 0.35).astype(np.float32)
        r[0] = 0  # a user with no interaction
        r[:, -1] = 0  # an item nobody had
        a = np.zeros((n_users + n_items,) * 2)
        a[:n_users, n_users:], a[n_users:, :n_users] = r, r.T
        deg = a.sum(axis=1)
        inv = np.zeros_like(deg)
        inv[deg > 0] = deg[deg > 0] ** -0.5
        ref = inv[:, None] * a * inv[None, :]
        adj = bipartite_adjacency(sp.csr_matrix(r))
        np.testing.assert_array_equal(adj.toarray(), a)
        norm = sym_normalize(adj)
        np.testing.assert_allclose(norm.toarray(), ref, atol=1e-6)
        assert norm.has_canonical_format and not (norm.data == 0).any() and norm.dtype == np.float32
        np.testing.assert_allclose(normalized_bipartite(sp.csr_matrix(r)).to_dense().numpy(), ref, atol=1e-6)


def test_negatives_are_uniform_for_users_with_almost_every_item():
    """Users holding all but 1–3 of 60 items exhaust the rejection rounds: the exact fallback must still be
    uniform over their non-interacted items and never return a positive (fixed seed, generous bound)."""
    n_items = 60
    r = np.ones((4, n_items), bool)
    free = {0: [0], 1: [5, 59], 2: [1, 30, 31], 3: list(range(0, 60, 2))}
    for u, items in free.items():
        r[u, items] = False
    s = NegativeSampler(sp.csr_matrix(r.astype(np.float32)), max_rounds=2)
    users = np.repeat(np.arange(4), 6000)
    neg = s.sample_negatives(users, np.random.default_rng(11))
    assert neg.dtype == np.int64 and not r[users, neg].any()
    for u, items in free.items():
        counts = np.bincount(neg[users == u], minlength=n_items)[items]
        expected = 6000 / len(items)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        dof = len(items) - 1
        assert chi2 <= dof + 8 * np.sqrt(2 * max(dof, 1)), (u, counts)  # ~> 5 sigma above the mean


def test_epoch_uses_every_pair_once_with_reproducible_triples_whatever_the_batch_size():
    rng = np.random.default_rng(3)
    r = rng.random((9, 11)) < 0.4
    r[:, 0] = False
    s = NegativeSampler(sp.csr_matrix(r.astype(np.float32)))
    nnz = int(r.sum())
    ref = _epoch_arrays(s, nnz, 5)
    for bs in (1, 2, nnz - 1, nnz, nnz + 1):
        batches = list(s.epoch(bs, np.random.default_rng(5)))
        assert len(batches) == s.n_batches(bs) == -(-nnz // bs)
        assert all(len(b[0]) == bs for b in batches[:-1]) and 1 <= len(batches[-1][0]) <= bs
        u, p, n = (torch.cat([b[j] for b in batches]).numpy() for j in range(3))
        assert all(t.dtype == torch.int64 for b in batches for t in b)
        assert sorted(zip(u.tolist(), p.tolist())) == sorted(zip(*np.nonzero(r)))
        assert not r[u, n].any()
        for a, b in zip((u, p, n), ref):  # the batch size only cuts the same epoch
            np.testing.assert_array_equal(a, b)
