r"""Loss functions shared by the models."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr_loss(u: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    r"""Bayesian personalised ranking: :math:`-\operatorname{mean} \log \sigma(u\cdot p - u\cdot n)`."""
    return -F.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()


def candidate_info_nce(anchors: Tensor, candidates: Tensor, positive: Tensor, tau: float,
                       reduction: str = "mean") -> Tensor:
    r"""InfoNCE of each anchor against every candidate, cosine similarity at temperature ``tau``:
    :math:`-\log \frac{\exp(s(a_r, b_{p_r})/\tau)}{\sum_c \exp(s(a_r, b_c)/\tau)}` per anchor, averaged
    (``reduction="mean"``) or summed (``"sum"``, LGMRec's paper).

    ``anchors`` (B × d), ``candidates`` (N × d, e.g. every user or item), ``positive`` (B,) the index of each
    anchor's own row among the candidates. The logits are B × N, never N × N.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    a, b = F.normalize(anchors, dim=-1), F.normalize(candidates, dim=-1)
    if a.shape[0] * b.shape[0] > CHUNKED_LOGITS:
        return _ChunkedInfoNCE.apply(a, b, positive, tau, reduction == "sum")
    return F.cross_entropy(a @ b.t() / tau, positive, reduction=reduction)


# Above this many logits (128 MiB in float32) candidate_info_nce never makes the B × N matrix: on Amazon Baby's
# 19,445 users, LGMRec's 1,950 × 19,445 logits and their gradient were fresh 150 MB tensors several times a step,
# and filling their pages cost more than the products (1.35 s of a step, ≈ 75 % in those tensors). Below it, the
# plain form keeps every figure made with it (ml100k-mm's and ml-latest-small's stay under) to the last digit.
CHUNKED_LOGITS = 2**25
_CHUNK_LOGITS = 2**21  # logits per block (8 MiB in float32): a block's buffers are reused, not paged in afresh


class _ChunkedInfoNCE(torch.autograd.Function):
    r"""``candidate_info_nce`` of normalised ``a`` (B × d) and ``b`` (N × d) in row blocks of the logits, each made
    twice (forward: its rows' log-sum-exp; backward: the softmax from it) and let go, so memory is one block, not
    B × N. The same function (up to rounding):

    .. math::
        \ell = \sum_r \big(\operatorname{lse}_c(a_r \cdot b_c / \tau) - a_r \cdot b_{p_r} / \tau\big), \qquad
        \frac{\partial \ell}{\partial a_r} = \frac{1}{\tau}\Big(\sum_c \pi_{rc} b_c - b_{p_r}\Big), \qquad
        \frac{\partial \ell}{\partial b_c} = \frac{1}{\tau}\Big(\sum_r \pi_{rc} a_r
            - \sum_{r: p_r = c} a_r\Big),

    with :math:`\pi_{rc}` the softmax of row :math:`r`; divided by B for the mean.

    Why by hand: autograd of ``cross_entropy(a @ b.T / tau)`` keeps the B × N logits and makes three more of that
    size in the backward pass; no library fuses this loss on CPU.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, positive: Tensor, tau: float, summed: bool) -> Tensor:  # type: ignore[override]
        rows = max(1, _CHUNK_LOGITS // max(b.shape[0], 1))
        scaled = a / tau  # B × d: dividing it, not every block of logits
        lse = torch.cat([torch.logsumexp(scaled[s:s + rows] @ b.t(), dim=1) for s in range(0, a.shape[0], rows)])
        per_row = lse - (scaled * b.index_select(0, positive)).sum(-1)
        ctx.save_for_backward(a, b, positive, lse, scaled)
        ctx.tau, ctx.rows, ctx.summed = tau, rows, summed
        return per_row.sum() if summed else per_row.mean()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a, b, positive, lse, scaled = ctx.saved_tensors
        scale = (grad if ctx.summed else grad / a.shape[0]) / ctx.tau
        grad_a, grad_b = torch.empty_like(a), torch.zeros_like(b)
        for s in range(0, a.shape[0], ctx.rows):
            block = a[s:s + ctx.rows]
            pi = (scaled[s:s + ctx.rows] @ b.t()).sub_(lse[s:s + ctx.rows, None]).exp_().mul_(scale)  # in place
            torch.mm(pi, b, out=grad_a[s:s + ctx.rows])
            grad_b.addmm_(pi.t(), block)
        grad_a.sub_(b.index_select(0, positive) * scale)
        grad_b.index_add_(0, positive, a * -scale)
        return grad_a, grad_b, None, None, None


def in_batch_info_nce(anchors: Tensor, candidates: Tensor, index: Tensor, tau: float) -> Tensor:
    r"""InfoNCE over a batch's rows, the batch's own rows as the candidates (MGCN's authors' ``InfoNCE``): for the
    batch's nodes :math:`x_1 … x_B` (``index``, duplicates kept as drawn), with cosine similarity :math:`s`,

    .. math::
        \frac{1}{B}\sum_{r=1}^{B} -\log
        \frac{\exp(s(a_{x_r}, b_{x_r})/\tau)}{\sum_{c=1}^{B} \exp(s(a_{x_r}, b_{x_c})/\tau)}

    where ``anchors`` (:math:`a`) and ``candidates`` (:math:`b`) are tables over every node (N × d). A node drawn
    twice is its own candidate twice. Computed over the batch's *distinct* nodes :math:`v`, drawn :math:`n_v`
    times: :math:`\frac{1}{B}\sum_v n_v \big(\log\sum_w n_w \exp(s(a_v, b_w)/\tau) - s(a_v, b_v)/\tau\big)`,
    the same value (up to rounding) from a V × V matrix of logits instead of B × B (on ml100k-mm a batch of 2048
    holds about 680 distinct users: 9× fewer logits).
    """
    nodes, counts = torch.unique(index, return_counts=True)
    a, b = F.normalize(anchors[nodes], dim=-1), F.normalize(candidates[nodes], dim=-1)
    logits = a @ b.t() / tau
    n = counts.to(logits.dtype)
    per_node = torch.logsumexp(logits + n.log(), dim=1) - logits.diagonal()
    return (n * per_node).sum() / index.numel()


def l2_reg(*tensors: Tensor) -> Tensor:
    r""":math:`\frac{1}{2|B|} \sum \lVert x \rVert^2` over the batch's embeddings (LightGCN's convention)."""
    batch = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)
