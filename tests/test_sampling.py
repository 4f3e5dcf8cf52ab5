"""Negative sampler: never a positive, uniform over the rest, reproducible."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recgoat.training.sampling import NegativeSampler


def test_negatives_are_never_positives_on_real_data(ml_small):
    train = ml_small.csr("train")
    s = NegativeSampler(train)
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(ml_small.n_users), 200)
    neg = s.sample_negatives(users, rng)
    assert not np.asarray(train[users, neg]).any()
    assert neg.min() >= 0 and neg.max() < ml_small.n_items


def test_negatives_uniform_over_non_positives():
    # user 0 has items {0, 1}; the 3 remaining items must each get about a third of the draws
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0]], dtype=np.float32))
    s = NegativeSampler(train)
    neg = s.sample_negatives(np.zeros(30000, dtype=np.int64), np.random.default_rng(0))
    counts = np.bincount(neg, minlength=5)
    assert counts[0] == counts[1] == 0
    assert np.allclose(counts[2:] / 30000, 1 / 3, atol=0.02)


def test_epoch_batches_cover_every_positive_once_and_reproducibly(ml_small):
    train = ml_small.csr("train")
    s = NegativeSampler(train)
    batches = list(s.epoch(4096, np.random.default_rng(7)))
    u = np.concatenate([b[0].numpy() for b in batches])
    p = np.concatenate([b[1].numpy() for b in batches])
    assert len(u) == train.nnz
    assert np.asarray(train[u, p]).all()
    assert len(set(zip(u.tolist(), p.tolist()))) == train.nnz
    again = list(s.epoch(4096, np.random.default_rng(7)))
    assert len(again) == len(batches) == -(-train.nnz // 4096)
    for a, b in zip(batches, again):  # the same users, positives and negatives, batch by batch
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    other = list(s.epoch(4096, np.random.default_rng(8)))  # and another seed: another order
    assert not torch.equal(other[0][0], batches[0][0])


def test_user_with_every_item_is_refused():
    with pytest.raises(ValueError, match="every item"):
        NegativeSampler(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)))
