"""Resuming with fewer epochs, NaN validation metrics and hand-edited dataset manifests: each test pins a bug
that was found and fixed.

Runs train BPR-MF (d = 8) for at most 6 epochs on a synthetic 50-user × 40-item catalogue: a second each.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from recgoat.config import load_config
from recgoat.datasets import Dataset
from recgoat.errors import ConfigError, DataError, TrainingDiverged
from recgoat.models import BPRMF
from recgoat.training.run import evaluate, train
from recgoat.training.trainer import Trainer

from training_helpers import catalogue, ds, script_validation as _script_validation, small_config  # noqa: F401


def _fit(ds, run_dir=None, on_epoch_end=None, **kw) -> dict:
    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 8})
    return Trainer(small_config(**kw), run_dir=run_dir, on_epoch_end=on_epoch_end).fit(model, ds)


def _run_config(data, *overrides: str):
    return load_config(None, [f"data.name={data}", "model.name=bprmf", "model.params.embedding_dim=8",
                              "trainer.batch_size=64", "trainer.ks=[5,10,20]", "trainer.progress=false",
                              *overrides])


def _snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ 1. resuming with fewer epochs
def test_resume_with_fewer_epochs_than_run_is_refused_and_changes_nothing(catalogue, ds, tmp_path, monkeypatch):
    """Trained 6 epochs then resumed with trainer.epochs=4: the loop ran nothing and result.json reported
    best_epoch 5 and epochs_run 6 under a configuration of 4 epochs, silently."""
    _script_validation(ds, monkeypatch, lambda n: 0.1 + 0.01 * n)  # improves at every evaluation
    run_dir = tmp_path / "run"
    six = train(_run_config(catalogue, "trainer.epochs=6"), run_dir=run_dir)
    assert six["best_epoch"] == 5  # beyond the 4 epochs asked for next
    before = _snapshot(run_dir)
    with pytest.raises(ConfigError) as e:
        train(_run_config(catalogue, "trainer.epochs=4"), run_dir=run_dir)
    msg = str(e.value)
    assert msg.startswith(f"{run_dir}: has already run 6 epochs, more than trainer.epochs=4")
    assert "trainer.epochs=6 or more" in msg and "trainer.resume=false" in msg and "\n" not in msg
    # a folder of its own first (keeping the 6-epoch run), overwriting it second
    assert ("to start afresh with 4 epochs give it a folder of its own with --run-dir DIR (or another --out), or "
            "overwrite that run with --set trainer.resume=false (Python: another run_dir, or "
            "TrainConfig(resume=False))") in msg, msg
    assert _snapshot(run_dir) == before  # run_config.json, log and result untouched

    # the two ways on that the message names: the same epochs report the run as it stands ...
    same = train(_run_config(catalogue, "trainer.epochs=6"), run_dir=run_dir)
    assert (same["best_epoch"], same["epochs_run"], same["test"]) == (5, 6, six["test"])
    # ... and a fresh start trains the 4 epochs asked for
    fresh = train(_run_config(catalogue, "trainer.epochs=4", "trainer.resume=false"), run_dir=run_dir)
    assert (fresh["best_epoch"], fresh["epochs_run"]) == (3, 4)
    assert [r["epoch"] for r in _log(run_dir)] == [0, 1, 2, 3]


def test_resume_of_an_early_stopped_run_with_fewer_epochs_is_refused(ds, tmp_path):
    """An early-stopped run is refused too: its epochs beyond the new limit cannot be undone (and the best
    a shorter run picks depends on its forced last-epoch evaluation), whatever epoch was best."""
    run_dir = tmp_path / "run"
    res = _fit(ds, run_dir, epochs=50, patience=2, lr=0.0)  # lr 0: no improvement after epoch 0
    assert res["best_epoch"] == 0 and res["epochs_run"] == 3
    with pytest.raises(ConfigError, match=r"has already run 3 epochs, more than trainer.epochs=2"):
        _fit(ds, run_dir, epochs=2, patience=2, lr=0.0)
    assert _fit(ds, run_dir, epochs=3, patience=2, lr=0.0)["epochs_run"] == 3  # not fewer: resumes as before


# ------------------------------------------------------------------ 2. NaN validation metric
@pytest.fixture
def nan_validation(ds, monkeypatch):
    """The validation metric is NaN at every evaluation (test metrics stay real). The built-in evaluator
    gives a NaN mean only when it scores no user (NaN scores rank against the model, so they lower the
    metric instead), which the trainer's empty-split check refuses up front: a custom evaluator stands in."""
    _script_validation(ds, monkeypatch, lambda n: float("nan"))


NAN_MESSAGE = "the validation metric recall@20 was NaN at every evaluation"


@pytest.mark.parametrize("with_run_dir", [True, False])
def test_nan_validation_metric_is_named_not_reported_as_resumed_past_epochs(ds, tmp_path, nan_validation,
                                                                            with_run_dir):
    """Was ConfigError "<run_dir>: the checkpoint is at epoch -1 with no validation yet, and trainer.epochs=3
    ends before the next evaluation; raise trainer.epochs" on a fresh run ("None: ..." without a run folder)."""
    run_dir = tmp_path / "run" if with_run_dir else None
    with pytest.raises(TrainingDiverged) as e:
        _fit(ds, run_dir, epochs=3, patience=10)
    msg = str(e.value)
    assert msg.startswith(f"{run_dir}: {NAN_MESSAGE} (3 of them, epochs 0–2)" if with_run_dir else NAN_MESSAGE)
    assert "lower trainer.lr" in msg and "empty validation split" in msg
    assert "checkpoint" not in msg and "None" not in msg and "\n" not in msg


