"""RecGOAT's ``modalities`` named by the user is a request: a view named there that the features lack (or that no
item has) is refused with one error naming the view, the dataset and what exists; left at its default (and the
packaged presets leave it so) the model falls back to the views that exist and notes the others. ``use_profile:
true`` given is a request likewise. Both are refused from the kinds of features alone (the constructor), so the
benchmark's preflight lists them before any cell trains.

Failed before its fix: ``recgoat train --set model.params.modalities=[image]`` on a text-only catalogue trained
the ID view and the profiles, printed ``feature views used: profile`` and ``fusion: id_only``, and its results
read as an image-only ablation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recgoat.benchmark import run_benchmark
from recgoat.benchmark.cells import plan_cells
from recgoat.benchmark.checks import pair_problems
from recgoat.cli import app
from recgoat.config import preset_params
from recgoat.datasets import load
from recgoat.errors import ConfigError
from recgoat.features import Features, import_mmrec
from recgoat.models import Recommender
from recgoat.models.recgoat import RecGOAT
from test_benchmark_preflight_features import config, no_encoding, write_data  # noqa: F401 (a fixture)
from test_cli_user_journey import _catalogue
from test_features_store_validation import mmrec_mapping

from recgoat_helpers import full_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A catalogue without images, with text features (imported, so no encoder runs) and random user profiles."""
    tmp = tmp_path_factory.mktemp("named")
    root = _catalogue(tmp / "shop")
    ds = load(str(root))
    rng = np.random.default_rng(0)
    src = tmp / "mmrec"
    src.mkdir()
    np.save(src / "text_feat.npy", rng.normal(size=(ds.n_items, 6)).astype(np.float32))
    mmrec_mapping(src, ds)
    folder = import_mmrec(ds, src, tmp / "feats")
    text = np.load(folder / "text.npy")
    profile = rng.normal(size=(ds.n_users, 5)).astype(np.float32)
    return root, folder, ds, Features(text=text, profile=profile)


def test_a_named_modality_the_features_lack_is_refused(shop):
    _, _, ds, feats = shop
    with pytest.raises(ConfigError) as e:
        RecGOAT.build(ds, {"embedding_dim": 8, "modalities": ["image"]}, feats)
    msg = str(e.value)
    assert msg.startswith("recgoat: model.params.modalities names [image], but the features given for dataset "
                          "'shop' have no image features; usable there: text and user profiles, and the dataset "
                          "has no images. Drop image from modalities"), msg
    with pytest.raises(ConfigError, match=r"names \[text, image\], .* have no image features"):
        RecGOAT.build(ds, {"embedding_dim": 8, "modalities": ["text", "image"]}, feats)
    with pytest.raises(ConfigError, match=r"names \[text\], but no features were given for dataset 'shop'"):
        RecGOAT.build(ds, {"embedding_dim": 8, "modalities": ["text"]}, None)


def test_a_named_modality_no_item_has_is_refused(shop):
    _, _, ds, feats = shop
    empty = Features(text=feats.text, image=np.zeros((ds.n_items, 4), np.float32),
                     image_mask=np.zeros(ds.n_items, bool))
    with pytest.raises(ConfigError, match=r"have image features that no item has \(every row zero, no image in "
                                          r"image_mask\); usable there: text"):
        RecGOAT.build(ds, {"embedding_dim": 8, "modalities": ["text", "image"]}, empty)
    assert RecGOAT.build(ds, {"embedding_dim": 8, "modalities": ["text"]}, empty).modalities == ["text"]


def test_defaults_and_packaged_presets_fall_back_with_a_note(shop):
    _, _, ds, feats = shop
    model = RecGOAT.build(ds, {"embedding_dim": 8}, feats)
    assert model.modalities == ["text"] and model.summary["modalities_missing"] == ["image"]
    assert model.summary["note"].startswith("features absent for image: the model runs without them")
    for preset in ("baby", "sports", "electronics", "ml100k"):  # the authors' text + image, left at the default
        assert "modalities" not in preset_params("recgoat", preset)
        params = {**preset_params("recgoat", preset), "embedding_dim": 8}
        assert RecGOAT.build(ds, params, feats).modalities == ["text"]


