"""A tiny catalogue and a BPR-MF trained on it for one epoch: what the serving tests export and serve; and
headless Chromium and an in-process server for the browser tests."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


def shop_rows(users: list[str], items: list[str], t0: int = 1000, step: int = 1) -> list[tuple]:
    """(user, item, timestamp) rows of a small catalogue: user ``u`` (``ui``-th) bought item ``j`` unless
    ``(ui + j) % 3 == 0``, at ``t0 + step * j``; every user and item has some, no two users the same set."""
    return [(u, it, t0 + step * j) for ui, u in enumerate(users) for j, it in enumerate(items) if (ui + j) % 3]


def train_shop(folder: Path, rows: list[tuple], items: list[str], titles: list[str | None] | None = None,
               dedup: bool = True):
    """``(model, dataset)``: the generic-layout catalogue of ``rows`` (user_id, item_id, timestamp) and
    ``items`` (with ``titles``, default "Title i") written to ``folder``, prepared without k-core filtering
    (``dedup``: drop repeated pairs), and BPR-MF (d 8, seed 0) trained on it for one epoch, in eval mode."""
    import torch

    from recgoat.datasets import PrepareConfig, load_raw, prepare
    from recgoat.models import BPRMF
    from recgoat.training.trainer import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(folder / "interactions.csv", index=False)
    titles = titles if titles is not None else [f"Title {i}" for i in range(len(items))]
    pd.DataFrame({"item_id": items, "title": titles}).to_csv(folder / "items.csv", index=False)
    name, inter, item_table, fields, info = load_raw(str(folder))
    ds = prepare(name, inter, item_table, fields, PrepareConfig(k_core=0, dedup=dedup), info)
    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 8})
    model.fit(ds, TrainConfig(epochs=1, progress=False))
    model.eval()
    return model, ds


def chromium() -> str | None:
    """Debian's chromium, which the browser tests drive through playwright (None when not installed)."""
    import os

    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(p):
            return p
    return None


@contextmanager
def browser_page(profile: Path, viewport: tuple[int, int] = (1200, 1400)):
    """A page of headless Chromium (fresh profile in ``profile``); skips the test without chromium or
    playwright."""
    import pytest

    exe = chromium()
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'recgoat[test]')")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as pw:
        # a persistent context is how playwright takes a (fresh) --user-data-dir
        browser = pw.chromium.launch_persistent_context(
            str(profile), executable_path=exe, args=flags, headless=True,
            viewport={"width": viewport[0], "height": viewport[1]})
        try:
            yield browser.new_page()
        finally:
            browser.close()


@contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread of this process on a free loopback port; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
