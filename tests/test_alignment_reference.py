"""The alignment mathematics (METHOD.md §4), against independent references.

InfoNCE (fused path and fallback) against ``F.cross_entropy`` on explicit logits; log-domain Sinkhorn
against POT (``ot.sinkhorn``, ``ot.emd2``, the batched solvers against ``ot.batch.solve_batch``); the batched OAT losses against zero-weight padding, one-by-one
solving, the envelope-theorem gradient formula and its early-stopping rule; and finiteness at the edges.
"""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from recgoat.nn.alignment import (_sinkhorn_batched, _sinkhorn_sym_batched, entropic_ot, oat_losses,
                                  pairwise_distance, sinkhorn_divergence, sinkhorn_log, symmetric_info_nce,
                                  transport_cost)

torch.set_num_threads(1)
F64 = torch.float64


def _cloud(n: int, d: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


# ---------------------------------------------------------------------------------------------- InfoNCE
def _info_nce_reference(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """½[CE(L, I) + CE(Lᵀ, I)] on the explicit logit matrix of the L2-normalised rows."""
    logits = _unit(a) @ _unit(b).t() / tau
    labels = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def _pair(kind: str, n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _cloud(n, d, seed), _cloud(n, d, seed + 1)
    if kind == "near_duplicate":  # keys ≈ queries and two near-identical queries: ties in every row
        b = a + 1e-6 * b
        a[1] = a[0] + 1e-7
    elif kind == "opposite":  # cosine −1 off the first row: logits span the full [−1/τ, 1/τ]
        b = -a.clone()
        b[0] = a[0]
    return a, b


# τ = 0.0251 is the fused path's smallest (2/τ just under 80), 0.025 and below the cross-entropy fallback
TAUS = [0.0251, 0.025, 0.01, 0.07, 1.0, 50.0]


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("kind", ["random", "near_duplicate", "opposite"])
@pytest.mark.parametrize("n", [2, 17])
def test_symmetric_info_nce_matches_cross_entropy_on_explicit_logits(tau, kind, n):
    a, b = _pair(kind, n, 5, seed=10 * n + len(kind))
    a, b = a.requires_grad_(True), b.requires_grad_(True)
    got = symmetric_info_nce(a, b, tau)
    ref = _info_nce_reference(a, b, tau)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-12)
    for x, y in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(ref, (a, b))):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tau", [0.03, 0.2, 5.0, 0.02])
def test_symmetric_info_nce_passes_gradcheck_on_both_paths(tau):
    a, b = _pair("near_duplicate", 4, 3, seed=3)
    a = (a + 0.1 * _cloud(4, 3, 9)).requires_grad_(True)  # keep finite differences away from exact ties
    b = b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: symmetric_info_nce(x, y, tau), (a, b), eps=1e-6, atol=1e-6)
    two = [_cloud(2, 3, 4).requires_grad_(True), _cloud(2, 3, 5).requires_grad_(True)]
    assert torch.autograd.gradcheck(lambda x, y: symmetric_info_nce(x, y, tau), two, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("tau", [0.0251, 0.1, 0.01])
def test_symmetric_info_nce_in_float32_follows_float64(tau):
    """Float32 through the fused path keeps E = exp(L − max L) ≥ e^{−2/τ} > 1e-35, a normal float32."""
    a, b = _pair("opposite", 64, 16, seed=7)
    a32, b32 = a.float().requires_grad_(True), b.float().requires_grad_(True)
    a64, b64 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    v32, v64 = symmetric_info_nce(a32, b32, tau), _info_nce_reference(a64, b64, tau)
    assert v32.dtype == torch.float32
    assert v32.item() == pytest.approx(v64.item(), rel=1e-5)
    g32, g64 = torch.autograd.grad(v32, (a32, b32)), torch.autograd.grad(v64, (a64, b64))
    for x, y in zip(g32, g64):
        assert torch.isfinite(x).all()
        assert float((x.double() - y).norm() / y.norm()) < 1e-4


@pytest.mark.parametrize("tau", [0.0251, 0.025, 0.01, 0.001])
def test_symmetric_info_nce_in_float32_with_a_column_at_the_bottom_of_the_logit_range(tau):
    """Key 1 is opposite every query: its column of E = exp(L − max L) is all e^{−2/τ}, which float32 holds
    only while 2/τ < ~87 — the bound that sends smaller τ to the cross-entropy fallback."""
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6]], requires_grad=True)
    b = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.8, 0.6]], requires_grad=True)
    got = symmetric_info_nce(a, b, tau)
    a64, b64 = a.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    ref = _info_nce_reference(a64, b64, tau)
    assert torch.isfinite(got) and got.item() == pytest.approx(ref.item(), rel=1e-5)
    for x, y in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(ref, (a64, b64))):
        assert torch.allclose(x.double(), y, rtol=1e-4, atol=1e-4)


