r"""BM3 (Zhou et al., "Bootstrap Latent Representations for Multi-modal Recommendation", WWW 2023).

Self-supervised: no negative sampling. Online representations are LightGCN ID embeddings and projected
modality features; their *targets* are the same representations passed through dropout (the
"contrastive view generator") with the gradient stopped; a shared linear predictor :math:`p(\cdot)` maps
online representations toward the targets.

.. math::
    [h_u; h_i] = \frac{1}{L+1}\sum_{l=0}^{L} \hat A^l [E_U; E_I], \qquad
    h_i^m = X_m W_m + b_m, \qquad
    \tilde h = \operatorname{sg}(\operatorname{dropout}(h)), \qquad
    C(a, b) = 1 - \cos(a, b)

For an observed pair :math:`(u, i)` of the batch:

.. math::
    \mathcal L_{rec} = C(p(h_u), \tilde h_i) + C(p(h_i), \tilde h_u)
    \quad\text{(graph reconstruction)}

    \mathcal L_{align} = \sum_m C(p(h_i^m), \tilde h_i)
    \quad\text{(inter-modality alignment with the ID view)}

    \mathcal L_{mask} = \sum_m C(p(h_i^m), \tilde h_i^m)
    \quad\text{(intra-modality masked feature reconstruction)}

    \mathcal L = \mathcal L_{rec} + \mu (\mathcal L_{align} + \mathcal L_{mask})
    + \lambda\,\Omega, \qquad
    \Omega = (\lVert H_U \rVert_F + \lVert H_I \rVert_F) / I \ \text{(authors' code, default)} \ \text{or}\
    (\lVert h_u \rVert^2 + \lVert h_i \rVert^2) / 2B \ \text{(paper, batch)}

The score is :math:`\hat y_{ui} = p(h_u)^\top p(h_i)` (no dropout at evaluation). Paper defaults: d = 64,
L = 1, dropout 0.3, λ = 0.1; μ (= 1, the paper's unweighted sum) is ours to expose. The negatives the
shared sampler draws are ignored. ``id_residual`` adds the item ID embedding to the propagated item
representation, :math:`h_i \leftarrow h_i + e_i`, as the authors' public code does (the paper does not);
it is off by default.

``finetune_features`` (default) makes the item features :math:`X_m` trainable parameters, initialised from
the features ``prepare`` is given, as the authors' code does (``nn.Embedding.from_pretrained(...,
freeze=False)``; the paper does not say); False keeps them frozen. On ml100k-mm fine-tuning raised validation
Recall@20 from 0.264 to 0.294 (3 seeds, docs/benchmarks.md). ``prepare`` initialises them from its features
(a trainer's checkpoint, loaded after it, restores the fine-tuned values); a model from :meth:`load` keeps
its fine-tuned values, so fitting it trains on from them.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from recgoat.graphs.bipartite import normalized_bipartite, register_fixed
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.lightgcn import propagate
from recgoat.models.modalities import (item_features, modality_dims, model_item_features, present_modalities,
                                       set_item_features, tunable_item_features)
from recgoat.nn.losses import l2_reg


class BM3Config(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    """d: the width of the ID embeddings and projected features."""
    n_layers: int = Field(1, ge=0)
    """LightGCN layers over the user-item graph."""
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    """The target-view generator's dropout."""
    modal_weight: float = Field(1.0, ge=0.0)
    """μ: weight of the alignment and masked-reconstruction terms."""
    reg_weight: float = Field(0.1, ge=0.0)
    """λ: weight of the regulariser (reg_form)."""
    id_residual: bool = False
    """h_i + e_i, as in the authors' code (not in the paper)."""
    reg_form: Literal["authors", "batch_l2"] = "authors"
    """The regulariser: "authors" (their code, MMRec's EmbLoss): (‖H_U‖_F + ‖H_I‖_F) / I over every row,
    unsquared, the form their λ = 0.1 was tuned for; "batch_l2": the paper's squared L2 on the batch's rows,
    (‖h_u‖² + ‖h_i‖²) / 2B. On ml100k-mm "authors" is 11 % better in test Recall@20 (3 seeds) and stable, where
    "batch_l2" swings and collapses towards a few items (docs/benchmarks.md)."""
    finetune_features: bool = True
    """The item features X_m as trainable parameters (the authors' code); false: frozen."""
    legacy_defaults = {"finetune_features": False}  # BM3 models saved before session 13 had frozen features


def cosine_loss(online: Tensor, target: Tensor) -> Tensor:
    """``mean(1 − cos(online, target))``; the target carries no gradient."""
    return (1.0 - F.cosine_similarity(online, target.detach(), dim=-1)).mean()


@register("bm3")
class BM3(Recommender):
    Config = BM3Config
    needs_features = True

    def __init__(self, n_users: int, n_items: int, config: BM3Config | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        d = self.config.embedding_dim
        self.init_id_embeddings(d)
        present = present_modalities(dims, self.name)
        self.proj = nn.ModuleDict({m: nn.Linear(int(dims[f"{m}_dim"]), d) for m in present})
        for layer in self.proj.values():
            nn.init.xavier_normal_(layer.weight)
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.drop = nn.Dropout(self.config.dropout)
        self.feat_params = tunable_item_features(n_items, dims, present, self.config.finetune_features)
        register_fixed(self, "adj", None)  # Â: a buffer (follows .double() / .to()), never saved

    @property
    def feats(self) -> dict[str, Tensor]:
        """``X_m`` per modality: the fine-tuned parameters, or (``finetune_features`` off) the frozen features."""
        return model_item_features(self, self.feat_params)

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        return modality_dims(features, "bm3")

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        set_item_features(self, item_features(self, features), self.feat_params)  # fine-tuned, or frozen
        register_fixed(self, "adj", normalized_bipartite(self._train_csr))

    def online(self) -> tuple[Tensor, Tensor]:
        """LightGCN ``(h_U, h_I)`` before the predictor."""
        if self.adj is None:
            raise RuntimeError("bm3: call prepare(dataset, features) before training or scoring")
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        h = propagate(self.adj, ego, self.config.n_layers)
        h_i = h[self.n_users:]
        return h[: self.n_users], h_i + self.item_emb.weight if self.config.id_residual else h_i

    def embeddings(self) -> tuple[Tensor, Tensor]:
        h_u, h_i = self.online()
        return self.predictor(h_u), self.predictor(h_i)

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        h_u, h_i = self.online()
        u, i = h_u[users], h_i[pos]
        with torch.no_grad():  # targets: dropout views, stop-gradient
            t_u, t_i = self.drop(u), self.drop(i)
        rec = cosine_loss(self.predictor(u), t_i) + cosine_loss(self.predictor(i), t_u)
        align = torch.zeros(())
        mask = torch.zeros(())
        for m, layer in self.proj.items():
            h_m = layer(self.feats[m][pos])
            p_m = self.predictor(h_m)
            align = align + cosine_loss(p_m, t_i)
            mask = mask + cosine_loss(p_m, self.drop(h_m).detach())
        if self.config.reg_form == "authors":
            reg = (h_u.norm() + h_i.norm()) / self.n_items
        else:
            reg = l2_reg(u, i)
        loss = rec + self.config.modal_weight * (align + mask) + self.config.reg_weight * reg
        return {"loss": loss, "rec": rec, "align": align, "mask": mask, "reg": reg}
