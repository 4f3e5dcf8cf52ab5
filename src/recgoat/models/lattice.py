r"""LATTICE (Zhang, Zhu, Liu, Wu, Wang & Wang, "Mining Latent Structures for Multimedia Recommendation",
ACM MM 2021).

**kNN graph of a feature matrix.** For features :math:`X` (one row per item), cosine similarities
:math:`S_{ij} = x_i^\top x_j / (\lVert x_i\rVert \lVert x_j\rVert)`; each item keeps the :math:`K` largest
entries of its row, the paper's top-K of :math:`S_i` (the item itself among them: :math:`S_{ii} = 1` is its
row's largest), weighted by the similarity, not symmetrised; then

.. math::
    \hat S = D^{-1/2} S^{K} D^{-1/2}, \qquad D_{ii} = \textstyle\sum_j S^{K}_{ij} .

**Initial graphs (frozen).** :math:`\hat S^m` of the raw features :math:`X_m` of each modality, built once in
``prepare``.

**Learned graphs.** The features projected, :math:`\tilde X_m = X_m W_m + b_m` (:math:`W_m` learnt), and
:math:`\tilde A^m` the same kNN graph of :math:`\tilde X_m`. Which K neighbours an item keeps is a discrete
choice without a gradient; the kept entries' *values* are the cosine similarities of the projected features,
computed differentiably on the kept index pairs every step (a sparse matrix whose values carry gradients,
:class:`_ValuedSpMM`), so the gradient reaches :math:`W_m, b_m` through them, as in the paper.

**Skip connection and fusion.**

.. math::
    A^m = \lambda \hat S^m + (1 - \lambda) \tilde A^m, \qquad
    A = \sum_m \alpha_m A^m, \qquad \alpha = \operatorname{softmax}(w)

with λ (``lambda_coeff``) the paper's skip-connection coefficient, the weight of the *initial* graph
(λ = 1: the frozen graph alone; λ = 0: the learned one alone), and :math:`w` learnt (one logit per modality
present, equal at the start).

**Representations.** Item ID embeddings convolved :math:`L_{ii}` times on :math:`A`,
:math:`h = A^{L_{ii}} E_I`; LightGCN (the paper's best backbone) over the user-item graph,
:math:`[\bar e_u; \bar e_i] = \frac{1}{L+1}\sum_{l=0}^{L} \hat A^l [E_U; E_I]`; then

.. math::
    z_u = \bar e_u, \qquad z_i = \bar e_i + \frac{h_i}{\lVert h_i \rVert_2}, \qquad \hat y_{ui} = z_u^\top z_i,
    \qquad \mathcal L = \mathcal L_{bpr}(z) + \lambda_{reg} \lVert \Theta_B \rVert^2 .

**Defaults.** From the paper's experimental settings (its released code's argument defaults say the same):
d = 64, K = 10, λ = 0.9, L_ii = 1, LightGCN as the CF backbone (its best). From the released code, where the
paper gives no single value: L = 2 LightGCN layers (``weight_size [64, 64]``) and ``reg_weight`` = 1e-5
(``regs[0]``; MMRec searches {0, 1e-5, 1e-4, 1e-3}). Learning rate and batch size are the trainer's, not the
model's (the paper: Adam, lr 5e-4, batch 1024).

**No dense I×I.** The top-K search multiplies blocks of at most 1,024 rows by all items (:func:`topk_pairs`);
every graph is held as its kept pairs (I·K entries).

**When the learned graph is rebuilt.** Its neighbour choice is recomputed from the current :math:`W_m` at the
start of every epoch (``on_epoch_start``) and whenever the model is evaluated with weights it was not built
from (so evaluation is a function of the weights: a saved and reloaded model scores the same); within an
epoch the pairs stay fixed while their values follow :math:`W_m` step by step. Cost per rebuild: one
:math:`I \times I \times d` product per modality in blocks, plus :math:`I \times d_m \times d` for the
projection, which every training step also pays (FREEDOM projects only the batch's items). On ml100k-mm
(1,349 items, both modalities) a rebuild takes 0.03 s of a ~1.5 s epoch, which is no slower than FREEDOM's
(docs/benchmarks.md, "LATTICE on ml100k-mm").

**Deviations, stated.** (1) The paper does not say how often the learned graph is rebuilt; above is ours. The
authors' released code rebuilds it on an epoch's first batch only and detaches it for the others, so
:math:`W_m` and :math:`w` receive a gradient once an epoch; ours on every step. (2) The authors' code
normalises the *sum* of the modalities' learned graphs once; ours normalises each modality's, as the paper's
equations do. (3) Kept similarities below 0 count as 0 (an edge of weight 0), so every degree is at least 1
(the item's own entry) and :math:`D^{-1/2}` exists; with K ≪ I the K largest similarities are positive
anyway. (4) An item whose features are all zero or masked out (a missing image) has no entry, not even its
own, in that modality's graphs (its cosine is undefined). (5) The raw feature tables are frozen (the
authors' code fine-tunes them). (6) The L2 term is LightGCN's on the batch's ID (layer-0) embeddings,
:math:`\lVert\cdot\rVert^2 / 2|B|`, as our other peers'; the authors' code puts it on the final embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from recgoat.graphs.bipartite import csr_tensor, normalized_bipartite, register_fixed, spmm
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.lgmrec import SparseOperator
from recgoat.models.lightgcn import propagate
from recgoat.models.modalities import (image_mask, item_features, modality_dims, present_modalities,
                                       register_item_features, registered_item_features)
from recgoat.nn.losses import bpr_loss, l2_reg

# query rows per block of the top-K search: a block is at most this many rows × I similarities
_BLOCK_ROWS = 1024


class LATTICEConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    """d: the width of the ID embeddings and projected features."""
    n_ui_layers: int = Field(2, ge=0)
    """LightGCN layers on the user-item graph."""
    n_ii_layers: int = Field(1, ge=0)
    """Convolutions of the item ID embeddings on the item-item graph A."""
    knn_k: int = Field(10, ge=1)
    """K: entries kept per row of the item-item graphs, the item itself included."""
    lambda_coeff: float = Field(0.9, ge=0.0, le=1.0)
    """λ: weight of the frozen initial graph; 1 − λ that of the learned one."""
    reg_weight: float = Field(1e-5, ge=0.0)
    """L2 on the batch's embeddings."""


