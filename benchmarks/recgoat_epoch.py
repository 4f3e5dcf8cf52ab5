"""Cost of one RecGOAT training epoch against LightGCN's, on a synthetic Amazon-Baby-shaped problem.

Shape (``--scale 1``): 19,445 users, 7,050 items, 160,792 interactions (80 % train), 384-d text,
1280-d image (10 % missing), 384-d profiles, d = 64, batch 2048. Both models run the shared trainer's
inner loop (NegativeSampler + Adam) for ``--epochs`` epochs in the same process and thread setting.

Prints seconds per epoch of each, their epochs alternating (target: RecGOAT ≤ 3× LightGCN), the time to build RecGOAT's graphs,
peak resident memory (target ≤ 4 GB), and the largest tensor allocated during RecGOAT's training steps.

How "no I×I, U×U or I×d×d tensor" is checked: a ``TorchDispatchMode`` sees every ATen operator that runs
while it is active — forward, backward (CPU autograd runs in the calling thread) and the optimiser step —
and inspects every tensor each operator returns: dense tensors by element count, sparse ones by their
stored entries. A dense result with two axes of length I, two of length U (or U+I: a dense
adjacency), or an axis of I or U together with two axes of d is a violation; the largest tensor seen is
printed too, for comparison with the I², U² and I·d² sizes. The mode watches
``--check-batches`` full training steps (it slows them down, so they are not timed). The kNN graphs are
built by faiss in numpy, outside torch: knn.py queries in blocks of at most 16,384 × (k+1), and the peak
memory figure covers that stage.

Run: ``python benchmarks/recgoat_epoch.py --epochs 1 --scale 0.25`` (quick) or with defaults.

Measured (full scale, 3 alternating epochs each, machine otherwise idle), session 9: 1 thread: LightGCN
2.20 s, RecGOAT 10.71 s per epoch, 4.87×; 2 threads: 1.76 s vs 8.21 s, 4.66×; peak RSS ~0.9 GiB; no
forbidden tensor; session 11, 1 thread: 2.32 s vs 11.79 s, 5.07×; session 12: 2.04 s vs 9.71 s, 4.75×,
and 2.34 s vs 10.41 s, 4.45×; with ``--preset ml100k`` (no profile branch) 2.27 s vs 7.45 s, 3.28×, and
2.36 s vs 8.02 s, 3.40×; session 13, 1 thread: 2.18 s vs 10.18 s, 4.66×, 911 MiB; session 18 (a CPU with
AVX512-BF16, so bfloat16 projections), 1 thread: 1.77 s vs 8.92 s, 5.05× (epoch by epoch 4.64, 5.08, 5.53),
913 MiB, and ``recgoat_step_breakdown.py --threads 1 --rounds 4`` 32.6 ms vs 152.3 ms a step, 4.67×. (Session 8, before the shared sparse
product got faster for both: 2.85 s vs 11.91 s, 4.18×.) Where a step's time goes: ``recgoat_step_breakdown.py``.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from recgoat.datasets.dataset import Dataset  # noqa: E402
from recgoat.features.store import Features  # noqa: E402
from recgoat.models.lightgcn import LightGCN  # noqa: E402
from recgoat.models.recgoat import RecGOAT  # noqa: E402
from recgoat.training.sampling import NegativeSampler  # noqa: E402

BABY = {"users": 19_445, "items": 7_050, "interactions": 160_792}


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


class EpochRunner:
    """The shared trainer's inner loop (NegativeSampler + Adam), one epoch per call."""

    def __init__(self, model, batch: int, seed: int, lr: float = 1e-3):
        self.model, self.batch, self.seed = model, batch, seed
        self.sampler = NegativeSampler(model._train_csr)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.epoch = 0

    def __call__(self) -> float:
        rng = np.random.default_rng([self.seed, self.epoch])
        torch.manual_seed(self.seed + self.epoch)
        self.model.train()
        t0 = time.perf_counter()
        for u, p, n in self.sampler.epoch(self.batch, rng):
            loss = self.model.loss(u, p, n)["loss"]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.epoch += 1
        return time.perf_counter() - t0


