"""`recgoat benchmark` on a real subset: tables equal the run JSONs, resume, standalone HTML, paired test.

One benchmark (120 users of the embedded ml-latest-small, mostpop/bprmf/lightgcn and the multimodal peer
VBPR on the subset's encoded item texts, 2 seeds, 3 epochs) is run once per module; the other tests read
its folder or a copy of it.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import base64
import json
import re
from html.parser import HTMLParser
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from recgoat.benchmark import load_config, paired_test, run_benchmark
from recgoat.benchmark.cli import app
from recgoat.benchmark.report import TIMINGS, per_user_means
from recgoat.errors import ConfigError

torch.set_num_threads(1)

MODELS = ["mostpop", "bprmf", "lightgcn", "vbpr"]
SEEDS = [2026, 2027]
DATASET = "ml-latest-small-u120"
SETS = ["datasets.ml-latest-small.max_users=120", "train.num_threads=1", "train.batch_size=1024"]


def make_config(out: Path, **over):
    base = {"datasets": ["ml-latest-small"], "models": MODELS, "seeds": SEEDS, "epochs": 3,
            "out": str(out), "progress": False}
    return load_config(None, {**base, **over}, SETS)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cfg = make_config(out)
    run = run_benchmark(cfg)
    assert not run.failed, run.failed
    return cfg, run


def run_jsons(out: Path) -> dict[tuple[str, int], dict]:
    found = {}
    for path in (out / "runs" / DATASET).glob("*/seed*/result.json"):
        found[(path.parent.parent.name, int(path.parent.name[4:]))] = json.loads(path.read_text())
    return found


def recomputed(results: dict, model: str, getter) -> tuple[float, float]:
    vals = np.array([getter(results[(model, s)]) for s in SEEDS], dtype=float)
    return vals.mean(), vals.std(ddof=1)


Tables = dict[str, tuple[list[str], dict[str, list[str]]]]  # title → (header, model → cells)


def parse_md_tables(md: str) -> Tables:
    """Every ``### title`` table of a results.md (bold marks removed)."""
    found: Tables = {}
    title = None
    for ln in md.splitlines():
        if ln.startswith("### "):
            title = ln[4:].strip()
        elif ln.startswith("|") and title is not None:
            cells = [c.strip().replace("**", "") for c in ln.strip("|").split("|")]
            if title not in found:
                found[title] = (cells[1:], {})
            elif not set(cells[0]) <= set(":-"):
                found[title][1][cells[0]] = cells[1:]
    return found


