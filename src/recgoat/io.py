"""Atomic file writes: a crash never leaves a half-written cache, checkpoint or result.

The temporary file comes from :func:`tempfile.mkstemp`, which creates it with mode 0600; before the
rename it gets the mode an ordinary ``open(path, "w")`` would give (``0666 & ~umask``), so caches and
results stay readable by whoever could read a normally written file.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp made it 0600
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


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
