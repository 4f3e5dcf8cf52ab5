"""Where a RecGOAT training step's time goes on a device, by torch's profiler (operators, kernel launches).

Synthetic Amazon-Baby shape (``_cost.synthetic``, as ``recgoat_epoch.py``), paper configuration, batch 2048,
d 64. Five warm-up steps, ``--steps`` timed steps (ms per step, to the device's end), then ``--profiled`` steps
under ``torch.profiler``: the operators by own host time and, on a GPU, by device time, and the number of kernel
launches per step. On a GPU the gap between the host's time and the device's says how much of a step is
launching kernels rather than running them.

Run: ``python benchmarks/recgoat_step_profile.py --device cuda`` (or ``--device cpu --threads 1``; ``--shapes``
groups the operators by input shape: which product is which)
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from recgoat.models.recgoat import RecGOAT
from _cost import device_refused, endless_batches, synthetic, train_step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--profiled", type=int, default=5)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the Baby sizes (users, items, interactions)")
    ap.add_argument("--shapes", action="store_true", help="group the operators by their input shapes too")
    args = ap.parse_args(argv)
    if device_refused("recgoat_step_profile.py", args.device):
        return 2
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    ds, feats = synthetic(args.scale, 2026, 384, 1280)
    torch.manual_seed(0)
    model = RecGOAT.build(ds, {"embedding_dim": 64}, feats).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    it = endless_batches(model._train_csr, 2048, 0)  # a small --scale has a batch or two an epoch
    batches = [tuple(t.to(dev) for t in next(it)) for _ in range(5 + args.steps + args.profiled)]
    model.train()

    def step(b) -> None:
        train_step(model, opt, *b)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize(dev)

    for b in batches[:5]:
        step(b)
    sync()
    t = time.perf_counter()
    for b in batches[5:5 + args.steps]:
        step(b)
    sync()
    print(f"{args.device}: {(time.perf_counter() - t) * 1000 / args.steps:.1f} ms per step (mean of {args.steps} "
          f"steps after 5 warm-up steps)")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities, record_shapes=args.shapes) as prof:
        for b in batches[5 + args.steps:]:
            step(b)
        sync()
    ka = prof.key_averages(group_by_input_shape=args.shapes)
    launches = sum(e.count for e in ka if e.key == "cudaLaunchKernel")
    if gpu:
        # the kernels' own events: an operator's device time is its kernels', counted again
        device_ms = sum(e.self_device_time_total for e in prof.events()
                        if e.device_type == torch.autograd.DeviceType.CUDA) / 1000 / args.profiled
        print(f"profiled: {launches / args.profiled:.0f} kernel launches and {device_ms:.1f} ms of device time per step")
    print(ka.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=50,
                   max_shapes_column_width=90))
    if gpu:
        print(ka.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=50))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
