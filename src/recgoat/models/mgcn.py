r"""MGCN (Yu, Tan, Lu & Bao, "Multi-View Graph Convolutional Network for Multimedia Recommendation",
ACM MM 2023).

Audited in session 27 line by line against the authors' published implementation: ``src/models/mgcn.py`` and
``src/configs/model/MGCN.yaml`` of MMRec (enoche/MMRec, whose file cites demonph10/MGCN as its reference), and
the authors' own repository demonph10/MGCN (``src/models/mgcn.py``, ``src/configs/model/MGCN.yaml``,
``src/configs/overall.yaml``, and ``src/utils/utils.py`` for the kNN graph: ``build_sim``,
``build_knn_normalized_graph``). Read for their equations and values; no code was copied. The paper's full text
was not at hand offline (only its abstract, which names the parts below but gives no equations), so where the
paper and the code might differ is not checked: the equations below are the code's. What session 26 had written
from memory and this audit changed is listed at the end.

**Behaviour-guided purifier** (one per modality). The item features :math:`X_m` are transformed to :math:`d`
dimensions and gate the item ID embeddings:

.. math::
    \dot E_m = X_m W_1^{m\top} + b_1^m, \qquad \tilde E_m = E_I \odot \sigma(\dot E_m W_2^{m\top} + b_2^m) .

:math:`X_m` is a trainable table initialised from the given features (``finetune_features``, the authors'
``nn.Embedding.from_pretrained(..., freeze=False)``); ``finetune_features=False`` keeps it frozen.

**Item-item view.** Per modality a kNN graph of the *given* (initial) features, built once and never learnt:
each item's row holds its :math:`k` largest cosine similarities, the item itself among them (:math:`s_{ii} = 1`
is its row's largest, so itself and its :math:`k-1` nearest others), weighted by the similarity, directed (not
symmetrised), and normalised by the row sums :math:`D_{ii} = \sum_j S^m_{ij}` on both sides:

.. math::
    \bar S^m = D^{-1/2} S^m D^{-1/2}, \qquad \bar E_I^m = (\bar S^m)^{L_{ii}} \tilde E_m, \qquad
    \bar E_U^m = \tilde R\, \bar E_I^m, \qquad \bar E^m = [\bar E_U^m; \bar E_I^m],

with :math:`\tilde R = D_U^{-1/2} R D_I^{-1/2}` the user-item block of :math:`\hat A` below. An item whose image
is missing (``image_mask``) has no entry, not even its own, in the image graph (the authors' data has no such
item).

**User-item view.** LightGCN on the ID embeddings over the symmetric-normalised training graph :math:`\hat A`
(no self-loops), the mean over layers 0 … :math:`L_{ui}`: :math:`\bar E^{id} = \frac{1}{L_{ui}+1}
\sum_{l=0}^{L_{ui}} \hat A^l [E_U; E_I]`.

**Behaviour-aware fuser.** Attention over the modalities (:math:`q, W_3, b_3` shared by them, a softmax over
the modalities for every node) gives the modality-shared part; the modality-specific parts are what is left,
each weighed by a preference gate computed from the node's ID view; the shared part is not gated:

.. math::
    \alpha_m = \operatorname{softmax}_m\big(q^\top \tanh(W_3 \bar e^m + b_3)\big), \qquad
    E^s = \sum_m \alpha_m \bar E^m, \qquad \tilde E^m = \bar E^m - E^s,

    P_m = \sigma(\bar E^{id} W_4^{m\top} + b_4^m), \qquad
    E^{mul} = \frac{1}{|M|+1}\Big(E^s + \sum_m P_m \odot \tilde E^m\Big), \qquad
    E = \bar E^{id} + E^{mul}, \qquad \hat y_{ui} = e_u^\top e_i .

(The authors' code divides by 3, which is :math:`|M|+1` for their two modalities; with one modality its
weight is 1, the shared part is that modality's view, its specific part 0, and :math:`E^{mul} = \bar E^m / 2`.)

**Objective.** For a batch :math:`B` of triples :math:`(u, i, j)` (duplicates kept, as drawn), BPR and the L2
term on the *final* embeddings :math:`E` of the batch's rows, and an in-batch InfoNCE between the fused view
(anchor) and the ID view, with cosine similarity :math:`s` and temperature :math:`\tau`, for the batch's users
and for its positive items, each a mean over the batch's rows:

.. math::
    \mathcal L_{bpr} = -\frac{1}{|B|}\sum_{(u,i,j) \in B} \log\sigma(e_u^\top e_i - e_u^\top e_j), \qquad
    \Omega = \frac{1}{2|B|}\sum_{(u,i,j) \in B} \big(\lVert e_u\rVert^2 + \lVert e_i\rVert^2
             + \lVert e_j\rVert^2\big),

    \mathcal L_C = \frac{1}{|B|}\sum_{r} -\log \frac{\exp(s(e^{mul}_{u_r}, \bar e^{id}_{u_r})/\tau)}
        {\sum_{c} \exp(s(e^{mul}_{u_r}, \bar e^{id}_{u_c})/\tau)}
      + \frac{1}{|B|}\sum_{r} -\log \frac{\exp(s(e^{mul}_{i_r}, \bar e^{id}_{i_r})/\tau)}
        {\sum_{c} \exp(s(e^{mul}_{i_r}, \bar e^{id}_{i_c})/\tau)},

    \mathcal L = \mathcal L_{bpr} + \lambda_C \mathcal L_C + \lambda_E \Omega ,

:math:`r, c` running over the batch's rows (a user drawn twice is its own candidate twice). No dropout anywhere:
training and evaluation compute the same embeddings.

**Initialisation.** The ID tables Xavier-uniform (the authors' and LightGCN's); every linear layer PyTorch's
default (the authors re-initialise none).

**Defaults and their source** (the two ``MGCN.yaml`` agree but for their search grids): d = 64, k = 10,
L_ui = 2 (``n_ui_layers``; demonph10's grid is that one value), L_ii = 1 (``n_layers``), λ_E = 1e-4
(``reg_weight``), λ_C = 0.01 (``cl_loss``: demonph10's value; MMRec searches {0.001, 0.01, 0.1}), τ = 0.2
(hard-coded in the loss; the code's ``self.tau = 0.5`` is unused). ``lambda_coeff: 0.9`` in the YAML is read by
nothing.

**Where we differ, deliberately.** (1) The learning rate and batch size are the trainer's (the benchmark's
shared lr 5e-3 at a constant rate; the authors' 1e-3, batch 2048, with ``learning_rate_scheduler [0.96, 50]``, a
decay of 0.96 per 50 epochs: ``--set trainer.lr_decay=0.96`` (``lr_decay_every`` is 50 by default) trains so).
(2) The L2 term divides by the batch's length, where the authors' code divides by the configured batch size: the
same except on an epoch's last, shorter batch.
(3) The kNN graph is searched with faiss in blocks (``graphs/knn.py``), never as a dense I×I similarity
(METHOD.md §9); its entries are those of the authors' ``torch.topk`` over that matrix, the item itself counted
first when exact duplicates tie with it. A kept similarity below 0 stays negative, as theirs; a row whose sum is
not positive gets no entries (theirs would be NaN); a missing image isolates its item (above). (4) One
modality is allowed (the authors' code needs both). (5) The attention's softmax is over the modalities, as
MMRec's copy has it (``nn.Softmax(dim=-1)``) and as attention weights over modalities mean; demonph10/MGCN's
file at commit 09095cb builds ``nn.Softmax(dim=0)``, a softmax over the nodes, which we take for a slip.

**Changed by the session-27 audit** (session 26's version, written from memory, differed in each; none was a
choice): the kNN graph was FREEDOM's (unweighted, symmetrised, no self-loop); the features were frozen; a
fourth gate :math:`\sigma(\bar E^{id} W^s + b^s)` weighed the shared part; the L2 term was on the ego ID
embeddings; :math:`\mathcal L_C` anchored the ID view of the batch's *distinct* users (items) against the fused
view of *every* user (item); every linear layer was Xavier-initialised. docs/benchmarks.md has both versions'
figures. With :math:`\lambda_C = 0.1` (on MMRec's grid) neither trains on ml100k-mm within the benchmark's
patience: at the start the contrastive term's gradient on the ID embeddings is about 1,200 times BPR's (a cosine
InfoNCE at τ = 0.2 on a fused view whose rows start with norm ≈ 0.01), so BPR sits at ln 2 for about 80 epochs
at lr 1e-3; that is the authors' model, not a deviation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor, nn

from recgoat.graphs.bipartite import normalized_bipartite, register_fixed
from recgoat.graphs.knn import normalized_knn_graph
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.lgmrec import SparseOperator
from recgoat.models.lightgcn import propagate
from recgoat.models.modalities import (image_mask, item_features, modality_dims, model_item_features,
                                       present_modalities, set_item_features, tunable_item_features)
from recgoat.nn.losses import bpr_loss, in_batch_info_nce, l2_reg


class MGCNConfig(ModelConfig):
    embedding_dim: int = Field(64, ge=1)
    """d: the width of the ID embeddings and projected features."""
    n_ui_layers: int = Field(2, ge=0)
    """L_ui: LightGCN layers of the user-item (ID) view."""
    n_ii_layers: int = Field(1, ge=0)
    """L_ii: convolutions of the purified embeddings on each item-item graph."""
    knn_k: int = Field(10, ge=1)
    """Entries of an item's row of the item-item graph, the item itself included."""
    cl_weight: float = Field(0.01, ge=0.0)
    """λ_C: weight of the contrastive term between the ID and the fused views."""
    tau: float = Field(0.2, gt=0.0)
    """The contrastive term's temperature."""
    reg_weight: float = Field(1e-4, ge=0.0)
    """λ_E: L2 on the batch's final embeddings."""
    finetune_features: bool = True
    """The item features X_m as trainable parameters (the authors' code); false: frozen."""
    # MGCN models saved before session 27 had frozen features: what a benchmark cell or checkpoint of that version
    # ran with, so a resume names the change (their weights no longer load: saved_problem)
    legacy_defaults = {"finetune_features": False}

    @classmethod
    def saved_problem(cls, saved: dict[str, Any]) -> str | None:
        if "finetune_features" not in saved:  # a key every model saved since the audit holds
            return ("an MGCN saved before its session-27 audit against the authors' code, which changed its graph, "
                    "fuser, losses and parameters (docs/benchmarks.md, \"MGCN on ml100k-mm\"): it cannot be loaded "
                    "by this version; train it again")
        return None


