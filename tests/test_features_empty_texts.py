"""`empty_texts` counts the items whose text fields are all blank, with a template too (where such an item's
text is the template's literal parts, e.g. ". ", and `not text` never held). Session-16 encoding audit."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import toy_dataset  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from recgoat.features import FeatureConfig, encode_all  # noqa: E402
from recgoat.features.cli import app  # noqa: E402
from recgoat.features.store import NothingToEncode, blank_text_fields, has_item_text  # noqa: E402
from recgoat.features.text import build_item_texts, items_without_text  # noqa: E402

ITEMS = pd.DataFrame({"item_id": ["a", "b", "c", "d", "e", "f"],
                      "title": ["Lamp", "", None, "  ", "Desk", float("nan")],
                      "description": ["bright", "", "   ", None, "", "oak"]})


@pytest.mark.parametrize("template, fields, expected", [
    ("{title}. {description}", None, ["b", "c", "d"]),   # f has a description
    ("{title}", None, ["b", "c", "d", "f"]),             # only the title counts
    (None, ["title", "description"], ["b", "c", "d"]),
    (None, ["title"], ["b", "c", "d", "f"]),
    ("Item: {title}", None, ["b", "c", "d", "f"]),       # literal text alone says nothing of the item
])
def test_items_whose_used_fields_are_all_blank(template, fields, expected):
    assert items_without_text(ITEMS, 6, fields or [], template) == len(expected)
    if template is None:  # without a template such an item's text is empty, as the old count assumed
        texts = build_item_texts(ITEMS, 6, fields, None)
        assert [i for i, t in zip(ITEMS["item_id"], texts) if not t] == expected


def test_no_item_table_means_no_text():
    assert items_without_text(None, 4, ["title"], "{title}") == 4


def test_encode_with_a_template_records_them(tmp_path):
    ds = toy_dataset(ITEMS, [[0, 1, 2], [3, 4, 5], [1, 3, 5]])
    folder = encode_all(ds, tmp_path / "f", FeatureConfig(text_template="{title}. {description}"), which=("text",),
                        progress=False)
    assert json.loads((folder / "text.json").read_text())["empty_texts"] == 3


# ---------------------------------------------------------------------------------------------- all blank
BLANK = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["", None, "  "], "description": [float("nan"), "", None]})


def _blank_folder(tmp_path):
    """A raw dataset folder whose items.csv has its text columns, every one empty for every item."""
    folder = tmp_path / "blank"
    folder.mkdir()
    rows = [f"u{u},i{(u * 7 + k * 5) % 12},4,{1000 + 100 * u + k}" for u in range(12) for k in range(8)]
    (folder / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    (folder / "items.csv").write_text("item_id,title,genres,overview\n" + "".join(f"i{i},,,\n" for i in range(12)))
    return folder


def test_cli_encode_text_refuses_items_whose_text_is_all_empty(tmp_path):
    """Encoded, every item got the empty text's embedding and the run exited 0."""
    folder = _blank_folder(tmp_path)
    res = CliRunner().invoke(app, ["text", str(folder), "--out", str(tmp_path / "f"), "--no-progress"])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1
    assert res.output.startswith(f"error: {folder / 'items.csv'}: every item's text is empty: the fields item text "
                                 f"is read from (title, genres, overview) are blank for all 12 items of dataset "
                                 f"blank")
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())
    # a template over one of those columns reads them alone
    res = CliRunner().invoke(app, ["text", str(folder), "--out", str(tmp_path / "f"), "--template", "Film: {title}",
                                   "--no-progress"])
    assert res.exit_code == 1 and "the field item text is read from (title) is blank for all 12" in res.output
    # a template naming a column the items lack still says so (it reads as all blank when counted first)
    res = CliRunner().invoke(app, ["text", str(folder), "--out", str(tmp_path / "f"), "--template", "{plot}"])
    assert res.exit_code == 1 and "text template uses {plot} but the dataset has no such column" in res.output


def test_encode_all_skips_all_empty_text_and_says_so(tmp_path, capsys):
    """As for a dataset without text columns; said even with progress off (a problem with the data). Asked for
    alone it is `encode text`'s error; `which` as one string is one kind (it was iterated: kinds 't', 'e', 'x', 't')."""
    ds = toy_dataset(BLANK, [[0, 1], [1, 2]])
    assert not has_item_text(ds, None) and blank_text_fields(ds, None) == ["title"]
    with pytest.raises(NothingToEncode, match="every item's text is empty: .*; nothing to encode"):
        encode_all(ds, tmp_path / "f", FeatureConfig(), which="text", progress=False)
    # among several kinds it is skipped, saying so, while a kind the dataset has is encoded (images here)
    from PIL import Image

    from features_helpers import TinyNet

    Image.new("RGB", (20, 20), (90, 90, 90)).save(tmp_path / "a.png")
    pictured = toy_dataset(BLANK.assign(image=[str(tmp_path / "a.png")] * len(BLANK)), [[0, 1], [1, 2]])
    out = encode_all(pictured, tmp_path / "f", FeatureConfig(image_model=TinyNet()), which=("text", "image"),
                     progress=False)
    assert not (out / "text.npy").exists() and (out / "image.npy").exists()
    err = capsys.readouterr().err
    assert "text: every item's text is empty: the field item text is read from (title) is blank for all 3 items " \
           "of dataset toy" in err and "skipped" in err
    # and without images, nothing to encode of either kind is one error, saying what the dataset lacks
    with pytest.raises(NothingToEncode, match=r"^dataset toy has nothing to encode: its items' text field \(title\) is "
                                              r"blank for every item, and they have no images; give the dataset an "
                                              r"items file with text or images$"):
        encode_all(ds, tmp_path / "g", FeatureConfig(), which=("text", "image"), progress=False)
    assert not (tmp_path / "g").exists()
    # one item with a description is item text (partly empty: encoded, the empty ones counted)
    assert has_item_text(ds, "{title} {description}") is False
    one = BLANK.assign(description=["", "oak desk", None])
    assert has_item_text(toy_dataset(one, [[0, 1], [1, 2]]), "{title} {description}")
