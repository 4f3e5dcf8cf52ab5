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


def metrics_from_hits(hits: torch.Tensor, n_relevant: torch.Tensor, ks: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-user metrics from a ``[n_users, max(ks)]`` hit matrix (ranked) and held-out set sizes.

    Returns ``{"recall@10": tensor[n_users], ...}`` (float64). Users with ``n_relevant == 0`` get NaN.
    """
    hits = hits.to(torch.float64)
    n_rel = n_relevant.to(torch.float64)
    max_k = hits.shape[1]
    ranks = torch.arange(1, max_k + 1, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = hits.cumsum(1)
    dcg = (hits * discount).cumsum(1)
    idcg_table = discount.cumsum(0)  # idcg_table[m-1] = ideal DCG with m relevant items in the top
    prec_at_r = cum_hits / ranks
    ap_sum = (hits * prec_at_r).cumsum(1)
    valid = n_rel > 0
    safe_rel = torch.where(valid, n_rel, torch.ones_like(n_rel))
    nan = torch.full_like(n_rel, float("nan"))
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        if k > max_k:
            raise ValueError(f"K={k} exceeds the {max_k} ranked items")
        h = cum_hits[:, k - 1]
        m = torch.clamp(safe_rel, max=k)
        ideal = idcg_table[(m - 1).long()]
        vals = {
            "recall": h / safe_rel,
            "precision": h / k,
            "hit": (h > 0).to(torch.float64),
            "ndcg": dcg[:, k - 1] / ideal,
            "map": ap_sum[:, k - 1] / m,
        }
        for name in METRICS:
            out[f"{name}@{k}"] = torch.where(valid, vals[name], nan)
    return out
