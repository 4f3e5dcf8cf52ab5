"""Top-k selection with a fixed tie rule, shared by ``Recommender.recommend`` and the serving indexes.

Why a rule: ``torch.topk``, numpy's partitions and faiss's heaps each pick among equal scores in their own
arbitrary way, so MostPop (whose scores are counts: ties everywhere) gave different lists from the Python
API and from the service. Among equal scores the lower item id comes first, everywhere. A NaN score is no
score: NaN items come after every number (−∞ included), by ascending id.
"""
from __future__ import annotations

import numpy as np

#: a bound on |scores| below this is safe: float32 inner products of such embeddings cannot overflow
SAFE_SCORE_BOUND = float(np.finfo(np.float32).max) / 2


def score_bound(user_emb: np.ndarray, item_emb: np.ndarray) -> float:
    """A bound on every inner-product score ``|z_u · z_i|``: largest user norm × largest item norm
    (Cauchy–Schwarz), from one pass over the embeddings rather than the ``U × I`` scores; ``inf`` when an
    embedding holds NaN or inf, 0 when either side is empty. Norms in float64, so the bound itself does
    not overflow. Below :data:`SAFE_SCORE_BOUND` every float32 score is finite: the evaluator then skips
    its NaN handling, and an export refuses embeddings above it."""
    if user_emb.size == 0 or item_emb.size == 0:
        return 0.0
    if not (np.isfinite(user_emb).all() and np.isfinite(item_emb).all()):
        return float("inf")
    return float(np.sqrt(np.einsum("nd,nd->n", user_emb, user_emb, dtype=np.float64).max())
                 * np.sqrt(np.einsum("nd,nd->n", item_emb, item_emb, dtype=np.float64).max()))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``scores`` (``[n, I]`` or ``[I]``), the ids of the ``min(k, I)`` highest scores, best
    first, equal scores by ascending id. Vectorised: O(n·I), no per-row loop.

    The k-th largest value ``t`` of a row is found by a partition; every item above ``t`` is in, and the
    lowest-id items equal to ``t`` fill the rest.
    """
    s = np.atleast_2d(scores)
    n, m = s.shape
    k = min(int(k), m)
    if k < 1 or n == 0:
        return np.zeros((n, 0) if np.ndim(scores) == 2 else 0, np.int64)  # the input's rank, as below
    nan = np.isnan(s) if s.dtype.kind in "fc" else None
    if nan is not None and nan.any():
        # the partition below ranks NaN last, but the k-th value turned NaN once k reached a NaN item (no
        # score equals NaN: a row chose fewer than k ids and the reshape failed); NaN rows are exceptional,
        # so they are ordered outright: numbers first, by score then id, then the NaN items by id
        key = np.where(nan, -np.inf, s)
        ids = np.broadcast_to(np.arange(m), s.shape)
        out = np.lexsort((ids, -key, nan), axis=1)[:, :k].astype(np.int64)
        return out if np.ndim(scores) == 2 else out[0]
    # no negation here or below: -s wraps for unsigned ints and the most negative int, fails for bool
    part = np.argpartition(s, m - k, axis=1)[:, m - k:]
    kth = np.take_along_axis(s, part, axis=1).min(axis=1, keepdims=True)
    above = s > kth
    tied = s == kth
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True)))
    ids = (np.flatnonzero(chosen) % m).reshape(n, k)  # exactly k per row, ascending id within each row
    # descending score, ties by ascending id: a stable ascending sort of the reversed row, read backwards
    order = k - 1 - np.argsort(np.take_along_axis(s, ids, axis=1)[:, ::-1], axis=1, kind="stable")[:, ::-1]
    out = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    return out if np.ndim(scores) == 2 else out[0]
