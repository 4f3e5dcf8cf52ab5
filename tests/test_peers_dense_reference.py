"""The peers against dense references (LGMRec, FREEDOM's sampling) and two bugs (reversed views, loaded LightGCN).

QA pass on the peers (MostPop, BPR-MF, LightGCN, VBPR, FREEDOM, LGMRec, BM3): the bugs it found, each
pinned here, plus two dense-reference checks the other peer tests do not make.

Bugs (each test fails on the code before the fix):

- FREEDOM, LGMRec and BM3 crashed in ``prepare`` on item features given as a reversed NumPy view (negative
  strides, e.g. ``x[::-1]`` or ``np.flip``): ``torch.from_numpy`` refuses them (VBPR, which concatenates,
  accepted them);
- a loaded LightGCN asked to recompute its embeddings (after ``train()``, or ``loss`` without ``prepare``)
  failed with ``AttributeError: 'NoneType' object has no attribute 'layout'`` where the other graph peers
  say to call ``prepare``.

Checks without a bug found: LGMRec's whole forward pass (collaborative, local modality and hypergraph
parts, with a user and an item without interactions and items without an image) and the gradient of its
BPR term on every parameter against a dense float64 re-implementation of the docstring's equations;
FREEDOM's degree-sensitive sampling draws an edge with probability ∝ 1/sqrt(d_u d_i).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recgoat.features import Features
from recgoat.models import Recommender, get_model_class
from recgoat.models.freedom import degree_sensitive_keep

N_USERS, N_ITEMS = 6, 9


@dataclass
class TinyData:
    n_users: int
    n_items: int
    train: sp.csr_matrix
    name: str = "tiny"

    def csr(self, split: str | None = "train", weight: str | None = None) -> sp.csr_matrix:
        return self.train.copy()


def tiny() -> tuple[TinyData, Features]:
    """6 users × 9 items; the last user and the last item have no training interaction; items 1 and 8
    have no image (zero rows, masked)."""
    rng = np.random.default_rng(0)
    r = (rng.random((N_USERS, N_ITEMS)) < 0.4).astype(np.float32)
    r[np.arange(N_USERS), np.arange(N_USERS)] = 1.0
    r[-1] = 0.0
    r[:, -1] = 0.0
    text = rng.normal(size=(N_ITEMS, 5)).astype(np.float32)
    image = rng.normal(size=(N_ITEMS, 4)).astype(np.float32)
    mask = np.ones(N_ITEMS, bool)
    mask[[1, N_ITEMS - 1]] = False
    image[~mask] = 0.0
    return TinyData(N_USERS, N_ITEMS, sp.csr_matrix(r)), Features(text=text, image=image, image_mask=mask)


def a_hat(train: sp.csr_matrix) -> torch.Tensor:
    """Dense D^-1/2 A D^-1/2 of the bipartite graph (users first), isolated nodes zero, float64."""
    r = train.toarray().astype(np.float64)
    a = np.block([[np.zeros((r.shape[0],) * 2), r], [r.T, np.zeros((r.shape[1],) * 2)]])
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0.0)
    return torch.from_numpy(inv[:, None] * a * inv[None, :])


# ------------------------------------------------------------------------------------------------- bugs
@pytest.mark.parametrize("name", ["freedom", "lgmrec", "bm3"])
def test_features_given_as_a_reversed_view_are_accepted(name):
    """A feature matrix with negative strides (a reversed view) builds the model, which then computes
    exactly what it computes from a contiguous copy of the same matrix."""
    ds, feats = tiny()
    views = Features(text=feats.text[::-1], image=feats.image[::-1, ::-1])
    copies = Features(text=np.ascontiguousarray(views.text), image=np.ascontiguousarray(views.image))
    out = []
    for f in (views, copies):
        torch.manual_seed(0)
        model = get_model_class(name).build(ds, None, f)  # ValueError (negative strides) before the fix
        model.eval()
        with torch.no_grad():
            out.append(model.embeddings())
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_a_loaded_lightgcn_asked_to_recompute_says_to_call_prepare(tmp_path):
    ds, feats = tiny()
    torch.manual_seed(0)
    model = get_model_class("lightgcn").build(ds, None, feats)
    want = model.score([0, 1])
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert torch.equal(loaded.score([0, 1]), want)  # from the saved embeddings: no graph needed
    saved = {k: v.clone() for k, v in loaded.state_dict().items()}
    with torch.no_grad():  # other weights: the saved embeddings are stale
        next(loaded.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match=r"lightgcn: call prepare\(dataset\)"):
        loaded.score([0])
    loaded.load_state_dict(saved)  # the saved weights again: the saved embeddings apply again
    assert torch.equal(loaded.score([0, 1]), want)
    loaded.train()
    with pytest.raises(RuntimeError, match="prepare"):
        loaded.loss(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    loaded.prepare(ds, None)
    loaded.eval()
    assert torch.equal(loaded.score([0, 1]), want)


# ------------------------------------------------------------------------------ dense reference checks
def _layer_mean(adj: torch.Tensor, e: torch.Tensor, n_layers: int) -> torch.Tensor:
    out, h = e, e
    for _ in range(n_layers):
        h = adj @ h
        out = out + h
    return out / (n_layers + 1)


def _lgmrec_dense(p: dict[str, torch.Tensor], ds: TinyData, feats: Features, alpha: float, tau: float,
                  n_ui: int, n_mm: int, n_hyper: int) -> torch.Tensor:
    """LGMRec's E* (users first) from its docstring's equations, dense, float64, evaluation mode."""
    adj = a_hat(ds.train)
    r = torch.from_numpy(ds.train.toarray()).double()
    e_id = _layer_mean(adj, torch.cat([p["user_emb.weight"], p["item_emb.weight"]]), n_ui)
    local, glob = e_id, 0.0
    for m in ("text", "image"):
        x = torch.from_numpy(getattr(feats, m)).double()
        e_m = x @ p[f"proj.{m}.weight"].t() + p[f"proj.{m}.bias"]
        users = (r / r.sum(1, keepdim=True).clamp(min=1)) @ e_m  # mean over the user's training items
        local = local + F.normalize(_layer_mean(adj, torch.cat([users, e_m]), n_mm), dim=-1)
        h_i = x @ p[f"hyper.{m}.hyperedges"].t()  # X_m Vᵀ
        a_i, a_u = torch.softmax(h_i / tau, -1), torch.softmax((r @ h_i) / tau, -1)
        e_i = e_id[ds.n_users:]
        for _ in range(n_hyper):
            edge = a_i.t() @ e_i
            e_u, e_i = a_u @ edge, a_i @ edge
        glob = glob + torch.cat([e_u, e_i])
    return local + alpha * F.normalize(glob, dim=-1)


def test_lgmrec_forward_and_bpr_gradient_equal_a_dense_reference():
    ds, feats = tiny()
    cfg = {"alpha": 0.3, "tau": 0.5, "n_ui_layers": 2, "n_mm_layers": 1, "n_hyper_layers": 2, "cl_weight": 0.0}
    torch.manual_seed(1)
    model = get_model_class("lgmrec").build(ds, cfg, feats)
    model.eval()  # softmax assignments, no dropout: deterministic, so the gradient can be compared
    params = {n: q.detach().double().clone().requires_grad_(True) for n, q in model.named_parameters()}
    want = _lgmrec_dense(params, ds, feats, 0.3, 0.5, 2, 1, 2)
    with torch.no_grad():
        z_u, z_i = model.embeddings()
    torch.testing.assert_close(torch.cat([z_u, z_i]).double(), want, rtol=1e-5, atol=1e-6)

    users, pos, neg = torch.tensor([0, 1, 2, 2, 4]), torch.tensor([0, 1, 2, 3, 4]), torch.tensor([8, 7, 6, 5, 8])
    model.zero_grad()
    model.loss(users, pos, neg)["bpr"].backward()
    zu, zi = want[:N_USERS], want[N_USERS:]
    (-F.logsigmoid((zu[users] * zi[pos]).sum(-1) - (zu[users] * zi[neg]).sum(-1)).mean()).backward()
    for name, q in model.named_parameters():
        assert q.grad is not None and params[name].grad.abs().sum() > 0, name
        torch.testing.assert_close(q.grad.double(), params[name].grad, rtol=1e-4, atol=1e-7, msg=name)


def test_freedom_keeps_an_edge_with_probability_proportional_to_inverse_sqrt_degrees():
    """With one edge kept, edge (u, i) is drawn with probability w_ui / Σw, w = 1/sqrt(d_u d_i)."""
    train = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1]], np.float32))
    coo = train.tocoo()
    d_u, d_i = np.asarray(train.sum(1)).ravel(), np.asarray(train.sum(0)).ravel()
    w = 1 / np.sqrt(d_u[coo.row] * d_i[coo.col])
    rng = np.random.default_rng(0)
    n = 6000
    counts = np.bincount(np.concatenate([degree_sensitive_keep(train, 1, rng) for _ in range(n)]),
                         minlength=coo.nnz)
    np.testing.assert_allclose(counts / n, w / w.sum(), atol=0.015)  # ~3 standard errors
