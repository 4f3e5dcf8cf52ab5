"""The learning-rate schedule of MMRec's trainer (``trainer.lr_decay``, ``trainer.lr_decay_every``): epoch e trains at
``lr · lr_decay^(e / lr_decay_every)``, as torch's LambdaLR stepped once an epoch with MMRec's factor; a resumed run
gets its epoch's rate; the schedule is part of what a checkpoint or a benchmark cell resumes under, and runs recorded
before it existed are compared as the constant rate they ran at.

The synthetic 50-user catalogue (``training_helpers``), BPR-MF at d = 8 on one thread.
"""
from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from recgoat.errors import ConfigError
from recgoat.models import get_model_class
from recgoat.training.trainer import Trainer

import training_helpers
from training_helpers import small_config

catalogue, ds = training_helpers.catalogue, training_helpers.ds  # module fixtures
torch.set_num_threads(1)


def _model(ds):
    torch.manual_seed(0)
    return get_model_class("bprmf").build(ds, {"embedding_dim": 8})


@pytest.mark.parametrize("decay, every", [(0.96, 50.0), (0.5, 1.0), (0.9, 2.5)])
def test_each_epoch_trains_at_the_rate_mmrecs_lambdalr_gives_it(ds, decay, every, monkeypatch):
    """MMRec: ``LambdaLR(optimizer, lambda e: decay ** (e / every))``, stepped after each epoch."""
    seen: list[float] = []  # the rate each epoch's log row reports
    used: dict[int, set[float]] = {}  # epoch → the rates the optimizer stepped with in it
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        used.setdefault(len(seen), set()).add(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    Trainer(small_config(epochs=4, lr_decay=decay, lr_decay_every=every, patience=10),
            on_epoch_end=lambda e, row: seen.append(row["lr"])).fit(_model(ds), ds)
    monkeypatch.undo()  # the reference below steps a plain Adam
    ref = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lr_lambda=lambda e: decay ** (e / every))
    expected = []
    for _ in range(4):
        expected.append(ref.param_groups[0]["lr"])
        ref.step()
        sched.step()
    assert seen == pytest.approx(expected, rel=1e-15)
    assert [lr for (lr,) in (used[e] for e in range(4))] == pytest.approx(expected, rel=1e-15)  # one rate an epoch
    assert expected[0] == 0.05 and expected[-1] < 0.05


def test_the_constant_default_logs_no_rate_and_the_decay_changes_the_trajectory(ds):
    rows: list[dict] = []
    plain = Trainer(small_config(patience=10), on_epoch_end=lambda e, row: rows.append(row)).fit(_model(ds), ds)
    plain = plain["history"]
    decayed = Trainer(small_config(patience=10, lr_decay=0.5, lr_decay_every=1.0)).fit(_model(ds), ds)["history"]
    assert len(rows) == 3 and all("lr" not in r for r in rows)
    assert plain[0]["loss"] == decayed[0]["loss"]  # epoch 0 at the full rate in both
    assert plain[1]["loss"] != decayed[1]["loss"]


def test_a_resumed_run_goes_on_at_its_epochs_rate_and_ends_as_the_whole_run(ds, tmp_path):
    cfg = dict(lr_decay=0.5, lr_decay_every=1.0, patience=10)
    whole = Trainer(small_config(epochs=4, **cfg), run_dir=tmp_path / "whole").fit(_model(ds), ds)
    Trainer(small_config(epochs=2, **cfg), run_dir=tmp_path / "split").fit(_model(ds), ds)
    resumed = Trainer(small_config(epochs=4, **cfg), run_dir=tmp_path / "split").fit(_model(ds), ds)
    assert resumed["resumed_epochs"] == 2
    assert resumed["history"] == whole["history"] and resumed["test"] == whole["test"]
    logged = [json.loads(line)["lr"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert logged == [0.05, 0.025, 0.0125, 0.00625]


def test_a_checkpoint_resumes_only_under_its_schedule(ds, tmp_path):
    run = tmp_path / "run"
    Trainer(small_config(epochs=1), run_dir=run).fit(_model(ds), ds)
    with pytest.raises(ConfigError, match=r"trainer\.lr_decay: 1\.0 → 0\.96"):
        Trainer(small_config(epochs=2, lr_decay=0.96), run_dir=run).fit(_model(ds), ds)


def test_a_checkpoint_recorded_before_the_schedule_existed_is_the_constant_rate(ds, tmp_path):
    run = tmp_path / "run"
    Trainer(small_config(epochs=1), run_dir=run).fit(_model(ds), ds)
    state_file = run / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    for key in ("lr_decay", "lr_decay_every"):  # as an older version wrote it
        del state["signature"]["train"][key]
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"trainer\.lr_decay: 1\.0 → 0\.5"):
        Trainer(small_config(epochs=2, lr_decay=0.5), run_dir=run).fit(_model(ds), ds)
    assert Trainer(small_config(epochs=2), run_dir=run).fit(_model(ds), ds)["resumed_epochs"] == 1


def test_a_benchmark_cell_recorded_before_the_schedule_existed_stands_and_a_new_schedule_is_refused(tmp_path):
    from recgoat.benchmark import load_config, run_benchmark
    from test_benchmark_paths import write_data

    data, out = write_data(tmp_path / "tiny"), tmp_path / "bench"

    def config(*sets: str):
        base = {"datasets": [{"name": str(data), "features": None}], "models": ["bprmf"], "seeds": [1], "epochs": 1,
                "out": str(out), "progress": False}
        return load_config(None, base, ["train.num_threads=1", "train.batch_size=64", *sets])

    assert run_benchmark(config()).trained == ["tiny/bprmf/seed1"]
    cell_file = out / "runs" / "tiny" / "bprmf" / "seed1" / "cell.json"
    cell = json.loads(cell_file.read_text())
    for key in ("lr_decay", "lr_decay_every"):
        del cell["train"][key]
    cell_file.write_text(json.dumps(cell))
    assert run_benchmark(config()).skipped == ["tiny/bprmf/seed1"]
    with pytest.raises(ConfigError, match=r"train\.lr_decay: 1\.0 → 0\.96"):
        run_benchmark(config("train.lr_decay=0.96"))


@pytest.mark.parametrize("key, bad", [("lr_decay", 0.0), ("lr_decay", 1.5), ("lr_decay", float("nan")),
                                      ("lr_decay_every", 0.0), ("lr_decay_every", -50.0)])
def test_a_schedule_that_is_no_decay_is_refused(key, bad):
    with pytest.raises(ValidationError, match=key):
        small_config(**{key: bad})
