"""`python benchmarks/test_mask.py OUT` gives one row per benchmark entry, as the benchmark labels it.

The script keyed its rows by ``cell.json``'s dataset name and model name, so every point of a grid (and
``recgoat`` beside ``recgoat-ml100k``, and two ``max_users`` subsets of one dataset) were averaged into one row whose
"seeds" column counted the cells of all of them (a 4-point LightGCN grid read ``lightgcn | 5``).

A benchmark runs on a constructed generic folder (40 users × 12 interactions), two labelled BPR-MF entries with
different learning rates, 1 seed, 1 epoch, one thread.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import sys
from pathlib import Path

import torch

from recgoat.benchmark import load_config, run_benchmark

from test_benchmark_paths import write_data

torch.set_num_threads(1)
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_each_labelled_entry_is_its_own_row(tmp_path, capsys, monkeypatch):
    data = write_data(tmp_path / "tiny")
    models = [{"name": "bprmf", "label": "bpr-slow", "train": {"lr": 1e-4}},
              {"name": "bprmf", "label": "bpr-fast", "train": {"lr": 1e-2}}]
    cfg = load_config(None, {"datasets": [{"name": str(data), "label": "tiny-a"}], "models": models, "seeds": [1],
                             "epochs": 1, "out": str(tmp_path / "b"), "progress": False},
                      ["train.num_threads=1", "train.batch_size=1024"])
    assert not run_benchmark(cfg).failed
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("test_mask", None)
    import test_mask

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["test_mask.py", str(tmp_path / "b")])
    test_mask.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
    assert sorted(r.split(" | ")[1:3] for r in rows) == [["bpr-fast", "1"], ["bpr-slow", "1"]]
    assert all(r.startswith("| tiny-a | ") for r in rows)  # the dataset's label, not its folder's name
