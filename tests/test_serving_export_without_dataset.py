"""`recgoat export RUN --out ART` without --dataset: the run's own records (run_config.json, a benchmark cell's
cell.json) name the dataset, its preparation options and split seed; found by a QA pass. The Python call that does
it, `recgoat.serving.export_run_dir`, writes the same artefact with the same lines and errors.

Every run trains BPR-MF (d 8) for one epoch on the synthetic 50-user × 40-item catalogue of training_helpers.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from recgoat.cli import app

from training_helpers import write_catalogue, write_stub_text_features

runner = CliRunner()
QUIET = ["--set", "trainer.progress=false", "--set", "model.params.embedding_dim=8", "--set", "trainer.batch_size=256"]
PLUGINS = Path(__file__).parent / "fixtures" / "plugins"


def ok(*args: str):
    r = runner.invoke(app, [*map(str, args)])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def one_line_error(*args: str) -> str:
    """The one stderr line of a refused command (exit 1, no traceback)."""
    r = runner.invoke(app, [*map(str, args)])
    assert r.exit_code == 1, (r.output, r.exception)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return " ".join(err.split())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A catalogue ``cat``; ``run``: trained on it with k_core 2 and split seed 7 (not the defaults);
    ``plain``: with the default options; ``prep``: the catalogue prepared (k_core 2) and ``prep_run`` trained on
    that folder; ``bench``: a benchmark whose cell has a label, preparation options and its own split seed."""
    root = tmp_path_factory.mktemp("export_qa")
    write_catalogue(root / "cat")
    ok("train", "--dataset", root / "cat", "--model", "bprmf", "--epochs", "1", "--run-dir", root / "run",
       "--set", "data.k_core=2", "--set", "data.seed=7", *QUIET)
    ok("train", "--dataset", root / "cat", "--model", "bprmf", "--epochs", "1", "--run-dir", root / "plain", *QUIET)
    ok("datasets", "prepare", root / "cat", "--k-core", "2", "--out", root / "prep")
    ok("train", "--dataset", root / "prep", "--model", "bprmf", "--epochs", "1", "--run-dir", root / "prep_run",
       *QUIET)
    (root / "bench.yaml").write_text(json.dumps({
        "datasets": [{"name": "cat", "label": "mycat", "features": None, "prepare": {"k_core": 2}}],
        "models": ["bprmf"], "seeds": [1], "split_seed": 5, "out": str(root / "bench"), "progress": False,
        "train": {"epochs": 1, "progress": False, "batch_size": 256}}))
    here = Path.cwd()
    os.chdir(root)  # the benchmark records the dataset folder as typed: "cat", relative to here
    try:
        ok("benchmark", "--config", root / "bench.yaml", "--quiet")
    finally:
        os.chdir(here)
    return root


def cell(work: Path) -> Path:
    return work / "bench" / "runs" / "mycat" / "bprmf" / "seed1"


def trained_fp(run: Path) -> str:
    return json.loads((run / "result.json").read_text())["dataset_fingerprint"]


