"""RecGOAT vs LightGCN on ml100k-mm with the shared trainer (selection on validation Recall@20 only).

Both models train with the same TrainConfig (Adam, batch, patience, seed) and are tested once at their
best-validation epoch. RecGOAT reads the encoded features from ``--features`` (``recgoat encode all``);
extra RecGOAT settings are given as ``--set key=value`` (YAML values), e.g. ``--set lambda_ot=0``.

Run: ``python benchmarks/recgoat_vs_lightgcn.py --seeds 2026 2027 2028`` (lr 5e-3, patience 20: the LightGCN reference)
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from _ml100k import add_training_args  # noqa: E402
from recgoat.datasets import load  # noqa: E402
from recgoat.features import load_features  # noqa: E402
from recgoat.models.lightgcn import LightGCN  # noqa: E402
from recgoat.models.recgoat import RecGOAT  # noqa: E402
from recgoat.training.trainer import TrainConfig  # noqa: E402

METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_args(ap)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RecGOAT config override")
    ap.add_argument("--models", nargs="+", default=["lightgcn", "recgoat"])
    ap.add_argument("--preset", default=None, help="RecGOAT preset name or YAML path (before --set overrides)")
    ap.add_argument("--run-root", default=None, help="keep each run's folder (log.jsonl per epoch) under here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ds = load(args.dataset)
    feats = load_features(ds, args.features)
    overrides = {}
    if args.preset:
        from recgoat.models.recgoat import load_preset

        overrides = load_preset(args.preset).model_dump(exclude_defaults=True)
    overrides.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    rows = []
    for seed in args.seeds:
        tc = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, patience=args.patience, seed=seed,
                         progress=False, num_threads=args.threads)
        for name in args.models:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            if name == "lightgcn":
                model = LightGCN.build(ds, {"embedding_dim": args.dim})
            else:
                model = RecGOAT.build(ds, {"embedding_dim": args.dim, **overrides}, feats)
            run_dir = None
            if args.run_root:
                run_dir = f"{args.run_root}/{name}-{seed}-{os.getpid()}-{time.strftime('%H%M%S')}"
            res = model.fit(ds, tc, run_dir=run_dir)
            rows.append({"model": name, "seed": seed, "best_epoch": res["best_epoch"], "epochs": res["epochs_run"],
                         "s/epoch": res["seconds_per_epoch"], "wall": time.perf_counter() - t0,
                         **{f"valid {m}": res["valid"][m] for m in METRICS[:2]},
                         **{f"test {m}": res["test"][m] for m in METRICS}})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
            if name == "recgoat":
                print("  summary:", model.summary, flush=True)

    cols = ["model", "seed", "best_epoch", "epochs", "s/epoch", "valid recall@20", "valid ndcg@20",
            *[f"test {m}" for m in METRICS]]
    print(f"\n{args.dataset}, lr {args.lr}, batch {args.batch}, d {args.dim}, patience {args.patience}, "
          f"RecGOAT overrides {overrides or '{}'}")
    print(" | ".join(f"{c:>15}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>15.4f}" if isinstance(r[c], float) else f"{r[c]:>15}" for c in cols))
    by = {m: np.mean([[r[f"test {k}"] for k in METRICS[:2]] for r in rows if r["model"] == m], axis=0)
          for m in args.models}
    if "lightgcn" in by and "recgoat" in by:
        gain = (by["recgoat"] / by["lightgcn"] - 1) * 100
        print(f"RecGOAT vs LightGCN (mean over seeds): test recall@20 {gain[0]:+.1f}%, ndcg@20 {gain[1]:+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
