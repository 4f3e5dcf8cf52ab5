"""Uniform negative sampling among the items a user has *not* interacted with, fully vectorised.

Each positive ``(u, i)`` gets one negative ``j`` drawn uniformly from ``{0..I-1} \\ N(u)``. Draws are
made for all samples at once; the few that hit a positive are redrawn in rounds (rejection sampling),
so the cost is O(n log nnz) with no Python loop per sample. Membership is tested by binary search
over the sorted keys ``u·I + i`` of the training matrix.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class NegativeSampler:
    """Draws BPR triples ``(user, positive, negative)`` from a user × item CSR training matrix."""

    def __init__(self, train: sp.csr_matrix, max_rounds: int = 100):
        self.n_users, self.n_items = train.shape
        coo = train.tocoo()
        self.users = coo.row.astype(np.int64)
        self.items = coo.col.astype(np.int64)
        self.keys = np.sort(self.users * self.n_items + self.items)
        counts = np.diff(train.indptr)
        if (counts >= self.n_items).any():
            full = int(np.flatnonzero(counts >= self.n_items)[0])
            raise ValueError(f"user {full} has interacted with every item: no negative exists")
        self.max_rounds = max_rounds

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == keys

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        neg = rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        bad = np.flatnonzero(self.is_positive(users, neg))
        for _ in range(self.max_rounds):
            if len(bad) == 0:
                return neg
            neg[bad] = rng.integers(0, self.n_items, size=len(bad), dtype=np.int64)
            bad = bad[self.is_positive(users[bad], neg[bad])]
        raise RuntimeError("negative sampling did not converge: some users have almost every item")

    def epoch(self, batch_size: int, rng: np.random.Generator):
        """Yield shuffled mini-batches of ``(users, positives, negatives)`` LongTensors for one epoch."""
        order = rng.permutation(len(self.users))
        users, pos = self.users[order], self.items[order]
        neg = self.sample_negatives(users, rng)
        u_t, p_t, n_t = (torch.from_numpy(a) for a in (users, pos, neg))
        for start in range(0, len(order), batch_size):
            sl = slice(start, start + batch_size)
            yield u_t[sl], p_t[sl], n_t[sl]

    def n_batches(self, batch_size: int) -> int:
        return (len(self.users) + batch_size - 1) // batch_size
