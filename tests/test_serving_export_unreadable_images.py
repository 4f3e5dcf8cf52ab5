"""`recgoat export` leaves out the images the image encoder could not read, by the encoder's own test.

A walkthrough's truncated JPEG (item 258 of its shop) was reported by `recgoat encode image` as unreadable ("image
file is truncated"), but export checked images with Pillow's ``verify()``, which reads headers only: it warned about
a corrupt file (item 50) alone, copied the truncated one into the artefact, and `recgoat serve` answered
GET /items/258/image with 200 image/jpeg, a broken picture. Export now uses the encoder's reading
(:func:`recgoat.features.image.image_problem`), and the service answers 404 as for an item without an image.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from serving_helpers import shop_rows, train_shop


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_a_truncated_jpeg_the_encoder_refuses_is_not_exported_nor_served(tmp_path):
    from fastapi.testclient import TestClient

    from recgoat.datasets import PrepareConfig, load_raw, prepare
    from recgoat.features.image import ImageEncoder
    from recgoat.serving import create_app, export_run, load_run
    from features_helpers import TinyNet

    items = [f"i{k}" for k in range(6)]
    shop = tmp_path / "shop"
    model, _ = train_shop(shop, shop_rows([f"u{u}" for u in range(6)], items), items)
    (shop / "images").mkdir()
    for k in range(6):
        data = jpeg(k)
        # i2 cut in half (a download or copy that stopped), i3 no image at all
        (shop / "images" / f"i{k}.jpg").write_bytes(data[: len(data) // 2] if k == 2 else
                                                    b"\xff\xd8\xff\xe0 not really" if k == 3 else data)
    name, inter, item_table, fields, info = load_raw(str(shop))
    ds = prepare(name, inter, item_table, fields, PrepareConfig(k_core=0), info)
    path_of = dict(zip(ds.item_ids, ds.image_sources()))
    with Image.open(path_of["i2"]) as img:
        img.verify()  # what export checked: it passes

    # the encoder's verdict: i2 and i3 unreadable
    _, mask, problems = ImageEncoder(TinyNet()).encode([path_of[i] for i in ds.item_ids])
    unreadable = {str(ds.item_ids[r]) for r in problems.unreadable}
    assert unreadable == {"i2", "i3"} and not mask[[list(ds.item_ids).index(i) for i in unreadable]].any()
    assert "image file is truncated" in problems.unreadable[list(ds.item_ids).index("i2")]

    with pytest.warns(UserWarning, match=r"2 item image\(s\) could not be decoded .* e\.g\. item i2: "
                                         r".*i2\.jpg: OSError: image file is truncated"):
        out = export_run(model, ds, tmp_path / "art")
    images = pd.read_parquet(out / "items.parquet").set_index("item_id")["image"]
    assert {i for i in images.index if pd.isna(images[i])} == unreadable  # as the encoder's verdict
    assert not (out / "images" / f"{list(ds.item_ids).index('i2')}.jpg").exists()
    with TestClient(create_app(load_run(out)), raise_server_exceptions=False) as c:
        for item in ds.item_ids:
            r = c.get(f"/items/{item}/image")
            assert r.status_code == (404 if item in unreadable else 200), (item, r.status_code)
