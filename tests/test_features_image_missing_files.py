"""The image encoding's summary line tells the listed images that are not there from the items without one.

Why: ``missing`` counts both the items whose metadata gives no image and those whose listed file is absent. In a
catalogue where most items have no picture, one broken path hid among them: ``'missing': 339``, its one
example "no image path or URL in the item metadata", and nothing said that a file the table names is not there.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from features_helpers import TinyNet, toy_dataset
from recgoat.features import encode_all, load_features
from recgoat.features.store import FeatureConfig


def _dataset(tmp_path, images: list[str | None]):
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(len(images))],
                          "title": [f"Item {k}" for k in range(len(images))], "image": images})
    return toy_dataset(items, [[0, 1, 2], [2, 3, 4], [4, 5, 0]])


def _picture(path) -> str:
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(path)
    return str(path)


def test_a_listed_image_that_is_not_there_is_counted_and_shown_apart(tmp_path, capsys):
    absent = tmp_path / "gone.jpg"
    ds = _dataset(tmp_path, [None, None, _picture(tmp_path / "a.png"), None, str(absent), None])
    encode_all(ds, tmp_path / "f", FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    err = " ".join(capsys.readouterr().err.split())
    # the counts and the first example as before
    assert "5 without one (zero rows, mask False)" in err and "e.g. item i0: no image path" in err
    assert f"; 1 of the 5 missing names an image that is not there, e.g. item i4: {absent}: file not found" in err
    man = load_features(ds, tmp_path / "f").manifests["image"]
    assert man["images"] == {"ok": 1, "missing": 5, "unreadable": 0, "download_failed": 0}  # unchanged


def test_nothing_more_is_said_when_every_missing_image_is_of_one_kind(tmp_path, capsys):
    ds = _dataset(tmp_path, [None, _picture(tmp_path / "a.png"), None, None, None, None])
    encode_all(ds, tmp_path / "f", FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    assert "name an image that is not there" not in capsys.readouterr().err
    ds = _dataset(tmp_path, [str(tmp_path / "x.jpg"), _picture(tmp_path / "a.png")] + [str(tmp_path / "y.jpg")] * 4)
    encode_all(ds, tmp_path / "g", FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    assert "name an image that is not there" not in capsys.readouterr().err


def test_the_example_is_not_repeated_when_it_is_already_the_first(tmp_path, capsys):
    absent = tmp_path / "gone.jpg"
    ds = _dataset(tmp_path, [str(absent), None, _picture(tmp_path / "a.png"), None, None, None])
    encode_all(ds, tmp_path / "f", FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
    err = " ".join(capsys.readouterr().err.split())
    assert f"e.g. item i0: {absent}: file not found" in err
    assert err.count("file not found") == 1 and "1 of the 5 missing names an image that is not there" in err


def _folder_catalogue(root, items_table: bool):
    """A generic-layout folder whose pictures are images/<item_id>.<ext>, found for i1 (.png) and i3 (.JPG) only,
    with an items table without an image column, or none."""
    (root / "images").mkdir(parents=True)
    rows = ["user_id,item_id"] + [f"u{u},i{(u + j) % 6}" for u in range(8) for j in range(5)]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    if items_table:
        (root / "items.csv").write_text("item_id,title\n" + "\n".join(f"i{k},Item {k}" for k in range(6)) + "\n")
    _picture(root / "images" / "i1.png")
    _picture(root / "images" / "i3.JPG")
    return root


def test_an_item_without_a_picture_in_images_names_the_file_looked_for(tmp_path, capsys):
    """A catalogue of images/<item_id>.jpg: an item without a file there was reported as "no image path or URL in
    the item metadata", of a catalogue with no metadata naming images at all."""
    from recgoat.datasets import load

    for table in (True, False):
        root = _folder_catalogue(tmp_path / f"shop{table}", table)
        ds = load(str(root))
        encode_all(ds, tmp_path / f"f{table}", FeatureConfig(image_model=TinyNet()), which=("image",), progress=False)
        err = " ".join(capsys.readouterr().err.split())
        looked = f"item i0: no image: {root / 'images' / 'i0.jpg'} is not there (nor i0.jpeg, i0.png or i0.webp, " \
                 f"in any letter case)"
        assert f"e.g. {looked}" in err, err
        # said only where there is item metadata to name one
        assert (f"{looked}, and the item metadata names no image path or URL" in err) == table, err
        man = load_features(ds, tmp_path / f"f{table}").manifests["image"]
        assert man["images"] == {"ok": 2, "missing": 4, "unreadable": 0, "download_failed": 0}
        assert man["problem_examples"]["missing"][0].startswith(looked)
