"""Mathematics of ``recgoat.nn.layers`` on small random graphs, against independent references: PyG's
GATConv / GATv2Conv with the same weights, dense per-edge formulas written here with loops, and
``torch.autograd.gradcheck`` in float64 for every custom autograd Function (forward and backward)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from recgoat.graphs.bipartite import bipartite_adjacency, sym_normalize, to_torch_csr
from recgoat.models.lightgcn import propagate
from recgoat.nn import layers
from recgoat.nn.layers import (ModalityGATBranch, RatingAwareLightGCN, SparseGATConv, _EdgeSpMM, _GATAggregate,
                               _SymSampledDot, _WeightedSymPropagation, gat_graph, restrict_rows, segment_softmax,
                               stack_graph)

torch.set_num_threads(1)
F64 = torch.float64


# ---------------------------------------------------------------------------------------------- helpers
def random_edges(n: int, e: int, seed: int, isolated: tuple[int, ...] = ()) -> Tensor:
    """``[2, e']`` edges with duplicates and existing self loops; ``isolated`` nodes get no in-edge."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    ei = torch.cat([ei, torch.tensor([[1, 2], [1, 2]]), ei[:, :3]], 1)  # self loops and duplicate edges
    keep = ~torch.isin(ei[1], torch.tensor(isolated, dtype=torch.long))
    return ei[:, keep]


def edge_list(ei: Tensor, n: int, self_loops: bool) -> list[tuple[int, int]]:
    """(src, dst) pairs as PyG's GATConv sees them: existing loops replaced by one per node."""
    pairs = [(s, d) for s, d in ei.t().tolist() if not (self_loops and s == d)]
    return pairs + ([(i, i) for i in range(n)] if self_loops else [])


def dense_gat(x: Tensor, ei: Tensor, conv: SparseGATConv, self_loops: bool, edge_mask=None) -> Tensor:
    """GAT by the textbook formula, node by node, head by head (``edge_mask(k, src, dst)``: a dropout mask)."""
    n, hds, c = x.shape[0], conv.heads, conv.out_dim
    h = (x @ conv.lin.weight.t()).view(n, hds, c)
    pairs = edge_list(ei, n, self_loops)
    rows = []
    for i in range(n):
        srcs = [s for s, d in pairs if d == i]
        heads = []
        for k in range(hds):
            if not srcs:
                heads.append(torch.zeros(c, dtype=x.dtype))
                continue
            logits = torch.stack([F.leaky_relu(h[s, k] @ conv.att_src[0, k] + h[i, k] @ conv.att_dst[0, k],
                                               conv.negative_slope) for s in srcs])
            alpha = torch.softmax(logits, 0)
            heads.append(sum((alpha[j] * (1.0 if edge_mask is None else edge_mask(k, s, i))) * h[s, k]
                             for j, s in enumerate(srcs)))
        hk = torch.stack(heads)
        rows.append(hk.reshape(-1) if conv.concat else hk.mean(0))
    return torch.stack(rows) + conv.bias


def bipartite(n_users: int, n_items: int, seed: int, isolated_user: bool = False) -> tuple[Tensor, sp.csr_matrix]:
    r = sp.random(n_users, n_items, density=0.4, random_state=seed, format="csr", dtype=np.float32)
    r.data[:] = 1.0
    if isolated_user:
        r = sp.csr_matrix(r.multiply(np.r_[0.0, np.ones(n_users - 1)][:, None]))
        r.eliminate_zeros()
    return to_torch_csr(sym_normalize(bipartite_adjacency(r))), r


def grads(out: Tensor, weight: Tensor, tensors) -> list[Tensor]:
    return list(torch.autograd.grad((out * weight).sum(), tensors, allow_unused=True))


# ---------------------------------------------------------------------------------------------- sparse GAT vs PyG
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("heads,concat", [(1, True), (3, True), (2, False)])
def test_sparse_gat_matches_pyg_and_dense_reference(heads, concat, self_loops, dtype):
    """Output and all gradients equal PyG's GATConv (same weights) and the loop formula, with duplicate edges,
    existing self loops and nodes without in-edges (with self loops off those rows are the bias alone)."""
    from torch_geometric.nn import GATConv

    n = 11
    ei = random_edges(n, 30, seed=heads, isolated=(4, 9))
    kw = dict(heads=heads, concat=concat, negative_slope=0.2, add_self_loops=self_loops)
    # seeded: GATConv draws its weights from the global generator, so they followed the tests run before, and
    # about one draw in twelve put a float32 rounding difference just past atol
    torch.manual_seed(heads)
    pyg, ours = GATConv(6, 4, **kw).to(dtype), SparseGATConv(6, 4, **kw).to(dtype)
    ours.load_state_dict(pyg.state_dict())
    with torch.no_grad():
        ours.bias.normal_()
        pyg.bias.copy_(ours.bias)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 6, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(n, ours.bias.numel(), generator=g, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    out, ref_pyg, ref_loop = ours(x, ei), pyg(x, ei), dense_gat(x, ei, ours, self_loops)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref_pyg, **tol)
    torch.testing.assert_close(out, ref_loop, **tol)
    if not self_loops:
        torch.testing.assert_close(out[[4, 9]], ours.bias.expand(2, -1).detach(), **tol)
    ga = grads(out, w, [x, *ours.parameters()])
    gb = grads(ref_pyg, w, [x, *pyg.parameters()])
    gc = grads(ref_loop, w, [x, *ours.parameters()])
    for a, b, c in zip(ga, gb, gc):
        torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(a, c, **tol)


@pytest.mark.parametrize("heads", [1, 2])
def test_restricted_rows_equal_full_rows_in_values_and_gradients(heads):
    conv = SparseGATConv(5, 3, heads=heads).double()
    n = 10
    ei = random_edges(n, 25, seed=5, isolated=(3,))
    rows = torch.tensor([0, 3, 4, 8])
    x = torch.randn(n, 5, dtype=F64, requires_grad=True)
    full, part = conv(x, ei), conv(x, ei, rows)
    torch.testing.assert_close(part, full[rows])
    w = torch.randn_like(part)
    for a, b in zip(grads(part, w, [x, *conv.parameters()]), grads(full[rows], w, [x, *conv.parameters()])):
        torch.testing.assert_close(a, b)


def test_empty_graphs():
    """No edges: without self loops every row is the bias (no gradient to x); with them each node attends to
    itself alone (α = 1: h + bias). No nodes at all: an empty output."""
    x = torch.randn(5, 4, dtype=F64, requires_grad=True)
    none = torch.zeros(2, 0, dtype=torch.long)
    conv = SparseGATConv(4, 3, heads=2, add_self_loops=False).double()
    out = conv(x, none)
    torch.testing.assert_close(out, conv.bias.expand(5, -1).detach())
    (gx,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    assert gx is None or not gx.any()
    conv = SparseGATConv(4, 3, heads=2, add_self_loops=True).double()
    torch.testing.assert_close(conv(x, none), conv.lin(x) + conv.bias)
    assert conv(torch.randn(0, 4, dtype=F64), none).shape == (0, 6)


def test_graph_cache_sees_an_edge_index_changed_in_place():
    """Bug: the CSR cache was keyed by ``data_ptr`` and shape only, so an edge_index edited in place (or a new
    one allocated where a freed one was) was served the stale graph."""
    conv = SparseGATConv(4, 3).double()
    x = torch.randn(6, 4, dtype=F64)
    ei = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    conv(x, ei)
    ei[0] = torch.tensor([5, 5, 5, 5, 5])  # same tensor, same address, other graph
    torch.testing.assert_close(conv(x, ei), dense_gat(x, ei, conv, True))
    conv.add_self_loops = False
    torch.testing.assert_close(conv(x, ei), dense_gat(x, ei, conv, False))


def test_attention_dropout_masks_the_normalised_attention(monkeypatch):
    """Training-mode attention dropout multiplies the softmax weights (not the logits) edge by edge, as PyG
    does; eval mode and p = 0 leave them alone. The mask is fixed here so the loop formula can replay it."""
    n, hds = 8, 2
    ei = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0, 2], [1, 2, 3, 4, 5, 6, 7, 0, 5, 5]])  # no duplicates
    conv = SparseGATConv(4, 3, heads=hds, dropout=0.5).double().train()
    x = torch.randn(n, 4, dtype=F64, requires_grad=True)
    g = gat_graph(ei, n)
    e = len(g.col)
    keep = torch.rand(hds * e, generator=torch.Generator().manual_seed(0)) < 0.5
    mask = keep.to(F64) / 0.5
    seen = {}

    def fake_dropout(t, p=0.5, training=True, inplace=False):
        seen.update(p=p, training=training, n=t.numel())
        return t * mask

    monkeypatch.setattr(layers.F, "dropout", fake_dropout)
    out = conv(x, ei)
    assert seen == dict(p=0.5, training=True, n=hds * e)
    edge_pos = {(int(s), int(d)): k for k, (s, d) in enumerate(zip(g.col, g.row))}
    ref = dense_gat(x, ei, conv, True, edge_mask=lambda k, s, d: mask[k * e + edge_pos[(s, d)]])
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(out)
    for a, b in zip(grads(out, w, [x, *conv.parameters()]), grads(ref, w, [x, *conv.parameters()])):
        torch.testing.assert_close(a, b)
    seen.clear()
    conv.eval()
    torch.testing.assert_close(conv(x, ei), dense_gat(x, ei, conv, True))
    assert not seen


