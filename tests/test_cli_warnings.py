"""The `recgoat` command prints a warning as one ``warning: …`` line.

Python's default printed the library's file and line, the category and then the library's source line
(``  warnings.warn(f"{len(unreadable)} item image(s) …``): noise to someone running `recgoat export`. The
Python API keeps Python's warnings (tests and callers filter or record them by category).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import run_main


def write_folder(folder):
    """20 users × 10 interactions among 15 items; items.csv lacks item 14 (a warning, not an error)."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), 1.0, t) for u in range(20) for t, i in enumerate(rng.choice(15, 10, replace=False))]
    folder.mkdir()
    pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).to_csv(folder / "interactions.csv",
                                                                               index=False)
    pd.DataFrame({"item_id": range(14), "title": [f"t{i}" for i in range(14)]}).to_csv(folder / "items.csv",
                                                                                      index=False)
    return folder


def test_a_warning_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    folder = write_folder(tmp_path / "shop")
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as outside pytest: shown, not recorded or raised
        before = warnings.showwarning
        code, err = run_main(monkeypatch, capsys, "datasets", "info", str(folder))
        assert warnings.showwarning is before  # main() puts the caller's back
    assert code == 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"warning: {folder / 'items.csv'}: 1 of the 15 items in interactions.csv has no row in this "
                     f"table (e.g. '14'); it gets no text or image features"]
    assert "UserWarning" not in err and "warnings.warn" not in err


def test_python_callers_keep_pythons_warnings(tmp_path):
    from recgoat.datasets import load

    with pytest.warns(UserWarning, match="has no row in this table"):
        load(str(write_folder(tmp_path / "shop")))
