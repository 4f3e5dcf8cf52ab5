"""Shared helpers for the feature-stage tests: a small real slice of ml100k-mm and local HTTP servers.

Why: the real models are slow on a 2-core machine, so tests encode a handful of real items and posters;
and every network path (image URLs, OpenAI-compatible endpoints) is exercised over real HTTP against a
server bound to 127.0.0.1 on a free port, scripted per test.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from recgoat.datasets import Dataset, load  # noqa: E402
from recgoat.datasets.registry import shared_root  # noqa: E402

# Disney animations, war films, and a few others (all with posters in ml100k-mm).
MINI_TITLES = ["Aladdin (1992)", "Lion King, The (1994)", "Beauty and the Beast (1991)", "Platoon (1986)",
               "Apocalypse Now (1979)", "Full Metal Jacket (1987)", "Toy Story (1995)", "Star Wars (1977)",
               "Schindler's List (1993)", "Pocahontas (1995)"]


def require_ml100k() -> None:
    root = shared_root()
    if root is None or not (root / "ml100k-mm").is_dir():
        pytest.skip("shared dataset ml100k-mm not found (set RECGOAT_SHARED_DATA)")


@lru_cache(maxsize=1)
def ml100k() -> Dataset:
    return load("ml100k-mm")


def mini_dataset(titles: list[str] = MINI_TITLES, n_users: int = 8) -> Dataset:
    """A real slice of ml100k-mm: the named movies and the ``n_users`` users who rated most of them,
    with their original ratings, timestamps and train/valid/test labels."""
    require_ml100k()
    ds = ml100k()
    rows = [int(np.flatnonzero(ds.items["title"].to_numpy() == t)[0]) for t in titles]
    inter = ds.interactions[ds.interactions["item"].isin(rows)]
    train_counts = inter[inter["split"] == "train"].groupby("user").size()
    users = sorted(train_counts.sort_values(ascending=False, kind="stable").index[:n_users].tolist())
    inter = inter[inter["user"].isin(users)]
    umap = {u: k for k, u in enumerate(users)}
    imap = {r: k for k, r in enumerate(rows)}
    inter = inter.assign(user=inter["user"].map(umap), item=inter["item"].map(imap)).reset_index(drop=True)
    return Dataset(name="ml100k-mini", interactions=inter, user_ids=ds.user_ids[users],
                   item_ids=ds.item_ids[rows], items=ds.items.iloc[rows].reset_index(drop=True),
                   text_fields=list(ds.text_fields), info=dict(ds.info))


def toy_dataset(items: pd.DataFrame, train: list[list[int]], held_out: list[int] | None = None) -> Dataset:
    """A constructed dataset: ``items`` (one row per item, ``item_id`` first), each user's TRAINING items
    newest first, and optionally one held-out (test) item per user, newer than all of them."""
    rows = []
    for u, chosen in enumerate(train):
        rows += [(u, i, 1_000_000 - k, "train") for k, i in enumerate(chosen)]
        if held_out is not None:
            rows.append((u, held_out[u], 2_000_000, "test"))
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp", "split"])
    inter["rating"] = np.float32(5.0)
    inter["split"] = pd.Categorical(inter["split"], categories=["train", "valid", "test"])
    return Dataset(name="toy", interactions=inter, user_ids=np.array([f"u{u}" for u in range(len(train))], object),
                   item_ids=items["item_id"].astype(str).to_numpy(object), items=items.reset_index(drop=True),
                   text_fields=[c for c in ("title", "brand", "features") if c in items.columns])


class TinyNet(nn.Module):
    """A tiny plug-in image model (4-d pooled features): fast, deterministic (seeded at construction)."""

    image_size = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).amax(dim=(2, 3))


class NanNet(TinyNet):
    """The tiny plug-in image model, its ``nan_call``-th forward giving NaN for the batch's first row."""

    def __init__(self, nan_call: int | None):
        super().__init__()
        self.calls, self.nan_call = 0, nan_call

    def forward(self, x):
        self.calls += 1
        y = super().forward(x)
        if self.calls == self.nan_call:
            y[0] = float("nan")
        return y


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------------------------------------- HTTP
@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    content_type: str = "application/json"


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1, on a free port, serving with ``handler`` (never 0.0.0.0): ``url``,
    ``port``, ``close()``. The fake LLM and image servers of the tests are these."""

    def _listen(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class ScriptedServer(LoopbackServer):
    """A threaded HTTP server on 127.0.0.1:<free port> answering with ``handler(method, path, body)``."""

    handler: Callable[[str, str, bytes], Reply]
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    max_parallel: int = 0
    _active: int = 0

    def __post_init__(self) -> None:
        srv = self
        lock = threading.Lock()

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _serve(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with lock:
                    srv.requests.append((method, self.path, body))
                    srv._active += 1
                    srv.max_parallel = max(srv.max_parallel, srv._active)
                try:
                    reply = srv.handler(method, self.path, body)
                    if reply.delay:
                        time.sleep(reply.delay)
                finally:
                    # done before the reply is written: once it is, the client may already send its next
                    # request, and counting this one still active would report a false overlap
                    with lock:
                        srv._active -= 1
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        self._listen(H)


def chat_reply(content: str) -> Reply:
    return Reply(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode())


def numbered(reply: Callable[[int], Reply]) -> Callable[[str, str, bytes], Reply]:
    """A :class:`ScriptedServer` handler answering the n-th request it receives (from 1) with ``reply(n)``."""
    lock, count = threading.Lock(), [0]

    def handler(method: str, path: str, body: bytes) -> Reply:
        with lock:
            count[0] += 1
            n = count[0]
        return reply(n)

    return handler


def raise_once(exc: type[BaseException]) -> Callable[[int], None]:
    """A progress callback that raises ``exc`` at its first call only (an interruption at the first answer)."""
    fired: list[int] = []

    def progress(k: int) -> None:
        if not fired:
            fired.append(k)
            raise exc

    return progress


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
