"""Plugin models: a model of one's own reaches every CLI command through RECGOAT_PLUGINS or an installed
entry point (group ``recgoat.models``), a broken or hijacking plugin is one clear error, and a model name
read from a data file is never imported. The example models of docs/extending.md are the ones tested here."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import recgoat.datasets as D
from recgoat.errors import ConfigError, DataError
from recgoat.models.base import MODELS, ModelNameTaken, Recommender, available_models, get_model_class, register
from recgoat.models.lightgcn import LightGCN

from conftest import run_main, subset_users
from training_helpers import popularity_recall

PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
DOC = Path(__file__).parents[1] / "docs" / "extending.md"
BUILTIN = ["mostpop", "bprmf", "lightgcn", "vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn", "recgoat"]
QUIET = ["--set", "trainer.progress=false"]


def doc_block(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in docs/extending.md."""
    m = re.search(rf"<!-- {re.escape(marker)} -->\n```\w+\n(.*?)```\n", DOC.read_text(encoding="utf-8"), re.S)
    assert m, f"docs/extending.md has no code block after <!-- {marker} -->"
    return m.group(1)


def doc_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```\n", DOC.read_text(encoding="utf-8"), re.S)


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """The fixture plugins importable (none imported), no RECGOAT_PLUGINS, cwd a scratch folder; afterwards
    the registry and sys.modules lose what the test's plugins added."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.delenv("RECGOAT_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    models_before = dict(MODELS)
    yield monkeypatch
    MODELS.clear()
    MODELS.update(models_before)
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if f.startswith((str(PLUGINS), str(tmp_path))):
            del sys.modules[name]


def install_entry_points(monkeypatch, root: Path, lines: list[str], dist: str = "recgoat_myplugins") -> None:
    """A distribution's metadata folder on sys.path, as pip would leave it, so importlib.metadata finds the
    entry points (no installation)."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[recgoat.models]\n" + "".join(f"{line}\n" for line in lines))
    monkeypatch.syspath_prepend(str(root))


def one_line_error(code: int, err: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err.strip()


# ------------------------------------------------------------------------------------------- the doc
@pytest.mark.parametrize("name", ["logmf", "contentmf"])
def test_the_documented_models_are_the_tested_fixtures(name):
    """docs/extending.md shows the files tests/fixtures/plugins/ holds, byte for byte."""
    assert doc_block(f"tests/fixtures/plugins/{name}.py") == (PLUGINS / f"{name}.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["logmf", "contentmf"])
def test_the_documented_models_compute_on_their_weights_device(plugins, name):
    """The trainer moves a model to --device (cuda); the doc's models make no tensor on the CPU beside their
    weights. PyTorch's shape-only ``meta`` device stands in for a GPU: a CPU tensor there is refused by torch."""
    cls = getattr(__import__(name), {"logmf": "LogMF", "contentmf": "ContentMF"}[name])
    dims = {"text_dim": 3, "image_dim": 0} if name == "contentmf" else {}
    model = cls(4, 5, {"embedding_dim": 2}, **dims)
    if name == "contentmf":
        model.content = torch.zeros(5, 3)  # as prepare() sets it: a buffer, moved with the weights
    model.to("meta")
    users, items = model.embeddings()
    assert users.device.type == items.device.type == "meta"
    assert users.shape[0] == 4 and items.shape[0] == 5 and users.shape[1] == items.shape[1]
    loss = model.loss(*(torch.tensor([0, 1], device="meta") for _ in range(3)))["loss"]
    assert loss.device.type == "meta"


def test_the_documented_python_example_runs(plugins):
    """The doc's Python session (build, fit, recommend, save, load) runs as written next to logmf.py."""
    session = [b for b in doc_python_blocks() if "LogMF.build" in b]
    assert len(session) == 1
    exec(compile(session[0], "docs/extending.md", "exec"), {})
    result = json.loads(Path("runs/logmf-py/result.json").read_text())
    assert result["model"] == "logmf"
    # it learned: above the popularity ranking on the same test split, computed by hand (0.126; MostPop through the
    # evaluator, pessimistic on its tied counts: 0.122); LogMF reaches 0.199, one with its item rows shuffled ~0.01
    assert result["test"]["recall@20"] > popularity_recall(D.load("ml-latest-small"), "test")
    assert Recommender.load("models/logmf").name == "logmf"


def test_the_feature_model_trains_saves_and_reloads(plugins, ml_small):
    """ContentMF (the doc's feature example) reads text features passed from Python, trains, and a loaded
    copy recommends exactly as the trained one without the features; without features it says so."""
    from recgoat.features.store import Features
    from recgoat.training import TrainConfig

    from contentmf import ContentMF

    ds = subset_users(ml_small, 40)
    feats = Features(text=np.random.default_rng(0).normal(size=(ds.n_items, 12)).astype(np.float32))
    with pytest.raises(ConfigError, match="contentmf needs item features"):
        ContentMF.build(ds, {})
    torch.manual_seed(0)
    model = ContentMF.build(ds, {"embedding_dim": 8}, feats)
    assert model.dims == {"text_dim": 12, "image_dim": 0} and model.feature_digests.keys() == {"text"}
    model.fit(ds, TrainConfig(epochs=2, progress=False))
    model.save("cmf")
    again = Recommender.load("cmf")
    assert type(again) is ContentMF
    for u in range(ds.n_users):
        assert np.array_equal(again.recommend(u, 10)[0], model.recommend(u, 10)[0])


# ------------------------------------------------------------------------------------- RECGOAT_PLUGINS
def test_recgoat_plugins_train_evaluate_export_recommend(plugins, tmp_path, monkeypatch, capsys):
    """RECGOAT_PLUGINS=logmf: `recgoat train --model logmf` in a fresh process (the real entry point, the
    plugin's folder on PYTHONPATH), then evaluate, export and recommend of that run."""
    env = {**os.environ, "RECGOAT_PLUGINS": "logmf", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, "-m", "recgoat.cli", "train", "--model", "logmf", "--epochs", "3",
                           "--set", "trainer.lr=5e-3", *QUIET], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "logmf on ml-latest-small" in proc.stdout
    run = tmp_path / "runs" / "ml-latest-small" / "logmf" / "seed2026"
    assert json.loads((run / "best" / "model.json").read_text())["model"] == "logmf"

    # the same run from this process: evaluate and export need the plugin (they load the model class)
    assert "logmf" not in MODELS
    monkeypatch.setenv("RECGOAT_PLUGINS", "logmf")
    code, err = run_main(monkeypatch, capsys, "evaluate", str(run), "--split", "valid")
    assert code == 0, err
    test = json.loads((run / "result.json").read_text())["valid"]
    assert json.loads((run / "evaluate_valid.json").read_text()) == pytest.approx(test)
    assert MODELS["logmf"].__module__ == "logmf"

    from recgoat.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["export", str(run), "--dataset", "ml-latest-small", "--out", "artefact"])
    assert out.exit_code == 0, out.output
    # the artefact serves without the plugin: recommend reads only the saved embeddings
    monkeypatch.delenv("RECGOAT_PLUGINS")
    MODELS.pop("logmf"), sys.modules.pop("logmf")  # as in a fresh process without the plugin
    from recgoat.serving.artifacts import load_run

    artefact = load_run("artefact")
    assert artefact.meta["model"] == "logmf"
    user = artefact.user_ids[0]
    out = runner.invoke(app, ["recommend", "artefact", "--user", user, "-k", "5"])
    assert out.exit_code == 0 and f"top 5 for user {user} (logmf)" in out.output, out.output
    # and ranks as the trained model does
    monkeypatch.setenv("RECGOAT_PLUGINS", "logmf")
    model = Recommender.load(run / "best")
    assert np.array_equal(artefact.score([0]).numpy(), model.score([0]).numpy())


def test_the_documented_benchmark_runs_with_the_plugin(plugins, tmp_path, monkeypatch):
    """The doc's benchmark file, with a plugin model beside built-in ones (one epoch, one seed)."""
    (tmp_path / "bench.yaml").write_text(doc_block("benchmark"))
    monkeypatch.setenv("RECGOAT_PLUGINS", "logmf")
    from recgoat.cli import app

    out = CliRunner().invoke(app, ["benchmark", "--config", "bench.yaml", "--epochs", "1", "--seeds", "2026",
                                   "--out", "bench", "--quiet"])
    assert out.exit_code == 0, out.output
    rows = [line.split("|")[1].strip() for line in out.output.splitlines() if line.startswith("| ")]
    assert {"mostpop", "lightgcn", "logmf"} <= set(rows)
    result = json.loads((tmp_path / "bench/runs/ml-latest-small/logmf/seed2026/result.json").read_text())
    assert result["model"] == "logmf" and result["epochs_run"] == 1


def test_recgoat_plugins_entries_must_be_module_names(plugins, capsys):
    plugins.setenv("RECGOAT_PLUGINS", "./logmf.py")
    code, err = run_main(plugins, capsys, "train", "--model", "logmf")
    assert "RECGOAT_PLUGINS: './logmf.py' is not a module name" in one_line_error(code, err)


# ------------------------------------------------------------------------------------------ entry points
def test_installed_entry_points_are_discovered(plugins, tmp_path, capsys):
    """A module entry point (registers by decorator) and a class entry point (registered by the loader under
    the entry point's name, here a subclass of a built-in); each is loaded only when its name is asked for."""
    install_entry_points(plugins, tmp_path / "site", ["logmf = logmf", "epmf = ep_plugin:EPMF"])
    assert {"logmf", "epmf"} <= set(available_models())
    assert "logmf" not in sys.modules and "ep_plugin" not in sys.modules  # listing names imports nothing

    cls = get_model_class("epmf")
    assert cls.__name__ == "EPMF" and cls.name == "epmf" and "logmf" not in sys.modules
    assert MODELS["bprmf"].name == "bprmf"  # the built-in parent keeps its name
    assert get_model_class("logmf").__module__ == "logmf"

    # the CLI: train a class registered by the loader, then load it back by its saved name alone
    from recgoat.cli import app

    out = CliRunner().invoke(app, ["train", "--model", "epmf", "--epochs", "1", "--run-dir", "r", *QUIET])
    assert out.exit_code == 0, out.output
    MODELS.pop("epmf")
    assert type(Recommender.load("r/best")).__name__ == "EPMF"


def test_an_entry_point_must_provide_its_own_name(plugins, tmp_path):
    install_entry_points(plugins, tmp_path / "site", ["wrongname = logmf"])
    with pytest.raises(ConfigError, match=r"plugin entry point 'wrongname' = 'logmf' of package recgoat_myplugins "
                                          r"\(group 'recgoat.models'\): loaded, but registers no model named 'wrongname'"):
        get_model_class("wrongname")


def test_a_failing_plugin_is_one_line_naming_it(plugins, tmp_path, capsys):
    """An import-time exception (or a missing module) of a plugin: one line naming the plugin and the
    exception, no traceback; what it registered before failing is undone; built-in models still work."""
    plugins.setenv("RECGOAT_PLUGINS", "broken_plugin")
    code, err = run_main(plugins, capsys, "train", "--model", "mymodel")
    line = one_line_error(code, err)
    assert ("plugin module 'broken_plugin' (from RECGOAT_PLUGINS) failed to load: RuntimeError: this plugin is "
            "broken on purpose (a second line that must not show)") in line
    assert "half_registered" not in MODELS
    assert get_model_class("lightgcn") is LightGCN  # a built-in name never triggers plugin loading

    plugins.setenv("RECGOAT_PLUGINS", "no_such_plugin_module")
    code, err = run_main(plugins, capsys, "benchmark", "--dataset", "ml-latest-small", "--models", "mostpop,mine")
    assert ("plugin module 'no_such_plugin_module' (from RECGOAT_PLUGINS) failed to load: ModuleNotFoundError: "
            "No module named 'no_such_plugin_module'") in one_line_error(code, err)

    plugins.delenv("RECGOAT_PLUGINS")
    install_entry_points(plugins, tmp_path / "site", ["mymodel = broken_plugin"])
    code, err = run_main(plugins, capsys, "train", "--model", "mymodel")
    assert ("plugin entry point 'mymodel' = 'broken_plugin' of package recgoat_myplugins (group 'recgoat.models') "
            "failed to load: RuntimeError: this plugin is broken on purpose") in one_line_error(code, err)


# -------------------------------------------------------------------------------------- built-in names
@pytest.mark.parametrize("module", ["hijack_plugin", "hijack_dict_plugin"])
def test_a_plugin_cannot_replace_a_builtin_model(plugins, capsys, module):
    """Neither @register("lightgcn") nor writing MODELS["lightgcn"] lets a plugin replace LightGCN in a run
    or a benchmark table: the plugin is refused in one line and LightGCN stays registered."""
    plugins.setenv("RECGOAT_PLUGINS", f"{module},logmf")
    code, err = run_main(plugins, capsys, "benchmark", "--dataset", "ml-latest-small", "--models", "lightgcn,logmf")
    line = one_line_error(code, err)
    assert f"plugin module '{module}' (from RECGOAT_PLUGINS)" in line and "'lightgcn'" in line
    assert ("is taken by the built-in model recgoat.models.lightgcn.LightGCN" in line if module == "hijack_plugin"
            else "replaces the built-in model(s) 'lightgcn'; refused" in line)
    assert MODELS["lightgcn"] is LightGCN and get_model_class("lightgcn") is LightGCN


def test_register_refuses_a_taken_name_and_an_unusable_one():
    class Mine(LightGCN):
        pass

    with pytest.raises(ModelNameTaken, match="'lightgcn' is taken by the built-in model"):
        register("lightgcn")(Mine)
    with pytest.raises(ConfigError, match="is not usable"):
        register("../x")
    assert MODELS["lightgcn"] is LightGCN and Mine.name == "lightgcn"


def test_an_entry_point_named_like_a_builtin_is_never_loaded(plugins, tmp_path):
    install_entry_points(plugins, tmp_path / "site", ["lightgcn = hijack_plugin"])
    assert get_model_class("lightgcn") is LightGCN
    with pytest.raises(ConfigError, match="unknown model 'other'"):
        get_model_class("other")
    assert "hijack_plugin" not in sys.modules


def test_builtin_models_never_trigger_discovery(monkeypatch):
    """Plugin discovery is lazy: looking up a built-in model does not scan entry points or import plugins."""
    import recgoat.models.plugins as plugins_mod

    def refuse(*a, **k):
        raise AssertionError("plugin discovery ran for a built-in model")

    monkeypatch.setattr(plugins_mod, "discover", refuse)
    monkeypatch.setenv("RECGOAT_PLUGINS", "no_such_plugin_module")
    for name in BUILTIN:
        assert get_model_class(name).name == name


# --------------------------------------------------------------------------- names read from data files
def test_a_model_name_in_a_data_file_is_never_imported(plugins, tmp_path, monkeypatch, capsys):
    """run_config.json, a saved model.json and a benchmark YAML naming a model only an un-listed module on
    sys.path registers (or a module path, module:Class): "unknown model", and the module is not imported."""
    from recgoat.cli import app
    from recgoat.config import load_config
    from recgoat.training.run import train

    train(load_config(values={"model.name": "mostpop", "out": "runs"}), run_dir="run")
    names = ["untrusted_plugin", "untrusted_plugin:Untrusted", "tests.fixtures.plugins.untrusted_plugin"]
    for name in names:
        cfg = json.loads(Path("run/run_config.json").read_text())
        cfg["model"]["name"] = name
        Path("run/run_config.json").write_text(json.dumps(cfg))
        meta = json.loads(Path("run/best/model.json").read_text())
        meta["model"] = name  # the weights' checksum does not cover model.json
        Path("run/best/model.json").write_text(json.dumps(meta))

        code, err = run_main(monkeypatch, capsys, "evaluate", "run")
        assert f"model.json: unknown model {name!r}" in one_line_error(code, err)
        out = CliRunner().invoke(app, ["export", "run", "--dataset", "ml-latest-small", "--out", "a"])
        assert out.exit_code == 1 and f"unknown model {name!r}" in out.output
        with pytest.raises(DataError, match="unknown model"):
            Recommender.load("run/best")

        # (a label: "module:Class" cannot name a folder, which the benchmark would refuse before the name)
        Path("bench.yaml").write_text(f"datasets: [ml-latest-small]\nmodels: [mostpop, {{name: '{name}', label: x}}]\n"
                                      f"out: bench\n")
        code, err = run_main(monkeypatch, capsys, "benchmark", "--config", "bench.yaml")
        assert f"unknown model {name!r}" in one_line_error(code, err)
        assert not any(m.endswith("untrusted_plugin") for m in sys.modules), name
    assert not Path("a").exists() and not Path("bench").exists()


def test_models_list_and_show_describe_plugins(plugins, capsys):
    """`recgoat models list` loads the plugins to describe them, after the built-ins; a broken one is its one
    error line, as for `train`, after the listing of every model that does load (exit status 1)."""
    from recgoat.cli import main
    from recgoat.models.catalogue import list_models, model_info
    from recgoat.models.plugins import PluginError

    plugins.setenv("RECGOAT_PLUGINS", "logmf")
    infos = list_models()
    assert [i.name for i in infos] == sorted(BUILTIN) + ["logmf"]
    logmf = model_info("logmf")
    assert not logmf.builtin and logmf.trainable and logmf.reads == () and logmf.presets == ()
    assert [(p.name, p.type, p.bounds, p.default) for p in logmf.params] == [
        ("embedding_dim", "int", ">= 1", 64), ("reg_weight", "float", ">= 0.0", 1e-4)]
    assert logmf.summary.startswith("score(u, i) = p_u · q_i + b_i")  # the class's own docstring before its module's

    plugins.setenv("RECGOAT_PLUGINS", "broken_plugin")
    code, err = run_main(plugins, capsys, "models", "list")
    assert "plugin module 'broken_plugin' (from RECGOAT_PLUGINS) failed to load" in one_line_error(code, err)

    # the others are listed: the built-ins, a RECGOAT_PLUGINS module after the broken one, an entry point;
    # each broken plugin (a module, an entry point) is one line
    del sys.modules["logmf"]
    MODELS.pop("logmf")
    plugins.setenv("RECGOAT_PLUGINS", "broken_plugin,logmf")
    install_entry_points(plugins, Path("site"), ["epmf = ep_plugin:EPMF", "mymodel = broken_plugin"])
    failures: list[str] = []
    assert [i.name for i in list_models(failures)] == sorted(BUILTIN) + ["epmf", "logmf"]
    assert len(failures) == 2 and "'broken_plugin' (from RECGOAT_PLUGINS) failed to load" in failures[0]
    assert "plugin entry point 'mymodel' = 'broken_plugin'" in failures[1] and "failed to load" in failures[1]
    with pytest.raises(PluginError, match="'broken_plugin' .from RECGOAT_PLUGINS. failed to load"):
        list_models()  # without a list to collect them: the first failure, as before
    plugins.setattr(sys, "argv", ["recgoat", "models", "list", "--json"])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    assert e.value.code == 1 and err.splitlines() == [f"error: {m}" for m in failures]
    assert [m["name"] for m in json.loads(out)] == sorted(BUILTIN) + ["epmf", "logmf"]
