r"""MGCN (Yu, Tan, Lu & Bao, "Multi-View Graph Convolutional Network for Multimedia Recommendation",
ACM MM 2023), written from the paper as we know it: its text was not at hand offline in session 26, so the
equations below are our reading from memory, not rechecked line by line; not audited against the authors' code.

**Behaviour-guided purifier.** Each modality's raw features :math:`X_m` (frozen) are transformed to
:math:`d` dimensions and used as a gate on the item ID embeddings, so only what the behaviour signal
carries survives:

.. math::
    \dot E_m = X_m W_1^{m\top} + b_1^m, \qquad
    \tilde E_m = E_I \odot \sigma(\dot E_m W_2^{m\top} + b_2^m) .

**Multi-view information encoder.** The user-item view is LightGCN on the ID embeddings over the
symmetric-normalised training graph :math:`\hat A`, :math:`\bar E^{id} = \frac{1}{L_{ui}+1}
\sum_{l=0}^{L_{ui}} \hat A^l [E_U; E_I]`. The item-item view of modality :math:`m` convolves the purified
item embeddings :math:`L_{ii}` times on a frozen top-k cosine kNN graph of the raw features,
:math:`\bar S^m = D^{-1/2} S^m D^{-1/2}` (one graph per modality, built once, never learnt), and a user's
modality embedding aggregates its training items through the normalised interactions
:math:`\tilde R = D_U^{-1/2} R D_I^{-1/2}` (the user-item block of :math:`\hat A`):

.. math::
    \bar E_{I}^m = (\bar S^m)^{L_{ii}} \tilde E_m, \qquad \bar E_{U}^m = \tilde R\, \bar E_{I}^m,
    \qquad \bar E^m = [\bar E_U^m; \bar E_I^m] .

**Behaviour-aware fuser.** Per node (user or item), attention over the modalities gives the
modality-shared part; the modality-specific parts are what is left; preference gates computed from the
node's ID view weigh each part:

.. math::
    \alpha_m = \operatorname{softmax}_m\big(q^\top \tanh(W_3 \bar e^m + b_3)\big), \qquad
    E^s = \sum_m \alpha_m \bar E^m, \qquad \tilde E^m = \bar E^m - E^s,

    P_m = \sigma(\bar E^{id} W_4^{m\top} + b_4^m), \qquad P_s = \sigma(\bar E^{id} W_4^{s\top} + b_4^s),
    \qquad E^{mul} = \frac{1}{|M|+1}\Big(P_s \odot E^s + \sum_m P_m \odot \tilde E^m\Big),

    E = \bar E^{id} + E^{mul}, \qquad \hat y_{ui} = e_u^\top e_i .

**Self-supervised auxiliary task.** InfoNCE between the behaviour (ID) view and the fused modality view,
for users and items, with cosine similarity :math:`s` and temperature :math:`\tau`; each of the batch's
distinct users (distinct positive items) is an anchor, every user (item) a candidate:

.. math::
    \mathcal L_C = \operatorname{mean}_{u \in B_U} -\log
        \frac{\exp(s(\bar e_u^{id}, e_u^{mul})/\tau)}{\sum_{v \in U} \exp(s(\bar e_u^{id}, e_v^{mul})/\tau)}
      + \operatorname{mean}_{i \in B_I} -\log
        \frac{\exp(s(\bar e_i^{id}, e_i^{mul})/\tau)}{\sum_{j \in I} \exp(s(\bar e_i^{id}, e_j^{mul})/\tau)},

    \mathcal L = \mathcal L_{bpr}(E) + \lambda_C \mathcal L_C + \lambda_E \lVert \Theta_B \rVert^2 .

Defaults and their source: d = 64, k = 10 neighbours, L_ui = 2 user-item layers, L_ii = 1 item-item layer,
τ = 0.2 (the paper's settings); λ_C = 0.01 and λ_E = 1e-4 are the values of the authors' published model
configuration (``MGCN.yaml``, read for its numbers only; the paper's grids could not be rechecked offline).
λ_E is applied in LightGCN's form (the batch's ego ID embeddings, ‖·‖²/2B, as our other peers). The learning
rate is the trainer's (the benchmark's shared 5e-3; the authors' configuration has 1e-3 with a step decay).

Where ours may differ from the paper (none measured): (1) the kNN graph is FREEDOM's here (unweighted, the
union of both directions, ``graphs/knn.py``), where the paper, as we recall it, keeps each item's top-k row
of the cosine matrix; (2) the paper writes :math:`\mathcal L_C` as a sum over all users and items; ours is a
mean over the batch's distinct anchors (a sum over a batch of 2048 would weigh it about 2000 times more and
swamp BPR at λ_C = 0.01), still against every user (item) as a candidate; (3) the features :math:`X_m` stay
frozen (we recall no fine-tuning of them in the paper); (4) no dropout anywhere (we recall none in the
paper), so training and evaluation compute the same embeddings. With one modality the attention weight is 1,
the shared part is that modality and its specific part is zero. The two affine maps :math:`W_1, W_2` of the
purifier compose to one affine map inside σ (the same function class as :math:`\sigma(X_m W^\top + b)`);
they are kept as two, as the paper writes them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor, nn

from recgoat.graphs.bipartite import normalized_bipartite, register_fixed, sym_spmm, to_torch_csr
from recgoat.graphs.knn import normalized_knn_graph
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.lgmrec import SparseOperator
from recgoat.models.lightgcn import propagate
from recgoat.models.modalities import (image_mask, item_features, modality_dims, present_modalities,
                                       register_item_features, registered_item_features)
from recgoat.nn.losses import bpr_loss, candidate_info_nce, l2_reg


class MGCNConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    n_ui_layers: int = Field(2, ge=0)  # L_ui: LightGCN layers of the user-item (ID) view
    n_ii_layers: int = Field(1, ge=0)  # L_ii: convolutions of the purified embeddings on each item-item graph
    knn_k: int = Field(10, ge=1)
    cl_weight: float = Field(0.01, ge=0.0)  # λ_C
    tau: float = Field(0.2, gt=0.0)
    reg_weight: float = Field(1e-4, ge=0.0)  # λ_E


class Purifier(nn.Module):
    """One modality's behaviour-guided purifier: ``E_I ⊙ σ(W_2 (W_1 x + b_1) + b_2)``."""

    def __init__(self, feat_dim: int, d: int):
        super().__init__()
        self.transform = nn.Linear(feat_dim, d)  # W_1, b_1: raw features → d
        self.gate = nn.Linear(d, d)  # W_2, b_2
        for layer in (self.transform, self.gate):
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, item_ids: Tensor, feats: Tensor) -> Tensor:
        return item_ids * torch.sigmoid(self.gate(self.transform(feats)))


