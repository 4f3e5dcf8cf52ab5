"""Items without text, in a dataset that has text: the feature store writes zero rows for them (it wrote the embedding
of "", one shared non-zero vector), and RecGOAT and FREEDOM read a zero text row as an absent text, as they read a
missing image: no edges in the text kNN graph, a zero text view, left out of the alignment terms."""
from __future__ import annotations

import hashlib
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from features_helpers import toy_dataset  # noqa: E402
from recgoat_helpers import build, random_features, small_problem  # noqa: E402

import recgoat.features.text as text_mod  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, load_features  # noqa: E402
from recgoat.features.store import Features  # noqa: E402
from recgoat.models.freedom import FREEDOM  # noqa: E402


class FakeTextEncoder:
    """A deterministic 6-d encoder (no download): a text's vector from its hash; "" gets a non-zero one too."""

    name = "fake-text"
    dim = 6
    max_seq_length = None

    def __init__(self, *args, **kwargs):
        self.truncated_texts = 0
        self.seen: list[str] = []

    @staticmethod
    def vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).normal(size=FakeTextEncoder.dim).astype(np.float32) + 0.1

    def encode(self, texts, on_progress=None):
        texts = list(texts)
        self.seen += texts
        if on_progress:
            on_progress(len(texts))
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def count_truncated(self, texts):
        return 0


@pytest.fixture
def fake_encoder(monkeypatch):
    monkeypatch.setattr(text_mod, "TextEncoder", FakeTextEncoder)


TITLES = ["Lamp", "", "Desk", None, "Chair", "  ", "Sofa", "Table", "Shelf", "Rug"]
BLANK = [False, True, False, True, False, True, False, False, False, False]
TRAIN = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9], [1, 3, 5, 7]]


def _items(titles):
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(len(titles))], "title": titles})


def _encode(tmp_path, name, titles, template=None):
    ds = toy_dataset(_items(titles), TRAIN)
    folder = encode_all(ds, tmp_path / name, FeatureConfig(text_template=template), which=("text",), progress=False)
    return ds, folder, np.load(folder / "text.npy"), json.loads((folder / "text.json").read_text())


@pytest.mark.parametrize("template", [None, "Item: {title}."])
def test_items_without_text_get_zero_rows(tmp_path, fake_encoder, template):
    ds, _, x, man = _encode(tmp_path, "f", TITLES, template)
    assert man["empty_texts"] == 3
    norms = np.linalg.norm(x, axis=1)
    assert (norms == 0).tolist() == BLANK  # exactly the blank items: was the shared embedding of "" (or ". ")
    texts = text_mod.build_item_texts(ds.items, ds.n_items, ds.text_fields, template, 1200)
    for k, blank in enumerate(BLANK):
        if not blank:
            np.testing.assert_array_equal(x[k], FakeTextEncoder.vector(texts[k]))


def test_without_blank_items_rows_and_key_are_as_before(tmp_path, fake_encoder):
    titles = ["Lamp", "Desk", "Chair", "Sofa", "Table", "Shelf", "Rug", "Bed", "Vase", "Clock"]
    ds, folder, x, man = _encode(tmp_path, "full", titles)
    assert man["empty_texts"] == 0 and (np.linalg.norm(x, axis=1) > 0).all()
    texts = text_mod.build_item_texts(ds.items, ds.n_items, ds.text_fields, None, 1200)
    np.testing.assert_array_equal(x, np.stack([FakeTextEncoder.vector(t) for t in texts]))
    # the key is the one made before items without text got zero rows (no marker: old folders are reused)
    from recgoat.features.store import _key

    assert man["encoder"] == "fake-text"
    desc = "field: value lines over " + ", ".join(ds.text_fields)
    old = _key({"encoder": text_mod.resolve_text_model(None)[1], "template": desc, "max_chars": 1200,
                "fp": man["dataset_fingerprint"]})
    assert man["key"] == old
    # and with blanks the key differs (folders encoded with the shared vector are re-encoded)
    _, _, _, blank_man = _encode(tmp_path, "blank", TITLES)
    assert blank_man["key"] != old


