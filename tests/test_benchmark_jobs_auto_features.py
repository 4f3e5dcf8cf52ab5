"""`jobs: N` with `features: auto`: a worker reads the auto feature folder its parent encoded, without the folder's
writer lock.

Each worker encoded (i.e. checked the cache of) the auto folder again for its first feature-reading cell of a
dataset, under the folder's writer lock; two workers doing so at the same moment refused each other, and the run
stopped with "another recgoat process (pid …) is writing to this folder" (found running a benchmark of two datasets
with VBPR, FREEDOM and RecGOAT at `-j 2`). The race is made certain here by holding the folder's lock from another
open file while a worker's cell runs.

Benchmarks run on a constructed MMRec folder (12 users × 8 items with its own text and image features, imported by
`auto`), VBPR, 1 epoch, one thread.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import fcntl
from pathlib import Path

import torch

from recgoat.benchmark import load_config, run_benchmark, workers
from recgoat.benchmark.cells import plan_cells
from recgoat.io import LOCK_NAME
from recgoat.models.base import get_model_class

from test_benchmark_mmrec_features import mmrec_folder

torch.set_num_threads(1)


def test_a_worker_reads_auto_features_while_another_process_holds_the_folder(tmp_path, monkeypatch):
    data = mmrec_folder(tmp_path / "baby")
    base = {"datasets": [str(data)], "models": ["vbpr"], "seeds": [1, 2], "epochs": 1, "out": str(tmp_path / "b"),
            "progress": False}
    config = load_config(None, base, ["train.num_threads=1", "train.batch_size=64", "jobs=2"])
    # the parent's part: seed 1 trained in this process, which encodes (imports) the auto folder first
    first = load_config(None, {**base, "seeds": [1]}, ["train.num_threads=1", "train.batch_size=64"])
    assert not run_benchmark(first).failed
    cell = next(c for c in plan_cells(config) if c.seed == 2)
    folder = tmp_path / "b" / "features" / "baby"
    monkeypatch.setattr(workers, "_WORKER_CACHE", ({}, {}))  # a fresh worker's caches
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another worker checking the folder's cache right now
        out = workers._train_in_worker(config, cell, get_model_class("vbpr"))
    finally:
        os.close(fd)
    assert "result" in out, out.get("message")
    assert (cell.run_dir / "result.json").exists()
