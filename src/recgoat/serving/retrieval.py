r"""Top-K retrieval over item embeddings with faiss, with already-seen items filtered out.

A user's ranking is :math:`\operatorname{top\text{-}K}_i\; z_u^\top z_i` (maximum inner product search).
``flat`` (``IndexFlatIP``) is exact: it returns the same top-K as brute-force scoring. ``hnsw``
(Malkov & Yashunin, 2018) and ``ivf`` (inverted lists over a k-means coarse quantiser) are approximate,
for large catalogues; :func:`recall_vs_exact` measures what they lose.

``hnsw-l2`` is HNSW in L2 after the MIPS → nearest-neighbour reduction of Bachrach et al. (RecSys 2014):
item ``x`` becomes ``[x, sqrt(M² − ‖x‖²)]`` (``M`` the largest item norm), query ``q`` becomes ``[q, 0]``,
and ``‖q' − x'‖² = ‖q‖² + M² − 2 q·x`` ranks items as ``q·x`` does; the scores returned are the inner
products, recomputed for the candidates. Inner product is no metric, and an HNSW graph built on it can
leave items of small norm hard to reach; the reduction makes the search a true nearest-neighbour one but
puts every query far from every item. Neither wins everywhere (docs/benchmarks.md, recall@100 as served on
a 100,000-item catalogue: LightGCN embeddings ``hnsw`` 0.90, ``hnsw-l2`` 0.93; BPR-MF 0.97 and 0.82;
``benchmarks/serve_load.py --recall``), which is why the service reports the recall of the index it serves.

Seen items are removed by over-fetching: search ``k + max |seen|`` candidates (one more for ``flat``),
mask the seen ones with a vectorised membership test (pairs encoded as ``row * I + item``) and keep the
first ``k`` survivors of each row; a row an approximate index leaves short of items that exist is ranked
exactly instead. No per-request model forward pass: the item matrix is precomputed at export.
"""
from __future__ import annotations

from typing import Sequence

import faiss
import numpy as np

from recgoat.errors import ConfigError
from recgoat.evaluation.ranking import top_k
from recgoat.strict import is_int

INDEX_KINDS = ("flat", "hnsw", "hnsw-l2", "ivf")


