"""`recgoat benchmark` reads once: the checks before training read each feature folder once, and a grid_seeds run
chooses its grid points and reads its cells' results once for the choice and the report.

- A resumed benchmark whose cells recorded the features they read (feature digests) read a later dataset's given
  feature folder twice before its first cell trained: once to see that it loads, once more to compare it with
  the cells' digests (and then held it, with every other such dataset's, through the whole run).
- At the end of a ``grid_seeds`` run the points were chosen three times (for the cells to train, then twice by the
  report) and every finished cell's result.json read twice (for the choice, then for the report); `--report-only`
  of such a run chose twice on two reads too.

Benchmarks run on constructed generic folders (40 users × 12 interactions among 30 items) with a stand-in 8-d text
matrix, or an MMRec-layout folder with `features: auto`; MostPop, VBPR and a 2-point BPR-MF grid, 1 epoch, one
thread.
"""
from __future__ import annotations

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import numpy as np
import pytest
import torch

from recgoat.benchmark import load_config, report, run_benchmark, runner, write_report
from recgoat.errors import ConfigError

from test_benchmark_mmrec_features import mmrec_folder
from test_benchmark_paths import write_data, write_text_features

torch.set_num_threads(1)
SETS = ["train.num_threads=1", "train.batch_size=1024"]


def config(datasets: list[dict], out: Path, models: list, seeds: list[int], sets: tuple[str, ...] = ()):
    base = {"datasets": datasets, "models": models, "seeds": seeds, "epochs": 1, "out": str(out), "progress": False}
    return load_config(None, base, [*SETS, *sets])


def record(monkeypatch) -> list[str]:
    """``read FOLDER`` for every feature folder read (or encoded, ``auto``) and ``train TITLE`` for every cell
    trained, in order."""
    events: list[str] = []
    resolve, run_cell = runner.resolve_features, runner.run_cell

    def reading(spec, dataset, out, split, progress, which=None, device="cpu"):
        events.append(f"read {runner.feature_folder(spec, out, split).name}")
        return resolve(spec, dataset, out, split, progress, which, device)

    def training(cell, *args):
        events.append(f"train {cell.title}")
        return run_cell(cell, *args)

    monkeypatch.setattr("recgoat.benchmark.checks.resolve_features", reading)
    monkeypatch.setattr(runner, "run_cell", training)
    return events


# ------------------------------------------------------------------------------------- feature folders read once
@pytest.fixture
def two_datasets(tmp_path) -> list[dict]:
    """Datasets a and b with their feature folders fa and fb, and a benchmark folder whose seed-1 cells of MostPop
    and VBPR (which records the digests of the features it read) are finished."""
    datasets = []
    for name in ("a", "b"):
        spec = {"name": str(write_data(tmp_path / name)), "features": str(tmp_path / f"f{name}")}
        write_text_features({"name": spec["name"]}, Path(spec["features"]))
        datasets.append(spec)
    run = run_benchmark(config(datasets, tmp_path / "out", ["mostpop", "vbpr"], [1]))
    assert not run.failed and len(run.trained) == 4
    return datasets


def test_each_feature_folder_is_read_once_before_training_and_only_the_first_is_kept(tmp_path, two_datasets,
                                                                                      monkeypatch):
    """fb was read twice before anything trained (loaded, then compared with its cells' digests) and then held
    through a's cells; now once, let go, and read again when b's first VBPR cell comes."""
    events = record(monkeypatch)
    run = run_benchmark(config(two_datasets, tmp_path / "out", ["mostpop", "vbpr"], [1, 2]))
    assert not run.failed and len(run.trained) == 4 and len(run.skipped) == 4
    assert events == ["read fa", "read fb",
                      "train a/mostpop/seed2", "train a/vbpr/seed2", "train b/mostpop/seed2",
                      "read fb", "train b/vbpr/seed2"]


def test_a_later_folders_changed_features_are_refused_on_its_one_read(tmp_path, two_datasets, monkeypatch):
    """The comparison with the digests is made on the read that checks the folder loads: still before anything
    trains, and naming the cell."""
    x = np.load(tmp_path / "fb" / "text.npy")
    np.save(tmp_path / "fb" / "text.npy", (x[::-1] * 2).astype(np.float32))  # same shape, other values
    events = record(monkeypatch)
    cfg = config(two_datasets, tmp_path / "out", ["mostpop", "vbpr"], [1, 2])
    with pytest.raises(ConfigError, match=f"{tmp_path / 'out' / 'runs' / 'b' / 'vbpr' / 'seed1'}: was trained on "
                                          f"other text features than {tmp_path / 'fb'} holds now"):
        run_benchmark(cfg)
    assert events == ["read fa", "read fb"]
    assert not list((tmp_path / "out" / "runs").glob("*/*/seed2"))