def same_artefact(a: Path, b: Path) -> None:
    """The same embeddings, ids, tables and metadata (but the time of export)."""
    for rel in ("embeddings.safetensors",):
        x, y = load_file(str(a / rel)), load_file(str(b / rel))
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    for rel in ("ids.json", "items.parquet", "history.parquet", "model/model.json", "model/weights.safetensors"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    meta_a, meta_b = (json.loads((p / "artifact.json").read_text()) for p in (a, b))
    assert {**meta_a, "created": None} == {**meta_b, "created": None}


# ------------------------------------------------------------------------------------------ recgoat train runs
def other_data(work: Path, where: Path) -> Path:
    """The catalogue with its last 40 interactions left out: other data, under the same name."""
    shutil.copytree(work / "cat", where)
    lines = (where / "interactions.csv").read_text().splitlines()
    (where / "interactions.csv").write_text("\n".join(lines[:-40]) + "\n")
    return where


def test_export_without_dataset_prepares_the_data_as_the_run_recorded(work, tmp_path):
    """--dataset was required, and `--dataset cat` prepared with the default options: a run trained with
    data.k_core=2 and data.seed=7 could not be exported from its catalogue at all (fingerprint refused). Given,
    --dataset is now prepared as the run recorded too, as `evaluate --dataset` prepares it."""
    r = ok("export", work / "run", "--out", tmp_path / "art")
    out = " ".join(r.stdout.split())
    assert f"dataset: {work / 'cat'}, prepared as the run's run_config.json records" in out
    meta = json.loads((tmp_path / "art" / "artifact.json").read_text())
    assert meta["dataset_fingerprint"] == trained_fp(work / "run") and meta["n_users"] == 50
    ok("export", work / "run", "--dataset", work / "cat", "--out", tmp_path / "with")
    same_artefact(tmp_path / "with", tmp_path / "art")


def test_export_without_dataset_writes_what_export_with_it_writes(work, tmp_path):
    """The artefact is the one `--dataset` gives (same embeddings, ids, tables, metadata)."""
    ok("export", work / "plain", "--dataset", work / "cat", "--out", tmp_path / "given")
    ok("export", work / "plain", "--out", tmp_path / "recorded")
    same_artefact(tmp_path / "given", tmp_path / "recorded")


def test_export_of_a_run_whose_dataset_folder_moved_says_to_pass_dataset(work, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(work / "plain", run)
    config = json.loads((run / "run_config.json").read_text())
    config["data"]["name"] = str(tmp_path / "moved" / "cat")  # as on another machine
    (run / "run_config.json").write_text(json.dumps(config))
    err = one_line_error("export", run, "--out", tmp_path / "art")
    assert err == (f"error: {run / 'run_config.json'}: records dataset {tmp_path / 'moved' / 'cat'}, which is not "
                   f"found from here (no such folder): pass --dataset with the data the run was trained on")
    assert not (tmp_path / "art").exists()
    ok("export", run, "--dataset", work / "cat", "--out", tmp_path / "art")  # and that is the way out


def test_evaluate_of_a_run_whose_dataset_folder_moved_says_what_export_says(work, tmp_path):
    """evaluate said only "…/moved/cat: no such dataset name or folder (known names: …)". Each caller is told the
    way it gives the data: a Python caller was told to `pass --dataset`, a flag it has no way to give."""
    run = tmp_path / "run"
    shutil.copytree(work / "plain", run)
    config = json.loads((run / "run_config.json").read_text())
    config["data"]["name"] = str(tmp_path / "moved" / "cat")
    (run / "run_config.json").write_text(json.dumps(config))
    from recgoat.errors import DataError
    from recgoat.serving import export_run_dir
    from recgoat.training.run import evaluate

    moved = f"{run / 'run_config.json'}: records dataset {tmp_path / 'moved' / 'cat'}, which is not found from here " \
            f"(no such folder): pass "
    with pytest.raises(DataError) as e:
        evaluate(run)
    assert str(e.value) == f"{moved}dataset_source= with the data the run was trained on"  # evaluate's argument
    r = runner.invoke(app, ["evaluate", str(run)])  # recgoat.cli's main prints the error line
    assert r.exit_code == 1 and str(r.exception) == f"{moved}--dataset with the data the run was trained on"
    with pytest.raises(DataError) as e:
        export_run_dir(run, tmp_path / "art")
    assert str(e.value) == f"{moved}dataset= with the data the run was trained on"  # export_run_dir's
    assert not (tmp_path / "art").exists()
    want = json.loads((run / "result.json").read_text())["test"]["recall@20"]
    assert evaluate(run, dataset_source=str(work / "cat"))["recall@20"] == pytest.approx(want, abs=1e-6)


def test_evaluate_and_export_of_an_unfinished_run_say_so(work, tmp_path):
    """A run stopped before its end (a checkpoint, no result.json) was evaluated and exported without a word."""
    from recgoat.training.run import evaluate

    run = tmp_path / "run"
    shutil.copytree(work / "plain", run)
    (run / "result.json").unlink()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    said = (f"{run}: the run has not finished (no result.json; stopped, or still training, after epoch "
            f"{state['epoch']}): its best model so far (epoch {state['best']['epoch']}) is used")
    with pytest.warns(UserWarning, match=re.escape(said)):
        evaluate(run)
    r = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "art")])
    assert r.exit_code == 0 and said in " ".join(r.stderr.split())
    finished = runner.invoke(app, ["export", str(work / "plain"), "--out", str(tmp_path / "art2")])
    assert finished.exit_code == 0 and "warning" not in finished.stderr


