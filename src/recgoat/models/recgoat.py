r"""RecGOAT: graph optimal adaptive transport with dual semantic alignment (METHOD.md §2–§5).

Li, Ju, Song, Yang, Lu, Jiang, Gai, "RecGOAT: Graph Optimal Adaptive Transport for LLM-Enhanced
Multimodal Recommendation with Dual Semantic Alignment", arXiv 2602.00682 (2026).

.. math::
    H_m &= \mathrm{GAT}_m(X_m W_m, G_m)\ \ (m \in \{t, v\}), \qquad
    H_u = \mathrm{GAT}_u(X_u W_u, G_{uu}) \\
    [z_u; z_i^{id}] &= \mathrm{LightGCN}_{\text{rating-attn}}\big([E_U + H_u;\ E_I]\big) \\
    \hat z_i^m &= H_m[i]\,(I + \Delta_m), \qquad
    z_i = \gamma_{id} z_i^{id} + \textstyle\sum_m \gamma_m \hat z_i^m,\ \ \gamma = \mathrm{softmax}(\theta) \\
    \hat y_{ui} &= z_u^\top z_i, \qquad
    \mathcal L = \mathcal L_{bpr} + \lambda_{cl}\mathcal L_{cmcl} + \lambda_{ot}\mathcal L_{oat}
                 + \lambda_{reg}\lVert\Theta_B\rVert^2

Graphs (§2) are built from the training split (user-item, with standardised ratings on the edges) and
from the frozen features (top-k cosine kNN by faiss, never a dense I×I / U×U matrix; item graphs
symmetrised, the user graph each user's own top-k); they are fixed, cached in memory per process and
optionally on disk (``graph_cache_dir``). CMCL (symmetric InfoNCE, minimised) and OAT (Sinkhorn
divergence between L2-normalised clouds by default; ``ot_debias=False, ot_normalize=False`` for the
paper's ⟨T, C⟩ with ``C_ij = ‖ẑ_i − z_j‖`` on the raw embeddings) act on the batch's unique positive
items (and users), so their cost is O(B²), never O(I²); CMCL uses at most ``cl_max_points`` of them and
OAT at most ``ot_max_points`` (uniformly drawn), all modalities' transport problems in one batched
Sinkhorn.

Cost. Everything is propagated once per batch, and the step is built to stay within a few LightGCN
steps (``benchmarks/recgoat_epoch.py``): the feature projections run in bfloat16 where the CPU has
AVX512-BF16 (``projection_dtype``), fused with the first GAT layer's linear map and attention vectors
(one product of the frozen features with the composed weights,
:meth:`~recgoat.nn.layers.ModalityGATBranch.fused_first_layer_input`); each GAT layer
(:class:`~recgoat.nn.layers.SparseGATConv`) keeps
only ``E × heads`` edge scalars, aggregates all heads in one sparse product and has a hand-written
backward (PyG's ``GATConv``, ``gat_impl="pyg"``, materialises ``E × heads × C`` messages: ~30× slower
on the Baby-sized user graph); a training step attends over the item-item graphs only for the items
its loss reads (``train_item_subset``; same loss and gradients); the rating-aware propagation has
one backward for all layers.

``align_detach_target`` (off by default, as in the paper) stops the alignment gradients at the target:
the views are pulled onto the collaborative representation without that representation being pulled
towards them. On ml100k-mm it is what lets the dual alignment help rather than hurt (docs/benchmarks.md).

A modality the dataset lacks (``text_dim``/``image_dim``/``profile_dim`` = 0) is left out and
reported in ``self.summary``; with no features at all the model is LightGCN with rating attention. That is
for ``modalities`` left at its default (the packaged presets leave it so too): a config that names
``modalities`` itself asks for those views, and one the features lack is refused by the constructor (so from the
kinds of features alone: the benchmark's preflight catches it), one no item has by :meth:`RecGOAT.prepare`;
``use_profile: true`` given likewise asks for the user profiles.
With ``modalities=[]``, ``use_profile=False``, ``rating_attention=False`` and both λ at 0 it is
exactly LightGCN (the ID-only ablation). :data:`ABLATIONS` lists every ablation of METHOD.md §7 as a
config override; :func:`gamma_grid` gives the γ_t × γ_v sensitivity grid. Each component draws its
initial weights from a stream of its own (:meth:`~recgoat.models.base.Recommender.component_init`), so
an ablation that leaves one out starts every other from the weights the full model starts from.

``recommended_lr``: the paper trains with Adam lr 8e-4 (set it in the TrainConfig; it is not a model
setting). At d = 64 on ml100k-mm that rate leaves the paper configuration on the BPR plateau (loss ≈ ln 2:
the Xavier-initialised ID embeddings are tiny and the alignment terms dominate the early gradient) for
more than 20 epochs, so early stopping ends it at epoch 0; lr 5e-3 leaves the plateau after 2 epochs.
With a small rate, set ``TrainConfig.min_epochs`` so that early stopping waits.
Paper defaults otherwise: 3 LightGCN layers, item k 20, 1 GAT layer, 2 heads,
λ_cl 0.032, τ 0.2, L2 1e-4; d = 64 here for CPU (the presets in ``recgoat/configs`` carry the paper's d).
The paper does not fix the user-user k: 10 here (the user graph is the largest GAT input). The two heads
have d/2 channels each, concatenated (``gat_concat``), so each GAT layer maps d → d.
"""
from __future__ import annotations

import hashlib
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from recgoat.errors import ConfigError, DataError
from recgoat.graphs.bipartite import normalized_bipartite, register_fixed
from recgoat.graphs.knn import knn_graph
from recgoat.models.base import ModelConfig, Recommender, register
from recgoat.models.modalities import feature_matrix, none_given_message, view_presence, wrong_rows_message
from recgoat.nn.alignment import oat_losses, symmetric_info_nce
from recgoat.nn.layers import (AdaptiveMap, ConcatFusion, ModalityGATBranch, RatingAwareLightGCN, SimplexFusion,
                               SumFusion, csr_to_edge_index)
from recgoat.nn.losses import bpr_loss, l2_reg

recommended_lr = 8e-4
MODALITIES = ("text", "image")


