"""Peers on full ml100k-mm (METHOD.md §8): test Recall@20 / NDCG@20 of LightGCN, VBPR, FREEDOM, LGMRec, BM3.

Why: the peers must be compared on exactly the harness RecGOAT uses — the same split, features, negative
sampler, trainer (early stopping on validation Recall@20) and full-ranking evaluator — so their numbers
and RecGOAT's are comparable. Each model is trained from scratch per seed; test metrics are those of the
best-validation epoch. Features (text and/or image, whichever exist) come from an encoded folder.

Run: ``python benchmarks/peers_ml100k.py [--seeds 2026 2027] [--epochs 200] [--patience 10]
[--models lightgcn vbpr freedom lgmrec bm3] [--features features/ml100k] [--threads 1]
[--set bm3.reg_weight=0.01]``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from recgoat.datasets import load  # noqa: E402
from recgoat.features import load_features  # noqa: E402
from recgoat.io import write_json  # noqa: E402
from recgoat.models import get_model_class  # noqa: E402
from recgoat.training.trainer import TrainConfig  # noqa: E402

DEFAULT_MODELS = ["lightgcn", "vbpr", "freedom", "lgmrec", "bm3"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml100k-mm")
    ap.add_argument("--features", type=Path, default=Path("features/ml100k"))
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[2026])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="MODEL.KEY=VALUE",
                    help="override a model hyper-parameter, e.g. bm3.reg_weight=0.01 (JSON value)")
    ap.add_argument("--out", type=Path, default=None, help="write every run's result.json under this folder")
    ap.add_argument("--json", type=Path, default=None, help="write the summary table as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ds = load(args.dataset)
    feats = load_features(ds, args.features)
    present = [m for m in ("text", "image") if getattr(feats, m) is not None]
    print(f"{ds.name}: {ds.n_users} users, {ds.n_items} items, {len(ds.interactions)} interactions; "
          f"features: {', '.join(f'{m} {getattr(feats, m).shape[1]}-d' for m in present)}")

    overrides: dict[str, dict] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        model_name, _, param = key.partition(".")
        if not value or not param:
            raise SystemExit(f"--set expects MODEL.KEY=VALUE, got {item!r}")
        overrides.setdefault(model_name, {})[param] = json.loads(value)

    rows = []
    for name in args.models:
        cls = get_model_class(name)
        model_cfg = cls.Config(**overrides.get(name, {}))
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = cls.build(ds, model_cfg, feats)
            cfg = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
                              lr=args.lr, seed=seed, progress=False)
            run_dir = args.out / f"{name}-s{seed}" if args.out else None
            t0 = time.perf_counter()
            res = model.fit(ds, cfg, run_dir=run_dir)
            row = {"model": name, "seed": seed, "overrides": overrides.get(name, {}), "recall@20": res["test"]["recall@20"],
                   "ndcg@20": res["test"]["ndcg@20"], "recall@10": res["test"]["recall@10"],
                   "ndcg@10": res["test"]["ndcg@10"], "valid_recall@20": res["valid"]["recall@20"],
                   "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"],
                   "seconds_per_epoch": res["seconds_per_epoch"], "wall_seconds": time.perf_counter() - t0}
            rows.append(row)
            print(f"{name:9s} seed {seed}: test R@20 {row['recall@20']:.4f}  N@20 {row['ndcg@20']:.4f}  "
                  f"(valid R@20 {row['valid_recall@20']:.4f}, best epoch {row['best_epoch']}/"
                  f"{row['epochs_run']}, {row['seconds_per_epoch']:.2f} s/epoch)", flush=True)

    print("\nmodel      R@20 (mean ± sd)      N@20 (mean ± sd)      seeds")
    for name in args.models:
        r = np.array([x["recall@20"] for x in rows if x["model"] == name])
        n = np.array([x["ndcg@20"] for x in rows if x["model"] == name])
        print(f"{name:9s}  {r.mean():.4f} ± {r.std():.4f}     {n.mean():.4f} ± {n.std():.4f}     {len(r)}")
    if args.json:
        write_json(args.json, {"features": present, "rows": rows})  # atomically: a kill leaves no cut-off file


if __name__ == "__main__":
    main()
