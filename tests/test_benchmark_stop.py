"""Stopping `recgoat benchmark -j 2`: after Ctrl-C or SIGTERM no further cell starts, the command exits promptly
with the CLI's "interrupted" line, and no worker process outlives the parent (an orphan wrote cells into a folder
whose lock had died with the parent), nor a parent killed with SIGKILL.

Each run: 300 users of the embedded ml-latest-small, BPR-MF on 6 seeds with 400 epochs (each cell ~15 s alone on
one thread), so that when the signal comes, 2 cells are training and 4 are queued (2 of them already in the
pool's call queue, which cancelling their futures cannot take back)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to find the run's processes")

CONFIG = """\
datasets:
  - name: ml-latest-small
    max_users: 300
    features: null
models: [bprmf]
seeds: [1, 2, 3, 4, 5, 6]
train: {epochs: 400, patience: 1000, num_threads: 1}
"""


def _session(sid: int) -> list[int]:
    """The processes of session ``sid`` still alive (zombies are dead: their parent has not reaped them yet)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, session, …
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(d.name))
    return pids


def _started(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("runs/*/bprmf/seed*/cell.json"))


def _finished(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("runs/*/bprmf/seed*/result.json"))


def _launch(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`recgoat benchmark -j 2` in a session of its own, just started."""
    (tmp_path / "b3.yaml").write_text(CONFIG)
    out = tmp_path / "out"
    cli = [sys.executable, "-c", "from recgoat.cli import main; main()", "benchmark"]  # `recgoat benchmark`
    # SIGINT's default restored: a background shell may have set it to ignore
    child = subprocess.Popen([*cli, "-c", str(tmp_path / "b3.yaml"), "-j", "2", "-q", "-o", str(out)],
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return child, out


def _workers(sid: int) -> list[int]:
    """The worker processes of session ``sid`` started so far (multiprocessing's spawn runs them as
    ``python -c 'from multiprocessing.spawn import spawn_main; …'``)."""
    found = []
    for pid in _session(sid):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:  # ended meanwhile
            pass
    return found


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`recgoat benchmark -j 2` in a session of its own, once both workers are training a cell (each has written
    its first checkpoint)."""
    child, out = _launch(tmp_path)
    deadline = time.monotonic() + 120  # start-up and the workers' start on a loaded machine
    while len(list(out.glob("runs/*/bprmf/seed*/checkpoint/state.json"))) < 2:
        assert child.poll() is None, child.communicate()[0]
        assert time.monotonic() < deadline, "the workers did not start their cells"
        time.sleep(0.2)
    return child, out


def _wait_gone(sid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _session(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _session(sid)


def _kill_session(sid: int) -> None:
    for pid in _session(sid):  # a failed test leaves no trainer behind
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stopped_promptly(child: subprocess.Popen, out: Path, how: str) -> None:
    """The command exits 130 with the "interrupted" line within seconds, no cell but the 2 running ones was
    started, and none of its processes is left."""
    try:
        t0 = time.monotonic()
        text, _ = child.communicate(timeout=60)
        took = time.monotonic() - t0
        assert child.returncode == 130 and "interrupted; finished cells are kept" in text, (how, child.returncode, text)
        assert took < 30, f"{how}: took {took:.0f}s to stop"  # the queued cells (15 s each) were not trained
        assert _wait_gone(child.pid, 10) == [], f"{how}: worker processes outlived the benchmark"
        time.sleep(2)  # an orphan or a queued cell would show up as a new cell folder
        assert _started(out) == ["seed1", "seed2"], (how, _started(out))
        assert _finished(out) == [], (how, _finished(out))
        assert len(list(out.glob("runs/*/bprmf/seed*/checkpoint/state.json"))) == 2  # kept, to resume from
    finally:
        _kill_session(child.pid)


def test_ctrl_c_starts_no_queued_cell(tmp_path):
    child, out = _start(tmp_path)
    os.killpg(child.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group, workers included
    _stopped_promptly(child, out, "Ctrl-C")


def test_sigterm_to_the_parent_alone_stops_it_and_its_workers(tmp_path):
    child, out = _start(tmp_path)
    os.kill(child.pid, signal.SIGTERM)  # what `timeout` or a job scheduler sends: the parent only
    _stopped_promptly(child, out, "SIGTERM")


def test_sigint_to_the_parent_alone_stops_its_workers(tmp_path):
    child, out = _start(tmp_path)
    os.kill(child.pid, signal.SIGINT)
    _stopped_promptly(child, out, "SIGINT to the parent")


def test_ctrl_c_while_the_workers_start_up_prints_no_traceback(tmp_path):
    """A worker takes seconds to start (the interpreter, then torch's and recgoat's imports) before its initializer
    sets its SIGINT handling: a Ctrl-C then killed it with a KeyboardInterrupt traceback from the middle of an
    import, below the CLI's "interrupted" line. Now it starts with SIGINT blocked and handles it once started."""
    child, out = _launch(tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not _workers(child.pid):
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.01)
        time.sleep(0.5)  # into the worker's imports (the interpreter's own start-up is over by then)
        os.killpg(child.pid, signal.SIGINT)
        text, _ = child.communicate(timeout=60)
        assert child.returncode == 130 and "interrupted; finished cells are kept" in text, (child.returncode, text)
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        assert _wait_gone(child.pid, 10) == [], "worker processes outlived the benchmark"
        assert _finished(out) == []
    finally:
        _kill_session(child.pid)


def test_workers_of_a_killed_parent_exit(tmp_path):
    """SIGKILL cannot be handled: the workers notice their parent is gone and exit rather than train on."""
    child, out = _start(tmp_path)
    try:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
        assert _wait_gone(child.pid, 10) == [], "worker processes outlived a killed benchmark"
        time.sleep(2)
        assert _started(out) == ["seed1", "seed2"] and _finished(out) == []
    finally:
        _kill_session(child.pid)
