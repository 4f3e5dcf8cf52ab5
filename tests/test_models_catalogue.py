"""`recgoat models list / show` and the Python API behind them (models/catalogue.py): what they print is read
off the model classes, so every hyper-parameter of every built-in model must carry its description, and the
types, bounds, defaults and preset values shown must be the ones the config class validates."""
from __future__ import annotations

import json
from typing import Literal

import pytest
import yaml
from pydantic import Field
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.errors import ConfigError
from recgoat.models import MODELS, ModelConfig
from recgoat.models.base import is_builtin
from recgoat.models.catalogue import _bounds, _type_name, list_models, model_info
from recgoat.models.recgoat import load_preset

from conftest import run_main

runner = CliRunner()
BUILTIN = sorted(n for n, c in MODELS.items() if is_builtin(c))


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_hyper_parameter_is_described(name):
    """A key added without a docstring under it fails here (the listing would show an empty line)."""
    info = model_info(name)
    fields = MODELS[name].Config.model_fields
    assert [p.name for p in info.params] == list(fields)
    for p in info.params:
        assert p.doc and "\n" not in p.doc and "  " not in p.doc, (name, p.name, p.doc)
        assert p.default == fields[p.name].default == p.value and not p.from_preset
    assert info.summary and info.builtin and info.trainable == MODELS[name].trainable
    assert info.reads == MODELS[name].feature_kinds(MODELS[name].Config())


def test_the_listing_holds_every_model_once():
    infos = list_models()
    assert [i.name for i in infos] == BUILTIN  # built-ins first, by name; no plugin in this process's registry
    assert {i.name: i.presets for i in infos}["recgoat"] == ("baby", "electronics", "ml100k", "sports")
    assert {i.name for i in infos if not i.trainable} == {"mostpop"}
    assert {i.name for i in infos if not i.reads} == {"bprmf", "lightgcn", "mostpop"}


@pytest.mark.parametrize("preset", ["baby", "sports", "electronics", "ml100k"])
def test_a_preset_shows_the_values_the_model_is_built_with(preset):
    info = model_info("recgoat", preset)
    built = load_preset(preset).model_dump()
    assert {p.name: p.value for p in info.params} == built
    written = yaml.safe_load(_preset_file(preset).read_text())
    default = MODELS["recgoat"].Config().model_dump()
    assert {p.name for p in info.params if p.from_preset} == {k for k, v in written.items() if v != default[k]}
    # the ml100k preset drops the profile branch: the features it reads follow
    assert ("users" in info.reads) == built["use_profile"]


def _preset_file(preset: str):
    from importlib import resources
    from pathlib import Path

    return Path(str(resources.files("recgoat") / "configs")) / f"recgoat-{preset}.yaml"


class _Shapes(ModelConfig):
    count: int = Field(3, gt=0)
    """c."""
    share: float | None = Field(None, ge=0.0, le=1.0)
    """s."""
    rate: float = Field(0.5, ge=0.0, lt=1.0)
    """r."""
    low: float = Field(1.0, le=2.0)
    """l."""
    mode: Literal["a", "b"] = "a"
    """m."""
    views: list[Literal["text", "image"]] = ["text"]
    """v."""
    path: str | None = None
    """p."""
    flag: bool = False
    """f."""


@pytest.mark.parametrize("field, type_name, bounds", [
    ("count", "int", "> 0"),
    ("share", "float or null", "0.0 <= x <= 1.0"),
    ("rate", "float", "0.0 <= x < 1.0"),
    ("low", "float", "x <= 2.0"),
    ("mode", "one of: a, b", ""),
    ("views", "list of text, image", ""),
    ("path", "str or null", ""),
    ("flag", "bool", ""),
])
def test_types_and_bounds_as_text(field, type_name, bounds):
    f = _Shapes.model_fields[field]
    assert (_type_name(f.annotation), _bounds(f)) == (type_name, bounds)
    assert f.description == field[0] + "."  # the attribute docstring is the description