# ---------------------------------------------------------------------------------------------- branches
def dense_gatv2(x: Tensor, ei: Tensor, conv) -> Tensor:
    """GATv2 (Brody et al.): e_ij = aᵀ LeakyReLU(W_l x_j + W_r x_i), messages W_l x_j, self loops added."""
    n, hds, c = x.shape[0], conv.heads, conv.out_channels
    xl, xr = conv.lin_l(x).view(n, hds, c), conv.lin_r(x).view(n, hds, c)
    pairs = edge_list(ei, n, True)
    rows = []
    for i in range(n):
        srcs = [s for s, d in pairs if d == i]
        heads = []
        for k in range(hds):
            logits = torch.stack([(F.leaky_relu(xl[s, k] + xr[i, k], conv.negative_slope) * conv.att[0, k]).sum()
                                  for s in srcs])
            alpha = torch.softmax(logits, 0)
            heads.append(sum(alpha[j] * xl[s, k] for j, s in enumerate(srcs)))
        hk = torch.stack(heads)
        rows.append(hk.reshape(-1) if conv.concat else hk.mean(0))
    return torch.stack(rows) + conv.bias


@pytest.mark.parametrize("concat", [True, False])
def test_gatv2_branch_matches_dense_reference(concat):
    torch.manual_seed(0)
    branch = ModalityGATBranch(7, 4, heads=2, v2=True, concat=concat).double()
    ei = random_edges(9, 20, seed=1)
    x = torch.randn(9, 7, dtype=F64)
    rows = torch.tensor([1, 5])
    ref = dense_gatv2(branch.project(x), ei, branch.convs[0])
    torch.testing.assert_close(branch(x, ei), ref)
    torch.testing.assert_close(branch(x, ei, rows), ref[rows])


