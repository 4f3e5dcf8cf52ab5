"""OAT's batched log-domain Sinkhorn against POT's batched solver (``ot.batch.solve_batch``), on the problems one
RecGOAT training step solves: three view–target problems of ``ot_max_points`` (128) unit-norm points in d = 64
and the six symmetric problems of the Sinkhorn divergence's debiasing terms, ε = 0.05, at most 50 iterations,
tolerance 1e-5 (the model's settings), in float32 as in training. Rounds alternate the solvers so that this
machine's speed drifts hit both alike; medians are printed, with the largest plan difference.

Run: ``python benchmarks/sinkhorn_vs_pot.py [--threads 1] [--rounds 200] [--points 128]``
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from ot.batch import solve_batch

from recgoat.nn.alignment import _sinkhorn_batched, _sinkhorn_sym_batched, pairwise_distance

EPS, ITERS, TOL = 0.05, 50, 1e-5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--points", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n = args.points
    x = F.normalize(torch.randn(3, n, 64, generator=g), dim=-1)
    y = F.normalize(torch.randn(3, n, 64, generator=g) + 0.3, dim=-1)
    cost = pairwise_distance(x, y)
    both = torch.cat([x, y])
    cost_s = pairwise_distance(both, both)
    log_w = torch.full((3, n), -math.log(n))
    log_w2 = torch.cat([log_w, log_w])
    w, w2 = log_w.exp(), log_w2.exp()

    solvers = {
        "ours: view-target (3 problems)": lambda: _sinkhorn_batched(cost, log_w, log_w, EPS, ITERS, TOL)[0],
        "POT:  view-target (3 problems)": lambda: solve_batch(cost, reg=EPS, a=w, b=w, max_iter=ITERS, tol=TOL,
                                                              method="log_sinkhorn", grad="detach").plan,
        "ours: symmetric (6 problems)": lambda: _sinkhorn_sym_batched(cost_s, log_w2, EPS, ITERS, TOL)[0],
        "POT:  symmetric (6 problems)": lambda: solve_batch(cost_s, reg=EPS, a=w2, b=w2, max_iter=ITERS, tol=TOL,
                                                            method="log_sinkhorn", grad="detach").plan,
    }
    plans = {k: f() for k, f in solvers.items()}  # warm-up, and the plans compared below
    times: dict[str, list[float]] = {k: [] for k in solvers}
    for _ in range(args.rounds):
        for k, f in solvers.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    for k, ts in times.items():
        ts.sort()
        print(f"{k:32s} {1e3 * ts[len(ts) // 2]:7.3f} ms (median of {len(ts)})")
    names = list(solvers)
    for ours, pot in ((names[0], names[1]), (names[2], names[3])):
        diff = (plans[ours] - plans[pot]).abs().max().item()
        margin = [(p.sum(2) - p.new_tensor(1.0 / n)).abs().sum(1).max().item() for p in (plans[ours], plans[pot])]
        print(f"{ours.split(':')[1].strip():24s} largest plan difference {diff:.2e}; row marginals' L1 error "
              f"ours {margin[0]:.1e}, POT {margin[1]:.1e}")


if __name__ == "__main__":
    main()
