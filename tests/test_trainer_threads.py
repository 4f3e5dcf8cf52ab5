"""``Trainer.fit`` gives the caller's torch thread count back: it set ``num_threads`` and never restored it, so
the process's later work (the next benchmark cell's model and its kNN graphs, built before its own ``fit``) ran
at the trainer's count while the first cell's ran at the process's own."""
from __future__ import annotations

import contextlib

import faiss
import pytest
import torch

from recgoat.datasets import load
from recgoat.models import BPRMF, MostPop
from recgoat.training.trainer import Trainer

from training_helpers import small_config, write_catalogue


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """training_helpers' synthetic catalogue (50 users × 15 of 40 items)."""
    folder = tmp_path_factory.mktemp("data") / "cat"
    write_catalogue(folder)
    return load(str(folder))


@contextlib.contextmanager
def threads(n: int):
    """faiss and torch at ``n`` threads, then as they were."""
    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])


@pytest.mark.parametrize("model_cls", [MostPop, BPRMF])
def test_fit_gives_the_callers_thread_count_back(model_cls, data, tmp_path):
    with threads(1):
        torch.manual_seed(0)
        model = model_cls.build(data)
        Trainer(small_config(epochs=1, num_threads=2), run_dir=tmp_path / "run").fit(model, data)
        assert torch.get_num_threads() == 1


class Stop(Exception):
    pass


def test_a_fit_that_raises_gives_the_callers_thread_count_back(data, tmp_path):
    def stop(epoch, row):
        assert torch.get_num_threads() == 2  # the run's own count while it trains
        raise Stop

    with threads(1):
        torch.manual_seed(0)
        model = BPRMF.build(data)
        with pytest.raises(Stop):
            Trainer(small_config(epochs=2, num_threads=2), run_dir=tmp_path / "run", on_epoch_end=stop).fit(model, data)
        assert torch.get_num_threads() == 1
