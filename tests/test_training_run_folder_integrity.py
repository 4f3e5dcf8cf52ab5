"""Run-folder integrity on resume: a refused second run, damaged best model, checkpoint and log, and the
temporaries of a killed run. Each test pins a fault a probe found (killing and corrupting real runs).

Runs train BPR-MF (d = 8) for a few epochs on a synthetic 50-user × 40-item catalogue: a second each.
"""
from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from recgoat.errors import DataError
from recgoat.io import LOCK_NAME
from recgoat.models import BPRMF
from recgoat.training.trainer import Trainer

from training_helpers import catalogue, ds, small_config  # noqa: F401  (module fixtures)

AFRESH = "to start afresh use --set trainer.resume=false"


def _fit(ds, run_dir, **kw):
    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 8})
    return model, Trainer(small_config(**kw), run_dir=run_dir).fit(model, ds)


def _snapshot(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_refusal(ds, run, where, start: str, **kw) -> str:
    """Resume ``run``: one DataError line starting ``{run/where}: {start}``, saying how to start afresh, and
    the folder left as it was."""
    before = _snapshot(run)
    with pytest.raises(DataError) as e:
        _fit(ds, run, **kw)
    msg = str(e.value)
    assert msg.startswith(f"{run / where}: {start}"), msg
    assert AFRESH in msg and "\n" not in msg
    assert _snapshot(run) == before
    return msg


# ------------------------------------------------------------------ 1. a second run refused by the lock
@pytest.fixture
def held(tmp_path):
    """Hold ``folder``'s run lock as a live `recgoat train` would (another open file: flock refuses this
    process too, whatever recgoat.io remembers of its own locks)."""
    fds = []

    def hold(folder) -> None:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"4242", 0)
        fds.append(fd)

    yield hold
    for fd in fds:
        os.close(fd)


def _stage_newer_best(model, run) -> None:
    """What a live run leaves between finding a new best and checkpointing it: best.new/ holding a model
    whose digest the checkpoint does not record yet."""
    with torch.no_grad():
        model.user_emb.weight.add_(1.0)
    model.save(run / "best.new")


@pytest.mark.parametrize("in_flux", ["staged-best", "checkpoint-pair-replaced"])
def test_run_refused_by_the_lock_leaves_the_live_runs_files_alone(ds, tmp_path, held, in_flux):
    """A second `recgoat train` on a folder a live run holds reconciled best.new/ before taking the lock:
    it deleted the live run's new best (which then tested an older best/, exit 0) and only then was refused.
    Its checks also read the live run's files mid-change (a checkpoint pair just replaced read as a damaged
    checkpoint). Now an existing run folder is locked before anything in it is read."""
    run = tmp_path / "run"
    model, _ = _fit(ds, run, epochs=2)
    _stage_newer_best(model, run)
    if in_flux == "checkpoint-pair-replaced":  # the live run deletes the pair its new state.json no longer names
        next((run / "checkpoint").glob("model-*")).unlink()
    held(run)
    before = _snapshot(run)
    with pytest.raises(DataError, match=r"another recgoat process \(pid 4242\) is writing to this folder"):
        _fit(ds, run, epochs=4)
    assert _snapshot(run) == before  # best.new/ included


def test_staged_best_of_a_lost_epoch_is_dropped_once_the_lock_is_held(ds, tmp_path):
    """The reconciliation still happens, under the lock: a staged best the checkpoint does not record goes."""
    run = tmp_path / "run"
    model, _ = _fit(ds, run, epochs=2)
    best = _snapshot(run / "best")
    _stage_newer_best(model, run)
    _, res = _fit(ds, run, epochs=2)  # the run as it stands: no epoch left to train
    assert not (run / "best.new").exists() and _snapshot(run / "best") == best
    assert res["epochs_run"] == 2


# ------------------------------------------------------------------ 2. damaged best model and checkpoint files
def _changed_values(path) -> None:
    tensors = load_file(str(path))
    tensors = {k: v + 0.5 if k.startswith("param.") else v for k, v in tensors.items()}
    save_file(tensors, str(path))


