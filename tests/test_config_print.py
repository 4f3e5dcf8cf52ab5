"""`recgoat train --print-config` (config.run_config_yaml): the run's whole configuration as commented YAML that
`--config` reads back as the same run: the same values and the same keys set (an unset key can mean more than its
default: trainer.progress, data options of a folder already split, a model config with every key given)."""
from __future__ import annotations

import os

import pytest
import yaml
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.config import RunConfig, load_config, run_config_yaml
from recgoat.models import MODELS
from recgoat.models.base import is_builtin

runner = CliRunner()


def _same_run(a: RunConfig, b: RunConfig) -> None:
    assert a == b
    assert a.model.params == b.model.params
    for x, y in ((a.data, b.data), (a.trainer, b.trainer)):
        assert x.model_fields_set == y.model_fields_set, type(x).__name__
    # a section's header (model.params included) set or not means nothing: its keys do
    assert a.model.model_fields_set - {"params"} == b.model.model_fields_set - {"params"}
    assert a.model_fields_set - {"data", "model", "trainer"} == b.model_fields_set - {"data", "model", "trainer"}


CASES = {
    "defaults": ([], {}),
    "recgoat preset and overrides": (["model.preset=ml100k", "model.params.n_layers=2", "trainer.lr=5e-3",
                                      "trainer.ks=[10, 20]", "trainer.metric=ndcg@10", "data.k_core=3",
                                      "trainer.progress=false", "features=auto", "data.min_rating=4"],
                                     {"model.name": "recgoat"}),
    "strings YAML would misread": ([], {"data.name": "2024", "out": "runs #2: final", "features": "null"}),
    # YAML 1.1 (PyYAML's dumper) writes 1e-3 bare as a string; recgoat's loader reads it as a float (YAML 1.2)
    "a string recgoat reads as a float": ([], {"data.name": "1e-3", "out": "5E+4"}),
    "a param set to its default": (["model.params.embedding_dim=64", "trainer.device=cpu"], {"model.name": "mgcn"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_printed_configuration_reads_back_as_the_same_run(case, tmp_path):
    overrides, values = CASES[case]
    cfg = load_config(None, overrides, values=values)
    path = tmp_path / "run.yaml"
    path.write_text(run_config_yaml(cfg), encoding="utf-8")
    _same_run(load_config(path), cfg)


@pytest.mark.parametrize("name", sorted(n for n, c in MODELS.items() if is_builtin(c)))
def test_every_key_of_every_model_is_written_with_its_description(name):
    cfg = load_config(None, [], values={"model.name": name})
    text = run_config_yaml(cfg)
    parsed = yaml.safe_load(text)
    assert parsed["model"] == {"name": name, "params": None}  # no preset given; every param at its default
    for key in MODELS[name].Config.model_fields:  # commented out: at their defaults
        assert f"\n    # {key}: " in text, key
    for key in ("epochs", "lr", "patience", "device", "progress"):
        assert f"\n  # {key}: " in text
    # each key's line follows its description
    lines = text.splitlines()
    i = lines.index("  # lr: 0.001")
    assert lines[i - 1] == "  # Adam's learning rate (0: the parameters stay at their initialisation)."


def test_print_config_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = runner.invoke(app, ["train", "--model", "lightgcn", "--epochs", "3", "--set", "trainer.lr=5e-3",
                              "--print-config"])
    assert out.exit_code == 0, out.output
    assert os.listdir(tmp_path) == []  # no run folder, no dataset prepared
    (tmp_path / "run.yaml").write_text(out.stdout, encoding="utf-8")
    again = load_config(tmp_path / "run.yaml")
    assert (again.model.name, again.trainer.epochs, again.trainer.lr) == ("lightgcn", 3, 5e-3)
    assert again.trainer.model_fields_set == {"epochs", "lr"}


def test_print_config_names_the_run_folder_it_cannot_hold(tmp_path, monkeypatch):
    """--run-dir is no key of the file: a comment says it was given, so the file's reader gives it again."""
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, ["train", "--run-dir", "my runs/a", "--print-config"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[1].startswith("# printed with --run-dir my runs/a: not a key of this file")
    assert os.listdir(tmp_path) == []
    (tmp_path / "run.yaml").write_text(out.stdout, encoding="utf-8")
    _same_run(load_config(tmp_path / "run.yaml"), load_config(None))
    plain = runner.invoke(app, ["train", "--print-config"])
    assert "--run-dir" not in plain.stdout
