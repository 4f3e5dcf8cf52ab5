"""The service's web page in headless Chromium: the cold-start basket (search, add, recommend) and the fallback
for a picture that does not load. Until now only a user's page (``?user_id=``) was driven in a browser: the
cold-start recommendation clearing the user from the page's URL, and a broken picture shown as "no image" rather
than a broken-image icon, were checked in the page's source only.

A catalogue of 12 items ("Title i0" …), four with pictures; BPR-MF (d 8) trained on it for 30 epochs (one batch each) and exported.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat.serving import create_app, export_run, load_run

from serving_helpers import browser_page, serve_in_thread

pytest.importorskip("httpx")

ITEMS = [f"i{i}" for i in range(12)]
PICTURED = ("i0", "i1", "i2", "i3")
BROKEN = "i1"  # its picture's bytes are replaced by HTML after export: the service refuses to serve it


@pytest.fixture(scope="module")
def artefact(tmp_path_factory) -> Path:
    from PIL import Image

    from recgoat.datasets import PrepareConfig, load_raw, prepare
    from recgoat.models import BPRMF
    from recgoat.training.trainer import TrainConfig

    root = tmp_path_factory.mktemp("page")
    shop = root / "shop"
    (shop / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}", 1000 * u + j) for u in range(20) for j, i in enumerate(rng.choice(12, 6, replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(shop / "interactions.csv", index=False)
    pd.DataFrame({"item_id": ITEMS, "title": [f"Title {i}" for i in ITEMS]}).to_csv(shop / "items.csv", index=False)
    for n, item in enumerate(PICTURED):
        buf = io.BytesIO()
        Image.new("RGB", (24, 32), (50 * n, 90, 200)).save(buf, format="PNG")
        (shop / "images" / f"{item}.png").write_bytes(buf.getvalue())
    name, inter, items, fields, info = load_raw(str(shop))
    ds = prepare(name, inter, items, fields, PrepareConfig(k_core=0), info)
    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 8})
    model.fit(ds, TrainConfig(epochs=30, lr=1e-2, progress=False))
    model.eval()
    folder = export_run(model, ds, root / "artefact")
    # the broken picture: other bytes under the name export kept, re-hashed so the artefact still loads
    rel = load_run(folder).image_ref(ds.item_ids.tolist().index(BROKEN))
    (folder / rel).write_bytes(b"<html>not a picture</html>")
    meta = json.loads((folder / "artifact.json").read_text())
    meta["files"][rel] = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    (folder / "artifact.json").write_text(json.dumps(meta))
    return folder


def basket(page) -> list[str]:
    return page.eval_on_selector_all("#basket span", "els => els.map(e => e.textContent)")


def _card_ids(page, panel: str) -> list[str]:
    return page.eval_on_selector_all(f"#{panel} .card", "els => els.map(e => e.dataset.itemId)")


def test_cold_start_basket_recommends_and_leaves_the_users_page(artefact, tmp_path):
    from fastapi.testclient import TestClient

    run = load_run(artefact)
    with TestClient(create_app(run)) as c:
        expected = [x["item_id"] for x in c.post("/recommend", json={"item_ids": ["i2", "i5"], "k": 10}).json()["items"]]
    with serve_in_thread(create_app(run)) as base, browser_page(tmp_path / "profile") as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/?user_id=u3", timeout=30_000)
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        page.wait_for_selector("#history .card", timeout=30_000)
        for title in ("Title i2", "Title i5"):  # searched, then picked from the results
            page.fill("#search", title)
            page.wait_for_function(f"() => [...document.querySelectorAll('#results li')]"
                                   f".some(li => li.textContent === {title!r})", timeout=30_000)
            page.click(f"#results li:text-is('{title}')")
        assert basket(page) == ["Title i2 ✕", "Title i5 ✕"]
        page.click("#go-cold")
        page.wait_for_function("() => document.querySelector('#recs-title').textContent.includes('new user')",
                               timeout=30_000)
        assert page.inner_text("#recs-title") == "Recommendations for a new user (2 liked items)"
        assert _card_ids(page, "recs") == expected  # what POST /recommend gives for the basket
        assert page.locator("#history-panel").is_hidden()  # no longer a user's page: history hidden …
        assert "user_id" not in parse_qs(urlsplit(page.url).query)  # … and the user gone from the URL
        # an item removed from the basket, then the basket cleared
        page.click("#basket span:has-text('Title i2')")
        assert basket(page) == ["Title i5 ✕"]
        page.click("#clear")
        assert basket(page) == []
        assert not errors, errors


def test_a_picture_that_does_not_load_shows_no_image(artefact, tmp_path):
    run = load_run(artefact)
    # a user whose history holds both the broken picture and a good one
    ds_items = list(run.item_ids)
    user = next(u for u in run.user_ids
                if {BROKEN, "i0"} <= {ds_items[i] for i in run.recent_history(run.user_index[u], 12)})
    with serve_in_thread(create_app(run)) as base, browser_page(tmp_path / "profile") as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + f"/?user_id={user}&k=12", timeout=30_000)
        page.fill("#k", "12")
        page.click("#show")
        page.wait_for_selector(f"#history .card[data-item-id='{BROKEN}']", timeout=30_000)
        broken = f"#history .card[data-item-id='{BROKEN}'] .img"
        page.wait_for_function(f"() => document.querySelector({broken!r}).textContent === 'no image'",
                               timeout=30_000)
        # the broken <img> was replaced by the words: no broken-image icon left in the card
        assert page.locator(f"{broken} img").count() == 0
        good = f"#history .card[data-item-id='i0'] .img img"
        page.wait_for_function(f"() => document.querySelector({good!r}).complete", timeout=30_000)
        assert page.eval_on_selector(good, "el => el.naturalWidth") == 24  # the real picture, decoded
        # an item without any picture says so from the start
        plain = next(i for i in (ds_items[j] for j in run.recent_history(run.user_index[user], 12))
                     if i not in PICTURED)
        assert page.inner_text(f"#history .card[data-item-id='{plain}'] .img") == "no image"
        assert not errors, errors
