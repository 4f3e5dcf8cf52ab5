"""Item text and image features are copied from a feature folder beside the output that encoded the same
content for other data (another split of the dataset), not encoded again: ``features: auto``'s folders
(``encode_all(..., reuse_beside=<out>/features)``); a folder the user names is encoded as asked.

Why: the store keys each matrix on the dataset fingerprint, which covers the split, though item text and images
do not depend on it: each split of a benchmark with ``split_seeds: true`` (``<out>/features/<label>-split<s>``)
and each ``train --features auto --set data.seed=7`` encoded them again (100 s of the 126 s of an ml100k-mm
encode). Runs the real packaged encoders on a real slice of ml100k-mm (10 movies and their posters).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import Dataset
from recgoat.features import load_features
from recgoat.features.store import FeatureConfig, encode_all

from features_helpers import mini_dataset


def resplit(ds: Dataset, seed: int) -> Dataset:
    """The same users, items and interactions, with the split labels shuffled: another split of the data."""
    inter = ds.interactions.copy()
    labels = inter["split"].to_numpy().copy()
    np.random.default_rng(seed).shuffle(labels)
    inter["split"] = pd.Categorical(labels, categories=inter["split"].cat.categories)
    return Dataset(name=ds.name, interactions=inter, user_ids=ds.user_ids, item_ids=ds.item_ids, items=ds.items,
                   text_fields=list(ds.text_fields), info=dict(ds.info))


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The slice encoded (text and images) into ``features/split1``."""
    ds = mini_dataset()
    root = tmp_path_factory.mktemp("feats")
    encode_all(ds, root / "features" / "split1", which=("text", "image"), progress=False)
    return ds, root / "features"


def encoders_forbidden(monkeypatch):
    import recgoat.features.image as image
    import recgoat.features.text as text

    def refuse(*a, **k):
        raise AssertionError("encoded again")

    monkeypatch.setattr(text.TextEncoder, "encode", refuse)
    monkeypatch.setattr(image.ImageEncoder, "encode", refuse)


def test_another_split_copies_text_and_images_from_the_folder_beside_it(first, monkeypatch):
    ds, features = first
    other = resplit(ds, 1)
    assert other.fingerprint() != ds.fingerprint()
    encoders_forbidden(monkeypatch)
    encode_all(other, features / "split2", which=("text", "image"), progress=False, reuse_beside=features)
    a, b = load_features(ds, features / "split1"), load_features(other, features / "split2")
    assert np.array_equal(a.text, b.text) and np.array_equal(a.image, b.image)
    assert np.array_equal(a.image_mask, b.image_mask)
    for kind in ("text", "image"):
        man = json.loads((features / "split2" / f"{kind}.json").read_text())
        assert man["dataset_fingerprint"] == other.fingerprint()  # made for this split: load_features takes it
        assert man["reused_from"] == str(features / "split1")
        assert man["content_key"] == json.loads((features / "split1" / f"{kind}.json").read_text())["content_key"]
    # and the copy is up to date for its own data: a second encode neither copies nor encodes
    stamps = [(features / "split2" / f"{k}.json").stat().st_mtime_ns for k in ("text", "image")]
    encode_all(other, features / "split2", which=("text", "image"), progress=False, reuse_beside=features)
    assert [(features / "split2" / f"{k}.json").stat().st_mtime_ns for k in ("text", "image")] == stamps


def test_other_texts_or_a_damaged_sibling_are_encoded_afresh(first, tmp_path, monkeypatch):
    ds, features = first
    other = resplit(ds, 2)
    calls = []
    import recgoat.features.text as text

    real = text.TextEncoder.encode
    monkeypatch.setattr(text.TextEncoder, "encode", lambda self, t, *a, **k: calls.append(len(t)) or real(self, t, *a, **k))
    # another text setting: other texts, so another content key
    encode_all(other, features / "cut", config=FeatureConfig(max_chars=20), which="text", progress=False,
               reuse_beside=features)
    assert calls, "text with other settings was copied"
    assert "reused_from" not in json.loads((features / "cut" / "text.json").read_text())
    # a sibling whose matrix was damaged after encoding (a NaN) is passed by, not copied
    bad = tmp_path / "features" / "damaged"
    bad.mkdir(parents=True)
    arr = np.load(features / "split1" / "text.npy")
    arr[0, 0] = np.nan
    np.save(bad / "text.npy", arr)
    (bad / "text.json").write_text((features / "split1" / "text.json").read_text())
    calls.clear()
    encode_all(other, tmp_path / "features" / "fresh", which="text", progress=False,
               reuse_beside=tmp_path / "features")
    assert calls, "a damaged matrix was copied"
    assert np.isfinite(np.load(tmp_path / "features" / "fresh" / "text.npy")).all()


