"""Negative-sampling throughput at Amazon Baby size.

    python benchmarks/sampling_speed.py [--samples 5000000]

Target (issue 2): ≥ 1 million samples/s on this machine's CPU; also checks no negative is a positive.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _baby import baby_like
from recgoat.training.sampling import NegativeSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5_000_000)
    args = ap.parse_args()
    ds = baby_like()
    sampler = NegativeSampler(ds.csr("train"))
    rng = np.random.default_rng(0)
    users = rng.integers(0, ds.n_users, args.samples)
    sampler.sample_negatives(users[:1000], rng)
    t = time.perf_counter()
    neg = sampler.sample_negatives(users, rng)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    n_batches = sum(1 for _ in sampler.epoch(2048, rng))
    epoch_s = time.perf_counter() - t
    print(f"negatives drawn      {args.samples:,} in {dt:.3f} s = {args.samples / dt / 1e6:.2f} M samples/s")
    print(f"positives among them {int(sampler.is_positive(users, neg).sum())}")
    print(f"one epoch of batches {n_batches} batches of 2048 in {epoch_s:.3f} s")


if __name__ == "__main__":
    main()
