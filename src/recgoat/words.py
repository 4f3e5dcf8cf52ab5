"""Counts in messages, in the number they take: "1 of the 3650 item texts is longer…", not "…are longer".

Why: messages said "1 texts cut", "1 reviews have", "1 item … were left out" whenever a count was 1, the common case
of a rare problem. One module for every layer (data loading, features, training), so each says it the same way."""
from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and ``noun`` in the number ``n`` takes: ``1 text``, ``2 texts``, ``0 texts``, ``1,234 texts``
    (``nouns``: the plural when it is not ``noun`` + "s": ``plural(n, "entry", "entries")``, ``plural(n, "review
    has", "reviews have")``)."""
    return f"{n:,} {noun if n == 1 else (nouns if nouns is not None else noun + 's')}"


def agree(n: int, one: str, many: str) -> str:
    """The word (a verb) agreeing with a count ``n`` as its subject: ``agree(1, "is", "are")`` is ``is``."""
    return one if n == 1 else many
