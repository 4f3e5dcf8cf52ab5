"""A model that breaks the documented contract (docs/extending.md) is named with the rule it broke.

A plugin's ``embeddings()`` of the wrong width surfaced as torch's "mat1 and mat2 shapes cannot be multiplied"
inside the evaluator, numpy arrays as an AttributeError, a ``loss()`` without "loss" as a bare KeyError, a
non-scalar loss as torch's "grad can be implicitly created only for scalar outputs"; non-finite embeddings
trained on with every metric 0 and were refused only by `recgoat export`.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

import recgoat.models.base as base
from recgoat.errors import ConfigError, DataError, TrainingDiverged
from recgoat.models.base import MODELS, MissingMethod, Recommender, get_model_class
from recgoat.training.trainer import Trainer, TrainConfig

from conftest import run_main, subset_users

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


class ExtraInPrepare(BPRMF):
    def prepare(self, dataset, features=None):
        super().prepare(dataset, features)
        self.extra = nn.Parameter(torch.zeros(3))


class NoSuperPrepare(BPRMF):
    def prepare(self, dataset, features=None):
        self.stats = dataset.n_items  # forgets super().prepare(dataset, features)


class NoEmbeddings(Recommender):
    def __init__(self, n_users, n_items, config=None, **dims):
        super().__init__(n_users, n_items, config, **dims)
        self.init_id_embeddings(8)

    def loss(self, users, pos, neg):
        return {"loss": (self.user_emb(users) * (self.item_emb(neg) - self.item_emb(pos))).sum(-1).mean()}


class NoLoss(Recommender):
    def __init__(self, n_users, n_items, config=None, **dims):
        super().__init__(n_users, n_items, config, **dims)
        self.init_id_embeddings(8)

    def embeddings(self):
        return self.user_emb.weight, self.item_emb.weight


class NoParametersNoLoss(Recommender):
    def embeddings(self):
        return torch.ones(self.n_users, 1), torch.arange(self.n_items, dtype=torch.float32)[:, None]


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


# ------------------------------------------------------------------ every weight made by __init__
def test_a_parameter_made_in_prepare_is_refused_when_the_model_is_built(ds):
    """It trained and saved, and then `evaluate`, `export` and `load` refused the saved model with "does not match
    weights.safetensors (parameters extra differ): was it edited?": a whole training lost, the cause unnamed."""
    with pytest.raises(ConfigError, match=r"^bprmf: parameters extra are not created by __init__ \(created in "
                                          r"prepare\(\)\?\), so a loaded model could not restore them .*: create "
                                          r"every parameter and persistent buffer in ExtraInPrepare\.__init__"):
        ExtraInPrepare.build(ds)


@pytest.mark.parametrize("change, said", [
    (lambda m: setattr(m, "extra", nn.Parameter(torch.zeros(3))),
     r"parameters extra are not created by __init__ \(created after it: in prepare\(\), loss\(\) or "
     r"on_epoch_start\(\)\?\)"),
    (lambda m: m.register_buffer("counts", torch.zeros(2)), r"parameters or persistent buffers counts are not"),
    (lambda m: setattr(m, "item_emb", nn.Embedding(m.n_items, 3)),
     r"item_emb\.weight \[\d+, 64\] → \[\d+, 3\] changed shape after __init__"),
])
def test_save_refuses_weights_that_load_could_not_restore(ds, tmp_path, change, said):
    model = BPRMF.build(ds)
    change(model)
    with pytest.raises(ConfigError, match=said + r".*; nothing was saved$"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m" / "model.json").exists()
    fine = BPRMF.build(ds)
    fine.register_buffer("scratch", torch.zeros(2), persistent=False)  # never saved: nothing to restore
    Recommender.load(fine.save(tmp_path / "fine"))


def test_loading_a_model_saved_with_such_parameters_names_the_likely_cause(ds, tmp_path, monkeypatch):
    """A folder saved before save() refused them: the load blamed an edit ("was it edited?")."""
    model = BPRMF.build(ds)
    model.extra = nn.Parameter(torch.zeros(3))
    monkeypatch.setattr(base, "_weights_not_built", lambda *a: None, raising=False)  # as versions before saved
    folder = model.save(tmp_path / "m")
    monkeypatch.undo()
    with pytest.raises(DataError, match=r"does not match weights\.safetensors: it holds parameters extra, which "
                                        r"bprmf's __init__ does not create \(created in prepare\(\)\?\)") as e:
        Recommender.load(folder)
    assert "was it edited" not in str(e.value)
    # an edit that changes the weights __init__ makes is still told as one
    meta = json.loads((folder / "model.json").read_text())
    meta["config"]["embedding_dim"] = 8
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"was it edited\?"):
        Recommender.load(folder)


