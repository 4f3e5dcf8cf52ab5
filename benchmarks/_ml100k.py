"""Command-line options shared by the ml100k-mm training benchmarks (same data, features and trainer)."""
from __future__ import annotations

import argparse

# where `recgoat encode all ml100k-mm --out features/ml100k` writes (docs/benchmarks.md)
DEFAULT_FEATURES = "features/ml100k"


def add_training_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--dataset", default="ml100k-mm")
    ap.add_argument("--features", default=DEFAULT_FEATURES, help="feature folder from `recgoat encode all`")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2026])
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