class _HTMLTables(HTMLParser):
    """Every ``<h3>title</h3><table>`` of report.html, as text cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: Tables = {}
        self._title: str | None = None
        self._tag: str | None = None
        self._text = ""
        self._row: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("h3", "td", "th"):
            self._tag, self._text = tag, ""
        elif tag == "tr":
            self._row = []

    def handle_data(self, data):
        if self._tag:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "h3":
            self._title = self._text.strip()
        elif tag in ("td", "th"):
            self._row.append(self._text.strip())
        elif tag == "tr" and self._title is not None:
            if self._title not in self.tables:
                self.tables[self._title] = (self._row[1:], {})
            else:
                self.tables[self._title][1][self._row[0]] = self._row[1:]
        if tag == self._tag:
            self._tag = None


def parse_html_tables(text: str) -> Tables:
    p = _HTMLTables()
    p.feed(text)
    return p.tables


TIMING_GET = {
    "seconds_per_epoch": lambda r: r["seconds_per_epoch"],
    "epochs_to_best": lambda r: r["best_epoch"] + 1 if r["epochs_run"] > 0 else 0,
    "eval_seconds": lambda r: r["eval_seconds"],
    "peak_memory_mb": lambda r: r["benchmark"]["cell_peak_rss_mb"],
    "memory_growth_mb": lambda r: r["benchmark"]["cell_peak_rss_mb"] - r["benchmark"]["cell_start_rss_mb"],
}


def check_tables_equal_jsons(tables: Tables, cfg, results: dict) -> None:
    """Each shown mean ± std equals the value recomputed from the per-run JSONs, to the shown decimals."""
    expected = {f"Test metrics @{k}": [(f"{m}@{k}", lambda r, c=f"{m}@{k}": r["test"][c], 4)
                                       for m in cfg.report_metrics] for k in cfg.ks_reported}
    metric = cfg.train.metric  # the validation metric runs were selected on, as each run recorded it
    expected[f"Validation {metric} (the selection metric)"] = [("valid", lambda r: r["valid"][metric], 4)]
    expected["Cost"] = [(c, TIMING_GET[c], dec) for c, (_, dec) in TIMINGS.items()]
    assert list(tables) == list(expected)
    assert cfg.ks_reported == list(cfg.train.ks)  # no report_ks given: every evaluated K is shown
    for title, columns in expected.items():
        header, rows = tables[title]
        assert len(header) == len(columns) and list(rows) == MODELS, (title, header, list(rows))
        for model in MODELS:
            for j, (col, get, dec) in enumerate(columns):
                mean, std = recomputed(results, model, get)
                shown_mean, shown_std = (float(x) for x in rows[model][j].split("±"))
                tol = 0.5 * 10 ** -dec + 1e-9
                assert abs(shown_mean - mean) <= tol and abs(shown_std - std) <= tol, (title, model, col)


def test_every_cell_ran_once(bench):
    cfg, run = bench
    assert len(run.trained) == len(MODELS) * len(SEEDS) and not run.skipped
    found = run_jsons(Path(cfg.out))
    assert set(found) == {(m, s) for m in MODELS for s in SEEDS}
    # seeds change the initialisation: the two lightgcn runs differ
    a, b = found[("lightgcn", 2026)]["test"], found[("lightgcn", 2027)]["test"]
    assert a["recall@20"] != b["recall@20"] or a["ndcg@20"] != b["ndcg@20"]


def test_csv_and_md_equal_the_run_jsons(bench):
    cfg, run = bench
    results = run_jsons(Path(cfg.out))
    csv = pd.read_csv(run.report["csv"]).set_index("model")
    assert list(csv.index) == MODELS and (csv["n_seeds"] == len(SEEDS)).all()
    for model in MODELS:
        # every test metric at every K, and every cost column, in the CSV
        columns = [(key, lambda r, key=key: r["test"][key]) for key in results[(model, SEEDS[0])]["test"]]
        columns += [(c, TIMING_GET[c]) for c in TIMINGS]
        for col, get in columns:
            mean, std = recomputed(results, model, get)
            assert np.isclose(csv.loc[model, f"{col}_mean"], mean, rtol=1e-9, atol=1e-12), (model, col)
            assert np.isclose(csv.loc[model, f"{col}_std"], std, rtol=1e-9, atol=1e-12), (model, col)
    check_tables_equal_jsons(parse_md_tables(Path(run.report["md"]).read_text()), cfg, results)


def test_html_tables_equal_the_run_jsons(bench):
    cfg, run = bench
    html_tables = parse_html_tables(Path(run.report["html"]).read_text())
    check_tables_equal_jsons(html_tables, cfg, run_jsons(Path(cfg.out)))
    assert html_tables == parse_md_tables(Path(run.report["md"]).read_text())


def test_md_bolds_the_best_mean(bench):
    cfg, run = bench
    results = run_jsons(Path(cfg.out))
    md = Path(run.report["md"]).read_text()
    section = md.split("### Test metrics @20")[1].split("###")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    col = cfg.report_metrics.index("recall") + 1
    bold = [ln.strip("|").split("|")[0].strip() for ln in lines if "**" in ln.strip("|").split("|")[col]]
    means = {m: recomputed(results, m, lambda r: r["test"]["recall@20"])[0] for m in MODELS}
    assert bold == [max(means, key=means.get)]
    assert "**" not in md.split("### Cost")[1].split("Significance")[0]  # costs are not ranked


def test_cells_record_their_memory(bench):
    """Each cell records its start, peak and growth of resident memory, consistently (that the growth is the
    cell's own, from its own start, is tested on known allocations in test_benchmark_cell_memory)."""
    cfg, _ = bench
    for r in run_jsons(Path(cfg.out)).values():
        b = r["benchmark"]
        assert b["cell_start_rss_mb"] > 0 and 0 <= b["cell_rss_growth_mb"] <= b["cell_peak_rss_mb"]
        assert b["cell_start_rss_mb"] + b["cell_rss_growth_mb"] == pytest.approx(b["cell_peak_rss_mb"])


def test_html_is_self_contained_with_plots(bench):
    _, run = bench
    text = Path(run.report["html"]).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) >= 3  # learning curves, metric bars, timing bars
    for b in images:
        png = base64.b64decode(b)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "learning curves" in text and "Significance:" in text
    for m in MODELS:
        assert f"<td>{m}</td>" in text


