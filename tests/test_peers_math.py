"""The peers' equations checked by hand on tiny synthetic inputs (no shared data needed).

LGMRec: the hypergraph contrastive term is the paper's summed InfoNCE over all candidates, and the
hyperedges live in each modality's raw feature space. VBPR: the score is the paper's predictor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recgoat.features import Features
from recgoat.models import get_model_class
from recgoat.models.lgmrec import hcl_loss

N_USERS, N_ITEMS, TEXT_DIM, IMAGE_DIM = 6, 9, 7, 5


@dataclass
class TinyData:
    """The slice of the Dataset interface the models' ``prepare`` reads: sizes and the training matrix."""

    n_users: int
    n_items: int
    train: sp.csr_matrix

    def csr(self, split: str | None = "train", weight: str | None = None) -> sp.csr_matrix:
        return self.train


def tiny(two_modalities: bool = True) -> tuple[TinyData, Features]:
    rng = np.random.default_rng(0)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.4).astype(np.float32)
    dense[np.arange(N_USERS), np.arange(N_USERS)] = 1.0  # every user has an item
    text = rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
    image = rng.normal(size=(N_ITEMS, IMAGE_DIM)).astype(np.float32) if two_modalities else None
    return TinyData(N_USERS, N_ITEMS, sp.csr_matrix(dense)), Features(text=text, image=image)


def hand_hcl(a: np.ndarray, b: np.ndarray, pos: list[int], tau: float) -> float:
    """sum_r -log( exp(cos(a_r, b_pos_r)/tau) / sum_c exp(cos(a_r, b_c)/tau) ), with explicit loops."""
    total = 0.0
    for r in range(len(a)):
        sims = [float(a[r] @ b[c]) / (np.linalg.norm(a[r]) * np.linalg.norm(b[c])) for c in range(len(b))]
        denom = sum(np.exp(s / tau) for s in sims)
        total += -np.log(np.exp(sims[pos[r]] / tau) / denom)
    return total


# ------------------------------------------------------------------------------------------- LGMRec
def test_hcl_loss_matches_hand_computation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 4))  # 3 anchors, 4 candidates
    pos, tau = [2, 0, 3], 0.2
    got = hcl_loss(torch.from_numpy(a), torch.from_numpy(b), torch.tensor(pos), tau).item()
    assert got == pytest.approx(hand_hcl(a, b, pos, tau), rel=1e-10)


def test_hcl_loss_is_a_sum_over_anchors():
    rng = np.random.default_rng(4)
    a, b = torch.from_numpy(rng.normal(size=(3, 4))), torch.from_numpy(rng.normal(size=(5, 4)))
    pos = torch.tensor([1, 4, 0])
    once = hcl_loss(a, b, pos, 0.2)
    twice = hcl_loss(torch.cat([a, a]), b, torch.cat([pos, pos]), 0.2)
    torch.testing.assert_close(twice, 2 * once)
    # every candidate is a negative: an extra, unrelated candidate row raises the loss
    more = hcl_loss(a, torch.cat([b, torch.from_numpy(rng.normal(size=(1, 4)))]), pos, 0.2)
    assert more > once


def test_lgmrec_contrastive_term_is_the_paper_sum_over_all_users_and_items():
    """The model's L_hcl on a batch equals the hand formula: distinct batch users / items as anchors
    (image), every user / item of the text modality as candidates."""
    ds, feats = tiny()
    torch.manual_seed(0)
    model = get_model_class("lgmrec").build(ds, None, feats)
    model.eval()  # deterministic assignments so the two forward passes agree
    users, pos = torch.tensor([0, 3, 3, 1]), torch.tensor([2, 5, 5, 0])
    with torch.no_grad():
        _, glob = model.forward_all()
        got = model.contrastive(glob, users, pos).item()
    (gu_t, gi_t), (gu_v, gi_v) = (tuple(x.numpy().astype(np.float64) for x in glob[m]) for m in ("text", "image"))
    tau = model.config.tau
    uu, ii = [0, 1, 3], [0, 2, 5]
    want = hand_hcl(gu_v[uu], gu_t, uu, tau) + hand_hcl(gi_v[ii], gi_t, ii, tau)
    assert got == pytest.approx(want, rel=1e-5)
    # and it enters the loss with weight lambda_cl, unaveraged
    model.train()
    terms = model.loss(users, pos, torch.tensor([7, 8, 6, 4]))
    assert terms["cl"] > 0
    expected = terms["bpr"] + model.config.cl_weight * terms["cl"] + model.config.reg_weight * terms["reg"]
    torch.testing.assert_close(terms["loss"], expected)


def test_lgmrec_hyperedges_live_in_the_raw_feature_space():
    ds, feats = tiny()
    model = get_model_class("lgmrec").build(ds, None, feats)
    a = model.config.n_hyperedges
    assert tuple(model.hyper["text"].hyperedges.shape) == (a, TEXT_DIM)
    assert tuple(model.hyper["image"].hyperedges.shape) == (a, IMAGE_DIM)
    # both modalities' hyperedges are trained (through the Gumbel-softmax assignments and L_hcl)
    model.train()
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([6, 7, 8])
    model.loss(users, pos, neg)["loss"].backward()
    for m in ("text", "image"):
        assert model.hyper[m].hyperedges.grad is not None and model.hyper[m].hyperedges.grad.abs().sum() > 0


