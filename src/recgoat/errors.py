"""User-facing errors and warnings.

Every problem with a user's input is raised as a :class:`RecGOATError` whose message names the file
and the problem. The CLI prints that one message and exits non-zero instead of showing a traceback.
It prints a warning as one line too (:func:`show_warning`), in the worker processes of ``benchmark -j N``
as well.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_CLI_SPELLING: ContextVar[bool] = ContextVar("recgoat_cli_spelling", default=False)


@contextmanager
def cli_spelling() -> Iterator[None]:
    """Within it (a command calling a Python entry point), :func:`option` names the command's options."""
    token = _CLI_SPELLING.set(True)
    try:
        yield
    finally:
        _CLI_SPELLING.reset(token)


def option(cli: str, python: str) -> str:
    """How a message names an input: ``cli`` (``--dataset NAME_OR_FOLDER``) under :func:`cli_spelling`, else
    ``python`` (``dataset=NAME_OR_FOLDER``): a Python caller was told to pass a flag it has no way to give."""
    return cli if _CLI_SPELLING.get() else python


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


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning: …`` line on stderr, for ``warnings.showwarning``. Python's default adds the file
    and line of the library and then its source line (``warnings.warn(…)``): noise to someone running a command.
    Installed by the ``recgoat`` command (:func:`recgoat.cli.main`) and, where it is, by the worker processes of a
    ``jobs > 1`` benchmark (:mod:`recgoat.benchmark.workers`); the Python API keeps Python's own."""
    print_warning(str(message))


def print_warning(message: str) -> None:
    """A warning as the commands print it: one ``warning: …`` line on stderr (the text taken as it is)."""
    _print_line("[yellow]warning:[/]", message)


def print_error(message: str) -> None:
    """An error as the commands print it: one ``error: …`` line on stderr, whatever the terminal's width, the text
    taken as it is (a path like ``data/[test]`` is no rich markup)."""
    _print_line("[bold red]error:[/]", message)


def _print_line(label: str, message: str) -> None:
    """``label`` (rich markup) and ``message`` (plain: escaped) as one line on stderr, never wrapped; rich is
    imported here, when a line is printed, so that importing this module stays light."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"{label} {escape(message)}", highlight=False, soft_wrap=True)