@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("concat", [True, False])
def test_fused_sparse_branch_equals_pyg_branch_in_float64(concat, n_layers):
    """Bug: the fused first layer (projection ∘ lin ∘ attention vectors, one product) ran in float32 whatever the
    module's dtype (a hard-coded float32 copy), so a float64 branch differed from the unfused and the PyG
    branch by ~1e-7. Now fused = unfused = PyG to float64 rounding, values, rows and all gradients."""
    torch.manual_seed(1)
    kw = dict(heads=2, n_layers=n_layers, concat=concat)
    sparse, pyg = ModalityGATBranch(7, 4, **kw).double(), ModalityGATBranch(7, 4, impl="pyg", **kw).double()
    pyg.load_state_dict(sparse.state_dict())
    ei = random_edges(9, 20, seed=2)
    x = torch.randn(9, 7, dtype=F64)
    rows = torch.tensor([0, 4, 6])
    fused = sparse(x, ei)
    assert fused.dtype == F64
    sparse.fuse_first_layer = False
    unfused = sparse(x, ei)
    sparse.fuse_first_layer = True
    ref = pyg(x, ei)
    tol = dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(fused, ref, **tol)
    torch.testing.assert_close(unfused, ref, **tol)
    part = sparse(x, ei, rows)
    torch.testing.assert_close(part, ref[rows], **tol)
    w = torch.randn_like(part)
    for a, b in zip(grads(part, w, list(sparse.parameters())), grads(pyg(x, ei)[rows], w, list(pyg.parameters()))):
        torch.testing.assert_close(a, b, **tol)


