"""`empty_texts` counts the items whose text fields are all blank, with a template too (where such an item's
text is the template's literal parts, e.g. ". ", and `not text` never held). Session-16 encoding audit."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import toy_dataset  # noqa: E402
from recgoat.features import FeatureConfig, encode_all  # noqa: E402
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