def test_a_saved_model_loads_and_prepares_as_before(shop, tmp_path):
    """A saved config sets every field, modalities too: it is not a request made now (it was checked when the
    model was trained, and names the views asked for then, absent ones included)."""
    _, _, ds, feats = shop
    model = RecGOAT.build(ds, full_config(), feats)  # every field given: as a saved model records it
    assert model.modalities == ["text"]
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    loaded.prepare(ds, feats)
    assert loaded.modalities == ["text"]


def test_train_refuses_the_named_modality_in_one_line(shop, tmp_path):
    root, folder, _, _ = shop
    args = ["train", "--dataset", str(root), "--model", "recgoat", "--features", str(folder), "--epochs", "1",
            "--set", "model.params.embedding_dim=8"]
    res = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path / "a"), "--set", "model.params.modalities=[image]"])
    assert res.exit_code == 1
    assert "model.params.modalities names [image], but the features given for dataset" in str(res.exception)
    assert not (tmp_path / "a" / "result.json").exists()
    ok = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path / "b"), "--set", "model.preset=baby"])
    assert ok.exit_code == 0, ok.output
    assert "feature views used: text" in ok.output and "note: features absent for image" in ok.output


def text_only(tmp_path):
    """A dataset with item text, and a feature folder holding its text.npy alone (whose header is all the
    preflight reads)."""
    texty = write_data(tmp_path / "texty", {"title": [f"t{i}" for i in range(30)]})
    folder = tmp_path / "feats"
    folder.mkdir()
    np.save(folder / "text.npy", np.zeros((30, 6), np.float32))
    return texty, folder


def test_benchmark_preflight_refuses_a_named_modality_the_features_lack(tmp_path, trained_runs, no_encoding):
    """The refusal is judged from the kinds of features alone (the constructor's), so the benchmark's preflight,
    which builds each model on stand-ins of the kinds a dataset has, lists it before anything trains. Failed before
    its fix: refused in prepare only, mostpop trained and the recgoat cell failed after it."""
    texty, folder = text_only(tmp_path)
    datasets = [{"name": str(texty), "features": "auto"}, {"name": str(texty), "label": "given",
                                                             "features": str(folder)}]
    out = tmp_path / "b"
    with pytest.raises(ConfigError) as e:
        run_benchmark(config(datasets, out, ["mostpop", "recgoat"], ("models.recgoat.params.modalities=[image]",)))
    msg = str(e.value)
    assert msg.startswith("2 (dataset, model) pairs cannot run, so nothing was trained: dataset texty: model "
                          "'recgoat' cannot be built: recgoat: model.params.modalities names [image], but the "
                          "features given have no image features; usable there: text and user profiles. Drop image "
                          "from modalities"), msg
    assert "(`features: auto` encodes text and profile for it); dataset given: model 'recgoat' cannot be built: " \
           "recgoat: model.params.modalities names [image], but the features given have no image features; usable " \
           "there: text. Drop image" in msg
    assert msg.endswith(f"(its feature folder {folder} holds text)")
    assert trained_runs == [] and not out.exists()
    # a view the features have passes: only the one asked for and absent is refused
    ok = config(datasets, out, ["mostpop", "recgoat"], ("models.recgoat.params.modalities=[text]",))
    assert pair_problems(ok, plan_cells(ok), {}) == []


# ---------------------------------------------------------------------------------------------- use_profile: true
def test_use_profile_given_true_without_profiles_is_refused(shop):
    """``use_profile: true`` given is a request as ``modalities`` is. Failed before its fix: on features without
    user profiles the model trained without the profile branch, with a note only, and read as a run with it."""
    _, _, ds, feats = shop
    no_profile = Features(text=feats.text)
    with pytest.raises(ConfigError) as e:
        RecGOAT.build(ds, {"embedding_dim": 8, "use_profile": True}, no_profile)
    assert str(e.value) == (
        "recgoat: model.params.use_profile is true, but the features given for dataset 'shop' have no user "
        "profiles; usable there: text, and the dataset has no item text (profiles are written from it). Set "
        "use_profile: false, or give user profiles (`recgoat encode users "
        "<dataset>` writes them into the feature folder, or `--features auto` (`features: auto` in a config file) "
        "encodes them with the rest); left unset (its default, which the packaged presets keep), use_profile takes "
        "the profiles the features have and notes their absence")
    # both requests unmet: one error naming both
    with pytest.raises(ConfigError, match=r"^recgoat: model\.params\.modalities names \[image\] and model\.params\."
                                          r"use_profile is true, but the features given for dataset 'shop' have no "
                                          r"image features and no user profiles; usable there: text, and the dataset "
                                          r"has no images and no item text \(profiles are written from it\)\. Drop "
                                          r"image from modalities.*\. Set use_profile: false"):
        RecGOAT.build(ds, {"embedding_dim": 8, "modalities": ["image"], "use_profile": True}, no_profile)
    with pytest.raises(ConfigError, match=r"use_profile is true, but no features were given for dataset 'shop', and "
                                          r"the dataset has no item text"):
        RecGOAT.build(ds, {"embedding_dim": 8, "modalities": [], "use_profile": True}, None)
    # with profiles it is what it asks for
    assert RecGOAT.build(ds, {"embedding_dim": 8, "use_profile": True}, feats).use_profile


