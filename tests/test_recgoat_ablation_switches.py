"""RecGOAT's ablation switches: inert ones refused or noted, presets × ablations build, the summary says what is off.

RecGOAT audit (session 15): ablation switches that nothing reads are refused like every other inert setting,
wrong-shaped features at build time get the wording every feature model uses (not "was built with"), and the run
summary (and the CLI's lines) say what an ablation switched off. Tests marked "failed before its fix" pinned the
defect; the preset / ablation / benchmark builds guard what the refusals must leave alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recgoat.benchmark import load_config as load_benchmark_config
from recgoat.config import load_config, preset_params
from recgoat.errors import ConfigError, DataError
from recgoat.features.store import Features
from recgoat.models import Recommender
from recgoat.models.recgoat import ABLATIONS, RecGOATConfig, gamma_grid

from recgoat_helpers import PRESETS, build, full_config, small_problem

torch.set_num_threads(1)
CONFIGS = Path(__file__).parents[1] / "src/recgoat/configs"


@pytest.fixture(scope="module")
def data(ml_small):
    return small_problem(ml_small)



# ---------------------------------------------------------------------------------------------- 1. inert switches
INERT = [
    ({"gat_layers": 0, "item_graph": False}, r"item_graph=False: no graph attention layer runs \(gat_layers: 0\)"),
    ({"gat_layers": 0, "user_graph": False}, r"user_graph=False: no graph attention layer runs \(gat_layers: 0\)"),
    ({"use_profile": False, "user_graph": False}, r"user_graph=False: no user-user graph \(no profile branch\)"),
    ({"use_profile": False, "align_users": False}, r"align_users=False: no user view to align \(no profile branch\)"),
    ({"lambda_cl": 0, "align_users": False}, r"align_users=False: CMCL does not act \(lambda_cl: 0\)"),
    ({"modalities": [], "item_graph": False}, r"item_graph=False: no item-item graph \(no item view\)"),
    ({"modalities": [], "align_target": "id", "lambda_ot": 0},
     r"align_target='id': only the user-profile view is aligned \(no item view\)"),
    ({"n_layers": 0, "rating_attention": False}, r"rating_attention=False: no user-item propagation \(n_layers: 0\)"),
    ({"modalities": [], "train_item_subset": False}, r"train_item_subset=False: no item view to project"),
]


@pytest.mark.parametrize("cfg, why", INERT)
def test_an_ablation_switch_that_nothing_reads_is_refused_naming_it(data, cfg, why):
    """Failed before its fix: each built without a word, as though the switch changed the model."""
    ds, feats = data
    with pytest.raises(ConfigError, match=rf"^recgoat: model\.params: set, but nothing reads them: {why}; unset"):
        build(ds, feats, **cfg)
    overrides = [f"model.params.{k}={v}" for k, v in cfg.items()]
    with pytest.raises(ConfigError, match=rf"^model\.params: set, but nothing reads them: {why}"):
        load_config(None, ["model.name=recgoat", *overrides])


@pytest.mark.parametrize("cfg, why", INERT)
def test_a_saved_model_with_an_inert_switch_loads_and_says_so(data, cfg, why):
    """A saved model's full config is noted, not refused (it must still load); failed before its fix: no note."""
    ds, feats = data
    model = build(ds, feats, **full_config(**cfg))
    assert "settings that do nothing here: " in model.summary["note"]
    assert why.replace("\\", "") in model.summary["note"]


def test_a_switch_the_features_leave_with_nothing_to_do_is_noted(data):
    """The features, not the config, leave no profile branch: reported (failed before its fix: no note)."""
    ds, feats = data
    model = build(ds, Features(text=feats.text), user_graph=False)
    assert "user_graph=False: no user-user graph (no profile branch)" in model.summary["note"]


@pytest.mark.parametrize("cfg", [
    {"item_graph": False}, {"user_graph": False}, {"align_users": False}, {"align_target": "id"},
    {"modalities": [], "align_detach_target": True},  # it also stops the user CMCL's gradient
    {"use_profile": False, "align_target": "id"}, {"lambda_cl": 0.0, "align_target": "id"},
    {"item_graph": False, "user_graph": False}, {"modalities": ["text"], "item_graph": False},
])
def test_switches_that_do_act_are_neither_refused_nor_noted(data, cfg):
    ds, feats = data
    assert "note" not in build(ds, feats, **cfg).summary


@pytest.mark.parametrize("preset", [None, *PRESETS])
def test_every_preset_with_every_ablation_and_gamma_point_builds(data, preset):
    """What the refusals must leave alone, built (not only validated): each packaged preset (and none) under each
    §7 ablation and γ grid point, composed as ``recgoat train --set`` composes them."""
    ds, feats = data
    for override in [*ABLATIONS.values(), *gamma_grid()]:
        sets = [f"model.params.{k}={v}" for k, v in override.items()]
        cfg = load_config(None, ["model.name=recgoat", *([f"model.preset={preset}"] if preset else []), *sets])
        model = build(ds, feats, **{**cfg.model.params, "embedding_dim": 8})
        assert "set, but nothing" not in model.summary.get("note", ""), (preset, override)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("benchmark-*.yaml")), ids=lambda p: p.name)
