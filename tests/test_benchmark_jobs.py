"""`jobs: N` (`recgoat benchmark -j N`): cells trained in N worker processes give the same cells, results, failures
and grid choices as one process, resume alike (after Ctrl-C too), and stop alike on an error that stops a
sequential run.

One small benchmark (120 users of the embedded ml-latest-small; MostPop, a 2 × 2 LightGCN grid with grid_seeds 1,
and a BPR-MF whose learning rate makes it diverge; 2 seeds, 2 epochs) runs once with jobs 1 and once with jobs 2.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recgoat.benchmark import load_config, run_benchmark
from recgoat.benchmark.cli import app
from recgoat.benchmark.runner import load_recorded_config
from recgoat.errors import ConfigError, RecGOATError
from test_benchmark_grid import DATASET, GRID, SETS  # the grid tests' small benchmark and 2 × 2 grid

torch.set_num_threads(1)

BAD = {"name": "bprmf", "label": "diverges", "train": {"lr": 1e30}}  # NaN loss in its first epoch
TITLES_BAD = {f"{DATASET}/diverges/seed{s}" for s in (2026, 2027)}


def make_config(out: Path, jobs: int, models: list | None = None, sets: list[str] | None = None):
    base = {"datasets": ["ml-latest-small"], "models": models or ["mostpop", {"name": "lightgcn", "grid": GRID}, BAD],
            "seeds": [2026, 2027], "epochs": 2, "out": str(out), "progress": False}
    return load_config(None, base, SETS + ["grid_seeds=1", f"jobs={jobs}", *(sets or [])])


def cells(out: Path) -> dict[str, dict]:
    """Every finished cell's result.json, by ``label/seed``."""
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
            for p in (out / "runs" / DATASET).glob("*/seed*/result.json")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    out = {}
    for jobs in (1, 2):
        seen: list[tuple[str, str]] = []
        run = run_benchmark(make_config(root / f"j{jobs}", jobs), on_cell=lambda c, st: seen.append((c.title, st)))
        out[jobs] = (root / f"j{jobs}", run, seen)
    return out


def test_two_workers_train_the_same_cells_as_one_process(runs):
    (one, run1, seen1), (two, run2, seen2) = runs[1], runs[2]
    assert sorted(run2.trained) == sorted(run1.trained) and len(run1.trained) == 7  # 2 MostPop, 4 + 1 LightGCN
    assert run2.unchosen == run1.unchosen and len(run1.unchosen) == 3
    assert set(run2.failed) == set(run1.failed) == TITLES_BAD
    assert all(msg.startswith("TrainingDiverged: ") for msg in run2.failed.values())
    assert all((two / "runs" / DATASET / "diverges" / f"seed{s}" / "error.txt").is_file() for s in (2026, 2027))
    a, b = cells(one), cells(two)
    assert set(a) == set(b) and len(a) == 7
    for key in a:  # the same seeds and code in another process: the same numbers, exactly
        assert a[key]["valid"] == b[key]["valid"] and a[key]["test"] == b[key]["test"], key
        assert a[key]["best_epoch"] == b[key]["best_epoch"], key
    # every cell told to on_cell with the same statuses (in completion order, not plan order)
    assert sorted(seen2) == sorted(seen1)
    # and the workers did train them: all 8 first-phase cells were handed out before any finished, where one
    # process finishes each before it starts the next
    assert [st for _, st in seen2[:8]] == ["start"] * 8
    assert [st for _, st in seen1[:2]] == ["start", "done"]
    assert sorted(st for t, st in seen2 if t in TITLES_BAD) == ["failed", "failed", "start", "start"]


def test_the_reports_agree(runs):
    metric_cols = lambda df: [c for c in df.columns if c.split("@")[0] in ("recall", "ndcg", "precision")]  # noqa: E731
    for name in ("tuned.csv", "results.csv"):
        a, b = (pd.read_csv(runs[j][0] / name) for j in (1, 2))
        cols = metric_cols(a)
        assert cols and a[["model", *cols]].equals(b[["model", *cols]]), name


def test_a_rerun_with_workers_resumes(runs):
    two = runs[2][0]
    before = {k: v["test"] for k, v in cells(two).items()}
    run = run_benchmark(make_config(two, 2))
    assert run.trained == [] and len(run.skipped) == 7
    assert set(run.failed) == TITLES_BAD  # tried again: a failed cell holds nothing to keep
    assert {k: v["test"] for k, v in cells(two).items()} == before


def test_on_error_raise_stops_with_the_cells_error(tmp_path):
    """The first failure stops the run: the cells not yet handed to a worker are cancelled (and not waited for),
    the ones running finish."""
    seeds = "seeds=[2026, 2027, 2028, 2029, 2030, 2031]"
    with pytest.raises(RecGOATError, match="loss became nan"):
        run_benchmark(make_config(tmp_path, 2, models=[BAD, "mostpop"], sets=["on_error=raise", seeds]))
    started = list((tmp_path / "runs" / DATASET).glob("*/seed*/cell.json"))
    assert 2 <= len(started) < 12  # BAD's six cells come first in the plan, MostPop's six after


def test_jobs_is_checked_and_is_not_a_setting_of_the_results(runs):
    with pytest.raises(ConfigError, match="jobs"):
        make_config(Path("unused"), 0)
    two = runs[2][0]
    assert json.loads((two / "benchmark.json").read_text())["jobs"] == 2
    assert load_recorded_config(two).jobs == 1  # how the folder was run, not what it holds
    res = CliRunner().invoke(app, ["--out", str(two), "--report-only", "-m", "mostpop", "-j", "2"])
    assert res.exit_code == 0, res.output
    bad = CliRunner().invoke(app, ["--dataset", "ml-latest-small", "--models", "mostpop", "-j", "0", "--out",
                                   str(two / "other")])
    assert bad.exit_code == 1 and "jobs" in bad.output and "Traceback" not in bad.output


