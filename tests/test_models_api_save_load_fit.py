"""The shared model API under misuse, on all eight models: exact round trips through a fresh process,
refused edits of a saved folder, fitting a loaded model, and side features passed straight from Python."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from recgoat.errors import ConfigError, DataError
from recgoat.features.store import Features
from recgoat.models import MODELS, Recommender, get_model_class
from recgoat.training import TrainConfig

from conftest import subset_users

ALL = ["mostpop", "bprmf", "lightgcn", "vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn", "recgoat"]
FEATURE_MODELS = ["vbpr", "freedom", "lgmrec", "bm3", "lattice", "mgcn", "recgoat"]


@pytest.fixture(scope="module")
def data(ml_small):
    ds = subset_users(ml_small, 40)
    rng = np.random.default_rng(0)
    return ds, Features(text=rng.normal(size=(ds.n_items, 12)).astype(np.float32))


def _build(name: str, ds, feats):
    torch.manual_seed(0)
    cls = get_model_class(name)
    return cls.build(ds, {"embedding_dim": 8} if cls.trainable else {}, feats if cls.needs_features else None)


def test_a_fresh_process_recommends_exactly_as_the_saved_model(data, tmp_path):
    """Scores and recommendations of every model reloaded in a new interpreter are bit-identical (a tensor
    read from the file is unaligned, and a BLAS matrix-vector product then rounds differently)."""
    ds, feats = data
    expected = {}
    for name in ALL:
        model = _build(name, ds, feats)
        model.save(tmp_path / name)
        expected[name] = [model.recommend(u, 10) for u in range(ds.n_users)]
    script = (
        "import sys, numpy as np, torch\n"
        "from recgoat.models import Recommender\n"
        "out = {}\n"
        f"for name in {ALL!r}:\n"
        f"    m = Recommender.load(sys.argv[1] + '/' + name)\n"
        "    for u in range(m.n_users):\n"
        "        out[f'{name}.{u}.items'], out[f'{name}.{u}.scores'] = m.recommend(u, 10)\n"
        "np.savez(sys.argv[1] + '/out.npz', **out)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    got = np.load(tmp_path / "out.npz")
    for name in ALL:
        for u, (items, scores) in enumerate(expected[name]):
            assert np.array_equal(got[f"{name}.{u}.items"], items), (name, u)
            assert np.array_equal(got[f"{name}.{u}.scores"], scores), (name, u)


def _edit_json(folder, fn) -> None:
    meta = json.loads((folder / "model.json").read_text())
    fn(meta)
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("model"), "'model' must be a model name, got None"),
    (lambda m: m.__setitem__("n_users", "many"), "'n_users' must be an integer >= 1, got 'many'"),
    (lambda m: m.__setitem__("n_users", 5), r"does not match weights.safetensors \(parameters user_content.weight, user_id.weight differ\): was it edited\?"),
    (lambda m: m["config"].__setitem__("embedding_dim", 4), "does not match weights.safetensors"),
    (lambda m: m["dims"].__setitem__("text_dim", 3), "does not match weights.safetensors"),
    (lambda m: m.__setitem__("dims", 3), "'dims' must be a JSON object, got 3"),
    (lambda m: m.__setitem__("config", [1]), r"'config' must be a JSON object, got \[1\]"),
])
def test_an_edited_model_json_is_one_data_error_naming_it(data, tmp_path, edit, message):
    ds, feats = data
    _build("vbpr", ds, feats).save(tmp_path / "m")
    _edit_json(tmp_path / "m", edit)
    with pytest.raises(DataError, match=message) as e:
        Recommender.load(tmp_path / "m")
    assert e.value.path == str(tmp_path / "m" / "model.json")


def test_a_model_json_that_is_not_an_object_or_not_text_is_refused(data, tmp_path):
    ds, _ = data
    _build("bprmf", ds, None).save(tmp_path / "m")
    (tmp_path / "m/model.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        Recommender.load(tmp_path / "m")
    (tmp_path / "m/model.json").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="corrupt JSON"):
        Recommender.load(tmp_path / "m")
    (tmp_path / "m/model.json").unlink()
    (tmp_path / "m/model.json").mkdir()
    with pytest.raises(DataError, match="not a saved model folder"):
        Recommender.load(tmp_path / "m")


def test_loading_a_run_folder_points_to_the_model_saved_in_it(data, tmp_path):
    ds, _ = data
    _build("bprmf", ds, None).save(tmp_path / "run" / "best")
    with pytest.raises(DataError) as e:
        Recommender.load(tmp_path / "run")
    assert str(e.value).endswith(f"; the model saved in it is {tmp_path / 'run' / 'best'}")
    assert Recommender.load(tmp_path / "run" / "best").n_items == ds.n_items


def test_scores_of_a_pandas_series_of_users_warn_nothing(data):
    """np.asarray of a Series is read-only: torch warned "The given NumPy array is not writable"."""
    import warnings

    import pandas as pd

    ds, _ = data
    model = _build("bprmf", ds, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = model.score(pd.Series([0, 2]))
    assert torch.equal(got, model.score([0, 2]))


@pytest.mark.parametrize("name", ALL[1:])
def test_a_model_made_float64_trains_and_scores_as_in_float32(data, name):
    """FREEDOM and LGMRec kept their graphs and features float32 (no buffers) and failed in torch
    ("expected scalar type Double but found Float"); a cached eval pass survived .double() (same tensors,
    same versions)."""
    ds, feats = data
    m32 = _build(name, ds, feats).eval()
    before = m32.score([0, 1])
    m64 = _build(name, ds, feats).eval()
    m64.score([0, 1])  # cached in float32
    key = m64._weights_key()
    m64.double()
    assert m64._weights_key() != key
    torch.testing.assert_close(m64.score([0, 1]), before, rtol=1e-4, atol=1e-5)
    m64.train()
    loss = m64.loss(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))["loss"]
    loss.backward()
    assert loss.dtype == torch.float64 and torch.isfinite(loss)


def _rewrite_weights(folder, fn) -> None:
    """Change the tensors and record the new hash, as a tool (not corruption) would."""
    tensors = load_file(str(folder / "weights.safetensors"))
    fn(tensors)
    save_file(tensors, str(folder / "weights.safetensors"))
    digest = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    _edit_json(folder, lambda m: m.__setitem__("weights_sha256", digest))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("final.item_emb"), "final embeddings missing or not of the saved model's sizes"),
    (lambda t: t.__setitem__("final.user_emb", t["final.user_emb"][:-3].clone()), "final embeddings missing"),
    (lambda t: t.__setitem__("train.indices", t["train.indices"][:-5].clone()), "corrupt training matrix"),
])
def test_weights_without_what_load_needs_are_refused(data, tmp_path, edit, message):
    ds, _ = data
    _build("lightgcn", ds, None).save(tmp_path / "m")
    _rewrite_weights(tmp_path / "m", edit)
    with pytest.raises(DataError, match=message):
        Recommender.load(tmp_path / "m")


@pytest.mark.parametrize("name", ALL[1:])
def test_a_loaded_model_can_be_trained_further(data, tmp_path, name):
    """A loaded model keeps its training matrix (for remove_seen) but not its graphs or features: fit
    prepares it instead of failing inside the propagation."""
    ds, feats = data
    _build(name, ds, feats).save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    before = loaded.score([0, 1]).clone()
    result = loaded.fit(ds, TrainConfig(epochs=1, progress=False, lr=1e-2),
                        features=feats if loaded.needs_features else None)
    assert result["epochs_run"] == 1
    assert not torch.equal(loaded.score([0, 1]), before)


def test_fitting_a_model_on_other_data_is_refused(data, ml_small, tmp_path):
    ds, _ = data
    _build("lightgcn", ds, None).save(tmp_path / "m")
    other = subset_users(ml_small, 30)
    with pytest.raises(DataError, match=rf"lightgcn has {ds.n_users} users × {ds.n_items} items but dataset "
                                        rf"'{other.name}' has {other.n_users} × {other.n_items}: not its data"):
        Recommender.load(tmp_path / "m").fit(other, TrainConfig(epochs=1, progress=False))


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_a_loaded_model_is_refused_other_features_of_the_same_shape(data, tmp_path, name):
    """Features from another encoder or template keep their shape: a loaded model prepared (or fitted)
    with them passed every size check and trained its learned projections on inputs it never saw."""
    ds, feats = data
    _build(name, ds, feats).save(tmp_path / "m")
    other = Features(text=feats.text[::-1].copy())  # same shape, other contents
    with pytest.raises(DataError, match=rf"^{name} was trained with other text features than those given"):
        Recommender.load(tmp_path / "m").fit(ds, TrainConfig(epochs=1, progress=False), features=other)
    loaded = Recommender.load(tmp_path / "m")
    loaded.prepare(ds, feats)  # its own features: accepted, and recorded again by the next save
    loaded.save(tmp_path / "m2")
    with pytest.raises(DataError, match="other text features"):
        Recommender.load(tmp_path / "m2").prepare(ds, other)


def _nan_row(x: np.ndarray, row: int = 3) -> np.ndarray:
    x = x.copy()
    x[row] = np.nan
    return x


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_side_features_from_python_are_checked(data, name):
    """Features built in Python skip load_features' checks: the model names the matrix and the problem
    instead of training to a NaN loss, parsing strings as numbers or failing inside numpy."""
    ds, feats = data
    cls = MODELS[name]
    label = "RecGOAT" if name == "recgoat" else name
    with pytest.raises(DataError, match=rf"^{label}: text features: 1 row holds NaN or inf \(first: row 3\)$"):
        cls.build(ds, {}, Features(text=_nan_row(feats.text)))
    with pytest.raises(DataError, match=rf"^{label}: text features: dtype <U\d+ is not a number type"):
        cls.build(ds, {}, Features(text=feats.text.astype(str)))
    with pytest.raises(DataError, match=rf"^{label}: text features: shape \({ds.n_items},\), expected a 2-D matrix \(one row per item\)$"):
        cls.build(ds, {}, Features(text=feats.text[:, 0]))
    # zero columns once read as "no text" (RecGOAT dropped the view without a word); bool would cast to 1.0
    with pytest.raises(DataError, match=rf"^{label}: text features: shape \({ds.n_items}, 0\): no feature columns$"):
        cls.build(ds, {}, Features(text=feats.text[:, :0]))
    with pytest.raises(DataError, match=rf"^{label}: text features: dtype bool is not a number type"):
        cls.build(ds, {}, Features(text=feats.text > 0))
    # numbers of another dtype, lists and tensors are fine
    for text in (feats.text.astype(np.float64), feats.text.tolist(), torch.from_numpy(feats.text)):
        assert torch.isfinite(cls.build(ds, {}, Features(text=text)).score([0])).all()


@pytest.mark.parametrize("name", ["freedom", "recgoat"])
def test_an_image_mask_of_the_wrong_length_is_refused(data, name):
    ds, feats = data
    label = "RecGOAT" if name == "recgoat" else name
    bad = Features(image=feats.text, image_mask=np.ones(ds.n_items - 1, bool))
    with pytest.raises(DataError, match=rf"^{label}: image_mask has shape \({ds.n_items - 1},\) and dtype bool, "
                                        rf"expected \({ds.n_items},\) booleans"):
        MODELS[name].build(ds, {}, bad)


def test_recgoat_profiles_with_nan_are_refused(data):
    ds, feats = data
    profile = _nan_row(np.ones((ds.n_users, 4), np.float32), row=2)
    with pytest.raises(DataError, match=r"^RecGOAT: profile features: 1 row holds NaN or inf \(first: row 2\)$"):
        MODELS["recgoat"].build(ds, {}, Features(text=feats.text, profile=profile))


def test_recgoat_fixed_gamma_for_one_view_names_the_missing_key(data):
    ds, feats = data
    with pytest.raises(ConfigError, match=r"set model\.params\.gamma_t \(text\) too"):
        MODELS["recgoat"].build(ds, {"gamma_v": 0.3}, feats)  # image absent: text is the only view


def test_score_refuses_a_2d_item_block(data):
    ds, _ = data
    model = _build("bprmf", ds, None)
    with pytest.raises(ValueError, match=r"items must be a 1-D sequence of item indices, got shape \(1, 2\)"):
        model.score([0], [[0, 1]])


def test_train_prints_recgoat_fusion_and_alignment():
    from recgoat.cli import _summary_lines

    lines = _summary_lines({"modalities_used": ["text"], "profile_branch": False, "fusion": "concat",
                            "cmcl": False, "oat": False, "rating_attention": True})
    assert lines == ["feature views used: text", "fusion: concat; alignment: none; rating attention: on"]
    lines = _summary_lines({"modalities_used": [], "fusion": "id_only", "cmcl": True,
                            "oat": "sinkhorn divergence", "rating_attention": False})
    assert lines[1] == "fusion: id_only; alignment: CMCL + OAT (sinkhorn divergence); rating attention: off"


@pytest.mark.parametrize("name", ["vbpr", "recgoat"])
def test_fit_with_other_features_uses_them(data, name):
    """A built model given other features in fit trained on the features it was built with, silently."""
    ds, feats = data
    other = Features(text=np.ascontiguousarray(feats.text[::-1]))
    model = _build(name, ds, feats)
    model.fit(ds, TrainConfig(epochs=1, progress=False), features=other)
    assert model.feature_digests == _build(name, ds, other).feature_digests != _build(name, ds, feats).feature_digests


def test_prepare_drops_embeddings_computed_before(data, ml_small):
    """A model in eval mode (a loaded one, say) prepared again on another training split of the same shape
    kept scoring from the embeddings of its old graph."""
    ds, _ = data
    other = subset_users(ml_small, 40, seed=7)  # the same users and items, split another way
    assert (other.n_users, other.n_items) == (ds.n_users, ds.n_items)
    assert (other.csr("train") != ds.csr("train")).nnz
    model = _build("lightgcn", ds, None)
    model.eval()
    before = model.score([0, 1]).clone()
    model.prepare(other)
    fresh = _build("lightgcn", other, None)  # the same weights (same seed), prepared on the other split
    fresh.eval()
    assert torch.equal(model.score([0, 1]), fresh.score([0, 1])) and not torch.equal(before, fresh.score([0, 1]))
