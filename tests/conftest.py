"""Shared test set-up: offline model hubs, one torch thread, and small real datasets."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use small tensors: one thread avoids OpenMP oversubscription on a shared 2-core machine.
torch.set_num_threads(int(os.environ.get("RECGOAT_TEST_THREADS", "1")))


def shared_data_or_skip():
    from recgoat.datasets.registry import shared_root

    root = shared_root()
    if root is None or not (root / "ml100k-mm").is_dir():
        pytest.skip("shared dataset ml100k-mm not found (set RECGOAT_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def ml100k():
    """The real ml100k-mm dataset, prepared with the default protocol (random 8:1:1, seed 2026)."""
    shared_data_or_skip()
    from recgoat.datasets import load

    return load("ml100k-mm")


@pytest.fixture(scope="session")
def ml_small():
    """The embedded ml-latest-small dataset, prepared with the default protocol."""
    from recgoat.datasets import load

    return load("ml-latest-small")


def subset_users(dataset, n_users: int, seed: int = 2026):
    """A smaller real dataset: the first ``n_users`` users' raw interactions, re-prepared."""
    from recgoat.datasets import PrepareConfig, prepare

    df = dataset.interactions
    keep = df[df["user"] < n_users].copy()
    keep["user"] = dataset.user_ids[keep["user"].to_numpy()]
    keep["item"] = dataset.item_ids[keep["item"].to_numpy()]
    keep = keep.drop(columns=["split"], errors="ignore")
    return prepare(dataset.name + f"-{n_users}u", keep, dataset.items, dataset.text_fields,
                   PrepareConfig(k_core=2, seed=seed), dataset.info)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The real ``recgoat`` entry point, which prints a RecGOATError as one line and exits 1:
    (exit code, stderr)."""
    import sys

    from recgoat.cli import main

    monkeypatch.setattr(sys, "argv", ["recgoat", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


@pytest.fixture
def trained_runs(monkeypatch) -> list[str]:
    """The run folders ``Trainer.fit`` trains while the test runs, in order (the training itself runs)."""
    from recgoat.training.trainer import Trainer

    calls: list[str] = []
    original = Trainer.fit

    def counting(self, model, dataset):
        calls.append(str(self.run_dir))
        return original(self, model, dataset)

    monkeypatch.setattr(Trainer, "fit", counting)
    return calls


@pytest.fixture
def bench(finished, tmp_path) -> Path:
    """A fresh copy of the module's ``finished`` benchmark folder (a module-scoped fixture of the test module
    that uses this one), for a test to edit or resume without touching the others' copy."""
    out = tmp_path / "bench"
    shutil.copytree(finished, out)
    return out
