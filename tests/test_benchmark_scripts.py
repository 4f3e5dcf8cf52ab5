"""The cost benchmark behind issue 4's figures runs end to end on a tiny shape (its numbers are not checked
here: performance targets are read from the script's output on the full shape, not asserted in tests)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("args", [[], ["--preset", "ml100k", "--set", "user_k=3"]])
def test_recgoat_epoch_runs_and_checks_tensor_sizes(args, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("recgoat_epoch", None)
    import recgoat_epoch

    assert recgoat_epoch.main(["--epochs", "1", "--scale", "0.02", "--check-batches", "1", *args]) == 0
    out = capsys.readouterr().out
    assert "ratio RecGOAT / LightGCN" in out and "no tensor of size I×I, U×U or I×d×d was allocated: OK" in out
    if args:  # the preset's settings reach the model: no profile branch
        assert "'use_profile': False" in out and "'user_k': 3" in out and "'profile_branch': False" in out
    else:
        assert "none (the paper configuration)" in out and "'profile_branch': True" in out
