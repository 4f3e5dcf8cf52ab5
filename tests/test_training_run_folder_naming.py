"""`recgoat train`'s default run folder, ``<out>/<dataset>/<model>/seed<S>``: data prepared with options of its
own (another split seed, k-core, …) gets a folder named by them, ``<dataset>+seed=7``. Before, a
``--set data.seed=7`` run went into the default split's folder and was refused there ("a different configuration
… data (fingerprint)"), though another split is another experiment, as another trainer seed is.

Runs train BPR-MF (d 8) for one epoch on the synthetic catalogue of training_helpers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.config import load_config
from recgoat.training.run import data_options, default_run_dir

from training_helpers import write_catalogue

runner = CliRunner()
QUIET = ["--epochs", "1", "--set", "trainer.progress=false", "--set", "model.params.embedding_dim=8",
         "--set", "trainer.batch_size=256"]


class _Named:
    name = "shop"


@pytest.mark.parametrize("sets, folder", [
    ([], "shop"),
    (["data.seed=2026", "data.k_core=5"], "shop"),  # the defaults, given: the same data, the same folder
    (["data.seed=7"], "shop+seed=7"),
    (["data.k_core=10", "data.seed=7"], "shop+k_core=10+seed=7"),  # in PREPARE_OPTIONS' order, not as given
    (["data.split=temporal"], "shop+split=temporal"),
    (["data.ratios=[0.7,0.15,0.15]"], "shop+ratios=0.7,0.15,0.15"),
    (["data.min_rating=4"], "shop+min_rating=4.0"),
])
def test_the_default_run_folder_names_the_data_options(sets, folder):
    cfg = load_config(None, [*sets, "model.name=bprmf", "trainer.seed=3"], values={"out": "runs"})
    assert default_run_dir(cfg, _Named()) == Path("runs") / folder / "bprmf" / "seed3"
    assert bool(data_options(cfg)) == (folder != "shop")


def test_another_split_seed_trains_beside_the_default_split(tmp_path, monkeypatch):
    write_catalogue(tmp_path / "shop")
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--set", "data.seed=7"]):
        r = runner.invoke(app, ["train", "--dataset", "shop", "--model", "bprmf", *QUIET, *extra])
        assert r.exit_code == 0, (r.output, r.stderr)  # the second was refused: "a different configuration"
    plain, seeded = tmp_path / "runs" / "shop" / "bprmf" / "seed2026", tmp_path / "runs" / "shop+seed=7" / "bprmf" / "seed2026"
    assert json.loads((plain / "run_config.json").read_text())["data"]["seed"] == 2026
    assert json.loads((seeded / "run_config.json").read_text())["data"]["seed"] == 7
    # each run folder evaluates on its own split (its run_config.json names the options)
    for run_dir in (plain, seeded):
        r = runner.invoke(app, ["evaluate", str(run_dir)])
        assert r.exit_code == 0, (r.output, r.stderr)