def test_significance_is_paired_over_users(bench):
    cfg, _ = bench
    runs_dir = Path(cfg.out) / "runs" / DATASET
    a = per_user_means([runs_dir / "lightgcn" / f"seed{s}" for s in SEEDS], "recall@20")
    b = per_user_means([runs_dir / "bprmf" / f"seed{s}" for s in SEEDS], "recall@20")
    # the per-user average over seeds, recomputed from the npz files
    z = [np.load(runs_dir / "lightgcn" / f"seed{s}" / "test_per_user.npz") for s in SEEDS]
    assert np.array_equal(z[0]["users"], z[1]["users"])
    np.testing.assert_allclose(a.loc[z[0]["users"]].to_numpy(), (z[0]["recall_at_20"] + z[1]["recall_at_20"]) / 2)
    res = paired_test(a, b, "wilcoxon")
    assert 0.0 <= res["p_value"] <= 1.0 and res["n_users"] == len(a)
    assert res["p_value"] == pytest.approx(stats.wilcoxon(a.to_numpy(), b.loc[a.index].to_numpy()).pvalue,
                                           rel=1e-9, abs=0)
    # pairing is by user id, not by position: shuffling b's order changes nothing ...
    shuffled = b.sample(frac=1.0, random_state=0)
    assert paired_test(a, shuffled)["statistic"] == res["statistic"]
    assert paired_test(a, shuffled)["p_value"] == pytest.approx(res["p_value"], rel=1e-9, abs=0)
    # ... while breaking the pairing (same values, other users) does change the test
    broken = pd.Series(b.to_numpy()[::-1], index=b.index)
    assert paired_test(a, broken)["statistic"] != pytest.approx(res["statistic"], rel=1e-9, abs=0)
    t = paired_test(a, b, "ttest")
    assert t["p_value"] == pytest.approx(stats.ttest_rel(a.to_numpy(), b.loc[a.index].to_numpy()).pvalue,
                                       rel=1e-9, abs=0)
    assert paired_test(a, a)["p_value"] == 1.0


def test_resume_skips_finished_cells(bench, tmp_path, trained_runs):
    cfg, _ = bench
    out = tmp_path / "copy"
    shutil.copytree(cfg.out, out)
    calls = trained_runs
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/result.json")}
    run = run_benchmark(make_config(out))
    assert calls == [] and len(run.skipped) == len(MODELS) * len(SEEDS)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())

    # an interrupted cell (no result.json, checkpoint kept) is the only one recomputed, from its checkpoint
    lost = out / "runs" / DATASET / "bprmf" / "seed2027"
    before = json.loads((lost / "result.json").read_text())
    (lost / "result.json").unlink()
    run = run_benchmark(make_config(out))
    assert calls == [str(lost)] and run.trained == [f"{DATASET}/bprmf/seed2027"]
    after = json.loads((lost / "result.json").read_text())
    assert after["test"] == before["test"] and after["best_epoch"] == before["best_epoch"]

    # a folder made with another configuration is not silently reused (fewer epochs than were run; more train on:
    # test_benchmark_extend_epochs)
    with pytest.raises(ConfigError, match="different configuration"):
        run_benchmark(make_config(out, epochs=2))


