r"""Top-k cosine-similarity graphs (item-item per modality, user-user over profiles) with faiss.

For row-normalised features :math:`\bar x_a = x_a/\lVert x_a\rVert`, each node keeps its ``k`` most
similar other nodes by :math:`\bar x_a^\top \bar x_b` (exact inner-product search, ``IndexFlatIP``,
queried in blocks), so no dense N×N similarity matrix is ever allocated. Rows with zero features
(e.g. a missing image) get no neighbours. The result is a sparse CSR matrix; ``symmetrize`` takes the
union of both directions, and ``normalize`` applies :math:`D^{-1/2} S D^{-1/2}`.
"""
from __future__ import annotations

import faiss
import numpy as np
import scipy.sparse as sp

from recgoat.graphs.bipartite import sym_normalize


def knn_graph(features: np.ndarray, k: int, mask: np.ndarray | None = None, symmetrize: bool = True,
              weighted: bool = False, block: int = 16384) -> sp.csr_matrix:
    """Sparse top-``k`` cosine kNN graph of the rows of ``features`` (``N × D``), self-loops excluded.

    Args:
        features: node features; rows of zeros (or ``mask == False``) are isolated.
        k: neighbours kept per node.
        mask: optional boolean validity per row.
        symmetrize: keep an edge if either endpoint chose the other.
        weighted: edge weights are the cosine similarities (else 1).
        block: query rows per faiss search (bounds the N×k result memory, never N×N).
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    norms = np.linalg.norm(x, axis=1)
    valid = norms > 0
    if mask is not None:
        valid &= mask.astype(bool)
    if n == 0 or k <= 0 or valid.sum() < 2:
        return sp.csr_matrix((n, n), dtype=np.float32)
    xn = np.zeros_like(x)
    xn[valid] = x[valid] / norms[valid, None]
    valid_idx = np.flatnonzero(valid)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(xn[valid_idx])
    kk = min(k + 1, len(valid_idx))
    rows, cols, vals = [], [], []
    for start in range(0, len(valid_idx), block):
        q = valid_idx[start:start + block]
        sims, nbr = index.search(xn[q], kk)
        nbr = valid_idx[nbr]
        # drop the node itself wherever it appears, then keep the first k
        not_self = nbr != q[:, None]
        order = np.argsort(~not_self, axis=1, kind="stable")
        nbr = np.take_along_axis(nbr, order, 1)[:, : kk - 1][:, :k]
        sims = np.take_along_axis(sims, order, 1)[:, : kk - 1][:, :k]
        rows.append(np.repeat(q, nbr.shape[1]))
        cols.append(nbr.ravel())
        vals.append(sims.ravel())
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals).astype(np.float32)
    if not weighted:
        v = np.ones_like(v)
    g = sp.csr_matrix((v, (r, c)), shape=(n, n))
    if symmetrize:
        g = g.maximum(g.T).tocsr()
    g.eliminate_zeros()
    return g


def normalized_knn_graph(features: np.ndarray, k: int, mask: np.ndarray | None = None) -> sp.csr_matrix:
    """Symmetric, symmetric-normalised kNN graph ready for propagation."""
    return sym_normalize(knn_graph(features, k, mask=mask, symmetrize=True))