@register("mgcn")
class MGCN(Recommender):
    Config = MGCNConfig
    needs_features = True

    def __init__(self, n_users: int, n_items: int, config: MGCNConfig | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        d = self.config.embedding_dim
        self.init_id_embeddings(d)
        present = present_modalities(dims, self.name)
        self.purifier = nn.ModuleDict({m: Purifier(int(dims[f"{m}_dim"]), d) for m in present})
        # attention over modalities (shared across them): q^T tanh(W_3 e + b_3)
        self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        # preference gates from the ID view: one per modality-specific part and one for the shared part
        self.prefer = nn.ModuleDict({m: nn.Linear(d, d) for m in [*present, "shared"]})
        for layer in [self.attention[0], self.attention[2], *self.prefer.values()]:
            nn.init.xavier_uniform_(layer.weight)
        # the graphs are buffers (they follow .double() / .to()), never saved: prepare() rebuilds them
        register_fixed(self, "adj", None)  # Â
        self.user_items: SparseOperator | None = None  # R̃ = D_U^-1/2 R D_I^-1/2 (U × I)
        for m in present:
            register_fixed(self, f"ii_{m}", None)  # S̄^m

    @property
    def feats(self) -> dict[str, Tensor]:
        """``X_m`` per modality present (buffers: they follow ``.double()`` / ``.to(device)``)."""
        return registered_item_features(self)

    @property
    def modalities(self) -> list[str]:
        return [m for m in self.purifier]

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        return modality_dims(features, "mgcn")

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        found = item_features(self, features)
        register_item_features(self, found)
        train = self._train_csr.astype(np.float32)
        train.data[:] = 1.0  # every stored entry is one edge, as in Â
        register_fixed(self, "adj", normalized_bipartite(train))
        d_u = np.asarray(train.sum(axis=1)).ravel()
        d_i = np.asarray(train.sum(axis=0)).ravel()
        inv_u = np.where(d_u > 0, 1.0 / np.sqrt(np.maximum(d_u, 1.0)), 0.0)
        inv_i = np.where(d_i > 0, 1.0 / np.sqrt(np.maximum(d_i, 1.0)), 0.0)
        r_norm = (sp.diags(inv_u) @ train @ sp.diags(inv_i)).tocsr().astype(np.float32)
        self.user_items = SparseOperator(r_norm, self.user_emb.weight)
        mask = image_mask(features, self.n_items, self.name)
        edges = 0
        for m in self.modalities:
            graph = normalized_knn_graph(found[m], self.config.knn_k, mask=mask if m == "image" else None)
            register_fixed(self, f"ii_{m}", to_torch_csr(graph))
            edges += int(graph.nnz)
        self.summary["item_item_edges"] = edges

    # ------------------------------------------------------------------ the views
    def id_view(self) -> Tensor:
        """``Ē^{id}``: LightGCN on the ID embeddings (users first)."""
        if self.adj is None:
            raise RuntimeError("mgcn: call prepare(dataset, features) before training or scoring")
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        return propagate(self.adj, ego, self.config.n_ui_layers)

    def purified(self) -> dict[str, Tensor]:
        """``Ẽ_m = E_I ⊙ σ(W_2 (W_1 X_m + b_1) + b_2)`` per modality (items)."""
        return {m: self.purifier[m](self.item_emb.weight, self.feats[m]) for m in self.modalities}

    def modality_view(self, m: str, purified: Tensor) -> Tensor:
        """``Ē^m``: items convolved on the frozen item-item graph, users aggregating them through R̃."""
        items = purified
        graph = getattr(self, f"ii_{m}")
        for _ in range(self.config.n_ii_layers):
            items = sym_spmm(graph, items)  # S̄^m is symmetric: its backward reuses it
        return torch.cat([self.user_items(items), items])

    def fuse(self, id_view: Tensor, views: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(E^{mul}, α, {m: Ẽ^m})``: the behaviour-aware fuser; α is (nodes × |M|), rows summing to 1."""
        stacked = torch.stack([views[m] for m in self.modalities], dim=1)  # N × |M| × d
        alpha = torch.softmax(self.attention(stacked).squeeze(-1), dim=1)  # N × |M|
        shared = (alpha.unsqueeze(-1) * stacked).sum(dim=1)
        specific = {m: views[m] - shared for m in self.modalities}
        out = torch.sigmoid(self.prefer["shared"](id_view)) * shared
        for m in self.modalities:
            out = out + torch.sigmoid(self.prefer[m](id_view)) * specific[m]
        return out / (len(self.modalities) + 1), alpha, specific

    def forward_all(self) -> tuple[Tensor, Tensor]:
        """``(Ē^{id}, E^{mul})`` for every node (users first)."""
        id_view = self.id_view()
        views = {m: self.modality_view(m, p) for m, p in self.purified().items()}
        fused, _, _ = self.fuse(id_view, views)
        return id_view, fused

    def embeddings(self) -> tuple[Tensor, Tensor]:
        id_view, fused = self.forward_all()
        z = id_view + fused
        return z[: self.n_users], z[self.n_users:]

    def contrastive(self, id_view: Tensor, fused: Tensor, users: Tensor, pos: Tensor) -> Tensor:
        """``L_C``: InfoNCE of the ID view (anchors: the batch's distinct users / positive items) against the
        fused modality view of every user / item."""
        nu, tau = self.n_users, self.config.tau
        uu, ii = torch.unique(users), torch.unique(pos)
        return (candidate_info_nce(id_view[uu], fused[:nu], uu, tau)
                + candidate_info_nce(id_view[nu + ii], fused[nu:], ii, tau))

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        id_view, fused = self.forward_all()
        z = id_view + fused
        z_u, z_i = z[: self.n_users], z[self.n_users:]
        bpr = bpr_loss(z_u[users], z_i[pos], z_i[neg])
        cl = self.contrastive(id_view, fused, users, pos) if self.config.cl_weight > 0 else torch.zeros(())
        reg = l2_reg(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        loss = bpr + self.config.cl_weight * cl + self.config.reg_weight * reg
        return {"loss": loss, "bpr": bpr, "cl": cl, "reg": reg}