def test_use_profile_left_unset_or_from_a_preset_falls_back_with_a_note(shop):
    _, _, ds, feats = shop
    no_profile = Features(text=feats.text)
    model = RecGOAT.build(ds, {"embedding_dim": 8}, no_profile)
    assert not model.use_profile and model.summary["profile_missing"]
    assert model.summary["note"].startswith("features absent for image, profile: the model runs without them")
    assert not RecGOAT.build(ds, {"embedding_dim": 8, "use_profile": False}, no_profile).use_profile
    for preset in ("baby", "sports", "electronics"):  # the authors' profile branch, left at the default
        assert "use_profile" not in preset_params("recgoat", preset)
        assert not RecGOAT.build(ds, {**preset_params("recgoat", preset), "embedding_dim": 8}, no_profile).use_profile
    # a saved model's config sets every field (use_profile: true too): not a request made now
    assert not RecGOAT.build(ds, full_config(use_profile=True), no_profile).use_profile


def test_train_refuses_use_profile_true_without_profiles_in_one_line(shop, tmp_path):
    root, folder, _, _ = shop  # the folder holds text only (imported)
    args = ["train", "--dataset", str(root), "--model", "recgoat", "--features", str(folder), "--epochs", "1",
            "--set", "model.params.embedding_dim=8", "--run-dir", str(tmp_path / "a")]
    res = CliRunner().invoke(app, [*args, "--set", "model.params.use_profile=true"])
    assert res.exit_code == 1
    assert str(res.exception).startswith("recgoat: model.params.use_profile is true, but the features given for "
                                         "dataset 'shop' have no user profiles; usable there: text, and the "
                                         "dataset has no item text (profiles are written from it). Set "
                                         "use_profile: false")
    assert not (tmp_path / "a" / "result.json").exists()


def test_benchmark_preflight_refuses_use_profile_true_without_profiles(tmp_path, trained_runs, no_encoding):
    """A given folder without profile.npy, and `features: auto` on a dataset with images but no item text (profiles
    are written from item text): both listed before anything trains, not failed in the cell after mostpop."""
    texty, folder = text_only(tmp_path)
    pictures = write_data(tmp_path / "pictures", {"image": [f"img/{i}.jpg" for i in range(30)]})
    datasets = [{"name": str(texty), "label": "given", "features": str(folder)},
                {"name": str(pictures), "features": "auto"}]
    out = tmp_path / "b"
    with pytest.raises(ConfigError) as e:
        run_benchmark(config(datasets, out, ["mostpop", "recgoat"], ("models.recgoat.params.use_profile=true",)))
    msg = str(e.value)
    assert msg.startswith("2 (dataset, model) pairs cannot run, so nothing was trained: dataset given: model "
                          "'recgoat' cannot be built: recgoat: model.params.use_profile is true, but the features "
                          "given have no user profiles; usable there: text. Set use_profile: false"), msg
    assert f"(its feature folder {folder} holds text); dataset pictures: model 'recgoat' cannot be built: " \
           "recgoat: model.params.use_profile is true, but the features given have no user profiles; usable " \
           "there: image. " in msg
    assert msg.endswith("(`features: auto` encodes image for it)")
    assert trained_runs == [] and not out.exists()
    # with profiles in the folder the pair can run; left unset, use_profile falls back as before
    np.save(folder / "profile.npy", np.zeros((40, 5), np.float32))
    ok = config(datasets[:1], out, ["mostpop", "recgoat"], ("models.recgoat.params.use_profile=true",))
    assert pair_problems(ok, plan_cells(ok), {}) == []
    unset = config(datasets, out, ["mostpop", "recgoat"])
    assert pair_problems(unset, plan_cells(unset), {}) == []
