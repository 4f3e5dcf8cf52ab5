"""Full-ranking evaluation over all items.

Embeddings are computed once per evaluation (``model.embeddings()``), then users are scored in chunks:
``S = Z_U[chunk] Z_I^T``, training items (and validation items when scoring test) are set to −∞,
``torch.topk`` ranks, and hits are found by binary search of ``u·I + i`` among the held-out pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recgoat.datasets.dataset import Dataset
from recgoat.evaluation.metrics import metrics_from_hits

DEFAULT_KS = (5, 10, 20, 50)


@dataclass
class EvalResult:
    """Mean metrics plus the per-user values they average (for paired significance tests)."""

    means: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray  # internal ids of the evaluated users (those with held-out items)


class Evaluator:
    """Scores every user against every item and reports top-K metrics on one held-out split."""

    def __init__(self, mask: sp.csr_matrix, target: sp.csr_matrix, ks: tuple[int, ...] = DEFAULT_KS,
                 chunk_size: int = 256):
        if mask.shape != target.shape:
            raise ValueError("mask and target matrices differ in shape")
        self.mask = mask.tocsr()
        self.target = target.tocsr()
        self.ks = tuple(sorted(ks))
        self.chunk_size = chunk_size
        n_rel = np.diff(self.target.indptr)
        self.users = np.flatnonzero(n_rel > 0)
        self.n_relevant = torch.from_numpy(n_rel[self.users])
        # held-out pairs as sorted keys u·I + i: a ranked item is a hit iff its key is found here
        t = self.target.tocoo()
        self._target_keys = np.sort(t.row.astype(np.int64) * target.shape[1] + t.col)

    @classmethod
    def for_split(cls, dataset: Dataset, split: str = "valid", ks: tuple[int, ...] = DEFAULT_KS,
                  chunk_size: int = 256) -> "Evaluator":
        """Validation masks training items; test masks training and validation items."""
        mask = dataset.csr("train")
        if split == "test":
            mask = (mask + dataset.csr("valid")).tocsr()
            mask.data[:] = 1.0
        return cls(mask, dataset.csr(split), ks, chunk_size)

    @torch.no_grad()
    def evaluate_embeddings(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> EvalResult:
        n_items = item_emb.shape[0]
        max_k = min(max(self.ks), n_items)
        item_t = item_emb.t().contiguous()
        hits_all = []
        for start in range(0, len(self.users), self.chunk_size):
            users = self.users[start:start + self.chunk_size]
            scores = user_emb[torch.from_numpy(users)] @ item_t
            rows, cols = self.mask[users].nonzero()
            scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
            top = torch.topk(scores, max_k, dim=1).indices
            # numpy's searchsorted is several times faster than torch's on CPU here
            keys = users[:, None] * n_items + top.numpy()
            pos = np.minimum(np.searchsorted(self._target_keys, keys), len(self._target_keys) - 1)
            hits_all.append(torch.from_numpy(self._target_keys[pos] == keys))
        hits = torch.cat(hits_all) if hits_all else torch.zeros(0, max_k, dtype=torch.bool)
        per_user = metrics_from_hits(hits, self.n_relevant, self.ks)
        means = {k: float(v.mean()) if len(v) else float("nan") for k, v in per_user.items()}
        return EvalResult(means, {k: v.numpy() for k, v in per_user.items()}, self.users)

    def evaluate(self, model) -> EvalResult:
        """Evaluate any model of the shared API: embeddings once, in eval mode (dropout off)."""
        user_emb, item_emb = model.final_embeddings()
        return self.evaluate_embeddings(user_emb, item_emb)
