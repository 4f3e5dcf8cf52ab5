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


def test_a_folder_prepared_with_options_of_its_own_trains_where_those_options_do(tmp_path, monkeypatch):
    """`datasets prepare shop --seed 7 --out s7` then `train --dataset s7` trained in runs/shop/… (the manifest's
    name alone), and was refused there for the default split's checkpoint ("data (fingerprint)"), advised to
    overwrite it. It trains in runs/shop+seed=7/…, as `--set data.seed=7` does (one folder: the same data); a
    folder prepared with the default options keeps the plain name, as before."""
    write_catalogue(tmp_path / "shop")
    monkeypatch.chdir(tmp_path)
    for out, options in (("s7", ["--seed", "7"]), ("plain", [])):
        r = runner.invoke(app, ["datasets", "prepare", "shop", *options, "--out", out])
        assert r.exit_code == 0, (r.output, r.stderr)
    for dataset, extra in (("shop", []), ("s7", []), ("shop", ["--set", "data.seed=7"]), ("plain", [])):
        r = runner.invoke(app, ["train", "--dataset", dataset, "--model", "bprmf", *QUIET, *extra])
        assert r.exit_code == 0, (dataset, extra, r.output, r.stderr)
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["shop", "shop+seed=7"]
    seeded = runs / "shop+seed=7" / "bprmf" / "seed2026"
    assert json.loads((seeded / "run_config.json").read_text())["data"]["seed"] == 7  # the last to train there
    r = runner.invoke(app, ["evaluate", str(seeded)])
    assert r.exit_code == 0, (r.output, r.stderr)


def test_prepared_options_are_read_from_the_manifest_typed_as_the_run_configuration(tmp_path):
    from recgoat.datasets import load
    from recgoat.training.run import prepared_options, recorded_prepare_options

    write_catalogue(tmp_path / "shop")
    ds = load(tmp_path / "shop")
    cfg = load_config(None, ["model.name=bprmf", "trainer.seed=3"], values={"out": "runs"})
    assert recorded_prepare_options(ds) == {}
    ds.info["prepare"].update(min_rating=4, ratios=[0.7, 0.15, 0.15], seed=7, dedup=False, k_core=5)
    # in PREPARE_OPTIONS' order; 4 as --set data.min_rating=4 gives it (4.0); dedup, off only in Python, named too
    assert default_run_dir(cfg, ds) == Path("runs") / "shop+min_rating=4.0+ratios=0.7,0.15,0.15+seed=7+dedup=False" \
        / "bprmf" / "seed3"
    ds.info.pop("prepare")  # data split elsewhere records none: the run's own options name it
    assert recorded_prepare_options(ds) is None and prepared_options(cfg, ds) == {}


def test_a_folder_prepared_without_a_split_is_named_by_the_folder_given(tmp_path, monkeypatch):
    """`train --dataset nosplit` said "dataset 'shop' has no train/valid/test split; prepare it first", naming
    the manifest's name, of a folder that was prepared (with --split none)."""
    write_catalogue(tmp_path / "shop")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["datasets", "prepare", "shop", "--split", "none", "--out", "nosplit"])
    assert r.exit_code == 0, (r.output, r.stderr)
    r = runner.invoke(app, ["train", "--dataset", "nosplit", "--model", "bprmf", *QUIET])
    err = str(r.exception)  # the command line prints it as one "error: …" line
    assert r.exit_code == 1 and err.startswith("nosplit: this dataset folder was prepared without a split "
                                               "(--split none)"), err
    assert f"`recgoat datasets prepare {tmp_path / 'shop'} --split random --out DIR`" in err, err
    assert not (tmp_path / "runs").exists()
    # data.split is refused for it (the folder keeps its preparation), as the message says
    r = runner.invoke(app, ["train", "--dataset", "nosplit", "--model", "bprmf", *QUIET, "--set", "data.split=random"])
    err = str(r.exception)
    assert r.exit_code == 1 and "keeps its preparation, without a split (it was prepared with split=none)" in err
