r"""FREEDOM (Zhou & Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM MM 2023).

**Frozen item-item graph.** For each modality :math:`m`, a top-k cosine kNN graph of the raw features
:math:`X_m`, unweighted, symmetrised (the union of both directions) and without self-loops, normalised
:math:`\hat S^m = D^{-1/2} S^m D^{-1/2}` by the union's degrees, and mixed

.. math::
    S = \sum_m \alpha_m \hat S^m, \qquad \alpha_v = \text{image\_weight}, \ \alpha_t = 1 - \alpha_v

(renormalised over the modalities present). It is built once and never learnt. The authors' code differs
(found by an audit in session 9; ours kept, numbers within noise on ml100k-mm): each item keeps its own
top-k row (directed, the item itself included), normalised so every entry is 1/k; and it fine-tunes the
raw feature tables, which are frozen here.

**Denoised user-item graph.** Every epoch, a fraction :math:`1-\rho` of the training edges is kept,
sampled without replacement with probability :math:`p_{ui} \propto 1/\sqrt{d_u d_i}` (degree-sensitive:
edges between popular nodes are pruned most); the kept edges are re-normalised, :math:`\hat A_\rho`.
At evaluation the full graph :math:`\hat A` is used (no pruning).

**Representations.** Item ID embeddings convolved :math:`L_{ii}` times on :math:`S`,
:math:`h_i = (S^{L_{ii}} E_I)_i`; LightGCN over :math:`\hat A_\rho`,
:math:`[\bar e_u; \bar e_i] = \frac{1}{L+1}\sum_{l=0}^{L} \hat A_\rho^l [E_U; E_I]`; then

.. math::
    z_u = \bar e_u, \qquad z_i = \bar e_i + h_i, \qquad \hat y_{ui} = z_u^\top z_i .

**Objective.** BPR on :math:`z` plus BPR terms of the user against projected modality features
:math:`x_i^m W_m`:

.. math::
    \mathcal L = \mathcal L_{bpr}(z) + \lambda \sum_m \mathcal L_{bpr}(z_u, x_i^m W_m, x_j^m W_m)
    + \lambda_{reg} \lVert \Theta_B \rVert^2 .

Paper defaults: d = 64, k = 10, L = 2, L_ii = 1, ρ = 0.8, α_v = 0.1, λ = 1e-3 (the modality-loss weight;
the paper adds no other L2 term, so ``reg_weight`` defaults to 0).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor, nn

from recgoat.graphs.bipartite import (bipartite_adjacency, normalized_bipartite, register_fixed, sym_normalize,
                                      sym_spmm, to_torch_csr)
from recgoat.graphs.knn import normalized_knn_graph
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.lightgcn import propagate
from recgoat.models.modalities import (image_mask, item_features, modality_dims, present_modalities,
                                       register_item_features, registered_item_features)
from recgoat.nn.losses import bpr_loss, l2_reg


class FREEDOMConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    """d: the width of the ID embeddings and projected features."""
    n_ui_layers: int = Field(2, ge=0)
    """LightGCN layers on the (pruned) user-item graph."""
    n_ii_layers: int = Field(1, ge=0)
    """Convolutions of the item ID embeddings on the frozen item-item graph."""
    knn_k: int = Field(10, ge=1)
    """Neighbours per item in each modality's kNN graph."""
    image_weight: float = Field(0.1, ge=0.0, le=1.0)
    """α_v: the image graph's weight in the item-item graph; the text graph's is 1 − α_v."""
    dropout: float = Field(0.8, ge=0.0, lt=1.0)
    """ρ: the fraction of user-item edges pruned each epoch (degree-sensitive)."""
    modal_weight: float = Field(1e-3, ge=0.0)
    """λ: weight of the modality BPR terms."""
    reg_weight: float = Field(0.0, ge=0.0)
    """L2 on the batch's embeddings; the paper adds none (0)."""


