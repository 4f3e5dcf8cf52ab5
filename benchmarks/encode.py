"""Benchmark of the feature stage: items/s for text and images, and the wall time to encode everything.

Why: encoding is the slowest offline step; this measures it on the real ml100k-mm data (all 1,682 movies
without k-core filtering, their 1,663 posters, 943 users) with the packaged offline models, from scratch
in a fresh folder. Run: ``python benchmarks/encode.py [--dataset ml100k-mm] [--limit N] [--out DIR]``;
``--limit N`` encodes only the first N items and the first N users (their training interactions with
those items) for a quick check: its timings are not the benchmark's.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from recgoat.datasets import Dataset, PrepareConfig, load  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, load_features  # noqa: E402


def first(ds: Dataset, n: int) -> Dataset:
    """The first ``n`` items and ``n`` users (internal ids) and the interactions between them."""
    inter = ds.interactions
    inter = inter[(inter["user"] < n) & (inter["item"] < n)].reset_index(drop=True)
    items = ds.items.iloc[:n].reset_index(drop=True) if ds.items is not None else None
    return Dataset(name=f"{ds.name}-first{n}", interactions=inter, user_ids=ds.user_ids[:n],
                   item_ids=ds.item_ids[:n], items=items, text_fields=list(ds.text_fields), info=dict(ds.info))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml100k-mm")
    ap.add_argument("--out", type=Path, default=None, help="feature folder (default: a fresh temporary one)")
    ap.add_argument("--k-core", type=int, default=0, help="k-core filter before encoding (0: every item)")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    ap.add_argument("--limit", type=int, default=None, metavar="N",
                    help="encode only the first N items and N users (a quick check, not the benchmark)")
    args = ap.parse_args()
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be a positive number of items/users")

    import torch

    ds = load(args.dataset, PrepareConfig(k_core=args.k_core, split="random", seed=2026))
    if args.limit is not None:
        ds = first(ds, args.limit)
    n_img = int(ds.items["image"].notna().sum()) if ds.has_images else 0
    print(f"dataset {ds.name}: {ds.n_items} items, {n_img} with an image path, {ds.n_users} users; "
          f"torch threads {torch.get_num_threads()}")
    out = args.out or Path(tempfile.mkdtemp(prefix="recgoat-encode-"))
    cfg = FeatureConfig()
    total0 = time.perf_counter()
    rows = []
    for kind, n, what in (("text", ds.n_items, "items"), ("image", ds.n_items, "items"),
                          ("users", ds.n_users, "users")):
        t0 = time.perf_counter()
        encode_all(ds, out, cfg, which=(kind,), progress=args.progress, skip_absent=True)  # timed apiece
        dt = time.perf_counter() - t0
        rows.append((kind, n, what, dt))
        print(f"{kind:6s} {n:6d} {what:5s} {dt:8.1f} s  {n / dt:8.1f} {what}/s  (model load included)")
    total = time.perf_counter() - total0
    f = load_features(ds, out)
    print(f"total wall time {total:.1f} s for text {f.text.shape}, image {None if f.image is None else f.image.shape} "
          f"({int(f.image_mask.sum()) if f.image_mask is not None else 0} real images), profiles {f.profile.shape}")
    t0 = time.perf_counter()
    encode_all(ds, out, cfg, progress=False)
    print(f"re-run with nothing changed: {time.perf_counter() - t0:.2f} s (all reused)")
    print(f"features in {out}")


if __name__ == "__main__":
    main()
