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
    assert "model: Extra inputs are not permitted" in res.output
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