def degree_sensitive_keep(train: sp.csr_matrix, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (into ``train.tocoo()``'s edges) of ``keep`` edges drawn without replacement with
    probability ∝ 1/sqrt(d_u d_i), d a node's number of training edges.

    Weighted sampling without replacement by exponential keys (Efraimidis & Spirakis): the ``keep``
    largest ``log(U)/w`` — one vectorised draw, no loop over edges.
    """
    coo = train.tocoo()
    # degrees count edges, as Â and Â_ρ do (every stored entry is one edge of weight 1), not the entries'
    # values (a matrix of ratings or summed duplicates skewed the probabilities); float32 counts of binary
    # float32 data are its row / column sums exactly, so the draws there are unchanged
    dtype = np.float32 if train.dtype == np.float32 else np.float64
    d_u = np.bincount(coo.row, minlength=train.shape[0]).astype(dtype)
    d_i = np.bincount(coo.col, minlength=train.shape[1]).astype(dtype)
    w = 1.0 / np.sqrt(d_u[coo.row] * d_i[coo.col])
    keys = np.log(rng.random(coo.nnz)) / w
    if keep >= coo.nnz:
        return np.arange(coo.nnz)
    return np.sort(np.argpartition(-keys, keep - 1)[:keep])


def item_item_graph(found: dict[str, np.ndarray], k: int, image_weight: float, mask: np.ndarray) -> sp.csr_matrix:
    """``Σ_m α_m Ŝ^m`` over the modalities present (weights renormalised to sum to 1); ``mask``: the items with
    an image. An all-zero row (an item without text or image: the feature store writes zeros for it) gets no
    edges, as :func:`~recgoat.graphs.knn.knn_graph` isolates zero rows."""
    weights = {"text": 1.0 - image_weight, "image": image_weight}
    present = {m: weights[m] for m in found if weights[m] > 0}
    if not present:  # e.g. image_weight = 1 with text only: fall back to equal weights
        present = {m: 1.0 for m in found}
    total = sum(present.values())
    graph = None
    for m, w in present.items():
        g = normalized_knn_graph(found[m], k, mask=mask if m == "image" else None) * (w / total)
        graph = g if graph is None else graph + g
    return graph.tocsr()


@register("freedom")
class FREEDOM(Recommender):
    Config = FREEDOMConfig
    needs_features = True

    def __init__(self, n_users: int, n_items: int, config: FREEDOMConfig | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        d = self.config.embedding_dim
        self.init_id_embeddings(d)
        # W_m, one per modality present (no bias: it cancels in the modality BPR difference)
        self.proj = nn.ModuleDict({m: nn.Linear(int(dims[f"{m}_dim"]), d, bias=False)
                                   for m in present_modalities(dims, self.name)})
        # the graphs are buffers (they follow .double() / .to()), never saved: prepare() rebuilds them
        register_fixed(self, "adj", None)  # full Â (evaluation)
        register_fixed(self, "pruned_adj", None)  # Â_ρ of the current epoch (training)
        register_fixed(self, "ii_graph", None)  # frozen S

    @property
    def feats(self) -> dict[str, Tensor]:
        """``X_m`` per modality present (buffers: they follow ``.double()`` / ``.to(device)``)."""
        return registered_item_features(self)

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        return modality_dims(features, "freedom")

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        found = item_features(self, features)
        register_item_features(self, found)
        register_fixed(self, "adj", normalized_bipartite(self._train_csr))
        self.pruned_adj = None
        cfg = self.config
        graph = item_item_graph(found, cfg.knn_k, cfg.image_weight, image_mask(features, self.n_items, self.name))
        register_fixed(self, "ii_graph", to_torch_csr(graph))
        self.summary["item_item_edges"] = int(graph.nnz)

    def on_epoch_start(self, epoch: int, rng: np.random.Generator) -> None:
        """Resample the degree-sensitive pruned user-item graph for this epoch."""
        if self._train_csr is None or self.config.dropout == 0.0:
            self.pruned_adj = None
            return
        train = self._train_csr
        keep = max(1, int(round(train.nnz * (1.0 - self.config.dropout))))
        idx = degree_sensitive_keep(train, keep, rng)
        coo = train.tocoo()
        kept = sp.csr_matrix((np.ones(len(idx), np.float32), (coo.row[idx], coo.col[idx])), shape=train.shape)
        # in the weights' dtype and device (a model made .double() before fitting)
        register_fixed(self, "pruned_adj", to_torch_csr(sym_normalize(bipartite_adjacency(kept))))

    def _graph(self) -> Tensor:
        if self.adj is None:
            raise RuntimeError("freedom: call prepare(dataset, features) before training or scoring")
        # pruning is a training-time denoiser only: evaluation always sees the full graph
        if self.training and self.pruned_adj is not None:
            return self.pruned_adj
        return self.adj

    def item_graph_part(self) -> Tensor:
        """``h = S^{L_ii} E_I``: item ID embeddings smoothed over the frozen item-item graph."""
        h = self.item_emb.weight
        for _ in range(self.config.n_ii_layers):
            h = sym_spmm(self.ii_graph, h)
        return h

    def embeddings(self) -> tuple[Tensor, Tensor]:
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        z = propagate(self._graph(), ego, self.config.n_ui_layers)
        return z[: self.n_users], z[self.n_users:] + self.item_graph_part()

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        z_u, z_i = self.embeddings()
        u = z_u[users]
        terms: dict[str, Tensor] = {"bpr": bpr_loss(u, z_i[pos], z_i[neg])}
        modal = torch.zeros(())
        for m, layer in self.proj.items():
            t = bpr_loss(u, layer(self.feats[m][pos]), layer(self.feats[m][neg]))
            terms[f"bpr_{m}"] = t
            modal = modal + t
        reg = l2_reg(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        terms["reg"] = reg
        terms["loss"] = terms["bpr"] + self.config.modal_weight * modal + self.config.reg_weight * reg
        return terms
