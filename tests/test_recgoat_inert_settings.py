"""RecGOAT settings that nothing reads: a value set (other than its default) for a component the same config
switches off is refused with one error naming the keys; one left in place by a packaged preset under a §7
ablation, one the features leave with nothing to do, and one a saved model's full config carries are reported
in the run summary instead. Each test marked "failed before its fix" pinned a silently inert setting."""
from __future__ import annotations

import pytest
import torch

from recgoat.config import load_config, preset_params
from recgoat.datasets import PrepareConfig, prepare
from recgoat.errors import ConfigError
from recgoat.features.store import Features
from recgoat.models import Recommender
from recgoat.models.recgoat import ABLATIONS, RecGOATConfig, gamma_grid

from recgoat_helpers import PRESETS, build, full_config, small_problem

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(ml_small):
    return small_problem(ml_small)



# ---------------------------------------------------------------------------------------------- refused
@pytest.mark.parametrize("cfg, keys, why", [
    ({"gat_layers": 0, "gat_heads": 4, "gat_dropout": 0.1}, "gat_heads=4, gat_dropout=0.1", r"gat_layers: 0"),
    ({"gat_layers": 0, "gat_v2": True, "gat_impl": "pyg", "gat_concat": False},
     "gat_v2=True, gat_impl='pyg', gat_concat=False", r"gat_layers: 0"),
    ({"item_graph": False, "use_profile": False, "gat_heads": 4}, "gat_heads=4", "no item-item or user-user graph"),
    ({"use_profile": False, "user_graph_symmetric": True}, "user_graph_symmetric=True", r"no profile branch"),
    ({"user_graph": False, "user_graph_symmetric": True}, "user_graph_symmetric=True", r"user_graph: false"),
    ({"lambda_ot": 0.0, "ot_eps": 0.1, "ot_iters": 20, "ot_max_points": 64, "ot_debias": False,
      "ot_normalize": False},
     "ot_eps=0.1, ot_iters=20, ot_max_points=64, ot_debias=False, ot_normalize=False", r"lambda_ot: 0"),
    ({"lambda_cl": 0.0, "cl_max_points": 64, "tau": 0.5}, "tau=0.5, cl_max_points=64", r"lambda_cl: 0"),
    ({"modalities": [], "use_profile": False, "lambda_ot": 0.0, "lambda_cl": 0.05}, "lambda_cl=0.05",
     "nothing to contrast"),
    ({"modalities": [], "align_users": False, "lambda_ot": 0.0, "lambda_cl": 0.05}, "lambda_cl=0.05",
     "nothing to contrast"),
    ({"lambda_cl": 0.0, "lambda_ot": 0.0, "align_target": "id"}, "align_target='id'", "no alignment term acts"),
    ({**ABLATIONS["id_only"], "feature_reg": 1e-3}, "feature_reg=0.001", "no feature branch"),
])
def test_a_setting_the_same_config_switches_off_is_refused_naming_it(data, cfg, keys, why):
    """Failed before its fix: each of these trained without a word, as though the setting did something."""
    ds, feats = data
    with pytest.raises(ConfigError, match=rf"^recgoat: model\.params: set, but nothing reads them: {keys}: .*{why}"):
        build(ds, feats, **cfg)
    overrides = [f"model.params.{k}={v}" for k, v in cfg.items()]
    with pytest.raises(ConfigError, match=rf"^model\.params: set, but nothing reads them: {keys}: "):
        load_config(None, ["model.name=recgoat", *overrides])


def test_no_gat_layer_names_gat_heads_rather_than_asking_for_averaged_heads():
    """Failed before its fix: gat_layers 0 with gat_heads 3 at d 64 asked for ``gat_concat: false``, which the
    model would then have ignored too."""
    with pytest.raises(ValueError, match=r"gat_heads=3: no graph attention layer runs \(gat_layers: 0\)"):
        RecGOATConfig(gat_layers=0, gat_heads=3)


def test_a_fixed_gamma_for_a_view_the_features_lack_is_refused_even_when_no_view_is_left(data):
    """Failed before its fix: with no item view at all there is no fusion, and γ_t was dropped without a word
    (every point of a γ grid then trained the same model); with one view left it was already refused."""
    ds, feats = data
    no_text = Features(profile=feats.profile)
    with pytest.raises(ConfigError, match=r"model\.params\.gamma_t weights the text view, but the features given "
                                          r"have no text features"):
        build(ds, no_text, gamma_t=0.3)
    # modalities named itself asks for the view: that is the refusal then (the constructor's, before the gammas)
    with pytest.raises(ConfigError, match=r"model\.params\.modalities names \[text\], but the features given .* "
                                          r"have no text features"):
        build(ds, no_text, modalities=["text"], gamma_t=0.3)
    with pytest.raises(ConfigError, match=r"model\.params\.gamma_t, model\.params\.gamma_v weights the text and image"):
        build(ds, None, gamma_t=0.3, gamma_v=0.2)


