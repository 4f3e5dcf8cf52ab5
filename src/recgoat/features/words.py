"""Counts in messages, in the number they take: "1 of the 3650 item texts is longer…", not "…are longer".

Why: the feature store's notes said "1 texts cut", "1 image downloads had failed", "1 of the 5 missing name an
image" whenever a count was 1, the common case of a rare problem."""
from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and ``noun`` in the number ``n`` takes: ``1 text``, ``2 texts``, ``0 texts`` (``nouns``: the plural
    when it is not ``noun`` + "s", e.g. ``plural(n, "entry", "entries")``)."""
    return f"{n} {noun if n == 1 else (nouns if nouns is not None else noun + 's')}"


def agree(n: int, one: str, many: str) -> str:
    """The word (a verb) agreeing with a count ``n`` as its subject: ``agree(1, "is", "are")`` is ``is``."""
    return one if n == 1 else many
