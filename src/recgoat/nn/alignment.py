r"""Dual semantic alignment losses of RecGOAT (METHOD.md §4; Li et al., arXiv 2602.00682, 2026).

**Instance level — CMCL.** For L2-normalised views :math:`q_i, k_i` of the same entity,

.. math::
    \mathrm{InfoNCE}(q, k) = -\frac{1}{|B|}\sum_i \log
        \frac{\exp(q_i\cdot k_i/\tau)}{\sum_j \exp(q_i\cdot k_j/\tau)}, \qquad
    \mathcal L_{cmcl} = \sum_m \tfrac12\big[\mathrm{InfoNCE}(z^m, z) + \mathrm{InfoNCE}(z, z^m)\big]

which is *minimised* (the authors' code maximises part of it by a sign slip).

**Distribution level — OAT.** Uniform weights :math:`a, b` on two point clouds, cost
:math:`C_{ij} = \lVert x_i - y_j\rVert` (1-Wasserstein), entropic transport

.. math::
    \mathrm{OT}_\varepsilon(x, y) = \min_{T\in\Pi(a,b)} \langle T, C\rangle + \varepsilon\,\mathrm{KL}(T\,\|\,a\otimes b)

solved by Sinkhorn iterations on the dual potentials in the log domain (stable for small ε):
:math:`f \leftarrow -\varepsilon\,\mathrm{LSE}_j(\log b_j + (g_j - C_{ij})/\varepsilon)`, and
symmetrically for :math:`g`; :math:`T_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`.

The entropic value is never zero for identical clouds (the entropic "blur" floor), so the default
OAT loss is the **Sinkhorn divergence** (Feydy et al., AISTATS 2019)

.. math::
    S_\varepsilon(x, y) = \mathrm{OT}_\varepsilon(x, y) - \tfrac12 \mathrm{OT}_\varepsilon(x, x)
        - \tfrac12 \mathrm{OT}_\varepsilon(y, y),

which is exactly 0 for identical clouds, positive otherwise, and grows with a shift (the Laplacian
kernel :math:`e^{-\lVert x-y\rVert/\varepsilon}` is positive definite). ``debias=False`` gives the
paper's plain :math:`\langle T, C\rangle`. Gradients: by the envelope theorem the derivative of
:math:`\mathrm{OT}_\varepsilon` in the cost is the optimal plan, so the plan is computed without
autograd and the loss is :math:`\langle T^\star, C(x, y)\rangle` (plus a constant that restores the
value), with gradients reaching both point clouds — hence the encoders and the adaptive map Δ_m.
Memory is O(n·m) for clouds of n and m points: callers pass mini-batch clouds, never all items.

**Why our own Sinkhorn and not POT's** (the issue allows either; the rule is to justify it): POT's batched
solver (``ot.batch.solve_batch(..., method="log_sinkhorn")``) gives the same plans as :func:`_sinkhorn_batched`
(2.5e-8 apart on a training step's problems; ``tests/test_alignment_reference.py`` checks both batched solvers
against it to 1e-10 on padded problems), but it has no symmetric solver: the debiasing terms' averaged update
(Feydy et al.) converges in a few iterations where full alternating Sinkhorn takes its usual count.
``python benchmarks/sinkhorn_vs_pot.py`` (a step's problems, one thread): view–target 1.21 ms against POT's
1.35 ms, symmetric 0.32 ms against 0.51 ms. The gain is small; the deciding reason is that every RecGOAT figure in
``docs/benchmarks.md`` was trained with this solver, and plans differing in the eighth digit give other trained
models. POT stays the reference the tests check against (``ot.sinkhorn``, ``ot.sinkhorn2``, ``ot.emd2``,
``ot.batch.solve_batch``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


# ---------------------------------------------------------------------------------------------- CMCL
def info_nce(query: Tensor, key: Tensor, tau: float = 0.2, normalize: bool = True) -> Tensor:
    """Mean InfoNCE of ``query[i]`` against its positive ``key[i]`` with in-batch negatives ``key[j]``."""
    if query.shape != key.shape:
        raise ValueError(f"info_nce: query {tuple(query.shape)} and key {tuple(key.shape)} differ")
    if normalize:
        query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
    logits = query @ key.t() / tau
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


class _SymmetricInfoNCE(torch.autograd.Function):
    r"""``½[InfoNCE(a, b) + InfoNCE(b, a)]`` for unit-norm rows, with one ``exp`` of the logit matrix.

    The row and the column log-sum-exps share ``E = exp(L − max L)``, and the backward is
    ``∂L = ½n⁻¹ (E / r + E / k) − n⁻¹ I`` (``r``, ``k`` the row and column sums of ``E``), then two
    matrix products: ~1.7× faster than autograd through two ``cross_entropy`` calls, same values.
    Safe because cosine logits lie in ``[−1/τ, 1/τ]``: no ``E`` entry underflows while ``2/τ < 80``.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, tau: float) -> Tensor:  # type: ignore[override]
        inv = 1.0 / tau
        logits = torch.mm(a, b.t()).mul_(inv)
        shift = logits.max()
        pos = (a * b).sum(1) * inv
        e = logits.sub_(shift).exp_()
        r, k = e.sum(1), e.sum(0)
        loss = 0.5 * ((r.log() + shift - pos).mean() + (k.log() + shift - pos).mean())
        ctx.save_for_backward(a, b, e, r, k)
        ctx.inv = inv
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        a, b, e, r, k = ctx.saved_tensors
        n = a.shape[0]
        half = grad * 0.5 / n
        d = torch.addcmul(e * (half / r)[:, None], e, (half / k)[None, :])  # e itself stays intact
        d.diagonal().sub_(grad / n)
        d.mul_(ctx.inv)
        return d @ b, d.t() @ a, None


