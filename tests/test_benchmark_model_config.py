"""A benchmark cell records the model's full configuration (``model_config``, defaults included), so a resume
refuses finished cells whose model the same ``params`` no longer give: a changed default, or a key added
since whose absence meant other behaviour (``Config.legacy_settings``, e.g. RecGOAT's ``gat_activation``:
cells of two bare-stacked GAT layers were reported beside ELU-stacked ones). ``params`` alone (what the
user set) could not show either."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

from recgoat.benchmark import load_config, run_benchmark
from recgoat.benchmark.cells import plan_cells
from recgoat.errors import ConfigError

from test_benchmark_paths import write_data

torch.set_num_threads(1)
SETS = ["train.num_threads=1", "train.batch_size=1024"]


def config(out: Path, models: list):
    base = {"datasets": [{"name": str(out.parent / "data" / "tiny")}], "models": models, "seeds": [1],
            "epochs": 1, "out": str(out), "progress": False}
    return load_config(None, base, SETS)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mc")
    write_data(root / "data" / "tiny")
    # item text: `auto` writes user profiles only from items with text (from ids alone they would be noise)
    pd.DataFrame({"item": range(30), "title": [f"Film {i}" for i in range(30)]}).to_csv(
        root / "data" / "tiny" / "items.csv", index=False)
    run = run_benchmark(config(root / "out", MODELS))
    assert not run.failed and len(run.trained) == 2
    return root


MODELS = [{"name": "bprmf"}, {"name": "recgoat", "label": "rg2", "params": {"gat_layers": 2, "n_layers": 1}}]


def cell_json(root: Path, label: str) -> Path:
    return root / "out" / "runs" / "tiny" / label / "seed1" / "cell.json"


@contextmanager
def edited(path: Path, edit):
    """The JSON file ``path`` (a cell.json, a saved model.json) after ``edit`` (on its dict) inside the block,
    as it was after it: the module's benchmark serves every test."""
    before = path.read_text()
    meta = json.loads(before)
    edit(meta)
    path.write_text(json.dumps(meta))
    try:
        yield
    finally:
        path.write_text(before)


def test_the_full_model_config_is_recorded(bench):
    meta = json.loads(cell_json(bench, "bprmf").read_text())
    assert meta["params"] == {} and meta["model_config"]["embedding_dim"] == 64
    rg = json.loads(cell_json(bench, "rg2").read_text())["model_config"]
    assert rg["gat_layers"] == 2 and rg["gat_activation"] == "elu"


def test_a_resume_with_the_same_settings_retrains_nothing(bench):
    cfg = config(bench / "out", MODELS)
    run = run_benchmark(cfg)
    assert not run.trained and not run.failed
    assert sorted(r["model"] for r in run.results) == ["bprmf", "recgoat"]
    # every cell was found finished (its result read back), none silently left out
    assert sorted(run.skipped) == sorted(c.title for c in plan_cells(cfg)) and len(run.skipped) == len(MODELS)


@pytest.mark.parametrize("label, edit, named", [
    # a default that changed since the cell ran (simulated: the record says the model ran with 32)
    ("bprmf", lambda m: m["model_config"].update(embedding_dim=32), "model config embedding_dim: 32 → 64"),
    # a cell recorded before gat_activation existed: two layers then meant bare stacking
    ("rg2", lambda m: m["model_config"].pop("gat_activation"), 'model config gat_activation: "none" → "elu"'),
])
def test_a_finished_cell_of_another_model_config_is_refused_by_name(bench, label, edit, named):
    with edited(cell_json(bench, label), edit), \
            pytest.raises(ConfigError, match="was run with a different configuration") as e:
        run_benchmark(config(bench / "out", MODELS))
    assert named in str(e.value)


def test_keys_added_since_with_the_old_behaviour_as_default_are_not_compared(bench):
    """A one-layer record without gat_activation (its legacy value is the default), and any other key the
    record lacks, are the same model."""
    with edited(cell_json(bench, "bprmf"), lambda m: m["model_config"].pop("embedding_dim")):
        run = run_benchmark(config(bench / "out", MODELS))
    assert not run.trained and not run.failed


def test_a_cell_json_of_an_older_version_without_model_config_resumes_as_before(bench):
    """Its saved best model's configuration is the record then: here the same model (ELU between layers)."""
    with edited(cell_json(bench, "rg2"), lambda m: m.pop("model_config")):
        run = run_benchmark(config(bench / "out", MODELS))
    assert not run.trained and not run.failed


def test_a_cell_of_an_older_version_is_judged_by_its_saved_model_config(bench):
    """A two-layer cell finished before gat_activation existed (nor model_config in cell.json): its saved model
    says what it ran with, bare stacking, so it is not reported beside ELU-stacked cells of the same label."""
    model_json = cell_json(bench, "rg2").parent / "best" / "model.json"
    with edited(model_json, lambda m: m["config"].pop("gat_activation")), \
            edited(cell_json(bench, "rg2"), lambda m: m.pop("model_config")), \
            pytest.raises(ConfigError, match="was run with a different configuration") as e:
        run_benchmark(config(bench / "out", MODELS))
    assert 'model config gat_activation: "none" → "elu"' in str(e.value)
