"""A newcomer's journey on a catalogue of their own: messages that must point to the right spelling."""
from __future__ import annotations

from typer.testing import CliRunner

from recgoat.cli import app


def _shop(tmp_path):
    """A tiny catalogue in the generic layout (string ids, ratings, dates)."""
    root = tmp_path / "shop"
    root.mkdir()
    rows = [f"u{u:02d},SKU-{1000 + (u + j) % 8},{1 + j % 5},2024-01-{1 + j:02d}" for u in range(8) for j in range(6)]
    (root / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    return root


def test_benchmark_set_model_params_points_to_models_entries(tmp_path):
    # `recgoat train --set model.params.x=…` carried over to the benchmark used to say only
    # "model: Extra inputs are not permitted"; it must show the benchmark's spelling
    res = CliRunner().invoke(app, ["benchmark", "--dataset", str(_shop(tmp_path)), "--models", "lightgcn",
                                   "--set", "model.params.embedding_dim=16", "--out", str(tmp_path / "b"), "-q"])
    assert res.exit_code == 1, res.output
    assert "model: unknown key (did you mean 'models'?" in res.output
    assert "--set models.lightgcn.params.embedding_dim=16" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "b").exists()


def test_benchmark_set_unknown_dataset_entry_lists_the_entries(tmp_path):
    # a dataset given as a folder is reported as `shop` but keyed by its path in --set: say so
    shop = _shop(tmp_path)
    res = CliRunner().invoke(app, ["benchmark", "--dataset", str(shop), "--models", "vbpr",
                                   "--set", "datasets.shop.features=feats", "--out", str(tmp_path / "b"), "-q"])
    assert res.exit_code == 1, res.output
    flat = " ".join(res.output.split())
    assert "no entry 'shop' in datasets; its entries:" in flat and repr(str(shop)) in flat, res.output


def test_a_text_template_over_columns_of_ones_own_is_encoded(tmp_path):
    """Item text in columns the loader does not recognise (`name`, `summary`): `encode text --template
    '{name}. {summary}'` was refused ("has no item text"), though the template may name any column."""
    import json

    shop = _shop(tmp_path)
    (shop / "items.csv").write_text("item_id,name,summary\n" + "\n".join(
        f"SKU-{1000 + i},Tent {i},A {2 + i}-person tent" for i in range(8)) + "\n")
    out = tmp_path / "f"
    res = CliRunner().invoke(app, ["encode", "text", str(shop), "--template", "{name}. {summary}",
                                   "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "text.json").read_text())
    assert manifest["text_template"] == "{name}. {summary}" and manifest["example_text"].startswith("Tent ")
    plain = CliRunner().invoke(app, ["encode", "text", str(shop), "--out", str(tmp_path / "g"), "--no-progress"])
    assert plain.exit_code == 1 and "or a --template over its columns" in " ".join(plain.output.split())


def test_an_image_that_cannot_be_decoded_is_not_exported(tmp_path):
    """export copied a corrupt image file into the artefact and the service served it as image/jpeg: a broken
    picture on the page. It is left out (the item shows without a picture), with one warning."""
    import pandas as pd
    import pytest
    from PIL import Image

    from recgoat.datasets import load
    from recgoat.models import get_model_class
    from recgoat.serving.artifacts import export_run

    shop = _shop(tmp_path)
    (shop / "items.csv").write_text("item_id,title\n" + "\n".join(f"SKU-{1000 + i},Tent {i}" for i in range(8)))
    (shop / "images").mkdir()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(shop / "images" / "SKU-1000.png")
    (shop / "images" / "SKU-1001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = load(str(shop))
    model = get_model_class("mostpop").build(ds)
    with pytest.warns(UserWarning, match=r"1 item image\(s\) could not be decoded .* e\.g\. item SKU-1001: "):
        out = export_run(model, ds, tmp_path / "artefact")
    images = pd.read_parquet(out / "items.parquet").set_index("item_id")["image"]
    assert pd.isna(images["SKU-1001"]) and images["SKU-1000"].startswith("images/")
    assert (out / images["SKU-1000"]).is_file()
