"""The cost benchmarks behind issue 4's figures run end to end on a tiny shape (their numbers are not checked
here: performance targets are read from the scripts' output on the full shape, not asserted in tests)."""
from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

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


def _peers_table(out: str) -> dict[str, list[str]]:
    """peers_epoch.py's table: the cells of each model's row, by model name."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model ") and "s/epoch" in line)
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith(("peak +MiB", "largest tensor", "note:", " ")):
            break
        name, *cells = line.split()
        rows[name] = cells
    return rows


def _import_peers_epoch(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("peers_epoch", None)
    import peers_epoch

    return peers_epoch


def test_peers_epoch_times_every_builtin_model(capsys, monkeypatch):
    """Every built-in model that trains gets a row with a set-up time, an epoch time and a ratio to LightGCN,
    all positive and finite; MostPop (nothing to train) is named as skipped."""
    from recgoat.models import MODELS
    from recgoat.models.base import is_builtin

    peers_epoch = _import_peers_epoch(monkeypatch)
    assert peers_epoch.main(["--scale", "0.02", "--epochs", "1", "--check-batches", "1"]) == 0
    out = capsys.readouterr().out
    rows = _peers_table(out)
    assert set(rows) == {n for n, cls in MODELS.items() if is_builtin(cls) and cls.trainable}
    assert {"lightgcn", "recgoat", "freedom", "lattice", "mgcn"} <= set(rows)
    for name, cells in rows.items():
        setup, epoch, ratio, mib = (float(c) for c in cells[:4])
        assert all(math.isfinite(x) and x > 0 for x in (setup, epoch, ratio)), (name, cells)
        assert math.isfinite(mib) and mib >= 0, (name, cells)
    assert float(rows["lightgcn"][2]) == 1.0
    assert "note: mostpop: skipped, nothing to train" in out
    assert "largest tensor: over 1 training step(s)" in out


def test_peers_epoch_unknown_model_is_one_line(capsys, monkeypatch):
    peers_epoch = _import_peers_epoch(monkeypatch)
    assert peers_epoch.main(["--models", "lightgcn", "nosuch", "--scale", "0.02"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("peers_epoch.py: error: unknown model 'nosuch'; available: ")


@pytest.mark.parametrize("script", ["peers_epoch", "recgoat_epoch", "recgoat_step_profile"])
@pytest.mark.parametrize("device, problem", [
    ("cuda", "'cuda': no CUDA GPU is available to torch here; use --device cpu"),
    ("gpu", "'gpu' is not a torch device to train on (e.g. cpu, cuda, cuda:1, mps)"),
])
def test_cost_scripts_refuse_an_unusable_device_in_one_line(script, device, problem, capsys, monkeypatch):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop(script, None)
    module = importlib.import_module(script)
    assert module.main(["--device", device, "--scale", "0.02"]) == 2  # before the data is built
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{script}.py: error: --device {problem}\n"


def test_recgoat_step_profile_prints_the_step_time_and_the_operators_by_shape(capsys, monkeypatch):
    import re

    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("recgoat_step_profile", None)
    import recgoat_step_profile

    recgoat_step_profile.main(["--scale", "0.02", "--steps", "2", "--profiled", "1", "--rows", "8", "--shapes",
                               "--threads", "1"])
    out = capsys.readouterr().out
    assert re.search(r"^cpu: \d+\.\d ms per step \(mean of 2 steps after 5 warm-up steps\)$", out, re.M)
    assert "Input Shapes" in out and "aten::" in out
