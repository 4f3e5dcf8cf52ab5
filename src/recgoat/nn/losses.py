r"""Loss functions shared by the models."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bpr_loss(u: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    r"""Bayesian personalised ranking: :math:`-\operatorname{mean} \log \sigma(u\cdot p - u\cdot n)`."""
    return -F.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()


def candidate_info_nce(anchors: Tensor, candidates: Tensor, positive: Tensor, tau: float,
                       reduction: str = "mean") -> Tensor:
    r"""InfoNCE of each anchor against every candidate, cosine similarity at temperature ``tau``:
    :math:`-\log \frac{\exp(s(a_r, b_{p_r})/\tau)}{\sum_c \exp(s(a_r, b_c)/\tau)}` per anchor, averaged
    (``reduction="mean"``, MGCN) or summed (``"sum"``, LGMRec's paper).

    ``anchors`` (B × d), ``candidates`` (N × d, e.g. every user or item), ``positive`` (B,) the index of each
    anchor's own row among the candidates. The logits are B × N, never N × N.
    """
    a, b = F.normalize(anchors, dim=-1), F.normalize(candidates, dim=-1)
    return F.cross_entropy(a @ b.t() / tau, positive, reduction=reduction)


def l2_reg(*tensors: Tensor) -> Tensor:
    r""":math:`\frac{1}{2|B|} \sum \lVert x \rVert^2` over the batch's embeddings (LightGCN's convention)."""
    batch = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)