def test_an_auto_folder_is_encoded_and_compared_once_under_the_lock(tmp_path, monkeypatch):
    """`features: auto` (an MMRec folder's own matrices, imported) is compared with its cells' digests after the
    benchmark folder is locked, on one encoding; changed at the source, it is refused before anything trains."""
    data = mmrec_folder(tmp_path / "baby")
    datasets = [{"name": str(data), "features": "auto"}]
    sets = ("train.batch_size=64",)
    run = run_benchmark(config(datasets, tmp_path / "out", ["vbpr"], [1], sets))
    assert not run.failed and len(run.trained) == 1
    events = record(monkeypatch)
    run = run_benchmark(config(datasets, tmp_path / "out", ["vbpr"], [1, 2], sets))
    assert not run.failed and run.trained == ["baby/vbpr/seed2"]
    assert events == ["read baby", "train baby/vbpr/seed2"]  # the only dataset's features: kept for its cell

    np.save(data / "text_feat.npy", np.random.default_rng(5).normal(size=(8, 6)).astype(np.float32))
    events.clear()
    # both finished cells, in one sentence
    with pytest.raises(ConfigError, match=r"^2 cells were trained on other text features than .*: \S*baby/vbpr/seed1, "
                                          r"\S*baby/vbpr/seed2; use another --out"):
        run_benchmark(config(datasets, tmp_path / "out", ["vbpr"], [1, 2, 3], sets))
    assert events == ["read baby"]


def _count_choices_and_reads(monkeypatch, runs_dir: Path) -> tuple[list[int], list[str]]:
    """Spies on the report: the number of runs each choice of grid points saw, and the result.json files
    collect_runs read (relative to ``runs_dir``)."""
    choices: list[int] = []
    reads: list[str] = []
    chosen_points, read_json = report.chosen_points, report.read_json

    def choosing(runs, config):
        choices.append(len(runs))
        return chosen_points(runs, config)

    def reading(path):
        if sys._getframe(1).f_code.co_name == "collect_runs":  # not the learning curves' history
            reads.append(str(Path(path).relative_to(runs_dir)))
        return read_json(path)

    monkeypatch.setattr(report, "chosen_points", choosing)
    monkeypatch.setattr(report, "read_json", reading)
    return choices, reads


# ------------------------------------------------------------------------------------- grid_seeds: chosen once
def test_a_grid_seeds_run_chooses_once_and_reads_each_result_once(tmp_path, monkeypatch):
    """The points are chosen once, for the cells to train and for the report, and each finished cell's result.json
    is read once for both (by collect_runs); the report is the one write_report builds afresh from the folder."""
    data = write_data(tmp_path / "d")
    grid = {"name": "bprmf", "grid": {"train.lr": [0.001, 0.05]}}
    cfg = config([{"name": str(data), "features": None}], tmp_path / "out", ["mostpop", grid], [1, 2],
                 ("grid_seeds=1",))
    choices, reads = _count_choices_and_reads(monkeypatch, tmp_path / "out" / "runs" / "d")
    run = run_benchmark(cfg)
    assert not run.failed and len(run.trained) == 5 and len(run.unchosen) == 1
    assert choices == [4]  # after the first seeds: mostpop's two, each point's first
    assert sorted(reads) == sorted(f"{title.split('/', 1)[1]}/result.json" for title in run.trained)

    monkeypatch.undo()
    names = ("results.csv", "results.md", "tuned.csv", "runs.csv")
    made = {name: (tmp_path / "out" / name).read_text() for name in names}
    write_report(tmp_path / "out", cfg)
    assert {name: (tmp_path / "out" / name).read_text() for name in names} == made


def test_report_only_of_a_grid_seeds_run_chooses_once_and_reads_each_result_once(tmp_path, monkeypatch):
    """--report-only chose the points twice (for the later seeds its check requires, then for the report) on two
    reads of every cell's result.json; once now, the report unchanged."""
    data = write_data(tmp_path / "d")
    grid = {"name": "bprmf", "grid": {"train.lr": [0.001, 0.05]}}
    cfg = config([{"name": str(data), "features": None}], tmp_path / "out", ["mostpop", grid], [1, 2],
                 ("grid_seeds=1",))
    run = run_benchmark(cfg)
    assert not run.failed and len(run.trained) == 5
    names = ("results.csv", "results.md", "tuned.csv", "runs.csv")
    made = {name: (tmp_path / "out" / name).read_text() for name in names}
    for name in names:
        (tmp_path / "out" / name).unlink()
    choices, reads = _count_choices_and_reads(monkeypatch, tmp_path / "out" / "runs" / "d")
    runner.report_only(cfg)
    assert choices == [5]  # every finished cell: the first seeds choose, as in the run
    assert sorted(reads) == sorted(f"{title.split('/', 1)[1]}/result.json" for title in run.trained)
    assert {name: (tmp_path / "out" / name).read_text() for name in names} == made
