"""A feature view that no item has (an image folder encoded where no image could be read: every row zero, the mask
False) is reported as empty by every feature-reading model, and a peer left with no other view refuses it.

Failed before its fix: FREEDOM and VBPR (and every peer) given such a folder printed ``feature views used: image``
and trained on zeros (FREEDOM's summary: ``item_item_edges: 0``); only RecGOAT said ``image (empty: …)``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recgoat.cli import _summary_lines, app
from recgoat.datasets import load
from recgoat.errors import ConfigError
from recgoat.features import Features, import_mmrec, load_features
from recgoat.models import get_model_class
from test_cli_user_journey import _catalogue
from test_features_store_validation import mmrec_mapping

torch.set_num_threads(1)

PEERS = ["vbpr", "freedom", "lattice", "bm3", "mgcn", "lgmrec"]
EMPTY_LINE = "feature views used: text, image (empty: no item has one)"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, Path]:
    """A small catalogue and a feature folder imported from an MMRec ``image_feat.npy`` of zeros only: the store
    reads each all-zero row as a missing image, so ``image_mask.npy`` is False for every item."""
    tmp = tmp_path_factory.mktemp("empty_views")
    root = _catalogue(tmp / "shop")
    ds = load(str(root))
    src = tmp / "mmrec"
    src.mkdir()
    np.save(src / "image_feat.npy", np.zeros((ds.n_items, 8), np.float32))
    mmrec_mapping(src, ds)
    return root, import_mmrec(ds, src, tmp / "feats")


def _text(n_items: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n_items, 6)).astype(np.float32)


def test_the_folder_really_has_no_image(shop):
    root, feats = shop
    f = load_features(load(str(root)), feats)
    assert f.text is None and not f.image.any() and not f.image_mask.any()


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_refuses_features_whose_only_view_no_item_has(shop, name):
    root, feats = shop
    ds = load(str(root))
    with pytest.raises(ConfigError, match=rf"^{name} needs item text or image features, but no item has any: the "
                                          r"image features given are empty .*no item has an image"):
        get_model_class(name).build(ds, {"embedding_dim": 8}, features=load_features(ds, feats))


@pytest.mark.parametrize("name", [*PEERS, "recgoat"])
def test_every_feature_model_reports_a_view_no_item_has_as_empty(shop, name):
    """With a text view beside it the empty image view stays in use (as RecGOAT's did), and each model's summary
    names it, in the same line; images that some items have are not reported."""
    root, feats = shop
    ds = load(str(root))
    f = load_features(ds, feats)
    text = _text(ds.n_items)
    params = {"embedding_dim": 8, **({"use_profile": False} if name == "recgoat" else {})}
    model = get_model_class(name).build(ds, params, features=Features(text=text, image=f.image,
                                                                      image_mask=f.image_mask))
    assert model.summary["modalities_used"] == ["text", "image"]
    assert model.summary["empty_views"] == ["image"]
    assert EMPTY_LINE in _summary_lines(model.summary)
    # a real image on one item: the view is no longer empty, and prepare() says so again
    image, mask = f.image.copy(), f.image_mask.copy()
    image[0], mask[0] = 1.0, True
    model.prepare(ds, Features(text=text, image=image, image_mask=mask))
    assert "empty_views" not in model.summary
    assert "feature views used: text, image" in _summary_lines(model.summary)


def test_nonzero_image_rows_without_a_mask_entry_are_no_images(shop):
    """The mask decides as RecGOAT's view masks do: rows the store marks as missing are not images, whatever they
    hold."""
    root, _ = shop
    ds = load(str(root))
    ones = np.ones((ds.n_items, 4), np.float32)
    with pytest.raises(ConfigError, match="no item has an image"):
        get_model_class("vbpr").build(ds, {}, features=Features(image=ones, image_mask=np.zeros(ds.n_items, bool)))
    text = _text(ds.n_items)
    with pytest.raises(ConfigError, match=r"the text and image features given are empty .*no item has a text or "
                                          r"an image"):
        get_model_class("freedom").build(ds, {}, features=Features(text=np.zeros_like(text), image=ones,
                                                                   image_mask=np.zeros(ds.n_items, bool)))


def test_train_refuses_it_in_one_line(shop, tmp_path):
    root, feats = shop
    res = CliRunner().invoke(app, ["train", "--dataset", str(root), "--model", "freedom", "--features", str(feats),
                                   "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 1
    assert "freedom needs item text or image features, but no item has any" in str(res.exception)
    assert not (tmp_path / "run" / "result.json").exists()


def test_recgoat_with_defaults_and_only_empty_views_says_it_trains_the_id_view_alone(shop):
    """RecGOAT's fallback for settings left at their defaults (features absent: the ID view alone, with a
    warning) covers a view no item has too: before, it trained the zero image view without a word."""
    root, feats = shop
    ds = load(str(root))
    with pytest.warns(UserWarning, match=r"the text, image views are asked for, but no item has any of them \(the "
                                         r"image features given are all zero rows\): this trains the ID view alone"):
        model = get_model_class("recgoat").build(ds, {"embedding_dim": 8, "use_profile": False},
                                                 features=load_features(ds, feats))
    assert model.summary["empty_views"] == ["image"]
