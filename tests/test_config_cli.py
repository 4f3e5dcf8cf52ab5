"""Configuration validation and every CLI command on a small real dataset."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.config import load_config
from recgoat.errors import ConfigError

from conftest import subset_users

runner = CliRunner()


def test_config_yaml_and_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name: bprmf\n  params: {embedding_dim: 16}\ntrainer:\n  lr: 0.01\n")
    cfg = load_config(f, ["trainer.epochs=3", "model.params.reg_weight=0.5"])
    assert cfg.model.name == "bprmf" and cfg.trainer.lr == 0.01 and cfg.trainer.epochs == 3
    assert cfg.model.params == {"embedding_dim": 16, "reg_weight": 0.5}


def test_run_config_preset_supplies_params_that_params_override(tmp_path):
    """``model.preset`` names a packaged preset (or a YAML file); ``model.params`` and overrides win over it."""
    cfg = load_config(None, ["model.name=recgoat", "model.preset=ml100k", "model.params.view_dropout=0.5"])
    assert cfg.model.params == {"use_profile": False, "view_dropout": 0.5, "align_detach_target": True}
    with pytest.raises(ConfigError, match="no preset 'paper' for model 'lightgcn'"):
        load_config(None, ["model.preset=paper"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_layers: 2\nwidth: 3\n")  # a preset's keys are checked like params
    with pytest.raises(ConfigError, match="model.params.width: unknown key"):
        load_config(None, ["model.name=lightgcn", f"model.preset={bad}"])


@pytest.mark.parametrize("override, message", [
    ("trainer.lrr=1", "trainer.lrr: unknown key"),
    ("trainer.epochs=many", "trainer.epochs"),
    ("model.params.depth=2", "model.params.depth: unknown key"),
    ("model.name=nope", "unknown model 'nope'"),
    ("oops", "not of the form key=value"),
])
def test_bad_config_is_refused_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(None, [override])


@pytest.fixture(scope="module")
def prepared(ml_small, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small"
    subset_users(ml_small, 60).save(path)
    return path


def test_datasets_commands(prepared, tmp_path):
    r = runner.invoke(app, ["datasets", "list"])
    assert r.exit_code == 0 and "ml-latest-small" in r.output
    r = runner.invoke(app, ["datasets", "info", str(prepared)])
    assert r.exit_code == 0 and json.loads(r.output)["users"] == 60
    r = runner.invoke(app, ["datasets", "prepare", "ml-latest-small", "--out", str(tmp_path / "p"),
                            "--split", "loo"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "p/manifest.json").read_text())["stats"]["split"]["test"] == 610


def test_train_then_evaluate(prepared, tmp_path):
    run_dir = tmp_path / "run"
    r = runner.invoke(app, ["train", "--dataset", str(prepared), "--model", "lightgcn", "--epochs", "2",
                            "--run-dir", str(run_dir), "--set", "trainer.progress=false",
                            "--set", "model.params.embedding_dim=16"])
    assert r.exit_code == 0, r.output
    assert f"run folder: {run_dir}" in r.output  # what `recgoat evaluate` / `export` take next
    result = json.loads((run_dir / "result.json").read_text())
    assert result["model"] == "lightgcn" and result["epochs_run"] == 2
    r = runner.invoke(app, ["evaluate", str(run_dir)])
    assert r.exit_code == 0, r.output
    again = json.loads((run_dir / "evaluate_test.json").read_text())
    assert again == pytest.approx(result["test"])
    # MMRec's convention: validation items stay candidates at test time, so no metric can rise
    r = runner.invoke(app, ["evaluate", str(run_dir), "--test-mask", "train"])
    assert r.exit_code == 0, r.output
    mmrec = json.loads((run_dir / "evaluate_test-mask-train.json").read_text())
    assert all(mmrec[k] <= again[k] + 1e-9 for k in again) and any(mmrec[k] < again[k] - 1e-9 for k in again)
    r = runner.invoke(app, ["evaluate", str(run_dir), "--split", "valid", "--test-mask", "train"])
    assert r.exit_code == 1 and "applies to the test split" in str(r.exception)


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "/no/such/folder"], "no such dataset"),
    (["train", "--set", "trainer.lr=fast"], "trainer.lr"),
    (["evaluate", "/no/such/run"], "run_config.json"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(args, message, tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "recgoat.cli", *args], capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 1
    assert message in p.stderr and "Traceback" not in p.stderr


def test_train_prints_the_feature_views_recgoat_used(prepared, tmp_path):
    """Without a feature folder RecGOAT runs on IDs alone; the console says so, not just result.json."""
    r = runner.invoke(app, ["train", "--dataset", str(prepared), "--model", "recgoat", "--epochs", "1",
                            "--run-dir", str(tmp_path / "run"), "--set", "trainer.progress=false",
                            "--set", "model.params.embedding_dim=8"])
    assert r.exit_code == 0, r.output
    assert "feature views used: none (ID embeddings only)" in r.output
    assert "note: features absent for text, image, profile" in r.output


def test_summary_lines_name_the_views():
    from recgoat.cli import _summary_lines

    assert _summary_lines({"modalities_used": ["text"], "profile_branch": True}) == ["feature views used: text, profile"]
    assert _summary_lines({"modalities_used": [], "profile_branch": False, "note": "features absent for image"}) == [
        "feature views used: none (ID embeddings only)", "note: features absent for image"]
    assert _summary_lines({"item_item_edges": 5}) == []  # peers without view bookkeeping print nothing extra


def test_summary_line_says_how_rating_attention_runs():
    """RecGOAT reports attention without ratings as a string; the line printed "on" for it."""
    from recgoat.cli import _summary_lines

    base = {"fusion": "simplex", "cmcl": True, "oat": False}
    assert _summary_lines({**base, "rating_attention": True})[0].endswith("rating attention: on")
    assert _summary_lines({**base, "rating_attention": False})[0].endswith("rating attention: off")
    assert _summary_lines({**base, "rating_attention": "endpoints only (no ratings)"})[0].endswith(
        "rating attention: endpoints only (no ratings)")
