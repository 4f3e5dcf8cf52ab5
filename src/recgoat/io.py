"""Atomic file writes: a crash never leaves a half-written cache, checkpoint or result.

The temporary file comes from :func:`tempfile.mkstemp`, which creates it with mode 0600; before the
rename it gets the mode an ordinary ``open(path, "w")`` would give: that of the file it replaces, else
``0666 & ~umask``. So caches and results stay readable by whoever could read a normally written file, and a
file its owner restricted (``chmod 600``) is not widened by being rewritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def _proc_umask() -> int | None:
    """The process umask as Linux reports it in /proc (reading it there changes nothing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _probe_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any thread writes files
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _probe_umask()


def current_umask() -> int:
    proc = _proc_umask()
    return _IMPORT_UMASK if proc is None else proc


# a temporary older than this whose writing process is gone is swept by the next write of the same path
STALE_TEMP_SECONDS = 3600.0


def _temp_prefix(path: Path) -> str:
    """``.NAME.PID-``: the writer's process id lets a later write tell an abandoned temporary from a live one."""
    return f".{path.name}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can test: keep its file
    return True


_TEMP_NAME = re.compile(r"^\.(.+)\.(\d+)-[^/]*\.tmp$")  # what _temp_prefix + mkstemp/mkdtemp make: name, pid
_swept: set[str] = set()  # folders this process has swept: once each, not per write (image caches are big)


def sweep_stale_temps(folder: Path, min_age: float = STALE_TEMP_SECONDS,
                      names: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` left by writers killed mid-write (``kill -9``, power loss).

    Why: each is a full copy of what was being written (a feature matrix, a dataset folder), hidden by its
    leading dot; repeated crashes would pile them up. Only temporaries named by a process that no longer
    exists on this machine and untouched for ``min_age`` seconds go (the age guards a writer on another
    machine sharing the folder; a caller holding the folder's :func:`folder_lock` may pass 0). ``names``: only
    the temporaries of these files. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        siblings = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in siblings:
        m = _TEMP_NAME.match(p.name)
        if m is None or (names is not None and m.group(1) not in names) or _pid_alive(int(m.group(2))):
            continue
        try:
            if now - p.lstat().st_mtime < min_age:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass  # gone already, or not ours to delete: harmless
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _swept:
        _swept.add(key)
        sweep_stale_temps(folder)



def _named(e: OSError, path: Path) -> OSError:
    """``e`` naming ``path``, the file the user asked for, not the hidden temporary one beside it."""
    return type(e)(e.errno, f"cannot write in {path.parent} ({e.strerror})", str(path))


def _kept_mode(path: Path) -> int:
    """The permission bits for the new file ``path``: those of the regular file it replaces (as
    ``open(path, "w")`` keeps them), else the umask's default."""
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    return 0o666 & ~current_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _named(e, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _kept_mode(path))  # mkstemp made it 0600
        try:
            os.replace(tmp_path, path)
        except OSError as e:  # e.g. a folder in the way: name the file asked for, not the hidden temporary
            raise type(e)(e.errno, f"cannot be replaced ({e.strerror})", str(path)) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as JSON at ``path``, atomically. NaN and infinities are written as ``NaN``/``Infinity``, which
    :func:`read_json` (Python's json) reads back. Serialised before any file is touched, so an object that is
    not JSON leaves ``path`` as it was; the error names ``path``."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    except (TypeError, ValueError, RecursionError) as e:  # a set, a date from YAML, a circular reference
        raise type(e)(f"{path}: cannot be written as JSON: {e}") from None
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks (weights and images can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def is_url(value: object) -> bool:
    """An http(s) URL (an image reference to download or show), as opposed to a local path."""
    return isinstance(value, str) and value.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------------- folders
def nearest_existing(path: Path) -> Path | None:
    """``path`` or its closest existing parent (a dangling symlink counts as existing); None if none does."""
    return next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)


def check_folder_path(path: Path, reason: str) -> None:
    """A DataError naming the file in the way when ``path`` or a parent exists but is not a folder.

    Why: ``mkdir`` there fails with a bare OSError, often only after slow work; ``reason`` ends the
    message ("the output must be a folder")."""
    from recgoat.errors import DataError

    existing = nearest_existing(path)
    if existing is not None and not existing.is_dir():
        raise DataError(existing, f"exists and is not a folder; {reason}")


LOCK_NAME = ".recgoat.lock"
_held: dict[str, int] = {}  # folder → depth: a process re-entering its own lock (a benchmark's cell) goes on


@contextmanager
def folder_lock(folder: str | Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the block; a second process is refused, or
    with ``on_wait`` waits for the lock (told once, with the holder's pid): ``train --features auto`` runs started
    together, whose second would otherwise fail, then reuse what the first encoded.

    Why: two runs writing one feature folder, run folder or benchmark folder at once interleave checkpoints
    and caches that each would write correctly alone (each file is atomic, the set is not). The lock is
    ``flock`` on ``folder/.recgoat.lock``, released by the kernel when the holder exits, even by ``kill -9``,
    so no stale lock survives a crash. Where ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    from recgoat.errors import DataError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.abspath(folder)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
    except OSError:  # e.g. a read-only folder: the writes that follow report the problem themselves
        yield
        return
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if on_wait is None:
                raise DataError(folder, f"another recgoat process (pid {holder}) is writing to this folder; "
                                        "wait for it to finish or use another folder") from None
            on_wait(f"{folder}: waiting for recgoat process {holder}, which is writing to this folder")
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until released (by exit too); Ctrl-C still interrupts it
        except OSError:  # a file system without flock (some network mounts): run unlocked, as before
            locked = False
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
    finally:
        os.close(fd)  # releases the lock


def holds_lock(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s :func:`folder_lock` (False where the file system has no flock and
    the folder runs unlocked): only then may it judge other writers' leftovers there."""
    return bool(_held.get(os.path.abspath(folder)))


def is_atomic_temp(name: str) -> bool:
    """A temporary left by an interrupted :func:`atomic_path` / :func:`atomic_folder` (``.NAME.PID-XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def folder_entries(path: Path) -> set[str]:
    """Names in the folder ``path`` (none when it does not exist), interrupted atomic writes and the
    :func:`folder_lock` file left out."""
    return ({p.name for p in path.iterdir() if not is_atomic_temp(p.name) and p.name != LOCK_NAME}
            if path.is_dir() else set())


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; put it in place of ``path`` only if the block succeeds.

    Why: a folder of several files cannot be replaced by renaming one file, so it is built aside. The old
    folder is renamed away, the new one renamed in, and only then is the old one deleted: a failure at any
    point leaves the old folder intact (a crash between the two renames leaves it as ``.NAME.*.old``
    beside ``path``), and ``path`` never holds a half-written mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise _named(e, path) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700
        if not (path.exists() or path.is_symlink()):
            os.rename(tmp, path)
            return
        old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
