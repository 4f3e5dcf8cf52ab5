"""`recgoat benchmark` loads every dataset and given feature folder before any cell trains, and accepts the
features `recgoat encode` made for a dataset under whatever label the benchmark gives it.

- A dataset that could not be loaded (an interactions.csv without its item column) or a feature folder that did
  not fit its dataset (a text.npy of the wrong row count), listed second, was found only at its turn: the first
  dataset's cells had trained and benchmark.json recorded the refused configuration, though the README promises
  every pair is checked before any cell trains.
- The benchmark names a dataset by its label, and the name is part of the data's fingerprint: the features
  `recgoat encode` made for a prepared folder (named as it was prepared) were refused as "made for dataset
  fingerprint … but this dataset's is …: the data changed", which re-encoding could not fix.

Benchmarks run on constructed generic folders (40 users × 12 interactions among 30 items), MostPop, LightGCN and
VBPR (on a stand-in 8-d text matrix), 1 epoch, one thread.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat.benchmark import load_config, run_benchmark, runner
from recgoat.datasets import load
from recgoat.errors import DataError, RecGOATError
from recgoat.models.base import get_model_class

from test_benchmark_paths import write_data, write_text_features
from training_helpers import write_stub_text_features

torch.set_num_threads(1)
SETS = ["train.num_threads=1", "train.batch_size=1024"]


def config(datasets: list[dict], out: Path, models: list[str], sets: tuple[str, ...] = ()):
    base = {"datasets": datasets, "models": models, "seeds": [1], "epochs": 1, "out": str(out), "progress": False}
    return load_config(None, base, [*SETS, *sets])


def write_no_item_column(folder: Path) -> Path:
    """A generic folder whose interactions.csv lacks the item id column."""
    write_data(folder)
    csv = folder / "interactions.csv"
    pd.read_csv(csv).drop(columns=["item"]).to_csv(csv, index=False)
    return folder


def write_short_text_features(spec: dict, folder: Path) -> Path:
    """Stand-in text features of the dataset of ``spec`` with one item row too few (manifest kept in step)."""
    write_text_features(spec, folder)
    x = np.load(folder / "text.npy")[:-1]
    np.save(folder / "text.npy", x)
    man = json.loads((folder / "text.json").read_text())
    (folder / "text.json").write_text(json.dumps({**man, "rows": x.shape[0]}))
    return folder


# ------------------------------------------------------------------------------------- checked up front
def test_a_dataset_that_cannot_load_is_refused_before_an_earlier_dataset_trains(tmp_path, trained_runs):
    good, bad, out = write_data(tmp_path / "good"), write_no_item_column(tmp_path / "d_nocol"), tmp_path / "b"
    with pytest.raises(DataError, match=r"d_nocol/interactions.csv: missing column for item"):
        run_benchmark(config([{"name": str(good)}, {"name": str(bad)}], out, ["mostpop", "lightgcn"]))
    assert trained_runs == []  # the good dataset's cells trained first, then the run stopped
    assert not (out / "benchmark.json").exists()


def test_features_that_do_not_fit_a_later_dataset_are_refused_before_any_cell_trains(tmp_path, trained_runs):
    a, b, out = write_data(tmp_path / "a"), write_data(tmp_path / "b"), tmp_path / "out"
    write_text_features({"name": str(a)}, tmp_path / "fa")
    write_short_text_features({"name": str(b)}, tmp_path / "fb")
    datasets = [{"name": str(a), "features": str(tmp_path / "fa")}, {"name": str(b), "features": str(tmp_path / "fb")}]
    with pytest.raises(DataError, match=r"fb/text.npy: shape \(29, 8\), expected 30 rows"):
        run_benchmark(config(datasets, out, ["vbpr"]))
    assert trained_runs == [] and not (out / "benchmark.json").exists()


def test_with_workers_a_broken_later_dataset_is_refused_before_any_worker_trains(tmp_path):
    """`jobs: 2` trained the good dataset's cells in workers beside the one that then failed."""
    good, bad, out = write_data(tmp_path / "good"), write_no_item_column(tmp_path / "d_nocol"), tmp_path / "b"
    with pytest.raises(RecGOATError, match=r"d_nocol/interactions.csv: missing column for item"):
        run_benchmark(config([{"name": str(good)}, {"name": str(bad)}], out, ["mostpop", "lightgcn"], ("jobs=2",)))
    assert not (out / "benchmark.json").exists() and not (out / "runs").exists()