class RecGOATConfig(ModelConfig):
    """RecGOAT's hyper-parameters (METHOD.md §2–§5); ``recgoat models show recgoat`` lists them with these notes."""

    embedding_dim: int = Field(64, ge=1)
    """d: the width of every view (ID embeddings, projected features, GAT outputs)."""
    n_layers: int = Field(3, ge=0)
    """L: LightGCN layers of the collaborative branch over the user-item graph (§3)."""
    reg_weight: float = Field(1e-4, ge=0.0)
    """λ_reg: L2 on the batch's ID embeddings (§5)."""
    feature_reg: float = Field(0.0, ge=0.0)
    """Not in the paper (0 = off): λ·Σ‖W‖² over every branch's projection and GAT weights. A trainable projection
    of a 1280-d feature can memorise items like a free embedding table, which L2 on the batch's ID embeddings does
    not restrain."""
    view_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Not in the paper (0 = off): dropout on the branch outputs H_m and H_u during training."""
    modalities: list[Literal["text", "image"]] = ["text", "image"]
    """The item feature views used (ablations: [text], [image], or [] for the ID view alone)."""
    use_profile: bool = True
    """The user-profile branch over the LLM profile embeddings (§3; false: users start from their ID alone). Left
    unset, it is dropped with a note where the features have no profiles; given as true, such features are
    refused."""
    item_graph: bool = True
    """GAT over the item-item kNN graphs (false: the projection only)."""
    user_graph: bool = True
    """GAT over the user-user kNN graph (false: the projection only)."""
    item_k: int = Field(20, ge=1)
    """Neighbours per item in each modality's item-item graph (the authors: 20 on Baby, 30 on Sports)."""
    user_k: int = Field(10, ge=1)
    """Neighbours per user in the user-user graph; the paper does not fix it, and 10 halves that graph (the GAT's
    largest)."""
    user_graph_symmetric: bool = False
    """METHOD.md §2 symmetrises the item-item graphs only; the user graph is each user's own top-k (directed: a
    user attends to the k users nearest it), a third fewer edges than symmetrised."""
    gat_layers: int = Field(1, ge=0)
    """Graph-attention layers of each branch (the paper: 1–2)."""
    gat_heads: int = Field(2, ge=1)
    """Attention heads per GAT layer."""
    gat_v2: bool = False
    """GATv2's attention (Brody et al.) instead of GAT's."""
    gat_impl: Literal["sparse", "pyg"] = "sparse"
    """sparse: ours, E × heads edge scalars; pyg: torch_geometric's GATConv, E × heads × C messages (same
    function)."""
    gat_concat: bool = True
    """Heads of d/heads channels concatenated (false: heads of d channels averaged)."""
    gat_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the attention coefficients during training."""
    gat_activation: Literal["elu", "none"] = "elu"
    """Between stacked GAT layers (gat_layers >= 2); "none" makes two layers one linear two-hop aggregation."""
    rating_attention: bool = True
    """Rating-aware attention on the user-item edges (§3; false: exactly LightGCN)."""
    fusion: Literal["simplex", "concat", "sum"] = "simplex"
    """The unified item representation (§5): weights on the simplex, or the naive concat + linear and sum."""
    gamma_t: float | None = Field(None, ge=0.0, le=1.0)
    """Fixed γ_t with gamma_v (γ_id = 1 − γ_t − γ_v; the paper's γ grid); null: learned (softmax of logits)."""
    gamma_v: float | None = Field(None, ge=0.0, le=1.0)
    """Fixed γ_v with gamma_t; null: learned."""
    lambda_cl: float = Field(0.032, ge=0.0)
    """λ_cl: weight of CMCL, the symmetric InfoNCE (§4; 0 = off)."""
    lambda_ot: float = Field(0.01, ge=0.0)
    """λ_ot: weight of OAT, the entropic transport distance (§4; 0 = off)."""
    tau: float = Field(0.2, gt=0.0)
    """τ: CMCL's temperature."""
    align_target: Literal["unified", "id"] = "unified"
    """What the modality views are aligned onto: the unified representation (the paper) or the ID view."""
    align_users: bool = True
    """CMCL between the user-profile view and the user ID view too."""
    align_detach_target: bool = False
    """Stop the alignment gradients at the target (unified or ID view, and the user ID view): the views are
    pulled onto the collaborative representation without pulling it towards them."""
    ot_eps: float = Field(0.05, gt=0.0)
    """ε: Sinkhorn's entropic regularisation."""
    ot_iters: int = Field(50, ge=1)
    """Log-domain Sinkhorn iterations."""
    ot_max_points: int = Field(128, ge=2)
    """Items per batch in the transport problem (O(n²) memory); at least 2: one point has nothing to transport."""
    cl_max_points: int = Field(1024, ge=2)
    """Items (users) per batch in each InfoNCE (O(n²) time; at least the batch: all of them); at least 2: one
    point has no negative."""
    ot_debias: bool = True
    """The Sinkhorn divergence (0 for identical distributions); false: the plain ⟨T, C⟩."""
    ot_normalize: bool = True
    """The transport cost between L2-normalised clouds (ε on the unit sphere's scale, costs ≤ 2: one ε fits every
    encoder and d); false: the paper's C_ij = ‖ẑ_i − z_j‖ on the raw embeddings, where a rescaling of the view by
    Δ_m has a cost (choose ε on the embeddings' scale then)."""
    feature_norm: Literal["center_l2", "l2", "none"] = "center_l2"
    """The frozen features as fed to the projections (the kNN graphs always use the raw features' cosine):
    encoders differ wildly in scale (ml100k-mm: text rows have norm 1, pooled CNN image rows ~18, all positive),
    and an unnormalised view swamps the ID embeddings in the fusion at initialisation."""
    graph_cache_dir: str | None = None
    """A folder where the kNN graphs are kept between processes (keyed by the features' content; null: reused
    within the process only)."""
    projection_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision of the feature projections, a step's largest dense products; auto: bfloat16 where the CPU has
    AVX512-BF16 (3–4× faster there, ~3e-3 relative error), float32 elsewhere."""
    train_item_subset: bool = True
    """Training steps compute the item views only for the batch's items (the same loss and gradients, a fraction
    of the item-item attention); false computes every item, as evaluation does."""

    # models saved before gat_activation stacked their GAT layers without one (with one layer: no difference)
    legacy_defaults = {"gat_activation": "none"}

    @classmethod
    def legacy_settings(cls, saved: dict[str, Any]) -> dict[str, Any]:
        legacy = super().legacy_settings(saved)
        layers = saved.get("gat_layers", cls.model_fields["gat_layers"].default)
        if "gat_activation" in legacy and not (isinstance(layers, int) and layers >= 2):
            # nothing reads it: the default is the same model, given explicitly so that a saved (full) config
            # stays full and its inert settings are noted, not refused (load failed with "set, but nothing …")
            legacy["gat_activation"] = cls.model_fields["gat_activation"].default
        return legacy

    @model_validator(mode="after")
    def _check(self) -> "RecGOATConfig":
        for name in ("embedding_dim", "item_k", "user_k", "gat_heads", "ot_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ot_max_points", "cl_max_points"):  # with one point CMCL and OAT are silently 0
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        for name in ("n_layers", "gat_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("reg_weight", "lambda_cl", "lambda_ot", "gat_dropout", "feature_reg", "view_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.view_dropout >= 1:
            raise ValueError("view_dropout must be < 1")
        if self.tau <= 0 or self.ot_eps <= 0:
            raise ValueError("tau and ot_eps must be > 0")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities repeated: {self.modalities}")
        # before the divisibility check below: with no GAT layer, gat_heads is the setting at fault
        if not is_full_config(self):  # a reloaded model's config: its inert settings are reported, not refused
            refused = {k: why for k, why in inert_settings(self, list(self.modalities), self.use_profile).items()
                       if k not in NOTED_ONLY}
            if refused:
                raise ValueError(f"set, but nothing reads them: {inert_message(self, refused)}; unset them, or "
                                 f"switch on what reads them")
        if self.gat_concat and self.embedding_dim % self.gat_heads:
            raise ValueError(f"gat_concat needs embedding_dim ({self.embedding_dim}) divisible by gat_heads "
                             f"({self.gat_heads}); set gat_concat: false to average heads instead")
        if not self.modalities:
            # no item view to adapt, transport or fuse. λ_ot's default stays allowed and inert (the summary says
            # OAT off; docs/benchmarks.md's "profile branch only" is `{modalities: []}`), and a reloaded config
            # sets every field, so a value chosen other than the default is what marks a request for OAT
            default_ot = type(self).model_fields["lambda_ot"].default
            if self.lambda_ot > 0 and self.lambda_ot != default_ot:
                raise ValueError(f"lambda_ot={self.lambda_ot} asks for OAT, which aligns item views, but modalities "
                                 f"is []; set lambda_ot: 0.0 or list a modality")
            if self.fusion != "simplex":
                raise ValueError(f"fusion: {self.fusion} fuses item views, but modalities is [] (the ID view alone "
                                 f"has nothing to fuse); drop fusion or list a modality")
        fixed = [g for g in (self.gamma_t, self.gamma_v) if g is not None]
        if fixed:
            if self.fusion != "simplex":
                raise ValueError("gamma_t/gamma_v fix the simplex fusion weights; set fusion: simplex")
            if any(g < 0 for g in fixed) or sum(fixed) > 1 + 1e-9:
                raise ValueError(f"gamma_t={self.gamma_t}, gamma_v={self.gamma_v}: need >= 0 and sum <= 1")
            # a weight for a view the config leaves out would be silently unused
            for key, m in (("gamma_t", "text"), ("gamma_v", "image")):
                if getattr(self, key) is not None and m not in self.modalities:
                    raise ValueError(f"{key} weights the {m} view, which modalities {self.modalities} leaves out; "
                                     f"unset {key} or add {m}")
        return self


# ---------------------------------------------------------------------------------------------- inert settings
# Settings that are refused when set (to a non-default value) where nothing reads them, except these, which are
# reported in the run summary instead: a packaged preset sets item_k, user_k, view_dropout and align_detach_target
# to non-default values, and a §7 ablation on top of it (no_item_graph, no_profile, id_only, no_alignment) must
# still run; the others tune how a run goes (cache folder, input scaling), not what the model does.
# (``projection_dtype`` is not checked at all: the summary reports it, and it is often set for every run.)
NOTED_ONLY = frozenset({"item_k", "user_k", "view_dropout", "align_detach_target", "graph_cache_dir",
                        "feature_norm"})


def is_full_config(c: ModelConfig) -> bool:
    """Every field given explicitly: the config of a saved model (or a ``model_dump``), not one a user wrote.
    A refusal added after such a model was saved must not stop it loading, so its inert settings are noted."""
    return set(type(c).model_fields) <= c.model_fields_set


def inert_settings(c: "RecGOATConfig", modalities: list[str], profile: bool) -> dict[str, str]:
    """``{key: why}`` for each setting whose value differs from its default but which nothing reads with these
    item views (``modalities``) and profile branch (``profile``). ``lambda_ot`` without a view is checked apart."""
    defaults = {k: f.get_default(call_default_factory=True) for k, f in type(c).model_fields.items()}
    item_gat = c.item_graph and c.gat_layers > 0 and bool(modalities)
    user_gat = profile and c.user_graph and c.gat_layers > 0
    cmcl = c.lambda_cl > 0 and (bool(modalities) or (profile and c.align_users))
    oat = c.lambda_ot > 0 and bool(modalities)

    def first(*cases: tuple[bool, str]) -> str:
        return next(text for hit, text in cases if hit)

    no_gat = "gat_layers: 0" if c.gat_layers == 0 else "no item-item or user-user graph"
    no_item = first((c.gat_layers == 0, "gat_layers: 0"), (not c.item_graph, "item_graph: false"),
                    (True, "no item view"))
    no_user = first((c.gat_layers == 0, "gat_layers: 0"), (not profile, "no profile branch"),
                    (True, "user_graph: false"))
    no_cl = "lambda_cl: 0" if c.lambda_cl == 0 else "nothing to contrast: no item view, no profile-ID pair"
    no_layer = "no graph attention layer runs (gat_layers: 0)"
    groups: list[tuple[tuple[str, ...], bool, str]] = [
        (("gat_heads", "gat_v2", "gat_impl", "gat_dropout", "gat_concat"), item_gat or user_gat,
         f"no graph attention layer runs ({no_gat})"),
        # the ablation switches themselves: item_graph / user_graph: false switch off a graph that does not run
        # anyway (no GAT layer, no view to attend over) and align_users: false a CMCL term that does not act
        (("item_graph",), c.gat_layers > 0 and bool(modalities),
         no_layer if c.gat_layers == 0 else "no item-item graph (no item view)"),
        (("user_graph",), c.gat_layers > 0 and profile,
         no_layer if c.gat_layers == 0 else "no user-user graph (no profile branch)"),
        (("align_users",), c.lambda_cl > 0 and profile,
         "CMCL does not act (lambda_cl: 0)" if c.lambda_cl == 0 else "no user view to align (no profile branch)"),
        (("gat_activation",), (item_gat or user_gat) and c.gat_layers >= 2,
         f"it acts between stacked GAT layers ({no_gat})" if not (item_gat or user_gat)
         else f"it acts between stacked GAT layers (gat_layers: {c.gat_layers})"),
        (("item_k",), item_gat, f"no item-item graph ({no_item})"),
        (("user_k", "user_graph_symmetric"), user_gat, f"no user-user graph ({no_user})"),
        (("tau", "cl_max_points"), cmcl, f"CMCL does not act ({no_cl})"),
        (("ot_eps", "ot_iters", "ot_max_points", "ot_debias", "ot_normalize"), oat,
         "OAT does not act (" + ("lambda_ot: 0" if c.lambda_ot == 0 else "no item view") + ")"),
        # align_target picks the item views' target; align_detach_target also stops the user CMCL's gradient
        (("align_target",), bool(modalities) and (c.lambda_cl > 0 or c.lambda_ot > 0),
         "only the user-profile view is aligned (no item view)" if cmcl else "no alignment term acts"),
        (("align_detach_target",), cmcl or oat, "no alignment term acts"),
        (("feature_reg", "view_dropout", "feature_norm"), bool(modalities) or profile,
         "no feature branch (no item view, no profile branch)"),
        (("graph_cache_dir",), item_gat or user_gat, "no kNN graph is built"),
        # the switch off of a default that acts only with propagation layers / item views to project
        (("rating_attention",), c.n_layers > 0, "no user-item propagation (n_layers: 0)"),
        (("train_item_subset",), bool(modalities), "no item view to project"),
    ]
    out: dict[str, str] = {}
    for keys, acts, why in groups:
        if not acts:
            out.update({k: why for k in keys if getattr(c, k) != defaults[k]})
    if not cmcl and c.lambda_cl > 0 and c.lambda_cl != defaults["lambda_cl"]:  # λ_cl = 0 is the switch, not inert
        out["lambda_cl"] = f"CMCL does not act ({no_cl})"
    return out


def inert_message(c: ModelConfig, inert: dict[str, str]) -> str:
    """``key=value, key=value: why; …``: the settings of ``inert`` grouped by reason, in one line."""
    by_why: dict[str, list[str]] = {}
    for k, why in inert.items():
        by_why.setdefault(why, []).append(f"{k}={getattr(c, k)!r}")
    return "; ".join(f"{', '.join(keys)}: {why}" for why, keys in by_why.items())


# ---------------------------------------------------------------------------------------------- ablations
ABLATIONS: dict[str, dict[str, Any]] = {
    "id_only": {"modalities": [], "use_profile": False, "rating_attention": False,
                "lambda_cl": 0.0, "lambda_ot": 0.0},
    "concat": {"fusion": "concat", "lambda_cl": 0.0, "lambda_ot": 0.0},
    "sum": {"fusion": "sum", "lambda_cl": 0.0, "lambda_ot": 0.0},
    "no_alignment": {"lambda_cl": 0.0, "lambda_ot": 0.0},  # the learned simplex fusion, neither CMCL nor OAT
    "cmcl_only": {"lambda_ot": 0.0},
    "oat_only": {"lambda_cl": 0.0},
    "full": {},
    "text_only": {"modalities": ["text"]},
    "image_only": {"modalities": ["image"]},
    "no_profile": {"use_profile": False},
    "no_item_graph": {"item_graph": False},
}


def gamma_grid(values: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4),
               v_values: tuple[float, ...] | None = None) -> list[dict[str, float]]:
    """The γ_t × γ_v sensitivity grid (pairs with γ_t + γ_v ≤ 1) as config overrides; γ_v runs over
    ``v_values`` when given (e.g. to split the grid between processes), else over ``values`` too."""
    return [{"gamma_t": t, "gamma_v": v} for t in values for v in (values if v_values is None else v_values)
            if t + v <= 1 + 1e-9]


def load_preset(name: str) -> RecGOATConfig:
    """``baby`` / ``sports`` / ``electronics`` / ``ml100k`` (or a YAML path) → a validated :class:`RecGOATConfig`."""
    from recgoat.config import preset_params

    data = preset_params("recgoat", name)
    try:
        return RecGOATConfig(**data)
    except ValueError as e:
        raise ConfigError(f"RecGOAT preset {name}: {e}") from None


# ---------------------------------------------------------------------------------------------- graph cache
_GRAPHS: dict[str, sp.csr_matrix] = {}
# part of every cache key: bump it when knn_graph's output changes, so no disk cache of the old code is reused
GRAPH_VERSION = 1


def _feature_key(x: np.ndarray) -> str:
    """The features' content hash. Not the manifest's key: that names the encoder settings, not the matrix,
    so features re-encoded or edited under the same manifest were given the old graph (~30 ms for 30 MB)."""
    return hashlib.blake2b(np.ascontiguousarray(x).tobytes(), digest_size=16).hexdigest()[:20]


def cached_knn(x: np.ndarray, k: int, kind: str, mask: np.ndarray | None = None, cache_dir: str | None = None,
               symmetrize: bool = True) -> sp.csr_matrix:
    """Top-k cosine graph (row i: the neighbours node i aggregates from; symmetrised by default), reused in
    memory (and on disk under ``cache_dir``; a damaged or mismatched cache file is rebuilt)."""
    mkey = "" if mask is None else hashlib.blake2b(np.asarray(mask, bool).tobytes(), digest_size=8).hexdigest()
    key = f"{kind}-k{k}{'' if symmetrize else '-directed'}-v{GRAPH_VERSION}-{x.dtype}-{_feature_key(x)}{mkey}"
    if key in _GRAPHS:
        return _GRAPHS[key]
    path = Path(cache_dir) / f"knn-{key}.npz" if cache_dir else None
    if path is not None and path.parent.exists() and not path.parent.is_dir():  # was "gcfile: File exists"
        raise ConfigError(f"model.params.graph_cache_dir: {cache_dir} is a file, not a folder")
    g = None
    if path is not None and path.exists():
        try:
            g = sp.load_npz(path).tocsr()
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):  # damaged or not ours: rebuilt
            g = None
        if g is not None and g.shape != (len(x), len(x)):
            g = None
    if g is None:
        g = knn_graph(x, k, mask=mask, symmetrize=symmetrize)
        if path is not None:
            from recgoat.io import atomic_path

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    sp.save_npz(f, g)
    _GRAPHS[key] = g
    return g


def edge_ratings(dataset, adj: Tensor, n_users: int) -> Tensor:
    """Standardised training rating of each stored entry of the bipartite adjacency (0 when implicit)."""
    crow, col = adj.crow_indices().numpy(), adj.col_indices().numpy()
    row = np.repeat(np.arange(len(crow) - 1), np.diff(crow))
    df = dataset.split_frame("train")
    if "rating" not in df.columns:
        return torch.zeros(len(col))
    r = df["rating"].to_numpy(np.float64)
    std = r.std()
    if not np.isfinite(std) or std == 0:
        return torch.zeros(len(col))
    keys = df["user"].to_numpy(np.int64) * dataset.n_items + df["item"].to_numpy(np.int64)
    uniq, inv = np.unique(keys, return_inverse=True)
    mean_r = np.bincount(inv, weights=r) / np.bincount(inv)  # duplicates averaged
    u = np.where(row < n_users, row, col)
    i = np.where(row < n_users, col, row) - n_users
    pos = np.searchsorted(uniq, u * dataset.n_items + i)
    return torch.from_numpy(((mean_r[pos] - r.mean()) / std).astype(np.float32))


def _normalise(x: np.ndarray, how: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Rows centred on the mean of the present rows (``mask``) and/or L2-normalised; absent rows stay 0."""
    if how == "none":
        # a copy, C-contiguous: torch.from_numpy refuses negative strides (``x[::-1]``), and a buffer sharing the
        # caller's array would change with it, behind the eval-mode cache
        return np.array(x, dtype=np.float32, order="C", copy=True)
    present = np.ones(len(x), bool) if mask is None else mask
    out = x.astype(np.float32, copy=True)
    if how == "center_l2" and present.any():
        out -= out[present].mean(0, keepdims=True)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    out[~present] = 0.0
    return out


