"""RecGOAT ablations of METHOD.md §7 on ml100k-mm, printed as a markdown table.

Each row is RecGOAT with one entry of :data:`recgoat.models.recgoat.ABLATIONS` applied on top of the base
setting (the defaults, a preset given by ``--preset``, and ``--set key=value`` overrides), trained by the
shared trainer (Adam, early stopping on validation Recall@20) for every seed; validation and test
metrics are averaged over the seeds. Selection never looks at test metrics: the table reports them for
the checkpoint that was best on validation.

Rows: id_only (LightGCN), concat / sum (naive fusion without alignment), no_alignment (the learned
simplex fusion without alignment), cmcl_only, oat_only, full,
text_only, image_only, no_profile, no_item_graph.

Run: ``python benchmarks/recgoat_ablations.py --seeds 2026`` (``--only full,id_only`` for a subset).
``--gamma-grid`` runs the γ_t × γ_v sensitivity grid instead (:func:`recgoat.models.recgoat.gamma_grid`:
fixed simplex weights, γ_id = 1 − γ_t − γ_v), over ``--gamma-t`` × ``--gamma-v`` (default 0.1–0.4 each).
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
from recgoat.models.recgoat import ABLATIONS, RecGOAT, gamma_grid, load_preset  # noqa: E402
from recgoat.training.trainer import TrainConfig  # noqa: E402

COLS = ("valid recall@20", "valid ndcg@20", "test recall@20", "test ndcg@20")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_args(ap)
    ap.add_argument("--preset", default=None, help="a RecGOAT preset name or YAML path as the base setting")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="base setting override")
    ap.add_argument("--only", default=",".join(ABLATIONS), help="comma-separated ablation names")
    ap.add_argument("--gamma-grid", action="store_true", help="run the γ_t × γ_v grid instead of the ablations")
    ap.add_argument("--gamma-t", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    ap.add_argument("--gamma-v", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.gamma_grid:
        variants = {f"γ_t {g['gamma_t']:g}, γ_v {g['gamma_v']:g}": g
                    for g in gamma_grid(tuple(args.gamma_t), tuple(args.gamma_v))}
    else:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in ABLATIONS]
        if unknown:
            ap.error(f"unknown ablations {unknown}; known: {', '.join(ABLATIONS)}")
        variants = {n: ABLATIONS[n] for n in names}
    base = load_preset(args.preset).model_dump() if args.preset else {}
    base.update({"embedding_dim": args.dim})
    base.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})

    ds = load(args.dataset)
    feats = load_features(ds, args.features)
    table: dict[str, list[dict[str, float]]] = {}
    for name, override in variants.items():
        for seed in args.seeds:
            tc = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, patience=args.patience,
                             seed=seed, progress=False, num_threads=args.threads)
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            model = RecGOAT.build(ds, {**base, **override}, feats)
            res = model.fit(ds, tc)
            row = {"valid recall@20": res["valid"]["recall@20"], "valid ndcg@20": res["valid"]["ndcg@20"],
                   "test recall@20": res["test"]["recall@20"], "test ndcg@20": res["test"]["ndcg@20"],
                   "best_epoch": res["best_epoch"], "s/epoch": res["seconds_per_epoch"]}
            table.setdefault(name, []).append(row)
            print(name, seed, {k: round(v, 4) for k, v in row.items()}, f"[{time.perf_counter() - t0:.0f}s]",
                  flush=True)

    print(f"\n{args.dataset}, seeds {args.seeds}, lr {args.lr}, patience {args.patience}, base {base}\n")
    print(f"| {'γ' if args.gamma_grid else 'ablation'} | " + " | ".join(COLS) + " | best epoch | s/epoch |")
    print("|---|" + "---:|" * (len(COLS) + 2))
    for name, rows in table.items():
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(f"| {name} | " + " | ".join(f"{mean[c]:.4f}" for c in COLS)
              + f" | {mean['best_epoch']:.0f} | {mean['s/epoch']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