def _zero_64_bytes(path) -> None:
    """Zero 64 bytes inside the tensor values of a safetensors file or a torch.save zip: it still loads."""
    data = bytearray(path.read_bytes())
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            member = max(z.infolist(), key=lambda m: m.file_size)
        name_len, extra_len = struct.unpack_from("<HH", data, member.header_offset + 26)
        start = member.header_offset + 30 + name_len + extra_len
    else:  # safetensors: an 8-byte header length, the JSON header, then the values
        start = 8 + struct.unpack_from("<Q", data, 0)[0]
    assert len(data) >= start + 80 and any(data[start + 16:start + 80])
    data[start + 16:start + 80] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated: was a 48-line SafetensorError after training
    lambda p: p.write_bytes(b"garbage"),
    _changed_values,  # still a valid file: its test metrics were reported as the best epoch's
    _zero_64_bytes,
], ids=["truncated", "garbage", "changed-values", "zeroed-bytes"])
@pytest.mark.parametrize("older", [False, True], ids=["digest-in-state", "digest-in-model-json"])
def test_damaged_best_model_is_refused_on_resume(ds, tmp_path, damage, older):
    run = tmp_path / "run"
    _fit(ds, run, epochs=2, lr=0.0)  # lr 0: no later epoch replaces best/
    if older:  # a checkpoint of a version that recorded no digest: best/model.json's is compared
        path = run / "checkpoint" / "state.json"
        state = json.loads(path.read_text())
        del state["best"]["weights_sha256"]
        path.write_text(json.dumps(state))
    damage(run / "best" / "weights.safetensors")
    msg = _one_line_refusal(ds, run, "best/weights.safetensors", "checksum mismatch", epochs=3, lr=0.0)
    assert "(epoch " in msg


@pytest.mark.parametrize("pattern", ["model-*", "optimizer-*"])
def test_checkpoint_file_with_changed_bytes_is_refused(ds, tmp_path, pattern):
    """64 zeroed bytes in the checkpoint's weights or optimizer state loaded without complaint: the run
    resumed from other values than its checkpoint's. state.json now records both files' digests."""
    run = tmp_path / "run"
    _fit(ds, run, epochs=2)
    path = next((run / "checkpoint").glob(pattern))
    _zero_64_bytes(path)
    _one_line_refusal(ds, run, f"checkpoint/{path.name}", "checksum mismatch", epochs=3)


def test_checkpoint_without_file_digests_resumes_like_before(ds, tmp_path):
    """state.json of an older version records no file digests: it resumes, and as the uninterrupted run."""
    _, full = _fit(ds, tmp_path / "full", epochs=3)
    run = tmp_path / "run"
    _fit(ds, run, epochs=2)
    path = run / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    assert set(state["files_sha256"]) == {"model", "optimizer"}
    del state["files_sha256"]
    path.write_text(json.dumps(state))
    _, resumed = _fit(ds, run, epochs=3)
    assert resumed["test"] == full["test"] and resumed["resumed_epochs"] == 2


# ------------------------------------------------------------------ 3. damaged log.jsonl
def _row(run, n: int) -> dict:
    return json.loads((run / "log.jsonl").read_text().splitlines()[n])


@pytest.mark.parametrize("line, why", [
    (lambda run: b"\x8f\xffG\x00\xc3 random bytes", "not UTF-8 text"),  # was UnicodeDecodeError
    (lambda run: b'{"epoch": 1}', "train_seconds is not a number"),  # was KeyError 'train_seconds'
    (lambda run: json.dumps({**_row(run, 1), "valid": 5}).encode(), "valid is not the validation metrics"),
    (lambda run: json.dumps({**_row(run, 1), "eval_seconds": "1s"}).encode(), "eval_seconds is not a number"),
    (lambda run: b'{"epoch": 1, "train_sec', "not JSON"),  # cut, but not the last line: not a kill's
    (lambda run: b"[1, 2]", "a JSON list, not an object"),  # was skipped: epoch 1 vanished from the history
], ids=["bytes", "no-seconds", "valid-number", "seconds-text", "cut-inside", "list"])
def test_damaged_log_line_is_one_data_error_naming_it(ds, tmp_path, line, why):
    run = tmp_path / "run"
    _fit(ds, run, epochs=3)
    lines = (run / "log.jsonl").read_bytes().split(b"\n")
    lines[1] = line(run)
    (run / "log.jsonl").write_bytes(b"\n".join(lines))
    msg = _one_line_refusal(ds, run, "log.jsonl", f"line 2: not a log row ({why}", epochs=4)
    assert f"); {AFRESH}" in msg


