r"""BPR-MF (Rendle et al., UAI 2009): matrix factorisation trained with the BPR pairwise loss.

.. math::
    \hat y_{ui} = e_u^\top e_i, \qquad
    \mathcal L = -\sum \log \sigma(\hat y_{ui} - \hat y_{uj}) + \lambda \lVert \Theta_B \rVert^2
"""
from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.nn.losses import bpr_loss, l2_reg


class BPRMFConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    """d: the width of the ID embeddings."""
    reg_weight: float = Field(1e-4, ge=0.0)
    """L2 on the batch's embeddings."""


@register("bprmf")
class BPRMF(Recommender):
    Config = BPRMFConfig

    def __init__(self, n_users: int, n_items: int, config: BPRMFConfig | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        self.init_id_embeddings(self.config.embedding_dim)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        u, p, n = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
        bpr = bpr_loss(u, p, n)
        reg = l2_reg(u, p, n)
        return {"loss": bpr + self.config.reg_weight * reg, "bpr": bpr, "reg": reg}
