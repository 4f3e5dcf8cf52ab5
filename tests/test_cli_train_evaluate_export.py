"""The command-line workflow `recgoat train` → `evaluate` → `export`, as a user runs it: bugs of a QA pass.

Every run trains BPR-MF or LightGCN for at most 2 epochs on a synthetic 50-user × 40-item CSV catalogue.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.config import load_config
from recgoat.errors import ConfigError, DataError
from test_features_store_validation import mmrec_mapping

from conftest import run_main
from training_helpers import catalogue, write_catalogue  # noqa: F401  (catalogue: a fixture)

runner = CliRunner()
QUIET = ["--set", "trainer.progress=false", "--set", "model.params.embedding_dim=8", "--set", "trainer.batch_size=256"]


def train(*args: str):
    r = runner.invoke(app, ["train", *args, *QUIET])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


# ------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_during_a_command_prints_that_work_is_kept_and_exits_130(monkeypatch, capsys):
    """typer turns a KeyboardInterrupt inside a command into a silent exit 130, so `recgoat main`'s handler
    never ran: Ctrl-C during `recgoat train` printed nothing at all."""
    import recgoat.training.run as run

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train", interrupted)
    code, err = run_main(monkeypatch, capsys, "train", "--model", "bprmf")
    assert code == 130
    assert "interrupted; the run folder keeps the checkpoint" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ relative paths
def test_relative_dataset_and_feature_folders_are_found_from_another_folder(catalogue, tmp_path, monkeypatch):
    """run_config.json recorded `--dataset data/cat` and `--features feat` as typed: `recgoat evaluate` run
    from another folder said "data/cat: no such dataset", and `export` dropped the run's features."""
    from recgoat.datasets import load
    from recgoat.features import import_mmrec

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    write_catalogue(work / "data" / "cat")
    ds = load(work / "data" / "cat")
    (work / "mm").mkdir()
    np.save(work / "mm" / "text_feat.npy", np.random.default_rng(0).normal(size=(ds.n_items, 8)).astype(np.float32))
    mmrec_mapping(work / "mm", ds)
    import_mmrec(ds, work / "mm", work / "feat")

    monkeypatch.chdir(work)
    train("--dataset", "data/cat", "--features", "feat", "--model", "vbpr", "--epochs", "1", "--run-dir", "run")
    recorded = json.loads((work / "run" / "run_config.json").read_text())
    assert recorded["data"]["name"] == str(work / "data" / "cat") and recorded["features"] == str(work / "feat")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = runner.invoke(app, ["evaluate", str(work / "run")])
    assert r.exit_code == 0, (r.output, r.exception)
    r = runner.invoke(app, ["export", str(work / "run"), "--dataset", str(work / "data" / "cat"),
                            "--out", str(tmp_path / "art")])
    assert r.exit_code == 0, r.output
    assert f"features: {work / 'feat'} (the run's" in " ".join(r.output.split())


def test_a_dataset_name_stays_a_name(tmp_path, monkeypatch):
    """Only paths are made absolute: `ml-latest-small` is the embedded dataset wherever the run is read."""
    from recgoat.training.run import recorded_run_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ml-latest-small").mkdir()  # a folder of that name, not a dataset: load() reads the name
    assert recorded_run_config(load_config(None))["data"]["name"] == "ml-latest-small"


def test_features_a_model_does_not_read_are_reported_unused(catalogue, tmp_path):
    """`--model lightgcn --features F` ignored F without a word."""
    from recgoat.datasets import load
    from recgoat.features import import_mmrec

    ds = load(catalogue)
    (tmp_path / "mm").mkdir()
    np.save(tmp_path / "mm" / "text_feat.npy", np.ones((ds.n_items, 4), np.float32))
    mmrec_mapping(tmp_path / "mm", ds)
    import_mmrec(ds, tmp_path / "mm", tmp_path / "feat")
    r = train("--dataset", str(catalogue), "--model", "lightgcn", "--features", str(tmp_path / "feat"),
              "--epochs", "1", "--run-dir", str(tmp_path / "run"))
    assert f"note: lightgcn reads no side features: the feature folder {tmp_path / 'feat'} was not used" in r.output


