"""Fidelity of VBPR, FREEDOM and LGMRec against their papers and MMRec's implementations.

Bug (the test fails on the code before the fix):

- FREEDOM's degree-sensitive pruning took the degrees d_u, d_i as the training matrix's row / column
  *sums*, while both user-item graphs (Â and the pruned Â_ρ) count every stored entry as one edge of
  weight 1, as MMRec does: a training matrix holding ratings or summed duplicates skewed the keep
  probabilities away from 1/sqrt(d_u d_i). On binary data (every dataset's ``csr("train")``) the draws
  are bit-identical.

Checks by hand without a bug found (tiny constructed inputs, values worked out in the comments): FREEDOM's
item-item graph (top-k union, D^-1/2 S D^-1/2 by the union's degrees, α_v mixing); LGMRec's Gumbel noise
is the paper's log δ − log(1 − δ) at temperature τ, with a plain softmax at evaluation; LGMRec's hypergraph
convolution; the three models' defaults.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recgoat.features import Features
from recgoat.models import get_model_class
from recgoat.models.freedom import degree_sensitive_keep, item_item_graph
from recgoat.models.lgmrec import HypergraphConv, SparseOperator
from test_peers_dense_reference import TinyData  # the slice of the Dataset interface prepare reads


# ------------------------------------------------------------------------------------------------ FREEDOM
def test_freedom_pruning_probabilities_count_edges_not_entry_values():
    """2 users × 3 items, u0 → {i0, i1}, u1 → {i0}: edge counts d_u = (2, 1), d_i = (2, 1, 0), so
    w = 1/sqrt(d_u d_i) = (1/2, 1/√2, 1/√2) and, keeping one edge, P(u0-i0) = 0.5 / (0.5 + √2) = 0.2612.
    A value of 3 on u0-i0 must not change that (as row / column sums it gave w = (1/4, 1/2, 1/2), P = 0.2)."""
    rated = sp.csr_matrix(np.array([[3, 1, 0], [1, 0, 0]], np.float32))
    binary = rated.copy()
    binary.data[:] = 1.0
    n = 20000
    for train in (binary, rated):
        counts = np.zeros(3)
        rng = np.random.default_rng(0)
        for _ in range(n):
            counts[degree_sensitive_keep(train, 1, rng)] += 1
        p00 = 0.5 / (0.5 + math.sqrt(2))
        want = np.array([p00, (1 - p00) / 2, (1 - p00) / 2])  # coo order: (0,0), (0,1), (1,0)
        np.testing.assert_allclose(counts / n, want, atol=0.012)  # > 5σ of the binomial (σ ≈ 0.0031)
    # the same seed keeps the same edges whatever the stored values
    big = sp.random(40, 30, density=0.3, format="csr", random_state=1, dtype=np.float32)
    big.data[:] = np.random.default_rng(2).integers(1, 6, big.nnz)  # ratings 1..5
    ones = big.copy()
    ones.data[:] = 1.0
    for seed in range(3):
        np.testing.assert_array_equal(degree_sensitive_keep(big, big.nnz // 2, np.random.default_rng(seed)),
                                      degree_sensitive_keep(ones, big.nnz // 2, np.random.default_rng(seed)))


def test_freedom_pruned_graph_of_rated_training_data_equals_that_of_the_binary_data():
    """The model's pruned Â_ρ ignores the stored values exactly as its full Â does."""
    rng = np.random.default_rng(0)
    dense = (rng.random((8, 12)) < 0.5).astype(np.float32)
    rated = sp.csr_matrix(dense * rng.integers(1, 6, dense.shape).astype(np.float32))
    feats = Features(text=rng.normal(size=(12, 5)).astype(np.float32))
    graphs = []
    for train in (rated, sp.csr_matrix(dense)):
        torch.manual_seed(0)
        model = get_model_class("freedom").build(TinyData(8, 12, train), {"knn_k": 2, "dropout": 0.5}, feats)
        model.train()
        model.on_epoch_start(0, np.random.default_rng(7))
        graphs.append((model.adj.to_dense(), model.pruned_adj.to_dense()))
    torch.testing.assert_close(graphs[0][0], graphs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(graphs[0][1], graphs[1][1], rtol=0, atol=0)


def freedom_features() -> Features:
    """4 items. Text: i0 = (1, 0), i1 = (1, .1), i2 = (1, .3), i3 = (0, 1); top-1 by cosine: 0→1, 1→0
    (.995 > .982), 2→1 (.982 > .958), 3→2 (.287 > .100 > 0), so the union is the path 0-1-2-3, degrees
    (1, 2, 2, 1). Image: i0 = (1, 0), i3 = (1, .05), i1 = (0, 1), i2 = (.05, 1): pairs {0-3, 1-2}, degree 1."""
    text = np.array([[1, 0], [1, .1], [1, .3], [0, 1]], np.float32)
    image = np.array([[1, 0], [0, 1], [.05, 1], [1, .05]], np.float32)
    return Features(text=text, image=image)


def test_freedom_item_graph_by_hand():
    """S = .9 Ŝ^t + .1 Ŝ^v with Ŝ = D^-1/2 S D^-1/2 of each symmetrised top-1 graph:
    S01 = .9/√(1·2), S12 = .9/√(2·2) + .1, S23 = .9/√(2·1), S03 = .1; symmetric, zero diagonal."""
    feats = freedom_features()
    want = np.zeros((4, 4))
    want[0, 1] = .9 / math.sqrt(2)
    want[1, 2] = .9 / 2 + .1
    want[2, 3] = .9 / math.sqrt(2)
    want[0, 3] = .1
    want = want + want.T
    got = item_item_graph({"text": feats.text, "image": feats.image}, 1, 0.1, np.ones(4, bool)).toarray()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the model holds this graph, frozen, and adds S E_I (one layer) to the items only
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.float32))
    model = get_model_class("freedom").build(TinyData(2, 4, train), {"knn_k": 1, "image_weight": 0.1}, feats)
    np.testing.assert_allclose(model.ii_graph.to_dense().numpy(), want, rtol=1e-6)
    with torch.no_grad():
        h = model.item_graph_part().double().numpy()
    np.testing.assert_allclose(h, want @ model.item_emb.weight.detach().double().numpy(), rtol=1e-5, atol=1e-7)


