r"""LGMRec (Guo et al., "LGMRec: Local and Global Graph Learning for Multimodal Recommendation", AAAI 2024).

**Local graph embeddings.** Collaborative: LightGCN on ID embeddings over the user-item graph
:math:`\hat A`, :math:`E^{id} = \frac{1}{L+1}\sum_l \hat A^l [E_U; E_I]`. Per modality :math:`m`: item
features projected, :math:`E_I^m = X_m W_m`; a user's modality embedding is the mean over the items it
interacted with, :math:`e_u^m = \frac{1}{|N_u|}\sum_{i \in N_u} e_i^m`; the pair is propagated
LightGCN-style, :math:`E^m = \frac{1}{K+1}\sum_k \hat A^k [E_U^m; E_I^m]`. The ID and modality parts stay
decoupled (separate parameters) and are summed:

.. math::
    E^{lge} = E^{id} + \sum_m \operatorname{norm}(E^m) .

**Global hypergraph embeddings.** Per modality, :math:`A` learnable hyperedge embeddings in the raw
feature space, :math:`V^m \in R^{A \times d_m}` (:math:`d_m` the modality's feature size, e.g. 384 for
text); item and user dependencies on them come from the raw (frozen) item features :math:`X_m`, not from
the projection :math:`W_m`:

.. math::
    H_I^m = X_m V^{m\top} \in R^{I \times A}, \qquad H_U^m = R\, H_I^m \in R^{U \times A}

(R the binary training interactions), made (near-)one-hot by a Gumbel-softmax during training and a
plain softmax at evaluation, :math:`\tilde H = \operatorname{softmax}((H + g)/\tau)`,
:math:`g = \log\delta - \log(1-\delta)`, :math:`\delta \sim U(0,1)`. Hypergraph convolution
(items → hyperedges → nodes), starting from the collaborative item embeddings
:math:`E_I^{m,0} = E_I^{id}`, with dropout on :math:`\tilde H`:

.. math::
    E_I^{m,h+1} = \tilde H_I^m \tilde H_I^{m\top} E_I^{m,h}, \qquad
    E_U^{m,h+1} = \tilde H_U^m \tilde H_I^{m\top} E_I^{m,h}, \qquad
    E^{ghe} = \sum_m E^{m,H} .

Both products go through the A-dimensional hyperedge space, so nothing I×I is ever formed; the
dependencies cost one :math:`(I \times d_m)(d_m \times A)` product per step.

**Fusion and objective.**

.. math::
    E^* = E^{lge} + \alpha \operatorname{norm}(E^{ghe}), \qquad \hat y_{ui} = e_u^{*\top} e_i^*,

    \mathcal L = \mathcal L_{bpr} + \lambda_{cl} \mathcal L_{hcl} + \lambda_{reg}\lVert \Theta_B \rVert^2 .

The hypergraph contrastive loss aligns the two modalities' global embeddings
(:math:`g^m = E^{m,H}`, anchors from the image modality v, candidates from the text modality t). It is a
**sum** over the batch's distinct users :math:`B_U` (and distinct positive items :math:`B_I`), and every
user (every item) of the other modality is a candidate, not only the in-batch ones:

.. math::
    \mathcal L_{hcl} = \sum_{u \in B_U} -\log
        \frac{\exp(s(g_u^v, g_u^t)/\tau)}{\sum_{u' \in U} \exp(s(g_u^v, g_{u'}^t)/\tau)}
      + \sum_{i \in B_I} -\log
        \frac{\exp(s(g_i^v, g_i^t)/\tau)}{\sum_{i' \in I} \exp(s(g_i^v, g_{i'}^t)/\tau)},

with :math:`s` the cosine similarity (a :math:`|B_U| \times U` and a :math:`|B_I| \times I` logit matrix
per step). With more modalities it is summed over the pairs; with a single modality it is 0.

Defaults: d = 64, A = 4 hyperedges, α = 0.2, λ_cl = 1e-4, τ = 0.2, 2 collaborative and 2 modality
layers, 1 hypergraph layer, hyperedge dropout 0.5 (the authors' Baby configuration uses α = 0.3).
``reg_weight`` (not fixed by the paper) is ours. Differences from the authors' code, found by an audit in
session 9 and kept: their modality branch returns its last layer (ours the layer mean: within noise over
3 seeds on ml100k-mm) and their projection ``X_m W_m`` has no bias (ours does). Found by the audit of
session 16 and kept, none measured on ml100k-mm: (1) their contrastive sum runs over every row of the batch,
a user or item drawn twice counted twice; ours over the distinct ones, as the equation above says, which
weighs the term less where users and items repeat within a batch, as a smaller λ_cl would (on ml100k-mm's
training split a shuffled batch of 2048 holds 0.33 × 2048 distinct users and 0.38 × 2048 distinct items,
mean of 20 batches); (2) their
regulariser is ``1e-6`` times the unsquared norms of the batch's *fused* embeddings over the batch size,
ours ``reg_weight`` (1e-4) times the squared norms of the batch's ID (ego) embeddings over 2B, LightGCN's
form; (3) their hyperedge noise is Gumbel's, :math:`-\log(-\log\delta)`, half the variance of the logistic
noise above, and they draw it at evaluation too, so their rankings are random; ours are not.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from recgoat.graphs.bipartite import normalized_bipartite, register_fixed, spmm, to_torch_csr
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.lightgcn import propagate
from recgoat.models.modalities import (item_features, modality_dims, present_modalities,
                                       register_item_features, registered_item_features)
from recgoat.nn.losses import bpr_loss, candidate_info_nce, l2_reg


class LGMRecConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    """d: the width of the ID embeddings and projected features."""
    n_ui_layers: int = Field(2, ge=0)
    """Collaborative LightGCN layers."""
    n_mm_layers: int = Field(2, ge=0)
    """Modality LightGCN layers."""
    n_hyper_layers: int = Field(1, ge=1)
    """Hypergraph convolution layers of the global branch."""
    n_hyperedges: int = Field(4, ge=1)
    """Learnable hyperedges per modality."""
    alpha: float = Field(0.2, ge=0.0)
    """α: weight of the global (hypergraph) embeddings."""
    cl_weight: float = Field(1e-4, ge=0.0)
    """Weight of the contrastive term between the modalities' global embeddings."""
    tau: float = Field(0.2, gt=0.0)
    """Gumbel-softmax and InfoNCE temperature."""
    hyper_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    """Dropout on the hyperedge assignments."""
    reg_weight: float = Field(1e-4, ge=0.0)
    """L2 on the batch's ID embeddings (not fixed by the paper)."""


