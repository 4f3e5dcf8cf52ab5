"""Test metrics of finished benchmark cells under both test-time masks.

recgoat masks training *and* validation items when it scores the test split; MMRec masks training items
only, so a validation item stays a candidate that can never be a hit and pushes test items down. This
script reloads each cell's best model and scores its test split both ways, to show how far test figures
under the two conventions differ (numbers published under MMRec's protocol are comparable with the second).

Run: ``python benchmarks/test_mask.py OUT [OUT ...]`` with the ``--out`` folders of finished
``recgoat benchmark`` runs (their cells' datasets are loaded by name, split as the benchmark split them). One row per
dataset and model *as the benchmark labels them* (``runs/<dataset label>/<model label>/seed*``): each grid point,
each labelled entry (``recgoat`` and ``recgoat-ml100k``) and each ``max_users`` subset has its own row.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from recgoat.evaluation.evaluator import Evaluator  # noqa: E402
from recgoat.models.base import Recommender  # noqa: E402
from recgoat.training.run import read_run_record  # noqa: E402

METRICS = ("recall@20", "ndcg@20")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Test metrics of finished benchmark cells with training and validation "
                                             "items masked (recgoat) and with training items only (MMRec).")
    ap.add_argument("outs", nargs="+", type=Path, help="--out folders of finished `recgoat benchmark` runs")
    args = ap.parse_args(argv)
    table: dict[tuple[str, str], dict[str, list[float]]] = {}
    datasets = {}
    for out in args.outs:
        for cell in sorted(out.glob("runs/*/*/seed*")):
            if not (cell / "best").is_dir():
                continue
            meta = json.loads((cell / "cell.json").read_text())
            record = read_run_record(cell)
            trainer = record.trainer
            key = json.dumps(meta["data"], sort_keys=True)  # cells of one dataset and split share it
            if key not in datasets:
                datasets[key] = record.load_dataset()
            ds = datasets[key]
            model = Recommender.load(cell / "best")
            # the labels of the cell's folders, not cell.json's dataset name and model name: grid points, labelled
            # entries of one model and max_users subsets of one dataset share those, and were averaged into one row
            row = table.setdefault((cell.parent.parent.name, cell.parent.name), {})
            for mask in ("train+valid", "train"):
                res = Evaluator.for_split(ds, "test", trainer.ks, trainer.eval_chunk_size, trainer.eval_selection,
                                          test_mask=mask).evaluate(model).means
                for m in METRICS:
                    row.setdefault(f"{m} {mask}", []).append(res[m])
    print("| dataset | model | seeds | " + " | ".join(f"{m}: train+valid / train only" for m in METRICS) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for (name, model), row in table.items():
        cells = []
        for m in METRICS:
            a, b = np.mean(row[f"{m} train+valid"]), np.mean(row[f"{m} train"])
            cells.append(f"{a:.4f} / {b:.4f} ({(a / b - 1) * 100:+.1f}%)")
        print(f"| {name} | {model} | {len(row[f'{METRICS[0]} train'])} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