def resolve_projection_dtype(name: str) -> torch.dtype:
    """``auto`` → bfloat16 when this CPU multiplies bfloat16 natively (AVX512-BF16), else float32."""
    if name == "auto":
        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return torch.bfloat16 if probe is not None and probe() else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def _graph_state(view: bool, no_view: str, gat_layers: int, switch: bool, key: str) -> str:
    """The summary's ``item_graphs`` / ``user_graph``: ``on``, or ``off (why)``."""
    if not view:
        return f"off ({no_view})"
    if gat_layers == 0:
        return "off (gat_layers: 0)"
    return "on" if switch else f"off ({key}: false)"


def _subsample(ids: Tensor, n: int) -> Tensor:
    """At most ``n`` of ``ids`` (sorted), chosen uniformly: bounds the O(n²) in-batch alignment terms."""
    return ids if len(ids) <= n else torch.sort(ids[torch.randperm(len(ids))[:n]]).values


# ---------------------------------------------------------------------------------------------- requests
def unmet_request_message(c: RecGOATConfig, absent: list[str], empty: list[str], held: list[str],
                          dataset=None, given: bool = True, profile: bool = False) -> str:
    """The refusal of views ``c`` asks for itself that the features lack (``absent`` modalities; ``profile``: the
    user profiles of ``use_profile: true``) or that no item has (``empty``); ``held``: the views the features can
    give. ``dataset`` (when known) is named, and said to lack images or item text where that is why; ``given``:
    features were given at all."""
    of = f" for dataset {dataset.name!r}" if dataset is not None else ""
    views = absent + empty
    asked = [*([f"model.params.modalities names [{', '.join(c.modalities)}]"] if views else []),
             *(["model.params.use_profile is true"] if profile else [])]
    problems = [*(f"no {m} features" for m in absent),
                *(f"{m} features that no item has (every row zero"
                  f"{', no image in image_mask' if m == 'image' else ''})" for m in empty),
                *(["no user profiles"] if profile else [])]
    found = (f"no features were given{of}" if not given else
             f"the features given{of} have {' and '.join(problems)}; usable there: {' and '.join(held) or 'none'}")
    if dataset is not None:  # why encoding them would not help either
        lacks = [*(["images"] if "image" in views and not getattr(dataset, "has_images", True) else []),
                 *(["item text (profiles are written from it)"] if profile and not getattr(dataset, "has_text", True)
                   else [])]
        if lacks:
            found += f", and the dataset has no {' and no '.join(lacks)}"
    fixes = []
    if views:
        lacking = " and ".join(views)
        encode = "all" if len(views) > 1 else lacking
        fixes.append(f"Drop {lacking} from modalities, or give features with {lacking} (`recgoat encode {encode}`); "
                     f"left unset (its default, which the packaged presets keep), modalities takes the views that "
                     f"exist and notes the others")
    if profile:
        fixes.append("Set use_profile: false, or give user profiles (`recgoat encode users <dataset>` writes them "
                     "into the feature folder, or `--features auto` (`features: auto` in a config file) encodes them "
                     "with the rest); left unset (its default, which the packaged presets keep), use_profile takes "
                     "the profiles the features have and notes their absence")
    return f"recgoat: {' and '.join(asked)}, but {found}. {'. '.join(fixes)}"