def test_lgmrec_hyperedge_dependencies_are_x_times_v():
    """H_I = X V^T, H_U = R H_I: with the assignment softmax at evaluation, the hypergraph output equals
    the explicit formula built from the raw features."""
    ds, feats = tiny()
    torch.manual_seed(1)
    model = get_model_class("lgmrec").build(ds, None, feats)
    model.eval()
    with torch.no_grad():
        _, glob = model.forward_all()
        e_id = model.collaborative()
    x = torch.from_numpy(feats.text).double()
    v = model.hyper["text"].hyperedges.detach().double()
    r = torch.from_numpy(ds.train.toarray()).double()
    tau = model.config.tau
    h_i = torch.softmax(x @ v.t() / tau, dim=-1)
    h_u = torch.softmax(r @ (x @ v.t()) / tau, dim=-1)
    start = e_id[N_USERS:].double()
    torch.testing.assert_close(glob["text"][1].double(), h_i @ (h_i.t() @ start), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(glob["text"][0].double(), h_u @ (h_i.t() @ start), rtol=1e-4, atol=1e-6)


def test_lgmrec_single_modality_has_no_contrastive_term():
    ds, feats = tiny(two_modalities=False)
    model = get_model_class("lgmrec").build(ds, None, feats)
    model.train()
    terms = model.loss(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([5, 6]))
    assert terms["cl"].item() == 0.0
    assert list(model.hyper) == ["text"]


# --------------------------------------------------------------------------------------------- VBPR
def test_vbpr_score_is_the_paper_predictor():
    """score(u, i) = beta_i + gamma_u.gamma_i + theta_u.(E f_i) + beta'.f_i (alpha and beta_u cancel)."""
    ds, feats = tiny()
    torch.manual_seed(2)
    model = get_model_class("vbpr").build(ds, {"embedding_dim": 3, "content_dim": 2}, feats)
    with torch.no_grad():  # non-zero biases, so the bias term is exercised
        model.item_bias.normal_()
        model.content_bias.weight.normal_()
    f = torch.from_numpy(np.concatenate([feats.text, feats.image], axis=1))
    gamma_u, gamma_i = model.user_id.weight, model.item_id.weight
    theta_u, e, beta_p = model.user_content.weight, model.project.weight, model.content_bias.weight[0]
    want = (model.item_bias[None, :] + gamma_u @ gamma_i.t() + theta_u @ (f @ e.t()).t()
            + (f @ beta_p)[None, :]).detach()
    torch.testing.assert_close(model.score(np.arange(N_USERS)), want)


# ---------------------------------------------------------------------------------------------- BM3
@pytest.mark.parametrize("id_residual", [False, True])
def test_bm3_online_items_are_lightgcn_plus_optional_id_residual(id_residual):
    """h = mean over layers of Â^l [E_U; E_I] (Â the symmetric-normalised bipartite matrix, built here
    densely by hand); with ``id_residual`` (the authors' code) the items get + E_I."""
    ds, feats = tiny()
    torch.manual_seed(3)
    model = get_model_class("bm3").build(ds, {"embedding_dim": 4, "n_layers": 2, "id_residual": id_residual}, feats)
    r = ds.train.toarray().astype(np.float64)
    a = np.block([[np.zeros((N_USERS, N_USERS)), r], [r.T, np.zeros((N_ITEMS, N_ITEMS))]])
    d = a.sum(1)
    inv = np.where(d > 0, d, 1.0) ** -0.5 * (d > 0)
    a_hat = inv[:, None] * a * inv[None, :]
    e = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().numpy()
    h = (e + a_hat @ e + a_hat @ a_hat @ e) / 3
    want_u, want_i = h[:N_USERS], h[N_USERS:] + (e[N_USERS:] if id_residual else 0.0)
    h_u, h_i = model.online()
    np.testing.assert_allclose(h_u.detach().numpy(), want_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_i.detach().numpy(), want_i, rtol=1e-5, atol=1e-6)


def test_lgmrec_sparse_operator_gradient_is_the_transpose_product():
    # SparseOperator's hand-written backward applies the stored transpose: check it against the dense
    # gradient of a non-symmetric, non-square matrix (a wrong transpose would not even fit the shape)
    from recgoat.models.lgmrec import SparseOperator

    rng = np.random.default_rng(0)
    m = sp.random(7, 5, density=0.4, random_state=1, format="csr", dtype=np.float64)
    op = SparseOperator(m)
    x = torch.tensor(rng.normal(size=(5, 3)), dtype=torch.float32, requires_grad=True)
    w = torch.tensor(rng.normal(size=(7, 3)), dtype=torch.float32)
    y = op(x)
    dense = torch.tensor(m.toarray(), dtype=torch.float32)
    assert torch.allclose(y, dense @ x, atol=1e-6)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, dense.T @ w, atol=1e-6)
