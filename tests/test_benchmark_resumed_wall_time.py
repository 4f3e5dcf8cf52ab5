"""`recgoat benchmark`: the ``wall_seconds`` of a cell interrupted and resumed is the time of every run of it, and
its results are the uninterrupted run's.

The resumed run's ``result.json`` counted only its own part (the report's wall_seconds column with it), while its
s/epoch already averaged every epoch of the log. The trainer records the wall time so far in each checkpoint and a
resumed run adds its own; a checkpoint of an older version, which records none, is taken at its log's epoch times.

A constructed generic folder (40 users × 12 interactions), BPR-MF, 4 epochs, one thread; the first run is stopped
after its epoch-1 checkpoint (Ctrl-C stands for it), its epochs slowed by 0.5 s each so that they outweigh the
resumed run's.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from recgoat.benchmark import load_config, run_benchmark
from recgoat.models.base import Recommender
from recgoat.training.trainer import Trainer

from test_benchmark_paths import write_data

torch.set_num_threads(1)
SLOW = 0.5  # seconds added to each epoch of the interrupted run


def config(data: Path, out: Path):
    base = {"datasets": [{"name": str(data), "features": None}], "models": ["bprmf"], "seeds": [1], "epochs": 4,
            "out": str(out), "progress": False}
    return load_config(None, base, ["train.num_threads=1", "train.batch_size=64", "train.patience=10"])


def interrupted(data: Path, out: Path, monkeypatch) -> Path:
    """The bprmf cell of ``out`` run to its epoch-1 checkpoint (epochs 0 and 1, each ``SLOW`` seconds longer), then
    stopped; its run folder."""
    save, start = Trainer._save_checkpoint, Recommender.on_epoch_start

    def slow_epoch(self, epoch, rng):
        time.sleep(SLOW)  # within the epoch's training time (train_seconds), as a slow epoch is
        return start(self, epoch, rng)

    def save_then_stop(self, model, optimizer, state):
        save(self, model, optimizer, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Recommender, "on_epoch_start", slow_epoch)
        m.setattr(Trainer, "_save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run_benchmark(config(data, out))
    cell = out / "runs" / data.name / "bprmf" / "seed1"
    assert not (cell / "result.json").exists()
    return cell


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    data = write_data(tmp_path_factory.mktemp("wall") / "tiny")
    out = data.parent / "whole"
    assert not run_benchmark(config(data, out)).failed
    return json.loads((out / "runs" / "tiny" / "bprmf" / "seed1" / "result.json").read_text())


def test_a_resumed_cell_counts_the_wall_time_of_every_run(tmp_path, monkeypatch, uninterrupted):
    data = write_data(tmp_path / "tiny")
    t0 = time.perf_counter()
    cell = interrupted(data, tmp_path / "out", monkeypatch)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = run_benchmark(config(data, tmp_path / "out"))
    resumed = time.perf_counter() - t0
    assert run.trained == ["tiny/bprmf/seed1"] and not run.failed
    result = json.loads((cell / "result.json").read_text())
    assert result["resumed_epochs"] == 2 and result["epochs_run"] == 4
    # the first run's time up to its checkpoint (its two slowed epochs), then the resumed run's (it alone was all
    # that wall_seconds counted)
    assert 2 * SLOW <= result["wall_seconds"] <= first + resumed
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert runs["wall_seconds"].tolist() == [pytest.approx(result["wall_seconds"])]
    # a resume changes no result: the uninterrupted run's metrics, best epoch and learning curve, to the last digit
    for key in ("valid", "test", "best_epoch", "epochs_run", "history"):
        assert result[key] == uninterrupted[key], key


def test_a_checkpoint_without_the_time_is_taken_at_its_logs_epoch_times(tmp_path, monkeypatch):
    """A checkpoint written before the wall time was recorded: the restored epochs' logged training and validation
    seconds (the time spent writing checkpoints is not in the log)."""
    data = write_data(tmp_path / "tiny")
    cell = interrupted(data, tmp_path / "out", monkeypatch)
    state = json.loads((cell / "checkpoint" / "state.json").read_text())
    state.pop("wall_seconds", None)
    (cell / "checkpoint" / "state.json").write_text(json.dumps(state))
    rows = [json.loads(line) for line in (cell / "log.jsonl").read_text().splitlines()]
    logged = sum(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in rows)
    assert [r["epoch"] for r in rows] == [0, 1] and logged >= 2 * SLOW
    t0 = time.perf_counter()
    run = run_benchmark(config(data, tmp_path / "out"))
    resumed = time.perf_counter() - t0
    assert run.trained == ["tiny/bprmf/seed1"] and not run.failed
    result = json.loads((cell / "result.json").read_text())
    assert logged <= result["wall_seconds"] <= logged + resumed