def symmetric_info_nce(a: Tensor, b: Tensor, tau: float = 0.2) -> Tensor:
    """``(InfoNCE(a, b) + InfoNCE(b, a)) / 2`` on L2-normalised views."""
    if a.shape != b.shape:
        raise ValueError(f"symmetric_info_nce: {tuple(a.shape)} and {tuple(b.shape)} differ")
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    if 2.0 / tau < 80.0:
        return _SymmetricInfoNCE.apply(a, b, tau)
    logits = (a / tau) @ b.t()  # scale the B×d factor, not the B×B product
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def cmcl_loss(views: list[Tensor], target: Tensor, tau: float = 0.2) -> Tensor:
    """Cross-modal contrastive loss: each view against the target view, symmetric, summed over views."""
    if not views:
        return target.new_zeros(())
    return sum(symmetric_info_nce(v, target, tau) for v in views)


# ---------------------------------------------------------------------------------------------- OAT
def pairwise_distance(x: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """``‖x_i − y_j‖`` (``n × m``; ``P × n × m`` for batches of clouds ``P × n × d``, ``P × m × d``), with a
    safe gradient at zero distance.

    The expansion ``‖x‖² + ‖y‖² − 2x·y`` runs in float64 for float32 clouds (the result comes back in the
    clouds' dtype): in float32 it cancels to a rounding error of ~1e-7 for coincident points, a phantom
    distance of ~3e-4 under the square root whose gradient (÷ that tiny distance) is noise. The Sinkhorn
    divergence's self terms put most of their plan on exactly such pairs (each point with itself): in float32
    its gradient was ~2 % wrong for any clouds, and nowhere near zero for identical ones. One cloud against
    itself (``y is x``) has an exactly zero diagonal."""
    dtype, same = x.dtype, y is x
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = x.double()
        y = x if same else y.double()
    sq = (x * x).sum(-1, keepdim=True) + (y * y).sum(-1).unsqueeze(-2) - 2.0 * x @ y.transpose(-1, -2)
    if same:
        eye = torch.eye(x.shape[-2], dtype=torch.bool, device=x.device)
        sq = sq.masked_fill(eye, 0.0)
    return torch.sqrt(sq.clamp_min(0.0) + eps).to(dtype)


def sinkhorn_log(cost: Tensor, a: Tensor | None = None, b: Tensor | None = None, eps: float = 0.05,
                 n_iter: int = 100, tol: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Entropic OT by log-domain Sinkhorn. Returns the plan ``T`` (n×m) and the dual potentials ``f, g``.

    Stops early when the row marginals of the plan are within ``tol`` (L1) of ``a``; the last update is
    on ``g``, so the column marginals equal ``b`` up to rounding.
    """
    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device) if a is None else a
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device) if b is None else b
    if (a < 0).any() or (b < 0).any():
        raise ValueError("sinkhorn_log: negative marginal weights")
    log_a, log_b = torch.log(a), torch.log(b)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for it in range(n_iter):
        f = -eps * torch.logsumexp(log_b[None, :] + (g[None, :] - cost) / eps, dim=1)
        g = -eps * torch.logsumexp(log_a[:, None] + (f[:, None] - cost) / eps, dim=0)
        if tol > 0 and (it % 10 == 9 or it == n_iter - 1):
            log_t = log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - cost) / eps
            if (log_t.exp().sum(1) - a).abs().sum() < tol:
                break
    plan = torch.exp(log_a[:, None] + log_b[None, :] + (f[:, None] + g[None, :] - cost) / eps)
    return plan, f, g


def sinkhorn_sym(cost: Tensor, eps: float = 0.05, n_iter: int = 100, tol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Symmetric problem (same cloud twice, uniform weights): the averaged update
    ``f ← ½(f − ε LSE_j(log a_j + (f_j − C_ij)/ε))`` of Feydy et al. converges in a few iterations.
    Returns the plan and the potential ``f`` (= ``g``)."""
    n = cost.shape[0]
    log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    for _ in range(n_iter):
        new = 0.5 * (f - eps * torch.logsumexp(log_a[None, :] + (f[None, :] - cost) / eps, dim=1))
        done = (new - f).abs().max() < tol
        f = new
        if done:
            break
    plan = torch.exp(log_a[:, None] + log_a[None, :] + (f[:, None] + f[None, :] - cost) / eps)
    return plan, f


def entropic_ot(x: Tensor, y: Tensor, eps: float = 0.05, n_iter: int = 100, tol: float = 1e-6) -> Tensor:
    r"""Differentiable :math:`\mathrm{OT}_\varepsilon` (1-Wasserstein cost, uniform weights) of two clouds.

    Value: the dual objective :math:`\langle a, f\rangle + \langle b, g\rangle` (= primal at
    convergence). Gradient: :math:`\langle T^\star, \partial C\rangle` (envelope theorem).
    """
    cost = pairwise_distance(x, y)
    with torch.no_grad():
        if x is y:
            plan, f = sinkhorn_sym(cost.detach(), eps=eps, n_iter=n_iter, tol=tol)
            value = 2 * f.mean()
        else:
            plan, f, g = sinkhorn_log(cost.detach(), eps=eps, n_iter=n_iter, tol=tol)
            value = f.mean() + g.mean()
    transport = (plan * cost).sum()
    return transport + (value - transport.detach())


def transport_cost(x: Tensor, y: Tensor, eps: float = 0.05, n_iter: int = 100, tol: float = 1e-6) -> Tensor:
    r"""The paper's :math:`\langle T, C\rangle` with the entropic plan ``T`` (detached)."""
    cost = pairwise_distance(x, y)
    with torch.no_grad():
        plan, _, _ = sinkhorn_log(cost.detach(), eps=eps, n_iter=n_iter, tol=tol)
    return (plan * cost).sum()


def sinkhorn_divergence(x: Tensor, y: Tensor, eps: float = 0.05, n_iter: int = 100, tol: float = 1e-6) -> Tensor:
    r""":math:`S_\varepsilon(x,y) = \mathrm{OT}_\varepsilon(x,y) - \frac12\mathrm{OT}_\varepsilon(x,x) - \frac12\mathrm{OT}_\varepsilon(y,y)`."""
    return (entropic_ot(x, y, eps, n_iter, tol)
            - 0.5 * entropic_ot(x, x, eps, n_iter, tol) - 0.5 * entropic_ot(y, y, eps, n_iter, tol))


@torch.no_grad()
def _sinkhorn_batched(cost: Tensor, log_a: Tensor, log_b: Tensor, eps: float, n_iter: int,
                      tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """Log-domain Sinkhorn on ``P`` problems at once (``cost``: ``P × n × m``; padded points carry weight
    0, i.e. log-weight −∞). Returns plans and potentials; stops when every row marginal is within ``tol``.

    Every log-sum-exp runs over at least one real point, so no slice is all −∞ and potentials stay finite.
    """
    g = torch.zeros_like(log_b)
    a = log_a.exp()
    kernel = -cost / eps
    for it in range(n_iter):
        f = -eps * torch.logsumexp(kernel + (log_b + g / eps)[:, None, :], dim=2)
        g = -eps * torch.logsumexp(kernel + (log_a + f / eps)[:, :, None], dim=1)
        if tol > 0 and (it % 10 == 9 or it == n_iter - 1):
            log_t = kernel + (log_a + f / eps)[:, :, None] + (log_b + g / eps)[:, None, :]
            if (log_t.exp().sum(2) - a).abs().sum(1).max() < tol:
                break
    plan = torch.exp(kernel + (log_a + f / eps)[:, :, None] + (log_b + g / eps)[:, None, :])
    return plan, f, g


@torch.no_grad()
def _sinkhorn_sym_batched(cost: Tensor, log_a: Tensor, eps: float, n_iter: int, tol: float) -> tuple[Tensor, Tensor]:
    """The averaged symmetric update of :func:`sinkhorn_sym` on ``P`` problems at once."""
    f = torch.zeros_like(log_a)
    kernel = -cost / eps
    for _ in range(n_iter):
        new = 0.5 * (f - eps * torch.logsumexp(kernel + (log_a + f / eps)[:, None, :], dim=2))
        done = (new - f).abs().max() < tol
        f = new
        if done:
            break
    plan = torch.exp(kernel + (log_a + f / eps)[:, :, None] + (log_a + f / eps)[:, None, :])
    return plan, f


def oat_losses(pairs: list[tuple[Tensor, Tensor]], eps: float = 0.05, n_iter: int = 100, tol: float = 1e-6,
               debias: bool = True, normalize: bool = True) -> Tensor:
    r"""Sum of :func:`oat_loss` over ``(view, target)`` pairs, all transport problems solved as one batch.

    Clouds are zero-padded to the largest size with weight 0, so pairs may differ in size (e.g. the image
    view covers only items that have an image). One batched Sinkhorn runs the ``x``–``y`` problems and one
    the symmetric ``x``–``x``/``y``–``y`` problems of the debiasing terms: a RecGOAT step solves 6 problems
    in 2 loops instead of 6, each iteration one tensor operation over all of them.

    Gradients hold the plans fixed (envelope theorem). That is exact for the default Sinkhorn divergence,
    whose terms are entropic OT values; with ``debias=False`` the value returned is the paper's ⟨T, C⟩ but
    the gradient is that of the entropic cost ⟨T, C⟩ + ε·KL(T‖ab) (METHOD.md §4 allows the detached plan),
    which differs from the gradient of ⟨T, C⟩ itself by the plan's own dependence on C (~15 % on a 6 × 7
    example at ε = 0.1).
    """
    kept = [(v, t) for v, t in pairs if len(v) >= 2 and len(t) >= 2]
    if not kept:  # a zero on the views' device and dtype (a CPU float32 zero would not add to a CUDA loss)
        return pairs[0][0].new_zeros(()) if pairs else torch.zeros(())
    pairs = kept
    like = pairs[0][0]
    if any(v.shape[1] != like.shape[1] or t.shape[1] != like.shape[1] for v, t in pairs):
        raise ValueError("oat_losses: all clouds need the same dimension")
    if normalize:
        pairs = [(F.normalize(v, dim=-1), F.normalize(t, dim=-1)) for v, t in pairs]
    size = max(max(len(v), len(t)) for v, t in pairs)

    def pad(x: Tensor) -> Tensor:
        return F.pad(x, (0, 0, 0, size - len(x)))

    def log_w(n: int) -> Tensor:
        w = torch.full((size,), -math.inf, dtype=like.dtype, device=like.device)
        w[:n] = -math.log(n)
        return w

    x = torch.stack([pad(v) for v, _ in pairs])
    y = torch.stack([pad(t) for _, t in pairs])
    log_a = torch.stack([log_w(len(v)) for v, _ in pairs])
    log_b = torch.stack([log_w(len(t)) for _, t in pairs])
    cost = pairwise_distance(x, y)
    plan, f, g = _sinkhorn_batched(cost.detach(), log_a, log_b, eps, n_iter, tol)
    transport = (plan * cost).sum((1, 2))
    if not debias:
        return transport.sum()
    value = (log_a.exp() * f).sum(1) + (log_b.exp() * g).sum(1)
    ot_xy = transport + (value - transport).detach()
    both = torch.cat([x, y])
    log_w2 = torch.cat([log_a, log_b])
    cost_s = pairwise_distance(both, both)
    plan_s, f_s = _sinkhorn_sym_batched(cost_s.detach(), log_w2, eps, n_iter, tol)
    transport_s = (plan_s * cost_s).sum((1, 2))
    value_s = 2 * (log_w2.exp() * f_s).sum(1)
    ot_self = transport_s + (value_s - transport_s).detach()
    p = len(pairs)
    return (ot_xy - 0.5 * ot_self[:p] - 0.5 * ot_self[p:]).sum()


def oat_loss(view: Tensor, target: Tensor, eps: float = 0.05, n_iter: int = 100, tol: float = 1e-6,
             debias: bool = True, normalize: bool = True) -> Tensor:
    """OAT between the batch distribution of an (adapted) modality view and the target view.

    ``normalize``: compare L2-normalised embeddings (ε is then on the unit sphere's scale, costs ≤ 2).
    ``debias``: Sinkhorn divergence (0 for identical clouds); else the plain ⟨T, C⟩.
    Computed by the batched solver the model uses (:func:`oat_losses`); :func:`sinkhorn_divergence` and
    :func:`transport_cost` are the unbatched references it is tested against.
    """
    if len(view) < 2 or len(target) < 2:
        return view.new_zeros(())
    return oat_losses([(view, target)], eps, n_iter, tol, debias, normalize)
