"""MGCN (Yu et al., MM 2023; METHOD.md §8): its equations checked by hand on tiny constructed inputs, and one
short learning check on the real ml100k-mm slice of ``test_peers``.

By hand: the behaviour-guided purifier's gate; the item-item view (a top-k cosine graph of the raw features,
D^-1/2 S D^-1/2) and the users' aggregation through D_U^-1/2 R D_I^-1/2; the fuser (attention weights summing to 1,
specific + shared = the modality view, the preference-weighted mean); the score E^id + E^mul; the contrastive term
as an explicit InfoNCE; the total loss. Also: nothing but the training split is read, one modality suffices, none
is refused, and evaluation is deterministic.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import test_peers
from recgoat.errors import ConfigError
from recgoat.features import Features
from recgoat.models import get_model_class
from recgoat.nn.losses import candidate_info_nce
from recgoat.training.trainer import TrainConfig
from test_peers_spec import TrainOnly  # the training split alone: any other read fails
from training_helpers import popularity_recall

torch.set_num_threads(1)

N_USERS, N_ITEMS, TEXT_DIM, IMAGE_DIM, D, K = 6, 10, 7, 5, 8, 3
data = test_peers.data  # module fixture: the first 150 users of ml100k-mm and their item features


def tiny(text: bool = True, image: bool = True) -> tuple[TrainOnly, Features]:
    rng = np.random.default_rng(0)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.4).astype(np.float32)
    dense[np.arange(N_USERS), np.arange(N_USERS)] = 1.0  # every user has an item
    x_t = rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
    x_v = rng.normal(size=(N_ITEMS, IMAGE_DIM)).astype(np.float32)
    return (TrainOnly(N_USERS, N_ITEMS, sp.csr_matrix(dense)),
            Features(text=x_t if text else None, image=x_v if image else None))


def build(feats: Features | None = None, **cfg):
    ds, both = tiny()
    torch.manual_seed(0)
    model = get_model_class("mgcn").build(ds, {"embedding_dim": D, "knn_k": K, **cfg}, feats or both)
    return ds, feats or both, model.double()


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def hand_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Dense D^-1/2 S D^-1/2 of each item's k most cosine-similar other items, unweighted, both directions."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    s = np.zeros_like(sims)
    for i in range(len(x)):
        order = [j for j in np.argsort(-sims[i]) if j != i][:k]
        s[i, order] = 1.0
    s = np.maximum(s, s.T)
    d = s.sum(1)
    return s / np.sqrt(np.outer(d, d))


def r_tilde(train: sp.csr_matrix) -> np.ndarray:
    r = train.toarray().astype(np.float64)
    du, di = r.sum(1), r.sum(0)
    inv_u = np.where(du > 0, 1 / np.sqrt(np.maximum(du, 1)), 0.0)
    inv_i = np.where(di > 0, 1 / np.sqrt(np.maximum(di, 1)), 0.0)
    return inv_u[:, None] * r * inv_i[None, :]


def lightgcn(train: sp.csr_matrix, e: np.ndarray, n_layers: int) -> np.ndarray:
    rt = r_tilde(train)
    a = np.block([[np.zeros((N_USERS, N_USERS)), rt], [rt.T, np.zeros((N_ITEMS, N_ITEMS))]])
    out, h = e.copy(), e.copy()
    for _ in range(n_layers):
        h = a @ h
        out = out + h
    return out / (n_layers + 1)


def hand_info_nce(a: np.ndarray, b: np.ndarray, pos: list[int], tau: float) -> float:
    """mean_r -log(exp(cos(a_r, b_pos_r)/tau) / sum_c exp(cos(a_r, b_c)/tau)), with explicit loops."""
    total = 0.0
    for r in range(len(a)):
        sims = [float(a[r] @ b[c]) / (np.linalg.norm(a[r]) * np.linalg.norm(b[c])) for c in range(len(b))]
        total += -np.log(np.exp(sims[pos[r]] / tau) / sum(np.exp(s / tau) for s in sims))
    return total / len(a)


# ------------------------------------------------------------------------------------- the purifier
def test_purifier_gates_the_item_ids_by_the_transformed_features():
    """Ẽ_m = E_I ⊙ σ(W_2 (W_1 x_m + b_1) + b_2), per modality."""
    _, feats, model = build()
    with torch.no_grad():
        got = model.purified()
    e_i = np_(model.item_emb.weight)
    for m, x in (("text", feats.text), ("image", feats.image)):
        p = model.purifier[m]
        hidden = x.astype(np.float64) @ np_(p.transform.weight).T + np_(p.transform.bias)
        want = e_i * sigmoid(hidden @ np_(p.gate.weight).T + np_(p.gate.bias))
        np.testing.assert_allclose(np_(got[m]), want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------- the two views
def test_id_view_is_lightgcn_and_the_modality_view_is_item_graph_then_normalised_user_aggregation():
    """Ē^id = mean_l Â^l E (L_ui = 2); Ē_I^m = S̄^m Ẽ_m (L_ii = 1) over a frozen top-k cosine graph of the raw
    features; Ē_U^m = D_U^-1/2 R D_I^-1/2 Ē_I^m."""
    ds, feats, model = build()
    with torch.no_grad():
        id_view = model.id_view()
        purified = model.purified()
        views = {m: model.modality_view(m, purified[m]) for m in ("text", "image")}
    e = np.concatenate([np_(model.user_emb.weight), np_(model.item_emb.weight)])
    # the graphs are built in float32 (then cast with the weights): agreement to float32's precision
    np.testing.assert_allclose(np_(id_view), lightgcn(ds.train, e, 2), rtol=1e-6, atol=1e-8)
    for m, x in (("text", feats.text), ("image", feats.image)):
        graph = hand_knn(x, K)
        np.testing.assert_allclose(getattr(model, f"ii_{m}").to_dense().numpy(), graph, rtol=1e-6, atol=1e-7)
        items = graph @ np_(purified[m])
        np.testing.assert_allclose(np_(views[m][N_USERS:]), items, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np_(views[m][:N_USERS]), r_tilde(ds.train) @ items, rtol=1e-6, atol=1e-7)


def test_item_graph_is_frozen_and_independent_of_the_interactions():
    """The item-item graphs are buffers built from the features alone: no parameter, unchanged by a step."""
    ds, feats, model = build()
    before = model.ii_text.to_dense().clone()
    other = TrainOnly(N_USERS, N_ITEMS, sp.csr_matrix(np.eye(N_USERS, N_ITEMS, dtype=np.float32)))
    torch.manual_seed(0)
    again = get_model_class("mgcn").build(other, {"embedding_dim": D, "knn_k": K}, feats)
    assert torch.equal(again.ii_text.to_dense(), before.float())
    assert "ii_text" not in dict(model.named_parameters()) and "ii_text" not in model.state_dict()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.train()
    model.loss(*BATCH)["loss"].backward()
    opt.step()
    assert torch.equal(model.ii_text.to_dense(), before)


# ------------------------------------------------------------------------------------------ the fuser
def test_fuser_attention_shared_specific_and_preferences_by_hand():
    """α_m = softmax_m(qᵀ tanh(W_3 ē^m + b_3)) sums to 1 per node; Ẽ^m + E^s = Ē^m; E^mul = (P_s ⊙ E^s +
    Σ_m P_m ⊙ Ẽ^m) / (|M| + 1) with P = σ(W_4 Ē^id + b_4); the scores use E = Ē^id + E^mul."""
    _, _, model = build()
    model.eval()
    with torch.no_grad():
        id_view = model.id_view()
        purified = model.purified()
        views = {m: model.modality_view(m, purified[m]) for m in ("text", "image")}
        fused, alpha, specific = model.fuse(id_view, views)
        z_u, z_i = model.embeddings()
    a1, a2 = model.attention[0], model.attention[2]
    logits = np.stack([np.tanh(np_(views[m]) @ np_(a1.weight).T + np_(a1.bias)) @ np_(a2.weight).T
                       for m in ("text", "image")], axis=1)[..., 0]
    want_alpha = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(np_(alpha), want_alpha, rtol=1e-10)
    np.testing.assert_allclose(np_(alpha).sum(1), 1.0, rtol=1e-12)
    shared = sum(want_alpha[:, j:j + 1] * np_(views[m]) for j, m in enumerate(("text", "image")))
    for m in ("text", "image"):
        np.testing.assert_allclose(np_(specific[m]) + shared, np_(views[m]), rtol=1e-10, atol=1e-12)

    def pref(name: str) -> np.ndarray:
        return sigmoid(np_(id_view) @ np_(model.prefer[name].weight).T + np_(model.prefer[name].bias))

    want = (pref("shared") * shared + sum(pref(m) * (np_(views[m]) - shared) for m in ("text", "image"))) / 3
    np.testing.assert_allclose(np_(fused), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_(torch.cat([z_u, z_i])), np_(id_view) + want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ the auxiliary task
def test_info_nce_matches_hand_computation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))  # 3 anchors, 5 candidates
    pos, tau = [2, 0, 4], 0.2
    got = candidate_info_nce(torch.from_numpy(a), torch.from_numpy(b), torch.tensor(pos), tau).item()
    assert got == pytest.approx(hand_info_nce(a, b, pos, tau), rel=1e-10)


BATCH = (torch.tensor([0, 3, 3, 5, 1]), torch.tensor([0, 3, 4, 5, 1]), torch.tensor([9, 8, 7, 7, 6]))


def test_loss_is_bpr_plus_weighted_contrastive_plus_l2_by_hand():
    """L = BPR(E) + λ_C L_C + λ_E ‖·‖²/2B on the batch's ego ID embeddings, where L_C is InfoNCE of the ID view
    (anchors: the batch's distinct users and distinct positive items) against every user's / item's fused view."""
    _, _, model = build(cl_weight=0.3, reg_weight=0.2, tau=0.5)
    users, pos, neg = BATCH
    terms = model.loss(users, pos, neg)
    with torch.no_grad():
        id_view, fused = model.forward_all()
    iv, fv = np_(id_view), np_(fused)
    uu, ii = [0, 1, 3, 5], [0, 1, 3, 4, 5]
    want_cl = (hand_info_nce(iv[uu], fv[:N_USERS], uu, 0.5)
               + hand_info_nce(iv[[N_USERS + i for i in ii]], fv[N_USERS:], ii, 0.5))
    assert terms["cl"].item() == pytest.approx(want_cl, rel=1e-10)
    z = iv + fv
    zu, zi = z[:N_USERS], z[N_USERS:]
    diff = (zu[users] * zi[pos]).sum(1) - (zu[users] * zi[neg]).sum(1)
    want_bpr = float(np.mean(np.log1p(np.exp(-diff))))
    eu, ei = np_(model.user_emb.weight), np_(model.item_emb.weight)
    want_reg = ((eu[users] ** 2).sum() + (ei[pos] ** 2).sum() + (ei[neg] ** 2).sum()) / (2 * len(users))
    assert terms["bpr"].item() == pytest.approx(want_bpr, rel=1e-10)
    assert terms["reg"].item() == pytest.approx(want_reg, rel=1e-10)
    assert terms["loss"].item() == pytest.approx(want_bpr + 0.3 * want_cl + 0.2 * want_reg, rel=1e-10)


# ------------------------------------------------------------------------------- data and modalities
def test_reads_the_training_split_only_and_trains_every_part():
    """Building, a training step and scoring read nothing but csr("train"); the step reaches every parameter."""
    ds, feats, model = build()
    assert (model._train_csr != ds.train).nnz == 0
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    model.loss(*BATCH)["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    model.eval()
    z_u, z_i = model.final_embeddings()
    assert z_u.shape == (N_USERS, D) and z_i.shape == (N_ITEMS, D) and torch.isfinite(z_i).all()


@pytest.mark.parametrize("which", ["text", "image"])
def test_one_modality_suffices(which):
    """With one modality its attention weight is 1, the shared part is its view, its specific part is 0."""
    _, two = tiny()
    one = Features(text=two.text if which == "text" else None, image=two.image if which == "image" else None)
    _, _, model = build(one)
    assert model.modalities == [which] and model.dims[f"{which}_dim"] > 0
    assert model.summary["modalities_used"] == [which]
    with torch.no_grad():
        id_view = model.id_view()
        view = model.modality_view(which, model.purified()[which])
        fused, alpha, specific = model.fuse(id_view, {which: view})
    assert torch.equal(alpha, torch.ones_like(alpha))
    assert specific[which].abs().max() < 1e-12
    shared = torch.sigmoid(model.prefer["shared"](id_view)) * view
    torch.testing.assert_close(fused, shared / 2)
    model.loss(*BATCH)["loss"].backward()
    assert model.purifier[which].transform.weight.grad.abs().sum() > 0


def test_no_modality_is_refused_by_name():
    ds, _ = tiny()
    with pytest.raises(ConfigError, match="mgcn"):
        get_model_class("mgcn").build(ds, None, None)
    with pytest.raises(ConfigError, match="mgcn needs item text or image"):
        get_model_class("mgcn").build(ds, None, Features(profile=np.ones((N_USERS, 4), np.float32)))
    with pytest.raises(ConfigError, match="text_dim/image_dim are 0"):
        get_model_class("mgcn")(N_USERS, N_ITEMS, None, text_dim=0, image_dim=0)


def test_evaluation_is_deterministic_and_training_computes_the_same_embeddings():
    """No dropout or noise anywhere: two evaluations agree bit for bit, and so does training mode."""
    _, _, model = build()
    model.train()
    with torch.no_grad():
        t = model.embeddings()
    model.eval()
    with torch.no_grad():
        a, b = model.embeddings(), model.embeddings()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(t[0], a[0]) and torch.equal(t[1], a[1])
    first = model.final_embeddings()
    assert model.final_embeddings() is first  # propagated once, then cached while the weights stay


# ------------------------------------------------------------------------------------- it learns
def test_learns_beyond_popularity_on_real_data(data):
    """15 epochs on the 150-user ml100k-mm slice (as test_peers trains the other peers): validation recall@20
    above the popularity ranking's (0.192 on this slice; MGCN reaches 0.335 with the slice's encoded texts, 0.330
    with the shared ml100k features; with its item rows shuffled at scoring it fails)."""
    ds, feats = data
    torch.manual_seed(0)
    model = get_model_class("mgcn").build(ds, None, feats)
    epochs = test_peers.EPOCHS
    result = model.fit(ds, TrainConfig(epochs=epochs, batch_size=1024, lr=5e-3, patience=epochs, progress=False,
                                       seed=3))
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0] * 0.95, losses
    assert result["valid"]["recall@20"] > popularity_recall(ds), result["valid"]
