"""Dataset and feature folders given by relative paths are found from any working folder afterwards.

A benchmark's ``cell.json`` recorded them as typed only, so `recgoat evaluate CELL`, `recgoat export CELL` (its
dataset and its feature folder), a resume and `--report-only` found them only from the folder the benchmark
ran in (`cd results && recgoat export runs/...` failed). It now records ``paths`` beside them: each made
absolute, the working folder and the cell's folder; a record of an older version (no ``paths``) reads as before.

Benchmarks run on a constructed generic folder (40 users × 12 interactions), MostPop (and VBPR on a stand-in
text matrix where a feature folder is needed), 1 epoch, one thread.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recgoat.benchmark import load_config, run_benchmark, runner
from recgoat.benchmark.runner import report_only
from recgoat.cli import app
from recgoat.errors import DataError
from recgoat.training.run import evaluate

from training_helpers import write_stub_text_features

torch.set_num_threads(1)
cli = CliRunner()
SETS = ["train.num_threads=1", "train.batch_size=1024"]


def write_data(folder: Path) -> Path:
    """A generic-layout folder: 40 users with 12 distinct items each among 30."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), 1.0, t) for u in range(40) for t, i in enumerate(rng.choice(30, 12, replace=False))]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).to_csv(folder / "interactions.csv",
                                                                               index=False)
    return folder


def write_text_features(spec: dict, folder: Path) -> Path:
    """A stand-in text.npy (+ manifest) for the benchmark's data of ``spec`` (split seed 2026)."""
    ds = runner.load_dataset(runner.DatasetSpec(**spec), 2026)
    write_stub_text_features(ds, folder)
    return folder


def config(datasets: list, out: str, models: list[str]):
    base = {"datasets": datasets, "models": models, "seeds": [1], "epochs": 1, "out": out, "progress": False}
    return load_config(None, base, SETS)


DATASETS = [{"name": "data/tiny", "features": "feats/tiny"}]  # relative to the project folder


