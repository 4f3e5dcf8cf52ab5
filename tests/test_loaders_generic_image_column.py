"""A user's own catalogue: the items table's column of image paths under the names real exports give it.

Why: a column ``image_path`` (or ``poster``, ``image_url``, Amazon's ``imUrl``…) was silently taken as no
image column at all: ``recgoat datasets info`` said ``images: 0``, the encoder made no image features and
nothing said why, unless the files happened to be named ``images/<item_id>.jpg``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_main
from recgoat.datasets import PrepareConfig, load
from recgoat.datasets.generic import load_generic
from recgoat.errors import DataError


def _catalogue(root: Path, image_col: str | None, n: int = 4) -> Path:
    """Interactions of 3 users on ``n`` items, an items.csv with titles and, under ``image_col``, the paths of
    real pictures named poster_<k>.png (not after the item ids)."""
    (root / "images").mkdir(parents=True)
    rows = ["user,item,rating"] + [f"u{u},B{i:03d},4" for u in range(3) for i in range(n)]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    head = "item,title" + (f",{image_col}" if image_col else "")
    lines = [head]
    for i in range(n):
        arr = np.full((24, 16, 3), 40 * i, np.uint8)
        Image.fromarray(arr).save(root / "images" / f"poster_{i}.png")
        lines.append(f"B{i:03d},Item {i}" + (f",images/poster_{i}.png" if image_col else ""))
    (root / "items.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("column", ["image_path", "image_url", "poster", "imUrl", "Image", "thumbnail"])
def test_common_spellings_of_the_image_column_are_read(tmp_path, column):
    root = _catalogue(tmp_path / "shop", column)
    _, items, _ = load_generic(root)
    assert items["image"].tolist() == [f"images/poster_{i}.png" for i in range(4)]
    ds = load(root, PrepareConfig(k_core=0))
    assert ds.stats()["images"] == 4
    assert Path(ds.image_sources()[0]) == (root / "images" / "poster_0.png").resolve()


def test_the_image_column_is_renamed_not_copied(tmp_path):
    root = _catalogue(tmp_path / "shop", "image_path")
    _, items, _ = load_generic(root)
    assert "image_path" not in items.columns and "image" in items.columns


def test_two_image_columns_say_which_one_is_used(tmp_path):
    root = _catalogue(tmp_path / "shop", "image")
    table = (root / "items.csv").read_text().splitlines()
    (root / "items.csv").write_text("\n".join([table[0] + ",poster"] + [r + ",x.png" for r in table[1:]]) + "\n")
    with pytest.warns(UserWarning, match=r"columns \['image', 'poster'\] could each be the image column; using 'image'"):
        _, items, _ = load_generic(root)
    assert items["image"].iloc[0] == "images/poster_0.png"


def test_an_image_column_with_spaces_around_its_name_is_refused(tmp_path):
    root = _catalogue(tmp_path / "shop", "image_path")
    text = (root / "items.csv").read_text().replace("title,image_path", "title, image_path")
    (root / "items.csv").write_text(text)
    with pytest.raises(DataError, match=r"column ' image_path' is not read as 'image_path': column names have "
                                        "spaces around them"):
        load_generic(root)


def test_an_image_folder_none_of_whose_files_is_an_items_picture_is_warned_about(tmp_path, monkeypatch, capsys):
    root = _catalogue(tmp_path / "shop", None)
    with pytest.warns(UserWarning, match=r"images: none of its 4 image files is named after an item id of "
                                         r"items.csv .* has no image column .*: no item gets an image"):
        load_generic(root)
    code, err = run_main(monkeypatch, capsys, "datasets", "info", str(root), "--k-core", "0")
    assert code == 0 and err.count("none of its 4 image files") == 1


def test_no_warning_when_the_pictures_are_named_after_the_items(tmp_path):
    root = _catalogue(tmp_path / "shop", None)
    for i in range(4):
        (root / "images" / f"poster_{i}.png").rename(root / "images" / f"B{i:03d}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, items, _ = load_generic(root)
    assert items["image"].notna().all()
