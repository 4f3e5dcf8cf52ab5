"""LATTICE (Zhang et al., ACM MM 2021; ``recgoat.models.lattice``), checked by hand on tiny constructed inputs,
plus one learning check on a real slice of ml100k-mm.

- the kNN graph of a feature matrix: a worked 3-item example, and the kept pairs of both graphs equal a
  brute-force top-K (the item itself included) with the cosine similarities as values, D^-1/2 S D^-1/2;
- the learned graph's neighbours are fixed within an epoch and chosen again from W_m at its start; its values
  follow W_m, and the gradient reaches W_m through them (finite differences), not with λ = 1;
- ``A = Σ_m α_m (λ Ŝ^m + (1 − λ) Ã^m)`` with α = softmax of the learnt logits, and the scores
  ``z_i = LightGCN_i + h_i / ‖h_i‖`` against a dense reference;
- no valid/test read; one modality (text or image) works, none is refused; evaluation is deterministic,
  propagates once and survives save/load; no dense I×I tensor is ever made;
- on the first 150 users of ml100k-mm, with their movies' genres and decades as item features, LATTICE's
  validation Recall@20 beats the popularity ranking's.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import recgoat.models.lattice as lattice_mod
from recgoat.errors import ConfigError
from recgoat.features import Features
from recgoat.models import Recommender, get_model_class
from recgoat.models.lattice import knn_graph_csr, knn_values, topk_pairs, valued_spmm
from recgoat.training.trainer import TrainConfig

from conftest import subset_users
from test_peers_dense_reference import TinyData, a_hat, tiny
from test_peers_spec import TrainOnly
from training_helpers import popularity_recall

torch.set_num_threads(1)
BATCH = (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), torch.tensor([6, 7, 5, 4]))


def dense_knn(x: np.ndarray, k: int, valid: np.ndarray) -> np.ndarray:
    """Brute force: each valid row keeps itself and its k − 1 most cosine-similar valid rows, weighted by the
    cosine (below 0 as 0), then D^-1/2 S D^-1/2 with D the row sums; float64."""
    x = x.astype(np.float64)
    n = len(x)
    norms = np.linalg.norm(x, axis=1)
    xn = x / np.where(norms > 0, norms, 1)[:, None]
    sim = xn @ xn.T
    s = np.zeros((n, n))
    for i in np.flatnonzero(valid):
        row = np.where(valid, sim[i], -np.inf)
        row[i] = np.inf
        keep = np.argsort(-row, kind="stable")[:min(k, valid.sum())]
        s[i, keep] = np.maximum(sim[i, keep], 0)
    d = s.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    return inv[:, None] * s * inv[None, :]


def pattern_dense(values: torch.Tensor, p) -> np.ndarray:
    out = np.zeros((p.n, p.n))
    out[p.rows.numpy(), p.cols.numpy()] = values.detach().double().numpy()
    return out


def build(feats: Features, ds=None, **cfg) -> Recommender:
    torch.manual_seed(0)
    ds = ds if ds is not None else tiny()[0]
    return get_model_class("lattice").build(ds, {"knn_k": 3, **cfg}, feats)


# ------------------------------------------------------------------------------------------------ kNN graphs
def test_knn_graph_by_hand():
    """i0 = (1, 0), i1 = (1, 1), i2 = (.2, 1), K = 2: cos01 = .7071, cos12 = 1.2 / (√2 √1.04) = .8321, cos02 =
    .1961; rows keep themselves and 0→1, 1→2, 2→1; degrees 1.7071, 1.8321, 1.8321; not symmetric."""
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.2, 1.0]], dtype=torch.float64)
    c01, c12 = 1 / math.sqrt(2), 1.2 / (math.sqrt(2) * math.sqrt(1.04))
    d0, d1 = 1 + c01, 1 + c12
    want = np.array([[1 / d0, c01 / math.sqrt(d0 * d1), 0],
                     [0, 1 / d1, c12 / d1],
                     [0, c12 / d1, 1 / d1]])
    got = knn_graph_csr(x, 2, torch.ones(3, dtype=torch.bool)).toarray()
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("block_rows", [1024, 7])  # one block, and several (the blocked search's seams)
def test_top_k_pairs_and_values_equal_a_brute_force(monkeypatch, block_rows):
    monkeypatch.setattr(lattice_mod, "_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6))
    x[[5, 17]] = 0.0  # zero rows: no cosine, no edges
    valid = np.ones(40, bool)
    valid[[5, 17, 30]] = False  # 30: masked (a missing image)
    xt = torch.from_numpy(x)
    p = topk_pairs(xt, 4, torch.from_numpy(valid & (np.abs(x).sum(1) > 0)))
    want = dense_knn(x, 4, valid)
    assert set(zip(p.rows.tolist(), p.cols.tolist())) == set(zip(*np.nonzero(want)))
    np.testing.assert_allclose(pattern_dense(knn_values(xt, p), p), want, rtol=1e-10, atol=1e-12)


def test_initial_and_learned_graphs_are_the_top_k_of_the_raw_and_projected_features():
    ds, feats = tiny()  # items 1 and 8 have no image
    model = build(feats, ds)
    model.eval()
    valid_image = feats.image_mask & (np.abs(feats.image).sum(1) > 0)
    for m, valid in (("text", np.ones(ds.n_items, bool)), ("image", valid_image)):
        raw = getattr(feats, m)
        np.testing.assert_allclose(model.initial[m].m.to_dense().double().numpy(), dense_knn(raw, 3, valid),
                                   rtol=1e-5, atol=1e-7)
        pairs = model.rebuild_learned_pairs()
        with torch.no_grad():
            projected = model.proj[m](torch.from_numpy(raw)).double()
        got = pattern_dense(knn_values(projected, pairs[m]), pairs[m])
        np.testing.assert_allclose(got, dense_knn(projected.numpy(), 3, valid), rtol=1e-6, atol=1e-8)
    assert model.summary["item_item_edges"] == 3 * ds.n_items + 3 * int(valid_image.sum())


# ------------------------------------------------------------------------------ the learned graph over training
def test_learned_neighbours_are_fixed_within_an_epoch_and_chosen_again_at_its_start():
    ds, feats = tiny()
    model = build(feats, ds)
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    before = model._cached_pairs
    with torch.no_grad():  # a large step, as an optimizer makes (in place: versions change, not identities)
        for layer in model.proj.values():
            layer.weight.copy_(torch.randn_like(layer.weight))
    model.loss(*BATCH)
    assert model._cached_pairs is before  # within the epoch: the pairs chosen at its start
    model.on_epoch_start(1, np.random.default_rng(0))
    assert model._cached_pairs is not before
    with torch.no_grad():
        projected = model.proj["text"](model.feats["text"]).double().numpy()
    p = model._cached_pairs["text"]
    assert set(zip(p.rows.tolist(), p.cols.tolist())) == set(zip(*np.nonzero(dense_knn(projected, 3,
                                                                                        np.ones(9, bool)))))


def test_gradient_reaches_the_projection_through_the_kept_values():
    """Autograd's gradient of the item graph output with respect to W_text equals central differences
    with the neighbours held fixed; with λ = 1 (the frozen graph alone) W_m gets none."""
    ds, feats = tiny()
    model = build(feats, ds, lambda_coeff=0.6, n_ii_layers=2).double()
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    r = torch.randn(ds.n_items, 64, dtype=torch.float64)
    w = model.proj["text"].weight
    (model.item_graph_part() * r).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    eps = 1e-6
    for idx in [(0, 0), (5, 2), (63, 4)]:
        with torch.no_grad():
            w[idx] += eps
            up = (model.item_graph_part() * r).sum().item()
            w[idx] -= 2 * eps
            down = (model.item_graph_part() * r).sum().item()
            w[idx] += eps
        assert w.grad[idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)
    # both halves of the CSR product's backward (values and embeddings) against autograd's dense product
    x = torch.randn(9, 4, dtype=torch.float64)
    p = topk_pairs(x, 3, torch.ones(9, dtype=torch.bool))
    v = torch.rand(len(p.rows), dtype=torch.float64, requires_grad=True)
    h = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, h: valued_spmm(v, h, p), (v, h))
    frozen = build(feats, ds, lambda_coeff=1.0)
    frozen.train()
    frozen.loss(*BATCH)["loss"].backward()
    assert all(p.grad is None for p in frozen.proj.parameters())
    assert frozen.item_emb.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ mixing and scores
def test_item_graph_mixes_initial_and_learned_with_softmax_modality_weights():
    """h = A² E_I, A = Σ_m α_m (λ Ŝ^m + (1 − λ) Ã^m), α = softmax(w); z_u, z_i against a dense LightGCN."""
    ds, feats = tiny()
    model = build(feats, ds, lambda_coeff=0.7, n_ii_layers=2, n_ui_layers=2).double()
    with torch.no_grad():
        model.modal_logits.copy_(torch.tensor([0.4, -0.2], dtype=torch.float64))
    model.eval()
    alpha = np.exp([0.4, -0.2]) / np.exp([0.4, -0.2]).sum()
    np.testing.assert_allclose(model.modality_weights().detach().numpy(), alpha, rtol=1e-12)
    valid = {"text": np.ones(9, bool), "image": feats.image_mask}
    a = np.zeros((9, 9))
    for j, m in enumerate(("text", "image")):
        raw = getattr(feats, m).astype(np.float64)
        with torch.no_grad():
            projected = model.proj[m](torch.from_numpy(raw)).numpy()
        a += alpha[j] * (0.7 * dense_knn(raw, 3, valid[m]) + 0.3 * dense_knn(projected, 3, valid[m]))
    e_i = model.item_emb.weight.detach().numpy()
    with torch.no_grad():
        h = model.item_graph_part().numpy()
        z_u, z_i = model.embeddings()
    np.testing.assert_allclose(h, a @ a @ e_i, rtol=1e-5, atol=1e-7)  # Ŝ^m is held in float32, as every graph
    e = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    adj = a_hat(ds.train)
    cf = (e + adj @ e + adj @ adj @ e) / 3
    torch.testing.assert_close(z_u, cf[:6])
    torch.testing.assert_close(z_i, cf[6:] + F.normalize(torch.from_numpy(h), dim=1))


def test_defaults_are_the_papers():
    cfg = get_model_class("lattice").Config()
    assert (cfg.embedding_dim, cfg.knn_k, cfg.lambda_coeff, cfg.n_ii_layers, cfg.n_ui_layers, cfg.reg_weight) \
        == (64, 10, 0.9, 1, 2, 1e-5)


# ---------------------------------------------------------------------------------------------- protocol
def test_reads_the_training_split_only():
    ds, feats = tiny()
    train_only = TrainOnly(ds.n_users, ds.n_items, ds.train)
    model = build(Features(text=feats.text, image=feats.image), train_only)
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    model.loss(*BATCH)["loss"].backward()
    model.eval()
    assert torch.isfinite(model.final_embeddings()[1]).all()


@pytest.mark.parametrize("which", ["text", "image"])
def test_one_modality_works(which):
    ds, feats = tiny()
    one = Features(text=feats.text) if which == "text" else Features(image=feats.image, image_mask=feats.image_mask)
    model = build(one, ds)
    assert list(model.proj) == [which] and model.summary["modalities_used"] == [which]
    assert model.modality_weights().tolist() == [1.0]
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    model.loss(*BATCH)["loss"].backward()
    assert model.proj[which].weight.grad.abs().sum() > 0
    model.eval()
    assert torch.isfinite(model.final_embeddings()[1]).all()


def test_no_modality_is_refused():
    ds, _ = tiny()
    with pytest.raises(ConfigError, match="lattice needs item features"):
        get_model_class("lattice").build(ds, None, None)
    with pytest.raises(ConfigError, match="lattice needs item text or image"):
        get_model_class("lattice").build(ds, None, Features(profile=np.ones((ds.n_users, 4), np.float32)))
    with pytest.raises(ConfigError, match="lattice needs item text or image"):
        get_model_class("lattice")(3, 4)


def test_evaluation_is_deterministic_propagates_once_and_survives_save_load(monkeypatch, tmp_path):
    ds, feats = tiny()
    model = build(feats, ds)
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    model.loss(*BATCH)["loss"].backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * p.grad if p.grad is not None else 0.0)
    calls = []
    real = lattice_mod.topk_pairs
    monkeypatch.setattr(lattice_mod, "topk_pairs", lambda *a: calls.append(1) or real(*a))
    model.eval()
    first = model.score(np.arange(ds.n_users)).clone()
    model.recommend(0, 3)
    assert torch.equal(model.score(np.arange(ds.n_users)), first)
    assert len(calls) == 2  # one neighbour choice per modality for the new weights, then the cache
    with torch.no_grad():
        a, b = model.embeddings(), model.embeddings()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert torch.equal(loaded.score(np.arange(ds.n_users)), first)
    loaded.prepare(ds, feats)
    assert torch.equal(loaded.score(np.arange(ds.n_users)), first)


class _LargestDense(TorchDispatchMode):
    """The number of elements of the largest strided tensor any torch op makes (sparse ones report their
    logical n × n size, not their storage, so they are left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
        return out


def test_no_dense_item_item_tensor():
    """Building, a training step (forward and backward) and evaluating with I = 1,500 items make no tensor
    of I × I elements (the top-K search's blocks are 1,024 × I)."""
    n_users, n_items = 30, 1500
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((n_users, n_items)) < 0.02).astype(np.float32))
    feats = Features(text=rng.normal(size=(n_items, 8)).astype(np.float32),
                     image=rng.normal(size=(n_items, 6)).astype(np.float32))
    with _LargestDense() as watch:
        model = build(feats, TinyData(n_users, n_items, train), knn_k=10, embedding_dim=16)
        model.train()
        model.on_epoch_start(0, rng)
        model.loss(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))["loss"].backward()
        model.eval()
        model.final_embeddings()
    assert watch.largest == 1024 * n_items  # the watch sees the search's blocks
    assert watch.largest < n_items * n_items


