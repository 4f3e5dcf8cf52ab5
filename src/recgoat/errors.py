"""User-facing errors.

Every problem with a user's input is raised as a :class:`RecGOATError` whose message names the file
and the problem. The CLI prints that one message and exits non-zero instead of showing a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from pathlib import Path


def did_you_mean(given: str, choices: Iterable[str], canonical: Callable[[str], str] = str) -> str:
    """``did you mean 'lightgcn'? `` for a near miss of one of ``choices`` (compared through ``canonical``), else
    '': a typo is then fixed from the error message alone."""
    by_canon = {canonical(c): c for c in choices}
    close = difflib.get_close_matches(canonical(given), list(by_canon), n=1, cutoff=0.6)
    return f"did you mean {by_canon[close[0]]!r}? " if close else ""


class RecGOATError(Exception):
    """An error caused by the user's input or configuration, with a message meant for a person."""


class DataError(RecGOATError):
    """Bad or inconsistent data in a file the user supplied."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(RecGOATError):
    """An unknown, ill-typed or inconsistent configuration key."""


class TrainingDiverged(RecGOATError, FloatingPointError):
    """The training loss became NaN or infinite: a setting (learning rate, loss weights) is too large.

    Also a ``FloatingPointError``, so code that caught the earlier plain error keeps working."""
