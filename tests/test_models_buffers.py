"""A model's fixed tensors — sparse graphs, frozen features, index tensors — are non-persistent buffers
(``register_fixed``): ``.double()`` and ``.to(device)`` cast and move them with the weights, and ``state_dict``
(what a checkpoint holds) has none of them.

``spmm`` used to cast a float32 graph to a float64 input on every call, because the peers' graphs were plain
attributes that ``.double()`` did not reach; it now refuses mixed dtypes, so the float64 tests below fail if any
graph a step reads is still outside the module's buffers."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from conftest import subset_users
from recgoat.graphs.bipartite import normalized_bipartite, spmm
from recgoat.models import Recommender, get_model_class
from recgoat_helpers import random_features

TRAINABLE = ["bprmf", "lightgcn", "vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn", "recgoat"]
# variants whose fixed tensors differ: BM3's frozen features (no parameters), RecGOAT's plain propagation
# (a submodule without weights of its own)
VARIANTS = [(n, {}) for n in TRAINABLE] + [("bm3", {"finetune_features": False}),
                                           ("mgcn", {"finetune_features": False}),
                                           ("recgoat", {"rating_attention": False})]
IDS = [n + "".join(f"-{k}={v}" for k, v in c.items()) for n, c in VARIANTS]

_GAT = [f"{branch}.{part}" for branch in ("branches.image", "branches.text", "profile_branch")
        for part in ("convs.0.att_dst", "convs.0.att_src", "convs.0.bias", "convs.0.lin.weight", "proj.bias",
                     "proj.weight")]
_RECGOAT = {*_GAT, "fusion.logits", "item_emb.weight", "maps.image.delta", "maps.text.delta", "user_emb.weight"}
_PEER = {"item_emb.weight", "user_emb.weight"}
_BM3 = {*_PEER, "predictor.bias", "predictor.weight", "proj.image.bias", "proj.image.weight", "proj.text.bias",
        "proj.text.weight"}
_MGCN = {*_PEER, "fuser.attention.0.bias", "fuser.attention.0.weight", "fuser.attention.2.weight",
         *(f"fuser.prefer.{m}.{w}" for m in ("image", "text") for w in ("bias", "weight")),
         *(f"purifier.{m}.{p}.{w}" for m in ("image", "text") for p in ("gate", "transform")
           for w in ("bias", "weight"))}
# state_dict keys recorded before the graphs became buffers: saved models and trainer checkpoints hold these
KEYS_BEFORE: dict[str, set[str]] = {
    "mostpop": {"popularity"},
    "bprmf": _PEER,
    "lightgcn": _PEER,
    "vbpr": {"content_bias.weight", "item_bias", "item_id.weight", "project.weight", "user_content.weight",
             "user_id.weight"},
    "freedom": {*_PEER, "proj.image.weight", "proj.text.weight"},
    "lgmrec": {*_PEER, "hyper.image.hyperedges", "hyper.text.hyperedges", "proj.image.bias", "proj.image.weight",
               "proj.text.bias", "proj.text.weight"},
    "bm3": {*_BM3, "feat_params.image", "feat_params.text"},
    "bm3-finetune_features=False": _BM3,
    # added after the change: their keys as they first were
    "lattice": {*_PEER, "modal_logits", "proj.image.bias", "proj.image.weight", "proj.text.bias", "proj.text.weight"},
    # MGCN's since its session-27 audit (session 26's had a gate prefer.shared, no fuser. prefix, frozen features)
    "mgcn": {*_MGCN, "feat_params.image", "feat_params.text"},
    "mgcn-finetune_features=False": _MGCN,
    "recgoat": {*_RECGOAT, "propagation.bilinear", "propagation.rating_coef"},
    "recgoat-rating_attention=False": _RECGOAT,
}
# the fixed tensors that became buffers (none of them may be saved)
GRAPHS = {"adj", "pruned_adj", "ii_graph", "interactions.m", "interactions.mt", "user_mean.m", "user_mean.mt",
          "initial.image.m", "initial.image.mt", "initial.text.m", "initial.text.mt", "ii_image", "ii_text",
          "user_items.m", "user_items.mt", *(f"item_graphs.{m}.{t}" for m in ("image", "text") for t in ("m", "mt")),
          *(f"propagation.{k}" for k in ("adj", "_row", "_perm_t", "_u", "_i", "_rating"))}


@pytest.fixture(scope="module")
def data(ml_small):
    ds = subset_users(ml_small, 30)
    return ds, random_features(ds, 0, text=6, image=5, profile=4)


def _config(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    # float32 projections: "auto" is bfloat16 on some CPUs, whose features stay bfloat16 by design
    extra = {"projection_dtype": "float32"} if name == "recgoat" else {}
    return {"embedding_dim": 8, **extra, **cfg} if get_model_class(name).trainable else cfg


def _unprepared(name: str, cfg: dict[str, Any], ds, feats) -> Recommender:
    """The model as ``load`` constructs it: no graphs yet."""
    torch.manual_seed(0)
    cls = get_model_class(name)
    return cls(ds.n_users, ds.n_items, _config(name, cfg), **cls.dims_from(ds, feats if cls.needs_features else None))


def _build(name: str, cfg: dict[str, Any], ds, feats) -> Recommender:
    torch.manual_seed(0)
    cls = get_model_class(name)
    return cls.build(ds, _config(name, cfg), feats if cls.needs_features else None)


def _step(model: Recommender) -> Tensor:
    """One training step as the trainer takes it (epoch hook, loss, backward, update); its loss."""
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))  # FREEDOM prunes its graph here, after .double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model.loss(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8]))["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def _check_float64_step_and_scores(model: Recommender) -> None:
    floats = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float64 for t in floats)
    loss = _step(model)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    assert all(p.grad.dtype == torch.float64 for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        u, i = model.embeddings()
    assert u.dtype == i.dtype == torch.float64
    assert torch.isfinite(model.score([0, 1])).all()


def _loose_tensors(obj: Any, seen: set[int] | None = None) -> list[str]:
    """Tensors a module holds outside its parameters and buffers (in plain attributes, dicts, lists or plain
    objects), which ``.to()`` / ``.double()`` would not reach. The evaluation cache (``_cached``) and the GAT's
    per-graph caches, rebuilt from the buffers they are keyed on, are derived, not fixed inputs."""
    seen = set() if seen is None else seen
    found: list[str] = []
    for mod_name, mod in obj.named_modules():
        for key, value in vars(mod).items():
            if key.startswith("_cached") or key.startswith(("_graph", "_stacked")) or key in (
                    "_parameters", "_buffers", "_modules"):
                continue
            stack = [(f"{mod_name}.{key}", value)]
            while stack:
                where, v = stack.pop()
                if id(v) in seen or isinstance(v, nn.Module):
                    continue
                seen.add(id(v))
                if isinstance(v, Tensor):
                    found.append(where)
                elif isinstance(v, dict):
                    stack += [(f"{where}[{k!r}]", x) for k, x in v.items()]
                elif isinstance(v, (list, tuple)):
                    stack += [(f"{where}[{j}]", x) for j, x in enumerate(v)]
                elif hasattr(v, "__dict__") and not isinstance(v, type) and type(v).__module__.startswith("recgoat"):
                    stack += [(f"{where}.{k}", x) for k, x in vars(v).items()]
    return found


@pytest.mark.parametrize("name, cfg", VARIANTS, ids=IDS)
def test_a_double_model_trains_and_scores_in_float64(data, name, cfg):
    """.double() reaches every graph and feature matrix (buffers, sparse CSR ones included), so a step and the
    scores run in float64 with spmm's per-call cast gone (it raised on a float32 graph)."""
    ds, feats = data
    _check_float64_step_and_scores(_build(name, cfg, ds, feats).double())