def test_garbage_after_the_last_log_line_is_refused_but_a_cut_row_is_dropped(ds, tmp_path):
    """Only an unterminated last line that starts like a row is what a kill while appending leaves."""
    run = tmp_path / "run"
    _fit(ds, run, epochs=2)
    log = run / "log.jsonl"
    good = log.read_bytes()
    log.write_bytes(good + b"\xff\xfe\x00garbage")
    _one_line_refusal(ds, run, "log.jsonl", "line 3: not a log row (not UTF-8 text)", epochs=3)
    log.write_bytes(good + b'\n{"epoch": 2, "train_sec')  # and a blank line before it: nothing lost
    _, res = _fit(ds, run, epochs=3)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [0, 1, 2]
    assert res["epochs_run"] == 3


# ------------------------------------------------------------------ 4. temporaries of a killed run
def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def _temporaries(run, dead: int) -> tuple[list, list]:
    """The temporaries a run killed mid-write leaves (``dead``'s), and others that are not its to delete."""
    ck = run / "checkpoint"
    gone = [ck / f".state.json.{dead}-a1b2c3.tmp", ck / f".model-000002.safetensors.{dead}-d4e5f6.tmp",
            ck / f".optimizer-000002.pt.{dead}-g7h8i9.tmp", run / f".log.jsonl.{dead}-j0k1l2.tmp",
            run / f".result.json.{dead}-m3n4o5.tmp"]
    kept = [ck / ".state.json.1-p6q7r8.tmp",  # a live process (pid 1)
            run / f".evaluate_valid.json.{dead}-s9t0u1.tmp",  # `recgoat evaluate` writes here without the lock
            run / ".notes.tmp"]  # not an atomic write's
    for p in gone + kept:
        p.write_bytes(b"x" * 1000)
    return gone, kept


def test_temporaries_of_a_killed_run_go_once_its_folder_is_locked(ds, tmp_path):
    """A kill mid-checkpoint left .state.json/.model-*/.optimizer-*.PID-*.tmp in checkpoint/ for an hour (the
    age atomic_path's sweep waits, for writers on other machines): with the run folder locked, a dead
    writer's temporaries of the trainer's files go at once."""
    run = tmp_path / "run"
    _fit(ds, run, epochs=2)
    gone, kept = _temporaries(run, _dead_pid())
    _fit(ds, run, epochs=3)
    assert [p for p in gone if p.exists()] == []
    assert all(p.exists() for p in kept)


def test_temporaries_stay_where_the_folder_cannot_be_locked(ds, tmp_path, monkeypatch):
    """Unlocked (a file system without flock), another writer may exist: the hour-long sweep decides."""
    import errno

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    run = tmp_path / "run"
    _fit(ds, run, epochs=2)
    gone, kept = _temporaries(run, _dead_pid())
    monkeypatch.setattr(fcntl, "flock", refuse)
    _fit(ds, run, epochs=3)
    assert all(p.exists() for p in gone + kept)


# ------------------------------------------------------------------ the run's last files
def test_a_failure_writing_the_per_user_figures_leaves_no_result_and_no_partial_file(ds, tmp_path, monkeypatch):
    """test_per_user.npz is written before result.json, atomically: a run dying while writing it left a cut-off
    file beside a finished-looking result.json (the npz was written in place, after it)."""
    import numpy as np

    real = np.savez_compressed

    def dies_midway(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", dies_midway)
    with pytest.raises(OSError):
        _fit(ds, tmp_path / "run")
    left = {p.name for p in (tmp_path / "run").iterdir()}
    assert "result.json" not in left and "test_per_user.npz" not in left
    assert not [n for n in left if n.endswith(".tmp")], left
    monkeypatch.setattr(np, "savez_compressed", real)
    _, result = _fit(ds, tmp_path / "run")  # resumed from the last checkpoint: finishes, both files whole
    with np.load(tmp_path / "run" / "test_per_user.npz") as z:
        assert set(z.files) >= {"users", "recall_at_20"} and len(z["users"]) == len(z["recall_at_20"])
    assert json.loads((tmp_path / "run" / "result.json").read_text())["test"] == result["test"]
