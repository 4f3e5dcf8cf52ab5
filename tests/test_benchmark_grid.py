"""Hyper-parameter grids in `recgoat benchmark`: expansion into labelled points, and the report's choice of
each grid's point on validation only (never on test).

One small benchmark (120 users of the embedded ml-latest-small, MostPop and a 2 × 2 LightGCN grid, 2 seeds,
2 epochs) is run once per module; the report tests copy its folder and edit the cells' validation figures.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from recgoat.benchmark import load_config, run_benchmark, write_report
from recgoat.benchmark.runner import BenchmarkConfig, expand_grid
from recgoat.errors import ConfigError

torch.set_num_threads(1)

DATASET = "ml-latest-small-u120"
SETS = ["datasets.ml-latest-small.max_users=120", "datasets.ml-latest-small.features=null", "train.num_threads=1",
        "train.batch_size=1024"]
GRID = {"train.lr": [0.0001, 0.01], "params.n_layers": [1, 2]}
POINTS = ["lightgcn+lr=0.0001+n_layers=1", "lightgcn+lr=0.0001+n_layers=2", "lightgcn+lr=0.01+n_layers=1",
          "lightgcn+lr=0.01+n_layers=2"]


def make_config(out: Path, sets: list[str] | None = None):
    base = {"datasets": ["ml-latest-small"], "models": ["mostpop", {"name": "lightgcn", "grid": GRID}],
            "seeds": [2026, 2027], "epochs": 2, "out": str(out), "progress": False}
    return load_config(None, base, SETS + (sets or []))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    cfg = make_config(out)
    run = run_benchmark(cfg)
    assert not run.failed, run.failed
    return cfg, out


def result(out: Path, label: str, seed: int) -> dict:
    return json.loads((out / "runs" / DATASET / label / f"seed{seed}" / "result.json").read_text())


def edit_valid(out: Path, label: str, value: float) -> None:
    """Give every seed of a point the validation figure ``value`` (the test figures stay as trained)."""
    for seed in (2026, 2027):
        path = out / "runs" / DATASET / label / f"seed{seed}" / "result.json"
        r = json.loads(path.read_text())
        r["valid"]["recall@20"] = value
        path.write_text(json.dumps(r))


def mean_test(out: Path, label: str, metric: str = "recall@20") -> float:
    return sum(result(out, label, s)["test"][metric] for s in (2026, 2027)) / 2


# ------------------------------------------------------------------------------------- expansion
def test_grid_expands_into_labelled_points_in_order():
    cfg = BenchmarkConfig(datasets=["ml-latest-small"], models=["mostpop", {"name": "lightgcn", "grid": GRID,
                                                                          "params": {"embedding_dim": 16}}])
    points = cfg.models[1:]
    assert [m.key for m in points] == POINTS
    assert [(m.train["lr"], m.params["n_layers"]) for m in points] == [(0.0001, 1), (0.0001, 2), (0.01, 1),
                                                                       (0.01, 2)]
    assert all(m.params["embedding_dim"] == 16 and m.grid_of == "lightgcn" and m.name == "lightgcn" for m in points)
    assert cfg.models[0].grid_of is None


def test_nested_sections_and_set_give_the_same_grid(tmp_path):
    nested = BenchmarkConfig(datasets=["ml-latest-small"], models=[
        {"name": "lightgcn", "grid": {"train": {"lr": [0.0001, 0.01]}, "params": {"n_layers": [1, 2]}}}])
    by_set = load_config(None, {"datasets": ["ml-latest-small"], "models": ["lightgcn"], "out": str(tmp_path)},
                         ["models.lightgcn.grid.train.lr=[0.0001, 0.01]", "models.lightgcn.grid.params.n_layers=[1,2]"])
    assert [m.key for m in nested.models] == [m.key for m in by_set.models] == POINTS


def test_set_leaves_the_callers_entries_as_they_were(tmp_path):
    """`--set models.X.grid...` wrote into the caller's own grid dict: a module's GRID, shared with another test
    module, grew a third layer count for every later config made from it."""
    grid = {"train.lr": [0.0001, 0.01]}
    entry = {"name": "lightgcn", "grid": grid}
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "models": [entry], "out": str(tmp_path)},
                      SETS + ["models.lightgcn.grid.params.n_layers=[1, 2]"])
    assert len(cfg.models) == 4
    assert grid == {"train.lr": [0.0001, 0.01]} and entry == {"name": "lightgcn", "grid": grid}


def test_grid_values_override_the_preset_and_label_keeps_its_name():
    cfg = BenchmarkConfig(datasets=["ml-latest-small"], models=[
        {"name": "recgoat", "label": "rg", "preset": "ml100k", "grid": {"params.view_dropout": [0.0, 0.5]}}])
    assert [m.key for m in cfg.models] == ["rg+view_dropout=0.0", "rg+view_dropout=0.5"]
    assert [m.params["view_dropout"] for m in cfg.models] == [0.0, 0.5]
    assert cfg.models[0].params["use_profile"] is False  # the preset's other values stay
    assert {m.grid_of for m in cfg.models} == {"rg"}


def test_a_setting_in_both_sections_is_named_with_its_section():
    (a, b) = expand_grid({"name": "m", "grid": {"params.lr": [1], "train.lr": [0.5, 2]}})
    assert (a["label"], b["label"]) == ("m+params.lr=1+train.lr=0.5", "m+params.lr=1+train.lr=2")
    assert (a["params"], a["train"]) == ({"lr": 1}, {"lr": 0.5})


def test_list_and_boolean_values_name_their_points():
    labels = [p["label"] for p in expand_grid({"name": "recgoat", "grid": {
        "params.modalities": [["text", "image"], ["text"], []], "params.use_profile": [True, False]}})]
    assert labels[:3] == ["recgoat+modalities=text-image+use_profile=true",
                          "recgoat+modalities=text-image+use_profile=false", "recgoat+modalities=text+use_profile=true"]
    assert labels[-1] == "recgoat+modalities=none+use_profile=false"


@pytest.mark.parametrize("grid, says", [
    ({"lr": [0.1]}, "grid.lr: a grid setting is params.NAME or train.NAME (params.lr or train.lr?)"),
    ({"model.lr": [0.1]}, "grid.model.lr: a grid setting is params.NAME or train.NAME"),
    ({"train.lr": 0.1}, "grid.train.lr: a non-empty list of values, got 0.1"),
    ({"train.lr": []}, "grid.train.lr: a non-empty list of values, got []"),
    ({"train.lr": [0.1, 0.1]}, "grid.train.lr: values repeat: [0.1, 0.1]"),
    ({"params.x": [{"a": 1}]}, "a grid value is a number, string, boolean or list, got {'a': 1}"),
    ([0.1], "models.lightgcn.grid: a mapping of settings to lists of values"),
    ({}, "models.lightgcn.grid: a mapping of settings to lists of values"),
])
def test_bad_grids_are_named(tmp_path, grid, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"datasets": ["ml-latest-small"], "models": [{"name": "lightgcn", "grid": grid}],
                           "out": str(tmp_path)})
    assert says in str(e.value)


def test_grid_names_clash_and_unsafe_values_are_refused(tmp_path):
    def err(models):
        with pytest.raises(ConfigError) as e:
            load_config(None, {"datasets": ["ml-latest-small"], "models": models, "out": str(tmp_path)})
        return str(e.value)

    assert "'lightgcn' names both a model and a grid" in err(
        ["lightgcn", {"name": "lightgcn", "label": "lg2", "grid_of": "lightgcn"}])
    assert "give `grid` or `grid_of`, not both" in err([{"name": "lightgcn", "grid": GRID, "grid_of": "x"}])
    assert "cannot name a folder" in err([{"name": "recgoat", "grid": {"params.fusion": ["a b"]}}])


def test_a_bad_setting_of_a_grid_is_named_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"datasets": ["ml-latest-small"], "out": str(tmp_path), "models": [
            {"name": "lightgcn", "grid": {"params.n_layerz": [1, 2, 3]}}]})
    assert str(e.value).count("n_layerz: unknown key") == 1, str(e.value)
    assert "did you mean 'n_layers'" in str(e.value)


def test_hand_labelled_variants_can_form_a_grid(tmp_path):
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "out": str(tmp_path), "models": [
        {"name": "lightgcn", "label": "lg-small", "params": {"embedding_dim": 8}, "grid_of": "lg"},
        {"name": "lightgcn", "label": "lg-big", "params": {"embedding_dim": 32}, "grid_of": "lg"}]})
    assert [m.grid_of for m in cfg.models] == ["lg", "lg"]


GRID_FILE = """datasets: [ml-latest-small]
models:
  - {name: lightgcn, grid: {params.n_layers: [1, 2]}}
  - {name: lightgcn, label: lg-extra, grid_of: lightgcn, params: {n_layers: 4}, train: {min_epochs: 5}}
  - {name: freedom, grid: {params.dropout: [0.8, 0.9]}}
  - {name: mostpop}
  - {name: bprmf, label: mf-small, grid_of: mf, params: {embedding_dim: 8}}
  - {name: bprmf, label: mf-big, grid_of: mf, params: {embedding_dim: 32}}