# ---------------------------------------------------------------------------------------------- RecGOAT
def _with_blank_texts(ds, feats, blank):
    text = feats.text.copy()
    text[blank] = 0.0
    return Features(text=text, image=feats.image, image_mask=feats.image_mask, profile=feats.profile)


def test_recgoat_treats_zero_text_rows_as_absent(ml_small):
    ds, feats = small_problem(ml_small)
    blank = np.zeros(ds.n_items, bool)
    blank[::7] = True
    model = build(ds, _with_blank_texts(ds, feats, blank), feature_norm="center_l2", lambda_cl=1.0,
                  cl_max_points=100000)
    assert model.text_mask is not None and (model.text_mask.numpy() == ~blank).all()
    assert model.image_mask is not None  # still there
    assert model.summary["texts_missing"] == int(blank.sum())
    # no features (centring made them non-zero), no edges in the text kNN graph
    assert (model.feat_text[torch.from_numpy(blank)] == 0).all()
    src, dst = model.edges_text
    assert not torch.from_numpy(blank)[src].any() and not torch.from_numpy(blank)[dst].any()
    # a zero text view
    model.eval()
    with torch.no_grad():
        h = model.item_views()["text"]
    assert (h[torch.from_numpy(blank)] == 0).all() and (h[torch.from_numpy(~blank)].abs().sum(1) > 0).all()
    # CMCL's text term reads the items with a text only (and OAT's, which shares its keep set)
    import recgoat.models.recgoat as rg

    seen = []
    real = rg.symmetric_info_nce

    def spy(a, b, tau):
        seen.append(a.detach())
        return real(a, b, tau)

    model.train()
    torch.manual_seed(1)
    out = model.forward_all()
    h_text = out["h"]["text"].detach()
    try:
        rg.symmetric_info_nce = spy
        model.alignment_losses(out, torch.arange(ds.n_users), torch.arange(ds.n_items))
    finally:
        rg.symmetric_info_nce = real
    text_terms = [a for a in seen if a.shape == h_text[~blank].shape and torch.equal(a, h_text[~blank])]
    assert len(text_terms) == 1, [tuple(a.shape) for a in seen]
    assert not any(a.shape == h_text.shape and torch.equal(a, h_text) for a in seen)  # not every item's


def test_recgoat_with_every_text_is_as_before(ml_small):
    ds, feats = small_problem(ml_small)
    model = build(ds, feats)
    assert model.text_mask is None and "texts_missing" not in model.summary
    # rebuilt with blanks, then with every text again: the mask and the summary line go
    model.prepare(ds, _with_blank_texts(ds, feats, np.arange(ds.n_items) % 5 == 0))
    assert model.text_mask is not None and model.summary["texts_missing"] > 0
    model.prepare(ds, feats)
    assert model.text_mask is None and "texts_missing" not in model.summary


def test_recgoat_text_only_with_blanks(ml_small):
    ds, _ = small_problem(ml_small)
    feats = random_features(ds, 5, text=10)
    blank = np.arange(ds.n_items) % 3 == 0
    model = build(ds, _with_blank_texts(ds, feats, blank), modalities=["text"])
    assert (model.text_mask.numpy() == ~blank).all() and model.summary["texts_missing"] == int(blank.sum())
    loss = model.loss(torch.tensor([0, 1, 2]), torch.tensor([1, 3, 4]), torch.tensor([5, 6, 7]))
    assert all(torch.isfinite(v).all() for v in loss.values())


# ---------------------------------------------------------------------------------------------- FREEDOM
def test_freedom_text_graph_leaves_items_without_text_alone(tmp_path, fake_encoder):
    ds, folder, x, _ = _encode(tmp_path, "f", TITLES)
    feats = load_features(ds, folder)
    model = FREEDOM.build(ds, {"embedding_dim": 8, "knn_k": 3}, feats)
    g = model.ii_graph.to_dense()
    blank = torch.tensor(BLANK)
    assert (g[blank] == 0).all() and (g[:, blank] == 0).all()
    assert (g[~blank].abs().sum(1) > 0).all()
