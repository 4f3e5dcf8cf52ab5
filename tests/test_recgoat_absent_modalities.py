"""RecGOAT with modalities absent: ablation switches set by config alone, absent modalities and what the run summary
says about them, raw (unnormalised) features handed over as views, and save/load of every variant. The tests
marked "failed before its fix" pinned a bug; the others pin behaviour the pass checked and found right."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat.errors import ConfigError
from recgoat.features.store import Features
from recgoat.models import Recommender
from recgoat.models.recgoat import ABLATIONS, RecGOAT

from conftest import subset_users
from recgoat_helpers import build, random_features

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(ml_small):
    ds = subset_users(ml_small, 30)
    return ds, random_features(ds, 1, text=10, image=9, profile=10, missing_images=0.2)


def _batch(ds, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m = ds.csr("train").tocoo()
    rng = np.random.default_rng(seed)
    idx = rng.choice(m.nnz, n, replace=False)
    return (torch.from_numpy(m.row[idx].astype(np.int64)), torch.from_numpy(m.col[idx].astype(np.int64)),
            torch.from_numpy(rng.integers(0, ds.n_items, n)))


def _train(model: RecGOAT, ds, steps: int = 3) -> None:
    """A few Adam steps, so that Δ_m, the fusion logits and the attention weights move off their initial values."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for s in range(steps):
        torch.manual_seed(s)
        loss = model.loss(*_batch(ds, seed=s))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


# ---------------------------------------------------------------------------------------------- raw features
def test_unnormalised_features_given_as_views_are_copied_into_the_model(data):
    """Failed before its fix. With ``feature_norm: none`` the checked matrix went to ``torch.from_numpy`` as
    given: a reversed view (``x[::-1]``) raised torch's bare "At least one stride ... is negative" ValueError, and a
    float32 array became a buffer sharing the caller's memory, so editing that array afterwards changed the
    scores of a model that had not been retrained (behind the eval-mode cache, once that was dropped)."""
    ds, feats = data
    views = Features(text=feats.text[::-1], image=feats.image[::-1], image_mask=feats.image_mask[::-1],
                     profile=feats.profile[::-1])
    assert views.text.strides[0] < 0 and views.profile.strides[0] < 0
    a = build(ds, views, feature_norm="none")
    b = build(ds, Features(text=views.text.copy(), image=views.image.copy(), image_mask=views.image_mask.copy(),
                            profile=views.profile.copy()), feature_norm="none")
    users = list(range(ds.n_users))
    assert torch.equal(a.score(users), b.score(users))
    # float64 and column-strided views give the same model as their float32 contiguous copies
    strided = np.zeros((ds.n_items, 20), np.float64)
    strided[:, ::2] = feats.text
    c = build(ds, Features(text=strided[:, ::2], image=feats.image, image_mask=feats.image_mask,
                            profile=feats.profile), feature_norm="none")
    d = build(ds, feats, feature_norm="none")
    assert torch.equal(c.score(users), d.score(users))
    # the caller's array is not the model's buffer
    text = feats.text.copy()
    e = build(ds, Features(text=text, image=feats.image, image_mask=feats.image_mask, profile=feats.profile),
               feature_norm="none")
    before = e.score(users).clone()
    text *= 3.0
    e.train()
    e.eval()
    assert torch.equal(e.score(users), before)


# ---------------------------------------------------------------------------------------------- contradictions
@pytest.mark.parametrize("cfg, match", [
    ({"modalities": [], "lambda_ot": 0.5},
     r"lambda_ot=0\.5 asks for OAT, which aligns item views, but modalities is \[\]"),
    ({"modalities": [], "fusion": "concat"}, r"fusion: concat fuses item views, but modalities is \[\]"),
    ({"modalities": [], "fusion": "sum", "lambda_ot": 0.0}, r"fusion: sum fuses item views"),
])
def test_oat_or_a_naive_fusion_asked_for_with_no_modality_is_refused(data, cfg, match):
    """Failed before its fix: OAT with a weight of its own, or a concat / sum fusion, on a config that lists no
    modality built a model in which neither can act, silently (the summary said ``oat: False``, ``fusion:
    id_only``): an ablation run under a label it did not train."""
    ds, feats = data
    with pytest.raises(ConfigError, match=rf"^recgoat: model\.params: .*{match}"):
        build(ds, feats, **cfg)


def test_no_modality_with_the_default_alignment_weights_still_builds_and_reloads(data, tmp_path):
    """What the refusal above leaves alone: ``{modalities: []}`` (docs' "profile branch only": λ_ot keeps its
    inert default and the summary says OAT off), the ID-only ablation, and the reload of such a model (whose
    saved config sets every field)."""
    ds, feats = data
    model = build(ds, feats, modalities=[])
    assert model.summary["oat"] is False and model.summary["fusion"] == "id_only" and model.summary["cmcl"] is True
    assert model.loss(*_batch(ds))["oat"] == 0
    model.eval()
    expected = model.score([0, 1]).clone()
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    loaded.prepare(ds, feats)
    assert torch.allclose(loaded.score([0, 1]), expected, atol=1e-6)
    assert build(ds, feats, **ABLATIONS["id_only"]).summary["oat"] is False