class ItemIndex:
    """A faiss inner-product index over an ``I × d`` item matrix."""

    def __init__(self, item_emb: np.ndarray, kind: str = "flat", *, hnsw_m: int = 32, ef_search: int = 128,
                 nlist: int | None = None, nprobe: int = 16, seed: int = 2026):
        if kind not in INDEX_KINDS:
            raise ConfigError(f"index kind {kind!r}: expected one of {', '.join(INDEX_KINDS)}")
        x = _as_matrix(item_emb, "item matrix")
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ConfigError(f"item matrix must be a non-empty 2-D array, got shape {x.shape}")
        if not np.isfinite(x).all():  # faiss would rank NaN items nowhere and answer empty lists
            raise ConfigError("item matrix holds NaN or inf")
        # faiss aborts the process on an HNSW graph of M < 2 and raises its own errors for these
        if kind in ("hnsw", "hnsw-l2") and not (is_int(hnsw_m) and hnsw_m >= 2):
            raise ConfigError(f"hnsw_m must be an integer >= 2, got {hnsw_m!r}")
        if kind in ("hnsw", "hnsw-l2") and not (is_int(ef_search) and ef_search >= 1):
            raise ConfigError(f"ef_search must be an integer >= 1, got {ef_search!r}")
        if kind == "ivf" and not (is_int(nprobe) and nprobe >= 1):
            raise ConfigError(f"nprobe must be an integer >= 1, got {nprobe!r}")
        if kind == "ivf" and nlist is not None and not (is_int(nlist) and 1 <= nlist <= x.shape[0]):
            raise ConfigError(f"nlist must be an integer in 1..{x.shape[0]} (the number of items), got {nlist!r}")
        self.kind, self.n_items, self.dim = kind, x.shape[0], x.shape[1]
        self.items = x  # the items for the exact fallback (the caller's array)
        # a plain int: faiss's SWIG setters refuse a numpy integer (a bare TypeError), as for hnsw_m below
        self.ef_search = int(ef_search) if is_int(ef_search) else ef_search
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif kind in ("hnsw", "hnsw-l2"):
            l2 = kind == "hnsw-l2"
            hnsw_m = int(hnsw_m)  # a plain int: faiss's SWIG constructor refuses a numpy integer (a bare TypeError)
            index = faiss.IndexHNSWFlat(self.dim + l2, hnsw_m, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(2 * hnsw_m, 40)
            index.hnsw.efSearch = self.ef_search
            if l2:
                x = _augment_items(x)
        else:
            nlist = int(nlist or max(1, min(int(4 * np.sqrt(self.n_items)), self.n_items // 39 or 1)))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(x)
            index.nprobe = min(int(nprobe), nlist)
            self._quantizer = quantizer  # keep alive: the IVF index holds a raw pointer to it
        index.add(x)
        self.index = index

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query row, skipping ``exclude[r]`` for row ``r``.

        Returns ``(ids, scores)`` of shape ``[n, k]``; rows with fewer than ``k`` candidates left are
        padded with id ``-1`` and score ``-inf``.
        """
        q = self._queries(queries)
        n = q.shape[0]
        if not is_int(k) or k < 1:  # int() made 2.7 a silent 2 and "3" a 3
            raise ConfigError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        exclude = _check_exclude(exclude, n, self.n_items)
        n_excl = np.array([len(e) for e in exclude], np.int64) if exclude is not None else np.zeros(n, np.int64)
        # flat: one candidate past what is needed, whose score tells whether a tie at the k-th place can go on
        # past the candidates (without it, every list whose seen items all ranked high was re-ranked exactly)
        fetch = int(min(self.n_items, k + (n_excl.max() if n else 0) + (self.kind == "flat")))
        # a beam narrower than fetch would return fewer results (padding): widen it for this search only
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch)) if "hnsw" in self.kind else None
        if self.kind == "hnsw-l2":
            _, ids = self.index.search(np.hstack([q, np.zeros((n, 1), np.float32)]), fetch, params=params)
            scores = self._inner_products(q, ids)
        else:
            scores, ids = self.index.search(q, fetch, params=params)
        keep = self._keep(ids, exclude, n_excl)
        if self.kind != "flat":
            # an approximate index may find fewer than fetch candidates (IVF's nprobe lists hold too few, HNSW
            # cannot reach them), leaving a heavy user's list short of items that exist: rank those rows exactly
            short = np.flatnonzero(keep.sum(axis=1) < np.minimum(k, self.n_items - n_excl))
            if len(short):
                ids[short], scores[short] = brute_force_topk(q[short], self.items, fetch)
                keep = self._keep(ids, exclude, n_excl)
        # kept candidates first, by score, equal scores by ascending id (the rule of evaluation.ranking.top_k)
        order = np.lexsort((ids, -scores, ~keep), axis=1)[:, :k]
        out_ids = np.take_along_axis(ids, order, axis=1)
        out_scores = np.take_along_axis(scores, order, axis=1)
        valid = np.take_along_axis(keep, order, axis=1)
        out_ids = np.where(valid, out_ids, -1)
        out_scores = np.where(valid, out_scores, -np.inf).astype(np.float32)
        if self.kind == "flat" and fetch < self.n_items:
            # a tie at the k-th place that reaches the last fetched score may go on past the candidates, where
            # faiss chose among equal scores its own way: those rows are ranked exactly, by the same rule
            last = out_scores[:, min(k, out_scores.shape[1]) - 1]
            redo = np.flatnonzero(valid[:, -1] & (last == scores[:, -1]))
            if len(redo):
                sub = [exclude[r] for r in redo] if exclude is not None else None
                r_ids, r_scores = brute_force_topk(q[redo], self.items, k, sub)
                finite = np.isfinite(r_scores)
                out_ids[redo, :r_ids.shape[1]] = np.where(finite, r_ids, -1)
                out_scores[redo, :r_ids.shape[1]] = np.where(finite, r_scores, -np.inf)
        if out_ids.shape[1] < k:  # fewer items than k in the whole catalogue
            pad = k - out_ids.shape[1]
            out_ids = np.pad(out_ids, ((0, 0), (0, pad)), constant_values=-1)
            out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return out_ids, out_scores

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        """``queries`` as a contiguous float32 ``[n, d]`` matrix, or a ConfigError (faiss asserts on a wrong
        width, and answers a NaN query with an empty list)."""
        q = _as_matrix(queries, "queries")
        q = np.atleast_2d(q) if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ConfigError(f"queries must be a {self.dim}-wide vector or [n, {self.dim}] matrix (the item "
                              f"embedding size), got shape {q.shape}")
        if not np.isfinite(q).all():
            raise ConfigError("queries hold NaN or inf")
        return q

    def _inner_products(self, q: np.ndarray, ids: np.ndarray, block: int = 1 << 22) -> np.ndarray:
        """``q[r] · items[ids[r, j]]`` (``-inf`` where faiss padded with ``-1``), gathering at most ``block``
        values at a time."""
        scores = np.full(ids.shape, -np.inf, np.float32)
        step = max(1, block // max(1, ids.shape[1] * self.dim))
        for s in range(0, len(ids), step):
            sub = ids[s:s + step]
            got = np.einsum("nd,nkd->nk", q[s:s + step], self.items[np.maximum(sub, 0)])
            scores[s:s + step] = np.where(sub >= 0, got, -np.inf)
        return scores

    def _keep(self, ids: np.ndarray, exclude: Sequence[np.ndarray] | None, n_excl: np.ndarray) -> np.ndarray:
        """Which candidates survive: not excluded for their row, and not faiss's ``-1`` padding."""
        n = ids.shape[0]
        if exclude is not None and n == 1 and n_excl[0] > 0:
            # one query (the serving case): a boolean item mask beats a sort-based membership test
            banned_mask = np.zeros(self.n_items, dtype=bool)
            banned_mask[np.asarray(exclude[0], np.int64)] = True
            keep = ~banned_mask[np.maximum(ids, 0)]
        elif exclude is not None and n_excl.sum() > 0:
            rows = np.repeat(np.arange(n, dtype=np.int64), n_excl)
            banned = rows * self.n_items + np.concatenate([np.asarray(e, np.int64) for e in exclude])
            keep = ~np.isin(np.arange(n, dtype=np.int64)[:, None] * self.n_items + ids, banned)
        else:
            keep = np.ones_like(ids, dtype=bool)
        return keep & (ids >= 0)


def _as_matrix(values: object, what: str) -> np.ndarray:
    """``values`` as a contiguous float32 array, or a ConfigError for text, objects and the like."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":  # None in an object array became a NaN, "a" a numpy ValueError
        raise ConfigError(f"{what} must hold numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_exclude(exclude: Sequence[np.ndarray] | None, n: int, n_items: int) -> list[np.ndarray] | None:
    """One integer id array per query row, each id in ``0..n_items-1``, duplicates dropped; a ConfigError
    otherwise: a negative id excluded an item from the end, and with several rows an id past the
    catalogue excluded an item of the next row (pairs are encoded as ``row * I + item``)."""
    if exclude is None:
        return None
    if len(exclude) != n:
        raise ConfigError(f"exclude must hold one id list per query row: {len(exclude)} lists for {n} rows")
    out = []
    for r, e in enumerate(exclude):
        arr = np.asarray(list(e) if isinstance(e, (set, frozenset)) else e)
        if arr.size == 0:
            out.append(np.zeros(0, np.int64))
            continue
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ConfigError(f"exclude[{r}] must be a 1-D array of integer item ids, got {arr.dtype} "
                              f"of shape {arr.shape}")
        if arr.min() < 0 or arr.max() >= n_items:
            raise ConfigError(f"exclude[{r}] holds item id(s) outside 0..{n_items - 1}")
        # unique: a repeated id counted twice made an approximate index's short list look complete
        out.append(np.unique(arr.astype(np.int64)))
    return out


def _augment_items(x: np.ndarray) -> np.ndarray:
    """``[x, sqrt(M² − ‖x‖²)]``: every row of norm ``M``, so L2 order for a query ``[q, 0]`` is ``q·x`` order."""
    norm2 = np.einsum("nd,nd->n", x, x, dtype=np.float64)
    extra = np.sqrt(np.maximum(norm2.max() - norm2, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([x, extra[:, None]]))


def brute_force_topk(queries: np.ndarray, item_emb: np.ndarray, k: int,
                     exclude: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by a dense ``[n, I]`` score matrix (the reference the indexes are checked against);
    equal scores by ascending item id."""
    scores = np.atleast_2d(queries).astype(np.float32) @ np.asarray(item_emb, np.float32).T
    exclude = _check_exclude(exclude, scores.shape[0], scores.shape[1])
    if exclude is not None:
        rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
        cols = np.concatenate([np.asarray(e, np.int64) for e in exclude]) if len(rows) else np.zeros(0, np.int64)
        scores[rows, cols] = -np.inf
    ids = top_k(scores, k)
    return ids, np.take_along_axis(scores, ids, axis=1)


def recall_vs_exact(approx: ItemIndex, exact: ItemIndex, queries: np.ndarray, k: int,
                    exclude: Sequence[np.ndarray] | None = None) -> float:
    """Mean |approx top-k ∩ exact top-k| / |exact top-k| over the query rows.

    ``exclude`` (each row's seen items) measures the lists as served: the service over-fetches past them,
    which asks an approximate index for far more than ``k`` candidates. A row whose exact list is shorter
    than ``k`` (a small catalogue) is measured against that list, so an exact index always scores 1.0.
    """
    a, _ = approx.search(queries, k, exclude)
    e, _ = exact.search(queries, k, exclude)
    hits = ((a[:, :, None] == e[:, None, :]) & (e[:, None, :] >= 0)).any(axis=2).sum(axis=1)
    n = (e >= 0).sum(axis=1)
    return float(np.mean(np.where(n > 0, hits / np.maximum(n, 1), 1.0)))