class _SpMM(torch.autograd.Function):
    """``M X`` for a fixed sparse (non-symmetric) ``M`` whose transpose is kept, so the backward pass
    ``Mᵀ G`` needs no per-call transposition."""

    @staticmethod
    def forward(ctx, m: Tensor, mt: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.mt = mt
        return spmm(m, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return None, None, spmm(ctx.mt, grad)


class SparseOperator(nn.Module):
    """A fixed sparse matrix and its transpose (both torch CSR) applied with :class:`_SpMM`.

    A module whose two matrices are non-persistent buffers: the model's ``.double()`` / ``.to(device)`` reaches
    them, and they never enter its ``state_dict``. ``like`` gives their dtype and device (the model's weights).
    """

    def __init__(self, m: sp.csr_matrix, like: Tensor | None = None):
        super().__init__()
        register_fixed(self, "m", to_torch_csr(m), like)
        register_fixed(self, "mt", to_torch_csr(m.T.tocsr()), like)

    def forward(self, x: Tensor) -> Tensor:
        return _SpMM.apply(self.m, self.mt, x) if x.requires_grad else spmm(self.m, x)


class HypergraphConv(nn.Module):
    """Learnable hyperedges ``V^m`` (A × d_m, in the modality's raw feature space) of one modality and the
    convolution through them."""

    def __init__(self, n_hyperedges: int, feat_dim: int, tau: float, dropout: float, n_layers: int):
        super().__init__()
        self.hyperedges = nn.Parameter(torch.empty(n_hyperedges, feat_dim))
        nn.init.xavier_uniform_(self.hyperedges)
        self.tau, self.n_layers = tau, n_layers
        self.drop = nn.Dropout(dropout)

    def assign(self, logits: Tensor) -> Tensor:
        """Gumbel-softmax over hyperedges in training; deterministic softmax at evaluation."""
        if self.training:
            delta = torch.rand_like(logits).clamp_(1e-10, 1 - 1e-10)
            logits = logits + torch.log(delta) - torch.log1p(-delta)
        return torch.softmax(logits / self.tau, dim=-1)

    def forward(self, item_feats: Tensor, interactions: SparseOperator,
                item_start: Tensor) -> tuple[Tensor, Tensor]:
        """Global ``(E_U^{m,H}, E_I^{m,H})`` from the raw item features ``X_m`` (which define the
        dependencies) and the collaborative item embeddings (the signal propagated)."""
        h_item = item_feats @ self.hyperedges.t()  # I × A: H_I = X_m Vᵀ, raw space (the paper's)
        h_user = interactions(h_item)  # U × A: H_U = R H_I
        a_item = self.drop(self.assign(h_item))
        a_user = self.drop(self.assign(h_user))
        e_item = item_start
        e_user = None
        for _ in range(self.n_layers):
            edge = a_item.t() @ e_item  # A × d: items → hyperedges
            e_user = a_user @ edge
            e_item = a_item @ edge
        return e_user, e_item


def hcl_loss(anchors: Tensor, candidates: Tensor, positive: Tensor, tau: float) -> Tensor:
    r"""Summed InfoNCE over all candidates:
    :math:`\sum_r -\log \frac{\exp(s(a_r, b_{p_r})/\tau)}{\sum_c \exp(s(a_r, b_c)/\tau)}`, s = cosine.

    ``anchors`` (B × d) are the batch's rows of one modality, ``candidates`` (N × d) every user (or item)
    of the other, ``positive`` (B,) the index of each anchor's own row among the candidates.
    """
    # every user (item) is a negative, as in the paper; a sum, not a batch mean (the paper's). Against many
    # candidates (Amazon Baby's 19,445 users) it runs in blocks, never making the B × N logits: nn.losses
    return candidate_info_nce(anchors, candidates, positive, tau, reduction="sum")


@register("lgmrec")
class LGMRec(Recommender):
    Config = LGMRecConfig
    needs_features = True

    def __init__(self, n_users: int, n_items: int, config: LGMRecConfig | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        cfg = self.config
        d = cfg.embedding_dim
        self.init_id_embeddings(d)
        present = present_modalities(dims, self.name)
        self.proj = nn.ModuleDict({m: nn.Linear(int(dims[f"{m}_dim"]), d) for m in present})  # W_m
        for layer in self.proj.values():
            nn.init.xavier_uniform_(layer.weight)
        self.hyper = nn.ModuleDict({m: HypergraphConv(cfg.n_hyperedges, int(dims[f"{m}_dim"]), cfg.tau,
                                                      cfg.hyper_dropout, cfg.n_hyper_layers) for m in present})
        # the graphs are buffers (they follow .double() / .to()), never saved: prepare() rebuilds them
        register_fixed(self, "adj", None)
        self.interactions: SparseOperator | None = None  # R (U × I), binary
        self.user_mean: SparseOperator | None = None  # D_U^{-1} R: mean over a user's items

    @property
    def feats(self) -> dict[str, Tensor]:
        """``X_m`` per modality present (buffers: they follow ``.double()`` / ``.to(device)``)."""
        return registered_item_features(self)

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        return modality_dims(features, "lgmrec")

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        found = item_features(self, features)
        register_item_features(self, found)
        train = self._train_csr.astype(np.float32)
        train.data[:] = 1.0
        register_fixed(self, "adj", normalized_bipartite(train))
        like = self.user_emb.weight  # the operators' dtype and device (a model made .double() before fitting)
        self.interactions = SparseOperator(train, like)
        deg = np.asarray(train.sum(axis=1)).ravel()
        self.user_mean = SparseOperator((sp.diags(1.0 / np.maximum(deg, 1.0)) @ train).tocsr().astype(np.float32),
                                        like)

    # ------------------------------------------------------------------ the three embedding kinds
    def collaborative(self) -> Tensor:
        """``E^{id}``: LightGCN on ID embeddings (users first)."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        return propagate(self.adj, ego, self.config.n_ui_layers)

    def modality_items(self) -> dict[str, Tensor]:
        """``E_I^m = X_m W_m`` per modality."""
        return {m: layer(self.feats[m]) for m, layer in self.proj.items()}

    def local_modality(self, item_modal: Tensor) -> Tensor:
        """``E^m``: users start as the mean of their items' modality embeddings; LightGCN propagation."""
        ego = torch.cat([self.user_mean(item_modal), item_modal])
        return propagate(self.adj, ego, self.config.n_mm_layers)

    def forward_all(self) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        """Fused ``E*`` (users first) and the per-modality global ``(E_U^{m,H}, E_I^{m,H})``."""
        if self.adj is None:
            raise RuntimeError("lgmrec: call prepare(dataset, features) before training or scoring")
        e_id = self.collaborative()
        item_modal = self.modality_items()
        local = e_id
        for m in self.proj:
            local = local + F.normalize(self.local_modality(item_modal[m]), dim=-1)
        item_start = e_id[self.n_users:]
        glob = {m: self.hyper[m](self.feats[m], self.interactions, item_start) for m in self.proj}
        e_ghe = sum(torch.cat(g) for g in glob.values())
        return local + self.config.alpha * F.normalize(e_ghe, dim=-1), glob

    def embeddings(self) -> tuple[Tensor, Tensor]:
        z, _ = self.forward_all()
        return z[: self.n_users], z[self.n_users:]

    def contrastive(self, glob: dict[str, tuple[Tensor, Tensor]], users: Tensor, pos: Tensor) -> Tensor:
        """``L_hcl``: for each modality pair, anchors from the later modality in (text, image) order (the
        paper's v), candidates all users / items of the earlier one (t); 0 with a single modality."""
        cl = torch.zeros(())
        mods = list(glob)  # insertion order follows MODALITIES = (text, image)
        uu, ii = torch.unique(users), torch.unique(pos)  # each anchor once: the paper sums over users
        tau = self.config.tau
        for a in range(len(mods)):
            for b in range(a + 1, len(mods)):
                (gu_t, gi_t), (gu_v, gi_v) = glob[mods[a]], glob[mods[b]]
                cl = cl + hcl_loss(gu_v[uu], gu_t, uu, tau) + hcl_loss(gi_v[ii], gi_t, ii, tau)
        return cl

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        z, glob = self.forward_all()
        z_u, z_i = z[: self.n_users], z[self.n_users:]
        bpr = bpr_loss(z_u[users], z_i[pos], z_i[neg])
        cl = self.contrastive(glob, users, pos) if self.config.cl_weight > 0 else torch.zeros(())
        reg = l2_reg(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        loss = bpr + self.config.cl_weight * cl + self.config.reg_weight * reg
        return {"loss": loss, "bpr": bpr, "cl": cl, "reg": reg}
