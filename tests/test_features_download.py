"""Image URLs: downloaded once into a cache over real HTTP, bounded concurrency, timeouts and retries."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from features_helpers import Reply, ScriptedServer, free_port  # noqa: E402
from recgoat.features.download import (TransientError, cache_file, call_with_retries,  # noqa: E402
                                       fetch_images)

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes"


@pytest.fixture
def server():
    state = {"flaky": 0}
    lock = threading.Lock()

    def handler(method, path, body):
        if path.startswith("/ok/"):
            return Reply(200, JPEG + path.encode(), delay=0.05, content_type="image/jpeg")
        if path == "/missing.jpg":
            return Reply(404, b"no")
        if path == "/flaky.jpg":  # two 503s, then the image
            with lock:
                state["flaky"] += 1
                n = state["flaky"]
            return Reply(503, b"busy") if n <= 2 else Reply(200, JPEG, content_type="image/jpeg")
        if path == "/down.jpg":
            return Reply(500, b"boom")
        if path == "/slow.jpg":
            return Reply(200, JPEG, delay=1.5)
        return Reply(404, b"?")

    srv = ScriptedServer(handler)
    yield srv
    srv.close()


def test_download_once_with_bounded_concurrency(server, tmp_path):
    urls = [f"{server.url}/ok/{i}.jpg" for i in range(12)] + [f"{server.url}/ok/0.jpg"]
    rep = fetch_images(urls, tmp_path, concurrency=3, timeout=5, retries=0)
    assert rep.downloaded == 12 and not rep.failed and len(rep.paths) == 12
    assert server.max_parallel <= 3
    assert rep.paths[urls[5]].read_bytes() == JPEG + b"/ok/5.jpg"
    assert rep.paths[urls[5]] == cache_file(urls[5], tmp_path) and rep.paths[urls[5]].suffix == ".jpg"
    n_before = len(server.requests)
    rep2 = fetch_images(urls, tmp_path, concurrency=3)
    assert rep2.cached == 12 and rep2.downloaded == 0 and len(server.requests) == n_before  # no re-download
    assert not list(tmp_path.glob(".*.tmp"))


def test_retries_timeouts_and_permanent_failures(server, tmp_path):
    urls = [f"{server.url}/flaky.jpg", f"{server.url}/missing.jpg", f"{server.url}/down.jpg",
            f"{server.url}/slow.jpg", f"http://127.0.0.1:{free_port()}/refused.jpg"]
    t0 = time.time()
    rep = fetch_images(urls, tmp_path, concurrency=5, timeout=0.5, retries=2, backoff=0.01)
    assert time.time() - t0 < 6
    assert list(rep.paths) == [urls[0]]  # the flaky one succeeded on its third try
    assert rep.failed[urls[1]] == "HTTP 404"
    assert rep.failed[urls[2]] == "HTTP 500"
    assert "Timeout" in rep.failed[urls[3]]
    assert "Connect" in rep.failed[urls[4]]
    paths = [p for m, p, _ in server.requests]
    assert paths.count("/flaky.jpg") == 3 and paths.count("/missing.jpg") == 1 and paths.count("/down.jpg") == 3


def test_call_with_retries_backoff():
    waits, calls = [], []

    def fn():
        calls.append(1)
        raise TransientError("x")

    with pytest.raises(TransientError):
        call_with_retries(fn, retries=3, backoff=0.5, sleep=waits.append)
    assert len(calls) == 4 and waits == [0.5, 1.0, 2.0]
