"""`recgoat datasets info` says which image paths of the items table name no file: a catalogue with broken paths
read as all there (62 listed, 60 usable, and the encode was the first to say so). Its ``images`` then counts the
images that are there: it counted every item naming one, and said "images": 1036 beside 1036 absent files.
`Dataset.describe()` gives the same facts to a Python caller."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from typer.testing import CliRunner

from recgoat.cli import app


def info(root) -> dict:
    r = CliRunner().invoke(app, ["datasets", "info", str(root), "--k-core", "0"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def write_shop(root):
    """6 users x 6 items; items p0-p2 with an image file, p3 and p4 naming a file that is not there, p5 none."""
    (root / "images").mkdir(parents=True)
    rows = ["user_id,item_id"] + [f"u{u},i{i}" for u in range(6) for i in range(6)]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    lines = ["item_id,title,image"]
    for i in range(6):
        if i < 3:  # three pictures there, two paths to nothing, one item without an image
            Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(root / "images" / f"p{i}.png")
        lines.append(f"i{i},Item {i}," + (f"images/p{i}.png" if i < 5 else ""))
    (root / "items.csv").write_text("\n".join(lines) + "\n")
    return root


def test_info_lists_image_paths_without_a_file(tmp_path):
    root = write_shop(tmp_path / "shop")
    out = info(root)
    assert out["images"] == 3  # the files there; 5 items name one
    assert out["image_files_absent"] == {"count": 2, "first": [f"item i3: {root / 'images' / 'p3.png'}",
                                                               f"item i4: {root / 'images' / 'p4.png'}"]}
    # every path a file: no such entry
    for i in (3, 4):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"p{i}.png")
    out = info(root)
    assert "image_files_absent" not in out and out["images"] == 5


def test_images_count_none_when_every_named_file_is_absent(tmp_path):
    root = write_shop(tmp_path / "shop")
    for i in range(3):
        (root / "images" / f"p{i}.png").unlink()
    out = info(root)
    assert out["images"] == 0 and out["image_files_absent"]["count"] == 5


def test_describe_gives_python_callers_what_info_prints(tmp_path):
    """The absent image files and the removal lines were worked out in the CLI: a Python user had stats() only."""
    from recgoat.datasets import PrepareConfig, load

    root = write_shop(tmp_path / "shop")
    ds = load(str(root), PrepareConfig(k_core=0))
    out = ds.describe()
    assert out == info(root)
    # stats() counts the items naming an image (no file is looked at); describe() the images there
    assert {k: v for k, v in out.items() if k not in ("image_files_absent", "removed", "images")} == \
        {k: v for k, v in ds.stats().items() if k != "images"}
    assert ds.stats()["images"] == 5 and out["images"] == 3
    assert out["image_files_absent"] == ds.absent_image_files() == \
        {"count": 2, "first": [f"item i3: {root / 'images' / 'p3.png'}", f"item i4: {root / 'images' / 'p4.png'}"]}
    assert out["removed"] == []  # counts recorded, nothing removed