@dataclass
class KnnPattern:
    """The kept pairs of a kNN graph, sorted by row then column, with what a CSR product and its transpose
    need: ``crow`` (row pointers), ``perm_t`` (the pairs' order sorted by column) and ``crow_t``."""

    rows: Tensor
    cols: Tensor
    crow: Tensor
    perm_t: Tensor
    crow_t: Tensor
    n: int

    @classmethod
    def of(cls, rows: Tensor, cols: Tensor, n: int) -> "KnnPattern":
        order = torch.argsort(rows * n + cols)
        rows, cols = rows[order], cols[order]
        zero = rows.new_zeros(1)
        crow = torch.cat([zero, torch.bincount(rows, minlength=n).cumsum(0)])
        perm_t = torch.argsort(cols * n + rows)
        crow_t = torch.cat([zero, torch.bincount(cols, minlength=n).cumsum(0)])
        return cls(rows, cols, crow, perm_t, crow_t, n)


class _ValuedSpMM(torch.autograd.Function):
    """``A h`` for a sparse ``A`` of fixed pattern whose values carry gradients: a CSR product forward;
    backward ``∂/∂h = Aᵀ g`` (CSR of the transpose's pattern, kept) and ``∂/∂a_ij = g_i · h_j`` on the kept
    pairs only (an I·K × d gather, never I × I)."""

    @staticmethod
    def forward(ctx, values: Tensor, h: Tensor, p: KnnPattern) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(values, h)
        ctx.p = p
        return spmm(csr_tensor(p.crow, p.cols, values, (p.n, p.n)), h)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        values, h = ctx.saved_tensors
        p: KnnPattern = ctx.p
        grad_v = (g[p.rows] * h[p.cols]).sum(1) if ctx.needs_input_grad[0] else None
        grad_h = None
        if ctx.needs_input_grad[1]:
            grad_h = spmm(csr_tensor(p.crow_t, p.rows[p.perm_t], values[p.perm_t], (p.n, p.n)), g.contiguous())
        return grad_v, grad_h, None


def valued_spmm(values: Tensor, h: Tensor, p: KnnPattern) -> Tensor:
    """``A h`` with ``A``'s values ``values`` on the pairs of ``p`` (differentiable in both)."""
    if torch.is_grad_enabled() and (values.requires_grad or h.requires_grad):
        return _ValuedSpMM.apply(values, h, p)
    return spmm(csr_tensor(p.crow, p.cols, values, (p.n, p.n)), h)


