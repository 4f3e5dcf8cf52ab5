"""User-facing errors.

Every problem with a user's input is raised as a :class:`RecGOATError` whose message names the file
and the problem. The CLI prints that one message and exits non-zero instead of showing a traceback.
"""
from __future__ import annotations

from pathlib import Path


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