def test_freedom_single_modality_graph_is_that_modalitys_alone():
    """Text only: weight .9 renormalised to 1, S = Ŝ^t (MMRec: mm_adj = text_adj)."""
    feats = freedom_features()
    got = item_item_graph({"text": feats.text}, 1, 0.1, np.ones(4, bool)).toarray()
    want = np.zeros((4, 4))
    want[0, 1], want[1, 2], want[2, 3] = 1 / math.sqrt(2), .5, 1 / math.sqrt(2)
    np.testing.assert_allclose(got, want + want.T, rtol=1e-6)


# ------------------------------------------------------------------------------------------------- LGMRec
def test_lgmrec_gumbel_noise_is_the_papers_and_evaluation_is_a_plain_softmax(monkeypatch):
    """H̃ = softmax((H + log δ − log(1 − δ))/τ). Logits (0, ln 2), δ = (.5, .8), τ = .5: noise (0, ln 4),
    so softmax((0, 2 ln 8)) = (1/65, 64/65); at evaluation softmax((0, 2 ln 2)) = (1/5, 4/5)."""
    conv = HypergraphConv(2, 3, tau=0.5, dropout=0.0, n_layers=1)
    logits = torch.tensor([[0.0, math.log(2.0)]])
    monkeypatch.setattr(torch, "rand_like", lambda x: torch.tensor([[0.5, 0.8]], dtype=x.dtype))
    conv.train()
    torch.testing.assert_close(conv.assign(logits), torch.tensor([[1 / 65, 64 / 65]]))
    conv.eval()
    torch.testing.assert_close(conv.assign(logits), torch.tensor([[0.2, 0.8]]))


def test_lgmrec_hypergraph_convolution_by_hand():
    """V = I (2 hyperedges in a 2-d feature space), τ = 1, evaluation. Items' logits X Vᵀ = X:
    i0 (0, 0) → (.5, .5), i1 (ln 3, 0) → (.75, .25), i2 (0, ln 3) → (.25, .75). Users u0 → {i0, i1},
    u1 → {i2}: H_U = R H_I (logits, before the softmax) = (ln 3, 0), (0, ln 3) → (.75, .25), (.25, .75).
    E_I⁰ = (1, 2, 4)ᵀ: hyperedges H̃_Iᵀ E = (.5 + 1.5 + 1, .5 + .5 + 3) = (3, 4);
    items H̃_I (3, 4) = (3.5, 3.25, 3.75); users H̃_U (3, 4) = (3.25, 3.75)."""
    ln3 = math.log(3.0)
    x = torch.tensor([[0.0, 0.0], [ln3, 0.0], [0.0, ln3]])
    r = SparseOperator(sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1]], np.float32)))
    conv = HypergraphConv(2, 2, tau=1.0, dropout=0.5, n_layers=1)
    with torch.no_grad():
        conv.hyperedges.copy_(torch.eye(2))
    conv.eval()  # no Gumbel noise, no dropout on the assignments
    with torch.no_grad():
        e_user, e_item = conv(x, r, torch.tensor([[1.0], [2.0], [4.0]]))
    torch.testing.assert_close(e_item, torch.tensor([[3.5], [3.25], [3.75]]))
    torch.testing.assert_close(e_user, torch.tensor([[3.25], [3.75]]))


# ----------------------------------------------------------------------------------------------- defaults
@pytest.mark.parametrize("name, want", [
    # VBPR: d = 64 per table, as MMRec (u: 2d = [γ_u ‖ θ_u], i: [γ_i ‖ E f_i]); the paper's biases kept
    ("vbpr", {"embedding_dim": 64, "content_dim": 64, "use_bias": True, "reg_weight": 1e-4}),
    # FREEDOM (paper / MMRec FREEDOM.yaml): n_ui_layers 2, n_mm_layers 1, knn_k 10, mm_image_weight .1,
    # dropout (pruning ratio) .8; MMRec's reg_weight is our modal_weight; no other L2 term
    ("freedom", {"embedding_dim": 64, "n_ui_layers": 2, "n_ii_layers": 1, "knn_k": 10, "image_weight": 0.1,
                 "dropout": 0.8, "modal_weight": 1e-3, "reg_weight": 0.0}),
    # LGMRec (paper / MMRec LGMRec.yaml): 2 + 2 layers, 1 hypergraph layer, 4 hyperedges, keep_rate .5
    # (dropout .5), τ = .2 for both the Gumbel-softmax and the InfoNCE, α = .2, λ_cl = 1e-4
    ("lgmrec", {"embedding_dim": 64, "n_ui_layers": 2, "n_mm_layers": 2, "n_hyper_layers": 1, "n_hyperedges": 4,
                "alpha": 0.2, "cl_weight": 1e-4, "tau": 0.2, "hyper_dropout": 0.5, "reg_weight": 1e-4}),
])
def test_peer_defaults(name, want):
    cfg = get_model_class(name).Config()
    assert {k: getattr(cfg, k) for k in want} == want