def test_each_dataset_is_loaded_once_and_all_before_the_first_cell_trains(tmp_path, monkeypatch):
    """The datasets loaded by the checks are the ones the cells train on: none is loaded twice."""
    events: list[str] = []
    load_dataset, run_cell = runner.load_dataset, runner.run_cell

    def loading(spec, split_seed):
        events.append(f"load {runner.dataset_label(spec)}")
        return load_dataset(spec, split_seed)

    def training(cell, *args):
        events.append(f"train {cell.title}")
        return run_cell(cell, *args)

    monkeypatch.setattr("recgoat.benchmark.checks.load_dataset", loading)
    monkeypatch.setattr(runner, "run_cell", training)
    a, b = write_data(tmp_path / "a"), write_data(tmp_path / "b")
    run = run_benchmark(config([{"name": str(a)}, {"name": str(b)}], tmp_path / "out", ["mostpop"]))
    assert not run.failed
    assert events == ["load a", "load b", "train a/mostpop/seed1", "train b/mostpop/seed1"]


def test_only_the_first_datasets_features_are_kept_from_the_check(tmp_path):
    """Features can be hundreds of MB: the check holds one folder at a time and keeps the first dataset's for its
    cells (the others are read again at their turn); with workers, which read their own, none."""
    a, b = write_data(tmp_path / "a"), write_data(tmp_path / "b")
    write_text_features({"name": str(a)}, tmp_path / "fa")
    write_text_features({"name": str(b)}, tmp_path / "fb")
    datasets = [{"name": str(a), "features": str(tmp_path / "fa")}, {"name": str(b), "features": str(tmp_path / "fb")}]
    for jobs, kept in ((1, [("a", 2026)]), (2, [])):
        cfg = config(datasets, tmp_path / "out", ["mostpop", "vbpr"], (f"jobs={jobs}",))
        cells = runner.plan_cells(cfg)
        models = {m.key: get_model_class(m.name) for m in cfg.models}
        data_cache: dict = {}
        feats = runner.check_inputs_before_training(cfg, cells, models, data_cache)
        assert sorted(data_cache) == [("a", 2026), ("b", 2026)] and sorted(feats) == kept
        assert all(f.text.shape == (30, 8) for f in feats.values())


# ------------------------------------------------------------------------------------- features of a prepared folder
def prepared(tmp_path: Path, name: str = "raw", under: str = "", drop: int = 0) -> Path:
    """``recgoat datasets prepare <name> --out prep``: a folder that loads under the name ``name``; ``drop``: that
    many raw interactions left out first."""
    raw = write_data(tmp_path / under / name)
    if drop:
        csv = raw / "interactions.csv"
        pd.read_csv(csv).iloc[drop:].to_csv(csv, index=False)
    out = tmp_path / under / "prep"
    load(str(raw)).save(out)
    assert load(str(out)).name == name
    return out


def test_features_encoded_for_a_prepared_folder_are_accepted_under_the_benchmarks_label(tmp_path, trained_runs):
    """As `recgoat encode all prep --out feats` writes them: for the dataset named as it loads, "raw"."""
    prep = prepared(tmp_path)
    write_stub_text_features(load(str(prep)), tmp_path / "feats")
    out = tmp_path / "b"
    run = run_benchmark(config([{"name": str(prep), "features": str(tmp_path / "feats")}], out, ["vbpr"]))
    assert not run.failed and len(trained_runs) == 1
    cell = json.loads((out / "runs" / "prep" / "vbpr" / "seed1" / "cell.json").read_text())
    # the cell's data is still named and fingerprinted under its label, as every existing benchmark folder's
    labelled = runner.load_dataset(runner.DatasetSpec(name=str(prep)), 2026)
    assert labelled.name == "prep" and cell["dataset_fingerprint"] == labelled.fingerprint()
    # resumed: the finished cell is read back
    again = run_benchmark(config([{"name": str(prep), "features": str(tmp_path / "feats")}], out, ["vbpr"]))
    assert again.trained == [] and again.skipped == ["prep/vbpr/seed1"]
    # and exported with the features the cell recorded (export refused them as the benchmark did)
    from typer.testing import CliRunner

    from recgoat.serving.artifacts import load_run
    from recgoat.serving.cli import app

    cell_dir = out / "runs" / "prep" / "vbpr" / "seed1"
    r = CliRunner().invoke(app, ["export", str(cell_dir), "--out", str(tmp_path / "art")])
    assert r.exit_code == 0, r.output
    art = load_run(tmp_path / "art")
    assert art.item_text is not None and art.item_text.shape == (30, 8)


def test_features_made_for_other_data_of_the_same_name_are_still_refused(tmp_path, trained_runs):
    """Only the name is taken from the manifests: the data is compared under it."""
    prep = prepared(tmp_path)
    other = prepared(tmp_path, under="elsewhere", drop=1)  # also named "raw", one interaction fewer
    write_stub_text_features(load(str(other)), tmp_path / "feats")
    with pytest.raises(DataError, match=r"feats/text.json: made for dataset fingerprint \w+ \(raw\), but this "
                                        r"dataset's is \w+: the data changed since encoding"):
        run_benchmark(config([{"name": str(prep), "features": str(tmp_path / "feats")}], tmp_path / "b", ["vbpr"]))
    assert trained_runs == []
