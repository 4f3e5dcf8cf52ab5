"""Resumed runs and their best model (replaced or kept, a damaged record), and a seed beyond torch's range: each
test pins a bug that was found and fixed.

Runs train BPR-MF (d = 8) for at most 6 epochs on a synthetic 50-user × 40-item catalogue: a second each.
"""
from __future__ import annotations

import json

import pytest
import torch

from recgoat.config import load_config
from recgoat.errors import DataError
from recgoat.models import BPRMF
from recgoat.training.run import train
from recgoat.training.trainer import Trainer

from training_helpers import catalogue, ds, script_validation as _script_validation, small_config  # noqa: F401


class Killed(Exception):
    pass


def _fit(ds, run_dir=None, kill_at: int | None = None, **kw) -> dict:
    """BPR-MF trained under :func:`small_config` (``kw``); ``kill_at``: raise after that epoch's checkpoint."""
    def kill(epoch: int, row: dict) -> None:
        if epoch == kill_at:
            raise Killed

    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 8})
    return Trainer(small_config(**kw), run_dir=run_dir, on_epoch_end=kill).fit(model, ds)


# ------------------------------------------------------------------ 1. results of a replaced best model
def test_resumed_run_that_replaces_the_best_model_drops_the_old_results(ds, tmp_path, monkeypatch):
    """A finished run resumed with more epochs kept its result.json (best epoch 1 and its test metrics),
    test_per_user.npz and `recgoat evaluate`'s files beside a best/ that now held epoch 3: killed there, the
    run folder reported one model's numbers for another for good (export and evaluate use best/)."""
    _script_validation(ds, monkeypatch, lambda n: 0.1 + 0.01 * n)  # improves at every evaluation
    run = tmp_path / "run"
    assert _fit(ds, run, epochs=2)["best_epoch"] == 1
    (run / "evaluate_test.json").write_text("{}")  # as `recgoat evaluate` leaves it
    (run / "evaluate_test-mask-train.json").write_text("{}")
    with pytest.raises(Killed):
        _fit(ds, run, epochs=6, kill_at=3)
    state = json.loads((run / "checkpoint/state.json").read_text())
    assert state["best"]["epoch"] == 3
    assert json.loads((run / "best/model.json").read_text())["weights_sha256"] == state["best"]["weights_sha256"]
    left = sorted(p.name for p in run.iterdir())
    assert not {"result.json", "test_per_user.npz", "evaluate_test.json", "evaluate_test-mask-train.json"} & set(left)
    done = _fit(ds, run, epochs=6)  # finishing writes them again, for the final best
    assert done["best_epoch"] == 5 == json.loads((run / "result.json").read_text())["best_epoch"]
    assert (run / "test_per_user.npz").is_file()


def test_resumed_run_without_a_new_best_keeps_its_result(ds, tmp_path, monkeypatch):
    """The counterpart: results are dropped only when best/ changes (here no evaluation beats epoch 0)."""
    _script_validation(ds, monkeypatch, lambda n: 0.5 if n == 0 else 0.1)
    run = tmp_path / "run"
    first = _fit(ds, run, epochs=2, patience=10)
    with pytest.raises(Killed):
        _fit(ds, run, epochs=6, patience=10, kill_at=3)
    assert json.loads((run / "result.json").read_text())["test"] == first["test"]


# ------------------------------------------------------------------ 2. damaged checkpoint records
@pytest.mark.parametrize("edit", [
    lambda s: s["best"].pop("score"),                  # KeyError 'score' at the next evaluation
    lambda s: s["best"].update(score="0.3"),           # TypeError comparing a float with a str
    lambda s: s["best"].pop("valid"),                  # KeyError 'valid' after training
    lambda s: s["best"].update(epoch=-7),
    lambda s: s.update(epoch=-3),                      # numpy ValueError: negative seed entry for epoch -2
    lambda s: s.update(bad=True),
], ids=["no-score", "score-str", "no-valid", "best-epoch-negative", "epoch-negative", "bad-bool"])
def test_checkpoint_with_a_damaged_best_record_is_one_data_error(ds, tmp_path, edit):
    run = tmp_path / "run"
    _fit(ds, run, epochs=2, lr=0.0)
    path = run / "checkpoint/state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))
    with pytest.raises(DataError) as e:
        _fit(ds, run, epochs=4, lr=0.0)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a checkpoint state") and "trainer.resume=false" in msg


def test_checkpoint_before_any_validation_still_resumes(ds, tmp_path):
    """The stricter check still takes the record of a checkpoint without a best yet (score -inf)."""
    run = tmp_path / "run"
    with pytest.raises(Killed):
        _fit(ds, run, epochs=4, eval_every=3, kill_at=0)
    assert json.loads((run / "checkpoint/state.json").read_text())["best"]["epoch"] == -1
    assert _fit(ds, run, epochs=4, eval_every=3)["resumed_epochs"] == 1


# ------------------------------------------------------------------ 3. seeds torch cannot take
def test_seed_beyond_torch_range_trains(catalogue, tmp_path):
    """trainer.seed has no upper bound, but run.train passed it to torch.manual_seed as it was: a seed
    >= 2**64 was a ValueError "Overflow when unpacking long long" before anything trained."""
    seed = 2**64 + 5
    cfg = load_config(None, [f"data.name={catalogue}", "model.name=bprmf", "model.params.embedding_dim=8",
                             "trainer.epochs=1", "trainer.ks=[5,10,20]", "trainer.progress=false",
                             f"trainer.seed={seed}"])
    res = train(cfg, run_dir=tmp_path / "run")
    assert res["train_config"]["seed"] == seed and res["epochs_run"] == 1
