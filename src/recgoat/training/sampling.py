"""Uniform negative sampling among the items a user has *not* interacted with, fully vectorised.

Each positive ``(u, i)`` gets one negative ``j`` drawn uniformly from ``{0..I-1} \\ N(u)``. Draws are
made for all samples at once; the few that hit a positive are redrawn in rounds (rejection sampling),
so the cost is O(n log nnz) with no Python loop per sample. Membership is tested by binary search
over the sorted keys ``u·I + i`` of the training matrix.

Rejection needs about ``I / (I - |N(u)|)`` rounds for user ``u``: a user who has all but a few of
thousands of items would exhaust any fixed number of rounds. The samples still unresolved after
``max_rounds`` are drawn exactly instead: the r-th non-interacted item of ``u`` (r uniform) is
``r + |{t : p_t - t <= r}|`` over ``u``'s sorted positives ``p_t``, one binary search per sample.
"""
from __future__ import annotations

import operator

import numpy as np
import scipy.sparse as sp
import torch


def users_without_negatives(train: sp.csr_matrix) -> np.ndarray:
    """Users who interacted with every item of ``train``: no negative exists for them."""
    coo = train.tocoo()
    n_items = train.shape[1]
    keys = np.unique(coo.row.astype(np.int64) * n_items + coo.col)  # duplicates count once
    counts = np.bincount(keys // max(n_items, 1), minlength=train.shape[0])
    return np.flatnonzero(counts >= n_items)


class NegativeSampler:
    """Draws BPR triples ``(user, positive, negative)`` from a user × item CSR training matrix."""

    def __init__(self, train: sp.csr_matrix, max_rounds: int = 100):
        self.n_users, self.n_items = train.shape
        coo = train.tocoo()
        self.keys = np.unique(coo.row.astype(np.int64) * self.n_items + coo.col)  # sorted; duplicates once
        # the training pairs are the distinct stored (u, i): a duplicated entry of a non-canonical CSR is one
        # pair, used once per epoch (on a canonical CSR this is coo's row-major order, unchanged)
        self.users, self.items = np.divmod(self.keys, max(self.n_items, 1))
        full = users_without_negatives(train)
        if len(full):
            raise ValueError(f"user {int(full[0])} has interacted with every item: no negative exists")
        self.max_rounds = max_rounds
        self._exact: tuple[np.ndarray, np.ndarray] | None = None  # built on first need (see module doc)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # int64: int32 ids times n_items (a Python int) stay int32 under NumPy 2 and wrap around
        keys = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if len(self.keys) == 0:  # no interaction at all (keys[-1] below would be an IndexError)
            return np.zeros(keys.shape, bool)
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
        if len(bad):  # users with almost every item: rejection would take ~I rounds, draw these exactly
            neg[bad] = self._exact_negatives(users[bad], rng)
        return neg

    def _exact_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform non-interacted item per entry of ``users``, without rejection (module docstring)."""
        if self._exact is None:
            key_users = self.keys // self.n_items
            start = np.searchsorted(self.keys, np.arange(self.n_users, dtype=np.int64) * self.n_items)
            rank = np.arange(len(self.keys), dtype=np.int64) - start[key_users]
            # u·I + (p_t - t): non-decreasing within a user and below (u+1)·I, so sorted overall
            self._exact = (self.keys - rank, start)
        shifted, start = self._exact
        n_pos = np.append(start[1:], len(self.keys))[users] - start[users]
        r = rng.integers(0, self.n_items - n_pos)
        return r + np.searchsorted(shifted, users * self.n_items + r, side="right") - start[users]

    def epoch(self, batch_size: int, rng: np.random.Generator):
        """Yield shuffled mini-batches of ``(users, positives, negatives)`` LongTensors for one epoch."""
        batch_size = _batch_size(batch_size)
        order = rng.permutation(len(self.users))
        users, pos = self.users[order], self.items[order]
        neg = self.sample_negatives(users, rng)
        u_t, p_t, n_t = (torch.from_numpy(a) for a in (users, pos, neg))
        for start in range(0, len(order), batch_size):
            sl = slice(start, start + batch_size)
            yield u_t[sl], p_t[sl], n_t[sl]

    def n_batches(self, batch_size: int) -> int:
        batch_size = _batch_size(batch_size)
        return (len(self.users) + batch_size - 1) // batch_size


def _batch_size(batch_size: int) -> int:
    """``batch_size`` as an int >= 1 (a negative one gave an empty epoch and a negative batch count)."""
    batch_size = operator.index(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size