# ---------------------------------------------------------------------------------------------- segment softmax
def reference_segment_softmax(logits: Tensor, row: Tensor, n: int) -> Tensor:
    out = torch.zeros_like(logits)
    for i in range(n):
        sel = row == i
        if sel.any():
            out[sel] = torch.softmax(logits[sel], 0)
    return out


def csr_of(row: Tensor, n: int) -> Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(torch.bincount(row, minlength=n), 0)])


@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e4), (F64, 1e300)])
def test_segment_softmax_huge_logits_and_empty_segments(dtype, big):
    row = torch.tensor([0, 0, 0, 2, 2, 4])  # segments 1 and 3 empty
    logits = torch.tensor([big, big - 1, -big, -big, -big + 2, big], dtype=dtype)
    out = segment_softmax(logits, csr_of(row, 5), row)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference_segment_softmax(logits.double(), row, 5).to(dtype))


def test_segment_softmax_minus_inf():
    """-inf logits get weight 0. Bug: a segment of only -inf logits (every in-edge masked) gave NaN weights
    (-inf - -inf), whose NaN gradients then reach every parameter; it now gets zeros and finite gradients."""
    row = torch.tensor([0, 0, 0, 1, 1, 2])
    inf = float("inf")
    logits = torch.tensor([0.5, -inf, 1.5, -inf, -inf, 3.0], dtype=F64, requires_grad=True)
    out = segment_softmax(logits, csr_of(row, 3), row)
    expected = torch.tensor([math.exp(0.5), 0, math.exp(1.5), 0, 0, 1], dtype=F64)
    expected[:3] /= math.exp(0.5) + math.exp(1.5)
    torch.testing.assert_close(out.detach(), expected)
    (g,) = torch.autograd.grad((out * torch.arange(6.0, dtype=F64)).sum(), logits)
    assert torch.isfinite(g).all() and not g[[1, 3, 4]].any()


def test_segment_softmax_gradcheck():
    row = torch.tensor([0, 0, 2, 2, 2, 3])
    logits = torch.randn(6, dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: segment_softmax(t, csr_of(row, 4), row), (logits,))


# ---------------------------------------------------------------------------------------------- custom Functions
def gat_graphs(n: int, heads: int, restricted: bool, self_loops: bool):
    g = gat_graph(random_edges(n, 22, seed=heads, isolated=(2, 6)), n, self_loops)
    if restricted:
        g = restrict_rows(g, torch.tensor([0, 2, 3, 7]))
    return stack_graph(g, heads) if heads > 1 else g