def test_cli_resumes_and_prints_table(bench):
    cfg, _ = bench
    args = ["--dataset", "ml-latest-small", "--models", ",".join(MODELS), "--seeds", ",".join(map(str, SEEDS)),
            "--epochs", "3", "--out", str(cfg.out), "--quiet"]
    for s in SETS:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| lightgcn |" in res.output and "report.html" in res.output

    bad = CliRunner().invoke(app, ["--dataset", "ml-latest-small", "--models", "nosuchmodel", "--out",
                                   str(cfg.out), "--quiet"])
    assert bad.exit_code == 1 and "unknown model 'nosuchmodel'" in bad.output
    assert "Traceback" not in bad.output


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unique"):
        load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf", "bprmf"]})
    with pytest.raises(ConfigError, match="report_ks"):
        load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf"], "report_ks": [7]})
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf"]}, ["train.lr"])
    with pytest.raises(ConfigError, match=r"^benchmark config: train\.nonsense: unknown key \(valid keys: epochs,"):
        load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf"]}, ["train.nonsense=1"])
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf", "lightgcn"]},
                      ["models.lightgcn.params.n_layers=2", "models.lightgcn.train.lr=0.01"])
    spec = cfg.models[1]
    assert spec.params == {"n_layers": 2} and cfg.cell_train_config(spec, 7).lr == 0.01
    assert cfg.cell_train_config(cfg.models[0], 7).lr == cfg.train.lr and cfg.cell_train_config(spec, 7).seed == 7
    with pytest.raises(ConfigError, match="models must be a list, got int 5"):
        load_config(None, {"datasets": ["ml-latest-small"], "models": 5})
    with pytest.raises(ConfigError, match="training section is `train`"):  # `recgoat train`'s key, a likely slip
        load_config(None, {"datasets": ["ml-latest-small"], "models": ["bprmf"]}, ["trainer.lr=0.01"])
    assert [m.name for m in load_config(None, {"datasets": "ml-latest-small", "models": "bprmf"}).models] == ["bprmf"]
    # --set values are read as `recgoat train --set` reads them (they went through YAML 1.1 here)
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "models": ["lightgcn"]},
                      ["train.lr=1e-3", "out=runs #2", "models.lightgcn.params.reg_weight=1E-4"])
    assert cfg.train.lr == 1e-3 and str(cfg.out) == "runs #2" and cfg.models[0].params == {"reg_weight": 1e-4}
    example = Path(__file__).resolve().parents[1] / "src" / "recgoat" / "configs" / "benchmark-default.yaml"
    loaded = load_config(example)
    assert [m.name for m in loaded.models] == ["mostpop", "bprmf", "lightgcn"] and loaded.train.metric == "recall@20"


def test_features_loaded_only_for_models_that_need_them(tmp_path):
    from recgoat.errors import DataError
    from recgoat.models.base import MODELS, register
    from recgoat.models.mostpop import MostPop

    @register("_needs_features_probe")
    class Probe(MostPop):
        needs_features = True

    try:
        over = {"datasets": [{"name": "ml-latest-small", "max_users": 120, "features": str(tmp_path / "none")}],
                "seeds": [2026], "epochs": 1, "out": str(tmp_path / "b"), "progress": False}
        # mostpop needs no features: the missing folder is never read
        run = run_benchmark(load_config(None, {**over, "models": ["mostpop"]}))
        assert len(run.trained) == 1 and not run.failed
        with pytest.raises(DataError, match="feature folder not found"):
            run_benchmark(load_config(None, {**over, "models": ["mostpop", "_needs_features_probe"]}))
    finally:
        MODELS.pop("_needs_features_probe", None)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "src/recgoat/configs").glob("benchmark-*.yaml")),
                         ids=lambda p: p.name)
def test_packaged_benchmark_configs_are_valid(path):
    """Every shipped benchmark config parses, each model's params are valid settings of that model, and a
    RecGOAT entry labelled after a preset (``recgoat-ml100k``) names that preset and has its settings."""
    from recgoat.models.base import get_model_class

    from recgoat.models.recgoat import load_preset

    from recgoat.config import preset_params

    cfg = load_config(path)
    assert cfg.models and cfg.datasets
    for spec in cfg.models:
        params = get_model_class(spec.name).Config(**(spec.params or {}))
        name = spec.grid_of or spec.label  # a grid's points are labelled after their grid
        if spec.name == "recgoat" and name and name.startswith("recgoat-"):
            assert spec.preset == name.removeprefix("recgoat-"), spec.label
            if spec.grid_of is None:
                assert params == load_preset(spec.preset), spec.label
            else:  # the preset's settings, except the ones the grid varies
                varied = spec.label.removeprefix(name).split("+")[1:]
                keep = {k: v for k, v in preset_params("recgoat", spec.preset).items()
                        if not any(x.startswith(f"{k}=") for x in varied)}
                assert keep and all(getattr(params, k) == v for k, v in keep.items()), spec.label


