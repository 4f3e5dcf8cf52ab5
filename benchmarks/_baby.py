"""Synthetic data of Amazon Baby's shape (MMRec protocol): 19,445 users, 7,050 items, 160,792 interactions.

Popularity follows a Zipf-like law so degree skew resembles real data; every user has ≥ 5 interactions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recgoat.datasets import Dataset
from recgoat.datasets.preprocess import assign_split

USERS, ITEMS, INTERACTIONS = 19_445, 7_050, 160_792


def baby_like(seed: int = 0, scale: float = 1.0) -> Dataset:
    rng = np.random.default_rng(seed)
    n_u, n_i, n = int(USERS * scale), int(ITEMS * scale), int(INTERACTIONS * scale)
    base = np.repeat(np.arange(n_u), 5)  # 5-core on users
    extra = rng.integers(0, n_u, n - len(base))
    users = np.concatenate([base, extra])
    pop = 1.0 / np.arange(1, n_i + 1) ** 0.8
    items = rng.choice(n_i, size=len(users), p=pop / pop.sum())
    df = pd.DataFrame({"user": users, "item": items}).drop_duplicates()
    # top up duplicates with fresh random pairs so the count matches Baby's
    while len(df) < n:
        more = pd.DataFrame({"user": rng.integers(0, n_u, n - len(df)), "item": rng.integers(0, n_i, n - len(df))})
        df = pd.concat([df, more]).drop_duplicates()
    df = df.sort_values(["user", "item"]).reset_index(drop=True)
    df["split"] = assign_split(df, "random", seed=seed)
    return Dataset("baby-synthetic", df, np.arange(n_u).astype(str).astype(object),
                   np.arange(n_i).astype(str).astype(object))