@pytest.fixture(scope="module")
def proj(tmp_path_factory) -> Path:
    """``proj``: data/tiny, feats/tiny and a benchmark run from ``proj`` with relative paths into ``results``
    (MostPop and VBPR, which reads the feature folder)."""
    root = tmp_path_factory.mktemp("paths") / "proj"
    write_data(root / "data" / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        write_text_features({"name": "data/tiny"}, root / "feats" / "tiny")
        run = run_benchmark(config(DATASETS, "results", ["mostpop", "vbpr"]))
    assert not run.failed and len(run.trained) == 2
    return root


def cell(root: Path, model: str = "mostpop") -> Path:
    return root / "results" / "runs" / "tiny" / model / "seed1"


def test_cell_json_records_typed_and_absolute_paths(proj):
    meta = json.loads((cell(proj, "vbpr") / "cell.json").read_text())
    assert meta["data"]["name"] == "data/tiny" and meta["data"]["features"] == "feats/tiny"  # as typed
    assert meta["paths"] == {"dataset": str(proj / "data" / "tiny"), "features": str(proj / "feats" / "tiny"),
                             "cwd": str(proj), "run_dir": str(cell(proj, "vbpr"))}


def test_evaluate_a_cell_from_another_folder(proj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = json.loads((cell(proj) / "result.json").read_text())["test"]["recall@20"]
    assert evaluate(cell(proj))["recall@20"] == pytest.approx(want, abs=1e-6)
    monkeypatch.chdir(proj / "results")
    r = cli.invoke(app, ["evaluate", "runs/tiny/mostpop/seed1"])
    assert r.exit_code == 0, (r.output, r.exception)


def test_export_a_cell_from_inside_the_results_folder(proj, tmp_path, monkeypatch):
    """`cd results && recgoat export runs/...`: the dataset and the given feature folder are both found."""
    monkeypatch.chdir(proj / "results")
    r = cli.invoke(app, ["export", "runs/tiny/vbpr/seed1", "--out", str(tmp_path / "art")])
    assert r.exit_code == 0, (r.output, r.exception)
    out = " ".join(r.stdout.split())
    assert f"dataset: {proj / 'data' / 'tiny'}, prepared as the run's cell.json records" in out
    assert f"features: {proj / 'feats' / 'tiny'} (the cell's, from cell.json" in out
    meta = json.loads((tmp_path / "art" / "artifact.json").read_text())
    assert meta["dataset"] == "tiny"
    assert meta["dataset_fingerprint"] == json.loads((cell(proj, "vbpr") / "result.json").read_text())[
        "dataset_fingerprint"]


def test_resume_and_report_only_from_another_folder(proj, tmp_path, monkeypatch):
    """The same relative config from another working folder: its paths are not found there, the cells'
    records find them; nothing retrains, and the report is rebuilt. (A copy: benchmark.json is rewritten.)"""
    shutil.copytree(proj / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path / "results")
    cfg = config(DATASETS, ".", ["mostpop", "vbpr"])
    paths = report_only(cfg)
    assert "tiny" in Path(paths["md"]).read_text()
    run = run_benchmark(cfg)
    assert run.trained == [] and len(run.skipped) == 2 and not run.failed


def small_bench(root: Path, monkeypatch, name: str = "data/tiny") -> Path:
    """A MostPop benchmark run from ``root`` on ``root/<name>`` into ``root/results``; its cell."""
    write_data(root / name)
    monkeypatch.chdir(root)
    run = run_benchmark(config([{"name": name, "features": None}], "results", ["mostpop"]))
    assert run.trained
    return cell(root)


def test_a_moved_project_folder_is_found_beside_the_moved_cell(tmp_path, monkeypatch):
    """The project (data and results) moved as a whole: the recorded absolute paths are gone, the data is
    where it lies relative to the cell now."""
    small_bench(tmp_path / "old", monkeypatch)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    shutil.move(tmp_path / "old", tmp_path / "new")
    want = json.loads((cell(tmp_path / "new") / "result.json").read_text())["test"]["recall@20"]
    assert evaluate(cell(tmp_path / "new"))["recall@20"] == pytest.approx(want, abs=1e-6)
    r = cli.invoke(app, ["export", str(cell(tmp_path / "new")), "--out", str(tmp_path / "art")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert f"dataset: {tmp_path / 'new' / 'data' / 'tiny'}," in " ".join(r.stdout.split())


def test_a_deleted_dataset_is_named_with_the_paths_tried_and_the_override(tmp_path, monkeypatch):
    run_dir = small_bench(tmp_path / "p", monkeypatch)
    shutil.move(tmp_path / "p" / "data" / "tiny", tmp_path / "kept")
    monkeypatch.chdir(tmp_path)
    record, absolute = run_dir / "cell.json", tmp_path / "p" / "data" / "tiny"
    with pytest.raises(DataError) as e:
        evaluate(run_dir)
    assert str(e.value) == (f"{record}: records dataset data/tiny (the benchmark ran in {tmp_path / 'p'}), which "
                            f"is not found at {absolute} nor {tmp_path / 'data' / 'tiny'}: moved or deleted; pass "
                            f"dataset_source= with the data the cell was trained on (prepared, split and labelled "
                            f"as cell.json records)")  # evaluate's argument; the commands name --dataset
    r = cli.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "art")])
    assert r.exit_code == 1 and f"{record}: records dataset data/tiny" in " ".join(r.stderr.split())
    assert "pass --dataset" in r.stderr and not (tmp_path / "art").exists()
    # the override: the moved data, prepared, split and labelled as the cell records (fingerprint checked)
    want = json.loads((run_dir / "result.json").read_text())["test"]["recall@20"]
    r = cli.invoke(app, ["evaluate", str(run_dir), "--dataset", str(tmp_path / "kept")])
    assert r.exit_code == 0, (r.output, r.exception)
    assert evaluate(run_dir, dataset_source=str(tmp_path / "kept"))["recall@20"] == pytest.approx(want, abs=1e-6)


def test_resolving_elsewhere_keeps_the_fingerprint_check(tmp_path, monkeypatch):
    """The recorded folder found from elsewhere but its data changed since: refused as before."""
    run_dir = small_bench(tmp_path / "p", monkeypatch)
    inter = tmp_path / "p" / "data" / "tiny" / "interactions.csv"
    pd.read_csv(inter).iloc[:-40].to_csv(inter, index=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="fingerprint"):
        evaluate(run_dir)
    r = cli.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "art")])
    assert r.exit_code == 1 and "fingerprint" in r.stderr