# ------------------------------------------------------------------------------------------ resuming
def test_resume_under_other_ks_reports_one_set_of_cutoffs(catalogue, tmp_path):
    """The best epoch's validation metrics came from the checkpoint, at the old trainer.ks, the test ones at
    the new: result.json mixed the two and `recgoat train` stopped with a KeyError traceback printing them."""
    run_dir = tmp_path / "run"
    common = ["--dataset", str(catalogue), "--model", "bprmf", "--run-dir", str(run_dir),
              "--set", "trainer.lr=0"]  # no epoch beats the first: the best stays the checkpoint's
    first = train(*common, "--epochs", "1")
    before = json.loads((run_dir / "result.json").read_text())
    assert "@50" in first.output
    r = runner.invoke(app, ["train", *common, *QUIET, "--epochs", "2", "--set", "trainer.ks=[10,20]"])
    assert r.exit_code == 0, (r.output, r.exception)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["best_epoch"] == 0 and result["epochs_run"] == 2
    assert set(result["valid"]) == set(result["test"]) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision",
                                                                                 "hit", "map") for k in (10, 20)}
    assert result["valid"]["recall@20"] == pytest.approx(before["valid"]["recall@20"])  # the same best model
    assert "@50" not in r.output and "@20" in r.output


def test_fresh_start_in_a_used_run_folder_drops_the_old_best_model(catalogue, tmp_path, monkeypatch):
    """`--set trainer.resume=false` (or a folder without a checkpoint) kept the earlier run's best/: stopped
    before its first validation, the new run's folder was evaluated (and exported) as that other model."""
    from recgoat.models import LightGCN
    from recgoat.training.run import evaluate

    run_dir = tmp_path / "run"
    train("--dataset", str(catalogue), "--model", "bprmf", "--epochs", "1", "--run-dir", str(run_dir))
    evaluate(run_dir)
    assert (run_dir / "evaluate_test.json").is_file()

    def stop(self, epoch, rng):
        raise KeyboardInterrupt

    monkeypatch.setattr(LightGCN, "on_epoch_start", stop)
    r = runner.invoke(app, ["train", "--dataset", str(catalogue), "--model", "lightgcn", "--epochs", "1",
                            "--run-dir", str(run_dir), "--set", "trainer.resume=false", *QUIET])
    assert r.exit_code == 130  # typer's exit for Ctrl-C
    assert not (run_dir / "evaluate_test.json").exists() and not (run_dir / "test_per_user.npz").exists()
    with pytest.raises(DataError, match="no best model yet"):
        evaluate(run_dir)


