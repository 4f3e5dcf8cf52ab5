"""The shared model API: a failed ``save`` over a saved model, and the feature hashes of a RecGOAT
built to leave profiles or an item view out; on a tiny synthetic catalogue (50 users × 40 items). Each test failed
before its fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat.errors import DataError
from recgoat.features.store import Features
from recgoat.models import Recommender, get_model_class
from recgoat.models.recgoat import RecGOAT

import training_helpers

catalogue, ds = training_helpers.catalogue, training_helpers.ds  # module fixtures


@pytest.fixture(scope="module")
def feats(ds) -> Features:
    rng = np.random.default_rng(0)
    return Features(text=rng.normal(size=(ds.n_items, 6)).astype(np.float32),
                    image=rng.normal(size=(ds.n_items, 5)).astype(np.float32),
                    profile=rng.normal(size=(ds.n_users, 4)).astype(np.float32))


def _bprmf(ds, seed: int) -> Recommender:
    torch.manual_seed(seed)
    return get_model_class("bprmf").build(ds, {"embedding_dim": 8})


# ------------------------------------------------------------------ save: a failure leaves the saved model
def test_a_save_that_fails_leaves_the_model_saved_there_loadable(ds, tmp_path):
    """save() replaced weights.safetensors first and only then found that model.json could not be written (a
    summary value JSON cannot encode): a bare TypeError, and the old model.json then failed its checksum."""
    good = _bprmf(ds, 0)
    good.save(tmp_path / "m")
    want = good.score(np.arange(ds.n_users))
    bad = _bprmf(ds, 1)
    bad.summary["trained_at"] = object()
    with pytest.raises(DataError, match=r"model\.json: cannot be written: model\.summary holds a value JSON cannot "
                                        r"encode \(not JSON serialisable: object\); nothing was saved$"):
        bad.save(tmp_path / "m")
    assert torch.equal(Recommender.load(tmp_path / "m").score(np.arange(ds.n_users)), want)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.safetensors"]
    with pytest.raises(DataError, match="model.summary holds a value JSON cannot encode"):
        bad.save(tmp_path / "new")
    assert not (tmp_path / "new").exists()  # refused before the folder was made
    bad.summary["trained_at"] = np.float32(1.5)  # what write_json has always encoded stays accepted
    bad.save(tmp_path / "m")
    assert Recommender.load(tmp_path / "m").summary["trained_at"] == 1.5


# ------------------------------------------------------------------ feature hashes cover only what is read
def test_recgoat_hashes_and_checks_only_the_features_it_reads(ds, feats, tmp_path):
    """dims_from sizes every matrix of the folder, whatever the config: a RecGOAT built with ``use_profile: false``
    and ``modalities: [text]`` hashed the profiles and images too, so once saved and reloaded it refused other
    profiles or images, which it never reads, as features it "was trained with"."""
    torch.manual_seed(0)
    model = RecGOAT.build(ds, {"embedding_dim": 8, "use_profile": False, "modalities": ["text"],
                               "projection_dtype": "float32"}, feats)
    assert model.dims == {"text_dim": 6, "image_dim": 5, "profile_dim": 4}  # sizes as before: the weights load
    assert set(model.feature_digests) == {"text"}
    model.save(tmp_path / "m")
    other_unread = Features(text=feats.text, image=np.ascontiguousarray(feats.image[::-1]),
                            profile=np.ascontiguousarray(feats.profile[::-1]))
    loaded = Recommender.load(tmp_path / "m")
    loaded.prepare(ds, other_unread)
    torch.testing.assert_close(loaded.score(np.arange(ds.n_users)), model.score(np.arange(ds.n_users)))
    other_text = Features(text=np.ascontiguousarray(feats.text[::-1]), image=feats.image, profile=feats.profile)
    with pytest.raises(DataError, match=r"^recgoat was trained with other text features than those given"):
        Recommender.load(tmp_path / "m").prepare(ds, other_text)
    # a model that reads them still checks them
    torch.manual_seed(0)
    full = RecGOAT.build(ds, {"embedding_dim": 8, "projection_dtype": "float32"}, feats)
    assert set(full.feature_digests) == {"text", "image", "profile"}
    full.save(tmp_path / "full")
    with pytest.raises(DataError, match=r"^recgoat was trained with other image and profile features"):
        Recommender.load(tmp_path / "full").prepare(ds, other_unread)
