r"""Top-K ranking metrics with binary relevance, computed for many users at once.

For a user with held-out set :math:`T` and hit indicators :math:`h_r \in \{0,1\}` at ranks
:math:`r = 1..K`:

.. math::
    \mathrm{Recall@K} = \frac{\sum_r h_r}{|T|}, \quad
    \mathrm{Precision@K} = \frac{\sum_r h_r}{K}, \quad
    \mathrm{Hit@K} = [\sum_r h_r > 0],

    \mathrm{NDCG@K} = \frac{\sum_r h_r / \log_2(r+1)}{\sum_{r=1}^{\min(|T|,K)} 1/\log_2(r+1)}, \quad
    \mathrm{MAP@K} = \frac{1}{\min(|T|,K)} \sum_r h_r \cdot \mathrm{Precision@r}.

Users with no held-out item are excluded from the averages (METHOD.md §6).
"""
from __future__ import annotations

import torch

METRICS = ("recall", "ndcg", "precision", "hit", "map")


def metrics_from_hits(hits: torch.Tensor, n_relevant: torch.Tensor, ks: tuple[int, ...],
                      empty_after: bool = False) -> dict[str, torch.Tensor]:
    """Per-user metrics from a ``[n_users, max(ks)]`` hit matrix (ranked) and held-out set sizes.

    Returns ``{"recall@10": tensor[n_users], ...}`` (float64). Users with ``n_relevant == 0`` get NaN.
    ``empty_after``: a K beyond the matrix's columns reads the slots past them as empty (never hits), as the
    evaluator's K beyond the catalogue; else such a K is a ValueError.
    """
    top = max(ks, default=0)
    if top > hits.shape[1] and not empty_after:
        raise ValueError(f"K={top} exceeds the {hits.shape[1]} ranked items")
    if hits.shape[1] == 0:  # nothing ranked: one empty slot keeps the indexing below uniform
        hits = hits.new_zeros(len(hits), 1)
    hits = hits.to(torch.float64)
    n_rel = n_relevant.to(torch.float64)
    max_k = hits.shape[1]
    # the ideal DCG reaches min(|T|, K) ranks, past the hit columns when K is; no [n_users, K] padding is
    # built for those (K = 10^6 of 1,682 items padded ~8 GB per float64 matrix)
    n_ideal = max(max_k, min(top, int(n_rel.max()) if len(n_rel) else 0))
    ranks = torch.arange(1, n_ideal + 1, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1.0)
    idcg_table = discount.cumsum(0)  # idcg_table[m-1] = ideal DCG with m relevant items in the top
    discount, ranks = discount[:max_k], ranks[:max_k]
    cum_hits = hits.cumsum(1)
    dcg = (hits * discount).cumsum(1)
    prec_at_r = cum_hits / ranks
    ap_sum = (hits * prec_at_r).cumsum(1)
    valid = n_rel > 0
    safe_rel = torch.where(valid, n_rel, torch.ones_like(n_rel))
    nan = torch.full_like(n_rel, float("nan"))
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        at = min(k, max_k) - 1  # empty slots past the columns add nothing to the running sums
        h = cum_hits[:, at]
        m = torch.clamp(safe_rel, max=k)
        ideal = idcg_table[(m - 1).long()]
        vals = {
            "recall": h / safe_rel,
            "precision": h / k,
            "hit": (h > 0).to(torch.float64),
            "ndcg": dcg[:, at] / ideal,
            "map": ap_sum[:, at] / m,
        }
        for name in METRICS:
            out[f"{name}@{k}"] = torch.where(valid, vals[name], nan)
    return out