def valid_rows(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Items with a defined cosine: a non-zero feature row (and ``mask`` set, for images)."""
    ok = (x != 0).any(dim=1)
    return ok if mask is None else ok & mask


def topk_pairs(x: Tensor, k: int, valid: Tensor) -> KnnPattern:
    """Each valid item's ``k`` most cosine-similar valid items, itself first (the top-K of its row of ``S``,
    where ``S_ii = 1`` is the largest); invalid items keep none and are kept by none.

    Similarities are computed in blocks of at most ``_BLOCK_ROWS`` query rows × all items, so no I×I matrix
    exists for I > 1,024. Outside autograd: the choice of neighbours has no gradient."""
    n = x.shape[0]
    idx = torch.nonzero(valid).squeeze(1)
    kk = min(k, len(idx))
    if kk == 0:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return KnnPattern.of(empty, empty, n)
    with torch.no_grad():
        xn = F.normalize(x[idx], dim=1)
        chosen = []
        for s in range(0, len(idx), _BLOCK_ROWS):
            sims = xn[s:s + _BLOCK_ROWS] @ xn.t()  # block × valid items
            own = torch.arange(sims.shape[0], device=x.device)
            sims[own, own + s] = float("inf")  # the item itself, whatever ties (duplicates) there are
            chosen.append(torch.topk(sims, kk, dim=1).indices)
        cols = idx[torch.cat(chosen)].reshape(-1)
    return KnnPattern.of(idx.repeat_interleave(kk), cols, n)


def knn_values(x: Tensor, p: KnnPattern) -> Tensor:
    r"""The normalised values :math:`S_{ij} / \sqrt{D_{ii} D_{jj}}` of the kNN graph ``p`` of ``x``, with
    :math:`S_{ij}` the cosine similarity (below 0 counted as 0) and :math:`D` the row sums; differentiable in
    ``x`` (an I·K × d gather)."""
    xn = F.normalize(x, dim=1)
    s = (xn[p.rows] * xn[p.cols]).sum(1).clamp(min=0.0)
    deg = torch.zeros(p.n, dtype=s.dtype, device=s.device).index_add(0, p.rows, s)
    inv = torch.where(deg > 0, deg.clamp(min=torch.finfo(deg.dtype).tiny).rsqrt(), torch.zeros_like(deg))
    return s * inv[p.rows] * inv[p.cols]


def knn_graph_csr(x: Tensor, k: int, valid: Tensor) -> sp.csr_matrix:
    """The normalised kNN graph ``D^-1/2 S^K D^-1/2`` of ``x`` as a scipy CSR matrix (the frozen initial
    graph)."""
    p = topk_pairs(x, k, valid)
    with torch.no_grad():
        v = knn_values(x, p)
    return sp.csr_matrix((v.cpu().numpy().astype(np.float32), (p.rows.cpu().numpy(), p.cols.cpu().numpy())),
                         shape=(p.n, p.n))


def _same_tensors(a: tuple, b: tuple) -> bool:
    """Two projection keys name the same tensors in the same dtype and device (their versions may differ)."""
    return [(i, t, d) for i, _, t, d in a] == [(i, t, d) for i, _, t, d in b]


@register("lattice")
class LATTICE(Recommender):
    Config = LATTICEConfig
    needs_features = True

    def __init__(self, n_users: int, n_items: int, config: LATTICEConfig | dict[str, Any] | None = None, **dims: Any):
        super().__init__(n_users, n_items, config, **dims)
        d = self.config.embedding_dim
        self.init_id_embeddings(d)
        present = present_modalities(dims, self.name)
        self.proj = nn.ModuleDict({m: nn.Linear(int(dims[f"{m}_dim"]), d) for m in present})  # W_m, b_m
        self.modal_logits = nn.Parameter(torch.zeros(len(present)))  # w: α = softmax(w), equal at the start
        # the graphs are buffers (they follow .double() / .to()), never saved: prepare() rebuilds them
        register_fixed(self, "adj", None)
        self.initial: nn.ModuleDict | None = None  # Ŝ^m per modality (frozen)
        # the learned graphs' kept pairs: derived from the weights (rebuilt when their key, which includes their
        # device and dtype, changes), so a cache as the evaluation one, not a fixed tensor for .to() to move
        self._cached_pairs: dict[str, KnnPattern] | None = None
        self._cached_pairs_key: tuple = ()  # the projections' identity and versions those pairs were chosen with

    @property
    def feats(self) -> dict[str, Tensor]:
        """``X_m`` per modality present (buffers: they follow ``.double()`` / ``.to(device)``)."""
        return registered_item_features(self)

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        return modality_dims(features, "lattice")

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        found = item_features(self, features)
        register_item_features(self, found)
        register_fixed(self, "adj", normalized_bipartite(self._train_csr))
        mask = torch.from_numpy(image_mask(features, self.n_items, self.name))
        like = self.user_emb.weight
        initial, edges = {}, 0
        for m in self.proj:
            valid = valid_rows(self.feats[m], mask.to(like.device) if m == "image" else None)
            register_fixed(self, f"valid_{m}", valid)
            graph = knn_graph_csr(self.feats[m], self.config.knn_k, valid)
            initial[m] = SparseOperator(graph, like)
            edges += graph.nnz
        self.initial = nn.ModuleDict(initial)
        self._cached_pairs, self._cached_pairs_key = None, ()
        self.summary["item_item_edges"] = edges

    def _projection_key(self) -> tuple:
        return tuple((id(p), p._version, p.dtype, p.device) for p in self.proj.parameters())

    def projected(self) -> dict[str, Tensor]:
        """``X̃_m = X_m W_m + b_m`` per modality."""
        return {m: layer(self.feats[m]) for m, layer in self.proj.items()}

    def rebuild_learned_pairs(self, projected: dict[str, Tensor] | None = None) -> dict[str, KnnPattern]:
        """The learned graphs' neighbours chosen from the current projections (kept if the projections have not
        changed since they were chosen)."""
        key = self._projection_key()
        if self._cached_pairs is None or self._cached_pairs_key != key:
            with torch.no_grad():
                x = projected if projected is not None else self.projected()
                self._cached_pairs = {m: topk_pairs(x[m], self.config.knn_k, getattr(self, f"valid_{m}")) for m in self.proj}
            self._cached_pairs_key = key
        return self._cached_pairs

    def on_epoch_start(self, epoch: int, rng: np.random.Generator) -> None:
        """Choose the learned graphs' neighbours from the projections as they are now, for this epoch."""
        if self.initial is not None:
            self.rebuild_learned_pairs()

    def modality_weights(self) -> Tensor:
        """``α = softmax(w)``, one weight per modality present (in ``self.proj``'s order)."""
        return torch.softmax(self.modal_logits, dim=0)

    def item_graph_part(self) -> Tensor:
        """``h = A^{L_ii} E_I`` with ``A = Σ_m α_m (λ Ŝ^m + (1 − λ) Ã^m)``, never formed: each term's product
        is taken on its own sparse matrix."""
        if self.initial is None:
            raise RuntimeError("lattice: call prepare(dataset, features) before training or scoring")
        lam = self.config.lambda_coeff
        alpha = self.modality_weights()
        learned: dict[str, tuple[Tensor, KnnPattern]] = {}
        if lam < 1.0 and self.config.n_ii_layers > 0:
            x = self.projected()
            # training keeps the epoch's pairs (chosen at its start, or on the first step of a hand-written
            # loop); evaluation chooses them from the weights it scores with
            reuse = self.training and self._cached_pairs is not None and _same_tensors(self._cached_pairs_key, self._projection_key())
            pairs = self._cached_pairs if reuse else self.rebuild_learned_pairs(x)
            learned = {m: (knn_values(x[m], pairs[m]), pairs[m]) for m in self.proj}
        h = self.item_emb.weight
        for _ in range(self.config.n_ii_layers):
            out = None
            for j, m in enumerate(self.proj):
                term = self.initial[m](h) * lam if lam > 0 else 0.0
                if m in learned:
                    values, pattern = learned[m]
                    term = term + valued_spmm(values, h, pattern) * (1.0 - lam)
                out = alpha[j] * term if out is None else out + alpha[j] * term
            h = out
        return h

    def embeddings(self) -> tuple[Tensor, Tensor]:
        if self.adj is None:
            raise RuntimeError("lattice: call prepare(dataset, features) before training or scoring")
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        z = propagate(self.adj, ego, self.config.n_ui_layers)
        return z[: self.n_users], z[self.n_users:] + F.normalize(self.item_graph_part(), dim=1)

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        z_u, z_i = self.embeddings()
        bpr = bpr_loss(z_u[users], z_i[pos], z_i[neg])
        reg = l2_reg(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        return {"loss": bpr + self.config.reg_weight * reg, "bpr": bpr, "reg": reg}
