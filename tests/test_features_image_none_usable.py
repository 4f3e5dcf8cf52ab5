"""An image encode in which not one item gets an image is an error, not a matrix of zero rows.

A walkthrough's catalogue of 1,558 image URLs on a host refusing every connection printed "0/1558 items with an
image … download_failed: 1558", exited 0 and wrote an all-zero image.npy (mask all False), which models then trained
on. Now `encode image`, `encode all` and `train --features auto` refuse it with one message naming the reasons and
their counts, write no image.npy, and a run once the images can be had encodes them.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import run_main  # noqa: E402
from PIL import Image  # noqa: E402

from features_helpers import TinyNet, free_port, toy_dataset  # noqa: E402
from recgoat.errors import DataError  # noqa: E402
from recgoat.features import FeatureConfig, encode_all, load_features  # noqa: E402
from recgoat.features.store import read_manifest  # noqa: E402

N = 6


def catalogue(root: Path, images: list[str], text: bool = False) -> Path:
    """A generic-layout folder of ``N`` items (image column ``images``), 8 users with 5 items each (a 5-core)."""
    root.mkdir(parents=True)
    rows = ["user_id,item_id"] + [f"u{u},i{(u + j) % N}" for u in range(8) for j in range(5)]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N)], "image_url": images})
    if text:
        items.insert(1, "title", [f"Tent number {i}" for i in range(N)])
    items.to_csv(root / "items.csv", index=False)
    return root


def png_bytes(i: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (40 * i, 200 - 30 * i, 90)).save(buf, format="PNG")
    return buf.getvalue()


class ImageServer:
    """An HTTP server on 127.0.0.1:``port`` answering ``/<k>.png`` with a PNG (a host that is up again)."""

    def __init__(self, port: int):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = png_bytes(int(self.path.strip("/").split(".")[0]))
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def cfg(**kw) -> FeatureConfig:
    return FeatureConfig(image_model=TinyNet(), image_batch_size=2, chunk_size=4, **kw)


def test_every_download_refused_is_one_error_and_a_later_run_encodes(tmp_path, capsys, monkeypatch):
    port = free_port()  # nothing listens on it: every connection is refused
    data = catalogue(tmp_path / "shop", [f"http://127.0.0.1:{port}/{i}.png" for i in range(N)])
    out = tmp_path / "feats"
    code, err = run_main(monkeypatch, capsys, "encode", "image", str(data), "--out", str(out),
                         "--no-progress")
    assert code == 1
    line = " ".join(err.split())
    assert err.count("error:") == 1 and f"error: {data}: dataset shop has no item image that could be used: " \
                                       f"none of its 6 items got one (download_failed: 6; e.g. item i0: " \
                                       f"http://127.0.0.1:{port}/0.png: download failed: ConnectError" in line, err
    assert "nothing to encode, no image.npy written; the failed downloads are tried again by the next run" in line
    assert not (out / "image.npy").exists() and not (out / "image.json").exists()

    # the host is up again: the same command downloads and encodes every image (nothing remembered the failures)
    from recgoat.datasets import load

    srv = ImageServer(port)
    try:
        encode_all(load(str(data)), out, cfg(), which="image", progress=False)
    finally:
        srv.close()
    f = load_features(load(str(data)), out)
    assert f.image_mask.all() and read_manifest(out / "image.json")["images"]["ok"] == N


def test_encode_all_and_features_auto_refuse_it_the_same_way(tmp_path, capsys, monkeypatch):
    port = free_port()
    data = catalogue(tmp_path / "shop", [f"http://127.0.0.1:{port}/{i}.png" for i in range(N)])
    code, err = run_main(monkeypatch, capsys, "encode", "all", str(data), "--out", str(tmp_path / "all"),
                         "--no-progress")
    assert code == 1 and err.count("error:") == 1, err
    expected = " ".join(err.split())
    assert "has no item image that could be used" in expected and not (tmp_path / "all" / "image.npy").exists()
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", str(data), "--model", "vbpr", "--features",
                         "auto", "--out", str(tmp_path / "runs"), "--set", "trainer.epochs=1")
    assert code == 1 and err.count("error:") == 1, err
    assert " ".join(err.split()) == expected  # one message, whichever command encodes
    assert not list((tmp_path / "runs").rglob("image.npy")) and not list((tmp_path / "runs").rglob("model*.pt"))


def test_every_file_unreadable_is_refused_and_leaves_no_checkpoint(tmp_path):
    """Local files, every one corrupt or absent: the encoder decodes them (the model loaded) and then refuses."""
    (tmp_path / "img").mkdir()
    paths = []
    for i in range(N):
        p = tmp_path / "img" / f"{i}.jpg"
        if i != 5:
            p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        paths.append(str(p))
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N)], "image": paths})
    ds = toy_dataset(items, [[0, 2, 4], [1, 3, 5]])
    out = tmp_path / "feats"
    out.mkdir()
    with pytest.raises(DataError) as e:
        encode_all(ds, out, cfg(), which="image", progress=False)
    msg = str(e.value)
    assert "dataset toy has no item image that could be used: none of its 6 items got one (missing: 1, " \
           "unreadable: 5; e.g. item i5: " in msg and f"item i0: {paths[0]}: " in msg, msg
    assert "tried again" not in msg  # no download failed
    assert not (out / "image.npy").exists() and not list(out.glob(".partial/image-*"))

    # one good file is enough: encoded as before, the others zero rows
    Image.new("RGB", (16, 16), (10, 120, 30)).save(paths[2], format="JPEG")
    encode_all(ds, out, cfg(), which="image", progress=False)
    assert read_manifest(out / "image.json")["images"] == {"ok": 1, "missing": 1, "unreadable": 4,
                                                           "download_failed": 0}


def test_a_matrix_of_zero_rows_an_older_run_wrote_is_not_up_to_date(tmp_path):
    """An older recgoat wrote image.npy when every download failed, under the key a later run computes too (the
    bytes of URLs are not in it): that run said "up to date" and kept the zero rows. Now it downloads again and,
    still failing, refuses and removes them (no encode of this data replaces them)."""
    from recgoat.datasets import load
    from recgoat.features.store import save_array

    port = free_port()
    data = catalogue(tmp_path / "shop", [f"http://127.0.0.1:{port}/{i}.png" for i in range(N)])
    ds = load(str(data))
    out = tmp_path / "feats"
    srv = ImageServer(port)
    try:
        encode_all(ds, out, cfg(), which="image", progress=False)
    finally:
        srv.close()
    # what the older recgoat left: zero rows, a False mask, "ok": 0, under the same key
    man = json.loads((out / "image.json").read_text())
    man["images"] = {"ok": 0, "missing": 0, "unreadable": 0, "download_failed": N}
    save_array(out / "image.npy", np.zeros((N, man["dim"]), np.float32))
    save_array(out / "image_mask.npy", np.zeros(N, bool))
    (out / "image.json").write_text(json.dumps(man))
    for f in (out / "image_cache").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no item image that could be used"):
        encode_all(ds, out, cfg(), which="image", progress=False)
    assert not (out / "image.npy").exists() and not (out / "image.json").exists()
    assert not (out / "image_mask.npy").exists()
