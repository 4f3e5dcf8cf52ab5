"""A newcomer's journey through the `recgoat` commands on catalogues of their own, end to end.

Own catalogues: text only, images only, ratings with a temporal split, cold items and one-interaction users,
and ids with leading zeros ("007" must stay "007"); and messages that must point to the right spelling
(`benchmark --set`, `encode text --template` over one's own columns, an undecodable image left out of `export`).

Everything here is tiny (tens of users and items, tiny PIL images, features imported from MMRec-layout
matrices rather than encoded), so no text or image model runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.datasets import load
from recgoat.features import import_mmrec, load_features
from recgoat.models import get_model_class
from recgoat.training import TrainConfig
from test_features_store_validation import mmrec_mapping

N_USERS, N_ITEMS = 12, 11  # 11 items: (3k + 5j) mod 11 gives each user 7 distinct items


def _catalogue(root: Path, users: list[str] | None = None, items: list[str] | None = None,
               ratings: bool = False) -> Path:
    """``interactions.csv`` of 7 interactions per user (enough for the default 5-core), optionally rated,
    with timestamps."""
    users = users or [f"u{u:02d}" for u in range(N_USERS)]
    items = items or [f"i{i:02d}" for i in range(N_ITEMS)]
    root.mkdir(parents=True)
    rows = [f"{u},{items[(k * 3 + j * 5) % len(items)]}" + (f",{1 + (k + j) % 5}" if ratings else "")
            + f",{1_600_000_000 + k * 1000 + j * 86400}" for k, u in enumerate(users) for j in range(7)]
    header = "user_id,item_id" + (",rating" if ratings else "") + ",timestamp"
    (root / "interactions.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


def _features(ds, tmp_path: Path, kind: str = "image_feat.npy", dim: int = 8) -> Path:
    """A feature folder for ``ds`` holding one random item matrix (imported, so no encoder runs)."""
    src = tmp_path / "mmrec"
    src.mkdir(exist_ok=True)
    np.save(src / kind, np.random.default_rng(0).normal(size=(ds.n_items, dim)).astype(np.float32))
    mmrec_mapping(src, ds)
    return import_mmrec(ds, src, tmp_path / "feats")


def test_images_folder_without_an_item_table_is_read(tmp_path):
    """(b) `images/<item_id>.jpg` beside interactions.csv and no items file: the pictures were ignored
    (`datasets info` said "images": 0, `encode image` had nothing to encode)."""
    items = [f"{i:03d}" for i in range(N_ITEMS)]
    root = _catalogue(tmp_path / "shop", items=items)
    (root / "images").mkdir()
    for k, i in enumerate(items):
        Image.new("RGB", (4, 4), (20 * k, 0, 0)).save(root / "images" / f"{i}.jpg")
    ds = load(str(root))
    assert ds.stats()["images"] == N_ITEMS
    images = ds.items.set_index("item_id")["image"]
    assert Path(images["007"]).name == "007.jpg" and set(ds.item_ids) == set(items)
    # the same counts on the command line
    res = CliRunner().invoke(app, ["datasets", "info", str(root)])
    assert res.exit_code == 0 and f'"images": {N_ITEMS}' in res.output, res.output


@pytest.mark.parametrize("model", ["freedom", "vbpr", "bm3", "lgmrec"])
def test_a_peer_run_summary_names_the_feature_views_it_used(tmp_path, model):
    """(b) A peer trained on an image-only folder said nothing about which views it read: `recgoat train`
    printed "feature views used: …" for RecGOAT only, and result.json's summary had no modalities."""
    root = _catalogue(tmp_path / "shop")
    ds = load(str(root))
    feats = _features(ds, tmp_path)
    m = get_model_class(model).build(ds, {"embedding_dim": 8}, features=load_features(ds, feats))
    assert m.summary["modalities_used"] == ["image"]
    if model == "freedom":  # the CLI line, once
        res = CliRunner().invoke(app, ["train", "--dataset", str(root), "--model", model, "--features", str(feats),
                                       "--epochs", "1", "--run-dir", str(tmp_path / "run"),
                                       "--set", "model.params.embedding_dim=8"])
        assert res.exit_code == 0, res.output
        assert "feature views used: image" in res.output, res.output