def test_nan_validation_stops_at_patience_instead_of_running_every_epoch(catalogue, tmp_path, nan_validation):
    """Early stopping waited for a first best that a NaN metric never gives: all 50 epochs ran before the
    error. NaN evaluations count against patience like any evaluation without improvement."""
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=NAN_MESSAGE):
        train(_run_config(catalogue, "trainer.epochs=50", "trainer.patience=2"), run_dir=run_dir)
    assert [r["epoch"] for r in _log(run_dir)] == [0, 1]
    assert all(math.isnan(r["valid"]["recall@20"]) for r in _log(run_dir))
    # resuming it (the loop has nothing left to do) and evaluating it name the NaN metric too, not a run
    # "stopped before its first validation" or "resumed past trainer.epochs"
    with pytest.raises(TrainingDiverged, match=rf"{NAN_MESSAGE} \(2 of them, epochs 0–1\)"):
        train(_run_config(catalogue, "trainer.epochs=2", "trainer.patience=2"), run_dir=run_dir)
    with pytest.raises(DataError, match=r"no best model: the validation metric recall@20 was NaN at every "
                                        r"evaluation in log.jsonl \(2: "):
        evaluate(run_dir)


def test_checkpoint_never_validated_still_asks_for_more_epochs(ds, tmp_path):
    """The message the NaN case borrowed is kept for its own case: a checkpoint taken before any validation
    (eval_every=5), resumed with trainer.epochs ending right after it."""
    class Killed(BaseException):
        pass

    def kill_after_epoch_1(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise Killed

    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        _fit(ds, run_dir, on_epoch_end=kill_after_epoch_1, epochs=10, eval_every=5)
    with pytest.raises(ConfigError, match=r"checkpoint is at epoch 1 with no validation yet, and "
                                          r"trainer.epochs=2 ends before the next evaluation"):
        _fit(ds, run_dir, epochs=2, eval_every=5)


# ------------------------------------------------------------------ 3. hand-edited dataset manifest
@pytest.fixture(scope="module")
def prepared(ds, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prep") / "p"
    ds.save(folder)
    return folder


def _edit(path, change) -> None:
    man = json.loads(path.read_text())
    change(man)
    path.write_text(json.dumps(man))


@pytest.mark.parametrize("change, field, expected", [
    # string counts: was "ids.parquet: holds 50 users but manifest.json records 50: the file is truncated"
    (lambda m: m["stats"].update(users=str(m["stats"]["users"])), 'stats.users is "50" (a string)',
     "a non-negative integer"),
    (lambda m: m["stats"].update(items=40.0), "stats.items is 40.0 (a number)", "a non-negative integer"),
    (lambda m: m["stats"].update(interactions=True), "stats.interactions is true (a boolean)",
     "a non-negative integer"),
    (lambda m: m["stats"].update(users=-1), "stats.users is -1 (a number)", "a non-negative integer"),
    (lambda m: m.update(stats=[50, 40]), "stats is [50, 40] (a list)", "a JSON object"),  # was ignored
    # was "format version 1 is not the supported 1"
    (lambda m: m.update(format_version="1"), 'format_version is "1" (a string)', "the integer 1"),
    (lambda m: m.update(name=7), "name is 7 (a number)", "a non-empty string"),
    (lambda m: m.update(fingerprint=12345), "fingerprint is 12345 (a number)", "a string"),
    (lambda m: m.update(text_fields="title"), 'text_fields is "title" (a string)', "a list of column names"),
    (lambda m: m.update(info=["x"]), 'info is ["x"] (a list)', "a JSON object"),
    (lambda m: m["info"].update(source=5), "info.source is 5 (a number)", "a path (string) or null"),
    (lambda m: m.update(files="ids.parquet"), 'files is "ids.parquet" (a string)', "a list of file names"),
], ids=["users-string", "items-float", "interactions-bool", "users-negative", "stats-list", "version-string",
        "name-number", "fingerprint-number", "text-fields-string", "info-list", "source-number", "files-string"])
def test_hand_edited_manifest_names_the_file_the_field_and_the_type(prepared, tmp_path, change, field, expected):
    folder = tmp_path / "p"
    Dataset.load(prepared).save(folder)
    _edit(folder / "manifest.json", change)
    with pytest.raises(DataError) as e:
        Dataset.load(folder)
    assert e.value.path == str(folder / "manifest.json")
    assert e.value.problem.startswith(f"{field}, expected {expected}") and "\n" not in str(e.value)


def test_manifest_prepare_options_of_the_wrong_type_are_one_data_error(prepared, tmp_path):
    """info.prepare is read (before Dataset.load) to refuse preparation options a prepared folder ignores:
    a hand-edited list there was a TypeError "list indices must be integers or slices, not str"."""
    folder = tmp_path / "p"
    Dataset.load(prepared).save(folder)
    _edit(folder / "manifest.json", lambda m: m["info"].update(prepare=["seed"]))
    with pytest.raises(DataError) as e:
        train(_run_config(folder, "data.seed=3", "trainer.epochs=1"), run_dir=tmp_path / "run")
    assert e.value.path == str(folder / "manifest.json")
    assert e.value.problem.startswith('info.prepare is ["seed"] (a list), expected a JSON object or null')
    assert not (tmp_path / "run").exists()


def test_manifest_without_the_optional_fields_still_loads(prepared, tmp_path):
    """The checks apply to fields present: a manifest of an older version, without files, stats or
    fingerprint, loads as before."""
    folder = tmp_path / "p"
    Dataset.load(prepared).save(folder)
    _edit(folder / "manifest.json", lambda m: [m.pop(k) for k in ("files", "stats", "fingerprint", "text_fields")])
    assert Dataset.load(folder).fingerprint() == Dataset.load(prepared).fingerprint()