def test_symmetric_info_nce_of_orthonormal_views_has_its_closed_form():
    """Orthonormal rows against themselves: ``log(1 + (n − 1) e^{−1/τ})`` on both sides, on both paths, also
    when both arguments are the same tensor."""
    n = 6
    a = torch.eye(n, dtype=F64)
    for tau in (0.5, 0.03, 0.02):
        want = math.log1p((n - 1) * math.exp(-1 / tau))
        assert symmetric_info_nce(a, a.clone(), tau).item() == pytest.approx(want, rel=1e-9, abs=1e-13)
        assert symmetric_info_nce(a, a, tau).item() == pytest.approx(want, rel=1e-9, abs=1e-13)


# ---------------------------------------------------------------------------------------------- Sinkhorn
@pytest.mark.parametrize("eps", [1.0, 0.1, 0.05, 0.01])
@pytest.mark.parametrize("n,m", [(5, 9), (17, 4)])
def test_sinkhorn_plan_and_entropic_value_agree_with_pot(eps, n, m):
    x, y = _unit(_cloud(n, 3, n)), _unit(_cloud(m, 3, 100 + m))
    cost = pairwise_distance(x, y, eps=0.0)
    plan, f, g = sinkhorn_log(cost, eps=eps, n_iter=20000, tol=1e-12)
    assert torch.allclose(plan.sum(1), torch.full((n,), 1 / n, dtype=F64), atol=1e-5)
    assert torch.allclose(plan.sum(0), torch.full((m,), 1 / m, dtype=F64), atol=1e-5)
    a, b, M = np.full(n, 1 / n), np.full(m, 1 / m), cost.numpy()
    pot_plan = ot.sinkhorn(a, b, M, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-13)
    assert np.abs(plan.numpy() - pot_plan).max() < 1e-9
    # OT_ε = ⟨T, C⟩ + ε KL(T ‖ a⊗b), evaluated on POT's plan: our dual value must equal it
    pot_value = float((pot_plan * M).sum() + eps * (pot_plan * np.log(pot_plan / np.outer(a, b))).sum())
    assert entropic_ot(x, y, eps=eps, n_iter=20000, tol=1e-12).item() == pytest.approx(pot_value, abs=1e-9)
    assert (f.mean() + g.mean()).item() == pytest.approx(pot_value, abs=1e-9)
    linear = float(ot.sinkhorn2(a, b, M, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-13))
    assert transport_cost(x, y, eps=eps, n_iter=20000, tol=1e-12).item() == pytest.approx(linear, abs=1e-9)


def test_small_eps_sinkhorn_and_divergence_tend_to_the_exact_w1():
    x, y = _cloud(12, 3, 1), _cloud(10, 3, 2) + 0.7
    a, b = np.full(12, 1 / 12), np.full(10, 1 / 10)
    exact = float(ot.emd2(a, b, pairwise_distance(x, y, eps=0.0).numpy()))
    gaps = [transport_cost(x, y, eps=e, n_iter=20000, tol=1e-11).item() - exact for e in (0.1, 0.03, 0.01)]
    assert all(gap >= -1e-9 for gap in gaps)  # converged plans are feasible: never below the LP optimum
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3
    div = oat_losses([(x, y)], eps=0.005, n_iter=20000, tol=1e-9, normalize=False).item()
    assert div == pytest.approx(exact, abs=5e-3)