def test_an_unfinished_run_given_other_data_is_refused_by_its_checkpoints_fingerprint(work, tmp_path):
    """`--dataset` was checked against result.json alone: a run not finished (no result.json) was exported on any
    data given; its checkpoint records the fingerprint too."""
    run = tmp_path / "run"
    shutil.copytree(work / "run", run)  # k_core 2, split seed 7: not what `cat` gives with the defaults
    (run / "result.json").unlink()
    state = run / "checkpoint" / "state.json"
    fp = json.loads(state.read_text())["signature"]["dataset_fingerprint"]
    other = other_data(work, tmp_path / "cat")
    r = runner.invoke(app, ["export", str(run), "--dataset", str(other), "--out", str(tmp_path / "art")])
    warning, err = r.stderr.splitlines()  # the unfinished run's warning first, then the one error line
    assert r.exit_code == 1 and warning.startswith(f"warning: {run}: the run has not finished")
    assert err.startswith(f"error: {state}: the run was trained on dataset fingerprint {fp}, but "), err
    assert not (tmp_path / "art").exists()


def test_export_of_a_run_whose_shared_dataset_is_not_mounted_says_where_it_looked(work, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(work / "plain", run)
    config = json.loads((run / "run_config.json").read_text())
    config["data"]["name"] = "ml100k-mm"
    (run / "run_config.json").write_text(json.dumps(config))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("RECGOAT_SHARED_DATA", str(tmp_path / "empty"))
    err = one_line_error("export", run, "--out", tmp_path / "art")
    assert f"records dataset ml100k-mm, which is not found from here (shared dataset not found: " \
           f"RECGOAT_SHARED_DATA={tmp_path / 'empty'} holds no ml100k-mm/" in err and err.endswith("pass --dataset "
                                                                                              "with the data the "
                                                                                              "run was trained on")


def test_export_of_a_run_whose_recorded_data_changed_is_refused(work, tmp_path):
    """The recorded folder still exists but holds other data now: the fingerprint says so."""
    data, run = tmp_path / "cat", tmp_path / "run"
    shutil.copytree(work / "cat", data)
    shutil.copytree(work / "plain", run)
    config = json.loads((run / "run_config.json").read_text())
    config["data"]["name"] = str(data)
    (run / "run_config.json").write_text(json.dumps(config))
    inter = (data / "interactions.csv").read_text().splitlines()
    (data / "interactions.csv").write_text("\n".join(inter[:-1]) + "\n")  # one interaction fewer
    err = one_line_error("export", run, "--out", tmp_path / "art")
    assert f"{run / 'result.json'}: the run was trained on dataset fingerprint {trained_fp(run)}, but {data} (as " \
           f"run_config.json records it) now has" in err and "the data changed since; pass --dataset" in err


def test_export_of_a_saved_model_folder_without_dataset_says_to_pass_it(work, tmp_path):
    err = one_line_error("export", work / "plain" / "best", "--out", tmp_path / "art")
    assert f"{work / 'plain' / 'best'}: records no dataset (no run_config.json or cell.json" in err
    assert f"give the run folder {work / 'plain'} instead, or pass --dataset NAME_OR_FOLDER" in err
    shutil.copytree(work / "plain" / "best", tmp_path / "model")
    err = one_line_error("export", tmp_path / "model", "--out", tmp_path / "art")
    assert err.endswith("benchmark cell folder): pass --dataset NAME_OR_FOLDER")


def test_export_of_a_run_trained_on_a_prepared_folder(work, tmp_path):
    r = ok("export", work / "prep_run", "--out", tmp_path / "art")
    assert f"dataset: {work / 'prep'}, prepared as" in " ".join(r.stdout.split())
    ok("export", work / "prep_run", "--dataset", work / "prep", "--out", tmp_path / "given")
    same_artefact(tmp_path / "art", tmp_path / "given")


# ------------------------------------------------------------------------------------------ benchmark cells
def test_export_of_a_benchmark_cell_uses_its_label_options_and_split_seed(work, tmp_path, monkeypatch):
    """A cell's data is the labelled dataset prepared with the cell's options and split seed: no --dataset
    could give it (the label is part of the fingerprint)."""
    monkeypatch.chdir(work)  # where the benchmark ran: its relative "cat" is found
    r = ok("export", cell(work), "--out", tmp_path / "art")
    assert "dataset: cat, prepared as the run's cell.json records" in " ".join(r.stdout.split())
    meta = json.loads((tmp_path / "art" / "artifact.json").read_text())
    assert meta["dataset"] == "mycat" and meta["dataset_fingerprint"] == trained_fp(cell(work))


def test_export_of_a_benchmark_cell_from_another_folder_finds_its_relative_dataset(work, tmp_path, monkeypatch):
    """The cell's relative "cat" is found through cell.json's `paths` record (it was "not found from here");
    tests/test_benchmark_paths.py covers moved and deleted data."""
    monkeypatch.chdir(tmp_path)
    r = ok("export", cell(work), "--out", tmp_path / "art")
    assert f"dataset: {work / 'cat'}, prepared as the run's cell.json records" in " ".join(r.stdout.split())
    meta = json.loads((tmp_path / "art" / "artifact.json").read_text())
    assert meta["dataset"] == "mycat" and meta["dataset_fingerprint"] == trained_fp(cell(work))


def test_export_of_a_benchmark_cell_without_result_checks_cell_json_fingerprint(work, tmp_path, monkeypatch):
    """No result.json (a cell stopped after its first best model): cell.json's fingerprint is checked."""
    run = tmp_path / "cell"
    shutil.copytree(cell(work), run)
    (run / "result.json").unlink()
    shutil.rmtree(run / "checkpoint")
    record = json.loads((run / "cell.json").read_text())
    record["dataset_fingerprint"] = "0" * 16
    (run / "cell.json").write_text(json.dumps(record))
    monkeypatch.chdir(work)
    err = one_line_error("export", run, "--out", tmp_path / "art")
    assert f"{run / 'cell.json'}: the run was trained on dataset fingerprint {'0' * 16}, but cat" in err


def test_export_of_a_corrupt_cell_json_is_one_line(work, tmp_path):
    run = tmp_path / "cell"
    shutil.copytree(cell(work), run)
    (run / "cell.json").write_text('{"data": 3}')
    err = one_line_error("export", run, "--out", tmp_path / "art")
    assert f"{run / 'cell.json'}: not a readable benchmark cell record (TypeError" in err


# ------------------------------------------------------------------------------------------ plugin model
@pytest.fixture
def plugin_env(monkeypatch, tmp_path):
    """RECGOAT_PLUGINS=logmf importable; afterwards the registry and sys.modules lose the plugin."""
    from recgoat.models.base import MODELS

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("RECGOAT_PLUGINS", "logmf")
    before = dict(MODELS)
    yield
    MODELS.clear()
    MODELS.update(before)
    sys.modules.pop("logmf", None)


def test_export_of_a_plugin_model_run_without_dataset(work, tmp_path, plugin_env):
    ok("train", "--dataset", work / "cat", "--model", "logmf", "--epochs", "1", "--run-dir", tmp_path / "run",
       "--set", "data.k_core=2", *QUIET)
    r = ok("export", tmp_path / "run", "--out", tmp_path / "art")
    assert "exported logmf on cat" in " ".join(r.stdout.split())
    assert json.loads((tmp_path / "art" / "artifact.json").read_text())["model"] == "logmf"


# ------------------------------------------------------------------------------------------ recommend's hint
def test_recommend_on_a_run_folder_hints_export_without_dataset(work):
    err = one_line_error("recommend", work / "plain", "--user", "u1")
    assert "export it first with `recgoat export RUN_DIR --out DIR`" in err


def test_evaluate_of_a_labelled_benchmark_cell_loads_its_labelled_data(work, monkeypatch):
    """`recgoat evaluate` read cell.json without the dataset's label, which is part of the fingerprint: a cell
    of a labelled dataset always failed with a fingerprint mismatch. (One reader of cell.json now serves both.)"""
    from recgoat.training.run import evaluate

    monkeypatch.chdir(work)
    got = evaluate(cell(work))
    want = json.loads((cell(work) / "result.json").read_text())["test"]
    assert got["recall@20"] == pytest.approx(want["recall@20"], abs=1e-6)


# ------------------------------------------------------------------------------------------ a cell's features
def cell_copy(work: Path, out: Path, features: object, split_seeds: object = False) -> Path:
    """The bench cell copied to ``out/runs/mycat/bprmf/seed1`` (a benchmark folder's layout), its cell.json
    recording ``features`` and ``out/benchmark.json`` saying ``split_seeds`` (no benchmark.json when None)."""
    run = out / "runs" / "mycat" / "bprmf" / "seed1"
    shutil.copytree(cell(work), run)
    record = json.loads((run / "cell.json").read_text())
    record["data"]["features"] = features
    (run / "cell.json").write_text(json.dumps(record))
    if split_seeds is not None:
        (out / "benchmark.json").write_text(json.dumps({"split_seeds": split_seeds, "out": str(out)}))
    return run


def write_text_features(work: Path, folder: Path) -> Path:
    """A stand-in text.npy (+ manifest) for the cell's data, as `recgoat encode text` writes them."""
    from recgoat.benchmark.runner import load_dataset
    from recgoat.training.run import read_cell

    _, spec, split_seed = read_cell(cell(work) / "cell.json")
    ds = load_dataset(spec, split_seed)  # the caller is in `work`: the relative "cat" is found
    write_stub_text_features(ds, folder)
    return folder


def has_text(art: Path) -> bool:
    return (art / "text.safetensors").exists() and bool(json.loads((art / "artifact.json").read_text())
                                                         .get("text_encoder"))


def test_export_of_a_benchmark_cell_uses_its_auto_feature_folder(work, tmp_path, monkeypatch):
    """`features: auto` is encoded into <out>/features/<label>: export used run_config.json only, so a cell lost
    its text features (and profile texts) without a word."""
    monkeypatch.chdir(work)
    run = cell_copy(work, tmp_path / "bench", "auto")
    feats = write_text_features(work, tmp_path / "bench" / "features" / "mycat")
    r = ok("export", run, "--out", tmp_path / "art")
    assert f"features: {feats} (the cell's `features: auto` folder; --features to choose another)" in \
        " ".join(r.stdout.split())
    assert has_text(tmp_path / "art")
    ok("export", run, "--features", feats, "--out", tmp_path / "given")
    same_artefact(tmp_path / "art", tmp_path / "given")


def test_export_of_a_split_seeds_benchmark_cell_uses_the_seeds_auto_folder(work, tmp_path, monkeypatch):
    """Under `split_seeds: true` each seed's data (and `auto` features) is <label>-split<seed>."""
    monkeypatch.chdir(work)
    run = cell_copy(work, tmp_path / "bench", "auto", split_seeds=True)
    feats = write_text_features(work, tmp_path / "bench" / "features" / "mycat-split1")
    (tmp_path / "bench" / "features" / "mycat").mkdir()  # another split's folder: not this cell's
    r = ok("export", run, "--out", tmp_path / "art")
    assert f"features: {feats} (the cell's `features: auto` folder" in " ".join(r.stdout.split())
    assert has_text(tmp_path / "art")


def test_export_of_a_benchmark_cell_uses_its_given_feature_folder(work, tmp_path, monkeypatch):
    """A given folder is recorded as typed: relative to where the benchmark ran."""
    monkeypatch.chdir(work)
    write_text_features(work, work / "cellfeat")
    try:
        run = cell_copy(work, tmp_path / "bench", "cellfeat")
        r = ok("export", run, "--out", tmp_path / "art")
    finally:
        shutil.rmtree(work / "cellfeat")
    assert "features: cellfeat (the cell's, from cell.json; --features to choose another)" in " ".join(r.stdout.split())
    assert has_text(tmp_path / "art")
    r = ok("export", run, "--out", tmp_path / "art2")  # the folder is gone: not found, and why
    assert "features: the cell's folder cellfeat is not found from here (a relative path is relative to the " \
           "folder the benchmark was started in); exporting without text features (pass --features to enable " \
           "profile texts)" in " ".join(r.stdout.split())
    assert not has_text(tmp_path / "art2")


def test_export_of_a_benchmark_cell_without_its_features_says_so(work, tmp_path, monkeypatch):
    """No auto folder, a cell folder outside a benchmark's layout, or a cell trained without features: a line
    saying the export has no text features, and how to add them."""
    monkeypatch.chdir(work)
    tail = "exporting without text features (pass --features to enable profile texts)"
    run = cell_copy(work, tmp_path / "bench", "auto")
    r = ok("export", run, "--out", tmp_path / "a")
    assert f"features: the cell's `features: auto` folder is not found ({tmp_path / 'bench' / 'features' / 'mycat'}" \
           f" does not exist); {tail}" in " ".join(r.stdout.split())
    assert not has_text(tmp_path / "a")
    shutil.copytree(run, tmp_path / "loose")
    r = ok("export", tmp_path / "loose", "--out", tmp_path / "b")
    assert "(the cell folder is not <benchmark out>/runs/<dataset>/<model>/seed<seed>)" in " ".join(r.stdout.split())
    r = ok("export", cell(work), "--out", tmp_path / "c")  # the bench's own cell: `features: null`
    assert f"features: the cell trained without a feature folder (cell.json records none); {tail}" in \
        " ".join(r.stdout.split())
    assert not has_text(tmp_path / "c")


def test_export_of_train_runs_says_nothing_of_features_when_none_recorded(work, tmp_path):
    """Train runs are as before: no features recorded, no line."""
    r = ok("export", work / "plain", "--out", tmp_path / "art")
    assert "features:" not in r.stdout and not has_text(tmp_path / "art")


def test_export_of_a_cell_without_benchmark_json_finds_the_auto_folder_there_is(work, tmp_path, monkeypatch):
    """benchmark.json unreadable (split_seeds unknown): the one of <label> and <label>-split<seed> that exists."""
    monkeypatch.chdir(work)
    run = cell_copy(work, tmp_path / "bench", "auto", split_seeds=None)
    feats = write_text_features(work, tmp_path / "bench" / "features" / "mycat-split1")
    r = ok("export", run, "--out", tmp_path / "art")
    assert f"features: {feats} (the cell's `features: auto` folder" in " ".join(r.stdout.split())
    assert has_text(tmp_path / "art")


# ------------------------------------------------------------------------------------------ the Python API
def cli_export(*args) -> list[str]:
    """The lines `recgoat export ARGS` prints on stdout."""
    return ok("export", *args).stdout.splitlines()


def cli_error(*args) -> str:
    return one_line_error("export", *args).removeprefix("error: ")


def cli_spelt(lines) -> list[str]:
    """export_run_dir's notes as `recgoat export` prints them: its options for the Python arguments."""
    spelt = {"dataset=NAME_OR_FOLDER": "--dataset NAME_OR_FOLDER", "(dataset=, ": "(--dataset, ",
             "dataset= ": "--dataset ", "features= ": "--features ", "overwrite=True": "--overwrite"}
    out = []
    for line in lines:
        for python, cli in spelt.items():
            line = line.replace(python, cli)
        out.append(line)
    return out


def test_export_run_dir_names_its_python_arguments_where_the_command_names_options(work, tmp_path):
    """A Python caller was told to `pass --dataset NAME_OR_FOLDER` (or --overwrite), a flag it has no way to give;
    it is told the argument, while the command still names its options."""
    from recgoat.errors import DataError
    from recgoat.serving import export_run_dir

    with pytest.raises(DataError) as e:
        export_run_dir(work / "plain" / "best", tmp_path / "art")
    assert str(e.value).endswith(f"give the run folder {work / 'plain'} instead, or pass dataset=NAME_OR_FOLDER")
    assert "--" not in str(e.value)
    assert cli_error(work / "plain" / "best", "--out", tmp_path / "art").endswith(
        "instead, or pass --dataset NAME_OR_FOLDER")
    export_run_dir(work / "plain", tmp_path / "art", dataset=work / "cat")
    with pytest.raises(DataError, match=r"already holds an artefact; pass overwrite=True to replace it$"):
        export_run_dir(work / "plain", tmp_path / "art", dataset=work / "cat")
    assert cli_error(work / "plain", "--dataset", work / "cat", "--out", tmp_path / "art").endswith(
        "already holds an artefact; pass --overwrite to replace it")


def test_export_run_dir_of_a_train_run_is_what_the_command_writes_and_says(work, tmp_path):
    """`recgoat export` held the run-folder logic (best/, the recorded dataset and its fingerprint): a Python user
    had export_run only, which takes a model and dataset in hand. export_run_dir is the command in one call."""
    from recgoat.serving import RunExport, export_run_dir

    done = export_run_dir(work / "run", tmp_path / "py")
    assert isinstance(done, RunExport) and (done.path, done.model, done.dataset) == (tmp_path / "py", "bprmf", "cat")
    # the same lines, each naming the option as its caller gives it
    assert done.notes == (f"dataset: {work / 'cat'}, prepared as the run's run_config.json records (dataset= to "
                          f"choose another)",)
    assert cli_export(work / "run", "--out", tmp_path / "cli") == \
        [*cli_spelt(done.notes), f"exported bprmf on cat → {tmp_path / 'cli'}"]
    same_artefact(tmp_path / "py", tmp_path / "cli")
    given = export_run_dir(str(work / "plain"), str(tmp_path / "given"), dataset=work / "cat", seen="train")
    assert given.notes == () and given.path == tmp_path / "given"  # data given: no line, as the command
    assert json.loads((tmp_path / "given" / "artifact.json").read_text())["seen"] == "train"


def test_export_run_dir_takes_a_dataset_in_hand(work, tmp_path):
    """A Python user holding the Dataset passes it rather than its name: not loaded again, checked alike."""
    import recgoat.datasets as D
    from recgoat.errors import DataError
    from recgoat.serving import export_run_dir

    ds = D.load(str(work / "cat"))
    done = export_run_dir(work / "plain", tmp_path / "obj", dataset=ds)
    assert done.notes == () and done.dataset == ds.name
    export_run_dir(work / "plain", tmp_path / "named", dataset=work / "cat")
    same_artefact(tmp_path / "obj", tmp_path / "named")
    # the data of another run's preparation: refused by its fingerprint, as the same data given by name is
    with pytest.raises(DataError, match="fingerprint") as e:
        export_run_dir(work / "run", tmp_path / "other", dataset=ds)
    assert f"but {ds.name!r} has {ds.fingerprint()}: not the same data" in str(e.value)
    assert not (tmp_path / "other").exists()


def test_export_run_dir_of_a_benchmark_cell_finds_its_data_and_auto_features(work, tmp_path, monkeypatch):
    from recgoat.serving import export_run_dir

    monkeypatch.chdir(work)
    run = cell_copy(work, tmp_path / "bench", "auto")
    feats = write_text_features(work, tmp_path / "bench" / "features" / "mycat")
    done = export_run_dir(run, tmp_path / "py")
    assert (done.model, done.dataset) == ("bprmf", "mycat") and has_text(tmp_path / "py")
    assert done.notes == ("dataset: cat, prepared as the run's cell.json records (dataset= to choose another)",
                          f"features: {feats} (the cell's `features: auto` folder; features= to choose another)")
    assert cli_export(run, "--out", tmp_path / "cli") == \
        [*cli_spelt(done.notes), f"exported bprmf on mycat → {tmp_path / 'cli'}"]
    same_artefact(tmp_path / "py", tmp_path / "cli")


def test_export_run_dir_refuses_with_the_commands_errors(work, tmp_path):
    """The same RecGOATError class and message as the command's one line, destination first (before any load)."""
    from recgoat.errors import DataError
    from recgoat.serving import export_run_dir

    def refused(*args, **kwargs) -> str:
        with pytest.raises(DataError) as e:
            export_run_dir(*args, **kwargs)
        assert type(e.value) is DataError
        return " ".join(str(e.value).split())

    other = other_data(work, tmp_path / "cat")
    # the same message, naming the Python arguments where the command names its options
    assert cli_spelt([refused(work / "run", tmp_path / "a", dataset=other)]) == \
        [cli_error(work / "run", "--dataset", other, "--out", tmp_path / "a")]
    assert "fingerprint" in cli_error(work / "run", "--dataset", other, "--out", tmp_path / "a")
    best = work / "plain" / "best"
    assert cli_spelt([refused(best, tmp_path / "a")]) == [cli_error(best, "--out", tmp_path / "a")]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    nowhere = tmp_path / "no-such-run"  # never looked at: the destination is refused first
    assert refused(nowhere, tmp_path / "mine") == cli_error(nowhere, "--out", tmp_path / "mine")
    assert "is not an artefact folder" in refused(nowhere, tmp_path / "mine")
    assert not (tmp_path / "a").exists() and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ValueError, match=r"^seen must be one of all, train, got 'valid'$"):
        export_run_dir(nowhere, tmp_path / "a", seen="valid")


def test_export_run_dir_says_a_run_is_unfinished_before_it_fails(work, tmp_path):
    """A UserWarning (as evaluate gives), or the caller's ``warn``: called at once, so said also when the export
    then fails (the command printed it before the slow loads)."""
    from recgoat.errors import DataError
    from recgoat.serving import export_run_dir
    from recgoat.training.run import unfinished_note

    run = tmp_path / "run"
    shutil.copytree(work / "plain", run)
    (run / "result.json").unlink()
    note = unfinished_note(run)
    assert note and "has not finished" in note
    with pytest.warns(UserWarning, match=re.escape(note)):
        export_run_dir(run, tmp_path / "art")
    config = json.loads((run / "run_config.json").read_text())
    config["data"]["name"] = str(tmp_path / "moved" / "cat")
    (run / "run_config.json").write_text(json.dumps(config))
    said: list[str] = []
    with pytest.raises(DataError, match="which is not found from here"):
        export_run_dir(run, tmp_path / "art2", warn=said.append)
    assert said == [note]
    r = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "art3")])
    assert r.exit_code == 1 and r.stderr.splitlines()[0].startswith(f"warning: {run}: the run has not finished")
