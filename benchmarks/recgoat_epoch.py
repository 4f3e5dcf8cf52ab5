"""Cost of one RecGOAT training epoch against LightGCN's, on a synthetic Amazon-Baby-shaped problem.

Shape (``--scale 1``): 19,445 users, 7,050 items, 160,792 interactions (80 % train), 384-d text,
1280-d image (10 % missing), 384-d profiles, d = 64, batch 2048. Both models run the shared trainer's
inner loop (NegativeSampler + Adam) for ``--epochs`` epochs in the same process and thread setting.

Prints seconds per epoch of each, their epochs alternating (target: RecGOAT ≤ 3× LightGCN), the time to build RecGOAT's graphs,
peak resident memory (target ≤ 4 GB), and the largest tensor allocated during RecGOAT's training steps.

How "no I×I, U×U or I×d×d tensor" is checked: a ``TorchDispatchMode`` sees every ATen operator that runs
while it is active — forward, backward (CPU autograd runs in the calling thread) and the optimiser step —
and inspects every tensor each operator returns: dense tensors by element count, sparse ones by their
stored entries. A dense result with two axes of length I, two of length U (or U+I: a dense
adjacency), or an axis of I or U together with two axes of d is a violation; the largest tensor seen is
printed too, for comparison with the I², U² and I·d² sizes. The mode watches
``--check-batches`` full training steps (it slows them down, so they are not timed). The kNN graphs are
built by faiss in numpy, outside torch: knn.py queries in blocks of at most 16,384 × (k+1), and the peak
memory figure covers that stage.

Run: ``python benchmarks/recgoat_epoch.py --epochs 1 --scale 0.25`` (quick) or with defaults; ``--device cuda`` trains
both models on a GPU (epochs timed to the GPU's end; the peak GPU memory is printed beside the process's).

Measured (full scale, 3 alternating epochs each, machine otherwise idle), session 9: 1 thread: LightGCN
2.20 s, RecGOAT 10.71 s per epoch, 4.87×; 2 threads: 1.76 s vs 8.21 s, 4.66×; peak RSS ~0.9 GiB; no
forbidden tensor; session 11, 1 thread: 2.32 s vs 11.79 s, 5.07×; session 12: 2.04 s vs 9.71 s, 4.75×,
and 2.34 s vs 10.41 s, 4.45×; with ``--preset ml100k`` (no profile branch) 2.27 s vs 7.45 s, 3.28×, and
2.36 s vs 8.02 s, 3.40×; session 13, 1 thread: 2.18 s vs 10.18 s, 4.66×, 911 MiB; session 18 (a CPU with
AVX512-BF16, so bfloat16 projections), 1 thread: 1.77 s vs 8.92 s, 5.05× (epoch by epoch 4.64, 5.08, 5.53),
913 MiB, and ``recgoat_step_breakdown.py --threads 1 --rounds 4`` 32.6 ms vs 152.3 ms a step, 4.67×. Session 29
(a slower machine of that kind), 1 thread: 2.34 s vs 11.94 s, 5.10×, 923 MiB. (Session 8, before the shared sparse
product got faster for both: 2.85 s vs 11.91 s, 4.18×.) Where a step's time goes: ``recgoat_step_breakdown.py``.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _cost import EpochRunner, check_allocations, device_refused, peak_rss_mb, synthetic  # noqa: E402
from recgoat.models.lightgcn import LightGCN  # noqa: E402
from recgoat.models.recgoat import RecGOAT  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the Baby sizes (users, items, interactions)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where both models train (cpu, cuda...); memory: the GPU's peak")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--check-batches", type=int, default=2)
    ap.add_argument("--preset", default=None, help="RecGOAT preset name or YAML path, e.g. ml100k (before --set)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RecGOAT config override")
    args = ap.parse_args(argv)
    if device_refused("recgoat_epoch.py", args.device):
        return 2
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    ds, feats = synthetic(args.scale, args.seed, 384, 1280)
    n_train = int((ds.interactions["split"] == "train").sum())
    print(f"synthetic Baby x{args.scale}: {ds.n_users} users, {ds.n_items} items, {len(ds.interactions)} "
          f"interactions ({n_train} train), d={args.dim}, batch {args.batch}, {args.threads} thread(s) "
          f"[{time.perf_counter() - t0:.1f}s]")

    torch.manual_seed(args.seed)
    lg = LightGCN.build(ds, {"embedding_dim": args.dim})
    rss_lg = peak_rss_mb()

    torch.manual_seed(args.seed)
    t1 = time.perf_counter()
    import yaml

    overrides = {}
    if args.preset:
        from recgoat.models.recgoat import load_preset

        overrides = load_preset(args.preset).model_dump(exclude_defaults=True)
    overrides.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    print(f"RecGOAT settings other than the defaults: {overrides or 'none (the paper configuration)'}")
    rg = RecGOAT.build(ds, {"embedding_dim": args.dim, **overrides}, feats)
    prep = time.perf_counter() - t1
    # the two models' epochs alternate, so that drifts in this machine's speed hit both alike
    run_lg = EpochRunner(lg, args.batch, args.seed, device=args.device)
    run_rg = EpochRunner(rg, args.batch, args.seed, device=args.device)
    lg_times, rg_times = [], []
    for _ in range(args.epochs):
        lg_times.append(run_lg())
        rg_times.append(run_rg())

    d, n_i, n_u = args.dim, ds.n_items, ds.n_users
    mode = check_allocations(rg, args.check_batches, args.batch, args.seed, args.device)
    rss = peak_rss_mb()
    if args.device.startswith("cuda"):
        print(f"device {torch.cuda.get_device_name(args.device)}: peak GPU memory allocated "
              f"{torch.cuda.max_memory_allocated(args.device) / 2**20:.0f} MiB (both models)")

    lg_s, rg_s = float(np.mean(lg_times)), float(np.mean(rg_times))
    print(f"{'model':<10}{'s/epoch':>10}   epochs")
    print(f"{'LightGCN':<10}{lg_s:>10.2f}   {', '.join(f'{t:.2f}' for t in lg_times)}")
    print(f"{'RecGOAT':<10}{rg_s:>10.2f}   {', '.join(f'{t:.2f}' for t in rg_times)}")
    ratio = rg_s / lg_s
    pairs = ", ".join(f"{r / lgt:.2f}" for r, lgt in zip(rg_times, lg_times))
    print(f"ratio RecGOAT / LightGCN: {ratio:.2f}x (epoch by epoch: {pairs}; target <= 3x) "
          f"{'OK' if ratio <= 3 else 'OVER'}")
    print(f"RecGOAT graph building (prepare): {prep:.2f}s; summary: {rg.summary}")
    print(f"peak resident memory: {rss:.0f} MiB (with data and LightGCN built: {rss_lg:.0f} MiB; target <= 4096) "
          f"{'OK' if rss <= 4096 else 'OVER'}")
    size, op, shape = mode.largest
    print(f"largest tensor in {args.check_batches} RecGOAT training steps + eval pass: {size:,} elements "
          f"{shape} from {op} (an I×I tensor would hold {n_i * n_i:,}, U×U {n_u * n_u:,}, "
          f"I×d×d {n_i * d * d:,})")
    if mode.violations:
        print(f"VIOLATION: {len(mode.violations)} tensor(s) of forbidden size: {mode.violations[:5]}")
        return 1
    print("no tensor of size I×I, U×U or I×d×d was allocated: OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
