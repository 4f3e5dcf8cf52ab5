r"""VBPR (He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016).

Matrix factorisation whose item side is extended by a linear projection of the item's content
features :math:`f_i`. The paper's predictor is

.. math::
    \hat x_{ui} = \alpha + \beta_u + \beta_i + \gamma_u^\top \gamma_i + \theta_u^\top (E f_i) + \beta'^\top f_i

with ID factors :math:`\gamma_u, \gamma_i \in R^{K}`, the user's visual preference
:math:`\theta_u \in R^{K'}`, the projection :math:`E \in R^{K' \times F}` and the visual bias
:math:`\beta' \in R^F`. The global offset :math:`\alpha` and the user bias :math:`\beta_u` cancel in BPR's
:math:`\hat x_{ui} - \hat x_{uj}` and in a user's ranking, so they are left out; the rest is computed as
one inner product of concatenations,

.. math::
    z_u = [\gamma_u \,\|\, \theta_u \,\|\, 1], \qquad
    z_i = [\gamma_i \,\|\, E f_i \,\|\, \beta_i + \beta'^\top f_i],

(the last coordinate only when ``use_bias``), trained with BPR (mini-batch Adam through the shared
trainer) plus :math:`\lambda \frac{1}{2|B|}\sum_B (\lVert\gamma_u\rVert^2 + \lVert\theta_u\rVert^2
+ \lVert z_i\rVert^2 + \lVert z_j\rVert^2)` on the batch's vectors.

Paper defaults (items marked † are as commonly cited and not re-checked against the paper's text):
image features only, :math:`f_i` the F = 4096-d
output of a pre-trained CNN; BPR learning by SGD on bootstrap-sampled (u, i, j) triples; a fixed total
dimension K + K' = 20 in the main comparisons, split K = K' = 10 †; L2 :math:`\lambda_\Theta = 10` on
the ID / preference parameters and :math:`\lambda_E = 0` on E †; learning rate: not verified.

Ours: :math:`f_i` is the concatenation of the available text and/or image features (the paper has images
only); K = K' = 64 (``embedding_dim``, ``content_dim``) because every model in the toolkit uses d = 64
per embedding table for a like-for-like comparison (MMRec's protocol does the same); ``reg_weight`` =
1e-4 on the batch's vectors above (so E is regularised only through :math:`E f_i` of the sampled items,
and the biases through :math:`\beta_i + \beta'^\top f_i`), set like the other models' rather than the
paper's per-parameter λ's, which belong to per-sample SGD on 4096-d CNN features. The paper's split is
expressible with the existing fields (``embedding_dim=10, content_dim=10``), so no option is added.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from recgoat.graphs.bipartite import register_fixed
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.modalities import MODALITIES, item_features, modality_dims, present_modalities
from recgoat.nn.losses import bpr_loss, l2_reg

class VBPRConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    """K: ID factors."""
    content_dim: int = Field(64, ge=1)
    """K': content-preference factors."""
    use_bias: bool = True
    """Item bias β_i and content bias β'ᵀf_i."""
    reg_weight: float = Field(1e-4, ge=0)
    """L2 on the batch's user and item vectors (the module docstring says which)."""


@register("vbpr")
class VBPR(Recommender):
    Config = VBPRConfig
    needs_features = True

    def __init__(self, n_users: int, n_items: int, config: VBPRConfig | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        cfg = self.config
        self.feat_dim = sum(int(dims[f"{m}_dim"]) for m in present_modalities(dims, self.name))
        self.user_id = nn.Embedding(n_users, cfg.embedding_dim)
        self.user_content = nn.Embedding(n_users, cfg.content_dim)
        self.item_id = nn.Embedding(n_items, cfg.embedding_dim)
        self.project = nn.Linear(self.feat_dim, cfg.content_dim, bias=False)  # E
        for emb in (self.user_id, self.user_content, self.item_id):
            nn.init.xavier_uniform_(emb.weight)
        nn.init.xavier_uniform_(self.project.weight)
        if cfg.use_bias:
            self.item_bias = nn.Parameter(torch.zeros(n_items))
            self.content_bias = nn.Linear(self.feat_dim, 1, bias=False)  # beta'
            nn.init.zeros_(self.content_bias.weight)
        # f_i: set by prepare, not saved (a loaded model scores from its saved final embeddings)
        self.register_buffer("content", torch.zeros(0, self.feat_dim), persistent=False)

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        return modality_dims(features, "vbpr")

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        found = item_features(self, features)
        # in the weights' dtype and device (a model made .double() before prepare): assigning kept it float32
        register_fixed(self, "content", torch.from_numpy(np.concatenate([found[m] for m in MODALITIES if m in found],
                                                                        axis=1)))

    def _items(self, idx: Tensor | None) -> Tensor:
        """Item vectors ``[γ_i ‖ E f_i (‖ β_i + β'ᵀ f_i)]`` for ``idx`` (all items when None)."""
        if self.content.shape[0] != self.n_items:
            raise RuntimeError("vbpr: call prepare(dataset, features) before training or scoring")
        f = self.content if idx is None else self.content[idx]
        ids = self.item_id.weight if idx is None else self.item_id(idx)
        parts = [ids, self.project(f)]
        if self.config.use_bias:
            bias = self.item_bias if idx is None else self.item_bias[idx]
            parts.append((bias + self.content_bias(f).squeeze(-1)).unsqueeze(-1))
        return torch.cat(parts, dim=-1)

    def _users(self, idx: Tensor | None) -> Tensor:
        """User vectors ``[γ_u ‖ θ_u (‖ 1)]``."""
        gamma = self.user_id.weight if idx is None else self.user_id(idx)
        theta = self.user_content.weight if idx is None else self.user_content(idx)
        parts = [gamma, theta]
        if self.config.use_bias:
            parts.append(torch.ones(gamma.shape[0], 1, dtype=gamma.dtype, device=gamma.device))
        return torch.cat(parts, dim=-1)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self._users(None), self._items(None)

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        u, p, n = self._users(users), self._items(pos), self._items(neg)
        bpr = bpr_loss(u, p, n)
        # the constant 1 of the bias coordinate is not a parameter: regularise the learnt parts only
        k = self.config.embedding_dim + self.config.content_dim
        reg = l2_reg(u[:, :k], p, n)
        return {"loss": bpr + self.config.reg_weight * reg, "bpr": bpr, "reg": reg}
