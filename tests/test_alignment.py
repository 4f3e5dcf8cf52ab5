"""Mathematics of RecGOAT's alignment losses: InfoNCE/CMCL, log-domain Sinkhorn, OAT."""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from recgoat.nn.alignment import (cmcl_loss, entropic_ot, info_nce, oat_loss, pairwise_distance, sinkhorn_divergence,
                                  sinkhorn_log, symmetric_info_nce, transport_cost)
from recgoat.nn.layers import AdaptiveMap

torch.set_num_threads(1)


def _cloud(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------------- InfoNCE
def test_info_nce_matches_hand_computation_on_3x3():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    k = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    tau = 0.5
    # by hand: row i, -log(exp(s_ii/τ) / Σ_j exp(s_ij/τ)), s = q·k (all rows unit norm)
    s = [[0.8, 0.0, 1.0], [0.6, 1.0, 0.0], [0.96, 0.8, 0.6]]
    hand = sum(-math.log(math.exp(s[i][i] / tau) / sum(math.exp(x / tau) for x in s[i])) for i in range(3)) / 3
    assert info_nce(q, k, tau).item() == pytest.approx(hand, abs=1e-12)
    # symmetric version: average with the transposed problem (columns of s)
    hand_t = sum(-math.log(math.exp(s[i][i] / tau) / sum(math.exp(s[j][i] / tau) for j in range(3)))
                 for i in range(3)) / 3
    assert symmetric_info_nce(q, k, tau).item() == pytest.approx((hand + hand_t) / 2, abs=1e-12)


def test_info_nce_normalises_and_is_lowest_when_aligned():
    a = _cloud(16, 8, 0)
    assert info_nce(3.0 * a, a, 0.2).item() == pytest.approx(info_nce(a, a, 0.2).item(), abs=1e-10)
    shuffled = a[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    assert cmcl_loss([a], a, 0.2) < cmcl_loss([shuffled], a, 0.2)


def test_cmcl_is_minimised_by_gradient_descent():
    """The term must pull views together (the authors' code maximised it by a sign slip)."""
    view = _cloud(12, 6, 2).requires_grad_(True)
    target = _cloud(12, 6, 3)
    before = cmcl_loss([view], target, 0.2).item()
    opt = torch.optim.SGD([view], lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        cmcl_loss([view], target, 0.2).backward()
        opt.step()
    after = cmcl_loss([view], target, 0.2).item()
    assert after < before
    cos = torch.nn.functional.cosine_similarity(view.detach(), target).mean().item()
    assert cos > 0.5


# ---------------------------------------------------------------------------------------------- Sinkhorn
def test_sinkhorn_plan_marginals_equal_the_weights():
    x, y = _cloud(7, 3, 4), _cloud(9, 3, 5)
    a = torch.rand(7, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.1
    b = torch.rand(9, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.1
    a, b = a / a.sum(), b / b.sum()
    cost = pairwise_distance(x, y)
    plan, _, _ = sinkhorn_log(cost, a, b, eps=0.05, n_iter=2000, tol=1e-10)
    assert torch.allclose(plan.sum(1), a, atol=1e-5)
    assert torch.allclose(plan.sum(0), b, atol=1e-5)


def test_symmetric_solver_agrees_with_the_general_one():
    x = _cloud(10, 3, 20)
    assert entropic_ot(x, x, eps=0.05, n_iter=2000, tol=1e-12).item() == pytest.approx(
        entropic_ot(x, x.clone(), eps=0.05, n_iter=2000, tol=1e-12).item(), abs=1e-9)


def test_sinkhorn_cost_agrees_with_pot():
    x, y = _cloud(8, 4, 8), _cloud(8, 4, 9)
    x, y = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(y, dim=1)
    cost = pairwise_distance(x, y, eps=0.0)
    a = b = np.full(8, 1 / 8)
    M = cost.numpy()
    ours = transport_cost(x, y, eps=0.05, n_iter=5000, tol=1e-12).item()
    theirs = float(ot.sinkhorn2(a, b, M, 0.05, method="sinkhorn_log", numItermax=5000, stopThr=1e-12))
    assert ours == pytest.approx(theirs, abs=1e-5)
    # small ε → the exact 1-Wasserstein distance of the LP
    exact = float(ot.emd2(a, b, M))
    sharp = transport_cost(x, y, eps=1e-3, n_iter=20000, tol=1e-12).item()
    assert sharp == pytest.approx(exact, abs=2e-3)
    assert ours >= exact - 1e-9  # the entropic plan is feasible, hence never cheaper than the optimum


def test_entropic_ot_gradient_matches_finite_differences():
    """Envelope theorem: the detached-plan gradient is the gradient of OT_ε."""
    x, y = _cloud(5, 2, 10).requires_grad_(True), _cloud(6, 2, 11)
    kw = dict(eps=0.1, n_iter=3000, tol=1e-13)
    entropic_ot(x, y, **kw).backward()
    h = 1e-6
    num = torch.zeros_like(x)
    for idx in [(0, 0), (2, 1), (4, 0)]:
        xp, xm = x.detach().clone(), x.detach().clone()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (entropic_ot(xp, y, **kw) - entropic_ot(xm, y, **kw)) / (2 * h)
        assert x.grad[idx].item() == pytest.approx(num[idx].item(), rel=1e-4, abs=1e-7)


# ---------------------------------------------------------------------------------------------- OAT
def test_oat_is_zero_for_identical_distributions_and_grows_with_a_shift():
    x = _cloud(32, 4, 12)
    # Sinkhorn divergence (the default): exactly 0 for identical clouds …
    assert abs(oat_loss(x, x.clone(), eps=0.05, n_iter=500).item()) < 1e-6
    # … also when the same points come in another order (a distribution, not a pairing)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(13))
    assert abs(oat_loss(x, x[perm], eps=0.05, n_iter=500).item()) < 1e-6
    # whereas the plain entropic ⟨T, C⟩ keeps a positive floor
    assert oat_loss(x, x.clone(), eps=0.05, n_iter=500, debias=False).item() > 1e-4
    direction = torch.nn.functional.normalize(torch.ones(4, dtype=torch.float64), dim=0)
    values = [sinkhorn_divergence(x, x + s * direction, eps=0.05, n_iter=500).item() for s in (0.1, 0.5, 1.0, 2.0)]
    assert values[0] > 0
    assert all(b > a for a, b in zip(values, values[1:]))
    # for a pure translation the 1-Wasserstein distance is the shift length
    assert values[-1] == pytest.approx(2.0, rel=0.05)


def test_oat_gradient_reaches_the_adaptive_map_and_both_views():
    amap = AdaptiveMap(4).double()
    assert torch.count_nonzero(amap.delta) == 0  # Δ_m starts at zero: the map is the identity
    view = _cloud(20, 4, 14).requires_grad_(True)
    target = (_cloud(20, 4, 15) + 1.0).requires_grad_(True)
    assert torch.equal(amap(view), view)
    oat_loss(amap(view), target, eps=0.05, n_iter=200).backward()
    for g in (amap.delta.grad, view.grad, target.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_oat_training_moves_the_distribution_towards_the_target():
    view = _cloud(24, 3, 16)
    target = _cloud(24, 3, 17) * 0.5 + torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    amap = AdaptiveMap(3).double()
    opt = torch.optim.Adam(amap.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = oat_loss(amap(view), target, eps=0.05, n_iter=200, normalize=False)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


@pytest.mark.parametrize("debias", [True, False])
def test_batched_oat_equals_the_per_pair_losses_in_value_and_gradient(debias):
    """Two pairs of different sizes (the smaller zero-padded with weight 0) in one batch give the sum of
    the per-pair losses computed by the unbatched solvers, and the same gradients."""
    from recgoat.nn.alignment import oat_losses

    clouds = [_cloud(9, 4, 30), _cloud(9, 4, 31) + 0.3, _cloud(6, 4, 32), _cloud(6, 4, 33) - 0.2]
    a = [c.clone().requires_grad_(True) for c in clouds]
    b = [c.clone().requires_grad_(True) for c in clouds]
    kw = dict(eps=0.05, n_iter=3000, tol=1e-12)
    batched = oat_losses([(a[0], a[1]), (a[2], a[3])], debias=debias, **kw)

    def single(x, y):
        x, y = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)
        return sinkhorn_divergence(x, y, **kw) if debias else transport_cost(x, y, **kw)

    reference = single(b[0], b[1]) + single(b[2], b[3])
    assert batched.item() == pytest.approx(reference.item(), abs=1e-8)
    batched.backward()
    reference.backward()
    for ga, gb in zip(a, b):
        assert torch.allclose(ga.grad, gb.grad, atol=1e-7)


def test_fused_info_nce_equals_autograd_in_value_and_gradient():
    """The fused symmetric InfoNCE (used for τ ≥ 0.025) against the plain cross-entropy form."""
    g = torch.Generator().manual_seed(40)
    a = torch.randn(30, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(30, 5, generator=g, dtype=torch.float64, requires_grad=True)
    for tau in (0.05, 0.2, 1.0):
        fused = symmetric_info_nce(a, b, tau)
        an, bn = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
        plain = 0.5 * (info_nce(an, bn, tau, normalize=False) + info_nce(bn, an, tau, normalize=False))
        assert fused.item() == pytest.approx(plain.item(), abs=1e-12)
        ga = torch.autograd.grad(fused, (a, b))
        gb = torch.autograd.grad(plain, (a, b))
        assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(ga, gb))
    torch.autograd.gradcheck(lambda x, y: symmetric_info_nce(x, y, 0.2), (a, b))
