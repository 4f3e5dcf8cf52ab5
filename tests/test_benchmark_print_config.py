"""`recgoat benchmark --print-config` (benchmark.config.benchmark_config_yaml): the benchmark's whole configuration
as commented YAML that `--config` reads back as the same benchmark: the same values and the same keys set, grids
printed as grids (not their points), presets by name; nothing trained, read or written."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import run_main
from recgoat.benchmark.config import (RECORD, BenchmarkConfig, DatasetSpec, ModelSpec, benchmark_config_yaml,
                                      load_config, load_config_tree, load_recorded_config)
from recgoat.cli import app
from recgoat.config import _configs_folder
from test_plugins import one_line_error

runner = CliRunner()

PACKAGED = sorted(_configs_folder().glob("benchmark-*.yaml"))  # the benchmark configs shipped with recgoat


def same_benchmark(a: BenchmarkConfig, b: BenchmarkConfig) -> None:
    """``a`` and ``b`` run the same benchmark: the same values and the same keys set (an unset key can mean more
    than its default: progress unset, bars on a terminal only)."""
    assert a.model_dump() == b.model_dump()
    assert a.model_fields_set == b.model_fields_set
    assert a.train.model_fields_set == b.train.model_fields_set
    assert [d.model_fields_set for d in a.datasets] == [d.model_fields_set for d in b.datasets]
    assert [(m.label, m.params, m.train, m.grid_of) for m in a.models] == \
        [(m.label, m.params, m.train, m.grid_of) for m in b.models]
    assert [m.model_fields_set for m in a.models] == [m.model_fields_set for m in b.models]


def reread(tmp_path: Path, path=None, overrides=None, sets=None) -> tuple[str, BenchmarkConfig, BenchmarkConfig]:
    """The printed configuration, the one loaded and the one read back from the printed file."""
    tree, cfg = load_config_tree(path, overrides, sets)
    text = benchmark_config_yaml(tree, cfg)
    saved = tmp_path / "saved.yaml"
    saved.write_text(text, encoding="utf-8")
    return text, cfg, load_config(saved)


def write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps(tree), encoding="utf-8")  # JSON is YAML
    return path


GRID = {"train.lr": [0.001, 0.005], "params.n_layers": [1, 2]}


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.name)
def test_a_packaged_config_reads_back_as_the_same_benchmark(path, tmp_path):
    assert PACKAGED  # found where the packaged presets are
    text, cfg, again = reread(tmp_path, path)
    same_benchmark(again, cfg)
    # a grid stays a grid and a preset a preset: the printed models are the file's entries
    printed = yaml.safe_load(text)["models"]
    given = yaml.safe_load(path.read_text(encoding="utf-8"))["models"]
    assert [m.get("grid") is not None for m in printed] == [isinstance(m, dict) and "grid" in m for m in given]
    assert [m.get("preset") for m in printed] == [m.get("preset") if isinstance(m, dict) else None for m in given]


def test_grids_grid_seeds_a_preset_and_set_overrides(tmp_path):
    path = write(tmp_path, {
        "datasets": ["ml-latest-small", {"name": "ml100k-mm", "max_users": 50, "prepare": {"k_core": 3}}],
        "models": ["mostpop",
                   {"name": "lightgcn", "grid": GRID, "train": {"min_epochs": 3}},
                   {"name": "lightgcn", "label": "lg-extra", "grid_of": "lightgcn", "params": {"n_layers": 4}},
                   {"name": "recgoat", "label": "recgoat-ml100k", "preset": "ml100k", "params": {"gat_heads": 2},
                    "grid": {"params": {"view_dropout": [0.3, 0.5]}}}],
        "seeds": [1, 2, 3], "grid_seeds": 1, "train": {"epochs": 5, "ks": [10, 20]}, "baseline": "lightgcn"})
    sets = ["models.lightgcn.grid.train.lr=[0.001,0.005]", "models.lightgcn.grid.train.lr=[0.01,0.02,0.03]",
            "models.recgoat-ml100k.params.n_layers=2", "train.lr=5e-3", "report_ks=[10]", "split_seeds=true",
            "datasets.ml100k-mm.features=null"]
    text, cfg, again = reread(tmp_path, path, {"epochs": 7, "out": str(tmp_path / "out"), "jobs": 2}, sets)
    same_benchmark(again, cfg)
    printed = yaml.safe_load(text)
    # the grid as given, with the --set one of its axes wins over the file's (in the file's order)
    assert printed["models"][1]["grid"] == {"train.lr": [0.01, 0.02, 0.03], "params.n_layers": [1, 2]}
    assert printed["models"][3]["preset"] == "ml100k"
    assert printed["models"][3]["params"] == {"gat_heads": 2, "n_layers": 2}  # the entry's own, not the preset's
    assert "      # view_dropout: 0.3\n" in text  # the preset's value, commented out with the rest
    assert [m.key for m in cfg.models if m.grid_of == "lightgcn"][:2] == ["lightgcn+lr=0.01+n_layers=1",
                                                                          "lightgcn+lr=0.01+n_layers=2"]
    # the note after the models: the points, and the cells (2 datasets; mostpop on 3 seeds; a grid of P points
    # on 1 seed and its chosen point on the other 2: P + 2)
    note = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert "Grid lightgcn: 7 points, lightgcn+lr=0.01+n_layers=1, " in note and "lg-extra." in note
    assert "Grid recgoat-ml100k: 2 points, recgoat-ml100k+view_dropout=0.3, recgoat-ml100k+view_dropout=0.5." in note
    assert f"2 datasets × 10 models (grid points included) × 3 seeds = 60 cells; with grid_seeds: 1, a grid's " \
           f"points train on seed 1 only and the point chosen there on the other 2: {2 * (3 + 7 + 2 + 2 + 2)} " \
           f"cells." in note


def test_strings_yaml_would_misread_read_back_as_strings(tmp_path):
    preset = tmp_path / "presets #1: mine.yaml"
    preset.write_text("n_layers: 2\n", encoding="utf-8")
    path = write(tmp_path, {
        "datasets": [{"name": "ml-latest-small", "label": "2024", "features": "null"},
                     {"name": "data: #2", "features": "~", "label": "yes"}],
        "models": [{"name": "lightgcn", "label": "1e-3", "preset": str(preset)},
                   {"name": "bprmf", "label": "2025", "train": {"device": "cpu"}}],
        "baseline": "2025", "out": "runs #2: final"})
    text, cfg, again = reread(tmp_path, path)
    same_benchmark(again, cfg)
    assert [d.label for d in again.datasets] == ["2024", "yes"]
    assert [d.features for d in again.datasets] == ["null", "~"]
    assert (again.models[0].preset, again.models[0].params) == (str(preset), {"n_layers": 2})
    assert (again.out, again.baseline) == (Path("runs #2: final"), "2025")


def test_a_commented_out_key_is_one_uncommenting_away(tmp_path):
    """A model's params and the train section are written with every key commented out when none is set: such a
    section reads as not given, and a key uncommented there, or set with --set on the saved file, is set."""
    text, cfg, again = reread(tmp_path, None, {"datasets": ["ml-latest-small"], "models": ["mostpop", "lightgcn"]})
    same_benchmark(again, cfg)
    assert "\nmodels:\n" in text and "\n  - name: lightgcn\n" in text and "\n    params:\n" in text
    assert "\n    # params: {}\n" in text  # MostPop has none
    edited = tmp_path / "edited.yaml"
    edited.write_text(text.replace("      # n_layers: 3\n", "      n_layers: 2\n")
                      .replace("  # patience: 10\n", "  patience: 3\n"), encoding="utf-8")
    cfg = load_config(edited)
    assert (cfg.models[1].params, cfg.train.patience, cfg.train.model_fields_set) == ({"n_layers": 2}, 3, {"patience"})
    cfg = load_config(tmp_path / "saved.yaml", None, ["models.lightgcn.params.n_layers=2", "train.lr=0.01"])
    assert (cfg.models[1].params, cfg.train.lr) == ({"n_layers": 2}, 0.01)


def test_every_key_is_written_under_its_description(tmp_path):
    for model in (BenchmarkConfig, DatasetSpec, ModelSpec):
        for name, field in model.model_fields.items():
            assert (field.description or "").strip(), f"{model.__name__}.{name}"
    text, _, _ = reread(tmp_path, PACKAGED[0])
    lines = text.splitlines()
    for name, field in BenchmarkConfig.model_fields.items():
        at = next(i for i, line in enumerate(lines) if line.startswith((f"{name}:", f"# {name}:")))  # top level
        assert lines[at - 1].startswith("# ") and lines[at - 1][2:] in " ".join(field.description.split()), name
    first_dataset = lines.index("datasets:")
    for name in DatasetSpec.model_fields:
        assert any(line.strip().lstrip("-# ").startswith(f"{name}:") for line in lines[first_dataset:]), name
    assert "seed:" not in text.split("\ntrain:\n")[1].split("\nsplit_seed:")[0]  # refused in a benchmark: not offered


def test_the_command_prints_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["benchmark", "-d", "ml-latest-small", "-m", "mostpop,lightgcn", "-s", "1,2", "--epochs", "3",
            "--out", "bench #2", "-j", "2", "--set", "models.lightgcn.grid.train.lr=[0.001,0.005]", "--print-config"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert os.listdir(tmp_path) == []  # no benchmark folder, no features, no data prepared
    (tmp_path / "bench.yaml").write_text(out.stdout, encoding="utf-8")
    want = load_config(None, {"datasets": ["ml-latest-small"], "models": ["mostpop", "lightgcn"], "seeds": [1, 2],
                              "epochs": 3, "out": "bench #2", "jobs": 2},
                       ["models.lightgcn.grid.train.lr=[0.001,0.005]"])
    same_benchmark(load_config(tmp_path / "bench.yaml"), want)
    assert [m.key for m in want.models] == ["mostpop", "lightgcn+lr=0.001", "lightgcn+lr=0.005"]


@pytest.mark.parametrize("options, models, seeds", [
    (["-m", "mostpop", "-m", "bprmf", "-s", "2026", "-s", "2027"], ["mostpop", "bprmf"], [2026, 2027]),
    (["-m", "mostpop,bprmf", "--models", "lightgcn", "-s", "3", "--seeds", "1,2"],
     ["mostpop", "bprmf", "lightgcn"], [3, 1, 2]),
    (["-m", "bprmf", "-m", " mostpop , lightgcn,", "-s", "5,", "-s", "4"], ["bprmf", "mostpop", "lightgcn"], [5, 4]),
])
def test_models_and_seeds_are_repeatable_and_comma_separated(tmp_path, monkeypatch, options, models, seeds):
    """`-m A -m B -s 1 -s 2` kept only the last of each (B, seed 2): every occurrence counts, each may hold a
    comma list, all joined in order as --dataset's are."""
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, ["benchmark", "-d", "ml-latest-small", *options, "--print-config"])
    assert out.exit_code == 0, out.output
    (tmp_path / "bench.yaml").write_text(out.stdout, encoding="utf-8")
    cfg = load_config(tmp_path / "bench.yaml")
    assert [m.key for m in cfg.models] == models and cfg.seeds == seeds
    same_benchmark(cfg, load_config(None, {"datasets": ["ml-latest-small"], "models": models, "seeds": seeds}))