# ---------------------------------------------------------------------------------------------- run summary
def test_summary_names_the_encoders_of_the_views_used_and_where_the_profiles_came_from(data):
    """Failed before its fix: the summary listed the encoder of every manifest in the feature folder, so a
    text-only run without profiles reported an image encoder and a profile encoder it never read; and nothing
    in a run's output said the profiles were template-made (METHOD.md §1: labelled so in every output)."""
    ds, feats = data
    mans = {"text": {"encoder": "enc-t"}, "image": {"encoder": "enc-v"},
            "profile": {"encoder": "enc-p", "profile_backend": "template", "label": "(template-made profile, no LLM)"}}
    full = Features(text=feats.text, image=feats.image, image_mask=feats.image_mask, profile=feats.profile,
                    manifests=mans)
    model = build(ds, full, modalities=["text"], use_profile=False)
    assert model.summary["encoders"] == {"text": "enc-t"} and "profile_source" not in model.summary
    model = build(ds, full)
    assert model.summary["encoders"] == {"text": "enc-t", "image": "enc-v", "profile": "enc-p"}
    assert model.summary["profile_source"] == "(template-made profile, no LLM)"
    mans_llm = {**mans, "profile": {"encoder": "enc-p", "profile_backend": "openai", "llm_model": "QwQ-32B",
                                    "label": None}}
    model = build(ds, Features(text=feats.text, profile=feats.profile, manifests=mans_llm))
    assert model.summary["encoders"] == {"text": "enc-t", "profile": "enc-p"}
    assert model.summary["profile_source"] == "openai:QwQ-32B"


def test_an_image_view_without_images_is_reported_and_not_claimed_aligned(data):
    """Failed before its fix: image-only on features whose every image is missing (each a zero row plus the
    mask, METHOD.md §1) trained an all-zero image view; OAT was 0 on every step while the summary said
    ``oat: sinkhorn divergence``, and nothing said the view was empty. Prepared again with real images, the
    model says OAT acts again and drops the note."""
    ds, feats = data
    # modalities left at its default (named, an empty view is refused: test_recgoat_named_modalities.py), and no
    # text: the image view alone
    none = Features(image=np.zeros_like(feats.image), image_mask=np.zeros(ds.n_items, bool), profile=feats.profile)
    model = build(ds, none)
    terms = model.loss(*_batch(ds))
    assert terms["oat"] == 0 and model.summary["oat"] is False
    assert model.summary["cmcl"] is True and terms["cmcl"] > 0  # the profile–ID term still acts
    assert "0 of" in model.summary["note"] and "image view is zero" in model.summary["note"]
    assert model.summary["empty_views"] == ["image"]
    from recgoat.cli import _summary_lines

    assert "feature views used: image (empty: no item has one), profile" in _summary_lines(model.summary)
    with pytest.warns(UserWarning, match="no item has any of them"):
        assert build(ds, none, use_profile=False).summary["cmcl"] is False
    model.prepare(ds, feats)
    assert model.summary["oat"] == "sinkhorn divergence"
    assert model.summary["note"] == "features absent for text: the model runs without them"
    assert "empty_views" not in model.summary
    assert model.loss(*_batch(ds))["oat"] > 0
    # the note about absent features survives a prepare that adds its own
    text_less = Features(image=none.image, image_mask=none.image_mask, profile=feats.profile)
    note = build(ds, text_less).summary["note"]
    assert note.startswith("features absent for text") and "image view is zero" in note


# ---------------------------------------------------------------------------------------------- save / load
VARIANTS = {**{k: v for k, v in ABLATIONS.items() if k in ("id_only", "concat", "sum", "text_only", "image_only",
                                                           "no_profile", "no_item_graph", "full")},
            "fixed_gamma": {"gamma_t": 0.2, "gamma_v": 0.3},
            "align_id": {"align_target": "id"},
            "dropout": {"view_dropout": 0.3, "gat_dropout": 0.2},
            "pyg_two_layers": {"gat_impl": "pyg", "gat_layers": 2, "gat_concat": False}}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_round_trips_with_its_adaptive_maps_and_fusion_weights(data, tmp_path, name):
    """Checked, no bug: a trained variant (Δ_m, fusion logits / fixed γ, attention moved off their initial
    values) scores in eval mode deterministically (dropout off, the cache equal to a fresh pass), its reload
    scores from the saved embeddings bit for bit, and once prepared recomputes them from the saved weights."""
    ds, feats = data
    model = build(ds, feats, **VARIANTS[name])
    _train(model, ds)
    users = list(range(ds.n_users))
    cached = model.score(users).clone()
    model._cached = None
    assert torch.equal(model.score(users), cached)
    state = model.state_dict()
    for key in [k for k in state if k.startswith("maps.") or k == "fusion.logits"]:
        assert state[key].abs().sum() > 0, key
    model.save(tmp_path / name)
    loaded = Recommender.load(tmp_path / name)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    assert torch.equal(loaded.score(users), cached)
    loaded.prepare(ds, feats)
    assert torch.allclose(loaded.score(users), cached, atol=1e-5)
    if "gamma_t" in VARIANTS[name]:
        assert loaded.summary["gamma"] == {"id": 0.5, "text": 0.2, "image": 0.3}
