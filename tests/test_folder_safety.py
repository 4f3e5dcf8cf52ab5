"""Output folders are never clobbered and prepared folders are never trusted blindly.

Covers: ``recgoat export`` refusing an existing artefact without --overwrite, checking every input before
touching the destination and swapping a complete artefact in; ``Dataset.save`` refusing a raw dataset
folder and replacing a prepared one atomically; ``Dataset.load`` refusing a missing, corrupt or edited
file with one DataError naming it; ``encode export-mmrec`` / ``encode --out`` errors; ``recommend
--history -1``. Every refusal must leave the folder that was there byte-for-byte as it was.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recgoat.datasets import Dataset, PrepareConfig, load, prepare
from recgoat.errors import DataError

from conftest import run_main

runner = CliRunner()


# ------------------------------------------------------------------------------------------ helpers
def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path → digest): equal snapshots, identical bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(folder: Path) -> list[str]:
    """Everything beside ``folder`` (left-over temporary or old folders would show up here)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def raw_catalogue(root: Path, n_users: int = 12, n_items: int = 8, seed: int = 0) -> Path:
    """A raw dataset folder (interactions.csv + items.csv) every user of which rates every item."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    rows = [(f"u{u:02d}", f"sku-{i}", int(rng.integers(1, 6)), 1_600_000_000 + u * 100 + i)
            for u in range(n_users) for i in range(n_items)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(root / "interactions.csv",
                                                                                    index=False)
    pd.DataFrame({"item_id": [f"sku-{i}" for i in range(n_items)],
                  "title": [f"Product [{i}]" if i % 3 else None for i in range(n_items)]}).to_csv(
        root / "items.csv", index=False)
    return root


def one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A raw catalogue, its dataset, a trained tiny model saved as a trainer run, and an exported artefact."""
    from recgoat.models import BPRMF
    from recgoat.serving import export_run
    from recgoat.training.trainer import TrainConfig

    root = tmp_path_factory.mktemp("world")
    raw = raw_catalogue(root / "cat")
    ds = load(raw)
    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 8})
    model.fit(ds, TrainConfig(epochs=1, batch_size=256, progress=False))
    model.eval()
    run = root / "run"
    model.save(run / "best")
    (run / "result.json").write_text(json.dumps({"dataset_fingerprint": ds.fingerprint()}))
    art = export_run(model, ds, root / "art" / "keep")
    return {"raw": raw, "ds": ds, "model": model, "run": run, "art": art}


def export_cli(world, out: Path, *extra: str):
    from recgoat.serving.cli import app

    return runner.invoke(app, ["export", str(world["run"]), "--dataset", str(world["raw"]), "--out", str(out),
                               *extra])


@pytest.fixture()
def artefact(world, tmp_path) -> Path:
    """A private copy of the exported artefact (tests may try to damage it)."""
    import shutil

    dst = tmp_path / "arts" / "keep"
    shutil.copytree(world["art"], dst)
    return dst


# ------------------------------------------------------------------------------------------ 1. export
def test_export_refuses_an_existing_artefact_without_overwrite(world, artefact):
    before = snapshot(artefact)
    res = export_cli(world, artefact)
    assert res.exit_code == 1
    line = one_line(res.output)
    assert str(artefact) in line and "--overwrite" in line
    assert snapshot(artefact) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_export_with_bad_features_leaves_the_artefact_intact(world, artefact, tmp_path, overwrite):
    (tmp_path / "emptyfeat").mkdir()
    before = snapshot(artefact)
    res = export_cli(world, artefact, "--features", str(tmp_path / "emptyfeat"), *(["--overwrite"] * overwrite))
    assert res.exit_code == 1
    line = one_line(res.output)
    assert (str(tmp_path / "emptyfeat") if overwrite else str(artefact)) in line
    assert snapshot(artefact) == before and siblings(artefact) == []