def test_force_encodes_even_with_a_sibling(first, monkeypatch):
    ds, features = first
    other = resplit(ds, 3)
    import recgoat.features.text as text

    calls = []
    real = text.TextEncoder.encode
    monkeypatch.setattr(text.TextEncoder, "encode", lambda self, t, *a, **k: calls.append(len(t)) or real(self, t, *a, **k))
    encode_all(other, features / "forced", which="text", progress=False, force=True, reuse_beside=features)
    assert calls and "reused_from" not in json.loads((features / "forced" / "text.json").read_text())
    # and without reuse_beside (`recgoat encode --out DIR`), a folder is encoded as asked
    calls.clear()
    encode_all(other, features / "asked", which="text", progress=False)
    assert calls and "reused_from" not in json.loads((features / "asked" / "text.json").read_text())


def test_train_features_auto_with_another_split_seed_copies_from_the_shared_folder(tmp_path, monkeypatch):
    """`train --features auto --set data.seed=7` encodes into a folder of its own (profiles depend on the split);
    its item text comes from the default split's folder beside it."""
    from recgoat.config import load_config
    from recgoat.training.run import train

    from training_helpers import write_catalogue

    data = tmp_path / "shop"
    write_catalogue(data)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(40)],
                  "title": [f"product {i} of the {'red blue green'.split()[i % 3]} range" for i in range(40)]}
                 ).to_csv(data / "items.csv", index=False)
    base = {"data.name": str(data), "features": "auto", "out": str(tmp_path / "runs"), "model.name": "vbpr"}
    quick = ["trainer.epochs=1", "trainer.progress=false", "model.params.embedding_dim=8"]
    first = train(load_config(None, quick, values=base))
    encoders_forbidden(monkeypatch)
    second = train(load_config(None, [*quick, "data.seed=7"], values=base))
    shared = json.loads(Path(first["run_dir"], "run_config.json").read_text())["features"]
    own = json.loads(Path(second["run_dir"], "run_config.json").read_text())["features"]
    assert own != shared
    assert json.loads((Path(own) / "text.json").read_text())["reused_from"] == shared


@pytest.mark.parametrize("a, b", [
    (["a\x01b", "c"], ["a", "b\x01c"]),  # the same bytes run together, cut elsewhere: other texts
    (["ab"], ["a", "b"]),
    ([None], ["None"]),  # an item without an image is not one whose path reads "None"
    ([None], [""]),
])
def test_the_content_key_tells_apart_lists_that_run_together_alike(a, b):
    from recgoat.features.store import _rows_digest

    assert _rows_digest(a) != _rows_digest(b)
    assert _rows_digest(a) == _rows_digest(list(a))


def test_reuse_from_copies_a_named_folder_of_other_data_and_says_when_it_cannot(first, tmp_path, monkeypatch,
                                                                                capsys):
    """`recgoat encode all DIR --reuse-from FOLDER`: the features of the same dataset prepared otherwise (another
    split), named by the user, wherever it lies; what the fingerprint refusal of `train --set data.seed=7
    --features FOLDER` advises, where re-encoding the images took minutes."""
    from typer.testing import CliRunner

    from recgoat.cli import app

    ds, features = first
    other = resplit(ds, 3)
    encoders_forbidden(monkeypatch)
    out = tmp_path / "elsewhere" / "seed3"  # not beside split1: only --reuse-from can find it
    encode_all(other, out, which=("text", "image"), progress=False, reuse_from=features / "split1")
    a, b = load_features(ds, features / "split1"), load_features(other, out)
    assert np.array_equal(a.text, b.text) and np.array_equal(a.image, b.image)
    assert json.loads((out / "image.json").read_text())["reused_from"] == str(features / "split1")
    # a folder of other texts is not taken, and that is said (then it encodes: forbidden here, so it fails)
    changed = resplit(ds, 4)
    changed.items = ds.items.assign(title=[f"other {t}" for t in ds.items["title"]])
    capsys.readouterr()
    with pytest.raises(AssertionError, match="encoded again"):
        encode_all(changed, tmp_path / "changed", which=("text",), progress=False, reuse_from=features / "split1")
    assert f"text: not copied from {features / 'split1'}: it holds no text matrix of the same texts" \
        in capsys.readouterr().err
    # the command line: the option, and a folder that is not there named as such
    monkeypatch.setattr("recgoat.datasets.load", lambda name, *a, **k: other)
    res = CliRunner().invoke(app, ["encode", "all", "x", "--out", str(tmp_path / "cli"), "--reuse-from",
                                   str(tmp_path / "nowhere"), "--no-progress"])
    assert res.exit_code == 1 and f"error: {tmp_path / 'nowhere'}: feature folder to reuse not found" in res.output