class Purifier(nn.Module):
    """One modality's behaviour-guided purifier: ``E_I ⊙ σ(W_2 (W_1 x + b_1) + b_2)``."""

    def __init__(self, feat_dim: int, d: int):
        super().__init__()
        self.transform = nn.Linear(feat_dim, d)  # W_1, b_1: features → d
        self.gate = nn.Linear(d, d)  # W_2, b_2

    def forward(self, item_ids: Tensor, feats: Tensor) -> Tensor:
        return item_ids * torch.sigmoid(self.gate(self.transform(feats)))


class BehaviourAwareFuser(nn.Module):
    """``E^mul = (E^s + Σ_m P_m ⊙ (Ē^m − E^s)) / (|M| + 1)``: attention over the modalities for the shared part
    ``E^s``, a preference gate per modality-specific part from the ID view."""

    def __init__(self, d: int, modalities: list[str]):
        super().__init__()
        # q^T tanh(W_3 e + b_3), shared across the modalities
        self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.prefer = nn.ModuleDict({m: nn.Linear(d, d) for m in modalities})  # W_4^m, b_4^m

    def forward(self, id_view: Tensor, views: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(E^mul, α, {m: Ẽ^m})``; α is (nodes × |M|) in the order of ``prefer``, rows summing to 1."""
        modalities = list(self.prefer)
        stacked = torch.stack([views[m] for m in modalities], dim=1)  # N × |M| × d
        alpha = torch.softmax(self.attention(stacked).squeeze(-1), dim=1)  # over the modalities
        shared = (alpha.unsqueeze(-1) * stacked).sum(dim=1)
        specific = {m: views[m] - shared for m in modalities}
        out = shared
        for m in modalities:
            out = out + torch.sigmoid(self.prefer[m](id_view)) * specific[m]
        return out / (len(modalities) + 1), alpha, specific


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
        self.fuser = BehaviourAwareFuser(d, present)
        self.feat_params = tunable_item_features(n_items, dims, present, self.config.finetune_features)
        # the graphs are buffers (they follow .double() / .to()), never saved: prepare() rebuilds them
        register_fixed(self, "adj", None)  # Â
        self.user_items: SparseOperator | None = None  # R̃ = D_U^-1/2 R D_I^-1/2 (U × I)
        self.item_graphs = nn.ModuleDict()  # S̄^m per modality (directed: kept with its transpose)

    @property
    def feats(self) -> dict[str, Tensor]:
        """``X_m`` per modality: the fine-tuned parameters, or (``finetune_features`` off) the frozen features."""
        return model_item_features(self, self.feat_params)

    @property
    def modalities(self) -> list[str]:
        return list(self.purifier)

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        return modality_dims(features, "mgcn")

    def prepare(self, dataset, features=None) -> None:
        super().prepare(dataset, features)
        found = item_features(self, features)
        set_item_features(self, found, self.feat_params)  # fine-tuned, or frozen
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
            # from the given features, as the authors build it before training (never from the fine-tuned ones)
            graph = normalized_knn_graph(found[m], self.config.knn_k, mask=mask if m == "image" else None,
                                         symmetrize=False, weighted=True, include_self=True)
            self.item_graphs[m] = SparseOperator(graph, self.user_emb.weight)
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
        feats = self.feats
        return {m: self.purifier[m](self.item_emb.weight, feats[m]) for m in self.modalities}

    def modality_view(self, m: str, purified: Tensor) -> Tensor:
        """``Ē^m``: items convolved on the frozen item-item graph, users aggregating them through R̃."""
        items = purified
        for _ in range(self.config.n_ii_layers):
            items = self.item_graphs[m](items)
        return torch.cat([self.user_items(items), items])

    def fuse(self, id_view: Tensor, views: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(E^{mul}, α, {m: Ẽ^m})``: the behaviour-aware fuser."""
        return self.fuser(id_view, views)

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
        """``L_C``: in-batch InfoNCE of the fused view (anchor) against the ID view, over the batch's rows of users
        and of positive items (duplicates kept)."""
        nu, tau = self.n_users, self.config.tau
        return (in_batch_info_nce(fused[:nu], id_view[:nu], users, tau)
                + in_batch_info_nce(fused[nu:], id_view[nu:], pos, tau))

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        id_view, fused = self.forward_all()
        z = id_view + fused
        z_u, z_i = z[: self.n_users], z[self.n_users:]
        u, p, n = z_u[users], z_i[pos], z_i[neg]
        bpr = bpr_loss(u, p, n)
        cl = self.contrastive(id_view, fused, users, pos) if self.config.cl_weight > 0 else torch.zeros(())
        reg = l2_reg(u, p, n)
        loss = bpr + self.config.cl_weight * cl + self.config.reg_weight * reg
        return {"loss": loss, "bpr": bpr, "cl": cl, "reg": reg}
