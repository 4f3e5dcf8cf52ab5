"""Full-ranking evaluation time at Amazon Baby size from cached embeddings (d=64), vs a per-user loop.

    python benchmarks/eval_speed.py [--threads 2] [--dim 64] [--rounds 5] [--loop-users 500] [--selection count|faiss|torch] [--compare-selections]

Target (issue 2): all 19,445 users × 7,050 items in ≤ 1 s, and ≥ 10× faster than a per-user loop.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _baby import baby_like
from recgoat.evaluation.evaluator import SELECTIONS, Evaluator


def per_user_loop(ev: Evaluator, ue: torch.Tensor, ie: torch.Tensor, users: np.ndarray) -> None:
    """The plain way: score, mask, sort and compute the metrics one user at a time (numpy)."""
    ue_n, ie_n = ue.numpy(), ie.numpy()
    discount = 1.0 / np.log2(np.arange(2, max(ev.ks) + 2))
    for u in users:
        s = ie_n @ ue_n[u]
        s[ev.mask[u].indices] = -np.inf
        ranked = np.argsort(-s)
        rel = set(ev.target[u].indices.tolist())
        for k in ev.ks:
            hits = np.array([i in rel for i in ranked[:k]], dtype=float)
            _recall = hits.sum() / len(rel)
            _ndcg = (hits * discount[:k]).sum() / discount[: min(len(rel), k)].sum()
            _map = (np.cumsum(hits) / np.arange(1, k + 1) * hits).sum() / min(len(rel), k)


def per_user_topk_loop(ev: Evaluator, ue: torch.Tensor, ie: torch.Tensor, users: np.ndarray) -> None:
    """A tighter per-user loop: torch matvec + topk per user, hits only (no metrics)."""
    k = max(ev.ks)
    for u in users:
        s = ie @ ue[u]
        s[ev.mask[u].indices] = -np.inf
        top = torch.topk(s, k).indices.numpy()
        rel = set(ev.target[u].indices)
        _ = [i in rel for i in top]


def compare_selections(ds, args) -> None:
    evs = {s: Evaluator.for_split(ds, "test", selection=s) for s in SELECTIONS}
    ue, ie = torch.randn(ds.n_users, args.dim), torch.randn(ds.n_items, args.dim)
    times: dict[str, list[float]] = {s: [] for s in evs}
    for r in range(args.rounds + 1):
        for s, ev in evs.items():
            t = time.perf_counter()
            ev.evaluate_embeddings(ue, ie)
            if r:  # round 0 warms up
                times[s].append(time.perf_counter() - t)
    base = np.median(times["count"])
    for s, t in times.items():
        print(f"selection={s!r:8} median {np.median(t):.3f} s over {args.rounds} interleaved rounds "
              f"({np.median(t) / base:.2f}× count's)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loop-users", type=int, default=500)
    ap.add_argument("--selection", choices=SELECTIONS, default="count")
    ap.add_argument("--compare-selections", action="store_true",
                    help="only time the three selections against each other, interleaved round by round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = baby_like()
    if args.compare_selections:
        compare_selections(ds, args)
        return
    ev = Evaluator.for_split(ds, "test", selection=args.selection)
    ue, ie = torch.randn(ds.n_users, args.dim), torch.randn(ds.n_items, args.dim)
    ev.evaluate_embeddings(ue, ie)  # warm-up
    users = ev.users[: args.loop_users]
    loops = (("per-user loop, numpy sort + metrics", per_user_loop),
             ("per-user loop, torch topk, hits only", per_user_topk_loop))
    # This machine's speed drifts by ±30% over minutes, so each round times all three back to back and the
    # ratio is taken within a round; the median over rounds is reported.
    vec, loop_t = [], {name: [] for name, _ in loops}
    for _ in range(args.rounds):
        t = time.perf_counter()
        ev.evaluate_embeddings(ue, ie)
        vec.append(time.perf_counter() - t)
        for name, loop in loops:
            t = time.perf_counter()
            loop(ev, ue, ie, users)
            loop_t[name].append((time.perf_counter() - t) / len(users) * len(ev.users))
    vec = np.array(vec)
    print(f"users evaluated      {len(ev.users):,} × {ds.n_items:,} items, d={args.dim}, {args.threads} threads, "
          f"ranks by {args.selection!r}")
    print(f"vectorised (best/median of {args.rounds})  {vec.min():.3f} s / {np.median(vec):.3f} s")
    for name, _ in loops:
        t = np.array(loop_t[name])
        ratios = t / vec
        print(f"{name} (extrapolated from {len(users)} users)  median {np.median(t):.2f} s  → vectorised is "
              f"{np.median(ratios):.1f}× faster (median of per-round ratios; range {ratios.min():.1f}–"
              f"{ratios.max():.1f}×)")


if __name__ == "__main__":
    main()