def test_zero_weight_padding_leaves_sinkhorn_log_unchanged():
    x, y = _cloud(5, 3, 3), _cloud(6, 3, 4)
    plan, _, g = sinkhorn_log(pairwise_distance(x, y), eps=0.05, n_iter=3000, tol=1e-12)
    xp = torch.cat([x, torch.zeros(3, 3, dtype=F64)])
    a = torch.cat([torch.full((5,), 0.2, dtype=F64), torch.zeros(3, dtype=F64)])
    plan_p, f_p, g_p = sinkhorn_log(pairwise_distance(xp, y), a=a, eps=0.05, n_iter=3000, tol=1e-12)
    assert torch.equal(plan_p[:5], plan) and torch.equal(g_p, g)
    assert torch.equal(plan_p[5:], torch.zeros(3, 6, dtype=F64)) and torch.isfinite(f_p).all()


@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_batched_solvers_give_pots_batch_plans_on_padded_problems(eps):
    """The two batched solvers the OAT loss runs against POT's own batched log-Sinkhorn (ot.batch.solve_batch):
    three problems of 7, 12 and 12 points padded to 12 with zero weights, and their symmetric counterparts."""
    from ot.batch import solve_batch

    sizes, size = [7, 12, 12], 12
    xs = [_unit(_cloud(n, 4, 10 + i)) for i, n in enumerate(sizes)]
    ys = [_unit(_cloud(size, 4, 20 + i) + 0.5) for i in range(3)]
    pad = torch.stack([F.pad(x, (0, 0, 0, size - len(x))) for x in xs])
    cost = pairwise_distance(pad, torch.stack(ys))
    w = torch.stack([torch.cat([torch.full((n,), 1.0 / n, dtype=F64), torch.zeros(size - n, dtype=F64)])
                     for n in sizes])
    b = torch.full((3, size), 1.0 / size, dtype=F64)
    plan, _, _ = _sinkhorn_batched(cost, w.log(), b.log(), eps, 5000, 1e-13)
    ref = solve_batch(cost, reg=eps, a=w, b=b, max_iter=5000, tol=1e-13, method="log_sinkhorn", grad="detach")
    assert torch.allclose(plan, ref.plan, atol=1e-10, rtol=0)
    assert torch.allclose(plan.sum(2), w, atol=1e-10) and torch.allclose(plan.sum(1), b, atol=1e-12)
    sym = pairwise_distance(pad, pad)
    plan_s, _ = _sinkhorn_sym_batched(sym, w.log(), eps, 5000, 1e-13)
    ref_s = solve_batch(sym, reg=eps, a=w, b=w, max_iter=5000, tol=1e-13, method="log_sinkhorn", grad="detach")
    assert torch.allclose(plan_s, ref_s.plan, atol=1e-10, rtol=0)


def test_early_stopping_stops_at_the_first_check_within_tol():
    """The batched solver checks every 10 iterations and stops at the first check where every problem's
    row marginals are within ``tol`` (L1): its plan is bit-for-bit the plan of that many plain iterations,
    and the previous check was not yet within ``tol``. ``tol=0`` runs all ``n_iter`` iterations."""
    x, y = _unit(_cloud(18, 3, 5)).view(2, 9, 3), _unit(_cloud(18, 3, 6)).view(2, 9, 3)
    cost = pairwise_distance(x, y)
    log_a = torch.full((2, 9), -math.log(9), dtype=F64)
    log_a[1, 6:], log_a[1, :6] = -math.inf, -math.log(6)
    log_b = torch.full((2, 9), -math.log(9), dtype=F64)
    tol = 1e-6

    def marginal_error(k: int, t: float) -> tuple[torch.Tensor, float]:
        plan = _sinkhorn_batched(cost, log_a, log_b, 0.05, k, t)[0]
        return plan, float((plan.sum(2) - log_a.exp()).abs().sum(1).max())

    stopped, err = marginal_error(5000, tol)
    assert err < tol
    k = next(k for k in range(10, 5000, 10) if torch.equal(marginal_error(k, 0.0)[0], stopped))
    assert marginal_error(k - 10, 0.0)[1] >= tol
    # one problem alone stops no later than the batch (the batch waits for its slowest problem)
    alone = sinkhorn_log(cost[0], eps=0.05, n_iter=5000, tol=tol)[0]
    assert float((alone.sum(1) - 1 / 9).abs().sum()) < tol
    assert any(torch.equal(alone, sinkhorn_log(cost[0], eps=0.05, n_iter=j, tol=0.0)[0]) for j in range(10, k + 1, 10))
    # tol = 0: no early exit, the iterations asked for are the iterations run
    assert not torch.equal(marginal_error(k + 10, 0.0)[0], stopped)
    # the symmetric solver stops once the potential moves by less than tol
    plan_s, f_s = _sinkhorn_sym_batched(pairwise_distance(x, x), log_a, 0.05, 5000, 1e-9)
    f_next = 0.5 * (f_s - 0.05 * torch.logsumexp(-pairwise_distance(x, x) / 0.05 + (log_a + f_s / 0.05)[:, None, :],
                                                 dim=2))
    assert float((f_next - f_s).abs().max()) < 1e-9
    assert float((plan_s.sum(2) - log_a.exp()).abs().sum(1).max()) < 1e-6


