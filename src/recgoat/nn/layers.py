r"""RecGOAT's graph and fusion layers (METHOD.md §3, §5; Li et al., arXiv 2602.00682, 2026).

- :class:`SparseGATConv` — graph attention with per-edge work limited to ``E × heads`` scalars (logits
  from per-node scalars, softmax over each destination's in-edges) and aggregation of all heads by one
  CSR × dense product over a block-diagonal head stack (:class:`_GATAggregate`, hand-written backward);
  numerically PyG's ``GATConv`` with the same settings. It can attend for a subset of destinations
  only (:func:`restrict_rows`), with the same outputs for those rows.
- :class:`ModalityGATBranch` — :math:`H = \mathrm{GAT}(X W, G)`: a linear projection of frozen
  large-model features to ``d``, then multi-head graph attention over a fixed kNN graph (item-item per
  modality, or user-user over profiles). Used for both the item modality branches and the user-profile
  branch.
- :class:`RatingAwareLightGCN` — LightGCN propagation whose normalised edge weights are modulated by an
  attention score from the two endpoint embeddings and the edge's rating:

  .. math::
      \tilde A_{ui} = \hat A_{ui}\cdot 2\sigma(s_{ui}), \quad
      s_{ui} = \frac{(e_u W)\cdot e_i}{\sqrt d} + \beta\,\tilde r_{ui}, \quad
      E^{(l+1)} = \tilde A E^{(l)}, \quad Z = \tfrac{1}{L+1}\textstyle\sum_l E^{(l)}

  with ``W`` and ``β`` initialised at zero, so the factor starts at exactly 1 (LightGCN) and the
  matrix stays symmetric (the same factor on ``(u,i)`` and ``(i,u)``). With attention off it *is*
  :func:`recgoat.models.lightgcn.propagate`.
- :class:`AdaptiveMap` — :math:`\hat z = z (I + \Delta)`, Δ a d×d matrix initialised at zero.
- Fusions: :class:`SimplexFusion` (softmax of learned logits, or fixed weights),
  :class:`ConcatFusion` (concatenation + linear), :class:`SumFusion` (plain sum).

Edge weights are a vector over the nnz of a sparse CSR matrix; :class:`_WeightedSymPropagation` (the
rating-aware layer mean over a symmetric pattern, one backward for all layers) and :class:`_EdgeSpMM`
(general, with a precomputed transpose) multiply by the weighted matrix and return
gradients for both the dense input and the edge values — the latter by a *sampled* dense × dense product
(``torch.sparse.sampled_addmm``), so neither a dense (U+I)² matrix nor an ``E × d`` per-edge tensor is
formed; :class:`_SymSampledDot` scores every edge of the rating attention the same way.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from recgoat.graphs.bipartite import csr_tensor, register_fixed, spmm


def csr_to_edge_index(graph: sp.csr_matrix) -> Tensor:
    """``[2, nnz]`` edge index (source, target) of a scipy CSR graph whose row ``i`` lists the nodes that
    ``i`` aggregates from (a kNN graph: ``i``'s neighbours send to ``i``)."""
    coo = graph.tocoo()
    return torch.from_numpy(np.vstack([coo.col, coo.row]).astype(np.int64))


# ---------------------------------------------------------------------------------------------- sparse GAT
def _sampled_dot(crow: Tensor, col: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a[row_e] · b[col_e]`` for every stored entry ``e`` of a CSR pattern, without an ``E × C`` tensor."""
    n, m = a.shape[0], b.shape[0]
    mask = csr_tensor(crow, col, torch.zeros(len(col), dtype=a.dtype, device=a.device), (n, m))
    return torch.sparse.sampled_addmm(mask, a, b.t(), beta=0.0).values()


class GATGraph(NamedTuple):
    """A fixed graph in CSR by destination (``crow``/``col`` = sources) plus its transpose, for
    :class:`_EdgeSpMM`: ``row`` is the destination of each edge, ``perm`` maps the transposed
    order to the edge order (``values[perm]`` are the transpose's values). ``n`` destinations and
    ``n_src`` sources (equal, except for a graph restricted to some destinations by :func:`restrict_rows`).
    A restricted graph, rebuilt every training step, carries no transpose (``crow_t`` etc. ``None``):
    its backward uses scipy's transposed product (:func:`_transposed_spmm`) and a scatter-add instead."""

    crow: Tensor
    col: Tensor
    row: Tensor
    crow_t: Tensor | None
    col_t: Tensor | None
    perm: Tensor | None
    n: int
    n_src: int = -1

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, (self.n if self.n_src < 0 else self.n_src)


def restrict_rows(g: GATGraph, rows: Tensor) -> GATGraph:
    """The in-edges of the destinations ``rows`` (sorted, unique) only, as a ``len(rows) × n`` graph whose
    ``row`` holds positions in ``rows``: each row's CSR segment gathered as a range (O(kept edges); edges keep
    their order), without a transpose (so a RecGOAT step attends only for the items its loss reads)."""
    n_src = g.shape[1]
    starts = g.crow.index_select(0, rows)
    counts = g.crow.index_select(0, rows + 1) - starts
    dev = rows.device
    crow = torch.zeros(len(rows) + 1, dtype=torch.long, device=dev)
    torch.cumsum(counts, 0, out=crow[1:])
    # edge e of local row r is at starts[r] + (e − crow[r]) in g
    edges = torch.arange(int(crow[-1]), device=dev) + torch.repeat_interleave(starts - crow[:-1], counts)
    row = torch.repeat_interleave(torch.arange(len(rows), device=dev), counts)
    return GATGraph(crow, g.col.index_select(0, edges), row, None, None, None, len(rows), n_src)


def _transposed_spmm(g: GATGraph, values: Tensor, x: Tensor) -> Tensor:
    """``A(values)ᵀ x``: by the stored transpose when the graph has one, else by scipy.

    scipy's ``csr.T @ dense`` runs the CSC kernel on the same three arrays, with no transposed copy; torch
    has no such kernel (``csr.t() @ x`` and ``x.t() @ csr`` convert the layout first: ~10× slower here), and
    building the transpose of a restricted graph every step costs more than the product itself.
    """
    if g.crow_t is not None:
        return spmm(csr_tensor(g.crow_t, g.col_t, values.detach().index_select(0, g.perm), g.shape[::-1]), x)
    if x.device.type != "cpu":  # no scipy there; sorting the edges by source is cheap on a GPU
        perm = torch.argsort(g.col * g.shape[0] + g.row)
        crow_t = _crow_of_sorted(g.col.index_select(0, perm), g.shape[1])
        return spmm(csr_tensor(crow_t, g.row.index_select(0, perm), values.detach().index_select(0, perm),
                               g.shape[::-1]), x)
    adj = sp.csr_matrix((values.detach().numpy(), g.col.numpy(), g.crow.numpy()), shape=g.shape)
    return torch.from_numpy(np.ascontiguousarray(adj.T @ x.detach().numpy()))


def gat_graph(edge_index: Tensor, num_nodes: int, add_self_loops: bool = True) -> GATGraph:
    """CSR form of ``edge_index`` (``[source; target]``) with self loops replaced by one per node
    (what PyG's GATConv does with ``add_self_loops=True``)."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    if add_self_loops:
        keep = src != dst
        loop = torch.arange(num_nodes, device=src.device)
        src, dst = torch.cat([src[keep], loop]), torch.cat([dst[keep], loop])
    order = torch.argsort(dst * num_nodes + src)
    row, col = dst[order], src[order]
    perm = torch.argsort(col * num_nodes + row)  # edges sorted by source: the transpose in CSR order
    return GATGraph(_crow_of_sorted(row, num_nodes), col, row, _crow_of_sorted(col[perm], num_nodes), row[perm], perm,
                    num_nodes)


def _crow_of_sorted(rows: Tensor, n: int) -> Tensor:
    """CSR row pointers of edges whose (sorted) rows are ``rows``: where each row's run starts. A search, not
    ``cumsum(bincount)``: CUDA's bincount has no deterministic kernel, and the trainer runs deterministic."""
    return torch.searchsorted(rows, torch.arange(n + 1, device=rows.device, dtype=rows.dtype))


class _EdgeSpMM(torch.autograd.Function):
    """``A(w) X`` for a fixed CSR pattern with per-edge values ``w`` (not symmetric).

    Backward: ``∂/∂X = A(w)ᵀ G`` (the precomputed transposed pattern) and ``∂/∂w_e = G[row_e]·X[col_e]``
    by a sampled dense×dense product — nothing of size ``E × C`` is formed.
    """

    @staticmethod
    def forward(ctx, g: GATGraph, values: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        adj = csr_tensor(g.crow, g.col, values.detach(), g.shape)
        ctx.g = g
        ctx.save_for_backward(values, x)
        return spmm(adj, x)

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a second derivative must raise
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        values, x = ctx.saved_tensors
        g: GATGraph = ctx.g
        grad = grad.contiguous()
        grad_w = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_w = _sampled_dot(g.crow, g.col, grad, x)
        if ctx.needs_input_grad[2]:
            grad_x = _transposed_spmm(g, values, grad)
        return None, grad_w, grad_x


class SparseGATConv(nn.Module):
    r"""Graph attention (Veličković et al., ICLR 2018) as edge scalars + sparse products.

    .. math::
        h = x W^\top,\quad e_{ij}^k = \mathrm{LeakyReLU}(a_{src}^k\cdot h_j^k + a_{dst}^k\cdot h_i^k),\quad
        \alpha_{ij}^k = \operatorname{softmax}_{j \in N(i)} e_{ij}^k,\quad
        o_i^k = \textstyle\sum_j \alpha_{ij}^k h_j^k

    then heads concatenated (or averaged) plus a bias. Same parameters (``lin``, ``att_src``,
    ``att_dst``, ``bias``) and output as PyG's ``GATConv`` with the same settings, but the only per-edge
    tensors are the ``E × heads`` logits/weights: aggregation is one CSR × dense product per head
    (PyG materialises ``E × heads × C`` messages). The CSR form of the (fixed) graph is built on the
    first call for a given ``edge_index`` and reused.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True):
        super().__init__()
        self.heads, self.out_dim, self.concat = heads, out_dim, concat
        self.negative_slope, self.dropout, self.add_self_loops = negative_slope, dropout, add_self_loops
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim if concat else out_dim))
        nn.init.xavier_uniform_(self.lin.weight)
        bound = math.sqrt(6.0 / (heads + out_dim))  # PyG's glorot on a (1, H, C) tensor
        nn.init.uniform_(self.att_src, -bound, bound)
        nn.init.uniform_(self.att_dst, -bound, bound)
        self._graph: GATGraph | None = None
        self._graph_key: tuple | None = None
        self._graph_edges: Tensor | None = None

    def graph(self, edge_index: Tensor, n: int) -> GATGraph:
        # the version counter catches in-place edits of the same tensor, and holding the tensor keeps its
        # memory from being freed and reused by a different edge_index of the same shape (same data_ptr)
        key = (edge_index.data_ptr(), tuple(edge_index.shape), edge_index.stride(), edge_index._version, n,
               self.add_self_loops)
        if self._graph_key != key or self._graph_edges is not edge_index:
            self._graph, self._graph_key = gat_graph(edge_index, n, self.add_self_loops), key
            self._graph_edges = edge_index
        return self._graph  # type: ignore[return-value]

    def attention_matrix(self) -> Tensor:
        """``(heads·C) × 2·heads`` matrix ``M`` with ``h M = [a_src | a_dst]``, the per-node attention scalars
        of every head: ``blockdiag(att_src)`` and ``blockdiag(att_dst)`` side by side."""
        return torch.cat([torch.block_diag(*self.att_src[0]), torch.block_diag(*self.att_dst[0])]).t()

    def forward(self, x: Tensor, edge_index: Tensor, rows: Tensor | None = None) -> Tensor:
        """Outputs of all nodes, or of the destinations ``rows`` only (sorted, unique): the same values,
        at the cost of their in-edges alone."""
        n, hds, c = x.shape[0], self.heads, self.out_dim
        h = self.lin(x)  # n × (heads·C)
        a = h @ self.attention_matrix()  # per-node attention scalars of every head in one product
        return self.attend(h.view(n, hds, c).transpose(0, 1).reshape(hds * n, c), a, edge_index, rows)

    def attend(self, xs: Tensor, a: Tensor, edge_index: Tensor, rows: Tensor | None = None) -> Tensor:
        """Attention and aggregation from the transformed features ``xs`` (head-major, ``heads·n × C``:
        head k's rows are k·n … (k+1)·n − 1) and the per-node scalars ``a = h M`` (``n × 2·heads``,
        :meth:`attention_matrix`): what :meth:`forward` computes after ``lin``, split out so that a caller
        that can produce ``xs`` and ``a`` more cheaply (:class:`ModalityGATBranch`) skips ``lin``."""
        hds, c = self.heads, self.out_dim
        n = a.shape[0]
        g = self.graph(edge_index, n)
        if rows is not None:
            g = restrict_rows(g, rows)
            a_dst = a[rows, hds:]
        else:
            a_dst = a[:, hds:]
        m = g.n
        # all heads at once: head k's nodes are rows k·n … (k+1)·n − 1 of a block-diagonal graph
        stacked = self.stacked_graph(g, hds) if rows is None else stack_graph(g, hds)
        a_src, a_dst = a[:, :hds].t().reshape(-1), a_dst.t().reshape(-1)
        if self.dropout > 0 and self.training:  # attention dropout: the generic autograd path
            logits = F.leaky_relu(a_src.index_select(0, stacked.col) + a_dst.index_select(0, stacked.row),
                                  self.negative_slope)
            alpha = F.dropout(segment_softmax(logits, stacked.crow, stacked.row), p=self.dropout, training=True)
            out = _EdgeSpMM.apply(stacked, alpha, xs)
        else:
            out = _GATAggregate.apply(stacked, a_src, a_dst, xs, self.negative_slope)
        out = out.view(hds, m, c)
        out = out.transpose(0, 1).reshape(m, hds * c) if self.concat else out.mean(0)
        return out + self.bias

    def stacked_graph(self, g: GATGraph, heads: int) -> GATGraph:
        if heads == 1:
            return g
        if getattr(self, "_stacked_for", None) is not g:
            self._stacked, self._stacked_for = stack_graph(g, heads), g
        return self._stacked


class _GATAggregate(torch.autograd.Function):
    r"""One GAT attention + aggregation, ``o_i = \sum_{e: i} \alpha_e x_{src_e}`` with
    ``\alpha = \operatorname{softmax}_{in-edges}(\mathrm{LeakyReLU}(a^{src}_{src_e} + a^{dst}_{dst_e}))``,
    with a hand-written backward.

    Autograd through the same steps keeps ~15 edge-sized intermediates and runs scatter-adds for the
    index gathers; here the backward is one sampled product, one transposed sparse product and a few
    segment sums over edge scalars (all in CSR order), about half the time of the generic path. On a
    restricted graph (no stored transpose) the sums by source are a scatter-add and ``Aᵀ G`` goes through
    scipy (:func:`_transposed_spmm`):

    .. math::
        \dot\alpha_e = G_{dst_e}\cdot x_{src_e},\quad
        \dot\ell_e = \alpha_e\big(\dot\alpha_e - \textstyle\sum_{e'\to dst_e}\alpha_{e'}\dot\alpha_{e'}\big),\quad
        \dot a^{dst}_i = \textstyle\sum_{e\to i}\dot z_e,\quad \dot a^{src}_j = \textstyle\sum_{e\leftarrow j}\dot z_e,\quad
        \dot x = A(\alpha)^\top G
    """

    @staticmethod
    def forward(ctx, g: GATGraph, a_src: Tensor, a_dst: Tensor, x: Tensor, slope: float) -> Tensor:  # type: ignore[override]
        z = a_src.index_select(0, g.col) + a_dst.index_select(0, g.row)
        positive = z > 0
        alpha = segment_softmax(torch.where(positive, z, z * slope), g.crow, g.row)
        out = spmm(csr_tensor(g.crow, g.col, alpha, g.shape), x)
        ctx.g, ctx.slope = g, slope
        ctx.save_for_backward(alpha, positive, x)
        return out

    @staticmethod
    @once_differentiable  # saved alpha carries no graph: create_graph=True would give wrong 2nd derivatives
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        alpha, positive, x = ctx.saved_tensors
        g: GATGraph = ctx.g
        grad = grad.contiguous()
        d_alpha = _sampled_dot(g.crow, g.col, grad, x)
        t = alpha * d_alpha
        d_logit = t - alpha * torch.segment_reduce(t, "sum", offsets=g.crow).index_select(0, g.row)
        d_z = torch.where(positive, d_logit, d_logit * ctx.slope)
        d_dst = torch.segment_reduce(d_z, "sum", offsets=g.crow)
        if g.crow_t is None:  # restricted graph: scatter-add by source, and scipy's transposed product
            d_src = d_z.new_zeros(g.shape[1]).index_add_(0, g.col, d_z)
        else:
            d_src = torch.segment_reduce(d_z.index_select(0, g.perm), "sum", offsets=g.crow_t)
        d_x = None
        if ctx.needs_input_grad[3]:
            d_x = _transposed_spmm(g, alpha, grad)
        return None, d_src, d_dst, d_x, None


def segment_softmax(logits: Tensor, crow: Tensor, row: Tensor) -> Tensor:
    """Softmax of ``E × H`` edge logits over each destination's in-edges (edges sorted by destination,
    ``crow`` their CSR offsets, ``row`` the destination of each edge)."""
    mx = torch.segment_reduce(logits.detach(), "max", offsets=crow, axis=0)
    # an all -inf segment (every in-edge masked) has max -inf, and -inf - -inf = NaN: clamped, its weights
    # are exp(-inf) = 0 (it receives nothing, like a node without in-edges); finite maxima are unchanged
    mx.clamp_(min=torch.finfo(mx.dtype).min)
    e = (logits - mx.index_select(0, row)).exp()
    total = torch.segment_reduce(e, "sum", offsets=crow, axis=0)
    return e / (total.index_select(0, row) + 1e-16)


def stack_graph(g: GATGraph, copies: int) -> GATGraph:
    """``copies`` disjoint copies of ``g`` as one block-diagonal graph (copy k's destinations and sources
    are offset by k·n and k·n_src); edge values are ordered copy by copy (copy k's edges at k·E …)."""
    e = len(g.col)
    n_dst, n_src = g.shape
    k = torch.arange(copies, device=g.col.device)

    def offsets(crow: Tensor) -> Tensor:
        return torch.cat([crow[:1], (crow[1:][None, :] + (k * e)[:, None]).reshape(-1)])

    def shift(idx: Tensor, by: int) -> Tensor:
        return (idx[None, :] + (k * by)[:, None]).reshape(-1)

    if g.crow_t is None:
        transposed = (None, None, None)
    else:
        transposed = (offsets(g.crow_t), shift(g.col_t, n_dst), shift(g.perm, e))
    return GATGraph(offsets(g.crow), shift(g.col, n_src), shift(g.row, n_dst), *transposed, copies * n_dst,
                    copies * n_src)


# ---------------------------------------------------------------------------------------------- branches
class ModalityGATBranch(nn.Module):
    """Projection ``in_dim → d`` then ``n_layers`` GAT layers over a fixed graph.

    Args:
        in_dim: feature size of the frozen input matrix.
        dim: output size ``d``.
        heads: attention heads per layer.
        n_layers: GAT layers; 0 gives the projection alone (the "without graph" ablation).
        v2: use PyG's GATv2Conv (dynamic attention) instead of GATConv (always the PyG implementation).
        dropout: attention dropout (off in eval mode).
        impl: ``"sparse"`` (:class:`SparseGATConv`, E × heads scalars per edge) or ``"pyg"`` (GATConv).
        concat: heads of ``d / heads`` channels concatenated (cheap) or heads of ``d`` averaged.
        activation: ``"elu"`` applies ELU between stacked layers (as the GAT paper and PyG's ``GAT`` model do;
            without it two layers collapse into one linear two-hop aggregation); ``"none"`` stacks them bare.
            Never after the last layer, so one layer is the same either way.
        proj_dtype: ``torch.bfloat16`` runs the projection of the frozen features in bfloat16 (fp32 master
            weights, fp32 output): the ``N × in_dim`` products are the largest dense work of a RecGOAT step
            (1280-d image, 384-d text and profile features), and on CPUs with AVX512-BF16 they are 3–4×
            faster with a relative error of ~3e-3. The caller passes the features already in that dtype.
    """

    def __init__(self, in_dim: int, dim: int, heads: int = 2, n_layers: int = 1, v2: bool = False,
                 dropout: float = 0.0, impl: str = "sparse", concat: bool = True,
                 proj_dtype: torch.dtype = torch.float32, activation: str = "elu"):
        super().__init__()
        self.proj_dtype = proj_dtype
        if activation not in ("elu", "none"):
            raise ValueError(f"unknown activation between GAT layers {activation!r} (elu, none)")
        self.activation = activation
        from torch_geometric.nn import GATConv, GATv2Conv

        if concat and dim % heads:
            raise ValueError(f"concatenated heads need d divisible by heads (d={dim}, heads={heads})")
        self.proj = nn.Linear(in_dim, dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        out = dim // heads if concat else dim
        kw = dict(heads=heads, concat=concat, dropout=dropout, add_self_loops=True)
        if v2:
            convs = [GATv2Conv(dim, out, **kw) for _ in range(n_layers)]
        elif impl == "pyg":
            convs = [GATConv(dim, out, **kw) for _ in range(n_layers)]
        elif impl == "sparse":
            convs = [SparseGATConv(dim, out, **kw) for _ in range(n_layers)]
        else:
            raise ValueError(f"unknown GAT implementation {impl!r} (pyg, sparse)")
        self.convs = nn.ModuleList(convs)

    #: compute the first SparseGATConv's inputs by :meth:`fused_first_layer_input` (False: projection, then
    #: the layer's own ``lin``; kept for ``benchmarks/recgoat_step_breakdown.py`` and the equality test)
    fuse_first_layer: bool = True

    def project(self, x: Tensor) -> Tensor:
        """``X W_pᵀ + b_p`` (in ``proj_dtype``, fp32 output)."""
        if self.proj_dtype == torch.float32:
            return self.proj(x)
        dt = self.proj_dtype
        return F.linear(x.to(dt), self.proj.weight.to(dt), self.proj.bias.to(dt)).to(self.proj.weight.dtype)

    def fused_first_layer_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The first GAT layer's inputs straight from the frozen features: head-major ``xs`` and the
        attention scalars ``a`` (see :meth:`SparseGATConv.attend`).

        The projection and the layer's ``lin`` are both linear, and so is the attention product ``M``:

        .. math::
            h = (X W_p^\top + b_p) W_l^\top = X (W_l W_p)^\top + W_l b_p, \qquad
            a = h M = X (M^\top W_l W_p)^\top + M^\top W_l b_p

        so one product of ``X`` with the composed ``(heads·C + 2·heads) × in_dim`` matrix gives both, and
        the ``n × d × d`` product ``lin``, the ``n × d × 2·heads`` product ``a = h M`` and their backward
        passes disappear. Same parameters and the same function (equal up to rounding in float32; the
        composed weights are rounded once to ``proj_dtype`` instead of the projection's weights);
        gradients reach ``W_p``, ``b_p``, ``W_l`` and the attention vectors through the composition.
        """
        conv = self.convs[0]
        hds, c = conv.heads, conv.out_dim
        n = x.shape[0]
        w = conv.lin.weight @ self.proj.weight  # (heads·C) × in_dim
        b = conv.lin.weight @ self.proj.bias
        m_t = conv.attention_matrix().t()
        weight, bias = torch.cat([w, m_t @ w]), torch.cat([b, m_t @ b])
        # proj_dtype float32 means "no reduced precision": a float64 module computes (and returns) float64
        param_dt = weight.dtype
        dt = param_dt if self.proj_dtype == torch.float32 else self.proj_dtype
        out = F.linear(x.to(dt), weight.to(dt), bias.to(dt))  # n × (heads·C + 2·heads)
        # head-major copy in the parameters' dtype in one pass (the transpose and the cast together)
        xs = torch.empty(hds, n, c, dtype=param_dt, device=x.device)
        xs = xs.copy_(out[:, : hds * c].view(n, hds, c).transpose(0, 1))
        return xs.view(hds * n, c), out[:, hds * c:].to(param_dt)

    def forward(self, x: Tensor, edge_index: Tensor | None, rows: Tensor | None = None) -> Tensor:
        """``H`` for every node, or for the nodes ``rows`` only (the last GAT layer attends for those alone;
        earlier layers, which feed their neighbours, run in full)."""
        if edge_index is None or not len(self.convs):
            h = self.project(x)
            return h if rows is None else h[rows]
        first = self.convs[0]
        if self.fuse_first_layer and isinstance(first, SparseGATConv):  # projection, lin, attention: one product
            only = len(self.convs) == 1
            h = first.attend(*self.fused_first_layer_input(x), edge_index, rows if only else None)
            if only:
                return h
        else:
            h = first(self.project(x), edge_index)
        for i, conv in enumerate(self.convs[1:], start=1):
            if self.activation == "elu":
                h = F.elu(h)
            last = i == len(self.convs) - 1
            if last and rows is not None and isinstance(conv, SparseGATConv):
                return conv(h, edge_index, rows)
            h = conv(h, edge_index)
        return h if rows is None else h[rows]


class _WeightedSymPropagation(torch.autograd.Function):
    r"""LightGCN's layer mean ``(1/(L+1)) \sum_{l=0}^{L} A(w)^l X`` for a symmetric CSR pattern with edge
    values ``w``, with one backward for all layers.

    Backward, with ``c = 1/(L+1)`` and ``g_L = c\bar G``, ``g_{l-1} = c\bar G + A g_l`` (symmetry):
    ``∂/∂X = g_0`` and ``∂/∂w_e = \sum_{l=1}^{L} g_l[row_e] · h_{l-1}[col_e]``, a sampled product per layer.
    """

    @staticmethod
    def forward(ctx, crow: Tensor, col: Tensor, values: Tensor, x: Tensor, n_layers: int) -> Tensor:  # type: ignore[override]
        n = x.shape[0]
        adj = csr_tensor(crow, col, values.detach(), (n, n))
        hs = [x]
        out = x.clone()
        for _ in range(n_layers):
            hs.append(spmm(adj, hs[-1]))
            out.add_(hs[-1])
        ctx.adj, ctx.n_layers = adj, n_layers
        ctx.save_for_backward(crow, col, *hs[:-1])
        return out.div_(n_layers + 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        crow, col, *hs = ctx.saved_tensors
        n_layers = ctx.n_layers
        direct = grad.contiguous() / (n_layers + 1)
        g = direct
        gs = []
        for _ in range(n_layers):
            gs.append(g)
            g = spmm(ctx.adj, g, add=direct)
        grad_w = None
        if ctx.needs_input_grad[2] and n_layers:
            # g_l pairs with h_{l-1}: gs[0] = g_L ↔ hs[L-1], …, gs[L-1] = g_1 ↔ hs[0]; one sampled product
            # per layer, accumulated (concatenating the layers' features first costs two (U+I) × Ld copies)
            grad_w = _sampled_dot(crow, col, gs[0], hs[-1])
            for g_l, h_l in zip(gs[1:], hs[-2::-1]):
                grad_w += _sampled_dot(crow, col, g_l, h_l)
        return None, None, grad_w, g, None


class _SymSampledDot(torch.autograd.Function):
    """``s_e = M[row_e] · M[col_e]`` on a symmetric CSR pattern.

    Backward: ``∂/∂M = (G + Gᵀ) M`` with ``G`` the CSR matrix of the incoming edge gradients (``Gᵀ``'s
    values are ``g[perm_t]``): one sparse × dense product, no ``E × d`` tensor.
    """

    @staticmethod
    def forward(ctx, crow: Tensor, col: Tensor, perm_t: Tensor, m: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(crow, col, perm_t, m)
        return _sampled_dot(crow, col, m, m)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        crow, col, perm_t, m = ctx.saved_tensors
        g = csr_tensor(crow, col, grad + grad.index_select(0, perm_t), (m.shape[0], m.shape[0]))
        return None, None, None, spmm(g, m)


class RatingAwareLightGCN(nn.Module):
    """LightGCN over the user-item graph with rating-aware edge attention (or plain LightGCN).

    ``set_graph`` takes the symmetric-normalised adjacency (torch CSR, users first) and the
    standardised rating of each stored entry (aligned with its ``values``). Both, and the index tensors
    derived from them, are non-persistent buffers: ``.double()`` / ``.to(device)`` cast and move them with the
    weights, and a ``state_dict`` holds none of them.
    """

    def __init__(self, n_users: int, dim: int, n_layers: int = 3, attention: bool = True):
        super().__init__()
        self.n_users = n_users
        self.n_layers = n_layers
        self.attention = attention
        self.dim = dim
        if attention:
            self.bilinear = nn.Parameter(torch.zeros(dim, dim))  # zero: the factor starts at 1
            self.rating_coef = nn.Parameter(torch.zeros(()))
        register_fixed(self, "adj", None)

    def set_graph(self, adj: Tensor, ratings: Tensor, like: Tensor | None = None) -> None:
        """``like``: the tensor whose dtype and device the graph takes (by default this module's weights; a
        module without attention has none, so its model passes its own)."""
        crow, col = adj.crow_indices(), adj.col_indices()
        row = torch.repeat_interleave(torch.arange(adj.shape[0], device=crow.device), crow[1:] - crow[:-1])
        register_fixed(self, "adj", adj, like)
        register_fixed(self, "_row", row, like)  # each stored entry's row
        register_fixed(self, "_perm_t", torch.argsort(col * adj.shape[0] + row), like)  # (r, c) -> (c, r)'s entry
        # each entry as (user, item) whichever direction it is stored in
        is_user_row = row < self.n_users
        register_fixed(self, "_u", torch.where(is_user_row, row, col), like)
        register_fixed(self, "_i", torch.where(is_user_row, col, row), like)
        register_fixed(self, "_rating", ratings.to(adj.dtype), like)

    # views of the adjacency's own arrays (no copies that .to(device) would move twice)
    @property
    def _crow(self) -> Tensor:
        return self.adj.crow_indices()

    @property
    def _col(self) -> Tensor:
        return self.adj.col_indices()

    @property
    def _base(self) -> Tensor:
        return self.adj.values()

    def edge_factor(self, ego: Tensor) -> Tensor:
        """``2σ(s_e)`` per stored entry; equal on ``(u,i)`` and ``(i,u)`` by construction.

        With ``M = [E_U W; E_I]``, ``M_a · M_b`` is ``(e_u W)·e_i`` whichever of ``(u,i)``/``(i,u)``
        the entry is, so one sampled product gives every score (no ``E × d`` gather). ``W`` goes on the
        smaller side: ``(e_u W)·e_i = e_u·(e_i Wᵀ)``, so ``M = [E_U; E_I Wᵀ]`` when there are fewer items
        (Amazon Baby: 7,050 items against 19,445 users, the ``n × d × d`` product and its backward ~2.8×
        cheaper)."""
        # split, not two slices: each slice's backward writes a zero-filled (U + I) × d gradient
        users, items = torch.split(ego, [self.n_users, ego.shape[0] - self.n_users])
        if len(users) <= len(items):
            m = torch.cat([users @ self.bilinear, items])
        else:
            m = torch.cat([users, items @ self.bilinear.t()])
        s = _SymSampledDot.apply(self._crow, self._col, self._perm_t, m) / math.sqrt(self.dim)
        return 2.0 * torch.sigmoid(s + self.rating_coef * self._rating)

    def forward(self, ego: Tensor) -> Tensor:
        """Mean over layers of the propagated ``(U + I) × d`` embeddings."""
        if self.adj is None:
            raise RuntimeError("RatingAwareLightGCN: call set_graph first (model.prepare)")
        if not self.attention:
            from recgoat.models.lightgcn import propagate

            return propagate(self.adj, ego, self.n_layers)
        values = self._base * self.edge_factor(ego)
        return _WeightedSymPropagation.apply(self._crow, self._col, values, ego, self.n_layers)


# ---------------------------------------------------------------------------------------------- alignment map
class AdaptiveMap(nn.Module):
    """``ẑ = z (I + Δ)`` with Δ ∈ R^{d×d} initialised at zero (identity map at start)."""

    def __init__(self, dim: int):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(dim, dim))

    def forward(self, z: Tensor) -> Tensor:
        return z + z @ self.delta


# ---------------------------------------------------------------------------------------------- fusions
class SimplexFusion(nn.Module):
    """``Σ_k γ_k z_k`` with γ on the simplex: softmax of learned logits, or fixed weights."""

    def __init__(self, n_views: int, fixed: list[float] | None = None):
        super().__init__()
        if fixed is not None:
            w = torch.tensor(fixed, dtype=torch.float32)
            if len(w) != n_views or (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
                raise ValueError(f"fixed fusion weights {fixed} must be {n_views} non-negatives summing to 1")
            self.register_buffer("fixed", w)
            self.logits = None
        else:
            self.fixed = None
            self.logits = nn.Parameter(torch.zeros(n_views))

    def weights(self) -> Tensor:
        return self.fixed if self.logits is None else torch.softmax(self.logits, 0)

    def forward(self, views: list[Tensor]) -> Tensor:
        w = self.weights()
        return sum(w[k] * v for k, v in enumerate(views))


class ConcatFusion(nn.Module):
    """``[z_1 ‖ … ‖ z_k] W`` (naive fusion for ablation)."""

    def __init__(self, n_views: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(n_views * dim, dim, bias=False)

    def forward(self, views: list[Tensor]) -> Tensor:
        return self.linear(torch.cat(views, dim=-1))


class SumFusion(nn.Module):
    """``Σ_k z_k`` (naive fusion for ablation)."""

    def forward(self, views: list[Tensor]) -> Tensor:
        return sum(views)
