r"""Loss functions shared by the models."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bpr_loss(u: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    r"""Bayesian personalised ranking: :math:`-\operatorname{mean} \log \sigma(u\cdot p - u\cdot n)`."""
    return -F.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()


def l2_reg(*tensors: Tensor) -> Tensor:
    r""":math:`\frac{1}{2|B|} \sum \lVert x \rVert^2` over the batch's embeddings (LightGCN's convention)."""
    batch = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)