"""


@pytest.mark.parametrize("chosen, keys", [
    # the grid's name brings the point the file adds to it (`-m lightgcn` chose among 2 points, not 3)
    (["lightgcn"], ["lightgcn+n_layers=1", "lightgcn+n_layers=2", "lg-extra"]),
    # named as well, before or after its grid, it runs once, where it was first brought
    (["lightgcn", "lg-extra"], ["lightgcn+n_layers=1", "lightgcn+n_layers=2", "lg-extra"]),
    (["lg-extra", "lightgcn", "mostpop"], ["lg-extra", "lightgcn+n_layers=1", "lightgcn+n_layers=2", "mostpop"]),
    (["lg-extra"], ["lg-extra"]),  # a point alone is still a point alone
    (["freedom", "mostpop"], ["freedom+dropout=0.8", "freedom+dropout=0.9", "mostpop"]),
    # a grid of hand-labelled entries only, by its name (there is no entry `mf`)
    (["mf"], ["mf-small", "mf-big"]),
    (["mf-big", "mf", "mf-small"], ["mf-big", "mf-small"]),
])
def test_models_option_with_a_grid_name_brings_the_points_that_join_it(tmp_path, chosen, keys):
    path = tmp_path / "bench.yaml"
    path.write_text(GRID_FILE)
    cfg = load_config(path, {"models": chosen})
    assert [m.key for m in cfg.models] == keys
    extra = [m for m in cfg.models if m.key == "lg-extra"]
    assert [(m.grid_of, m.params, m.train) for m in extra] == [("lightgcn", {"n_layers": 4}, {"min_epochs": 5})][:len(extra)]


def test_models_option_naming_a_grid_twice_is_still_refused(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(GRID_FILE)
    with pytest.raises(ConfigError, match="model labels must be unique"):
        load_config(path, {"models": ["lightgcn", "lightgcn"]})


# ------------------------------------------------------------------------------------- runs and report
def test_every_point_trains_once_and_a_resume_trains_none(bench, tmp_path):
    cfg, out = bench
    found = sorted(p.name for p in (out / "runs" / DATASET).iterdir())
    assert found == sorted(["mostpop", *POINTS])
    assert result(out, POINTS[0], 2026)["train_config"]["lr"] == 0.0001
    again = run_benchmark(make_config(out))
    assert again.trained == [] and len(again.skipped) == 10
    wider = tmp_path / "wider"
    shutil.copytree(out, wider)
    cfg = make_config(wider, ["models.lightgcn.grid.params.n_layers=[1, 2, 3]"])
    grown = run_benchmark(cfg)
    assert sorted(grown.trained) == [f"{DATASET}/lightgcn+lr={lr}+n_layers=3/seed{s}"
                                     for lr in ("0.0001", "0.01") for s in (2026, 2027)]


def test_tuned_rows_are_the_best_validation_points(bench):
    cfg, out = bench
    tuned = pd.read_csv(out / "tuned.csv")
    valid = {p: (result(out, p, 2026)["valid"]["recall@20"] + result(out, p, 2027)["valid"]["recall@20"]) / 2
             for p in POINTS}
    best = max(POINTS, key=lambda p: valid[p])
    row = tuned.set_index("model").loc["lightgcn"]
    assert row["chosen"] == best and row["points"] == 4
    assert row["valid_selection_mean"] == pytest.approx(valid[best], abs=1e-12)
    assert row["recall@20_mean"] == pytest.approx(mean_test(out, best), abs=1e-12)
    assert list(tuned["model"]) == ["mostpop", "lightgcn"]
    md = (out / "results.md").read_text()
    assert md.index("## Tuned on validation") < md.index(f"\n## {DATASET}\n")
    assert f"lightgcn: {best} (valid recall@20 {valid[best]:.4f}, best of 4 points)" in md
    html = (out / "report.html").read_text()
    assert "Tuned on validation" in html and f"{best} (valid recall@20" in html


def test_every_point_tables_bold_no_test_figure(bench):
    """Bolding the best test mean among a grid's points would show the point test chooses: the every-point
    section bolds only its validation table; the tuned section, one row per grid, bolds its test tables."""
    cfg, out = bench
    for text, section_start in (((out / "results.md").read_text(), f"\n## {DATASET}\n"),
                                ((out / "report.html").read_text(), f"<h2>{DATASET}</h2>")):
        tuned_part, every = text.split(section_start)
        test_tables = every[:every.index("alidation recall@20 (the selection metric)")]
        assert "Test metrics @20" in test_tables and "**" not in test_tables and "<b>" not in test_tables
        assert "not bolded here" in every
        valid = every[every.index("(the selection metric)"):]
        assert ("**" in valid[:valid.index("Cost")]) or ("<b>" in valid[:valid.index("Cost")])
        assert "**" in tuned_part or "<b>" in tuned_part


def test_every_grid_point_is_plotted_with_its_validation_mean(bench, tmp_path):
    """The HTML's grid-search plot reads grid_point_stats: per point, the mean and sample std of its validation
    figures over the seeds compared (here edited to known values), and how many seeds finished."""
    import base64

    from recgoat.benchmark.report import collect_runs, grid_point_stats

    cfg, out = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    for i, p in enumerate(POINTS):
        for seed, v in ((2026, 0.1 + 0.1 * i), (2027, 0.2 + 0.1 * i)):
            path = copy / "runs" / DATASET / p / f"seed{seed}" / "result.json"
            r = json.loads(path.read_text())
            r["valid"]["recall@20"] = v
            path.write_text(json.dumps(r))
    unfinished = copy / "runs" / DATASET / POINTS[0] / "seed2027" / "result.json"
    r = json.loads(unfinished.read_text())
    del r["benchmark"]  # not done: the point has one seed of two
    unfinished.write_text(json.dumps(r))
    cfg = make_config(copy)
    stats = grid_point_stats(collect_runs(cfg), cfg)
    assert list(stats["model"]) == POINTS and set(stats["grid"]) == {"lightgcn"}
    assert list(stats["seeds"]) == [1, 2, 2, 2]
    assert stats["valid_mean"].tolist() == pytest.approx([0.1, 0.25, 0.35, 0.45], abs=1e-12)
    assert stats["valid_std"].isna().tolist() == [True, False, False, False]
    assert stats["valid_std"].iloc[1:].tolist() == pytest.approx([0.1 / 2 ** 0.5] * 3, abs=1e-12)
    page = write_report(copy, cfg)["html"].read_text()
    tuned_part = page[page.index("Tuned on validation"):page.index(f"<h2>{DATASET}</h2>")]
    for alt in (f"grid search {DATASET}", f"metric bars {DATASET} (tuned)"):
        src = tuned_part.split(f"<img alt='{alt}' src='data:image/png;base64,")[1].split("'")[0]
        assert base64.b64decode(src)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("baseline, says", [
    ("lightgcn+lr=0.01+n_layers=1", "is a grid point: name its grid"),
    ("lightgnc", "is not among the models (mostpop, lightgcn); add it, or set baseline: null"),
])
def test_a_baseline_is_a_model_or_a_grid(tmp_path, baseline, says):
    with pytest.raises(ConfigError, match=f"baseline {baseline!r} {says}".replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+")):
        make_config(tmp_path, [f"baseline={baseline}"])


def test_the_tuned_rows_are_compared_with_the_baseline(bench, tmp_path):
    """With grids, baseline.csv and the tuned section compare each grid's chosen point (by the grid's name)."""
    cfg, out = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    cfg = make_config(copy, ["baseline=mostpop"])
    paths = write_report(copy, cfg)
    cmp = pd.read_csv(paths["baseline_csv"])
    assert list(cmp["model"]) == ["lightgcn"] and list(cmp["baseline"]) == ["mostpop"]
    tuned = pd.read_csv(paths["tuned_csv"]).set_index("model")
    rel = tuned.loc["lightgcn", "recall@20_mean"] / tuned.loc["mostpop", "recall@20_mean"] - 1
    assert cmp.loc[0, "recall@20_rel"] == pytest.approx(rel, rel=1e-12)
    md = paths["md"].read_text()
    assert md.index("#### Against the baseline (mostpop)") < md.index(f"\n## {DATASET}\n")
    assert "Against the baseline" in paths["html"].read_text()
    assert "baseline_csv" not in write_report(copy, make_config(copy))  # none asked for: none written


def test_validation_chooses_even_against_test(bench, tmp_path):
    """The point with the worst test figures, given the best validation figure, is the one chosen."""
    cfg, out = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    worst_test = min(POINTS, key=lambda p: mean_test(out, p))
    edit_valid(copy, worst_test, 0.99)
    paths = write_report(copy, make_config(copy))
    row = pd.read_csv(paths["tuned_csv"]).set_index("model").loc["lightgcn"]
    assert row["chosen"] == worst_test
    assert row["recall@20_mean"] == pytest.approx(mean_test(out, worst_test), abs=1e-12)
    # the tuned significance line compares the grid's chosen point (by the grid's name) with the next model
    md = paths["md"].read_text()
    tuned_part = md[md.index("## Tuned on validation"):md.index(f"\n## {DATASET}\n")]
    assert "Significance: lightgcn (best on validation recall@20) vs mostpop (second)" in tuned_part


def test_ties_go_to_the_first_listed_point(bench, tmp_path):
    cfg, out = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    for p in POINTS:
        edit_valid(copy, p, 0.5)
    row = pd.read_csv(write_report(copy, make_config(copy))["tuned_csv"]).set_index("model").loc["lightgcn"]
    assert row["chosen"] == POINTS[0]


def test_points_finished_on_fewer_seeds_are_not_compared(bench, tmp_path):
    """A point with a seed unfinished would be judged on a mean over fewer seeds: only the points finished on the
    most seeds compete, and the line says how many did."""
    cfg, out = bench
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    edit_valid(copy, POINTS[1], 0.99)
    unfinished = copy / "runs" / DATASET / POINTS[1] / "seed2027" / "result.json"
    r = json.loads(unfinished.read_text())
    del r["benchmark"]  # as if killed before the runner's last write: not done
    unfinished.write_text(json.dumps(r))
    paths = write_report(copy, make_config(copy))
    row = pd.read_csv(paths["tuned_csv"]).set_index("model").loc["lightgcn"]
    assert row["chosen"] != POINTS[1] and row["points"] == 3
    assert "best of 3 points" in paths["md"].read_text()


def test_a_report_without_grids_is_unchanged(bench, tmp_path):
    cfg, out = bench
    plain = load_config(None, {"datasets": ["ml-latest-small"], "models": ["mostpop", {
        "name": "lightgcn", "label": POINTS[3], "params": {"n_layers": 2}, "train": {"lr": 0.01}}],
        "seeds": [2026, 2027], "epochs": 2, "out": str(out), "progress": False}, SETS)
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    paths = write_report(copy, plain)
    assert "tuned_csv" not in paths and "Tuned on validation" not in paths["md"].read_text()
    assert "grid search" not in paths["html"].read_text()


def test_a_model_spec_made_directly_refuses_a_grid_and_records_none(bench):
    from pydantic import ValidationError

    from recgoat.benchmark import ModelSpec

    with pytest.raises(ValidationError, match="expanded by BenchmarkConfig"):
        ModelSpec(name="lightgcn", grid=GRID)
    cfg, out = bench
    recorded = json.loads((out / "benchmark.json").read_text())["models"]
    assert [m.get("label") for m in recorded] == [None, *POINTS]
    assert all("grid" not in m for m in recorded) and recorded[1]["grid_of"] == "lightgcn"
