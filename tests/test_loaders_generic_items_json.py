"""A generic folder's item table as JSON (``items.json``, an array of objects or JSON lines, or ``items.jsonl``).

Why: the README promises "optional ``items.*``", but only items.csv/.tsv/.parquet were looked for: an
``items.json`` (what a catalogue export or a scraper writes) was silently ignored, and every item trained and
served without its text or images (``text_fields: []``, ``images: 0``), not a word said. Another format
(items.xlsx) is still not read, but said.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_main
from recgoat.datasets import PrepareConfig, load
from recgoat.datasets.generic import load_generic
from recgoat.errors import DataError

RECORDS = [
    {"item": "B001", "title": "Red shoe", "categories": ["Shoes", "Red"], "year": 1995.0, "image": "images/a.png"},
    {"item": "B002", "title": "Blue hat", "categories": [], "year": None, "image": ["images/b.png", "x.png"]},
    {"item": "B003", "title": "", "description": "No title, a description", "year": 2001},
]


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rows = ["user,item"] + [f"u{u},B00{i}" for u in range(3) for i in (1, 2, 3)]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    return root


def _csv_twin(root: Path) -> Path:
    """The same item table as a CSV, as the reference a JSON table must read like."""
    _folder(root)
    (root / "items.csv").write_text(
        "item,title,categories,year,image,description\n"
        'B001,Red shoe,"Shoes, Red",1995,images/a.png,\n'
        "B002,Blue hat,,,images/b.png,\n"
        'B003,,,2001,,"No title, a description"\n')
    return root


@pytest.mark.parametrize("layout", ["array", "lines-in-json", "jsonl"])
def test_a_json_item_table_reads_as_its_csv_twin(tmp_path, layout):
    root = _folder(tmp_path / "shop")
    if layout == "array":
        (root / "items.json").write_text(json.dumps(RECORDS, indent=1))
    else:
        name = "items.jsonl" if layout == "jsonl" else "items.json"
        (root / name).write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    inter, items, fields = load_generic(root)
    _, twin, twin_fields = load_generic(_csv_twin(tmp_path / "twin"))
    assert sorted(fields) == sorted(twin_fields) == ["categories", "description", "title", "year"]
    for col in twin.columns:
        assert items[col].tolist() == twin[col].tolist() or \
            items[col].fillna("").tolist() == twin[col].fillna("").tolist(), col
        assert items[col].dtype == twin[col].dtype, col
    ds = load(root, PrepareConfig(k_core=0))
    assert ds.stats()["text_fields"] and ds.stats()["images"] == 2


def test_datasets_info_reads_items_json(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "shop")
    (root / "items.json").write_text(json.dumps(RECORDS))
    code, err = run_main(monkeypatch, capsys, "datasets", "prepare", str(root), "--k-core", "0",
                         "--out", str(tmp_path / "prepared"))
    assert code == 0, err
    ds = load(tmp_path / "prepared")
    assert ds.text_fields == ["title", "categories", "year", "description"] and ds.stats()["images"] == 2


@pytest.mark.parametrize("text, problem", [
    ('[{"item": "B001"}, {"item": ', r"items.json: line 1: not valid JSON \(Expecting value\); expected an array"),
    ('{"item": "B001"}\n{"item": \n', r"items.json: line 2: not valid JSON .*one object per line"),
    ('{"item": "B001"}', r"items.json: holds a JSON dict, not an array of objects"),
    ('[1, 2]', r"items.json: entry 1: a JSON int, not an object"),
    ('[]', r"items.json: holds no records"),
])
def test_malformed_json_item_tables_are_named_with_the_line(tmp_path, text, problem):
    root = _folder(tmp_path / "shop")
    (root / "items.json").write_text(text)
    with pytest.raises(DataError, match=problem):
        load_generic(root)


def test_items_json_beside_items_csv_is_refused_as_two_tables(tmp_path):
    root = _csv_twin(tmp_path / "shop")
    (root / "items.json").write_text(json.dumps(RECORDS))
    with pytest.raises(DataError, match=r"several items files \(items.csv, items.json\)"):
        load_generic(root)


def test_an_item_table_in_a_format_not_read_is_said(tmp_path):
    root = _folder(tmp_path / "shop")
    (root / "items.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.warns(UserWarning, match=r"items.xlsx: not read as the item table \(items.csv, .tsv, .parquet, "
                                         r".json or .jsonl are\), so the items get no text or image features"):
        _, items, _ = load_generic(root)
    assert items is None
