"""A loaded model keeps scoring after routine PyTorch operations that leave its weights as they are.

A loaded graph or multimodal model scores from the final embeddings saved with it (it has no graphs or features
to propagate with). ``copy.deepcopy``, ``train(); eval()`` and ``load_state_dict(own state dict)`` dropped them
or made them look stale (new tensors, bumped versions), and the model then failed with "call prepare(dataset)
before training or scoring". Its weights are compared by content now; weights that really changed still refuse
the stale embeddings.
"""
from __future__ import annotations

import copy

import pytest
import torch

from recgoat.models.base import Recommender, get_model_class
from recgoat.training.trainer import TrainConfig

from conftest import subset_users
from recgoat_helpers import random_features

MODELS = ["lightgcn", "recgoat", "vbpr", "bprmf"]


@pytest.fixture(scope="module")
def saved(ml_small, tmp_path_factory):
    ds = subset_users(ml_small, 60)
    feats = random_features(ds, 0, text=16, profile=8)
    root = tmp_path_factory.mktemp("copies")
    out = {}
    for name in MODELS:
        torch.manual_seed(0)
        cls = get_model_class(name)
        params = {"embedding_dim": 8, **({"projection_dtype": "float32"} if name == "recgoat" else {})}
        model = cls.build(ds, params, feats if cls.needs_features else None)
        model.fit(ds, TrainConfig(epochs=1, batch_size=512, progress=False, num_threads=1))
        model.save(root / name)
        out[name] = root / name
    return out


def _scores(model: Recommender) -> torch.Tensor:
    return model.score(torch.arange(model.n_users))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("operation", ["deepcopy", "train-eval", "load own state dict"])
def test_a_loaded_model_scores_the_same_after(saved, name, operation):
    model = Recommender.load(saved[name])
    want = _scores(model)
    if operation == "deepcopy":
        model = copy.deepcopy(model)
    elif operation == "train-eval":
        model.train()
        model.eval()
    else:
        model.load_state_dict(model.state_dict())
    assert torch.equal(_scores(model), want)


@pytest.mark.parametrize("name", ["lightgcn", "recgoat", "vbpr"])
def test_changed_weights_never_score_from_the_stale_embeddings(saved, name):
    model = Recommender.load(saved[name])
    _scores(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="call prepare"):
        _scores(model)


def test_features_given_to_a_model_that_reads_none_are_said_not_used(ml_small):
    """LightGCN.build(ds, None, features) trained as if they were not there, without a word."""
    ds = subset_users(ml_small, 60)
    with pytest.warns(UserWarning, match="^lightgcn reads no side features: the features given are not used$"):
        get_model_class("lightgcn").build(ds, None, random_features(ds, 0, text=16))


@pytest.mark.parametrize("name", ["lightgcn", "bprmf"])
def test_a_data_update_in_training_mode_is_seen(saved, name):
    """``p.data -= lr * p.grad`` leaves no version on the tensor: the saved embeddings were then kept through
    train() and used for weights they were not made from."""
    model = Recommender.load(saved[name])
    before = _scores(model)
    model.train()
    for p in model.parameters():
        p.data.add_(0.5)
    model.eval()
    if name == "lightgcn":  # cannot propagate without its graph
        with pytest.raises(RuntimeError, match="call prepare"):
            _scores(model)
    else:
        assert not torch.equal(_scores(model), before)


def test_the_unused_features_warning_points_at_the_callers_line(ml_small):
    ds = subset_users(ml_small, 60)
    with pytest.warns(UserWarning, match="reads no side features") as record:
        get_model_class("lightgcn").build(ds, None, random_features(ds, 0, text=16))
    assert record[0].filename == __file__