# ------------------------------------------------------------------ prepare() calls the base class's
def test_a_prepare_without_super_prepare_is_named(ds):
    """`recgoat train` said the model "was prepared on another training split than the one of dataset …: build
    the model from this dataset", of the model it had just built from that dataset."""
    said = (r"^bprmf: NoSuperPrepare\.prepare\(\) did not call super\(\)\.prepare\(dataset, features\), which "
            r"records the training split")
    with pytest.raises(ConfigError, match=said):
        NoSuperPrepare.build(ds)
    model = NoSuperPrepare(ds.n_users, ds.n_items)
    with pytest.raises(ConfigError, match=said):
        model.fit(ds, CFG)
    assert not model._prepared


def test_the_trainer_tells_a_model_never_prepared_from_one_of_another_split(ds):
    model = BPRMF(ds.n_users, ds.n_items)
    model._prepared = True  # marked prepared without Recommender.prepare: no training split recorded
    with pytest.raises(ConfigError, match=r"^bprmf was never prepared by the base class \(Recommender\.prepare\), "
                                          r"so it has no training split: a prepare\(\) override must call super"):
        Trainer(CFG).fit(model, ds)


# ------------------------------------------------------------------ the methods a model implements
MISSING = {NoEmbeddings: r"implements no embeddings\(\): implement embeddings\(self\) -> \(Z_U, Z_I\)",
           NoLoss: r"implements no loss\(\): implement loss\(self, users, pos, neg\)"}


@pytest.mark.parametrize("cls", [NoEmbeddings, NoLoss])
def test_a_missing_required_method_is_refused_before_the_run_starts(ds, tmp_path, monkeypatch, capsys, cls):
    """Training reached the base class's method at the first validation or batch: a traceback ending in a bare
    NotImplementedError (or "NoLoss is not trainable by gradient"), after the run folder was written."""
    said = rf"^\w+ \({cls.__name__}\) {MISSING[cls]}.*; see docs/extending\.md, \"What a model implements\"$"
    with pytest.raises(MissingMethod, match=said) as e:
        cls.build(ds).fit(ds, CFG, run_dir=tmp_path / "run")
    assert isinstance(e.value, ConfigError) and isinstance(e.value, NotImplementedError)
    assert not (tmp_path / "run").exists()
    # the command line: one line naming the model
    monkeypatch.setitem(MODELS, "m-missing", cls)
    monkeypatch.setattr(cls, "name", "m-missing", raising=False)
    code, err = run_main(monkeypatch, capsys, "train", "--model", "m-missing", "--epochs", "1",
                         "--run-dir", str(tmp_path / "cli"), "--set", "trainer.progress=false")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert re.match(rf"error: m-missing \({cls.__name__}\) {MISSING[cls]}", err), err


def test_the_base_methods_raise_the_same_error(ds):
    with pytest.raises(MissingMethod, match=MISSING[NoEmbeddings]):
        NoEmbeddings.build(ds).recommend(0)
    users = torch.zeros(1, dtype=torch.long)
    with pytest.raises(MissingMethod, match=MISSING[NoLoss]):
        NoLoss.build(ds).loss(users, users, users)


def test_a_model_without_parameters_needs_no_loss(ds):
    """The trainer evaluates it once, as a model with trainable = False: nothing to refuse."""
    result = NoParametersNoLoss.build(ds).fit(ds, CFG)
    assert result["epochs_run"] == 0