def held_views(dims: dict[str, Any], empty: list[str] = ()) -> list[str]:
    """The views features of these ``dims`` (``dims_from``'s) can give, less those no item has (``empty``)."""
    return [*(m for m in MODALITIES if int(dims.get(f"{m}_dim", 0)) > 0 and m not in empty),
            *(["user profiles"] if int(dims.get("profile_dim", 0)) > 0 else [])]


class UnmetRequest(ConfigError):
    """Views the config asks for itself (``modalities`` named, ``use_profile: true`` given) that the features lack,
    refused by the constructor: judged from the kinds of features alone (their ``dims``), so the benchmark's
    preflight, which builds each model on stand-in features of the kinds a dataset has and never prepares it,
    refuses the pair before any cell trains (refused in ``prepare``, the cell failed after earlier ones had
    trained). :meth:`RecGOAT.build`, which has the dataset and
    the features, says it again naming them."""

    def __init__(self, config: RecGOATConfig, absent: list[str], profile: bool, dims: dict[str, Any]):
        self.config, self.absent, self.profile, self.dims = config, absent, profile, dims
        super().__init__(unmet_request_message(config, absent, [], held_views(dims), profile=profile))

    def said_for(self, dataset, features) -> str:
        return unmet_request_message(self.config, self.absent, [], held_views(self.dims), dataset,
                                     features is not None, self.profile)