def test_old_cell_json_without_paths_reads_as_before(tmp_path, monkeypatch):
    """A cell.json written by an older version (no ``paths``, written by hand here): found from the folder the
    benchmark ran in, a resume there is no configuration change, and elsewhere it fails as it did."""
    run_dir = small_bench(tmp_path / "p", monkeypatch)
    meta = json.loads((run_dir / "cell.json").read_text())
    old = {k: meta[k] for k in ("model", "params", "train", "seed", "hash", "data", "dataset",
                                "dataset_fingerprint")}
    assert old["data"]["name"] == "data/tiny"
    (run_dir / "cell.json").write_text(json.dumps(old))
    want = json.loads((run_dir / "result.json").read_text())["test"]["recall@20"]
    assert evaluate(run_dir)["recall@20"] == pytest.approx(want, abs=1e-6)  # from tmp_path/p
    run = run_benchmark(config([{"name": "data/tiny", "features": None}], "results", ["mostpop"]))
    assert run.trained == [] and run.skipped
    monkeypatch.chdir(tmp_path)
    r = cli.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "art")])
    assert r.exit_code == 1
    assert "records dataset data/tiny, which is not found from here (no such folder here; a relative path is " \
           "relative to the folder the run was started in)" in " ".join(r.stderr.split())


def test_hand_edited_features_do_not_take_the_recorded_absolute_path(proj, tmp_path):
    """``paths`` is trusted only for the typed path it was recorded for: a record edited since (another
    ``data.features``) is read as typed."""
    meta = json.loads((cell(proj, "vbpr") / "cell.json").read_text())
    found, _ = runner.locate_recorded("feats/tiny", meta, "features", cell(proj, "vbpr"))
    assert found == str(proj / "feats" / "tiny")
    found, tried = runner.locate_recorded("other/feats", meta, "features", cell(proj, "vbpr"))
    assert found is None and tried == [os.path.abspath("other/feats")]


def test_a_registered_dataset_name_stays_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config([{"name": "ml-latest-small", "max_users": 25, "features": None}], "results", ["mostpop"])
    run = run_benchmark(cfg)
    assert run.trained and not run.failed
    run_dir = tmp_path / "results" / "runs" / "ml-latest-small-u25" / "mostpop" / "seed1"
    meta = json.loads((run_dir / "cell.json").read_text())
    assert meta["data"]["name"] == meta["paths"]["dataset"] == "ml-latest-small"
    assert runner.locate_recorded("ml-latest-small", meta, "dataset", run_dir) == ("ml-latest-small", [])
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path / "x")
    want = json.loads((run_dir / "result.json").read_text())["test"]["recall@20"]
    assert evaluate(run_dir)["recall@20"] == pytest.approx(want, abs=1e-6)


def test_a_train_run_with_relative_paths_is_evaluated_and_exported_from_elsewhere(proj, tmp_path, monkeypatch):
    """`recgoat train` records its dataset and feature folders absolute in run_config.json (this held before
    too: a guard, not a fix)."""
    monkeypatch.chdir(proj)
    r = cli.invoke(app, ["train", "--dataset", "data/tiny", "--model", "vbpr", "--features", "feats/tiny",
                         "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--set", "trainer.progress=false",
                         "--set", "data.k_core=5", "--set", "data.seed=2026"])
    assert r.exit_code == 0, (r.output, r.exception)
    recorded = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert recorded["data"]["name"] == str(proj / "data" / "tiny")
    assert recorded["features"] == str(proj / "feats" / "tiny")
    monkeypatch.chdir(tmp_path)
    r = cli.invoke(app, ["evaluate", "run"])
    assert r.exit_code == 0, (r.output, r.exception)
    r = cli.invoke(app, ["export", "run", "--out", "art"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert f"features: {proj / 'feats' / 'tiny'} (the run's" in " ".join(r.stdout.split())
