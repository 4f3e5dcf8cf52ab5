"""Paper properties of the peers (METHOD.md §8) and of the protocol (§6), each checked by hand on tiny
synthetic inputs (no shared data needed).

What test_peers.py / test_peers_math.py / test_models_core.py / test_metrics.py already check is not repeated
here; this file pins:

- no peer reads anything but the training split (graphs, statistics, losses: no valid/test leakage);
- LightGCN / BPR-MF: BPR on the final embeddings, L2 on the batch's layer-0 (ego) embeddings only;
- FREEDOM: frozen item-item graph built from the features alone; evaluation on the full user-item graph
  plus ``S^{L_ii} E_I`` on the item side only; the per-epoch pruned graph is a re-normalised subgraph of
  the training edges; the modality terms are BPR of the (propagated) user against ``x W_m``;
- LGMRec: user modality embeddings start as the mean of their training items'; the fusion
  ``E^lge + α·norm(E^ghe)`` with ``E^lge = E^id + Σ_m norm(E^m)``;
- BM3: negatives play no role; targets carry no gradient; scores are ``p(h_u)·p(h_i)``;
- VBPR: the loss is BPR of the predictor plus L2 on the learnt parts of the batch's vectors;
- metrics: identical to MMRec's reference formulas (Recall, NDCG, Precision, MAP) on random hit matrices;
  validation masks exactly the training items and ranks every other item.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recgoat.evaluation.evaluator import Evaluator
from recgoat.evaluation.metrics import metrics_from_hits
from recgoat.features import Features
from recgoat.models import get_model_class
from recgoat.models.freedom import item_item_graph

N_USERS, N_ITEMS, TEXT_DIM, IMAGE_DIM = 7, 11, 6, 5
ALL_MODELS = ["mostpop", "bprmf", "lightgcn", "vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn"]


@dataclass
class TrainOnly:
    """A dataset that hands out its training split and refuses every other read: a model whose
    ``prepare``/``loss``/``embeddings`` touched validation or test interactions fails here."""

    n_users: int
    n_items: int
    train: sp.csr_matrix
    name: str = "train-only"

    def csr(self, split: str | None = "train", weight: str | None = None) -> sp.csr_matrix:
        if split != "train":
            raise AssertionError(f"read split {split!r}: only the training split may be read")
        return self.train.copy()

    def split_frame(self, split: str):
        raise AssertionError(f"read split_frame({split!r})")

    @property
    def interactions(self):
        raise AssertionError("read all interactions (valid/test included)")


def tiny(seed: int = 0, density: float = 0.35) -> tuple[TrainOnly, Features]:
    rng = np.random.default_rng(seed)
    dense = (rng.random((N_USERS, N_ITEMS)) < density).astype(np.float32)
    dense[np.arange(N_USERS), np.arange(N_USERS)] = 1.0  # every user has an item
    dense[:, -1] = 0.0  # and no user has every item (an item never trained on, as a cold item)
    text = rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
    image = rng.normal(size=(N_ITEMS, IMAGE_DIM)).astype(np.float32)
    return TrainOnly(N_USERS, N_ITEMS, sp.csr_matrix(dense)), Features(text=text, image=image)


def a_hat(train: sp.csr_matrix) -> np.ndarray:
    """Dense D^-1/2 A D^-1/2 of the bipartite graph (users first), isolated nodes zero."""
    r = train.toarray().astype(np.float64)
    a = np.block([[np.zeros((r.shape[0],) * 2), r], [r.T, np.zeros((r.shape[1],) * 2)]])
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0.0)
    return inv[:, None] * a * inv[None, :]


def layer_mean(adj: np.ndarray, e: np.ndarray, n_layers: int) -> np.ndarray:
    out, h = e.copy(), e.copy()
    for _ in range(n_layers):
        h = adj @ h
        out = out + h
    return out / (n_layers + 1)


def bpr(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()


def as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


BATCH = (torch.tensor([0, 3, 3, 5, 1]), torch.tensor([0, 3, 4, 5, 1]), torch.tensor([9, 8, 10, 7, 6]))


# ------------------------------------------------------------------------------------------- leakage
@pytest.mark.parametrize("name", ALL_MODELS)
def test_peers_read_the_training_split_only(name):
    """Building, one training step (with FREEDOM's per-epoch pruning) and scoring read nothing but
    ``csr("train")``; the training matrix a model keeps (for masking) is exactly that split."""
    ds, feats = tiny()
    torch.manual_seed(0)
    model = get_model_class(name).build(ds, None, feats)
    assert (model._train_csr != ds.train).nnz == 0
    if model.trainable:
        model.train()
        model.on_epoch_start(0, np.random.default_rng(0))
        model.loss(*BATCH)["loss"].backward()
    model.eval()
    z_u, z_i = model.final_embeddings()
    assert z_u.shape[0] == N_USERS and z_i.shape[0] == N_ITEMS and torch.isfinite(z_i).all()


# ------------------------------------------------------------------------------ LightGCN and BPR-MF
@pytest.mark.parametrize("name", ["lightgcn", "bprmf"])
def test_bpr_on_final_embeddings_and_l2_on_layer0_of_the_batch(name):
    """LightGCN (He et al. 2020): BPR on the propagated embeddings, λ‖E^(0)‖² on the batch's ego embeddings
    only (not the propagated ones), ‖·‖²/(2|B|) as the authors' code; BPR-MF the same without propagation."""
    ds, feats = tiny()
    torch.manual_seed(1)
    model = get_model_class(name).build(ds, {"reg_weight": 0.3}, feats)
    users, pos, neg = BATCH
    terms = model.loss(users, pos, neg)
    e = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double()
    z = torch.from_numpy(layer_mean(a_hat(ds.train), e.numpy(), 3)) if name == "lightgcn" else e
    z_u, z_i = z[:N_USERS], z[N_USERS:]
    want_bpr = bpr(z_u[users], z_i[pos], z_i[neg])
    e_u, e_i = e[:N_USERS], e[N_USERS:]
    want_reg = (e_u[users].pow(2).sum() + e_i[pos].pow(2).sum() + e_i[neg].pow(2).sum()) / (2 * len(users))
    assert terms["bpr"].item() == pytest.approx(want_bpr.item(), rel=1e-5)
    assert terms["reg"].item() == pytest.approx(want_reg.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx((want_bpr + 0.3 * want_reg).item(), rel=1e-5)


# -------------------------------------------------------------------------------------------- FREEDOM
def test_freedom_item_graph_is_frozen_and_built_from_the_features_alone():
    """FREEDOM freezes the kNN item-item graph: it is no parameter, is the same for another training
    matrix, and an optimiser step leaves it as it was; each item's neighbours are its top-k by cosine."""
    ds, feats = tiny()
    other, _ = tiny(seed=5, density=0.6)
    cfg = {"knn_k": 3}
    a = get_model_class("freedom").build(ds, cfg, feats)
    b = get_model_class("freedom").build(other, cfg, feats)
    ga, gb = a.ii_graph.to_dense(), b.ii_graph.to_dense()
    assert torch.equal(ga, gb)
    assert all(p.shape != ga.shape for p in a.parameters())
    opt = torch.optim.Adam(a.parameters(), lr=0.1)
    a.train()
    a.on_epoch_start(0, np.random.default_rng(0))
    a.loss(*BATCH)["loss"].backward()
    opt.step()
    assert torch.equal(a.ii_graph.to_dense(), ga)
    # every item's k most cosine-similar other items (by text) are among its text-graph neighbours
    text_graph = item_item_graph({"text": feats.text}, 3, 0.1, np.ones(N_ITEMS, bool)).toarray()
    x = feats.text / np.linalg.norm(feats.text, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    for i in range(N_ITEMS):
        assert set(np.argsort(-sims[i])[:3]) <= set(np.flatnonzero(text_graph[i]))


def test_freedom_scores_use_the_full_graph_and_add_the_item_graph_to_items_only():
    """At evaluation (after a pruned training epoch): z_u = mean_l Â^l E (users), z_i = mean_l Â^l E
    (items) + S^{L_ii} E_I, with Â the *unpruned* training graph and S the frozen item-item graph."""
    ds, feats = tiny()
    torch.manual_seed(2)
    model = get_model_class("freedom").build(ds, {"knn_k": 3, "n_ui_layers": 2, "n_ii_layers": 2}, feats)
    model.train()
    model.on_epoch_start(0, np.random.default_rng(1))
    model.eval()
    with torch.no_grad():
        z_u, z_i = model.embeddings()
    e = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().numpy()
    z = layer_mean(a_hat(ds.train), e, 2)
    s = item_item_graph({"text": feats.text, "image": feats.image}, 3, model.config.image_weight,
                        np.ones(N_ITEMS, bool)).toarray().astype(np.float64)
    h = s @ (s @ e[N_USERS:])
    np.testing.assert_allclose(as_np(z_u), z[:N_USERS], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(as_np(z_i), z[N_USERS:] + h, rtol=1e-5, atol=1e-6)


def test_freedom_pruned_graph_is_a_renormalised_subgraph_resampled_per_epoch():
    """Degree-sensitive pruning keeps round((1-ρ)|E|) training edges, re-normalised with the kept degrees,
    and training propagates over it; another epoch draws another subgraph."""
    ds, feats = tiny(density=0.6)
    torch.manual_seed(3)
    model = get_model_class("freedom").build(ds, {"dropout": 0.5, "n_ui_layers": 1}, feats)
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    pruned = model.pruned_adj.to_dense().double().numpy()
    kept = (pruned[:N_USERS, N_USERS:] != 0).astype(np.float32)
    assert kept.sum() == round(ds.train.nnz * 0.5)
    assert (kept <= ds.train.toarray()).all()  # a subgraph of the training edges
    np.testing.assert_allclose(pruned, a_hat(sp.csr_matrix(kept)), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        z_u, _ = model.embeddings()
    e = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().numpy()
    np.testing.assert_allclose(as_np(z_u), layer_mean(pruned, e, 1)[:N_USERS], rtol=1e-5, atol=1e-6)
    model.on_epoch_start(1, np.random.default_rng(1))
    assert not np.array_equal(model.pruned_adj.to_dense().numpy() != 0, pruned != 0)


def test_freedom_modality_terms_are_bpr_of_the_user_against_projected_features():
    ds, feats = tiny()
    torch.manual_seed(4)
    model = get_model_class("freedom").build(ds, {"modal_weight": 0.7, "reg_weight": 0.2}, feats)
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    users, pos, neg = BATCH
    terms = model.loss(users, pos, neg)
    with torch.no_grad():
        z_u, z_i = model.embeddings()  # the same pruned graph as the loss saw
        u = z_u[users]
        modal = 0.0
        for m, x in (("text", feats.text), ("image", feats.image)):
            w = model.proj[m].weight  # x W_m
            xm = torch.from_numpy(x) @ w.t()
            t = bpr(u, xm[pos], xm[neg])
            assert terms[f"bpr_{m}"].item() == pytest.approx(t.item(), rel=1e-5)
            modal += t.item()
    want = bpr(u, z_i[pos], z_i[neg]).item() + 0.7 * modal + 0.2 * terms["reg"].item()
    assert terms["loss"].item() == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------------------------- LGMRec
def test_lgmrec_users_start_from_the_mean_of_their_training_items():
    ds, feats = tiny()
    torch.manual_seed(5)
    model = get_model_class("lgmrec").build(ds, {"n_mm_layers": 0}, feats)
    with torch.no_grad():
        item_modal = model.modality_items()["text"]
        out = model.local_modality(item_modal)
    r = ds.train.toarray().astype(np.float64)
    want_users = (r / r.sum(1, keepdims=True)) @ as_np(item_modal)
    np.testing.assert_allclose(as_np(out[:N_USERS]), want_users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(as_np(out[N_USERS:]), as_np(item_modal), rtol=1e-6)


def test_lgmrec_fusion_is_local_plus_alpha_normalised_global():
    """E* = E^id + Σ_m norm(E^m) + α·norm(Σ_m E^{m,H}) (LGMRec eqs. for E^lge and the fusion)."""
    ds, feats = tiny()
    torch.manual_seed(6)
    model = get_model_class("lgmrec").build(ds, {"alpha": 0.45}, feats)
    model.eval()
    with torch.no_grad():
        z_u, z_i = model.embeddings()
        e_id = model.collaborative()
        items = model.modality_items()
        local = e_id + sum(F.normalize(model.local_modality(items[m]), dim=-1) for m in ("text", "image"))
        glob = sum(torch.cat(model.hyper[m](model.feats[m], model.interactions, e_id[N_USERS:]))
                   for m in ("text", "image"))
        want = local + 0.45 * F.normalize(glob, dim=-1)
    torch.testing.assert_close(torch.cat([z_u, z_i]), want)


# ------------------------------------------------------------------------------------------------ BM3
def test_bm3_ignores_negatives():
    """BM3 is trained without negative sampling: the loss does not depend on the sampled negatives."""
    ds, feats = tiny()
    torch.manual_seed(7)
    model = get_model_class("bm3").build(ds, None, feats)
    model.train()
    users, pos, neg = BATCH
    torch.manual_seed(11)
    a = model.loss(users, pos, neg)
    torch.manual_seed(11)  # the same dropout masks
    b = model.loss(users, pos, torch.flip(neg, [0]) - 1)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("reg_form", ["authors", "batch_l2"])
def test_bm3_targets_carry_no_gradient_and_scores_use_the_predictor_on_both_sides(reg_form):
    """With the view generator off (dropout 0) the targets are the online representations themselves;
    they must be stop-gradient: the gradient equals that of the hand formula with detached targets. The
    regulariser is the authors' (‖H_U‖_F + ‖H_I‖_F) / I over every row, unsquared (MMRec's EmbLoss), or
    the paper's squared L2 over the batch's rows / 2B."""
    ds, feats = tiny()
    torch.manual_seed(8)
    model = get_model_class("bm3").build(ds, {"dropout": 0.0, "reg_weight": 0.05, "reg_form": reg_form}, feats)
    model.train()
    users, pos, neg = BATCH
    model.zero_grad()
    terms = model.loss(users, pos, neg)
    terms["loss"].backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    def c(a, b):
        return (1 - F.cosine_similarity(a, b.detach(), dim=-1)).mean()

    model.zero_grad()
    h_u, h_i = model.online()
    u, i = h_u[users], h_i[pos]
    p = model.predictor
    loss = c(p(u), i) + c(p(i), u)
    for m in ("text", "image"):
        x = model.feats[m]  # the given features, as trainable parameters (finetune_features, the default)
        assert torch.equal(x.detach(), torch.from_numpy(getattr(feats, m)))
        h_m = model.proj[m](x[pos])
        loss = loss + c(p(h_m), i) + c(p(h_m), h_m)
    if reg_form == "authors":
        loss = loss + 0.05 * (h_u.pow(2).sum().sqrt() + h_i.pow(2).sum().sqrt()) / ds.n_items
    else:
        loss = loss + 0.05 * (u.pow(2).sum() + i.pow(2).sum()) / (2 * len(users))
    assert terms["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    for n, q in model.named_parameters():
        torch.testing.assert_close(got[n], q.grad, rtol=1e-4, atol=1e-7, msg=n)
    model.eval()
    with torch.no_grad():
        z_u, z_i = model.embeddings()
        h_u, h_i = model.online()
        torch.testing.assert_close(z_u, p(h_u))
        torch.testing.assert_close(z_i, p(h_i))


# ----------------------------------------------------------------------------------------------- VBPR
def test_vbpr_loss_is_bpr_plus_l2_on_the_learnt_parts():
    ds, feats = tiny()
    torch.manual_seed(9)
    model = get_model_class("vbpr").build(ds, {"embedding_dim": 3, "content_dim": 2, "reg_weight": 0.4}, feats)
    with torch.no_grad():
        model.item_bias.normal_()
        model.content_bias.weight.normal_()
    users, pos, neg = BATCH
    terms = model.loss(users, pos, neg)
    z_u, z_i = (t.detach() for t in model.embeddings())
    learnt_u = torch.cat([model.user_id.weight, model.user_content.weight], 1).detach()[users]
    want_reg = (learnt_u.pow(2).sum() + z_i[pos].pow(2).sum() + z_i[neg].pow(2).sum()) / (2 * len(users))
    want_bpr = bpr(z_u[users], z_i[pos], z_i[neg])
    assert terms["reg"].item() == pytest.approx(want_reg.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx((want_bpr + 0.4 * want_reg).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------- protocol
def mmrec_metrics(pos_index: np.ndarray, pos_len: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user, per-cut-off values of MMRec's ``utils/metrics.py`` formulas (recall_, ndcg_, precision_,
    map_), written out without taking the mean over users."""
    n, k = pos_index.shape
    ranks = np.arange(1, k + 1)
    cum = np.cumsum(pos_index, 1)
    idcg_len = np.minimum(pos_len, k)
    idcg = np.cumsum(1 / np.log2(ranks + 1))[None, :].repeat(n, 0)
    for row, m in enumerate(idcg_len):
        idcg[row, m:] = idcg[row, m - 1]
    dcg = np.cumsum(np.where(pos_index, 1 / np.log2(ranks + 1), 0), 1)
    sum_pre = np.cumsum(cum / ranks * pos_index, 1)
    map_ = np.zeros((n, k))
    for row, m in enumerate(idcg_len):
        r = ranks.copy()
        r[m:] = r[m - 1]
        map_[row] = sum_pre[row] / r
    return {"recall": cum / pos_len[:, None], "ndcg": dcg / idcg, "precision": cum / ranks, "map": map_,
            "hit": (cum > 0).astype(float)}


def test_metrics_equal_mmrecs_reference_formulas():
    rng = np.random.default_rng(0)
    n, k = 200, 50
    pos_len = rng.integers(1, 80, n)
    hits = np.zeros((n, k), bool)
    for row in range(n):  # at most |T| hits per user, at random ranks
        hits[row, rng.choice(k, size=min(pos_len[row], rng.integers(0, k)), replace=False)] = True
    ks = (5, 10, 20, 50)
    ours = metrics_from_hits(torch.from_numpy(hits), torch.from_numpy(pos_len), ks)
    ref = mmrec_metrics(hits, pos_len)
    for name in ("recall", "ndcg", "precision", "map", "hit"):
        for cut in ks:
            np.testing.assert_allclose(ours[f"{name}@{cut}"].numpy(), ref[name][:, cut - 1], rtol=1e-12,
                                       err_msg=f"{name}@{cut}")


def test_validation_masks_training_items_only_and_ranks_every_other_item():
    """Full ranking over all items: a user's training items are masked, a test item still competes
    (ranked above the validation item it pushes to rank 2), and nothing else is removed."""
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0]], np.float32))
    valid = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 0]], np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 1, 0, 0]], np.float32))

    @dataclass
    class Split:
        n_users: int = 1
        n_items: int = 6

        def csr(self, split="train", weight=None):
            return {"train": train, "valid": valid, "test": test}[split].copy()

    ev = Evaluator.for_split(Split(), "valid", ks=(1, 2, 3))
    assert (ev.mask != train).nnz == 0
    # scores: training items highest (masked), then the test item, then the validation item
    user = torch.ones(1, 1)
    items = torch.tensor([[9.0], [8.0], [5.0], [6.0], [1.0], [0.0]])
    m = ev.evaluate_embeddings(user, items).means
    assert m["recall@1"] == 0.0 and m["recall@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1 / np.log2(3))
    # test: by default training and validation items are masked, so the test item is first
    ev = Evaluator.for_split(Split(), "test", ks=(1, 2, 3))
    assert ev.evaluate_embeddings(user, torch.tensor([[9.0], [8.0], [7.0], [6.0], [1.0], [0.0]])).means[
        "recall@1"] == 1.0
    # MMRec's convention (test_mask="train"): the validation item stays a candidate, never a hit, and
    # pushes the test item to rank 2
    ev = Evaluator.for_split(Split(), "test", ks=(1, 2, 3), test_mask="train")
    assert (ev.mask != train).nnz == 0
    m = ev.evaluate_embeddings(user, torch.tensor([[9.0], [8.0], [7.0], [6.0], [1.0], [0.0]])).means
    assert m["recall@1"] == 0.0 and m["recall@2"] == 1.0 and m["ndcg@2"] == pytest.approx(1 / np.log2(3))
    with pytest.raises(ValueError, match="test_mask must be one of"):
        Evaluator.for_split(Split(), "test", test_mask="valid")