# ---------------------------------------------------------------------------------------------- OAT
@pytest.mark.parametrize("debias", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_zero_padding_gives_exactly_the_unpadded_value_and_gradient(debias, normalize):
    """A small pair alone, and the same pair zero-padded in one batch with a larger pair."""
    kw = dict(eps=0.05, n_iter=3000, tol=1e-12, debias=debias, normalize=normalize)
    v, t = _cloud(4, 3, 20), _cloud(7, 3, 21) + 0.3
    big = (_cloud(12, 3, 22), _cloud(11, 3, 23))
    solo = [v.clone().requires_grad_(True), t.clone().requires_grad_(True)]
    padded = [v.clone().requires_grad_(True), t.clone().requires_grad_(True)]
    alone = oat_losses([tuple(solo)], **kw)
    together = oat_losses([tuple(padded), big], **kw)
    assert together.item() == pytest.approx(alone.item() + oat_losses([big], **kw).item(), abs=1e-12)
    alone.backward()
    together.backward()
    for s, p in zip(solo, padded):
        assert torch.allclose(s.grad, p.grad, rtol=0, atol=1e-12)


def test_batched_pairs_of_unequal_sizes_equal_the_unbatched_references():
    """Three pairs, each with view and target of different sizes, in float64 and in float32."""
    shapes = [(5, 8), (7, 3), (2, 2)]
    kw = dict(eps=0.05, n_iter=3000, tol=1e-12)
    for dtype, atol in ((F64, 1e-9), (torch.float32, 2e-5)):
        clouds = [(_cloud(n, 4, 40 + i, dtype), _cloud(m, 4, 50 + i, dtype) + 0.2) for i, (n, m) in enumerate(shapes)]
        leaves = [[c.clone().requires_grad_(True) for c in pair] for pair in clouds]
        refs = [[c.double().requires_grad_(True) for c in pair] for pair in clouds]
        batched = oat_losses([tuple(p) for p in leaves], **kw)
        assert batched.dtype == dtype
        reference = sum(sinkhorn_divergence(_unit(v), _unit(t), **kw) for v, t in refs)
        assert batched.item() == pytest.approx(reference.item(), abs=atol)
        batched.backward()
        reference.backward()
        for pair, ref in zip(leaves, refs):
            for x, y in zip(pair, ref):
                assert torch.allclose(x.grad.double(), y.grad, atol=10 * atol)


# POT's plain Sinkhorn creeps on the self problems (x, x), (y, y) (it oscillates; the averaged update does
# not): its plans still meet the marginals to ~1e-8, enough for this comparison
@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_gradient_is_the_envelope_formula_with_pots_plans():
    """∇_{x_i} S_ε = Σ_j T^{xy}_ij u(x_i − y_j) − Σ_j T^{xx}_ij u(x_i − x_j), u(v) = v/‖v‖, with the plans
    from POT; symmetrically for y."""
    x, y = _cloud(6, 3, 60), _cloud(9, 3, 61) + 0.5
    eps = 0.1
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    oat_losses([(xs, ys)], eps=eps, n_iter=5000, tol=1e-13, normalize=False).backward()

    def plan(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        M = pairwise_distance(p, q, eps=0.0).numpy()
        w_p, w_q = np.full(len(p), 1 / len(p)), np.full(len(q), 1 / len(q))
        return torch.from_numpy(ot.sinkhorn(w_p, w_q, M, eps, method="sinkhorn_log", numItermax=5000,
                                            stopThr=1e-10))

    def pull(p: torch.Tensor, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        diff = p[:, None, :] - q[None, :, :]
        norm = diff.norm(dim=-1, keepdim=True)
        unit = torch.where(norm > 0, diff / norm.clamp_min(1e-300), torch.zeros_like(diff))
        return (t[:, :, None] * unit).sum(1)

    grad_x = pull(x, y, plan(x, y)) - pull(x, x, plan(x, x))
    grad_y = pull(y, x, plan(x, y).t()) - pull(y, y, plan(y, y))
    assert torch.allclose(xs.grad, grad_x, atol=1e-8)
    assert torch.allclose(ys.grad, grad_y, atol=1e-8)


def test_divergence_is_zero_with_zero_gradient_for_identical_clouds_and_grows_with_a_shift():
    for dtype, tiny in ((F64, 1e-9), (torch.float32, 1e-6)):
        x = _cloud(20, 4, 70, dtype)
        perm = torch.randperm(20, generator=torch.Generator().manual_seed(71))
        for y in (x.clone(), x[perm]):
            leaves = [x.clone().requires_grad_(True), y.clone().requires_grad_(True)]
            loss = oat_losses([tuple(leaves)], eps=0.05, n_iter=500, tol=1e-10)
            loss.backward()
            assert abs(loss.item()) < tiny
            assert all(float(t.grad.abs().max()) < 10 * tiny for t in leaves)
    x = _cloud(20, 4, 72)
    direction = _unit(torch.tensor([1.0, -2.0, 0.5, 1.0], dtype=F64))
    values = [oat_losses([(x, x + s * direction)], eps=0.05, n_iter=2000, tol=1e-10, normalize=False).item()
              for s in (0.02, 0.1, 0.5, 1.0, 3.0)]
    assert values[0] > 0 and all(b > a for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(3.0, rel=0.02)  # a translation's W1 is its length


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("eps", [1e-4, 0.05, 10.0])
@pytest.mark.parametrize("case", ["coincident", "all_one_point", "large_costs"])
def test_oat_losses_stay_finite_at_the_edges(dtype, eps, case):
    """Coincident points (zero distances), every point the same, costs of 1e3; tiny and huge ε."""
    x, y = _cloud(6, 3, 80, dtype), _cloud(8, 3, 81, dtype)
    normalize = True
    if case == "coincident":
        x[1] = x[0]
        y[:6] = x
    elif case == "all_one_point":
        x[:] = x[0]
        y[:] = x[0]
    else:
        x, y, normalize = 1e3 * x, 1e3 * y + 1e3, False
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    for debias in (True, False):
        xs.grad = ys.grad = None
        loss = oat_losses([(xs, ys), (ys[:3], xs[:5])], eps=eps, n_iter=100, tol=1e-6, debias=debias,
                          normalize=normalize)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(xs.grad).all() and torch.isfinite(ys.grad).all()
        if case == "all_one_point" and debias:
            assert abs(loss.item()) < 1e-5 and float(xs.grad.abs().max()) < 1e-4


def test_float32_costs_of_coincident_points_stay_at_the_floor_and_the_divergence_matches_float64():
    x = _unit(_cloud(32, 8, 90))
    y = x.clone()
    y[16:] = _unit(y[16:] + 0.3 * _cloud(16, 8, 91))
    d32 = pairwise_distance(x.float(), x.float().clone())
    assert d32.dtype == torch.float32 and float(d32.diagonal().max()) <= 1.001e-6  # √(0 + 1e-12)
    vals = [oat_losses([(x.to(t), y.to(t))], eps=0.01, n_iter=300, tol=1e-7).item() for t in (torch.float32, F64)]
    assert vals[0] == pytest.approx(vals[1], rel=1e-4)


def test_oat_losses_skips_pairs_with_fewer_than_two_points():
    x, y = _cloud(5, 3, 95), _cloud(5, 3, 96)
    full = oat_losses([(x, y)], eps=0.05, n_iter=500)
    assert oat_losses([(x, y), (x[:1], y)], eps=0.05, n_iter=500).item() == pytest.approx(full.item(), abs=1e-12)
    assert oat_losses([(x[:1], y[:1])]).item() == 0.0


def test_no_pair_left_gives_a_zero_of_the_views_dtype():
    # a bare float32 CPU zero: added to a float64 (or CUDA) loss it changed its dtype (or failed)
    one = torch.zeros(1, 4, dtype=torch.float64)
    out = oat_losses([(one, one)])
    assert out.dtype == torch.float64 and float(out) == 0.0