def test_model_spec_preset_is_merged_under_params(tmp_path):
    """``preset:`` (a packaged name or a YAML path) supplies params, the entry's own params override them, and
    the cell signature depends on the settings, not on how they were written."""
    from recgoat.benchmark.runner import ModelSpec

    packaged = ModelSpec(name="recgoat", preset="ml100k")
    assert packaged.params == {"use_profile": False, "view_dropout": 0.3, "align_detach_target": True}
    assert ModelSpec(name="recgoat", params=packaged.params).params == packaged.params
    override = ModelSpec(name="recgoat", preset="ml100k", params={"view_dropout": 0.5, "n_layers": 2})
    assert override.params == {"use_profile": False, "view_dropout": 0.5, "align_detach_target": True, "n_layers": 2}
    own = tmp_path / "mine.yaml"
    own.write_text("n_layers: 1\nembedding_dim: 32\n")
    assert ModelSpec(name="lightgcn", preset=str(own)).params == {"n_layers": 1, "embedding_dim": 32}
    with pytest.raises(ConfigError, match=r"no preset 'nope' for model 'recgoat' \(packaged: baby, electronics, ml100k, sports"):
        ModelSpec(name="recgoat", preset="nope")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="a preset is a mapping of model params"):
        ModelSpec(name="recgoat", preset=str(tmp_path / "list.yaml"))

def test_progress_is_shown_while_it_runs(tmp_path, capfd):
    """A bar over the cells with the running cell's name, the trainer's epoch bar, and a line per cell."""
    cfg = make_config(tmp_path / "b", models=["mostpop", "bprmf"], seeds=[2026], epochs=2, progress=True)
    run = run_benchmark(cfg, write_report=False)
    assert not run.failed
    out = "".join(capfd.readouterr())
    assert "benchmark" in out and "2/2" in out and "cell" in out
    assert f"{DATASET}/bprmf/seed2026" in out and "recall@20 valid" in out
    assert "bprmf:" in out and "epoch/s" in out  # the trainer's nested bar


def test_progress_left_unset_draws_no_bars_outside_a_terminal(tmp_path, capfd):
    """``progress`` unset means bars only on a terminal, from Python too: only the CLI checked, so a script's
    run_benchmark drew the cell and epoch bars (carriage returns) into its log. A line per cell still comes."""
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "models": ["mostpop", "bprmf"], "seeds": [2026],
                             "epochs": 1, "out": str(tmp_path / "b")}, SETS)
    assert cfg.progress and "progress" not in cfg.model_fields_set
    run = run_benchmark(cfg, write_report=False)
    assert not run.failed
    err = capfd.readouterr().err  # captured: not a terminal
    assert "\r" not in err and "epoch/s" not in err and "cell/s" not in err, err
    assert f"{DATASET}/bprmf/seed2026" in err and f"{DATASET}/mostpop/seed2026" in err


def test_report_names_rows_with_fewer_seeds_than_the_header(bench):
    """A row averaged over fewer seeds than the header claims (its other cells failed) is named as such."""
    from recgoat.benchmark.report import aggregate, collect_runs, markdown, seed_shortfall

    cfg, _ = bench
    runs = collect_runs(cfg)
    model = runs["model"].iloc[0]
    assert seed_shortfall(aggregate(runs), cfg) == ""
    dropped = runs[~((runs["model"] == model) & (runs["seed"] == SEEDS[-1]))]
    agg = aggregate(dropped)
    line = seed_shortfall(agg, cfg)
    dataset = runs["dataset"].iloc[0]
    assert line == f"Fewer seeds (the others failed, see below): {model} on {dataset} ({len(SEEDS) - 1} of {len(SEEDS)})."
    assert line in markdown(agg, {}, cfg)


def test_recgoat_evaluate_takes_a_benchmark_cell(bench):
    """A cell has cell.json, not run_config.json: `recgoat evaluate` reads its dataset (subset and split
    as the benchmark made them) and trainer settings from there, and recomputes the cell's test metrics."""
    from recgoat.training.run import evaluate

    cfg, _ = bench
    cell = Path(cfg.out) / "runs" / DATASET / "lightgcn" / "seed2026"
    recorded = json.loads((cell / "result.json").read_text())["test"]
    assert evaluate(cell, "test") == pytest.approx(recorded, abs=1e-6)
    mmrec = evaluate(cell, "test", test_mask="train")
    assert all(mmrec[k] <= recorded[k] + 1e-9 for k in recorded)