def check_allocations(model, batches: int, batch: int, seed: int) -> LargestTensors:
    sampler = NegativeSampler(model._train_csr)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mode = LargestTensors(model.n_users, model.n_items, model.config.embedding_dim)
    it = sampler.epoch(batch, np.random.default_rng(seed))
    with mode:
        for _ in range(batches):
            u, p, n = next(it)
            loss = model.loss(u, p, n)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        model._cached = None
        model.final_embeddings()  # the evaluation forward pass too
    return mode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the Baby sizes (users, items, interactions)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--check-batches", type=int, default=2)
    ap.add_argument("--preset", default=None, help="RecGOAT preset name or YAML path, e.g. ml100k (before --set)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RecGOAT config override")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    ds, feats = synthetic(args.scale, args.seed, 384, 1280)
    n_train = int((ds.interactions["split"] == "train").sum())
    print(f"synthetic Baby x{args.scale}: {ds.n_users} users, {ds.n_items} items, {len(ds.interactions)} "
          f"interactions ({n_train} train), d={args.dim}, batch {args.batch}, {args.threads} thread(s) "
          f"[{time.perf_counter() - t0:.1f}s]")

    torch.manual_seed(args.seed)
    lg = LightGCN.build(ds, {"embedding_dim": args.dim})
    rss_lg = peak_rss_mb()

    torch.manual_seed(args.seed)
    t1 = time.perf_counter()
    import yaml

    overrides = {}
    if args.preset:
        from recgoat.models.recgoat import load_preset

        overrides = load_preset(args.preset).model_dump(exclude_defaults=True)
    overrides.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)})
    print(f"RecGOAT settings other than the defaults: {overrides or 'none (the paper configuration)'}")
    rg = RecGOAT.build(ds, {"embedding_dim": args.dim, **overrides}, feats)
    prep = time.perf_counter() - t1
    # the two models' epochs alternate, so that drifts in this machine's speed hit both alike
    run_lg, run_rg = EpochRunner(lg, args.batch, args.seed), EpochRunner(rg, args.batch, args.seed)
    lg_times, rg_times = [], []
    for _ in range(args.epochs):
        lg_times.append(run_lg())
        rg_times.append(run_rg())

    d, n_i, n_u = args.dim, ds.n_items, ds.n_users
    mode = check_allocations(rg, args.check_batches, args.batch, args.seed)
    rss = peak_rss_mb()

    lg_s, rg_s = float(np.mean(lg_times)), float(np.mean(rg_times))
    print(f"{'model':<10}{'s/epoch':>10}   epochs")
    print(f"{'LightGCN':<10}{lg_s:>10.2f}   {', '.join(f'{t:.2f}' for t in lg_times)}")
    print(f"{'RecGOAT':<10}{rg_s:>10.2f}   {', '.join(f'{t:.2f}' for t in rg_times)}")
    ratio = rg_s / lg_s
    pairs = ", ".join(f"{r / lgt:.2f}" for r, lgt in zip(rg_times, lg_times))
    print(f"ratio RecGOAT / LightGCN: {ratio:.2f}x (epoch by epoch: {pairs}; target <= 3x) "
          f"{'OK' if ratio <= 3 else 'OVER'}")
    print(f"RecGOAT graph building (prepare): {prep:.2f}s; summary: {rg.summary}")
    print(f"peak resident memory: {rss:.0f} MiB (with data and LightGCN built: {rss_lg:.0f} MiB; target <= 4096) "
          f"{'OK' if rss <= 4096 else 'OVER'}")
    size, op, shape = mode.largest
    print(f"largest tensor in {args.check_batches} RecGOAT training steps + eval pass: {size:,} elements "
          f"{shape} from {op} (an I×I tensor would hold {n_i * n_i:,}, U×U {n_u * n_u:,}, "
          f"I×d×d {n_i * d * d:,})")
    if mode.violations:
        print(f"VIOLATION: {len(mode.violations)} tensor(s) of forbidden size: {mode.violations[:5]}")
        return 1
    print("no tensor of size I×I, U×U or I×d×d was allocated: OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