def test_ctrl_c_stops_the_workers_and_a_rerun_resumes_to_the_same_numbers(tmp_path):
    """Ctrl-C (SIGINT to the whole foreground process group, workers included) ends a `-j 2` run with the CLI's
    "interrupted" line and exit code 130; the rerun trains on from what was kept, to the numbers of one
    uninterrupted process. The child restores SIGINT's default, which a background shell had set to ignore."""
    import signal
    import subprocess
    import sys
    import time

    args = ["-d", "ml-latest-small", "-m", "lightgcn", "-s", "2026,2027", "--epochs", "40", "-q",
            "--set", "train.num_threads=1", "--set", "datasets.ml-latest-small.features=null"]
    out = tmp_path / "interrupted"
    cli = [sys.executable, "-c", "from recgoat.cli import main; main()", "benchmark"]  # `recgoat benchmark`
    child = subprocess.Popen([*cli, *args, "-o", str(out), "-j", "2"],
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(8)  # start-up, the workers' start, a few epochs: each cell takes ~15 s more
    os.killpg(child.pid, signal.SIGINT)
    text, _ = child.communicate(timeout=120)
    assert child.returncode == 130 and "interrupted; finished cells are kept" in text, text
    assert len(list(out.glob("runs/*/*/seed*/result.json"))) < 2  # stopped before both cells finished

    def same_run(folder: Path, jobs: int):  # what the command line above asks for, from Python
        return load_config(None, {"datasets": ["ml-latest-small"], "models": ["lightgcn"], "seeds": [2026, 2027],
                                  "epochs": 40, "out": str(folder), "progress": False},
                           ["train.num_threads=1", "datasets.ml-latest-small.features=null", f"jobs={jobs}"])

    resumed = run_benchmark(same_run(out, 2))
    alone = run_benchmark(same_run(tmp_path / "alone", 1))
    assert not resumed.failed and len(resumed.trained) == 2
    by_seed = lambda run: {r["benchmark"]["seed"]: (r["valid"], r["test"]) for r in run.results}  # noqa: E731
    assert by_seed(resumed) == by_seed(alone)


PLATEAU = "bprmf: the BPR loss stayed at ln 2"  # the trainer's UserWarning for a run that learned nothing


def test_a_workers_warning_is_one_line_as_the_commands_own(tmp_path, monkeypatch, capfd):
    """`recgoat benchmark -j 2` printed a warning raised in a worker in Python's two-line form (the library's file
    and line, `UserWarning:`, then its source line `return self._fit(model, dataset)`), where the command prints
    its own as one `warning: …` line. Two BPR-MF cells whose learning rate leaves the loss at ln 2 warn, each in
    its worker. The dataset's own warning (its items file lacks an item) is shown once, by the parent that loads
    every dataset before any cell, not again by each worker loading it."""
    import sys

    from recgoat.cli import main
    from test_cli_warnings import write_folder

    shop = write_folder(tmp_path / "shop")
    args = ["benchmark", "-d", str(shop), "-m", "bprmf", "-s", "1,2", "--epochs", "2", "-q", "-j", "2",
            "-o", str(tmp_path / "bench"), "--set", f"datasets.{shop}.features=null",
            "--set", f"datasets.{shop}.prepare.k_core=0", "--set", "train.num_threads=1",
            "--set", "train.lr=1e-9"]
    monkeypatch.setattr(sys, "argv", ["recgoat", *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capfd.readouterr().err  # the workers write to the file descriptor they inherited
    assert e.value.code in (0, None), err
    warned = [line for line in err.splitlines() if PLATEAU in line]
    assert len(warned) == 2 and all(line.startswith(f"warning: {PLATEAU}") for line in warned), err
    assert "UserWarning" not in err and "return self._fit" not in err and ".py:" not in err, err
    assert [line for line in err.splitlines() if "has no row in this table" in line] == [
        f"warning: {shop / 'items.csv'}: 1 of the 15 items in interactions.csv has no row in this table (e.g. '14'); it gets "
        f"no text or image features"], err


def test_workers_warn_under_the_parents_filters_and_display():
    """What a worker is told (_warning_setup) and does with it (_warn_as_parent): the one-line display only where
    the parent has it (a Python caller of run_benchmark(jobs=2) keeps its own), the parent's filters always."""
    import warnings

    from recgoat.benchmark.workers import _warn_as_parent, _warning_setup
    from recgoat.errors import show_warning

    with warnings.catch_warnings():  # puts the filters and showwarning back
        warnings.simplefilter("ignore", UserWarning)
        shown = warnings.showwarning
        one_line, filters = _warning_setup()
        assert one_line is False and filters is not None
        warnings.resetwarnings()  # a fresh worker's filters, say
        _warn_as_parent(one_line, filters)
        assert warnings.showwarning is shown  # the caller's display, untouched
        assert warnings.filters[0][:3] == ("ignore", None, UserWarning)
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("hidden", UserWarning)
            assert seen == []
        warnings.showwarning = show_warning
        assert _warning_setup()[0] is True
        _warn_as_parent(True, None)  # no filters given (unpicklable): the worker keeps its own
        assert warnings.showwarning is show_warning and warnings.filters[0][:3] == ("ignore", None, UserWarning)
        _warn_as_parent(False, b"not a pickle")
        assert warnings.filters[0][:3] == ("ignore", None, UserWarning)