@pytest.mark.parametrize("name, cfg", VARIANTS, ids=IDS)
def test_a_model_made_double_before_prepare_builds_its_graphs_in_float64(data, name, cfg):
    """A loaded model made .double() and then fitted: prepare() builds the graphs and features after the cast, in
    the weights' dtype (they were float32, and the first product failed)."""
    ds, feats = data
    model = _unprepared(name, cfg, ds, feats).double()
    model.prepare(ds, feats if model.needs_features else None)
    _check_float64_step_and_scores(model)


@pytest.mark.parametrize("name, cfg", VARIANTS, ids=IDS)
def test_no_fixed_tensor_is_held_outside_the_buffers(data, name, cfg):
    """Every tensor a built model holds is a parameter or a buffer, so .to(device) moves them all; here to
    PyTorch's shape-only ``meta`` device (a GPU stand-in every machine has)."""
    ds, feats = data
    model = _build(name, cfg, ds, feats)
    assert _loose_tensors(model) == []
    model.on_epoch_start(0, np.random.default_rng(0))  # FREEDOM's pruned graph too
    assert _loose_tensors(model) == []
    model.to("meta")
    assert all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])


@pytest.mark.parametrize("name, cfg", [("mostpop", {}), *VARIANTS], ids=["mostpop", *IDS])
def test_state_dict_keys_are_those_before_the_graphs_became_buffers(data, tmp_path, name, cfg):
    """Non-persistent buffers stay out of state_dict: a built model's keys are those recorded before the change
    (and those of the model load() constructs), so models and trainer checkpoints saved before still load; a
    saved model loads back, and its prepare() rebuilds the graphs it was saved without."""
    ds, feats = data
    label = name + "".join(f"-{k}={v}" for k, v in cfg.items())
    model = _build(name, cfg, ds, feats)
    keys = set(model.state_dict())
    assert keys == KEYS_BEFORE[label] == set(_unprepared(name, cfg, ds, feats).state_dict())
    assert not keys & GRAPHS
    held = {n for n, _ in model.named_buffers()}
    assert held & GRAPHS or name in ("mostpop", "bprmf", "vbpr")  # the graphs are there, as buffers
    model.eval()
    before = model.score([0, 1])
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert set(loaded.state_dict()) == keys and not {n for n, _ in loaded.named_buffers()} & GRAPHS
    assert torch.equal(loaded.score([0, 1]), before)  # its saved embeddings, recognised by the weights' digest
    loaded.prepare(ds, feats if loaded.needs_features else None)
    assert {n for n, _ in loaded.named_buffers()} == held
    torch.testing.assert_close(loaded.score([0, 1]), before)


