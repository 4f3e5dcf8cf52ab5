"""LightGCN training time per epoch at Amazon Baby size (synthetic, d=64, batch 2048, 3 layers).

    python benchmarks/lightgcn_epoch.py [--threads 2] [--epochs 3]

Target (issue 2): ≤ 3 s per epoch on 2 cores.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _baby import baby_like
from recgoat.models import LightGCN
from recgoat.training.sampling import NegativeSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = baby_like()
    torch.manual_seed(0)
    model = LightGCN.build(ds, {"embedding_dim": args.dim})
    sampler = NegativeSampler(ds.csr("train"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for epoch in range(args.epochs):
        rng = np.random.default_rng(epoch)
        model.train()
        t = time.perf_counter()
        for u, p, n in sampler.epoch(2048, rng):
            loss = model.loss(u, p, n)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
        print(f"epoch {epoch}: {times[-1]:.2f} s  loss {float(loss.detach()):.4f}")
    print(f"LightGCN at Baby size ({ds.n_users:,} users, {ds.n_items:,} items, "
          f"{ds.csr('train').nnz:,} training edges), d={args.dim}, batch 2048, {args.threads} threads: "
          f"median {np.median(times):.2f} s per epoch")


if __name__ == "__main__":
    main()