@pytest.mark.parametrize("options, message", [
    (["-m", "mostpop", "-m", "mostpop"], "model labels must be unique; repeated: ['mostpop']"),
    (["-m", "mostpop,bprmf", "-m", "bprmf"], "model labels must be unique; repeated: ['bprmf']"),
    (["-m", "mostpop", "-s", "1", "-s", "2,1"], "seeds repeat: [1, 2, 1]"),
    (["-m", "mostpop", "-s", "1", "-s", "x"], "--seeds expects integers (repeatable or comma-separated), got 'x'"),
])
def test_a_value_repeated_across_occurrences_is_refused_as_in_one_list(tmp_path, monkeypatch, capsys, options,
                                                                       message):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, "benchmark", "-d", "ml-latest-small", *options, "--print-config")
    assert message in one_line_error(code, err)
    assert os.listdir(tmp_path) == []


def test_the_help_says_models_and_seeds_are_repeatable(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option's help
    out = runner.invoke(app, ["benchmark", "--help"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    for option in ("--dataset", "--models", "--seeds"):
        assert option in text
    assert text.count("(repeatable or comma-separated)") >= 3, text
    assert "model name (repeatable or comma-separated)" in text and "seed (repeatable or comma-separated)" in text


def test_report_only_prints_the_recorded_configuration(tmp_path, monkeypatch):
    """With --report-only --out FOLDER alone, the configuration the folder's record holds, as the report uses it."""
    folder = tmp_path / "bench"
    folder.mkdir()
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "models": ["mostpop", {"name": "lightgcn", "grid": GRID}],
                             "out": str(folder)})
    (folder / RECORD).write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")
    before = sorted(p.name for p in folder.iterdir())
    out = runner.invoke(app, ["benchmark", "--report-only", "--out", str(folder), "--print-config"])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in folder.iterdir()) == before  # no report written
    (tmp_path / "bench.yaml").write_text(out.stdout, encoding="utf-8")
    same_benchmark(load_config(tmp_path / "bench.yaml"), load_recorded_config(folder, {"out": str(folder)}))


@pytest.mark.parametrize("content, args, message", [
    ({"datasets": ["ml-latest-small"], "models": ["mostpop"], "train": {"lrr": 1}}, [], "train.lrr: unknown key"),
    ({"datasets": ["ml-latest-small"], "models": [{"name": "lightgcn", "grid": {"n_layers": [1]}}]}, [],
     "a grid setting is params.NAME or train.NAME"),
    ({"datasets": ["ml-latest-small"], "models": ["mostpop"]}, ["--set", "train.seed=3"],
     "train.seed: the training seed of each cell is its entry of `seeds`"),
])
def test_a_bad_configuration_is_one_error_line(tmp_path, monkeypatch, capsys, content, args, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, content)
    code, err = run_main(monkeypatch, capsys, "benchmark", "--config", "bench.yaml", *args, "--print-config")
    assert message in one_line_error(code, err)
    assert os.listdir(tmp_path) == ["bench.yaml"]
