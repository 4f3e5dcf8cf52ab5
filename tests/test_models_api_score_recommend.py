"""The shared model API (``Recommender.score/recommend/fit/save/load``) on edge cases, found by a QA pass: score
shapes other than 1-D, NaN and ±inf scores in ``recommend``, one-element tensors taken as scalars, features hashed
twice by ``fit``, a bad ``train_config``, and save/load paths; on a tiny synthetic catalogue (50 users × 40 items)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recgoat.models.base as base
from recgoat.errors import ConfigError, DataError, RecGOATError
from recgoat.features.store import Features
from recgoat.models import Recommender, get_model_class
from recgoat.models.base import NaNScores
from recgoat.training.trainer import Trainer

import training_helpers

catalogue, ds = training_helpers.catalogue, training_helpers.ds  # module fixtures


class _Fixed(Recommender):
    """Scores one fixed row for every user: z_u = [1], z_i = [row[i]], so the score of (u, i) is row[i] exactly."""

    trainable = False

    def __init__(self, n_users: int, n_items: int, config=None, row=None):
        super().__init__(n_users, n_items, config)
        self.row = torch.as_tensor(row, dtype=torch.float32)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones(self.n_users, 1), self.row[:, None]


def _fixed(ds, row: np.ndarray) -> _Fixed:
    model = _Fixed(ds.n_users, ds.n_items, row=row)
    model.prepare(ds)
    return model


@pytest.fixture(scope="module")
def feats(ds):
    return Features(text=np.random.default_rng(0).normal(size=(ds.n_items, 6)).astype(np.float32))


@pytest.fixture(scope="module")
def bprmf(ds):
    torch.manual_seed(0)
    return get_model_class("bprmf").build(ds, {"embedding_dim": 8})


# ------------------------------------------------------------------ score: 1-D users and items only
@pytest.mark.parametrize("users, shape", [([[0, 1]], r"\(1, 2\)"), (np.zeros((0, 2), np.int64), r"\(0, 2\)"),
                                          (torch.tensor([[3]]), r"\(1, 1\)")])
def test_score_refuses_users_that_are_not_1d(bprmf, users, shape):
    """score([[0, 1]]) was a [1, 2, n_items] tensor (an empty 2-D block a [0, 2, n_items] one), not refused."""
    with pytest.raises(ValueError, match=rf"^users must be a 1-D sequence of user indices, got shape {shape}$"):
        bprmf.score(users)


def test_score_refuses_a_single_index_and_ragged_lists(bprmf):
    """score(3) was a 1-D row (score([0], 3) a [1] vector), unlike score([3]); a ragged list was numpy's
    "inhomogeneous shape" error; an empty 2-D item block passed the early return for empty input."""
    for bad in (3, np.int64(3), torch.tensor(3)):
        with pytest.raises(ValueError, match=r"^users must be .* got shape \(\): pass \[user\] for one user$"):
            bprmf.score(bad)
    with pytest.raises(ValueError, match=r"^items must be .* got shape \(\): pass \[item\] for one item$"):
        bprmf.score([0], 3)
    with pytest.raises(ValueError, match=r"^items must be .* got shape \(2, 0\)$"):
        bprmf.score([0], np.zeros((2, 0), np.int64))
    with pytest.raises(ValueError, match=r"^users must be a 1-D sequence of user indices, got a ragged nested list"):
        bprmf.score([[0], [1, 2]])
    with pytest.raises(TypeError, match=r"got str values \(e\.g\. 'u1'\); map raw ids with dataset\.user_index"):
        bprmf.score("u1")  # a raw id is still told how to map it, not only that it has no length
    full = bprmf.score(np.arange(bprmf.n_users))
    torch.testing.assert_close(bprmf.score([3]), full[3:4])  # one row or all: BLAS may round the last bit apart
    assert bprmf.score([]).shape == (0, bprmf.n_items)
    assert bprmf.score(torch.tensor([3, 1], dtype=torch.int32), [7]).shape == (2, 1)


# ------------------------------------------------------------------ recommend: NaN and ±inf scores
@pytest.mark.parametrize("remove_seen", [True, False])
def test_recommend_refuses_nan_scores(ds, remove_seen):
    """Items a model scored NaN were dropped from recommend's list (k=40 gave 37 items), silently: the model has
    no ranking of them. One error names the model, the user and the NaN items; score() returns them as they are."""
    row = np.arange(ds.n_items, dtype=np.float32)
    row[[5, 38, 39]] = np.nan
    model = _fixed(ds, row)
    unseen = np.setdiff1d(np.arange(ds.n_items), ds.csr("train")[0].indices)
    assert 5 in unseen  # a NaN item the user has not seen, so remove_seen cannot hide it
    for k in (1, 5, ds.n_items):
        with pytest.raises(NaNScores, match=r"^base scores 3 of 40 items NaN for user 0 \(first: item 5\): its "
                                            r"embeddings hold NaN or inf"):
            model.recommend(0, k, remove_seen=remove_seen)
    assert issubclass(NaNScores, RecGOATError) and issubclass(NaNScores, FloatingPointError)
    assert torch.isnan(model.score([0])[0, [5, 38, 39]]).all()


def test_recommend_ranks_a_models_own_inf_scores(ds):
    """k was cut to the number of finite scores, so an item the model scored -inf was never listed (k=n_items
    gave fewer than the unseen items) and each +inf item pushed the lowest finite item out."""
    seen = set(ds.csr("train")[0].indices.tolist())
    unseen = [i for i in range(ds.n_items) if i not in seen]
    top, bottom = unseen[3], unseen[4]
    row = np.linspace(1, 2, ds.n_items, dtype=np.float32)
    row[top], row[bottom] = np.inf, -np.inf
    model = _fixed(ds, row)
    items, scores = model.recommend(0, ds.n_items)
    assert sorted(items.tolist()) == unseen and items[0] == top and items[-1] == bottom
    finite = sorted((i for i in unseen if i not in (top, bottom)), key=lambda i: -row[i])
    assert items[1:-1].tolist() == finite and np.array_equal(scores, row[items])
    assert model.recommend(0, 2)[0].tolist() == [top, finite[0]]
    items, _ = model.recommend(0, ds.n_items, remove_seen=False)
    assert len(items) == ds.n_items and items[0] == top and items[-1] == bottom


def test_recommend_for_a_user_who_has_seen_everything_is_empty(ds):
    model = _fixed(ds, np.arange(ds.n_items, dtype=np.float32))
    model.set_train_matrix(sp.csr_matrix(np.ones((ds.n_users, ds.n_items), np.float32)))
    items, scores = model.recommend(0, 5)
    assert items.shape == scores.shape == (0,) and items.dtype == np.int64 and scores.dtype == np.float32
    assert model.recommend(0, 5, remove_seen=False)[0].tolist() == [39, 38, 37, 36, 35]


def test_recommend_refuses_one_element_tensors_as_user_or_k(bprmf):
    """torch.tensor([0]) (or [[0]]) has __index__, so it passed as user 0 and as k, while np.array([0]) was
    refused; a 0-d tensor or numpy integer is still one."""
    for bad in (torch.tensor([0]), torch.tensor([[0]])):
        with pytest.raises(TypeError, match=r"^user must be an integer user index \(0\.\.49\), got Tensor"):
            bprmf.recommend(bad, 3)
        with pytest.raises(TypeError, match=r"^k must be an integer >= 1, got Tensor"):
            bprmf.recommend(0, bad + 3)
        with pytest.raises(TypeError, match=r"^user must be an integer user index"):
            bprmf.seen_items(bad)
    want = bprmf.recommend(0, 3)[0]
    assert np.array_equal(bprmf.recommend(torch.tensor(0), torch.tensor(3))[0], want)
    assert np.array_equal(bprmf.recommend(np.int32(0), np.uint8(3))[0], want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_recommend_from_a_model_on_the_gpu(bprmf):
    """score() works on a model moved to the GPU, but recommend() called .numpy() on the CUDA scores."""
    want = bprmf.recommend(0, 5)
    model = get_model_class("bprmf")(bprmf.n_users, bprmf.n_items, bprmf.config)
    model.load_state_dict(bprmf.state_dict())
    model.set_train_matrix(bprmf._train_csr)
    model.to("cuda").eval()
    items, scores = model.recommend(0, 5)
    assert np.array_equal(items, want[0]) and np.allclose(scores, want[1])


# ------------------------------------------------------------------ fit: features hashed once, train_config checked
@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(Trainer, "fit", lambda self, model, dataset: "trained")


@pytest.fixture
def hash_calls(monkeypatch) -> list[object]:
    calls: list[object] = []
    real = base.feature_digests

    def counting(features, dims):
        calls.append(features)
        return real(features, dims)

    monkeypatch.setattr(base, "feature_digests", counting)
    return calls


def test_fit_hashes_the_features_it_is_given_once(ds, feats, no_training, hash_calls, tmp_path):
    """fit() hashed the features to compare them with the prepared ones, then prepare() hashed them again."""
    torch.manual_seed(0)
    model = get_model_class("vbpr").build(ds, {"embedding_dim": 8}, feats)
    other = Features(text=np.ascontiguousarray(feats.text[::-1]))
    want = base.feature_digests(other, model.dims)
    hash_calls.clear()
    assert model.fit(ds, {"epochs": 1}, features=other) == "trained"
    assert [id(f) for f in hash_calls] == [id(other)] and model.feature_digests == want
    hash_calls.clear()
    model.fit(ds, {"epochs": 1}, features=other)  # the same features: hashed to compare, not prepared again
    assert len(hash_calls) == 1
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    hash_calls.clear()
    loaded.fit(ds, {"epochs": 1}, features=other)  # a loaded model is prepared: still hashed once
    assert len(hash_calls) == 1 and loaded.feature_digests == want
    hash_calls.clear()
    model.prepare(ds, feats)  # prepare alone hashes what it is given, not what fit gave last
    assert len(hash_calls) == 1 and model.feature_digests == base.feature_digests(feats, model.dims) != want


def test_a_bad_train_config_is_one_error_before_the_model_is_prepared_again(ds, feats, no_training):
    """A dict with an unknown or ill-typed key raised pydantic's multi-line ValidationError and a string or a
    number an AttributeError from inside the trainer, both after the model was prepared on the new features."""
    torch.manual_seed(0)
    model = get_model_class("vbpr").build(ds, {"embedding_dim": 8}, feats)
    before = dict(model.feature_digests)
    other = Features(text=np.ascontiguousarray(feats.text[::-1]))
    with pytest.raises(ConfigError, match=r"^train_config\.epoch: unknown key \(did you mean 'epochs'\?"):
        model.fit(ds, {"epoch": 1}, features=other)
    with pytest.raises(ConfigError, match=r"^train_config\.epochs: .*\(got 'x'\)$"):
        model.fit(ds, {"epochs": "x"}, features=other)
    for bad in ("epochs=1", 3):
        with pytest.raises(TypeError, match=rf"^train_config must be a TrainConfig, a dict of its keys or None, "
                                            rf"got {type(bad).__name__} {bad!r}$"):
            model.fit(ds, bad, features=other)
    assert model.feature_digests == before


# ------------------------------------------------------------------ save / load paths
def test_save_onto_a_file_or_without_a_path_is_one_clear_error(bprmf, tmp_path):
    """A file where the folder goes was a bare FileExistsError (NotADirectoryError under it), and a path of None
    pathlib's "expected str, bytes or os.PathLike object"."""
    (tmp_path / "f").write_text("not a model")
    with pytest.raises(DataError, match=r"/f: is a file, not a model folder$"):
        bprmf.save(tmp_path / "f")
    with pytest.raises(DataError, match=r"/f/sub: cannot make the model folder there: Not a directory$"):
        bprmf.save(str(tmp_path / "f" / "sub"))
    assert (tmp_path / "f").read_text() == "not a model"
    for bad in (None, 3):
        with pytest.raises(TypeError, match=rf"^path must be a folder path \(str or Path\), got {type(bad).__name__}"):
            bprmf.save(bad)
        with pytest.raises(TypeError, match=r"^path must be a folder path"):
            Recommender.load(bad)


def test_save_and_load_round_trip_through_unusual_paths(bprmf, ds, tmp_path, monkeypatch):
    """Spaces, non-ASCII and URL-ish characters, a relative path and the current folder; loading another model
    class's folder through a class names both."""
    monkeypatch.chdir(tmp_path)
    want = bprmf.score(np.arange(ds.n_users))
    for path in (tmp_path / "a b" / "ü#%?", "rel/sub", Path(".")):
        assert bprmf.save(path) == Path(path)
        loaded = type(bprmf).load(str(path))
        assert torch.equal(loaded.score(np.arange(ds.n_users)), want)
        assert np.array_equal(loaded.recommend(4, 7)[0], bprmf.recommend(4, 7)[0])
    with pytest.raises(DataError, match=r"rel/sub/model\.json: holds a bprmf model, not a lightgcn$"):
        get_model_class("lightgcn").load("rel/sub")