def test_export_checks_the_fingerprint_before_touching_the_artefact(world, artefact):
    from recgoat.serving.cli import app

    other = raw_catalogue(artefact.parent.parent / "other", seed=1)  # same shape, other ratings
    before = snapshot(artefact)
    res = runner.invoke(app, ["export", str(world["run"]), "--dataset", str(other), "--out", str(artefact),
                              "--overwrite"])
    assert res.exit_code == 1 and "fingerprint" in one_line(res.output)
    assert snapshot(artefact) == before


def test_export_failing_midway_keeps_the_old_artefact_and_leaves_no_temp(world, artefact, monkeypatch):
    from recgoat.serving import artifacts, load_run

    def boom(*a, **k):
        raise RuntimeError("disk full")

    before = snapshot(artefact)
    monkeypatch.setattr(artifacts, "_display_items", boom)  # after model and embeddings were written
    with pytest.raises(RuntimeError, match="disk full"):
        artifacts.export_run(world["model"], world["ds"], artefact, overwrite=True)
    assert snapshot(artefact) == before and siblings(artefact) == []
    load_run(artefact)


def test_export_overwrite_swaps_in_a_complete_artefact(world, artefact):
    from recgoat.serving import load_run

    (artefact / "artifact.json").unlink()  # as an older, interrupted export left it: still replaceable
    res = export_cli(world, artefact, "--overwrite")
    assert res.exit_code == 0, res.output
    assert torch.equal(load_run(artefact).score([0, 1]), world["model"].score([0, 1]))
    assert siblings(artefact) == []
    assert artefact.stat().st_mode & 0o077 != 0  # not the 0700 of a temporary folder


def test_export_refuses_a_foreign_folder_even_with_overwrite(world, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    res = export_cli(world, notes, "--overwrite")
    assert res.exit_code == 1
    line = one_line(res.output)
    assert str(notes) in line and "todo.txt" in line
    assert (notes / "todo.txt").read_text() == "keep me" and sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


@pytest.mark.parametrize("under", [False, True])
def test_export_out_is_a_regular_file(world, tmp_path, under):
    f = tmp_path / "file"
    f.write_text("x")
    res = export_cli(world, f / "sub" if under else f)
    assert res.exit_code == 1 and f"{f}: exists and is not a folder" in one_line(res.output)
    assert f.read_text() == "x"


# ------------------------------------------------------------------------------------------ 2. Dataset.save
def test_prepare_refuses_a_raw_dataset_folder(world, tmp_path, monkeypatch, capsys):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(world["raw"], bare)
    before = snapshot(bare)
    code, err = run_main(monkeypatch, capsys, "datasets", "prepare", str(world["raw"]), "--out", str(bare))
    assert code == 1
    line = one_line(err)
    assert str(bare) in line and "not a prepared dataset folder" in line
    assert snapshot(bare) == before
    with pytest.raises(DataError, match="not a prepared dataset folder") as e:
        world["ds"].save(bare)
    assert e.value.path == str(bare) and snapshot(bare) == before


@pytest.mark.parametrize("under", [False, True])
def test_prepare_out_is_a_regular_file(world, tmp_path, under):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="exists and is not a folder") as e:
        world["ds"].save(f / "sub" if under else f)
    assert e.value.path == str(f) and f.read_text() == "x"


def test_prepared_folder_is_replaced_atomically(world, tmp_path, monkeypatch):
    out = tmp_path / "prep"
    world["ds"].save(out)
    before = snapshot(out)
    other = load(raw_catalogue(tmp_path / "other", n_users=10, seed=3))

    def boom(*a, **k):  # fails after interactions.parquet and ids.parquet were written
        raise OSError("disk full")

    monkeypatch.setattr(Dataset, "fingerprint", boom)
    with pytest.raises(OSError, match="disk full"):
        other.save(out)
    monkeypatch.undo()
    assert snapshot(out) == before and siblings(out) == ["other"]
    assert Dataset.load(out).n_users == 12

    other.save(out)  # a prepared folder may be replaced: it now holds the other dataset, whole
    back = Dataset.load(out)
    assert back.n_users == 10 and back.fingerprint() == other.fingerprint()
    assert siblings(out) == ["other"]


