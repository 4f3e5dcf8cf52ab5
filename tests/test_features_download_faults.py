"""Image downloads under server faults; also atomic JSON writes and malformed plugin entry points.

QA of image downloads (Retry-After, non-image answers, trickling servers, malformed URLs, interrupts),
atomic JSON writes (modes, errors naming the file, NaN) and plugin entry points with a malformed value.

Every server here is bound to 127.0.0.1 on a free port; nothing reaches the network."""
from __future__ import annotations

import math
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from recgoat.features.download import (TransientError, cache_file, call_with_retries,  # noqa: E402
                                       fetch_images)
from features_helpers import LoopbackServer  # noqa: E402
from recgoat.io import current_umask, read_json, write_json  # noqa: E402

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes"


# ---------------------------------------------------------------------------------------------- server
@dataclass
class Answer:
    status: int = 200
    body: bytes = JPEG
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "image/jpeg"})
    delay: float = 0.0
    trickle: float = 0.0  # seconds between single bytes of the body (a slow-drip server)


class Server(LoopbackServer):
    """``answer(path, n)`` answers the n-th request (from 1) for ``path``; records request paths in order."""

    def __init__(self, answer: Callable[[str, int], Answer]):
        self.paths: list[str] = []
        counts: dict[str, int] = {}
        lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                with lock:
                    srv.paths.append(self.path)
                    counts[self.path] = counts.get(self.path, 0) + 1
                    n = counts[self.path]
                a = answer(self.path, n)
                time.sleep(a.delay)
                try:
                    self.send_response(a.status)
                    for k, v in a.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(a.body)))
                    self.end_headers()
                    if a.trickle:
                        for i in range(len(a.body)):
                            self.wfile.write(a.body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(a.trickle)
                    else:
                        self.wfile.write(a.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._listen(H)


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(answer: Callable[[str, int], Answer]) -> Server:
        servers.append(Server(answer))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def no_temps(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# -------------------------------------------------------------------------------------------- download
def test_retry_after_is_honoured_and_bounded(serve, tmp_path):
    """A 429/503 with Retry-After waits what the server asked (not the 0.01 s backoff, which it would refuse
    again), at most MAX_RETRY_AFTER; an HTTP-date form works too."""
    def answer(path: str, n: int) -> Answer:
        asked = {"/seconds.jpg": "7", "/hour.jpg": "3600", "/date.jpg": "Wed, 21 Oct 2015 07:28:00 GMT"}
        return Answer(429 if path == "/seconds.jpg" else 503, b"busy", {"Retry-After": asked[path]}) if n == 1 \
            else Answer()

    srv = serve(answer)
    for path, expected in (("/seconds.jpg", 7.0), ("/hour.jpg", 60.0), ("/date.jpg", 0.01)):
        waits: list[float] = []
        rep = fetch_images([srv.url + path], tmp_path, retries=1, backoff=0.01, sleep=waits.append)
        assert not rep.failed and rep.downloaded == 1, rep.failed
        assert waits == [expected], path  # a date in the past: the ordinary backoff

    waits = []
    with pytest.raises(TransientError, match="x"):
        call_with_retries(lambda: (_ for _ in ()).throw(TransientError("x", retry_after=5.0)), 2, 1.0,
                          sleep=waits.append)
    assert waits == [5.0, 5.0]


def test_a_retry_after_in_a_final_failure_is_reported(serve, tmp_path):
    srv = serve(lambda path, n: Answer(503, b"busy", {"Retry-After": "2"}))
    rep = fetch_images([srv.url + "/a.jpg"], tmp_path, retries=1, backoff=0.01, sleep=lambda s: None)
    assert rep.failed[srv.url + "/a.jpg"] == "HTTP 503 (Retry-After: 2 s)"


def test_an_answer_that_is_not_an_image_is_refused_and_not_cached(serve, tmp_path):
    """An HTML error/login page served with 200 was cached as the image: every later run reused it (the
    encoder then failed on a hashed file name) and never fetched the real image again."""
    fixed = {"on": False}

    def answer(path: str, n: int) -> Answer:
        if fixed["on"]:
            return Answer()
        return {"/html.jpg": Answer(200, b"<html>not found</html>", {"Content-Type": "text/html; charset=utf-8"}),
                "/json.jpg": Answer(200, b'{"error": 1}', {"Content-Type": "application/json"}),
                "/sniffed.jpg": Answer(200, b"\n<!DOCTYPE html><p>login", {"Content-Type": "application/octet-stream"}),
                "/octet.jpg": Answer(200, JPEG, {"Content-Type": "application/octet-stream"}),
                "/untyped.jpg": Answer(200, JPEG, {}),
                }[path]

    srv = serve(answer)
    bad = [srv.url + p for p in ("/html.jpg", "/json.jpg", "/sniffed.jpg")]
    good = [srv.url + p for p in ("/octet.jpg", "/untyped.jpg")]
    rep = fetch_images(bad + good, tmp_path, retries=2, backoff=0.01)
    assert sorted(rep.paths) == sorted(good) and sorted(rep.failed) == sorted(bad)
    assert rep.failed[bad[0]] == "not an image: the server answered Content-Type 'text/html'"
    assert rep.failed[bad[1]] == "not an image: the server answered Content-Type 'application/json'"
    assert rep.failed[bad[2]].startswith("not an image: the answer starts with b'<!DOCTYPE html>")
    assert all(srv.paths.count(p) == 1 for p in ("/html.jpg", "/json.jpg", "/sniffed.jpg"))  # not retried
    assert not any(cache_file(u, tmp_path).exists() for u in bad)

    fixed["on"] = True  # the server serves the real image now: the next run fetches it
    rep = fetch_images(bad, tmp_path)
    assert rep.downloaded == 3 and cache_file(bad[0], tmp_path).read_bytes() == JPEG


def test_a_trickling_server_hits_the_overall_deadline(serve, tmp_path):
    """httpx's timeout bounds each read: a byte every 0.1 s never trips timeout=0.3, so one image held its
    worker for as long as the server liked. An attempt now has 4 x timeout in all."""
    srv = serve(lambda path, n: Answer(body=JPEG * 4, trickle=0.1))  # ~6 s in all
    t0 = time.monotonic()
    rep = fetch_images([srv.url + "/drip.jpg"], tmp_path, timeout=0.3, retries=0)
    assert time.monotonic() - t0 < 3.5
    assert "did not arrive within 1.2 s" in rep.failed[srv.url + "/drip.jpg"]
    assert no_temps(tmp_path) and not list(tmp_path.iterdir())


def test_malformed_urls_are_reported_not_raised(serve, tmp_path):
    """A bad URL in the item metadata crashed the whole download (httpx.InvalidURL, UnicodeError and
    IDNAError are no httpx.HTTPError; a lone surrogate failed in cache_file) with no URL named; now each is
    one permanent failure, not retried, and the good URLs are downloaded."""
    srv = serve(lambda path, n: Answer())
    bad = ["http://[::1/x.jpg", "http://a\x00b/x.jpg", "http://" + "a" * 300 + ".com/x.jpg",
           "http://\udc80.example/x.jpg", "http:///x.jpg"]
    good = srv.url + "/ok.jpg"
    waits: list[float] = []
    rep = fetch_images([*bad, good], tmp_path, retries=2, backoff=5.0, sleep=waits.append)
    assert list(rep.paths) == [good] and sorted(rep.failed) == sorted(bad)
    assert waits == []  # permanent: no retry
    for url in bad[:4]:
        assert rep.failed[url].startswith("invalid URL: "), rep.failed[url]
    assert rep.failed[bad[4]].startswith("UnsupportedProtocol: ")


def test_an_interrupt_stops_the_queued_downloads(serve, tmp_path):
    """A failing progress callback (or Ctrl-C) drops the queued URLs instead of fetching all of them first,
    and what was downloaded stays cached (a regression guard: Executor.map cancels on close)."""
    srv = serve(lambda path, n: Answer(delay=0.05))
    urls = [f"{srv.url}/{i}.jpg" for i in range(20)]

    def progress(k: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        fetch_images(urls, tmp_path, concurrency=1, on_progress=progress)
    fetched = len(srv.paths)
    assert fetched <= 3, srv.paths
    assert cache_file(urls[0], tmp_path).read_bytes() == JPEG and no_temps(tmp_path)
    rep = fetch_images(urls, tmp_path, concurrency=4)
    assert rep.cached == fetched and rep.downloaded == 20 - fetched


def test_cache_names_stay_inside_the_cache(tmp_path):
    """A file name is a hash of the URL plus a known image suffix: no traversal, query string, unicode or
    length of the URL reaches the file system."""
    urls = ["http://h/../../etc/passwd", "http://h/a/%2e%2e/%2e%2e/x.png", "http://h/p.jpg?w=1&x=../../y.sh",
            "http://h/" + "n" * 5000 + ".JPEG", "http://h/фото/图片.webp", "http://h/a.jpg/", "http://h/x.php",
            "http://h/\udc80.gif", "http://[::1/x.jpg"]
    names = [cache_file(u, tmp_path) for u in urls]
    assert all(p.parent == tmp_path and len(p.name) <= 37 for p in names)
    assert [p.suffix for p in names] == [".img", ".png", ".jpg", ".jpeg", ".webp", ".jpg", ".img", ".gif",
                                           ".img"]
    assert len(set(names)) == len(urls)
    assert cache_file(urls[2], tmp_path).name == "6588ddd775b6c1be60ede28a70664ad8.jpg"  # names kept across versions


# ---------------------------------------------------------------------------------------------------- io
def test_rewriting_a_file_keeps_its_mode(tmp_path):
    """A file its owner restricted (chmod 600: private results) was widened to 0666 & ~umask on every
    atomic rewrite; open(path, "w") keeps the mode, and so does write_json now. A new file gets the umask's."""
    new = tmp_path / "new.json"
    write_json(new, {"a": 1})
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~current_umask()

    private = tmp_path / "private.json"
    private.write_text("{}")
    private.chmod(0o600)
    write_json(private, {"secret": 1})
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and read_json(private) == {"secret": 1}

    frozen = tmp_path / "frozen.json"  # replaced (rename needs only the folder writable), still read-only
    frozen.write_text("{}")
    frozen.chmod(0o444)
    write_json(frozen, [1])
    assert stat.S_IMODE(frozen.stat().st_mode) == 0o444 and read_json(frozen) == [1]
    assert no_temps(tmp_path)


def test_an_object_that_is_not_json_names_the_file_and_touches_nothing(tmp_path):
    import datetime

    path = tmp_path / "run_config.json"
    write_json(path, {"ok": True})
    loop: dict = {}
    loop["self"] = loop
    for obj, kind, says in (({"when": datetime.date(2024, 1, 1)}, TypeError, "not JSON serialisable: date"),
                            ({"tags": {1, 2}}, TypeError, "not JSON serialisable: set"),
                            (loop, ValueError, "Circular reference")):
        with pytest.raises(kind, match=says) as e:
            write_json(path, obj)
        assert str(path) in str(e.value)
        assert read_json(path) == {"ok": True} and no_temps(tmp_path)


def test_a_failed_replace_names_the_target_not_the_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.mkdir()  # a folder in the way
    with pytest.raises(IsADirectoryError) as e:
        write_json(target, {"a": 1})
    assert e.value.filename == str(target) and ".tmp" not in str(e.value)
    assert no_temps(tmp_path) and target.is_dir()


def test_nan_and_infinities_round_trip(tmp_path):
    """What is written for non-finite numbers (Python's NaN/Infinity extension) reads back as such."""
    path = tmp_path / "m.json"
    write_json(path, {"nan": float("nan"), "inf": np.float32("inf"), "arr": np.array([-np.inf, 1.5]),
                      "n64": np.float64("nan")})
    text = path.read_text()
    assert '"nan": NaN' in text and '"inf": Infinity' in text and "-Infinity" in text
    back = read_json(path)
    assert math.isnan(back["nan"]) and back["inf"] == math.inf and back["arr"] == [-math.inf, 1.5]
    assert math.isnan(back["n64"])


# ----------------------------------------------------------------------------------------------- plugins
def test_a_malformed_entry_point_value_is_one_clear_error(monkeypatch, tmp_path):
    """An entry point whose value is no 'module[:attr]' failed as "AttributeError: 'NoneType' object has no
    attribute 'group'" (importlib's regex not matching); now it says what is wrong and names the plugin."""
    from recgoat.models.base import MODELS, get_model_class
    from recgoat.models.plugins import PluginError

    info = tmp_path / "site" / "badplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: badplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[recgoat.models]\nspacey = not a module!\nempty = \n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delenv("RECGOAT_PLUGINS", raising=False)
    before = dict(MODELS)
    for name, value in (("spacey", "not a module!"), ("empty", "")):
        with pytest.raises(PluginError) as e:
            get_model_class(name)
        msg = str(e.value)
        assert msg == (f"plugin entry point {name!r} = {value!r} of package badplug (group 'recgoat.models'): "
                       f"{value!r} is not an entry point value; write 'module' or 'module:Class' in the package's "
                       f"entry point")
    assert get_model_class("lightgcn").name == "lightgcn" and MODELS == before  # unrelated lookups unaffected