def test_spmm_refuses_mixed_dtypes_with_a_clear_error():
    """No silent per-call cast (a copy of the graph every product) and no bare "expected scalar type"."""
    import scipy.sparse as sp

    adj = normalized_bipartite(sp.csr_matrix(np.eye(3, dtype=np.float32)))
    with pytest.raises(RuntimeError, match=r"spmm: sparse matrix of torch.float32 times dense of torch.float64"):
        spmm(adj, torch.ones(6, 2, dtype=torch.float64))
    assert spmm(adj.double(), torch.ones(6, 2, dtype=torch.float64)).dtype == torch.float64


def test_the_evaluation_cache_follows_double_and_back(data):
    """The cache key holds every parameter's and buffer's dtype: embeddings cached in float32 are recomputed after
    .double() (from float64 graphs), and again after .float()."""
    ds, feats = data
    model = _build("lightgcn", {}, ds, feats).eval()
    first = model.final_embeddings()
    assert model.final_embeddings() is first  # cached
    model.double()
    assert model.adj.dtype == torch.float64 and model.adj.layout == torch.sparse_csr
    again = model.final_embeddings()
    assert again is not first and model.final_embeddings() is again
    torch.testing.assert_close(again, first)
    model.float()
    assert model.adj.dtype == torch.float32 and model.final_embeddings() is not again


def test_the_evaluation_cache_follows_weights_swapped_through_data(data):
    """``p.data = other`` (copying weights in by hand) leaves the parameter's version as it was: the key holds
    the data's address too, so the embeddings are computed again from the new weights."""
    ds, feats = data
    model = _build("lightgcn", {}, ds, feats).eval()
    first = model.final_embeddings()
    for weight in model.parameters():
        weight.data = weight.data * 2
    again = model.final_embeddings()
    assert again is not first and model.final_embeddings() is again
    for a, b in zip(again, first):  # LightGCN: the propagation is linear in the weights
        torch.testing.assert_close(a, b * 2)


@pytest.mark.parametrize("name", ["freedom", "lgmrec"])
def test_half_casts_the_sparse_graphs_and_float_restores_them(data, name):
    """torch's Module._apply casts sparse CSR buffers like dense ones: values to float16, indices left int64."""
    ds, feats = data
    model = _build(name, {}, ds, feats).half()
    sparse = [t for t in model.buffers() if t.layout == torch.sparse_csr]
    assert sparse and all(t.dtype == torch.float16 and t.col_indices().dtype == torch.int64 for t in sparse)
    model.float()
    assert all(t.dtype == torch.float32 for t in model.buffers() if t.is_floating_point())