def test_prepared_folder_with_foreign_files_is_refused(world, tmp_path):
    out = tmp_path / "prep"
    world["ds"].save(out)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with pytest.raises(DataError, match="notes.txt") as e:
        world["ds"].save(out)
    assert e.value.path == str(out) and snapshot(out) == before


# ------------------------------------------------------------------------------------------ 3. Dataset.load
def _truncate_ids(p: Path) -> None:
    ids = pd.read_parquet(p / "ids.parquet")
    ids[ids["kind"] == "user"].iloc[:5].to_parquet(p / "ids.parquet", index=False)


def _item_999(p: Path) -> None:
    inter = pd.read_parquet(p / "interactions.parquet")
    inter.loc[0, "item"] = 999
    inter.to_parquet(p / "interactions.parquet", index=False)


def _edit_rating(p: Path) -> None:
    inter = pd.read_parquet(p / "interactions.parquet")
    inter.loc[0, "rating"] = inter.loc[0, "rating"] % 5 + 1
    inter.to_parquet(p / "interactions.parquet", index=False)


def _rename_dataset(p: Path) -> None:
    man = json.loads((p / "manifest.json").read_text())
    man["name"] = "someone-else"
    (p / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("damage, file, message", [
    (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json", "not readable JSON"),
    (lambda p: (p / "manifest.json").write_text("[1, 2]"), "manifest.json", "not a JSON object"),
    (lambda p: (p / "interactions.parquet").unlink(), "interactions.parquet", "missing"),
    (lambda p: (p / "items.parquet").unlink(), "items.parquet", "missing"),
    (lambda p: (p / "ids.parquet").write_bytes(b"junk!"), "ids.parquet", "not a readable Parquet file"),
    (lambda p: (p / "interactions.parquet").write_bytes(b"PAR1" + b"\0" * 64), "interactions.parquet",
     "not a readable Parquet file"),
    (_truncate_ids, "ids.parquet", "holds 5 users but manifest.json records 12"),
    (_item_999, "interactions.parquet", "item index 999"),
    (_edit_rating, "manifest.json", "records fingerprint"),
    (_rename_dataset, "manifest.json", "records fingerprint"),
], ids=["bad-json", "not-object", "no-interactions", "no-items", "junk-ids", "junk-interactions", "truncated-ids",
        "item-999", "edited-rating", "renamed"])
def test_damaged_prepared_folder_is_one_data_error_naming_the_file(world, tmp_path, damage, file, message,
                                                                  monkeypatch, capsys):
    out = tmp_path / "prep"
    world["ds"].save(out)
    damage(out)
    with pytest.raises(DataError, match=message) as e:
        Dataset.load(out)
    assert e.value.path == str(out / file)
    code, err = run_main(monkeypatch, capsys, "datasets", "info", str(out))
    assert code == 1 and f"{out / file}: " in one_line(err)


def test_prepared_folder_round_trip_still_loads(world, tmp_path):
    world["ds"].save(tmp_path / "prep")
    back = Dataset.load(tmp_path / "prep")
    assert back.fingerprint() == world["ds"].fingerprint()
    pd.testing.assert_frame_equal(back.interactions, world["ds"].interactions)


def _reference_fingerprint(ds: Dataset) -> str:
    """The fingerprint as written before its fast paths: the value caches are keyed on must not move."""
    h = hashlib.sha256()

    def text(values) -> None:
        h.update("\x1f".join("" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
                              for v in values).encode("utf-8"))
        h.update(b"\x1e")

    h.update(ds.name.encode())
    inter = ds.interactions
    for col, dtype in (("user", "<i8"), ("item", "<i8"), ("rating", "<f8"), ("timestamp", "<i8")):
        if col in inter.columns:
            h.update(col.encode())
            h.update(np.ascontiguousarray(inter[col].to_numpy(dtype=dtype)).tobytes())
    if "split" in inter.columns:
        text(inter["split"].astype(str).tolist())
    text(ds.item_ids.tolist())
    text(ds.user_ids.tolist())
    if ds.items is not None:
        for col in ds.items.columns:
            h.update(str(col).encode())
            text(ds.items[col].tolist())
    return h.hexdigest()[:16]


def test_fingerprint_value_is_unchanged(world, ml_small):
    assert world["ds"].items["title"].isna().any()  # the slow path (missing values) is exercised too
    for ds in (world["ds"], ml_small):
        assert ds.fingerprint() == _reference_fingerprint(ds)
    plain = prepare("plain", pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"]}),
                    config=PrepareConfig(k_core=0, split="none"))
    assert plain.fingerprint() == _reference_fingerprint(plain)


# ------------------------------------------------------------------------------------------ 4. encode
def test_export_mmrec_with_nothing_to_export_is_an_error(tmp_path):
    from recgoat.features.cli import app

    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "nonexist")])
    assert res.exit_code == 1 and one_line(res.output).startswith(f"error: {tmp_path / 'nonexist'}: ")
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "empty")])
    assert res.exit_code == 1 and one_line(res.output).startswith(f"error: {tmp_path / 'empty'}: holds no text.npy")
    assert list((tmp_path / "empty").iterdir()) == []