@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("restricted", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
def test_gat_aggregate_gradcheck_and_forward(heads, restricted, self_loops):
    """_GATAggregate: forward against the per-edge formula, backward by gradcheck (float64), including
    destinations without in-edges (zero rows) and a restricted, rectangular graph."""
    n = 9
    g = gat_graphs(n, heads, restricted, self_loops)
    gen = torch.Generator().manual_seed(11)
    a_src = torch.randn(g.shape[1], generator=gen, dtype=F64, requires_grad=True)
    a_dst = torch.randn(g.n, generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(g.shape[1], 3, generator=gen, dtype=F64, requires_grad=True)
    out = _GATAggregate.apply(g, a_src, a_dst, x, 0.2)
    ref = torch.zeros(g.n, 3, dtype=F64)
    for i in range(g.n):
        sel = (g.row == i).nonzero().flatten()
        if len(sel):
            z = F.leaky_relu(a_src[g.col[sel]] + a_dst[i], 0.2)
            ref[i] = (torch.softmax(z, 0)[:, None] * x[g.col[sel]]).sum(0)
    torch.testing.assert_close(out, ref)
    torch.autograd.gradcheck(lambda s, d, x_: _GATAggregate.apply(g, s, d, x_, 0.2), (a_src, a_dst, x))


@pytest.mark.parametrize("restricted", [False, True])
def test_edge_spmm_gradcheck_and_forward(restricted):
    g = gat_graphs(9, 2, restricted, self_loops=False)
    gen = torch.Generator().manual_seed(12)
    w = torch.randn(len(g.col), generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(g.shape[1], 3, generator=gen, dtype=F64, requires_grad=True)
    dense = torch.zeros(g.shape, dtype=F64).index_put((g.row, g.col), w.detach(), accumulate=True)
    torch.testing.assert_close(_EdgeSpMM.apply(g, w, x), dense @ x)
    torch.autograd.gradcheck(lambda w_, x_: _EdgeSpMM.apply(g, w_, x_), (w, x))


def test_gat_functions_refuse_a_second_derivative():
    """Bug: _GATAggregate and _EdgeSpMM's backward keep no graph (alpha is saved without one), yet with
    create_graph=True they returned a differentiable-looking gradient whose own gradient was silently wrong.
    Now a second derivative either raises (once_differentiable) or is right; here against autograd."""
    g = gat_graphs(7, 1, False, True)
    gen = torch.Generator().manual_seed(13)
    a_src = torch.randn(7, generator=gen, dtype=F64, requires_grad=True)
    a_dst = torch.randn(7, generator=gen, dtype=F64, requires_grad=True)
    x = torch.randn(7, 3, generator=gen, dtype=F64, requires_grad=True)
    w = torch.rand(len(g.col), generator=gen, dtype=F64, requires_grad=True)

    def reference_aggregate(s, d, x_):
        z = F.leaky_relu(s[g.col] + d[g.row], 0.2)  # softmax by index_add: twice differentiable
        ez = (z - z.detach().max()).exp()
        alpha = ez / torch.zeros(7, dtype=F64).index_add(0, g.row, ez)[g.row]
        return torch.zeros(7, 3, dtype=F64).index_add(0, g.row, alpha[:, None] * x_[g.col])

    def reference_spmm(w_, x_):
        return torch.zeros(7, 3, dtype=F64).index_add(0, g.row, w_[:, None] * x_[g.col])

    cases = [(lambda: _GATAggregate.apply(g, a_src, a_dst, x, 0.2), lambda: reference_aggregate(a_src, a_dst, x),
              a_src), (lambda: _EdgeSpMM.apply(g, w, x), lambda: reference_spmm(w, x), w)]
    leaves = (a_src, a_dst, x, w)
    for fn, ref_fn, first in cases:
        (gr,) = torch.autograd.grad((ref_fn() ** 2).sum(), first, create_graph=True)
        hr = torch.autograd.grad(gr.sum(), leaves, allow_unused=True)
        (gf,) = torch.autograd.grad((fn() ** 2).sum(), first, create_graph=True)
        torch.testing.assert_close(gf, gr)
        for t in leaves:
            t.grad = None
        try:
            gf.sum().backward()
        except RuntimeError as e:
            assert "once_differentiable" in str(e)
            continue  # refused: fine
        for t, h in zip(leaves, hr):
            torch.testing.assert_close(torch.zeros_like(t) if t.grad is None else t.grad,
                                       torch.zeros_like(t) if h is None else h)


def sym_pattern(n_users: int = 4, n_items: int = 5, seed: int = 0, isolated_user: bool = True):
    adj, _ = bipartite(n_users, n_items, seed, isolated_user)
    crow, col = adj.crow_indices(), adj.col_indices()
    n = adj.shape[0]
    row = torch.repeat_interleave(torch.arange(n), crow[1:] - crow[:-1])
    return adj, crow, col, row, torch.argsort(col * n + row)


def test_sym_sampled_dot_gradcheck_and_forward():
    _, crow, col, row, perm = sym_pattern()
    m = torch.randn(9, 3, dtype=F64, requires_grad=True)
    s = _SymSampledDot.apply(crow, col, perm, m)
    torch.testing.assert_close(s, (m[row] * m[col]).sum(1))
    torch.autograd.gradcheck(lambda m_: _SymSampledDot.apply(crow, col, perm, m_), (m,))


@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_weighted_sym_propagation_gradcheck_and_forward(n_layers):
    """Gradients w.r.t. the embeddings AND the edge weights (symmetric values, an isolated user's zero row)."""
    adj, crow, col, row, perm = sym_pattern()
    gen = torch.Generator().manual_seed(n_layers)
    w = torch.rand(len(col), generator=gen, dtype=F64)
    w = (w + w[perm]).requires_grad_(True)  # symmetric values: the Function's precondition
    x = torch.randn(9, 3, generator=gen, dtype=F64, requires_grad=True)
    dense = torch.zeros(9, 9, dtype=F64).index_put((row, col), w.detach())
    ref, h = x.detach(), x.detach()
    for _ in range(n_layers):
        h = dense @ h
        ref = ref + h
    torch.testing.assert_close(_WeightedSymPropagation.apply(crow, col, w, x, n_layers), ref / (n_layers + 1))
    torch.autograd.gradcheck(lambda w_, x_: _WeightedSymPropagation.apply(crow, col, w_, x_, n_layers), (w, x))


# ---------------------------------------------------------------------------------------------- rating-aware LightGCN
def dense_rating_lightgcn(adj: Tensor, n_users: int, ego: Tensor, bil: Tensor, beta: Tensor, rating: Tensor,
                          n_layers: int) -> Tensor:
    """``Ã_ui = Â_ui 2σ((e_u W)·e_i/√d + β r_ui)`` edge by edge (both directions), then LightGCN's layer mean."""
    crow, col, vals = adj.crow_indices(), adj.col_indices(), adj.values().to(ego.dtype)
    n, d = ego.shape
    entries = []
    for r in range(n):
        for p in range(int(crow[r]), int(crow[r + 1])):
            c = int(col[p])
            u, i = (r, c) if r < n_users else (c, r)
            s = (ego[u] @ bil) @ ego[i] / math.sqrt(d) + beta * rating[p]
            entries.append(vals[p] * 2 * torch.sigmoid(s))
    row = torch.repeat_interleave(torch.arange(n), crow[1:] - crow[:-1])
    dense = torch.zeros(n, n, dtype=ego.dtype).index_put((row, col), torch.stack(entries))
    out, h = ego, ego
    for _ in range(n_layers):
        h = dense @ h
        out = out + h
    return out / (n_layers + 1)


@pytest.mark.parametrize("n_users,n_items", [(4, 6), (6, 4)])  # W on the user side, and on the item side
def test_rating_aware_propagation_matches_dense_reference_and_gradcheck(n_users, n_items):
    adj, _ = bipartite(n_users, n_items, seed=3, isolated_user=True)
    gen = torch.Generator().manual_seed(4)
    rating = torch.randn(len(adj.values()), generator=gen)
    rating = rating + rating[sym_pattern(n_users, n_items, 3)[4]]  # symmetric, as edge_ratings gives
    mod = RatingAwareLightGCN(n_users, 3, n_layers=2, attention=True).double()
    mod.set_graph(adj, rating)
    ego = torch.randn(n_users + n_items, 3, generator=gen, dtype=F64, requires_grad=True)
    bil = torch.randn(3, 3, generator=gen, dtype=F64, requires_grad=True)
    beta = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def ours(e, b, bt):
        return functional_call(mod, {"bilinear": b, "rating_coef": bt}, (e,))

    ref = dense_rating_lightgcn(adj, n_users, ego, bil, beta, rating.double(), 2)
    out = ours(ego, bil, beta)
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(out)
    for a, b in zip(grads(out, w, [ego, bil, beta]), grads(ref, w, [ego, bil, beta])):
        torch.testing.assert_close(a, b)
    torch.autograd.gradcheck(ours, (ego, bil, beta))


@pytest.mark.parametrize("empty", [False, True])
def test_attention_off_and_attention_at_init_are_exactly_lightgcn(empty):
    """Off: LightGCN's propagation itself. On, at initialisation (W = 0, β = 0, factor 2σ(0) = 1): bitwise the
    same forward, and the same gradient w.r.t. the embeddings. Also on a graph with no edges (ego / (L+1))."""
    adj, r = bipartite(5, 7, seed=1)
    if empty:
        adj = to_torch_csr(sym_normalize(bipartite_adjacency(sp.csr_matrix(r.shape, dtype=np.float32))))
    ego = torch.randn(12, 4, requires_grad=True)
    ref = propagate(adj, ego, 3)
    w = torch.randn_like(ref)
    (g_ref,) = grads(ref, w, [ego])
    for attention in (False, True):
        mod = RatingAwareLightGCN(5, 4, n_layers=3, attention=attention)
        mod.set_graph(adj, torch.randn(len(adj.values())))
        out = mod(ego)
        assert torch.equal(out, ref)
        torch.testing.assert_close(grads(out, w, [ego])[0], g_ref, rtol=1e-6, atol=1e-7)
    if empty:
        torch.testing.assert_close(ref, ego / 4)


def test_rating_aware_propagation_in_float64():
    """Bug: with attention off, a float64 module crashed in the sparse product (the adjacency stays float32)."""
    adj, _ = bipartite(5, 7, seed=2)
    ego = torch.randn(12, 4, dtype=F64)
    for attention in (False, True):
        mod = RatingAwareLightGCN(5, 4, n_layers=2, attention=attention).double()
        mod.set_graph(adj, torch.zeros(len(adj.values())))
        out = mod(ego)
        assert out.dtype == F64
        zero = torch.zeros((), dtype=F64)
        torch.testing.assert_close(out, dense_rating_lightgcn(adj, 5, ego, torch.zeros(4, 4, dtype=F64), zero,
                                                              torch.zeros(len(adj.values()), dtype=F64), 2))


def test_lightgcn_propagation_in_float64_equals_the_dense_formula():
    """models.lightgcn.propagate multiplied the float32 Â with float64 embeddings: a dtype error."""
    import scipy.sparse as sp

    from recgoat.graphs.bipartite import normalized_bipartite
    from recgoat.models.lightgcn import propagate

    rng = np.random.default_rng(5)
    r = sp.csr_matrix((rng.random((5, 7)) < 0.4).astype(np.float32))
    adj = normalized_bipartite(r)
    ego = torch.tensor(rng.normal(size=(12, 3)), dtype=torch.float64)
    a = adj.to_dense().double()
    want = (ego + a @ ego + a @ a @ ego) / 3
    got = propagate(adj, ego, 2)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # Â's values were rounded to float32 once