def test_the_commands_print_what_the_api_returns(monkeypatch):
    out = runner.invoke(app, ["models", "list", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [i.as_dict() for i in list_models()]
    out = runner.invoke(app, ["models", "show", "recgoat", "--preset", "ml100k", "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["preset"] == "ml100k" and "users" not in shown["reads"]
    assert {p["name"]: p["value"] for p in shown["params"]} == load_preset("ml100k").model_dump()

    monkeypatch.setenv("COLUMNS", "200")
    out = runner.invoke(app, ["models", "list"])
    assert out.exit_code == 0, out.output
    for name in BUILTIN:
        assert f"│ {name} " in out.stdout
    out = runner.invoke(app, ["models", "show", "lightgcn"])
    assert out.exit_code == 0, out.output
    assert "trains: yes; reads: no side features; presets: none" in out.stdout
    assert "n_layers" in out.stdout and ">= 0" in out.stdout and "propagation layers" in out.stdout
    out = runner.invoke(app, ["models", "show", "mostpop"])
    assert out.exit_code == 0, out.output
    assert "trains: no; reads: no side features; presets: none\nno hyper-parameters\n" in out.stdout


def test_a_narrow_output_lists_entries_whole(monkeypatch):
    """In 80 columns (a pipe, `| less`) five table columns cut the parameter names --set needs: one entry per
    parameter (per model) instead, its name whole at the start of its line and its description under it."""
    monkeypatch.setenv("COLUMNS", "80")
    out = runner.invoke(app, ["models", "show", "recgoat", "--preset", "ml100k"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines if line.startswith("    "))  # the descriptions wrapped
    info = model_info("recgoat", "ml100k")
    heads = [line.split("  ")[0] for line in lines if line and not line.startswith(" ")][2:]
    assert heads == [p.name for p in info.params]
    assert "view_dropout  float, 0.0 <= x < 1.0; value (ml100k; default): 0.3 (0.0)" in lines
    assert " ".join(" ".join(lines).split()).count(info.params[0].doc) == 1  # wrapped, every word kept

    out = runner.invoke(app, ["models", "list"])
    assert out.exit_code == 0, out.output
    heads = [line.split("  ")[0] for line in out.stdout.splitlines() if line and not line.startswith(" ")]
    assert heads[:-1] == [i.name for i in list_models()] and heads[-1].startswith("hyper-parameters")


@pytest.mark.parametrize("args, problem", [
    (["show", "lightgcm"], "unknown model 'lightgcm'; did you mean 'lightgcn'? available: bm3, bprmf,"),
    (["show", "LightGCN"], "unknown model 'LightGCN'; did you mean 'lightgcn'? available: bm3, bprmf,"),
    (["show", "nosuch"], "unknown model 'nosuch'; available: bm3, bprmf,"),  # nothing near: no guess
    (["show", "lightgcn", "--preset", "baby"], "no preset 'baby' for model 'lightgcn' (packaged: none;"),
    (["show", "recgoat", "--preset", "ml100"], "no preset 'ml100' for model 'recgoat' (did you mean 'ml100k'? "
                                               "packaged: baby, electronics, ml100k, sports;"),
])
def test_mistakes_are_one_line(args, problem, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "models", *args)
    assert code == 1 and "Traceback" not in err and err.strip().count("\n") == 0
    assert err.startswith("error: " + problem), err


def test_a_preset_file_the_model_refuses_is_one_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("embedding_dim: 0\n")
    with pytest.raises(ConfigError, match=r"^preset '.*p\.yaml' of lightgcn: .*embedding_dim"):
        model_info("lightgcn", str(path))
    path.write_text("n_layers: 1\n")
    assert {p.name: p.value for p in model_info("lightgcn", str(path)).params}["n_layers"] == 1


def test_the_module_docstring_example_runs():
    import doctest

    import recgoat.models.catalogue as catalogue

    result = doctest.testmod(catalogue)
    assert result.attempted == 2 and result.failed == 0


def test_a_model_lacking_a_required_method_is_not_listed_as_training(monkeypatch):
    """`models list` read `trainable` alone: a class without loss() (or embeddings()) showed "trains: yes", and
    `recgoat train` then failed on it."""
    from recgoat.models.base import Recommender

    class NoLoss(Recommender):
        def embeddings(self):
            return self.user_emb.weight, self.item_emb.weight

    class NoEmbeddings(Recommender):
        def loss(self, users, pos, neg):
            return {}

    for name, cls, trains in (("m-noloss", NoLoss, "no (implements no loss())"),
                              ("m-noemb", NoEmbeddings, "no (implements no embeddings())")):
        monkeypatch.setitem(MODELS, name, cls)
        monkeypatch.setattr(cls, "name", name, raising=False)
        info = model_info(name)
        assert not info.trainable and info.trains == trains
        out = runner.invoke(app, ["models", "show", name])
        assert out.exit_code == 0, out.output
        assert f"trains: {trains}; reads:" in out.stdout
    assert model_info("lightgcn").trains == "yes" and model_info("mostpop").trains == "no"