def test_export_mmrec_dest_is_a_regular_file(tmp_path):
    from recgoat.features.cli import app

    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / "text.npy", np.zeros((3, 4), np.float32))
    (tmp_path / "dest").write_text("x")
    res = runner.invoke(app, ["export-mmrec", str(tmp_path / "f"), "--dest", str(tmp_path / "dest")])
    assert res.exit_code == 1 and f"{tmp_path / 'dest'}: exists and is not a folder" in one_line(res.output)
    assert (tmp_path / "dest").read_text() == "x"


@pytest.mark.parametrize("command", [["text"], ["image"], ["all"], ["import-mmrec", "SRC"]])
def test_encode_out_is_a_regular_file(world, tmp_path, command):
    from recgoat.features.cli import app

    (tmp_path / "src").mkdir()
    f = tmp_path / "file"
    f.write_text("x")
    args = [a.replace("SRC", str(tmp_path / "src")) for a in command]
    res = runner.invoke(app, [*args, str(world["raw"]), "--out", str(f)])
    assert res.exit_code == 1 and f"error: {f}: exists and is not a folder" in one_line(res.output)
    assert f.read_text() == "x"


# ------------------------------------------------------------------------------------------ 5. recommend
@pytest.mark.parametrize("option", [["--history", "-1"], ["-k", "0"]])
def test_recommend_refuses_negative_history_and_zero_k(world, option):
    from recgoat.serving.cli import app

    res = runner.invoke(app, ["recommend", str(world["art"]), "--user", "u01", *option])
    assert res.exit_code == 2 and option[0] in res.output and "Traceback" not in res.output
    ok = runner.invoke(app, ["recommend", str(world["art"]), "--user", "u01", "--history", "3", "-k", "2"])
    assert ok.exit_code == 0, ok.output


# ------------------------------------------------------------------ temporaries of killed writers
def test_temporaries_of_killed_writers_are_swept_once_stale(tmp_path, monkeypatch):
    """A writer killed mid-write leaves a hidden full-size temporary; the next atomic write in that folder
    deletes those of dead processes that are over an hour old, and nothing else."""
    import os
    import subprocess
    import sys

    from recgoat import io

    monkeypatch.setattr(io, "_swept", set())
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    old = 1_000_000_000  # 2001
    stale_file = tmp_path / f".text.npy.{dead}-abc123.tmp"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".data.{dead}-def456.tmp"
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "sub" / "part.parquet").write_bytes(b"y")
    young = tmp_path / f".image.npy.{dead}-young1.tmp"
    young.write_bytes(b"z")
    live = tmp_path / f".profile.npy.{os.getpid()}-live01.tmp"  # this process: still writing
    live.write_bytes(b"w")
    foreign = tmp_path / ".user-notes.tmp"  # not ours: no pid in the name
    foreign.write_bytes(b"v")
    for p in (stale_file, stale_dir, live, foreign):
        os.utime(p, (old, old))
    with io.atomic_path(tmp_path / "result.json") as tmp:
        tmp.write_text("{}")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {young.name, live.name, foreign.name, "result.json"}
    # atomic writes name their temporaries so that a later sweep can tell whose they are
    seen = []
    with io.atomic_folder(tmp_path / "folder") as tmp:
        seen.append(tmp.name)
    assert seen[0].startswith(f".folder.{os.getpid()}-") and io.is_atomic_temp(seen[0])