def test_train_with_a_split_of_its_own_says_how_to_encode_for_it(tmp_path):
    """(c) `recgoat train --set data.split=temporal --features F` with F from `recgoat encode` (which prepares
    with the default random split) was refused with "the data changed since encoding; re-run `recgoat encode
    text`": advice that fails the same way again, since encode has no --split."""
    root = _catalogue(tmp_path / "rated", ratings=True)
    feats = _features(load(str(root)), tmp_path, "text_feat.npy")
    res = CliRunner().invoke(app, ["train", "--dataset", str(root), "--model", "vbpr", "--features", str(feats),
                                   "--epochs", "1", "--run-dir", str(tmp_path / "run"),
                                   "--set", "data.split=temporal"])
    flat = " ".join(str(res.exception).split())  # main() prints it as `error: …`
    assert res.exit_code == 1, res.output
    assert "re-run `recgoat encode" not in flat, flat
    assert f"`recgoat datasets prepare {root} --split temporal --out DIR`), then encode and train on DIR" in flat
    assert f"(`recgoat encode all DIR --reuse-from {feats}` copies its item text and image matrices" in flat
    # and that route works: prepared with the split, encoded (imported) for it, trained
    prepared = tmp_path / "prepared"
    assert CliRunner().invoke(app, ["datasets", "prepare", str(root), "--split", "temporal",
                                    "--out", str(prepared)]).exit_code == 0
    feats2 = tmp_path / "f2"
    ds = load(str(prepared))
    (tmp_path / "m2").mkdir()
    np.save(tmp_path / "m2" / "text_feat.npy", np.ones((ds.n_items, 4), np.float32))
    mmrec_mapping(tmp_path / "m2", ds)
    import_mmrec(ds, tmp_path / "m2", feats2)
    ok = CliRunner().invoke(app, ["train", "--dataset", str(prepared), "--model", "vbpr", "--features", str(feats2),
                                  "--epochs", "1", "--run-dir", str(tmp_path / "run2")])
    assert ok.exit_code == 0 and "feature views used: text" in ok.output, ok.output


def test_recommend_an_id_without_its_leading_zeros_points_to_the_exact_one(tmp_path):
    """(e) Ids round-trip exactly ("007" stays "007"); `recommend --user 7` said only "unknown user id '7'",
    and `--user u00` for a user dropped by the 5-core filter (d) did not say why."""
    from recgoat.serving.artifacts import export_run

    users = [f"{u:03d}" for u in range(N_USERS)]
    root = _catalogue(tmp_path / "zeros", users=users, items=[f"{i:03d}" for i in range(N_ITEMS)])
    with open(root / "interactions.csv", "a") as f:
        f.write("lonely,001,1600000000\n")  # one interaction: dropped by the default 5-core filter
    ds = load(str(root))
    assert "007" in set(ds.user_ids) and "lonely" not in set(ds.user_ids)
    model = get_model_class("mostpop").build(ds)
    model.fit(ds, TrainConfig(epochs=1, progress=False))
    art = export_run(model, ds, tmp_path / "art")
    run = CliRunner()
    exact = run.invoke(app, ["recommend", str(art), "--user", "007", "-k", "3"])
    assert exact.exit_code == 0 and "top 3 for user 007" in exact.output, exact.output
    near = run.invoke(app, ["recommend", str(art), "--user", "7"])
    assert near.exit_code == 1 and "did you mean '007'?" in " ".join(near.output.split()), near.output
    dropped = " ".join(run.invoke(app, ["recommend", str(art), "--user", "lonely"]).output.split())
    assert "k-core filter" in dropped, dropped


def test_encode_image_names_the_pictures_that_match_no_item(tmp_path):
    """(b) An images/ folder whose files are not named after item ids (`photo-1.jpg`): `encode image` said the
    dataset has no "images/ folder", though there is one: say what it holds and how the files must be named."""
    root = _catalogue(tmp_path / "shop")
    (root / "images").mkdir()
    Image.new("RGB", (4, 4)).save(root / "images" / "photo-1.jpg")
    res = CliRunner().invoke(app, ["encode", "image", str(root), "--out", str(tmp_path / "f"), "--no-progress"])
    flat = " ".join(res.output.split())  # `encode` prints its own `error: …` line
    assert res.exit_code == 1, res.output
    assert "its images/ folder holds 1 picture (e.g. 'photo-1.jpg') but none is named after an item id " \
           "(e.g. 'i00.jpg')" in flat, flat


# ------------------------------------------------------------------ messages that point to the right spelling
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
