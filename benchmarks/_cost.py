"""Pieces the training-cost benchmarks share (``recgoat_epoch.py``, ``recgoat_step_breakdown.py``,
``recgoat_step_profile.py``, ``peers_epoch.py``): the synthetic Amazon-Baby-shaped problem with RecGOAT's side
features, the trainer's epoch loop and its mini-batches, peak resident memory, and the ``TorchDispatchMode`` that
watches every tensor a training step makes.
"""
from __future__ import annotations

import itertools
import resource
import sys
import time

import numpy as np
import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from recgoat.datasets.dataset import Dataset
from recgoat.errors import ConfigError
from recgoat.features.device import check_device
from recgoat.features.store import Features
from recgoat.training.sampling import NegativeSampler

BABY = {"users": 19_445, "items": 7_050, "interactions": 160_792}


def device_refused(prog: str, device: str) -> bool:
    """True, after one line on stderr (``<prog>: error: …``), when ``--device`` names a device torch cannot use
    here (a typo, no CUDA GPU, an index past the GPUs): the script then exits with 2 before it builds anything,
    rather than with torch's traceback from the first tensor moved."""
    try:
        check_device(device, name="--device", purpose="train on", fix="--device cpu")
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return True
    return False


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def synthetic(scale: float, seed: int, text_dim: int, image_dim: int) -> tuple[Dataset, Features]:
    """Power-law item popularity, every user with ≥ 3 interactions, random 8:1:1 split, clustered features."""
    rng = np.random.default_rng(seed)
    n_u, n_i = max(int(BABY["users"] * scale), 10), max(int(BABY["items"] * scale), 10)
    n = int(BABY["interactions"] * scale)
    pop = rng.pareto(1.2, n_i) + 1.0
    pop /= pop.sum()
    users = np.concatenate([np.repeat(np.arange(n_u), 3), rng.integers(0, n_u, int(n * 1.15))])
    items = rng.choice(n_i, len(users), p=pop)
    df = pd.DataFrame({"user": users, "item": items}).drop_duplicates().iloc[:n].reset_index(drop=True)
    df["rating"] = rng.integers(1, 6, len(df)).astype(np.float32)
    df["split"] = pd.Categorical(rng.choice(["train", "valid", "test"], len(df), p=[0.8, 0.1, 0.1]),
                                 categories=["train", "valid", "test"])
    ds = Dataset("synthetic-baby", df, np.arange(n_u).astype(str), np.arange(n_i).astype(str))
    centers = rng.normal(size=(50, max(text_dim, image_dim))).astype(np.float32)
    cl = rng.integers(0, 50, n_i)

    def feats(dim: int, rows: np.ndarray) -> np.ndarray:
        return (centers[rows, :dim] + 0.5 * rng.normal(size=(len(rows), dim))).astype(np.float32)

    mask = rng.random(n_i) > 0.1
    image = feats(image_dim, cl) * mask[:, None]
    return ds, Features(text=feats(text_dim, cl), image=image, image_mask=mask,
                        profile=feats(text_dim, rng.integers(0, 50, n_u)))


class LargestTensors(TorchDispatchMode):
    """Records the largest tensor any operator returns, and every result of a forbidden shape."""

    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.largest = (0, "", ())
        self.violations: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            size = t.numel() if t.layout == torch.strided else int(t._nnz())
            if size > self.largest[0]:
                self.largest = (size, str(func), tuple(t.shape))
            if self.forbidden(tuple(t.shape)) and t.layout == torch.strided:
                self.violations.append((str(func), tuple(t.shape)))
        return out

    def forbidden(self, shape: tuple) -> bool:
        """Two axes of length I (or U, or U+I: a dense adjacency), or I (or U) together with two axes of d."""
        i, u, d = self.n_items, self.n_users, self.dim
        count = {n: sum(1 for s in shape if s == n) for n in (i, u, u + i, d)}
        return (count[i] >= 2 or count[u] >= 2 or count[u + i] >= 2
                or ((count[i] >= 1 or count[u] >= 1) and count[d] >= 2))


def train_step(model, opt, users, pos, neg):
    """One step as the shared trainer takes it: the model's loss on a batch of BPR triples, backward, the
    optimiser's step. Returns the loss."""
    loss = model.loss(users, pos, neg)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


class EpochRunner:
    """The shared trainer's epoch (NegativeSampler + Adam), one per call, timed as the trainer times it: from
    the model's ``on_epoch_start`` hook (FREEDOM resamples its pruned graph there, LATTICE re-chooses its
    learned neighbours), which is training time, to the last optimiser step."""

    def __init__(self, model, batch: int, seed: int, lr: float = 1e-3, device: str = "cpu"):
        self.model, self.batch, self.seed = model.to(device), batch, seed
        self.device = torch.device(device)
        self.sampler = NegativeSampler(model._train_csr)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.epoch = 0

    def __call__(self) -> float:
        rng = np.random.default_rng([self.seed, self.epoch])
        torch.manual_seed(self.seed + self.epoch)
        self.model.train()
        t0 = time.perf_counter()
        self.model.on_epoch_start(self.epoch, rng)
        for u, p, n in self.sampler.epoch(self.batch, rng):
            if self.device.type != "cpu":  # as the trainer: batches drawn on the CPU, moved
                u, p, n = (t.to(self.device, non_blocking=True) for t in (u, p, n))
            train_step(self.model, self.opt, u, p, n)
        if self.device.type == "cuda":  # kernels run asynchronously: the epoch ends when the GPU is done
            torch.cuda.synchronize(self.device)
        self.epoch += 1
        return time.perf_counter() - t0


def endless_batches(train_csr, batch: int, seed: int):
    """The trainer's mini-batches (``NegativeSampler``) epoch after epoch, as many as the caller takes: a tiny problem
    has a batch or two an epoch, fewer than a measurement needs. Epoch 0 draws from ``default_rng(seed)``, epoch e
    from ``default_rng([seed, e])``."""
    sampler = NegativeSampler(train_csr)
    yield from sampler.epoch(batch, np.random.default_rng(seed))
    for epoch in itertools.count(1):
        yield from sampler.epoch(batch, np.random.default_rng([seed, epoch]))


def check_allocations(model, batches: int, batch: int, seed: int, device: str = "cpu") -> LargestTensors:
    """``batches`` training steps (forward, backward, Adam) and an evaluation forward pass under
    :class:`LargestTensors`; more steps than an epoch has go on into further epochs (a tiny problem has one
    or two batches)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mode = LargestTensors(model.n_users, model.n_items, getattr(model.config, "embedding_dim", 64))
    it = endless_batches(model._train_csr, batch, seed)
    with mode:
        for _ in range(batches):
            train_step(model, opt, *(t.to(device) for t in next(it)))
        model.eval()
        model._cached = None
        model.final_embeddings()  # the evaluation forward pass too
    return mode