# ---------------------------------------------------------------------------------------------- reported
@pytest.mark.parametrize("preset, ablation, note", [
    ("sports", "no_item_graph", "item_k=30: no item-item graph (item_graph: false)"),
    ("baby", "no_profile", "user_k=20: no user-user graph (no profile branch)"),
    ("ml100k", "no_alignment", "align_detach_target=True: no alignment term acts"),
    ("ml100k", "id_only", "view_dropout=0.3: no feature branch (no item view, no profile branch)"),
])
def test_a_preset_value_left_in_place_under_an_ablation_is_reported(data, preset, ablation, note):
    """Failed before its fix: the summary did not say that the preset's value did nothing under the ablation.
    Refusing it would stop the paper's ablations running on the packaged presets."""
    ds, feats = data
    params = {**preset_params("recgoat", preset), **ABLATIONS[ablation], "embedding_dim": 8}
    model = build(ds, feats, **params)
    assert "settings that do nothing here: " in model.summary["note"] and note in model.summary["note"]


def test_every_preset_with_every_ablation_and_gamma_point_still_validates():
    """What the refusals must leave alone: each packaged preset (and none) with each §7 ablation or γ grid point,
    as a benchmark or ``recgoat train`` composes them."""
    for preset in (None, *PRESETS):
        for override in [*ABLATIONS.values(), *gamma_grid()]:
            sets = [f"model.params.{k}={v}" for k, v in override.items()]
            cfg = load_config(None, ["model.name=recgoat", *([f"model.preset={preset}"] if preset else []), *sets])
            RecGOATConfig(**cfg.model.params)


def test_a_saved_model_with_an_inert_setting_still_loads_and_says_so(data, tmp_path):
    """A saved model's config carries every field, so a refusal added later must not stop it loading: a full
    config is reported, not refused (failed before its fix: the summary said nothing about gat_heads)."""
    ds, feats = data
    model = build(ds, feats, **full_config(gat_layers=0, gat_heads=4, lambda_ot=0.0, ot_eps=0.1))
    note = model.summary["note"]
    assert "gat_heads=4: no graph attention layer runs (gat_layers: 0)" in note
    assert "ot_eps=0.1: OAT does not act (lambda_ot: 0)" in note
    model.eval()
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.config.gat_heads == 4 and loaded.summary["note"] == note


def test_a_saved_fixed_gamma_without_item_views_is_reported_not_refused(data):
    """The full-config counterpart of the gamma refusal: a model saved with it must load (failed before its
    fix: nothing said γ_t did nothing)."""
    ds, feats = data
    model = build(ds, Features(profile=feats.profile), **full_config(modalities=["text"], gamma_t=0.3, gamma_v=None))
    assert model.fusion is None and "gamma_t=0.3: no text view" in model.summary["note"]
    model = build(ds, Features(profile=feats.profile), **full_config(gamma_t=0.3, gamma_v=0.2))
    assert "gamma_t=0.3: no text view; gamma_v=0.2: no image view" in model.summary["note"]


def test_settings_the_features_leave_with_nothing_to_do_are_reported(data):
    """Failed before its fix: with no item features, item_k (and every GAT setting but the profile's) did nothing,
    and only "features absent" was said, not that the config's item_k was inert."""
    ds, feats = data
    model = build(ds, Features(profile=feats.profile), item_k=5)
    assert "features absent for text, image" in model.summary["note"]
    assert "item_k=5: no item-item graph (no item view)" in model.summary["note"]


def test_rating_attention_without_ratings_is_reported_as_endpoint_attention(ml_small, data):
    """Failed before its fix: on data without ratings the summary said rating attention was on (True), though
    every edge's rating is 0 and the attention weighs each edge from its two endpoint embeddings alone."""
    ds, feats = data
    assert build(ds, feats).summary["rating_attention"] is True
    df = ml_small.interactions
    keep = df[df["user"] < 30].copy()
    keep["user"] = ml_small.user_ids[keep["user"].to_numpy()]
    keep["item"] = ml_small.item_ids[keep["item"].to_numpy()]
    keep = keep.drop(columns=["split", "rating"], errors="ignore")
    implicit = prepare("implicit", keep, ml_small.items, ml_small.text_fields, PrepareConfig(k_core=2, seed=2026),
                       ml_small.info)
    assert "rating" not in implicit.split_frame("train").columns
    model = build(implicit, None, modalities=[], use_profile=False)
    assert model.summary["rating_attention"] == "endpoints only (no ratings)"
    assert "rating_attention: the training split has no ratings" in model.summary["note"]
    off = build(implicit, None, modalities=[], use_profile=False, rating_attention=False)
    assert off.summary["rating_attention"] is False and "note" not in off.summary


def test_rating_attention_with_no_propagation_layer_is_reported_off(data):
    """Failed before its fix: with ``n_layers: 0`` the edge attention's output is never read, yet the summary
    said it was on."""
    ds, feats = data
    model = build(ds, feats, n_layers=0)
    assert model.summary["rating_attention"] is False
    assert "rating_attention=True: no user-item propagation (n_layers: 0)" in model.summary["note"]


def test_defaults_alone_add_no_note(data):
    """The paper defaults, and each ablation on them, read every setting they carry: no inert-settings note."""
    ds, feats = data
    for name, override in ABLATIONS.items():
        assert "note" not in build(ds, feats, **override).summary, name