# --------------------------------------------------------------------------------------------- learning
def genre_decade_features(ds) -> Features:
    """Multi-hot genres and a one-hot decade per movie, from the dataset's own item table: real content
    features without an encoder."""
    items = ds.items.set_index(ds.items["item_id"].astype(str)).loc[ds.item_ids.astype(str)]
    genres = items["genres"].fillna("").str.get_dummies(sep="|").to_numpy(np.float32)
    decade = pd.get_dummies(pd.to_numeric(items["year"], errors="coerce").fillna(0) // 10 * 10).to_numpy(np.float32)
    return Features(text=np.hstack([genres, decade]))


def test_learns_above_the_popularity_ranking(ml100k):
    """15 epochs on the first 150 users: validation Recall@20 above popularity's (0.190; LATTICE 0.261, LightGCN
    alone 0.262 after the same 15 epochs: genres and decades add little on this dense slice)."""
    ds = subset_users(ml100k, 150)
    torch.manual_seed(0)
    model = get_model_class("lattice").build(ds, None, genre_decade_features(ds))
    result = model.fit(ds, TrainConfig(epochs=15, batch_size=1024, lr=5e-3, patience=15, progress=False, seed=3,
                                       num_threads=1))
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < 0.95 * losses[0]
    assert result["valid"]["recall@20"] > popularity_recall(ds), (result["valid"], popularity_recall(ds))