# ---------------------------------------------------------------------------------------------- model
@register("recgoat")
class RecGOAT(Recommender):
    Config = RecGOATConfig
    needs_features = True  # the benchmark loads features for it; it still runs without them (ID view only)

    def __init__(self, n_users: int, n_items: int,
                 config: RecGOATConfig | dict[str, Any] | None = None, text_dim: int = 0, image_dim: int = 0,
                 profile_dim: int = 0, **dims):
        super().__init__(n_users, n_items, config, text_dim=text_dim, image_dim=image_dim,
                         profile_dim=profile_dim, **dims)
        c = self.config
        d = c.embedding_dim
        self.init_id_embeddings(d)
        self._views_ready = False  # prepare() has given the graphs and feature buffers forward_all reads
        feat_dims = {"text": text_dim, "image": image_dim}
        # modalities named in the config is a request (an ablation: --set model.params.modalities=[image]), and so
        # is use_profile: true given; only their defaults fall back to the views that exist, with a note (an
        # explicit profile branch on data without profiles trained without it, and read as a run with it). A saved
        # model's config sets every field, and was checked when it was trained.
        if not is_full_config(c):
            given = c.model_fields_set
            absent = [m for m in c.modalities if feat_dims[m] == 0] if "modalities" in given else []
            profile = "use_profile" in given and c.use_profile and profile_dim == 0
            if absent or profile:
                raise UnmetRequest(c, absent, profile, {"text_dim": text_dim, "image_dim": image_dim,
                                                        "profile_dim": profile_dim})
        self.modalities = [m for m in c.modalities if feat_dims[m] > 0]
        item_layers = c.gat_layers if c.item_graph else 0
        self.proj_dtype = resolve_projection_dtype(c.projection_dtype)
        gat = dict(heads=c.gat_heads, v2=c.gat_v2, dropout=c.gat_dropout, impl=c.gat_impl, concat=c.gat_concat,
                   proj_dtype=self.proj_dtype, activation=c.gat_activation)
        # every component below draws its weights from a stream of its own (ID tables first, from the global
        # one, exactly as LightGCN does): an ablation that leaves a branch out starts the others as `full` does
        self.branches = nn.ModuleDict()
        self.maps = nn.ModuleDict()
        for m in self.modalities:
            with self.component_init(f"branch.{m}"):
                self.branches[m] = ModalityGATBranch(feat_dims[m], d, n_layers=item_layers, **gat)
            with self.component_init(f"map.{m}"):
                self.maps[m] = AdaptiveMap(d)
        self.use_profile = c.use_profile and profile_dim > 0
        self.profile_branch = None
        if self.use_profile:
            with self.component_init("profile_branch"):
                self.profile_branch = ModalityGATBranch(profile_dim, d, n_layers=c.gat_layers if c.user_graph else 0,
                                                        **gat)
        with self.component_init("propagation"):
            self.propagation = RatingAwareLightGCN(n_users, d, c.n_layers, attention=c.rating_attention)
        n_views = 1 + len(self.modalities)
        inert = inert_settings(c, self.modalities, self.use_profile)  # what the features leave with nothing to do
        # a fixed weight for a view the features lack would be silently dropped (γ_id = 1 − the rest then differs
        # from the one asked for, and every grid point of that gamma gives the same model); with no item view at
        # all there is no fusion to weigh, so it was ignored without a word. A saved model's config is not refused
        # for it (it must still load): the weight is reported instead.
        gammas = {"text": c.gamma_t, "image": c.gamma_v}
        missing = [m for m in self.modalities if gammas[m] is None]
        if (c.gamma_t is not None or c.gamma_v is not None) and missing:  # the config made the fusion simplex
            keys = ", ".join(f"model.params.{'gamma_t' if m == 'text' else 'gamma_v'} ({m})" for m in missing)
            raise ConfigError(f"recgoat: fixed fusion weights need a gamma for every view used; set {keys} "
                              f"too, or unset the other gamma")
        unused = [m for m in MODALITIES if gammas[m] is not None and m not in self.modalities]
        if unused and n_views == 1 and is_full_config(c):
            inert.update({"gamma_t" if m == "text" else "gamma_v": f"no {m} view" for m in unused})
        elif unused:
            keys = ", ".join(f"model.params.{'gamma_t' if m == 'text' else 'gamma_v'}" for m in unused)
            raise ConfigError(f"recgoat: {keys} weights the {' and '.join(unused)} view, but the features "
                              f"given have no {' or '.join(unused)} features; unset it or give those features")
        self.fusion: nn.Module | None = None  # ID view alone: nothing to fuse
        fixed = None
        if n_views == 1:
            pass
        elif c.fusion == "concat":
            with self.component_init("fusion"):
                self.fusion = ConcatFusion(n_views, d)
        elif c.fusion == "sum":
            self.fusion = SumFusion()
        else:
            if c.gamma_t is not None or c.gamma_v is not None:
                gm = [float(gammas[m]) for m in self.modalities]
                fixed = [max(0.0, 1.0 - sum(gm)), *gm]  # the config allows a sum of 1 + 1e-9
            self.fusion = SimplexFusion(n_views, fixed)
        # with no propagation layer the edge attention weighs nothing (its output is never read): on by default,
        # so not refused, but not reported as on either
        attention = c.rating_attention and c.n_layers > 0
        if c.rating_attention and not attention:
            inert["rating_attention"] = "no user-item propagation (n_layers: 0)"
        missing = [m for m in c.modalities if feat_dims[m] == 0]
        self.summary = {
            "modalities_used": list(self.modalities),
            "modalities_missing": missing,
            "profile_branch": self.use_profile,
            "profile_missing": c.use_profile and profile_dim == 0,
            "fusion": c.fusion if n_views > 1 else "id_only",
            "rating_attention": attention,
            **self._alignment_flags(self.modalities),
            "align_target": c.align_target,
            "projection_dtype": str(self.proj_dtype).removeprefix("torch."),
            # what an ablation switched off, said outright (absent *_edges keys alone did not say it)
            "item_graphs": _graph_state(bool(self.modalities), "no item view", c.gat_layers, c.item_graph,
                                        "item_graph"),
            "user_graph": _graph_state(self.use_profile, "no profile branch", c.gat_layers, c.user_graph,
                                       "user_graph"),
        }
        if isinstance(self.fusion, SimplexFusion):  # fixed γ (a grid point) or learned softmax weights
            self.summary["gamma_fixed"] = fixed is not None
            if fixed is not None:
                self.summary["gamma"] = dict(zip(["id", *self.modalities], [round(x, 4) for x in fixed]))
        self._absent_note: str | None = None
        if missing or (c.use_profile and profile_dim == 0):
            absent = missing + (["profile"] if c.use_profile and profile_dim == 0 else [])
            self._absent_note = f"features absent for {', '.join(absent)}: the model runs without them"
        # settings left in place that nothing reads here (a preset's item_k under no_item_graph, a view the
        # features lack): the config refuses the others, so what remains is reported rather than silently dropped
        self._inert_note = f"settings that do nothing here: {inert_message(c, inert)}" if inert else None
        self._set_note([])

    def _set_note(self, found: list[str]) -> None:
        """The summary's ``note``: the construction's notes (features absent, inert settings), then what
        ``prepare`` ``found`` in the data; no key when there is nothing to say."""
        notes = [n for n in (self._absent_note, self._inert_note, *found) if n]
        self.summary.pop("note", None)
        if notes:
            self.summary["note"] = "; ".join(notes)

    def _alignment_flags(self, alignable: list[str]) -> dict[str, Any]:
        """The summary's ``cmcl`` / ``oat`` entries: whether each term can act, given the item views that have
        at least two present rows (``alignable``; a term with fewer in a batch is skipped, i.e. 0)."""
        c = self.config
        return {"cmcl": c.lambda_cl > 0 and (bool(alignable) or (self.use_profile and c.align_users)),
                "oat": (c.lambda_ot > 0 and bool(alignable))
                and (("sinkhorn divergence" if c.ot_debias else "entropic <T,C>")
                     + ("" if c.ot_normalize else " on raw embeddings"))}

    def read_dims(self) -> dict[str, Any]:
        """``dims`` without the matrices this configuration leaves out (``modalities``, ``use_profile``)."""
        dims = dict(self.dims)
        for name in ("text", "image"):
            if name not in self.modalities and f"{name}_dim" in dims:
                dims[f"{name}_dim"] = 0
        if not self.use_profile and "profile_dim" in dims:
            dims["profile_dim"] = 0
        return dims

    # ----------------------------------------------------------------- construction
    @classmethod
    def feature_kinds(cls, config: RecGOATConfig) -> tuple[str, ...]:
        """Its modalities, and the user profiles when the profile branch is on."""
        return (*config.modalities, *(("users",) if config.use_profile else ()))

    @classmethod
    def build(cls, dataset, config: RecGOATConfig | dict[str, Any] | None = None, features=None) -> "RecGOAT":
        try:
            return super().build(dataset, config, features)
        except UnmetRequest as e:  # the constructor's, from the kinds of features: said with the dataset's name
            raise ConfigError(e.said_for(dataset, features)) from None

    @classmethod
    def dims_from(cls, dataset, features=None) -> dict[str, Any]:
        def dim(name: str, per: str) -> int:
            x = getattr(features, name, None)
            if x is None:
                return 0
            shape = getattr(x, "shape", ())
            if len(shape) == 2 and shape[1] > 0:
                return int(shape[1])  # its values are checked once, by prepare (build calls it next)
            return int(feature_matrix(x, name, "RecGOAT", per).shape[1])  # lists; or refused here

        if features is None:
            return {"text_dim": 0, "image_dim": 0, "profile_dim": 0}
        return {"text_dim": dim("text", "item"), "image_dim": dim("image", "item"), "profile_dim": dim("profile", "user")}

    def checked_features(self, features) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Each used view's feature matrix (and its presence mask: the image mask, and for text the rows that are
        not all zero when some are; None when every text is present), checked against the shapes the model was built
        for: a :class:`DataError` before :meth:`prepare` changes anything, so a refused call leaves the model
        as it was (it set the new graph and "not ready" first, and the model could neither score nor save).
        While it is being built (neither prepared nor loaded) a matrix with another number of rows is refused in
        the words every feature model uses: "was built with" named a shape no model had been built with."""
        # load() sets _saved_feature_digests (None for a model saved before digests were recorded)
        built = self._prepared or hasattr(self, "_saved_feature_digests")
        used = [*self.modalities, *(["profile"] if self.use_profile else [])]
        if features is None and used:
            what = [*([f"item features ({', '.join(self.modalities)})"] if self.modalities else []),
                    *(["user profile features"] if self.use_profile else [])]
            raise ConfigError(none_given_message("RecGOAT", " and ".join(what)))
        out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for m in used:
            per, rows = ("user", self.n_users) if m == "profile" else ("item", self.n_items)
            want = (rows, self.dims[f"{m}_dim"])
            kind = "profiles" if m == "profile" else f"{m} features"
            x = getattr(features, m, None)
            if x is None:
                raise DataError(None, f"RecGOAT was built with {kind} of shape {want}, but the features given have "
                                      f"no {m} features")
            x = feature_matrix(x, m, "RecGOAT", per)
            if x.shape != want:
                if not built and x.shape[1] == want[1]:  # dims_from took the width from these very features
                    raise ConfigError(wrong_rows_message("RecGOAT", m, x.shape, rows))
                raise DataError(None, f"RecGOAT was built with {kind} of shape {want}; the features given have "
                                      f"{tuple(x.shape)}")
            mask = None
            if m != "profile":  # an all-zero row is an absent text or image (the peers read it so too)
                present = view_presence(features, m, x, self.n_items, "RecGOAT")
                # images: always a mask; texts: only when some item has none (else no mask, as before)
                mask = present if m == "image" or not present.all() else None
            out[m] = (x, mask)
        return out

    def empty_views(self, views: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> list[str]:
        """The used modalities of :meth:`checked_features`' ``views`` that no item has (their mask all False)."""
        return [m for m in self.modalities if views[m][1] is not None and not views[m][1].any()]

    def refuse_named_views_empty(self, dataset, empty: list[str]) -> None:
        """A :class:`ConfigError` when the config names ``modalities`` itself and no item has one of them
        (``empty``: :meth:`empty_views`, every row zero): ``modalities`` left at its default runs on such a view's
        zeros with a note. Those the features lack altogether the constructor refused (:class:`UnmetRequest`);
        emptiness needs the matrices, which the benchmark's preflight does not read. A saved model's config sets
        every field, and was checked when it was trained."""
        c = self.config
        if "modalities" not in c.model_fields_set or is_full_config(c):
            return
        if empty:
            raise ConfigError(unmet_request_message(c, [], empty, held_views(self.dims, empty), dataset))

    def prepare(self, dataset, features=None) -> None:
        """Training graphs (user-item with ratings) and the fixed kNN graphs; features become buffers."""
        views = self.checked_features(features)
        empty = self.empty_views(views)
        self.refuse_named_views_empty(dataset, empty)  # before anything changes
        super().prepare(dataset, features)
        self._views_ready = False  # until every graph and buffer below is in place
        c = self.config
        asked = [*c.modalities, *(["profile"] if c.use_profile else [])]
        # a view no item has is zeros: with no other view, the ID view alone trains, as with no features
        if asked and len(empty) == len(self.modalities) and not self.use_profile:
            # only a stdout line said it: a run named recgoat was LightGCN with rating attention
            why = ("no features were given" if features is None else
                   "the features given hold none of them" if not empty else
                   f"no item has any of them (the {' and '.join(empty)} features given are all zero rows)")
            warnings.warn(f"recgoat: the {', '.join(asked)} views are asked for, but {why}: this trains the ID view "
                          f"alone (LightGCN with rating attention); encode them with `recgoat encode all` and pass "
                          f"the folder (--features)", UserWarning, stacklevel=2)
        adj = normalized_bipartite(self._train_csr)
        ratings = edge_ratings(dataset, adj, self.n_users)
        # every fixed tensor is a non-persistent buffer (register_fixed) in the weights' dtype and on their device:
        # .double() / .to() then reach it, and it is never saved
        like = self.user_emb.weight
        self.propagation.set_graph(adj, ratings, like)
        mans = getattr(features, "manifests", {}) or {}
        self.summary.pop("texts_missing", None)
        register_fixed(self, "text_mask", None)  # set below when some item has no text
        for m in self.modalities:
            x, mask = views[m]
            if mask is not None:
                register_fixed(self, f"{m}_mask", torch.from_numpy(mask))
                self.summary[f"{m}s_missing"] = int((~mask).sum())
            self._register_features(f"feat_{m}", _normalise(x, c.feature_norm, mask))
            if c.item_graph and c.gat_layers > 0:
                g = cached_knn(x, c.item_k, f"item-{m}", mask, c.graph_cache_dir)
                register_fixed(self, f"edges_{m}", csr_to_edge_index(g))
                self.summary[f"item_graph_{m}_edges"] = int(g.nnz)
            else:
                setattr(self, f"edges_{m}", None)
        if self.use_profile:
            x, _ = views["profile"]
            self._register_features("feat_profile", _normalise(x, c.feature_norm))
            if c.user_graph and c.gat_layers > 0:
                g = cached_knn(x, c.user_k, "user", None, c.graph_cache_dir,
                               symmetrize=c.user_graph_symmetric)
                register_fixed(self, "edges_profile", csr_to_edge_index(g))
                self.summary["user_graph_edges"] = int(g.nnz)
            else:
                self.edges_profile = None
        # a view with fewer than two real images (texts) is zero (or one point) everywhere: nothing to align
        few = {m: int(mask.sum()) for m in self.modalities if (mask := self.view_mask(m)) is not None}
        # a view no item has is zero everywhere: "feature views used: image" alone read as if images were used
        self.summary.pop("empty_views", None)
        if any(n == 0 for n in few.values()):
            self.summary["empty_views"] = [m for m, n in few.items() if n == 0]
        alignable = [m for m in self.modalities if few.get(m, 2) >= 2]
        self.summary.update(self._alignment_flags(alignable))
        notes = []
        for m, n in few.items():
            if n < 2:
                notes.append(f"{n} of {self.n_items} items have {'an image' if m == 'image' else 'a text'}: "
                             f"the {m} view is zero and is not aligned")
        # without ratings (implicit data, or all equal) every edge's rating is 0: the attention still learns,
        # from the two endpoint embeddings alone, and its rating coefficient is never moved
        self.summary["rating_attention"] = c.rating_attention and c.n_layers > 0
        if self.summary["rating_attention"] and not bool(ratings.any()):
            self.summary["rating_attention"] = "endpoints only (no ratings)"
            notes.append("rating_attention: the training split has no ratings (or all are equal), so each edge is "
                         "weighed from its two endpoint embeddings alone")
        self._set_note(notes)
        # the encoders of the views this model reads (not every file in the folder: a text-only run listed the
        # image encoder), and where the profiles came from (§1: template-made ones are labelled in every output)
        used = [*self.modalities, *(["profile"] if self.use_profile else [])]
        encoders = {k: mans[k].get("encoder") for k in used if isinstance(mans.get(k), dict)}
        self.summary.pop("encoders", None)
        self.summary.pop("profile_source", None)
        if encoders:
            self.summary["encoders"] = encoders
        prof = mans.get("profile") if self.use_profile else None
        if isinstance(prof, dict) and (prof.get("label") or prof.get("profile_backend")):
            llm = f"{prof.get('profile_backend')}:{prof.get('llm_model')}"
            self.summary["profile_source"] = prof.get("label") or llm
        self._views_ready = True

    def _register_features(self, name: str, x: np.ndarray) -> None:
        """Frozen features as a non-persistent buffer: in ``proj_dtype`` when that is bfloat16 (the projection reads
        them so), else in the weights' dtype (a model made ``.double()`` before ``prepare`` projects in float64)."""
        like = self.user_emb.weight
        if self.proj_dtype != torch.float32:
            like = like.new_empty(0, dtype=self.proj_dtype)
        register_fixed(self, name, torch.from_numpy(x), like)

    # ----------------------------------------------------------------- forward
    def view_mask(self, m: str) -> Tensor | None:
        """Which items have modality ``m`` (``image_mask``, ``text_mask``); None when all of them do (every
        text present: no mask is applied, as before text masks existed)."""
        return getattr(self, f"{m}_mask", None)

    def item_views(self, items: Tensor | None = None) -> dict[str, Tensor]:
        """``H_m`` (``I × d``, or the rows ``items`` only) per used modality; items without an image (a text)
        get a zero image (text) view."""
        out = {}
        for m in self.modalities:
            h = self.branches[m](getattr(self, f"feat_{m}"), getattr(self, f"edges_{m}"), items)
            mask = self.view_mask(m)
            if mask is not None:
                mask = mask if items is None else mask[items]
                h = h * mask[:, None].to(h.dtype)
            out[m] = F.dropout(h, self.config.view_dropout, self.training)
        return out

    def profile_view(self) -> Tensor | None:
        if not self.use_profile:
            return None
        return F.dropout(self.profile_branch(self.feat_profile, self.edges_profile), self.config.view_dropout,
                         self.training)

    def forward_all(self, items: Tensor | None = None) -> dict[str, Any]:
        """Every representation of one forward pass: ``z_u``, ``z_id``, ``h`` (views), ``hat``, ``z_i``, ``h_u``.

        With ``items`` (sorted, unique ids) the item-side views ``h``, ``hat``, ``z_i`` are computed for
        those rows only (``z_id`` stays whole: propagation needs every node). A training step passes the
        items its loss reads, so the item-item attention runs over their in-edges alone; the values, and
        hence the loss and its gradients, are those of the full pass.
        """
        if not self._views_ready:
            raise RuntimeError("recgoat: call prepare(dataset, features) before training or scoring (a loaded model "
                               "keeps its final embeddings, but not the graphs and features that recompute them)")
        h_u = self.profile_view()
        users0 = self.user_emb.weight if h_u is None else self.user_emb.weight + h_u
        z = self.propagation(torch.cat([users0, self.item_emb.weight]))
        z_u, z_id = torch.split(z, [self.n_users, self.n_items])  # one backward pass (two slices: two zero-fills)
        h = self.item_views(items)
        hat = {m: self.maps[m](h[m]) for m in self.modalities}
        z_id_rows = z_id if items is None else z_id[items]
        z_i = self.fusion([z_id_rows, *hat.values()]) if self.modalities else z_id_rows
        return {"z_u": z_u, "z_id": z_id, "h": h, "hat": hat, "z_i": z_i, "h_u": h_u, "items": items}

    @staticmethod
    def _rows(out: dict[str, Any], ids: Tensor) -> Tensor:
        """Positions of item ``ids`` in the item-side tensors of ``out`` (all items, or ``out["items"]``)."""
        return ids if out["items"] is None else torch.searchsorted(out["items"], ids)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        out = self.forward_all()
        if not self.training and isinstance(self.fusion, SimplexFusion) and self.modalities:
            w = self.fusion.weights().detach().tolist()
            self.summary["gamma"] = dict(zip(["id", *self.modalities], [round(x, 4) for x in w]))
        return out["z_u"], out["z_i"]

    # ----------------------------------------------------------------- objective
    def alignment_losses(self, out: dict[str, Any], users: Tensor, pos: Tensor) -> dict[str, Tensor]:
        """CMCL and OAT on the batch's unique positive items (and users)."""
        c = self.config
        zero = out["z_i"].new_zeros(())
        terms = {"cmcl": zero, "oat": zero}
        if not (c.lambda_cl > 0 or c.lambda_ot > 0):
            return terms
        items = torch.unique(pos)
        rows = self._rows
        target_all = out["z_i"] if c.align_target == "unified" else out["z_id"]
        if c.align_detach_target:
            target_all = target_all.detach()
        target_rows = rows if c.align_target == "unified" else (lambda _out, ids: ids)  # z_id is always whole
        masks = {m: self.view_mask(m) for m in self.modalities}
        keep = {m: (None if masks[m] is None else masks[m][items]) for m in self.modalities}
        if c.lambda_cl > 0:
            cl = zero
            cl_items = _subsample(items, c.cl_max_points)
            for m in self.modalities:
                sel = cl_items if keep[m] is None else cl_items[masks[m][cl_items]]
                if len(sel) > 1:
                    cl = cl + symmetric_info_nce(out["h"][m][rows(out, sel)], target_all[target_rows(out, sel)], c.tau)
            if self.use_profile and c.align_users:
                uu = _subsample(torch.unique(users), c.cl_max_points)
                if len(uu) > 1:
                    z_u = out["z_u"].detach() if c.align_detach_target else out["z_u"]
                    cl = cl + symmetric_info_nce(out["h_u"][uu], z_u[uu], c.tau)
            terms["cmcl"] = cl
        if c.lambda_ot > 0 and self.modalities:
            sub = _subsample(items, c.ot_max_points)
            pairs = []
            for m in self.modalities:
                sel = sub if keep[m] is None else sub[keep[m][torch.searchsorted(items, sub)]]
                pairs.append((out["hat"][m][rows(out, sel)], target_all[target_rows(out, sel)]))
            # every modality's transport problems in one batched Sinkhorn
            terms["oat"] = oat_losses(pairs, c.ot_eps, c.ot_iters, tol=1e-5, debias=c.ot_debias,
                                      normalize=c.ot_normalize)
        return terms

    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        c = self.config
        items = torch.unique(torch.cat([pos, neg])) if c.train_item_subset and self.modalities else None
        out = self.forward_all(items)
        z_u, z_i = out["z_u"], out["z_i"]
        bpr = bpr_loss(z_u[users], z_i[self._rows(out, pos)], z_i[self._rows(out, neg)])
        reg = l2_reg(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        terms = self.alignment_losses(out, users, pos)
        total = bpr + c.reg_weight * reg + c.lambda_cl * terms["cmcl"] + c.lambda_ot * terms["oat"]
        out_terms = {"loss": total, "bpr": bpr, "reg": reg, **terms}
        if c.feature_reg > 0:
            freg = self.feature_weight_norm()
            out_terms["loss"] = total + c.feature_reg * freg
            out_terms["feature_reg"] = freg
        return out_terms

    def feature_weight_norm(self) -> Tensor:
        """``Σ‖W‖²`` over the weight matrices of the feature branches (projections and GAT layers)."""
        branches = [*self.branches.values(), *([self.profile_branch] if self.profile_branch is not None else [])]
        weights = [p for b in branches for name, p in b.named_parameters() if p.dim() > 1 or "att" in name]
        return sum((w.pow(2).sum() for w in weights), torch.zeros(()))
