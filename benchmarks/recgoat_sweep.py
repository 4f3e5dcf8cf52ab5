"""Validation-only hyper-parameter search for RecGOAT on ml100k-mm (issue 4's model selection).

Each ``--try`` is a YAML mapping of RecGOAT settings (plus optional ``lr`` and ``min_epochs``); every point is trained by the
shared trainer with early stopping on validation Recall@20, and the table shows **validation** metrics
only: test metrics are deliberately not printed, so that nothing is chosen on them (they are written
to each run's folder under ``--run-root`` if one is given, for the final report of the chosen point).

Run (the sweep of docs/benchmarks.md, one thread per process; split the list over two processes on two
cores)::

    python benchmarks/recgoat_sweep.py --try '{model: lightgcn}' --try '{}' --try '{view_dropout: 0.5}'
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from _ml100k import add_training_args  # noqa: E402
from recgoat.datasets import load  # noqa: E402
from recgoat.features import load_features  # noqa: E402
from recgoat.models.lightgcn import LightGCN  # noqa: E402
from recgoat.models.recgoat import RecGOAT  # noqa: E402
from recgoat.training.trainer import TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_args(ap)
    ap.add_argument("--try", dest="points", action="append", default=[], metavar="YAML",
                    help="one setting, e.g. '{lambda_cl: 0.0, view_dropout: 0.3}' or '{model: lightgcn}'")
    ap.add_argument("--run-root", default=None, help="keep each run's folder (log, result with test) under here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load(args.dataset)
    feats = load_features(ds, args.features)
    rows = []
    for spec in args.points or ["{}"]:
        cfg = yaml.safe_load(spec) or {}
        lr = float(cfg.pop("lr", args.lr))
        min_epochs = int(cfg.pop("min_epochs", 0))
        model_name = cfg.pop("model", "recgoat")
        for seed in args.seeds:
            torch.manual_seed(seed)
            if model_name == "lightgcn":
                model = LightGCN.build(ds, {"embedding_dim": args.dim, **cfg})
            else:
                model = RecGOAT.build(ds, {"embedding_dim": args.dim, **cfg}, feats)
            tc = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=lr, patience=args.patience, seed=seed,
                             min_epochs=min_epochs, progress=False, num_threads=args.threads)
            run_dir = None
            if args.run_root:
                run_dir = f"{args.run_root}/sweep-{os.getpid()}-{len(rows)}"
            t0 = time.perf_counter()
            res = model.fit(ds, tc, run_dir=run_dir)
            rows.append({"setting": f"{model_name} {spec}", "lr": lr, "seed": seed, "best_epoch": res["best_epoch"],
                         "valid recall@20": res["valid"]["recall@20"], "valid ndcg@20": res["valid"]["ndcg@20"],
                         "minutes": (time.perf_counter() - t0) / 60})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    print(f"\n{args.dataset}, batch {args.batch}, d {args.dim}, patience {args.patience} — VALIDATION only")
    print("| setting | lr | seed | best epoch | valid R@20 | valid N@20 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['lr']:g} | {r['seed']} | {r['best_epoch']} | {r['valid recall@20']:.4f} | "
              f"{r['valid ndcg@20']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