def test_every_benchmark_recgoat_entry_builds(data, path):
    ds, feats = data
    specs = [s for s in load_benchmark_config(path).models if s.name == "recgoat"]
    for spec in specs:
        build(ds, feats, **{**(spec.params or {}), "embedding_dim": 8})


def test_ablations_on_a_saved_preset_dump_build(data):
    """benchmarks/recgoat_ablations.py composes ``load_preset(...).model_dump()`` with each ablation."""
    ds, feats = data
    for preset in PRESETS:
        base = {**RecGOATConfig(**preset_params("recgoat", preset)).model_dump(), "embedding_dim": 8,
                "projection_dtype": "float32"}
        for override in ABLATIONS.values():
            build(ds, feats, **{**base, **override})


# ---------------------------------------------------------------------------------------------- 2. feature shapes
def test_wrong_rows_at_build_use_the_wording_of_every_feature_model(data):
    """Failed before its fix: "RecGOAT was built with text features of shape (917, 917); the features given have
    (10, 917)": no model had been built yet, and (917, 917) was neither shape."""
    ds, feats = data
    n, u = ds.n_items, ds.n_users
    with pytest.raises(ConfigError, match=rf"^RecGOAT: text features have shape \(10, {n}\), expected \({n}, D\): "
                                          r"features were made for another dataset$"):
        build(ds, Features(text=np.ascontiguousarray(feats.text.T)))
    with pytest.raises(ConfigError, match=rf"^RecGOAT: image features have shape \({n - 1}, 9\), expected \({n}, D\)"):
        build(ds, Features(text=feats.text, image=feats.image[1:]))
    with pytest.raises(ConfigError, match=rf"^RecGOAT: profile features have shape \({u - 1}, 10\), "
                                          rf"expected \({u}, D\)"):
        build(ds, Features(text=feats.text, profile=feats.profile[1:]))


def test_a_built_or_loaded_model_given_other_features_still_says_what_it_was_built_with(data, tmp_path):
    ds, feats = data
    model = build(ds, feats)
    with pytest.raises(DataError, match=rf"^RecGOAT was built with text features of shape \({ds.n_items}, 10\); "
                                        rf"the features given have \({ds.n_items - 1}, 10\)$"):
        model.prepare(ds, Features(text=feats.text[1:], image=feats.image, profile=feats.profile))
    model.eval()
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    with pytest.raises(DataError, match=r"built with text features of shape .*; the features given have"):
        loaded.prepare(ds, Features(text=feats.text[1:], image=feats.image, profile=feats.profile))
    # failed before its fix: "... the features given have None"
    with pytest.raises(DataError, match=r"^RecGOAT was built with text features of shape \(\d+, 10\), but the "
                                        r"features given have no text features$"):
        loaded.prepare(ds, Features(profile=feats.profile))
    with pytest.raises(ConfigError, match=r"^RecGOAT needs item features \(text, image\) and user profile features "
                                          r"but none were given: let `recgoat train --features auto` .* or encode them "
                                          r"with `recgoat encode all <dataset>`"):
        loaded.prepare(ds, None)
    loaded.prepare(ds, feats)  # its own features still do


# ---------------------------------------------------------------------------------------------- 3. run summary
@pytest.mark.parametrize("cfg, item, user", [
    ({}, "on", "on"),
    ({"item_graph": False}, "off (item_graph: false)", "on"),
    ({"user_graph": False}, "on", "off (user_graph: false)"),
    ({"gat_layers": 0}, "off (gat_layers: 0)", "off (gat_layers: 0)"),
    (ABLATIONS["id_only"], "off (no item view)", "off (no profile branch)"),
])
def test_the_summary_says_which_knn_graphs_an_ablation_switched_off(data, cfg, item, user):
    """Failed before its fix: only the absent ``*_edges`` keys told an ablated run from a full one."""
    ds, feats = data
    s = build(ds, feats, **cfg).summary
    assert (s["item_graphs"], s["user_graph"]) == (item, user)
    assert ("item_graph_text_edges" in s) == (item == "on") and ("user_graph_edges" in s) == (user == "on")


def test_the_summary_tells_fixed_gammas_from_learned_ones(data):
    """Failed before its fix: a γ grid point reported ``fusion: simplex, gamma: {...}`` as learned weights do."""
    ds, feats = data
    fixed = build(ds, feats, gamma_t=0.2, gamma_v=0.3).summary
    assert fixed["fusion"] == "simplex" and fixed["gamma_fixed"] is True
    assert fixed["gamma"] == {"id": 0.5, "text": 0.2, "image": 0.3}  # before any evaluation
    learned = build(ds, feats).summary
    assert learned["fusion"] == "simplex" and learned["gamma_fixed"] is False
    assert "gamma_fixed" not in build(ds, feats, fusion="concat").summary


def test_cli_summary_lines_show_what_was_switched_off(data):
    from recgoat.cli import _summary_lines

    ds, feats = data
    lines = _summary_lines(build(ds, feats, item_graph=False, gamma_t=0.2, gamma_v=0.3).summary)
    assert "kNN graph attention: item-item off (item_graph: false); user-user on" in lines
    assert any(line.startswith("fusion: simplex with fixed weights (id 0.5, text 0.2, image 0.3); alignment: ")
               for line in lines), lines
    lines = _summary_lines(build(ds, feats, gat_layers=0).summary)
    assert "kNN graph attention: item-item off (gat_layers: 0); user-user off (gat_layers: 0)" in lines
