"""Small RecGOAT problems for the RecGOAT test modules: random features for a subset of ml-latest-small, and a
d = 8 model in float32 initialised from seed 0 (imported by those modules, as training_helpers is)."""
from __future__ import annotations

import numpy as np
import torch

from recgoat.features.store import Features
from recgoat.models.recgoat import RecGOAT, RecGOATConfig


def random_features(ds, seed: int, text: int = 0, image: int = 0, profile: int = 0,
                    missing_images: float | None = None) -> Features:
    """Standard-normal features of the given widths (0: none of that kind); ``missing_images``: that share of
    items has no image (a zero row and ``image_mask`` False), drawn first."""
    rng = np.random.default_rng(seed)
    mask = rng.random(ds.n_items) > missing_images if missing_images is not None else None
    kinds = {}
    if text:
        kinds["text"] = rng.normal(size=(ds.n_items, text)).astype(np.float32)
    if image:
        kinds["image"] = rng.normal(size=(ds.n_items, image)).astype(np.float32)
        if mask is not None:
            kinds["image"] = kinds["image"] * mask[:, None]
            kinds["image_mask"] = mask
    if profile:
        kinds["profile"] = rng.normal(size=(ds.n_users, profile)).astype(np.float32)
    return Features(**kinds)


def build(ds, feats: Features, **cfg) -> RecGOAT:
    """A RecGOAT with d = 8 and float32 projections (the same on every CPU), weights from seed 0."""
    torch.manual_seed(0)
    return RecGOAT.build(ds, {"embedding_dim": 8, "projection_dtype": "float32", **cfg}, feats)


PRESETS = ("baby", "sports", "electronics", "ml100k")  # the packaged RecGOAT presets


def small_problem(ml_small):
    """30 users of ml-latest-small with standard-normal text (10-d), image (9-d) and profile (10-d) features."""
    from conftest import subset_users

    ds = subset_users(ml_small, 30)
    return ds, random_features(ds, 3, text=10, image=9, profile=10)


def full_config(**changes) -> dict:
    """A d = 8 float32 config as a saved model records it, every field given (inert settings are then noted,
    not refused), with ``changes``."""
    return {**RecGOATConfig(embedding_dim=8, projection_dtype="float32").model_dump(), **changes}
