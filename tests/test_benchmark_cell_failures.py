"""`recgoat benchmark` under failure: a diverging cell, an interrupted cell, a changed configuration.

One tiny benchmark (120 users of the embedded ml-latest-small, mostpop/bprmf, one seed, 1 epoch) is run
once per module; each test works on a copy of its folder or on a fresh one.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recgoat.benchmark import load_config, run_benchmark
from recgoat.benchmark.cli import app
from recgoat.benchmark.report import collect_runs
from recgoat.benchmark.runner import check_report_cells
from recgoat.errors import ConfigError

torch.set_num_threads(1)

DATASET = "ml-latest-small-u120"
SETS = ["datasets.ml-latest-small.max_users=120", "datasets.ml-latest-small.features=null",
        "train.num_threads=1", "train.batch_size=1024"]


def make_config(out: Path, sets: tuple[str, ...] = (), **over):
    base = {"datasets": ["ml-latest-small"], "models": ["mostpop", "bprmf"], "seeds": [2026], "epochs": 1,
            "out": str(out), "progress": False}
    return load_config(None, {**base, **over}, [*SETS, *sets])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qa") / "bench"
    run = run_benchmark(make_config(out))
    assert not run.failed and len(run.trained) == 2, run.failed
    return out


def test_diverging_cell_fails_alone_and_is_named(tmp_path):
    """A loss that becomes NaN fails its own cell; the later cells still run and the report names it."""
    out = tmp_path / "b"
    res = CliRunner().invoke(app, ["--dataset", "ml-latest-small", "--models", "bprmf,mostpop", "--seeds", "2026",
                                   "--epochs", "1", "--out", str(out), "--quiet",
                                   "--set", "models.bprmf.train.lr=1e30", "--set", "models.bprmf.params.reg_weight=1e30",
                                   *[a for s in SETS for a in ("--set", s)]])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"1 cell(s) failed; see error.txt in their run folders:\n  {DATASET}/bprmf/seed2026: TrainingDiverged:" \
        in res.output
    assert (out / "runs" / DATASET / "mostpop" / "seed2026" / "result.json").exists()  # the later cell ran
    md = (out / "results.md").read_text()
    assert "| mostpop |" in md and f"## Failed cells\n\n- {DATASET}/bprmf/seed2026: TrainingDiverged:" in md
    assert "loss became nan" in (out / "runs" / DATASET / "bprmf" / "seed2026" / "error.txt").read_text()


def test_bad_params_do_not_claim_the_run_folder(tmp_path):
    """Bad model params are refused before anything is written, so the corrected config then runs."""
    out = tmp_path / "b"
    with pytest.raises(ConfigError, match="^model 'bprmf': bad params: embedding_dim: Input should be a valid integer"):
        run_benchmark(make_config(out, ("models.bprmf.params.embedding_dim=abc",)))
    assert not out.exists()  # no cell trained, no cell.json recording params that never ran
    run = run_benchmark(make_config(out, models=["bprmf"]))
    assert run.trained == [f"{DATASET}/bprmf/seed2026"]


@pytest.mark.parametrize("change, named", [(("split_seed=7",), r"data\.split_seed: 2026 → 7"),
                                           (("datasets.ml-latest-small.prepare.k_core=10",),
                                            r"data\.prepare\.k_core: unset → 10")])
def test_finished_cells_of_other_data_are_not_read_back(bench, change, named):
    """Finished cells computed on another split or preparation are refused, not mixed into the table."""
    with pytest.raises(ConfigError,
                       match=rf"2 cells were run with a different configuration \({named}\): \S*mostpop/seed2026, "):
        run_benchmark(make_config(bench, change, seeds=[2026, 2027]))
    assert not (bench / "runs" / DATASET / "mostpop" / "seed2027").exists()
    with pytest.raises(ConfigError, match=rf"\({named}\)"):
        check_report_cells(make_config(bench, change))


def test_same_split_is_reused(bench):
    """split_seeds: true splits seed 2026's data with 2026, as the fixed split_seed 2026 did: nothing reruns."""
    run = run_benchmark(make_config(bench, ("split_seeds=true",)))
    assert not run.trained and len(run.skipped) == 2


def test_changed_model_is_refused_before_anything_trains(bench):
    """A changed model setting is refused up front: no other cell trains and benchmark.json is kept."""
    before = (bench / "benchmark.json").read_bytes()
    with pytest.raises(ConfigError, match=r"bprmf/seed2026: was run with a different configuration "
                                          r"\(train\.lr: 0\.001 → 0\.01\); use another --out, give the changed model "
                                          r"or dataset another `label`"):
        run_benchmark(make_config(bench, ("models.bprmf.train.lr=0.01",), seeds=[2026, 2027]))
    assert not (bench / "runs" / DATASET / "mostpop" / "seed2027").exists()
    assert (bench / "benchmark.json").read_bytes() == before
    # another label is another column: only its cells run
    run = run_benchmark(make_config(bench, ("models.bprmf.train.lr=0.01", "models.bprmf.label=bprmf-lr01")))
    assert run.trained == [f"{DATASET}/bprmf-lr01/seed2026"] and run.skipped == [f"{DATASET}/mostpop/seed2026"]


