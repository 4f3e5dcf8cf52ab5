"""The shared model API used interchangeably from Python, on every model: the eval-mode embedding cache after
weights change, a refused ``prepare`` leaving the model as it was, ``seen_items`` and ``remove_seen`` checks, and
``recommend``/``score`` agreeing with each other on a tiny synthetic catalogue (50 users × 40 items)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat.errors import ConfigError, DataError
from recgoat.features.store import Features
from recgoat.models import Recommender, get_model_class

import training_helpers
from training_helpers import small_config

catalogue, ds = training_helpers.catalogue, training_helpers.ds  # module fixtures

ALL = ["mostpop", "bprmf", "lightgcn", "vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn", "recgoat"]
TRAINABLE = ALL[1:]
PEERS = ["vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn"]


@pytest.fixture(scope="module")
def feats(ds):
    rng = np.random.default_rng(0)
    return Features(text=rng.normal(size=(ds.n_items, 6)).astype(np.float32))


def _build(name: str, ds, feats, seed: int = 0, **cfg) -> Recommender:
    torch.manual_seed(seed)
    cls = get_model_class(name)
    return cls.build(ds, {"embedding_dim": 8, **cfg} if cls.trainable else {}, feats if cls.needs_features else None)


def test_every_built_in_model_is_in_these_lists():
    """A model added to recgoat.models without being added here would skip every API check of this file (and of
    the files that import their lists alike: a new model once passed none of them)."""
    import recgoat.models as models

    built_in = {c.name for c in vars(models).values()
                if isinstance(c, type) and issubclass(c, Recommender) and c is not Recommender}
    assert built_in == set(ALL)
    assert {n for n in ALL if get_model_class(n).needs_features} - {"recgoat"} == set(PEERS)


# ------------------------------------------------------------------ the eval-mode cache
@pytest.mark.parametrize("name", TRAINABLE)
def test_weights_loaded_or_stepped_in_eval_mode_are_the_ones_scored(ds, feats, name):
    """Eval mode caches the final embeddings; load_state_dict (or an optimizer step in a hand-written loop) in
    eval mode kept scoring the old weights (every graph and feature model), silently."""
    model, other = _build(name, ds, feats), _build(name, ds, feats, seed=1)
    model.eval()
    other.eval()
    before, want = model.score([0, 1]).clone(), other.score([0, 1]).clone()
    assert not torch.equal(before, want)
    model.load_state_dict(other.state_dict())
    assert torch.equal(model.score([0, 1]), want)
    assert np.array_equal(model.recommend(0, 5)[0], other.recommend(0, 5)[0])
    with torch.no_grad():  # in-place updates, as an optimizer makes
        for p in model.parameters():
            p.add_(0.05)
    assert not torch.equal(model.score([0, 1]), want)


def test_a_loaded_model_given_other_weights_does_not_score_the_saved_ones(ds, feats, tmp_path):
    """A loaded model scores from its saved embeddings; given new weights it must recompute from them (BPR-MF)
    or say it needs its graph (LightGCN), never go on returning the saved scores."""
    for name in ("bprmf", "lightgcn"):
        _build(name, ds, feats).save(tmp_path / name)
        loaded, other = Recommender.load(tmp_path / name), _build(name, ds, feats, seed=1)
        loaded.load_state_dict(other.state_dict())
        if name == "bprmf":
            other.eval()
            assert torch.equal(loaded.score([0, 1]), other.score([0, 1]))
        else:
            with pytest.raises(RuntimeError, match="lightgcn: call prepare"):
                loaded.score([0, 1])
            loaded.prepare(ds)
            other.eval()
            assert torch.equal(loaded.score([0, 1]), other.score([0, 1]))


# ------------------------------------------------------------------ a refused prepare
@pytest.mark.parametrize("name", PEERS)
def test_a_refused_prepare_does_not_poison_what_save_records(ds, feats, name, tmp_path):
    """prepare() with features of another size is refused, but the base class had already recorded their
    digests: the model saved next refused its own features on load ("trained with other text features")."""
    model = _build(name, ds, feats)
    model.eval()
    before = model.score([0, 1]).clone()
    wrong = Features(text=np.ones((ds.n_items, 5), np.float32))
    with pytest.raises(ConfigError, match=rf"^{name}: built for text features of dimension 6, given 5"):
        model.prepare(ds, wrong)
    assert torch.equal(model.score([0, 1]), before)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    loaded.prepare(ds, feats)  # its own features
    loaded.eval()
    assert torch.allclose(loaded.score([0, 1]), before)


@pytest.mark.parametrize("name", [*PEERS, "recgoat"])
def test_a_refused_prepare_leaves_a_loaded_model_scoring_and_unprepared(ds, feats, name, tmp_path):
    """A loaded feature model prepared without features lost the saved embeddings it scored from, and was
    marked prepared: its next fit failed inside the model ("call prepare") instead of asking for features."""
    model = _build(name, ds, feats)
    model.save(tmp_path / "m")
    saved = model.score(np.arange(ds.n_users)).clone()
    loaded = Recommender.load(tmp_path / "m")
    with pytest.raises((ConfigError, DataError)):
        loaded.prepare(ds, None)
    assert torch.equal(loaded.score(np.arange(ds.n_users)), saved)
    label = "RecGOAT needs item features" if name == "recgoat" else f"{name} needs item features"
    with pytest.raises((ConfigError, DataError), match=label):
        loaded.fit(ds, small_config(epochs=1))
    loaded.fit(ds, small_config(epochs=1), features=feats)  # and it still trains once given them


def test_a_refused_prepare_leaves_a_built_recgoat_usable(ds, feats, tmp_path):
    """RecGOAT.prepare installed the new graph and marked itself not ready before checking the features, so a
    refused call left a built model that could neither score nor save until prepared again."""
    model = _build("recgoat", ds, feats)  # in train mode, as build leaves every model: nothing cached
    before = model.score([0, 1]).clone()
    with pytest.raises(DataError, match="built with text features of shape"):
        model.prepare(ds, Features(text=np.ones((ds.n_items, 5), np.float32)))
    assert torch.equal(model.score([0, 1]), before)
    model.save(tmp_path / "m")


# ------------------------------------------------------------------ recommend / seen_items arguments
def test_seen_items_refuses_users_out_of_range(ds, feats):
    """seen_items(-1) read an empty row (so nothing was excluded) and seen_items(n_users) was a bare numpy
    IndexError; both are the KeyError recommend gives."""
    model = _build("bprmf", ds, feats)
    train = ds.csr("train")
    assert np.array_equal(model.seen_items(np.int64(3)), train[3].indices)
    for bad in (-1, ds.n_users):
        with pytest.raises(KeyError, match=f"unknown user index {bad}"):
            model.seen_items(bad)
    with pytest.raises(TypeError, match="user must be an integer user index"):
        model.seen_items(1.0)


@pytest.mark.parametrize("flag", ["False", "no", None, 0, 1.0])
def test_recommend_refuses_a_remove_seen_that_is_not_a_bool(ds, feats, flag):
    """remove_seen="False" (a string from a config or a command line) is truthy: seen items were removed."""
    model = _build("bprmf", ds, feats)
    with pytest.raises(TypeError, match=rf"remove_seen must be True or False, got {type(flag).__name__}"):
        model.recommend(0, 5, remove_seen=flag)
    items, _ = model.recommend(0, 5, remove_seen=np.bool_(False))
    assert np.array_equal(items, model.recommend(0, 5, remove_seen=False)[0])


# ------------------------------------------------------------------ recommend and score agree, every model
@pytest.fixture(scope="module")
def built(ds, feats):
    return {name: _build(name, ds, feats) for name in ALL}


@pytest.mark.parametrize("name", ALL)
def test_recommend_is_the_top_of_score_with_k_past_what_is_left(built, ds, name):
    """With k beyond the unseen (or all) items, every model returns each candidate once, best first, with
    the scores score() gives, never a seen item; score on an item subset or several users is the same
    block of the full matrix, float32."""
    model = built[name]
    train = ds.csr("train")
    full = model.score(np.arange(ds.n_users))
    assert full.dtype == torch.float32 and full.shape == (ds.n_users, ds.n_items)
    for u in (np.int64(0), torch.tensor(7), 49):
        seen = train[int(u)].indices
        items, scores = model.recommend(u, ds.n_items + 5)
        assert sorted(items.tolist()) == sorted(set(range(ds.n_items)) - set(seen.tolist()))
        assert np.array_equal(scores, model.score([u])[0, items].numpy()) and np.all(np.diff(scores) <= 0)
        torch.testing.assert_close(torch.from_numpy(scores), full[int(u), items])  # one row or all: same values
        items, _ = model.recommend(u, 10**9, remove_seen=False)
        assert sorted(items.tolist()) == list(range(ds.n_items))
    sub = np.array([5, 0, 39, 5])
    torch.testing.assert_close(model.score(torch.tensor([3, 1]), sub), full[[3, 1]][:, sub])  # BLAS: last bit


@pytest.mark.parametrize("name", ["freedom", "lgmrec", "bm3", "recgoat"])
def test_scoring_in_train_mode_is_the_eval_score_and_keeps_train_mode(ds, feats, name):
    """A model left in train mode (as build leaves it) scores without its training noise (FREEDOM's pruned
    graph, LGMRec's Gumbel noise and dropout, RecGOAT's view dropout) and is still in train mode after."""
    extra = {"view_dropout": 0.5} if name == "recgoat" else {}
    model = _build(name, ds, feats, **extra)
    model.eval()
    want = model.score([0, 1, 2]).clone()
    model.train()
    model.on_epoch_start(0, np.random.default_rng(0))
    assert torch.equal(model.score([0, 1, 2]), want) and torch.equal(model.score([0, 1, 2]), want)
    assert model.training and all(m.training for m in model.modules())