# ------------------------------------------------------------------ one writer per folder
@pytest.fixture
def held_lock(tmp_path):
    """A child process holding folder_lock on a folder until killed (-9: the kernel must release it)."""
    import subprocess
    import sys

    procs = []

    def hold(folder: Path) -> int:
        code = ("import sys, time; from recgoat.io import folder_lock\n"
                "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)")
        p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p.pid

    yield hold, procs
    for p in procs:
        p.kill()
        p.wait()


def test_folder_lock_refuses_a_second_writer_and_dies_with_its_holder(tmp_path, held_lock):
    from recgoat.io import LOCK_NAME, folder_entries, folder_lock

    hold, procs = held_lock
    folder = tmp_path / "feats"
    pid = hold(folder)
    with pytest.raises(DataError) as e:
        with folder_lock(folder):
            pass
    assert str(e.value) == (f"{folder}: another recgoat process (pid {pid}) is writing to this folder; "
                            "wait for it to finish or use another folder")
    procs[0].kill()
    procs[0].wait()
    with folder_lock(folder):  # kill -9 left no stale lock
        with folder_lock(folder):  # and the holder may re-enter its own lock (a benchmark's cells)
            pass
    assert (folder / LOCK_NAME).exists() and folder_entries(folder) == set()


def test_encode_and_train_refuse_a_folder_another_process_writes(tmp_path, held_lock):
    """Two encodes into one folder shared .partial/ checkpoints; two trainings into one run folder
    interleaved checkpoints and logs. The second is refused and writes nothing."""
    from recgoat.features import FeatureConfig, encode_all
    from recgoat.models import BPRMF
    from recgoat.training import TrainConfig

    hold, _ = held_lock
    ds = load("ml-latest-small")
    feats, run = tmp_path / "feats", tmp_path / "run"
    hold(feats)
    hold(run)
    with pytest.raises(DataError, match="another recgoat process"):
        encode_all(ds, feats, FeatureConfig(), which=("text",), progress=False)
    with pytest.raises(DataError, match="another recgoat process"):
        BPRMF.build(ds, {"embedding_dim": 8}).fit(ds, TrainConfig(epochs=1, progress=False), run_dir=run)
    assert {p.name for p in feats.iterdir()} == {".recgoat.lock"}
    assert {p.name for p in run.iterdir()} == {".recgoat.lock"}


def test_folder_lock_runs_unlocked_where_flock_is_not_supported(tmp_path, monkeypatch):
    """Some network mounts refuse flock (ENOLCK): the write goes on unlocked, as before locks existed,
    rather than failing with an OSError traceback."""
    import errno
    import fcntl

    from recgoat.io import folder_lock

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    ran = []
    with folder_lock(tmp_path / "f"):
        ran.append(True)
    assert ran == [True]


@pytest.mark.parametrize("maker", ["mkstemp", "mkdtemp"])
def test_unwritable_output_names_the_output_not_the_temporary(tmp_path, monkeypatch, maker):
    """An output that cannot be created beside (a read-only or pseudo file system) is reported under the
    name the user gave; the hidden ``.NAME.*.tmp`` beside it meant nothing to them."""
    import tempfile

    from recgoat.io import atomic_folder, atomic_path

    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.123-abc.tmp"))

    monkeypatch.setattr(tempfile, maker, refuse)
    target = tmp_path / "out"
    with pytest.raises(PermissionError) as e:
        with (atomic_path if maker == "mkstemp" else atomic_folder)(target):
            pass
    assert e.value.filename == str(target) and "Permission denied" in str(e.value)
    assert ".tmp" not in str(e.value) and not target.exists()