def test_cell_killed_before_its_per_user_file_is_rerun(bench, monkeypatch, trained_runs):
    """Killed while the trainer writes test_per_user.npz (now before its result.json): the cell is unfinished,
    never read back as finished (the report would need its npz); the rerun completes it from its checkpoint."""
    cell = bench / "runs" / DATASET / "bprmf" / "seed2026"
    for name in ("result.json", "test_per_user.npz", "cell.json"):
        (cell / name).unlink()
    shutil.rmtree(cell / "checkpoint")
    shutil.rmtree(cell / "best")
    real = np.savez_compressed

    def killed(path, *a, **kw):
        raise KeyboardInterrupt  # stands for kill -9 while the per-user file is written

    monkeypatch.setattr(np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(make_config(bench, models=["bprmf"]))
    monkeypatch.setattr(np, "savez_compressed", real)
    assert not (cell / "result.json").exists() and not (cell / "test_per_user.npz").exists()
    assert list(collect_runs(make_config(bench))["model"]) == ["mostpop"]
    with pytest.raises(ConfigError, match=f"1 of 2 requested cells are not finished: {DATASET}/bprmf/seed2026"):
        check_report_cells(make_config(bench))

    trained_runs.clear()  # the interrupted run above trained it once
    run = run_benchmark(make_config(bench))
    assert trained_runs == [str(cell)] and run.trained == [f"{DATASET}/bprmf/seed2026"] and not run.failed
    assert "benchmark" in json.loads((cell / "result.json").read_text()) and (cell / "test_per_user.npz").exists()
    assert "Significance:" in run.report["md"].read_text()


def test_model_needing_features_without_them_is_refused_up_front(tmp_path):
    out = tmp_path / "b"
    with pytest.raises(ConfigError, match=f"^dataset {DATASET}: model 'vbpr' needs features but `features` is null"):
        run_benchmark(make_config(out, models=["mostpop", "vbpr"]))
    assert not out.exists()


def test_cell_that_succeeds_later_loses_its_error_file(bench, monkeypatch):
    cell = bench / "runs" / DATASET / "bprmf" / "seed2026"
    (cell / "error.txt").write_text("RuntimeError: an earlier attempt\n")
    (cell / "result.json").unlink()
    run = run_benchmark(make_config(bench))
    assert run.trained == [f"{DATASET}/bprmf/seed2026"] and not (cell / "error.txt").exists()


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("datasets: [ml-latest-small]\nmodels: [bprmf]\nfoo: 1\n")
    with pytest.raises(ConfigError,
                       match=rf"^{path}: foo: unknown key \(valid keys: datasets, models, .*, progress, jobs\)$"):
        load_config(path)
    path.write_text("datasets: [ml-latest-small]\nmodels: []\n")
    res = CliRunner().invoke(app, ["--config", str(path), "--quiet"])
    assert res.exit_code == 1 and res.output == (f"error: {path}: a benchmark needs at least one dataset, one model "
                                                 f"and one seed\n"), res.output


def test_set_chooses_list_entries_by_label():
    """``models.lightgcn`` is the entry whose key is lightgcn, not the first entry whose model is lightgcn."""
    data = ["ml-latest-small"]
    for other in ("lightgcn", {"name": "lightgcn"}):
        cfg = load_config(None, {"datasets": data, "models": [{"name": "lightgcn", "label": "lgcn2"}, other]},
                          ["models.lightgcn.params.n_layers=4", "models.lgcn2.params.n_layers=1"])
        assert [(m.key, m.params) for m in cfg.models] == [("lgcn2", {"n_layers": 1}), ("lightgcn", {"n_layers": 4})]
    # a name still reaches the one labelled entry of that model, and is refused when it would be a guess
    cfg = load_config(None, {"datasets": data, "models": [{"name": "lightgcn", "label": "lgcn2"}]},
                      ["models.lightgcn.params.n_layers=4"])
    assert cfg.models[0].params == {"n_layers": 4}
    with pytest.raises(ConfigError, match=r"^--set models.lightgcn.params.n_layers: 'lightgcn' names several entries "
                                          r"of models; use a label: \['a', 'b'\]$"):
        load_config(None, {"datasets": data, "models": [{"name": "lightgcn", "label": "a"},
                                                        {"name": "lightgcn", "label": "b"}]},
                    ["models.lightgcn.params.n_layers=4"])


@pytest.mark.parametrize("over, sets, message", [
    ({"seeds": [-1]}, [], "seeds must be >= 0 (numpy's generators take no negative seed): [-1]"),
    ({}, ["train.seed=5"], "train.seed: the training seed of each cell is its entry of `seeds`; list the seeds there"),
    ({}, ["models.bprmf.train.seed=5"], "models.bprmf.train.seed: the training seed of each cell is its entry of "
                                        "`seeds`; list the seeds there"),
    # a model selected on another metric would be ranked on a number the others do not report
    ({}, ["models.bprmf.train.metric=ndcg@20"], "models.bprmf.train.metric: every model is selected on the "
                                                "benchmark's train.metric (recall@20); set it there"),
])
def test_seed_settings_that_would_be_ignored_or_misreported_are_refused(over, sets, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf"], **over}, sets)
    assert str(e.value) == f"benchmark config: {message}"


def test_a_line_per_user_folder_is_benchmarked_as_already_split(tmp_path):
    """The runner told pre-split folders by manifest.json or *.inter only, so a line-per-user folder went
    to the raw loader, which refused it ("already split: load them with recgoat.datasets.load")."""
    from recgoat.datasets import load, save_lines

    data = save_lines(load("ml-latest-small"), tmp_path / "lines")
    cfg = load_config(None, {"datasets": [str(data)], "models": ["mostpop"], "seeds": [2026], "epochs": 1,
                             "out": str(tmp_path / "b"), "progress": False})
    run = run_benchmark(cfg)
    assert not run.failed and len(run.trained) == 1, run.failed
    cell = json.loads(next((tmp_path / "b").rglob("cell.json")).read_text())
    assert cell["data"]["split_seed"] is None  # the folder's own split, not a re-split
