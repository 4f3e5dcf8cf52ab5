"""``model.fit`` draws its epoch bar by default only where someone watches it, as the commands do.

tqdm redraws with carriage returns: a script's redirected stderr got ~12.7 KB of them for the README's
LightGCN example, while `recgoat train` left them off there. ``progress=True`` set explicitly still draws it.
"""
from __future__ import annotations

import pytest

from recgoat.models.base import get_model_class
from recgoat.training.trainer import TrainConfig

from conftest import subset_users


@pytest.mark.parametrize("config, drawn", [({}, False), ({"progress": True}, True), ({"progress": False}, False)])
def test_the_epoch_bar_outside_a_terminal(ml_small, capsys, config, drawn):
    ds = subset_users(ml_small, 40)
    model = get_model_class("bprmf").build(ds, {"embedding_dim": 8})
    capsys.readouterr()
    model.fit(ds, TrainConfig(epochs=2, batch_size=512, num_threads=1, **config))
    err = capsys.readouterr().err  # captured: not a terminal, no Jupyter kernel
    assert ("epoch" in err and "\r" in err) == drawn, err
