"""Serving items without training interactions (cold-start items); also the page's ?user_id= and image content types.

Serving QA, sixth pass: the web page's ``?user_id=``, image content types from the files' bytes, and similar
items for items without training interactions.

A tiny catalogue split leave-one-out: every user's last interaction is one of five "new" items (``x0``..``x4``),
which so end up in the test split only and have no training interaction. LightGCN (ID embeddings only) and VBPR
(with text features in which ``x<n>`` reads like ``i<n>``) are trained on it and exported with every split as
seen history; a few items have pictures, one a PNG saved as ``.jpg``.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib
import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat.serving import create_app, export_run, load_run

from serving_helpers import browser_page, serve_in_thread

pytest.importorskip("httpx")

N_USERS, N_OLD, N_NEW = 30, 20, 5
SPECIAL_USER = "ann & bob/1 é"  # survives a URL only when encoded
IMAGES = {"i0": ("PNG", ".jpg"), "i1": ("JPEG", ".jpg"), "i2": ("PNG", ".png"), "i3": ("WEBP", ".webp"),
          "i4": ("JPEG", ".jpeg")}


def _user(u: int) -> str:
    return SPECIAL_USER if u == 0 else f"u{u}"


def _picture(fmt: str, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 32), colour).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The prepared dataset (split leave-one-out: the new items have no training interaction)."""
    from recgoat.datasets import PrepareConfig, load_raw, prepare

    folder = tmp_path_factory.mktemp("qa6") / "shop"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [(_user(u), f"i{it}", 1000 * u + j) for u in range(N_USERS)
            for j, it in enumerate(rng.choice(N_OLD, 8, replace=False))]
    rows += [(_user(u), f"x{u % N_NEW}", 10**6 + u) for u in range(N_USERS)]  # each user's last
    items = [f"i{i}" for i in range(N_OLD)] + [f"x{i}" for i in range(N_NEW)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(folder / "interactions.csv", index=False)
    pd.DataFrame({"item_id": items, "title": [f"Title {i}" for i in items]}).to_csv(folder / "items.csv", index=False)
    for n, (item, (fmt, suffix)) in enumerate(IMAGES.items()):
        (folder / "images" / f"{item}{suffix}").write_bytes(_picture(fmt, (40 * n, 90, 200)))
    name, inter, item_table, fields, info = load_raw(str(folder))
    ds = prepare(name, inter, item_table, fields, PrepareConfig(k_core=0, split="loo"), info)
    counts = np.bincount(ds.csr("train").indices, minlength=ds.n_items)
    new = [ds.item_ids.tolist().index(f"x{i}") for i in range(N_NEW)]
    assert (counts[new] == 0).all() and (np.delete(counts, new) > 0).all()  # the fixture is what it says
    return ds


def _train(cls, ds, features=None):
    from recgoat.training.trainer import TrainConfig

    torch.manual_seed(0)
    model = cls.build(ds, {"embedding_dim": 16}, features=features)
    model.fit(ds, TrainConfig(epochs=3, lr=5e-3, progress=False))
    model.eval()
    return model


@pytest.fixture(scope="module")
def id_folder(shop, tmp_path_factory) -> Path:
    from recgoat.models import LightGCN

    return export_run(_train(LightGCN, shop), shop, tmp_path_factory.mktemp("qa6-lightgcn") / "artefact")


@pytest.fixture(scope="module")
def id_run(id_folder):
    return load_run(id_folder)


@pytest.fixture(scope="module")
def mm_run(shop, tmp_path_factory):
    from recgoat.features.store import Features
    from recgoat.models import VBPR

    rng = np.random.default_rng(1)
    base = rng.normal(size=(N_OLD, 32)).astype(np.float32)
    # x<n>'s text is i<n>'s, slightly changed: its content neighbour is known
    text = np.stack([base[int(i[1:])] + (0.05 * rng.normal(size=32) if i[0] == "x" else 0) for i in shop.item_ids])
    model = _train(VBPR, shop, Features(text=text.astype(np.float32)))
    return load_run(export_run(model, shop, tmp_path_factory.mktemp("qa6-vbpr") / "artefact"))


def _client(run):
    from fastapi.testclient import TestClient

    return TestClient(create_app(run), raise_server_exceptions=False)


def _ids(body: dict) -> list[str]:
    return [x["item_id"] for x in body["items"]]


def _rehash(folder: Path, *names: str) -> None:
    meta = json.loads((folder / "artifact.json").read_text())
    for name in names:
        meta["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "artifact.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------- untrained items
def test_the_artefact_tells_which_items_were_trained_and_on_what(id_run, mm_run, shop):
    counts = np.bincount(shop.csr("train").indices, minlength=shop.n_items)
    for run in (id_run, mm_run):
        np.testing.assert_array_equal(run.item_train_counts, counts)
    assert id_run.item_features == () and id_run.id_only
    assert mm_run.item_features == ("text",) and not mm_run.id_only


def test_an_id_only_model_lists_no_similar_items_for_an_item_it_never_trained_on(id_run):
    with _client(id_run) as c:
        for new in (f"x{i}" for i in range(N_NEW)):
            r = c.get("/similar-items", params={"item_id": new, "k": 5})
            body = r.json()
            assert r.status_code == 200 and body["items"] == [] and body["training_interactions"] == 0
            assert body["item"]["item_id"] == new
            assert f"item {new!r} had no interactions in the training data" in body["note"]
            assert "no similar items" in body["note"]


def test_an_id_only_model_never_lists_an_untrained_item(id_run, shop):
    """Trained items' neighbours are the trained items alone, in the cosine order (ties by id) of before."""
    counts = np.bincount(shop.csr("train").indices, minlength=shop.n_items)
    trained = np.flatnonzero(counts)
    unit = id_run.item_emb / np.linalg.norm(id_run.item_emb, axis=1, keepdims=True)
    with _client(id_run) as c:
        for i in trained[:6].tolist():
            body = c.get("/similar-items", params={"item_id": id_run.item_ids[i], "k": id_run.n_items}).json()
            cos = unit[trained] @ unit[i]
            order = trained[np.lexsort((trained, -cos))]
            expected = [id_run.item_ids[j] for j in order if j != i]
            assert _ids(body) == expected and not any(x.startswith("x") for x in _ids(body))
            assert body["training_interactions"] == int(counts[i]) and body["note"] is None
            np.testing.assert_allclose([x["score"] for x in body["items"]],
                                       np.sort(cos[trained != i])[::-1], atol=1e-5)


def test_a_model_with_item_features_still_lists_items_without_training_interactions(mm_run):
    """VBPR embeds an item by its text too: an untrained item's neighbours are its content's, and it is listed."""
    unit = mm_run.item_emb / np.linalg.norm(mm_run.item_emb, axis=1, keepdims=True)
    with _client(mm_run) as c:
        body = c.get("/similar-items", params={"item_id": "x1", "k": 3}).json()
        assert _ids(body)[0] == "i1"  # the item whose text it shares
        assert body["training_interactions"] == 0 and "text features alone" in body["note"]
        i = mm_run.item_index["i1"]
        full = c.get("/similar-items", params={"item_id": "i1", "k": mm_run.n_items}).json()
        cos = unit @ unit[i]
        cos[i] = -np.inf
        assert _ids(full) == [mm_run.item_ids[j] for j in np.argsort(-cos, kind="stable")[:mm_run.n_items - 1]]
        assert "x1" in _ids(full) and full["note"] is None


def test_the_cli_says_why_an_untrained_item_has_no_similar_items(id_folder):
    from typer.testing import CliRunner

    from recgoat.serving.cli import app

    out = CliRunner().invoke(app, ["recommend", str(id_folder), "--item", "x2", "-k", "3"])
    assert out.exit_code == 0, out.output
    assert "note: item 'x2' had no interactions in the training data" in " ".join(out.output.split())
    trained = CliRunner().invoke(app, ["recommend", str(id_folder), "--item", "i2", "-k", "3"])
    assert trained.exit_code == 0 and "note:" not in trained.output


def test_a_model_saved_before_feature_digests_is_read_by_its_dims(id_folder, tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(id_folder, folder)
    meta = json.loads((folder / "model" / "model.json").read_text())
    del meta["feature_digests"]
    meta["dims"] = {"text_dim": 0, "image_dim": 0}
    (folder / "model" / "model.json").write_text(json.dumps(meta))
    _rehash(folder, "model/model.json")
    assert load_run(folder).id_only
    meta["dims"] = {"text_dim": 8, "image_dim": 0}
    (folder / "model" / "model.json").write_text(json.dumps(meta))
    _rehash(folder, "model/model.json")
    assert load_run(folder).item_features == ("text",)


# ------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("head,media", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00\r", "image/png"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00", "image/gif"), (b"GIF87a\x01\x00\x01\x00\x00\x00", "image/gif"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"), (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
    (b"<html><body>", None), (b"", None), (b"\xff\xd8", None)])
def test_image_types_are_sniffed_from_the_first_bytes(head, media):
    from recgoat.serving.app import sniff_image

    assert sniff_image(head) == media


def test_an_image_is_served_with_the_type_its_bytes_show(id_run):
    with _client(id_run) as c:
        for item, (fmt, suffix) in IMAGES.items():
            assert id_run.image_ref(id_run.item_index[item]).endswith(suffix)  # the name export kept
            r = c.get(f"/items/{item}/image")
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == f"image/{fmt.lower()}"  # i0: a PNG named .jpg is image/png
            assert r.headers["x-content-type-options"] == "nosniff"
            head = c.head(f"/items/{item}/image")
            assert head.status_code == 200 and head.headers["content-type"] == r.headers["content-type"]


def test_a_file_that_is_no_image_is_refused_not_served_as_jpeg(id_folder, tmp_path, monkeypatch):
    import shutil

    import recgoat.serving.app as app_module

    folder = tmp_path / "edited"
    shutil.copytree(id_folder, folder)
    run = load_run(id_folder)
    rel = run.image_ref(run.item_index["i1"])
    (folder / rel).write_bytes(b"<html><script>alert(1)</script></html>")  # named .jpg
    _rehash(folder, rel)
    sniffed: list[bytes] = []
    real = app_module.sniff_image
    monkeypatch.setattr(app_module, "sniff_image", lambda head: sniffed.append(head) or real(head))
    with _client(load_run(folder)) as c:
        r = c.get("/items/i1/image")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert r.json() == {"detail": f"item 'i1' has no image to serve: its file {rel} is not a JPEG, PNG, GIF "
                                      f"or WebP image"}
        assert c.get("/items/i0/image").headers["content-type"] == "image/png"
        for _ in range(3):  # each file's bytes are read once
            c.get("/items/i1/image")
            c.get("/items/i0/image")
    assert len(sniffed) == 2


# ------------------------------------------------------------------------------------------- the page
def test_the_page_reads_and_keeps_user_id_in_its_url(id_run):
    """Without a browser: the page is served with a query, and its script reads and writes user_id."""
    with _client(id_run) as c:
        r = c.get("/", params={"user_id": SPECIAL_USER})
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        page = r.text
    assert 'new URLSearchParams(location.search).get("user_id")' in page
    assert re.search(r"searchParams\.set\(\"user_id\", uid\)", page) and "history.replaceState" in page


def test_a_user_id_in_the_page_url_opens_that_user_in_chromium(id_run, tmp_path):
    run = id_run
    u = run.user_index[SPECIAL_USER]
    with _client(run) as c:
        recs = _ids(c.get("/recommend", params={"user_id": SPECIAL_USER, "k": 10}).json())
        other = _ids(c.get("/recommend", params={"user_id": "u7", "k": 10}).json())
    newest = run.item_ids[int(run.recent_history(u, 1)[0])]
    assert newest.startswith("x")  # the user's test item, untrained
    with serve_in_thread(create_app(run)) as base, browser_page(tmp_path / "profile") as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/?user_id=" + SPECIAL_USER.replace("&", "%26").replace(" ", "+"), timeout=30_000)
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        page.wait_for_selector("#recs .card", timeout=30_000)
        assert page.input_value("#user") == SPECIAL_USER
        assert page.eval_on_selector_all("#recs .card", "els => els.map(e => e.dataset.itemId)") == recs
        assert SPECIAL_USER in page.inner_text("#history-title")
        # the untrained item's similar items: none, and the page says why
        page.click(f"#history .card[data-item-id='{newest}'] button")
        page.wait_for_selector("#similar-note:not(.hidden)", timeout=30_000)
        assert "had no interactions in the training data" in page.inner_text("#similar-note")
        assert page.locator("#similar .card").count() == 0
        # another user picked: the URL follows, and opening it shows that user
        page.fill("#user", "u7")
        page.click("#show")
        page.wait_for_function("() => document.querySelector('#recs-title').textContent.includes('u7')",
                               timeout=30_000)
        assert parse_qs(urlsplit(page.url).query) == {"user_id": ["u7"]}
        page.goto(page.url, timeout=30_000)
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        page.wait_for_selector("#recs .card", timeout=30_000)
        assert page.eval_on_selector_all("#recs .card", "els => els.map(e => e.dataset.itemId)") == other
        # a trained item's similar items, no note
        page.click("#recs .card button")
        page.wait_for_selector("#similar .card", timeout=30_000)
        assert page.locator("#similar-note").is_hidden()
        # the shared user's id goes back into the URL encoded, and comes out whole
        page.fill("#user", SPECIAL_USER)
        page.click("#show")
        page.wait_for_function(f"() => document.querySelector('#recs-title').textContent.includes({SPECIAL_USER!r})",
                               timeout=30_000)
        assert parse_qs(urlsplit(page.url).query) == {"user_id": [SPECIAL_USER]}
        # an unknown user in the URL: the service's message, no cards
        page.goto(base + "/?user_id=nobody", timeout=30_000)
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert "unknown user_id 'nobody'" in page.inner_text("#status")
        assert page.locator("#recs .card").count() == 0
        assert not errors, errors


def test_a_title_that_is_the_word_none_is_shown_and_a_missing_one_is_not(tmp_path):
    """Titles "None", "nan" and "<NA>" are words (a film may be called so): shown as such by the service and the
    CLI; a missing title falls back to the item id, as before."""
    from fastapi.testclient import TestClient

    from recgoat.serving.artifacts import display_text, display_titles

    from serving_helpers import train_shop

    items = ["a", "b", "c", "d"]
    rows = [(f"u{u}", it, 10 * u + j) for u in range(6) for j, it in enumerate(items)]
    model, ds = train_shop(tmp_path / "shop", rows, items, titles=["None", "nan", "<NA>", None])
    export_run(model, ds, tmp_path / "art")
    run = load_run(tmp_path / "art")
    shown = dict(zip(run.item_ids, run.titles))
    assert shown == {"a": "None", "b": "nan", "c": "<NA>", "d": "d"}
    client = TestClient(create_app(run))
    listed = {it["item_id"]: it["title"] for it in client.get("/items", params={"limit": 10}).json()["items"]}
    assert listed == shown
    assert [display_text(v) for v in (None, float("nan"), pd.NA, "None", "nan")] == ["", "", "", "None", "nan"]
    assert display_titles(pd.DataFrame({"title": ["None", None]}), ["x", "y"]) == ["None", "y"]
