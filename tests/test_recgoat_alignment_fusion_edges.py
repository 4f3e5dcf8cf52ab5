"""RecGOAT under demanding use: float32 precision of the Sinkhorn divergence, fixed fusion weights for a view
the features lack, a loaded model asked to recompute its embeddings, alignment caps that leave nothing to
align, and a run summary that says CMCL acts when no CMCL term can. Each test failed before its fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat.errors import ConfigError
from recgoat.features.store import Features
from recgoat.models import Recommender
from recgoat.nn.alignment import oat_losses, pairwise_distance

from conftest import subset_users
from recgoat_helpers import build, random_features

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(ml_small):
    ds = subset_users(ml_small, 40)
    return ds, random_features(ds, 0, text=12, image=10, profile=12, missing_images=0.2)


def _batch(ds, n: int = 64, seed: int = 0):
    m = ds.csr("train").tocoo()
    rng = np.random.default_rng(seed)
    idx = rng.choice(m.nnz, n, replace=False)
    return (torch.from_numpy(m.row[idx].astype(np.int64)), torch.from_numpy(m.col[idx].astype(np.int64)),
            torch.from_numpy(rng.integers(0, ds.n_items, n)))


# ---------------------------------------------------------------------------------------------- OAT precision
def test_float32_sinkhorn_divergence_has_the_float64_value_and_gradient():
    """The float32 cost ‖x‖² + ‖y‖² − 2x·y cancelled to ~1e-7 on the self terms' diagonal (each point with
    itself), a phantom distance of ~3e-4 whose gradient is noise: the default OAT loss's gradient was ~2 %
    off the float64 one for any clouds, and identical clouds got a non-zero gradient."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 32, generator=g)
    for shift in (0.3, 0.05):
        y = x + shift * torch.randn(96, 32, generator=g)
        grads = []
        for dtype in (torch.float32, torch.float64):
            leaves = [x.to(dtype).clone().requires_grad_(True), y.to(dtype).clone().requires_grad_(True)]
            loss = oat_losses([(leaves[0], leaves[1])], eps=0.05, n_iter=50, tol=1e-5)
            loss.backward()
            grads.append((loss.item(), [t.grad.double() for t in leaves]))
        (v32, g32), (v64, g64) = grads
        assert v32 == pytest.approx(v64, rel=1e-4, abs=1e-6), shift
        for a, b in zip(g32, g64):
            assert float((a - b).norm() / b.norm()) < 1e-3, shift
    # identical clouds: zero loss and (to rounding) zero gradient, in float32 too
    leaves = [x.clone().requires_grad_(True), x.clone().requires_grad_(True)]
    loss = oat_losses([(leaves[0], leaves[1])], eps=0.05, n_iter=50, tol=1e-5)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    assert all(float(t.grad.norm()) < 1e-6 for t in leaves)
    # a cloud against itself: an exactly zero diagonal, and the values of the two-argument form elsewhere
    d_self, d_two = pairwise_distance(x, x), pairwise_distance(x, x.clone())
    assert d_self.dtype == torch.float32 and torch.all(d_self.diagonal() <= 1e-6)
    assert torch.allclose(d_self, d_two, atol=1e-5)


# ---------------------------------------------------------------------------------------------- fixed γ
def test_a_fixed_gamma_for_a_view_the_features_lack_is_refused(data):
    """gamma_grid on data without images: γ_v was silently dropped and γ_id became 1 − γ_t, so every grid
    point of a γ_t trained the same model under different labels."""
    ds, feats = data
    text_only = Features(text=feats.text, profile=feats.profile)
    with pytest.raises(ConfigError, match=r"model\.params\.gamma_v weights the image view, but the features given "
                                          r"have no image features"):
        build(ds, text_only, gamma_t=0.2, gamma_v=0.3)
    # with the image features the same weights are taken as given
    model = build(ds, feats, gamma_t=0.2, gamma_v=0.3)
    assert torch.allclose(model.fusion.weights(), torch.tensor([0.5, 0.2, 0.3]))
    # and without any fixed gamma the text-only model still builds (the view is left out and reported)
    assert build(ds, text_only).summary["modalities_missing"] == ["image"]


def test_fixed_gammas_summing_to_one_within_the_configs_tolerance_build(data):
    """The config accepts γ_t + γ_v ≤ 1 + 1e-9, but γ_id = 1 − γ_t − γ_v then came out a hair below 0 and
    the fusion raised a bare ValueError from deep inside the constructor."""
    ds, feats = data
    model = build(ds, feats, gamma_t=0.5, gamma_v=0.5 + 5e-10)
    w = model.fusion.weights()
    assert (w >= 0).all() and w[0] == 0 and w.sum().item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- loaded model
def test_a_loaded_model_that_must_recompute_says_to_prepare_it(data, tmp_path):
    """A loaded model scores from its saved embeddings; switched to training mode and back (which drops
    them) it failed with ``AttributeError: 'RecGOAT' object has no attribute 'feat_profile'``. Now one clear
    RuntimeError, as the other feature models give; once prepared it scores exactly as the saved model."""
    ds, feats = data
    model = build(ds, feats)
    model.eval()
    expected = model.score(list(range(ds.n_users))).clone()
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert torch.equal(loaded.score(list(range(ds.n_users))), expected)
    loaded.train()  # weights unchanged: still the saved embeddings (they were dropped, session 15's audit)
    loaded.eval()
    assert torch.equal(loaded.score(list(range(ds.n_users))), expected)
    with torch.no_grad():  # other weights: the saved embeddings are stale and cannot be recomputed
        next(loaded.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match=r"^recgoat: call prepare\(dataset, features\) before training or scoring"):
        loaded.score([0])
    with torch.no_grad():
        next(loaded.parameters()).sub_(1.0)
    u, p, n = _batch(ds)
    with pytest.raises(RuntimeError, match="call prepare"):
        loaded.loss(u, p, n)
    loaded.prepare(ds, feats)
    assert torch.allclose(loaded.score(list(range(ds.n_users))), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------- alignment caps
@pytest.mark.parametrize("key", ["cl_max_points", "ot_max_points"])
def test_an_alignment_cap_of_one_point_is_refused(data, key):
    """With one point per batch there is no negative to contrast and nothing to transport: CMCL / OAT were
    silently 0 on every step while the summary reported them on."""
    ds, feats = data
    with pytest.raises(ConfigError, match=rf"model\.params\.{key}: .*greater than or equal to 2 \(got 1\)"):
        build(ds, feats, **{key: 1})
    terms = build(ds, feats, **{key: 2}).loss(*_batch(ds))
    assert terms["cmcl" if key == "cl_max_points" else "oat"] > 0


def test_summary_does_not_report_cmcl_when_no_term_can_act(data):
    """No item view (no item features) and the user term switched off (align_users false): CMCL is 0 on every
    step, but the summary (and ``recgoat train``'s printout) said "alignment: CMCL"."""
    ds, feats = data
    model = build(ds, Features(profile=feats.profile), align_users=False, lambda_ot=0.0)
    assert model.modalities == [] and model.use_profile
    assert model.loss(*_batch(ds))["cmcl"] == 0
    assert model.summary["cmcl"] is False
    # with the user term on it does act, and says so
    model = build(ds, Features(profile=feats.profile), lambda_ot=0.0)
    assert model.summary["cmcl"] is True and model.loss(*_batch(ds))["cmcl"] > 0
