r"""The user-item graph as a symmetric-normalised sparse adjacency (CSR), built without dense blocks.

.. math::
    A = \begin{pmatrix} 0 & R \\ R^\top & 0 \end{pmatrix}, \qquad
    \hat A = D^{-1/2} A D^{-1/2}

over ``U + I`` nodes (users first). ``R`` may carry edge weights (e.g. ratings).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn


def bipartite_adjacency(train: sp.csr_matrix, weights: np.ndarray | None = None) -> sp.csr_matrix:
    """``(U+I) × (U+I)`` symmetric adjacency of a user × item matrix (users first).

    ``weights`` (e.g. ratings) are one per stored entry of ``train``, in its storage order (``train.data``'s);
    without them every stored entry is an edge of weight 1.
    """
    n_users, n_items = train.shape
    coo = train.tocoo()
    if weights is None:
        data = np.ones(coo.nnz, np.float32)
    else:
        # checked here: a wrong length was scipy's "index and data arrays" error, a list an AttributeError,
        # and a NaN weight silently made NaN every normalised entry of its user's and item's rows
        data = np.asarray(weights, dtype=np.float32)
        if data.shape != (coo.nnz,):
            raise ValueError(f"bipartite_adjacency: weights has shape {data.shape}, expected ({coo.nnz},) "
                             "(one per stored entry of train, in its storage order)")
        if not np.isfinite(data).all():
            raise ValueError(f"bipartite_adjacency: {int((~np.isfinite(data)).sum())} weights are NaN or infinite")
    rows = np.concatenate([coo.row, coo.col + n_users])
    cols = np.concatenate([coo.col + n_users, coo.row])
    n = n_users + n_items
    return sp.csr_matrix((np.concatenate([data, data]), (rows, cols)), shape=(n, n))


def sym_normalize(adj: sp.csr_matrix) -> sp.csr_matrix:
    """``D^{-1/2} A D^{-1/2}``; isolated nodes keep a zero row."""
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.zeros_like(deg, dtype=np.float64)
    nz = deg > 0
    inv[nz] = deg[nz] ** -0.5
    d = sp.diags(inv)
    return (d @ adj @ d).tocsr().astype(np.float32)


def csr_tensor(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A torch CSR tensor, without the "sparse CSR support is in beta" warning (it is what we want)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape)


def register_fixed(module: nn.Module, name: str, tensor: Tensor | None, like: Tensor | None = None) -> None:
    """Hold ``tensor`` — a fixed graph (CSR), index or feature matrix that training never updates — as the
    non-persistent buffer ``name`` of ``module``.

    As a buffer, ``module.double()`` / ``.half()`` / ``.to(device)`` cast and move it with the weights
    (``Module._apply`` maps every buffer, sparse CSR ones included: the values are cast, the int64 indices kept);
    non-persistent, it never enters ``state_dict``, so checkpoints hold the learnt weights only and ``prepare``
    rebuilds it from the data. ``tensor`` is put on ``like``'s device and, if floating, cast to its dtype (``like``:
    by default the module's first floating parameter; none, and ``tensor`` stays as it is), so one built after
    ``.double()`` or ``.to(device)`` — the ``prepare`` of a loaded model, FREEDOM's graph pruned each epoch —
    matches the weights: :func:`spmm` refuses mixed dtypes rather than cast per call. ``None`` registers an empty
    slot (the graph before ``prepare``).
    """
    if like is None:
        like = next((p for p in module.parameters() if p.is_floating_point()), None)
    if tensor is not None and like is not None:  # a no-op (the same tensor) when it already matches
        tensor = tensor.to(device=like.device, dtype=like.dtype if tensor.is_floating_point() else None)
    module.register_buffer(name, tensor, persistent=False)


def spmm(a: Tensor, x: Tensor, add: Tensor | None = None) -> Tensor:
    """``a @ x`` (plus ``add``, fused) for a sparse ``a`` and a dense ``x``, outside autograd.

    Every sparse product of a training step goes through here. On CPU, ``a @ x`` for a CSR ``a`` zero-fills
    an output, multiplies into a temporary and copies it over: on LightGCN's Baby-sized adjacency that
    overhead is 35–60 % of the product's time. ``addmm`` into a fresh tensor with β = 0 (which ignores the
    tensor's contents, NaN included) writes the product once; with ``add`` it is ``add + a @ x`` in one
    pass (``addmm(add, a, x)`` itself copies and zero-fills again). Results are bitwise those of ``a @ x``.
    Falls back to ``@`` where autograd must see the product or ``a`` is not CSR.

    ``a`` and ``x`` must have one dtype: no per-call cast (a model's graphs are buffers, :func:`register_fixed`,
    cast by ``.double()`` with its weights), and a clear error instead of torch's "expected scalar type".
    """
    if a.dtype != x.dtype:
        raise RuntimeError(f"spmm: sparse matrix of {a.dtype} times dense of {x.dtype}: a model's fixed graphs must "
                           f"be buffers (register_fixed) so .double() / .half() / .to() cast them with its weights")
    if a.layout != torch.sparse_csr or (torch.is_grad_enabled() and (x.requires_grad or a.requires_grad)):
        return a @ x if add is None else add + a @ x
    x = x.contiguous()
    out = x.new_empty(a.shape[0], x.shape[1])
    torch.addmm(out, a, x, beta=0.0, out=out)
    return out if add is None else out.add_(add)


def to_torch_csr(m: sp.csr_matrix) -> Tensor:
    m = m.tocsr()
    m.sort_indices()
    return csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
                      torch.from_numpy(m.data.astype(np.float32)), m.shape)


def normalized_bipartite(train: sp.csr_matrix) -> Tensor:
    """LightGCN's propagation matrix as a torch CSR tensor."""
    return to_torch_csr(sym_normalize(bipartite_adjacency(train)))


class _SymmetricSpMM(torch.autograd.Function):
    """``Â X`` for a *symmetric* sparse ``Â``, whose gradient is ``Â G``.

    PyTorch's generic sparse backward transposes the CSR matrix on every call, which made LightGCN's
    backward pass twice as slow as its forward on CPU; symmetry lets us reuse ``Â`` as is.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj = adj
        return spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return None, spmm(ctx.adj, grad)


def sym_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """Sparse-dense product with a symmetric sparse matrix (differentiable in ``x`` only)."""
    if x.requires_grad:
        return _SymmetricSpMM.apply(adj, x)
    return spmm(adj, x)