def test_a_model_without_epochs_leaves_no_checkpoint_of_the_run_it_replaced(catalogue, tmp_path):
    """MostPop trained into a BPR-MF run folder kept BPR-MF's checkpoint and log beside its own best/: the BPR-MF
    command run again resumed that checkpoint and stopped with a RuntimeError traceback loading MostPop's
    weights."""
    run_dir = tmp_path / "run"
    bprmf = ["--dataset", str(catalogue), "--model", "bprmf", "--run-dir", str(run_dir), "--epochs", "2"]
    train(*bprmf)
    r = runner.invoke(app, ["train", "--dataset", str(catalogue), "--model", "mostpop", "--run-dir", str(run_dir),
                            "--set", "trainer.progress=false"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert not (run_dir / "checkpoint" / "state.json").exists() and not (run_dir / "log.jsonl").exists()
    train(*bprmf)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["model"] == "bprmf" and result["epochs_run"] == 2
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2


def test_empty_run_dir_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys):
    """`--run-dir ""` (an unset shell variable) became Path("") = ".": the run was written into the current folder."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, "train", "--model", "bprmf", "--epochs", "1", "--run-dir", "")
    assert code == 1 and "--run-dir is empty" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("override, message", [
    ("trainer.epoch=3", "trainer.epoch: unknown key (did you mean 'epochs'? valid keys: epochs, batch_size, lr,"),
    ("traner.epochs=3", "traner: unknown key (did you mean 'trainer'? valid keys: data, model, trainer, features, out)"),
    ("data.kcore=3", "data.kcore: unknown key (did you mean 'k_core'? valid keys: name, min_rating, k_core,"),
    ("model.params.embeding_dim=8", "model.params.embeding_dim: unknown key (did you mean 'embedding_dim'? "
                                    "valid keys: embedding_dim, n_layers, reg_weight)"),
    ("trainer.zzz=1", "trainer.zzz: unknown key (valid keys: epochs,"),
])
def test_unknown_key_names_the_closest_and_the_valid_keys(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_in_a_file_names_the_file_and_the_valid_keys(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  name: bprmf\n  parms: {embedding_dim: 8}\n")
    with pytest.raises(ConfigError, match=rf"^{f}: model\.parms: unknown key \(did you mean 'params'\? "
                                          r"valid keys: name, preset, params\)$"):
        load_config(f)


# ------------------------------------------------------------------------------------------ output
def test_summary_lines_are_not_wrapped_at_the_terminal_width(capsys):
    """Piped output wrapped at 80 columns: "rating attention: \\non" broke a line a log grep looks for."""
    from recgoat.cli import _print_result

    metrics = {f"{m}@20": 0.5 for m in ("recall", "ndcg", "precision", "hit", "map")}
    _print_result({"model": "recgoat", "dataset": "d", "best_epoch": 0, "epochs_run": 1, "seconds_per_epoch": 1.0,
                   "valid": metrics, "test": metrics,
                   "summary": {"modalities_used": ["text"], "profile_branch": True, "fusion": "simplex", "cmcl": True,
                               "oat": "sinkhorn divergence", "rating_attention": True}})
    out = capsys.readouterr().out
    assert "fusion: simplex; alignment: CMCL + OAT (sinkhorn divergence); rating attention: on\n" in out


@pytest.mark.parametrize("value, message", [
    ("bogus", r"data\.split: unknown split 'bogus'; expected random, temporal, loo"),
    ("none", r"data\.split: none leaves no validation and test split"),
])
def test_a_split_method_is_checked_by_its_key_before_the_data_loads(value, message):
    """`--set data.split=bogus` failed only once the data was loaded, with a message not naming data.split."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.split={value}"])


def test_train_says_when_it_resumed(catalogue, tmp_path):
    """Re-running `recgoat train` on a run folder resumes it silently: a finished run re-run looked like a
    new one trained in no time. The result records the epochs restored, and the command says so."""
    run_dir = tmp_path / "run"
    common = ["--dataset", str(catalogue), "--model", "bprmf", "--run-dir", str(run_dir)]
    first = train(*common, "--epochs", "2")
    assert "resumed" not in first.output
    assert json.loads((run_dir / "result.json").read_text())["resumed_epochs"] == 0
    again = train(*common, "--epochs", "3")
    assert "resumed from its checkpoint: 2 epoch(s) run before, 1 now" in again.output
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_epochs"] == 2 and result["epochs_run"] == 3


def test_out_and_run_dir_together_are_refused(tmp_path, monkeypatch, capsys):
    """--out was silently ignored when --run-dir was given too."""
    code, err = run_main(monkeypatch, capsys, "train", "--model", "mostpop", "--out", str(tmp_path / "a"),
                         "--run-dir", str(tmp_path / "b"))
    assert code == 1 and "not both" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------ piped output
def test_the_result_line_stays_one_line_in_80_columns(tmp_path, monkeypatch):
    """Piped (`| tee log`), rich wraps at 80 columns: the result line was split before `s/epoch`, and a grep of
    a log for it found half."""
    data = tmp_path / "a_catalogue_with_a_name_long_enough_to_pass_80_columns"
    write_catalogue(data)
    monkeypatch.setenv("COLUMNS", "80")
    r = train("--dataset", str(data), "--model", "bprmf", "--epochs", "1", "--run-dir", str(tmp_path / "run"))
    line = next(line for line in r.stdout.splitlines() if "best epoch" in line)
    assert len(line) > 80 and line.endswith(" s/epoch"), line
