"""A model that breaks the documented contract (docs/extending.md) is named with the rule it broke.

A plugin's ``embeddings()`` of the wrong width surfaced as torch's "mat1 and mat2 shapes cannot be multiplied"
inside the evaluator, numpy arrays as an AttributeError, a ``loss()`` without "loss" as a bare KeyError, a
non-scalar loss as torch's "grad can be implicitly created only for scalar outputs"; non-finite embeddings
trained on with every metric 0 and were refused only by `recgoat export`.
"""
from __future__ import annotations

import pytest
import torch

from recgoat.errors import ConfigError, TrainingDiverged
from recgoat.models.base import get_model_class
from recgoat.training.trainer import TrainConfig

from conftest import subset_users

BPRMF = get_model_class("bprmf")
CFG = TrainConfig(epochs=1, batch_size=512, num_threads=1, progress=False)


class WideItems(BPRMF):
    def embeddings(self):
        u, i = super().embeddings()
        return u, torch.cat([i, i[:, :1]], dim=1)


class Numpy(BPRMF):
    def embeddings(self):
        return tuple(x.detach().numpy() for x in super().embeddings())


class FewItems(BPRMF):
    def embeddings(self):
        u, i = super().embeddings()
        return u, i[:-1]


class NoLossKey(BPRMF):
    def loss(self, users, pos, neg):
        return {"bpr": super().loss(users, pos, neg)["loss"]}


class VectorLoss(BPRMF):
    def loss(self, users, pos, neg):
        return {"loss": super().loss(users, pos, neg)["loss"].expand(3)}


class FloatTerm(BPRMF):
    def loss(self, users, pos, neg):
        return {**super().loss(users, pos, neg), "note": 0.5}


class NanEmbeddings(BPRMF):
    def embeddings(self):
        u, i = super().embeddings()
        u = u.clone()
        u[:, 0] = float("nan")
        return u, i


@pytest.fixture(scope="module")
def ds(ml_small):
    return subset_users(ml_small, 40)


@pytest.mark.parametrize("cls, said", [
    (WideItems, r"WideItems\.embeddings\(\) must return two floating tensors .* got \(\w+ of shape \(40, 64\), "
                r"Tensor of shape \(\d+, 65\)\)"),
    (Numpy, r"Numpy\.embeddings\(\) must return two floating tensors .* got \(ndarray of shape"),
    (FewItems, r"FewItems\.embeddings\(\) must return two floating tensors"),
    (NoLossKey, r"NoLossKey\.loss\(\) must return a dict whose 'loss' is a scalar floating tensor .* got no 'loss'"),
    (VectorLoss, r"VectorLoss\.loss\(\) must return a dict .* got loss: Tensor\(3,\)"),
])
def test_a_broken_contract_is_one_config_error_naming_it(ds, cls, said):
    model = cls.build(ds)
    with pytest.raises(ConfigError, match=said):
        model.fit(ds, CFG)


def test_numbers_beside_the_loss_are_logged(ds, tmp_path):
    model = FloatTerm.build(ds)
    model.fit(ds, CFG, run_dir=tmp_path / "run")
    assert '"note": 0.5' in (tmp_path / "run" / "log.jsonl").read_text()


def test_non_finite_embeddings_stop_the_run(ds):
    with pytest.raises(TrainingDiverged, match=r"40 user embeddings hold NaN or inf at epoch 0 \(first: user index 0\)"):
        NanEmbeddings.build(ds).fit(ds, CFG)
