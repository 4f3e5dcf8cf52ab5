"""Training cost of every built-in model on a synthetic Amazon-Baby-shaped problem: set-up, epoch, memory.

What it measures, per model, each in its default configuration (the paper's, as the model's ``Config``
defaults hold it: ``Model.build(dataset, {}, features)``):

* **set-up seconds**: ``Model.build``, i.e. the constructor and ``prepare`` (normalised graphs, kNN item-item
  and user-user graphs, frozen feature tensors): what a run pays once before its first epoch;
* **seconds per epoch** (median over ``--epochs``): the shared trainer's epoch, timed as
  ``Trainer._train_epoch`` times it, from the model's ``on_epoch_start`` hook (FREEDOM resamples its pruned
  graph there, LATTICE re-chooses its learned neighbours) to the last optimiser step of
  ``NegativeSampler(train).epoch(2048)`` + ``model.loss`` + Adam (lr 1e-3, the trainer's defaults;
  ``_cost.EpochRunner``); no validation;
* **× LightGCN**: the median over rounds of the model's epoch over LightGCN's epoch of the same round
  (LightGCN always runs; it is added when ``--models`` leaves it out);
* **peak +MiB**: how far the model's build and epochs raise its process's peak resident memory above the
  process holding only the data and features (below);
* with ``--check-batches N``: the largest tensor any torch operator returns during N training steps and one
  evaluation forward pass, and how many results had a shape the RecGOAT targets forbid (two axes of I, of U
  or of U+I, or I or U with two axes of d), watched by ``recgoat_epoch.py``'s ``TorchDispatchMode``
  (``_cost.check_allocations``). For a peer such a tensor may be part of its design: it is reported, not
  an error. faiss's kNN searches run outside torch and are not seen.

The problem is ``recgoat_epoch.py``'s (``_cost.synthetic``): at ``--scale 1`` 19,445 users, 7,050 items,
160,792 interactions (random 8:1:1 split), power-law item popularity; 384-d text, 1280-d image features
(10 % of items without an image), 384-d user profiles. Models that read side features get all of them (each
takes what its configuration reads: RecGOAT the three, the other multimodal peers text and image); BPR-MF and
LightGCN get none. MostPop has no loss (``trainable = False``: it counts training interactions), so it has
no epoch to time and is skipped, with a note.

How: one worker process per model, all started together (multiprocessing's forkserver where there is one,
so torch and recgoat are imported once) but only one of them working at any time: the parent hands out the
work step by step and waits for each. Set-up runs model after model; then the epochs go round by round
(LightGCN's first epoch, then the next model's first epoch, …, then every model's second epoch), so drifts in
this machine's speed hit every model alike. Each worker limits torch, faiss and the BLAS/OpenMP pools it
finds (threadpoolctl, where installed) to ``--threads``, and first trains LightGCN for one epoch on a problem
of a hundred users, so that torch's work on first use (thread pool, autograd engine, Adam) lands in no model's
time or memory.

Why a process per model for memory: torch's CPU allocator keeps no peak statistic (``max_memory_allocated``
is CUDA's), ``tracemalloc`` sees none of torch's or faiss's allocations, and in one shared process a model
reuses memory the previous one freed, so its peak would depend on the order. In its own process a model's
figure is the growth of the peak resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``
once data and features are made and the C heap is trimmed) over the resident set at that moment: all that
its build and training add, parameters, graphs, kNN search blocks, autograd activations, Adam's state and
allocator slack. Where the peak cannot be reset (not Linux) the figure is the growth of ``ru_maxrss``,
which misses whatever stays under the peak of making the data. The resident set before the model (the
interpreter, torch, the data and features) is printed once, under the table.

Run (from ``benchmarks/``)::

    python peers_epoch.py                                   # every model, full scale, 2 epochs, 1 thread
    python peers_epoch.py --scale 0.25 --epochs 1           # quick
    python peers_epoch.py --models lightgcn freedom lattice --epochs 3 --check-batches 2 --json peers.json
    python peers_epoch.py --device cuda --threads 4          # on a GPU: the table adds each model's peak GPU MiB

``--models`` takes registry names (``recgoat train --model``'s), space- or comma-separated; ``--json`` also
writes every epoch's figures. The workers live side by side, each holding its own copy of the data: at
full scale about 10 × 0.3 GiB plus what each model adds. Exit status 0; 1 when a model failed (its row says
why, the others are still measured); 2 for arguments refused (an unknown model name), with one line saying
why.

Measured (session 27, full scale, ``--epochs 2 --check-batches 1``, 2-core AMD EPYC otherwise idle): seconds per
epoch LightGCN 1.43, BPR-MF 0.26, RecGOAT 7.76 (5.48×), VBPR 2.23, FREEDOM 2.60, LGMRec 30.1 (21.2×), BM3 6.02,
LATTICE 8.14, MGCN 13.3; peak +MiB 88 to 1,047 (LATTICE); no forbidden tensor. The table and what explains
it: docs/benchmarks.md, "Every model's training cost at Amazon Baby size". Session 28 on an H100
(``--device cuda --threads 4 --epochs 3``): LightGCN 0.263, RecGOAT 3.54 (13.4×), LGMRec 1.14, MGCN 0.745
(docs/benchmarks.md, "On a GPU").
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from _cost import device_refused, peak_rss_mb  # noqa: E402
from recgoat.benchmark.memory import release_free_memory  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.io import write_json  # noqa: E402
from recgoat.models import MODELS, get_model_class  # noqa: E402
from recgoat.models.base import is_builtin  # noqa: E402
from recgoat.training.trainer import TrainConfig  # noqa: E402

REFERENCE = "lightgcn"
TEXT_DIM, IMAGE_DIM = 384, 1280  # as recgoat_epoch.py: a sentence encoder's text, EfficientNet's image features
_TRAIN = TrainConfig()
BATCH, LR = _TRAIN.batch_size, _TRAIN.lr  # the trainer's defaults


# ----------------------------------------------------------------------------------------------- memory
def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in MiB, or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


class PeakMemory:
    """This process's peak resident memory from its creation on, and its resident memory then (MiB).

    On Linux the kernel's peak (``VmHWM``) is reset by writing 5 to ``/proc/self/clear_refs``; first the
    garbage collector runs and glibc hands its free heap back (``malloc_trim``), so the baseline is what
    the process really holds. Elsewhere the peak is ``ru_maxrss``, which cannot be reset: ``growth`` then
    counts only what rises above the process's earlier peak.
    """

    def __init__(self) -> None:
        release_free_memory()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = _status_mib("VmHWM") is not None
        except OSError:
            self.resettable = False
        self.baseline = _status_mib("VmRSS") if self.resettable else peak_rss_mb()

    def peak(self) -> float:
        return _status_mib("VmHWM") if self.resettable else peak_rss_mb()

    def growth(self) -> float:
        return max(self.peak() - self.baseline, 0.0)


# ----------------------------------------------------------------------------------------------- worker
def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)  # numpy's BLAS, and any other OpenMP runtime loaded
    except ImportError:
        pass


def _warm_up(seed: int, device: str) -> None:
    """One LightGCN epoch on a problem of a hundred users, before the memory baseline and the timings: torch's
    work on first use (its thread pool, the autograd engine, Adam's first step, sparse kernels) is then
    counted against no model."""
    from _cost import EpochRunner, synthetic
    from recgoat.models import LightGCN

    tiny, _ = synthetic(0.005, seed, 8, 8)
    EpochRunner(LightGCN.build(tiny, {}), BATCH, seed, lr=LR, device=device)()


def worker(conn, name: str, scale: float, seed: int, threads: int, device: str = "cpu") -> None:
    """One model's process: make the data, then answer the parent's requests (``build``, ``epoch``,
    ``memory``, ``check``, ``quit``) one by one with a dict; a failure is answered ``{"error": ...}``."""
    import torch

    from _cost import EpochRunner, check_allocations, synthetic

    def answer(fn) -> dict:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the parent reports it in the model's row
            traceback.print_exc(file=sys.stderr)
            return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}

    state: dict[str, Any] = {}
    gpu = device.startswith("cuda")

    def ready() -> dict:
        _limit_threads(threads)
        ds, feats = synthetic(scale, seed, TEXT_DIM, IMAGE_DIM)
        cls = get_model_class(name)
        state.update(ds=ds, cls=cls, feats=feats if cls.feature_kinds(cls.Config()) else None)
        _warm_up(seed, device)
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        state["memory"] = PeakMemory()  # the baseline: interpreter, torch warmed up, data and features
        return {"users": ds.n_users, "items": ds.n_items, "interactions": len(ds.interactions),
                "train": int(ds.csr("train").nnz), "baseline_mib": state["memory"].baseline}

    def build() -> dict:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        model = state["cls"].build(state["ds"], {}, state["feats"])
        seconds = time.perf_counter() - t0
        state["model"], state["runner"] = model, EpochRunner(model, BATCH, seed, lr=LR, device=device)
        return {"seconds": seconds, "dim": getattr(model.config, "embedding_dim", None)}

    def epoch() -> dict:
        return {"seconds": state["runner"]()}

    def memory() -> dict:
        return {"growth_mib": state["memory"].growth(), "peak_mib": state["memory"].peak(),
                "resettable": state["memory"].resettable,
                "gpu_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if gpu else None}

    def check(batches: int) -> dict:
        mode = check_allocations(state["model"], batches, BATCH, seed, device)
        size, op, shape = mode.largest
        return {"largest": [size, op, list(shape)], "violations": len(mode.violations),
                "examples": [[op, list(s)] for op, s in mode.violations[:3]]}

    reply = answer(ready)
    conn.send(reply)
    if "error" in reply:
        return
    handlers = {"build": build, "epoch": epoch, "memory": memory}
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if msg["cmd"] == "quit":
            return
        if msg["cmd"] == "check":
            conn.send(answer(lambda: check(msg["batches"])))
        else:
            conn.send(answer(handlers[msg["cmd"]]))


class Worker:
    """The parent's handle on one model's process."""

    def __init__(self, ctx, name: str, args: argparse.Namespace):
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(child, name, args.scale, args.seed, args.threads, args.device),
                                name=f"peers-epoch-{name}", daemon=True)
        self.proc.start()
        child.close()  # so that recv() sees the end of a worker that died
        self.error: str | None = None

    def ask(self, cmd: str, **kw: Any) -> dict | None:
        """The worker's answer, or None (and ``self.error`` set) when it failed or has failed before."""
        if self.error is not None:
            return None
        try:
            if cmd != "ready":
                self.conn.send({"cmd": cmd, **kw})
            reply = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.proc.join(5)
            self.error = f"its process ended (exit code {self.proc.exitcode}) during {cmd!r}"
            return None
        if "error" in reply:
            self.error = f"{cmd}: {reply['error']}"
            return None
        return reply

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.conn.send({"cmd": "quit"})
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _context():
    """forkserver (torch and recgoat imported once, in a process that never ran torch, then forked per
    worker), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "torch", "torch._dynamo", "faiss", "recgoat.models", "_cost"])
        return ctx
    return mp.get_context("spawn")


# ----------------------------------------------------------------------------------------------- parent
def builtin_models() -> list[str]:
    """Every model recgoat itself registers, LightGCN (the reference) first, then in registry order."""
    names = [n for n, cls in MODELS.items() if is_builtin(cls)]
    return sorted(names, key=lambda n: n != REFERENCE)


def choose(requested: list[str] | None) -> tuple[list[str], list[str]]:
    """The models to run and notes on those left out or added; a ConfigError for an unknown name."""
    if requested:
        names = [n.strip() for item in requested for n in item.split(",") if n.strip()]
        # registry names are lower case; LightGCN and lightgcn are the same model
        names = [n.lower() if n not in MODELS and n.lower() in MODELS else n for n in names]
    else:
        names = builtin_models()
    run, notes = [], []
    for name in dict.fromkeys(names):
        cls = get_model_class(name)
        if not cls.trainable:
            notes.append(f"{name}: skipped, nothing to train ({cls.__name__}.trainable is False: it has no loss, "
                         f"no epoch to time)")
        else:
            run.append(name)
    if run and REFERENCE not in run:
        run.insert(0, REFERENCE)
        notes.append(f"{REFERENCE}: added, the reference of the × {REFERENCE} column")
    return run, notes


def _seconds(t: float) -> str:
    """Three significant digits, without an exponent (0.00412, 8.02, 12.3, 123): a tiny problem's epochs
    take milliseconds, the full one's seconds."""
    if not (t > 0 and math.isfinite(t)):
        return f"{t:.2f}"
    return f"{t:.{max(0, 2 - math.floor(math.log10(t)))}f}"


def _fmt_tensor(largest: list) -> str:
    size, _, shape = largest
    return f"{size:,} {tuple(shape)}"


def report(rows: dict[str, dict], args: argparse.Namespace) -> list[str]:
    """The table, one line per model."""
    ref = rows.get(REFERENCE, {}).get("epochs", [])
    gpu = args.device.startswith("cuda")  # the workers read a peak GPU memory on CUDA only
    cols = f"{'model':<10}{'set-up s':>10}{'s/epoch':>10}{'× ' + REFERENCE:>13}{'peak +MiB':>11}"
    if gpu:
        cols += f"{'GPU MiB':>9}"
    if args.check_batches:
        cols += f"  {'largest tensor (elements, shape)':<34}{'forbidden':>9}"
    lines = [cols + "   epochs (s)"]
    for name, r in rows.items():
        if r.get("error"):
            lines.append(f"{name:<10}  failed: {r['error']}")
            continue
        epochs = r["epochs"]
        ratios = [t / t_ref for t, t_ref in zip(epochs, ref) if t_ref > 0]
        ratio = f"{np.median(ratios):.2f}" if ratios else "-"
        line = (f"{name:<10}{_seconds(r['setup']):>10}{_seconds(float(np.median(epochs))):>10}{ratio:>13}"
                f"{r['growth_mib']:>11.0f}")
        if gpu:
            line += f"{r['gpu_peak_mib']:>9.0f}"
        if args.check_batches:
            line += f"  {_fmt_tensor(r['largest']):<34}{r['violations']:>9}"
        lines.append(line + "   " + ", ".join(_seconds(t) for t in epochs))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=None, metavar="NAME",
                    help="registry names, space- or comma-separated (default: every built-in model that trains)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per model, taken round by round")
    ap.add_argument("--threads", type=int, default=1, help="torch / faiss / BLAS threads of each model")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the Baby sizes (users, items, interactions)")
    ap.add_argument("--check-batches", type=int, default=0,
                    help="training steps per model to watch for forbidden tensor shapes (0: no watch)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--device", default="cpu", help="where every model trains (cpu, cuda...); on CUDA the table "
                                                    "adds each model's peak GPU memory allocated")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures (every epoch's) to this file")
    args = ap.parse_args(argv)
    for flag, value, low in (("--epochs", args.epochs, 1), ("--threads", args.threads, 1),
                             ("--check-batches", args.check_batches, 0)):
        if value < low:
            ap.error(f"{flag} must be at least {low}, got {value}")
    if not (math.isfinite(args.scale) and 0 < args.scale <= 10):
        ap.error(f"--scale must be in (0, 10], got {args.scale}")
    if device_refused("peers_epoch.py", args.device):
        return 2
    try:
        names, notes = choose(args.models)
    except ConfigError as e:
        print(f"peers_epoch.py: error: {e}", file=sys.stderr)
        return 2
    if not names:
        print("peers_epoch.py: error: none of the models given trains: " + "; ".join(notes), file=sys.stderr)
        return 2

    ctx = _context()
    workers = {n: Worker(ctx, n, args) for n in names}
    rows: dict[str, dict] = {n: {"epochs": []} for n in names}
    try:
        info = {n: w.ask("ready") for n, w in workers.items()}
        shape = next((i for i in info.values() if i), None)
        if shape:
            print(f"synthetic Baby x{args.scale}: {shape['users']:,} users, {shape['items']:,} items, "
                  f"{shape['interactions']:,} interactions ({shape['train']:,} train); text {TEXT_DIM}-d, image "
                  f"{IMAGE_DIM}-d (10 % missing), profiles {TEXT_DIM}-d; each model's default configuration; "
                  f"batch {BATCH}, Adam lr {LR:g}; {args.threads} thread(s) per model; device {args.device}",
                  flush=True)
        for n, w in workers.items():
            r = w.ask("build")
            if r:
                rows[n].update(setup=r["seconds"], dim=r["dim"])
                print(f"set-up {n}: {_seconds(r['seconds'])} s", flush=True)
        for rnd in range(args.epochs):
            done = []
            for n, w in workers.items():
                r = w.ask("epoch")
                if r:
                    rows[n]["epochs"].append(r["seconds"])
                    done.append(f"{n} {_seconds(r['seconds'])}")
            print(f"epoch {rnd + 1} (s): {', '.join(done)}", flush=True)
        for n, w in workers.items():
            r = w.ask("memory")
            if r:
                rows[n].update(growth_mib=r["growth_mib"], peak_mib=r["peak_mib"], gpu_peak_mib=r["gpu_peak_mib"])
        if args.check_batches:
            for n, w in workers.items():
                r = w.ask("check", batches=args.check_batches)
                if r:
                    rows[n].update(largest=r["largest"], violations=r["violations"], examples=r["examples"])
    finally:
        for w in workers.values():
            w.close()
    for n, w in workers.items():
        if w.error:
            rows[n]["error"] = w.error

    print()
    print("\n".join(report(rows, args)))
    baselines = [i["baseline_mib"] for i in info.values() if i]
    if baselines:
        print(f"peak +MiB: growth of each model's own process over its resident memory with only the data and "
              f"features made ({min(baselines):.0f}–{max(baselines):.0f} MiB)")
    if args.check_batches and shape:
        d = next((r["dim"] for r in rows.values() if r.get("dim")), 64)
        print(f"largest tensor: over {args.check_batches} training step(s) and one evaluation pass (an I×I tensor "
              f"would hold {shape['items'] ** 2:,} elements, U×U {shape['users'] ** 2:,}, I×d×d at d={d} "
              f"{shape['items'] * d * d:,})")
        for n, r in rows.items():
            if r.get("violations"):
                print(f"  {n}: {r['violations']} result(s) of a forbidden shape, e.g. "
                      + "; ".join(f"{tuple(s)} from {op}" for op, s in r["examples"]))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        write_json(args.json, {"problem": shape, "threads": args.threads, "device": args.device,
                               "epochs": args.epochs, "batch": BATCH,
                               "lr": LR, "check_batches": args.check_batches, "rows": rows, "notes": notes})
    return 1 if any(r.get("error") for r in rows.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
