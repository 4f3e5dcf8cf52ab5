"""`grid_seeds: N` in `recgoat benchmark`: a grid's points train on the first N seeds only, the point validation
chooses there trains on every seed, and the report, --report-only and a resume all agree on that choice.

One small benchmark (120 users of the embedded ml-latest-small, MostPop and a 2 × 2 LightGCN grid, 2 seeds,
grid_seeds 1, 2 epochs) is run once per module; other tests copy its folder and edit cells' validation figures.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import re
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from recgoat.benchmark import load_config, run_benchmark, write_report
from recgoat.benchmark.runner import report_only
from recgoat.errors import ConfigError
from test_benchmark_grid import DATASET, GRID, POINTS, SETS  # the same small benchmark and 2 × 2 grid

torch.set_num_threads(1)


def make_config(out: Path, sets: list[str] | None = None, grid_seeds: int | None = 1):
    base = {"datasets": ["ml-latest-small"], "models": ["mostpop", {"name": "lightgcn", "grid": GRID}],
            "seeds": [2026, 2027], "epochs": 2, "out": str(out), "progress": False}
    extra = [f"grid_seeds={grid_seeds}"] if grid_seeds is not None else []
    return load_config(None, base, SETS + extra + (sets or []))


def cell(out: Path, label: str, seed: int) -> Path:
    return out / "runs" / DATASET / label / f"seed{seed}"


def valid(out: Path, label: str, seed: int) -> float:
    return json.loads((cell(out, label, seed) / "result.json").read_text())["valid"]["recall@20"]


def set_valid(out: Path, label: str, seed: int, value: float) -> None:
    path = cell(out, label, seed) / "result.json"
    r = json.loads(path.read_text())
    r["valid"]["recall@20"] = value
    path.write_text(json.dumps(r))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid_seeds")
    seen: list[tuple[str, str]] = []
    run = run_benchmark(make_config(out), on_cell=lambda c, status: seen.append((c.title, status)))
    assert not run.failed, run.failed
    return out, run, seen


def test_points_train_on_the_first_seed_and_the_chosen_one_on_every_seed(bench):
    out, run, seen = bench
    best = max(POINTS, key=lambda p: valid(out, p, 2026))  # seed 2026's validation alone chooses
    assert sorted(run.trained) == sorted([f"{DATASET}/mostpop/seed{s}" for s in (2026, 2027)]
                                         + [f"{DATASET}/{p}/seed2026" for p in POINTS]
                                         + [f"{DATASET}/{best}/seed2027"])
    assert sorted(run.unchosen) == sorted(f"{DATASET}/{p}/seed2027" for p in POINTS if p != best)
    assert all(not cell(out, p, 2027).exists() for p in POINTS if p != best)
    # every first-seed cell trains before any later seed of a grid point
    order = [t for t, status in seen if status == "done"]
    assert order[-1] == f"{DATASET}/{best}/seed2027"
    assert {(t, "unchosen") for t in run.unchosen} <= set(seen)


def test_the_report_shows_the_chosen_point_over_every_seed_and_the_others_over_their_first(bench):
    out, run, _ = bench
    best = max(POINTS, key=lambda p: valid(out, p, 2026))
    tuned = pd.read_csv(out / "tuned.csv").set_index("model").loc["lightgcn"]
    assert tuned["chosen"] == best and tuned["n_seeds"] == 2 and tuned["points"] == 4
    # the tuned row's validation figure is the chosen point's mean over every seed it trained on
    assert tuned["valid_selection_mean"] == pytest.approx((valid(out, best, 2026) + valid(out, best, 2027)) / 2,
                                                          abs=1e-12)
    agg = pd.read_csv(out / "results.csv").set_index("model")
    assert {p: int(agg.loc[p, "n_seeds"]) for p in POINTS} == {p: 2 if p == best else 1 for p in POINTS}
    md = (out / "results.md").read_text()
    assert "Grid points are trained on the first 1 seed (2026)" in md
    # the line gives the figure the choice was made on, then the point's figure over all its seeds
    assert (f"lightgcn: {best} (valid recall@20 {valid(out, best, 2026):.4f} on seed 2026, best of 4 points; "
            f"{tuned['valid_selection_mean']:.4f} over all its seeds)") in md
    assert tuned["chosen_on"] == pytest.approx(valid(out, best, 2026), abs=1e-12)
    assert "Fewer seeds" not in md  # an unchosen point has the seeds its grid compared
    assert "Grid points are trained on the first 1 seed (2026)" in (out / "report.html").read_text()


def test_a_resume_trains_nothing_and_report_only_accepts_the_folder(bench, tmp_path):
    out, _, _ = bench
    again = run_benchmark(make_config(out))
    assert again.trained == [] and len(again.skipped) == 7 and len(again.unchosen) == 3
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    before = (copy / "tuned.csv").read_text()
    (copy / "tuned.csv").unlink()
    report_only(make_config(copy))
    assert (copy / "tuned.csv").read_text() == before


def test_report_only_refuses_a_missing_first_seed_cell(bench, tmp_path):
    out, _, _ = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    best = max(POINTS, key=lambda p: valid(out, p, 2026))
    other = next(p for p in POINTS if p != best)
    shutil.rmtree(cell(copy, other, 2026))
    with pytest.raises(ConfigError, match=rf"1 of 7 requested cells are not finished: .*{re.escape(other)}/seed2026"):
        report_only(make_config(copy))


def test_a_new_winner_on_the_first_seed_trains_its_later_seeds(bench, tmp_path):
    """The choice is made again on each run from the finished first-seed cells: a point that now leads there
    trains its later seeds; the point chosen before keeps its cells but is reported over its first seed."""
    out, _, _ = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    old = max(POINTS, key=lambda p: valid(out, p, 2026))
    new = next(p for p in POINTS if p != old)
    set_valid(copy, new, 2026, 0.99)
    run = run_benchmark(make_config(copy))
    assert run.trained == [f"{DATASET}/{new}/seed2027"]
    assert f"{DATASET}/{old}/seed2027" in run.unchosen
    agg = pd.read_csv(copy / "results.csv").set_index("model")
    assert int(agg.loc[new, "n_seeds"]) == 2 and int(agg.loc[old, "n_seeds"]) == 1
    assert pd.read_csv(copy / "tuned.csv").set_index("model").loc["lightgcn", "chosen"] == new


def test_only_the_first_seeds_choose_even_when_a_later_seed_disagrees(bench, tmp_path):
    """With every cell finished (a run without grid_seeds), grid_seeds: 1 still chooses on seed 2026 alone; without
    it the mean over both seeds chooses."""
    out, _, _ = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    full = run_benchmark(make_config(copy, grid_seeds=None))  # the three missing later cells
    assert not full.failed and len(full.trained) == 3
    first, second = POINTS[2], POINTS[3]
    for p in POINTS:
        set_valid(copy, p, 2026, 0.1)
        set_valid(copy, p, 2027, 0.1)
    set_valid(copy, first, 2026, 0.5)   # leads on the first seed (mean 0.3)
    set_valid(copy, second, 2027, 0.6)  # leads on the mean (0.35)
    by_first = pd.read_csv(write_report(copy, make_config(copy))["tuned_csv"]).set_index("model")
    assert by_first.loc["lightgcn", "chosen"] == first and by_first.loc["lightgcn", "n_seeds"] == 2
    by_mean = pd.read_csv(write_report(copy, make_config(copy, grid_seeds=None))["tuned_csv"]).set_index("model")
    assert by_mean.loc["lightgcn", "chosen"] == second


def test_grid_seeds_at_or_above_the_seed_count_is_every_seed(bench, tmp_path):
    out, _, _ = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    with pytest.warns(UserWarning, match="grid_seeds: 5 is more than the 2 seeds given"):
        config = make_config(copy, grid_seeds=5)
    run = run_benchmark(config)
    assert len(run.trained) == 3 and run.unchosen == []
    assert "Grid points are trained" not in (copy / "results.md").read_text()


def test_grid_seeds_above_the_seed_count_is_said_once_naming_the_file(tmp_path):
    """`grid_seeds: 3` over 2 seeds was accepted without a word. It is not refused: `-s 2026` narrowing the seeds
    of a file with `grid_seeds: 2` means every point on that seed, as the count is read (grid_seed_count)."""
    path = tmp_path / "bench.yaml"
    path.write_text("datasets: [ml-latest-small]\nmodels: [{name: bprmf, grid: {train.lr: [0.001, 0.01]}}]\n"
                    "seeds: [1, 2]\ngrid_seeds: 3\n")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        load_config(path)
    assert [str(w.message) for w in said] == [f"{path}: grid_seeds: 3 is more than the 2 seeds given; every grid "
                                              f"point trains on every seed, as without grid_seeds"]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert load_config(path, {"seeds": [1, 2, 3]}).grid_seeds == 3  # as many: no warning
        load_config(path, {"seeds": [7]}, ["grid_seeds=1"])
    assert said == []
    with pytest.warns(UserWarning, match=r"^benchmark config: grid_seeds: 2 is more than the 1 seed given;"):
        load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf"], "seeds": [7]}, ["grid_seeds=2"])


@pytest.mark.parametrize("value, says", [("0", "greater than or equal to 1"), ("true", "integers"),
                                          ("two", "valid integer")])
def test_bad_grid_seeds_are_refused(tmp_path, value, says):
    with pytest.raises(ConfigError, match=f"grid_seeds.*{says}|{says}.*grid_seeds"):
        make_config(tmp_path, [f"grid_seeds={value}"], grid_seeds=None)
