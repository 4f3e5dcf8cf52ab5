"""Where a RecGOAT training step's time goes, by switching components off one at a time.

Synthetic Amazon-Baby shape (``_cost.synthetic``, as ``recgoat_epoch.py``), batch 2048, d 64. Every variant trains on the
same 8 batches; the variants take turns batch by batch, three rounds, so that this machine's speed
drifts hit all of them alike; the median step time of each is printed with its ratio to LightGCN's.
The difference between two rows is the cost of what separates them (forward + backward + Adam).

Run: ``python benchmarks/recgoat_step_breakdown.py --threads 1``
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recgoat.models.lightgcn import LightGCN
from recgoat.models.recgoat import RecGOAT
from recgoat.training.sampling import NegativeSampler
from _cost import synthetic, train_step

VARIANTS = {
    "RecGOAT (paper defaults)": {},
    "  first GAT layer unfused (as before aed9a57)": {"_unfused": True},
    "  without CMCL": {"lambda_cl": 0.0},
    "  without CMCL and OAT": {"lambda_cl": 0.0, "lambda_ot": 0.0},
    "  … and without GAT layers": {"lambda_cl": 0.0, "lambda_ot": 0.0, "gat_layers": 0},
    "  … and without rating attention": {"lambda_cl": 0.0, "lambda_ot": 0.0, "gat_layers": 0,
                                         "rating_attention": False},
    "  ID only (no views)": {"modalities": [], "use_profile": False, "rating_attention": False,
                             "lambda_cl": 0.0, "lambda_ot": 0.0},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds, feats = synthetic(1.0, 2026, 384, 1280)
    models = {"LightGCN": LightGCN.build(ds, {"embedding_dim": 64})}
    for name, cfg in VARIANTS.items():
        torch.manual_seed(0)
        unfused = cfg.pop("_unfused", False)
        models[name] = RecGOAT.build(ds, {"embedding_dim": 64, **cfg}, feats)
        if unfused:  # projection, then the first GAT layer's own lin: the computation before the fusion
            for b in [*models[name].branches.values(), models[name].profile_branch]:
                b.fuse_first_layer = False
    it = NegativeSampler(models["LightGCN"]._train_csr).epoch(2048, np.random.default_rng(0))
    batches = [next(it) for _ in range(8)]
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.train()
    for rnd in range(args.rounds):
        for i, (u, p, n) in enumerate(batches):
            for k, m in models.items():
                t = time.perf_counter()
                train_step(m, opts[k], u, p, n)
                if rnd > 0 or i >= 2:  # the first steps warm caches up
                    times[k].append(time.perf_counter() - t)
    base = float(np.median(times["LightGCN"]))
    print(f"median ms per training step, {args.threads} thread(s), batch 2048, d 64")
    for k, v in times.items():
        print(f"{k:<40}{np.median(v) * 1000:8.1f} ms  {np.median(v) / base:5.2f}×")


if __name__ == "__main__":
    main()
