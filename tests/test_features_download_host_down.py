"""A host that cannot be connected to is given up for the run, not tried URL by URL.

1,558 image URLs on a host refusing every connection took 4 min 57 s: each URL was retried with backoff on its own,
and nothing stopped once the host was clearly down. Now a host refusing HOST_DOWN_AFTER connections in a row (none
answered in between) is down for the run: its other URLs fail at once with the same reason, are reported as download
failures like any other, and are tried again by the next run. A connection not made in time counts as failed;
read timeouts and 5xx answers (from a host that answered) are retried as before.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from features_helpers import Reply, ScriptedServer, free_port  # noqa: E402
from recgoat.features.download import HOST_DOWN_AFTER, fetch_images  # noqa: E402

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-bytes"


def test_a_refusing_host_is_given_up_at_once_and_others_still_download(tmp_path):
    srv = ScriptedServer(lambda method, path, body: Reply(200, JPEG + path.encode(), content_type="image/jpeg"))
    dead = f"127.0.0.1:{free_port()}"
    try:
        refused = [f"http://{dead}/{i}.jpg" for i in range(300)]
        good = [f"{srv.url}/ok/{i}.jpg" for i in range(20)]
        urls = [u for pair in zip(refused, good + [None] * 300) for u in pair if u]  # interleaved
        t0 = time.monotonic()
        # the defaults of `recgoat encode` (8 at a time, 2 retries from 0.5 s): 300 refused URLs took ~60 s
        rep = fetch_images(urls, tmp_path)
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert took < 10, took
    assert set(rep.paths) == set(good) and rep.downloaded == 20  # the live host is not affected
    assert set(rep.failed) == set(refused)
    assert list(rep.hosts_down) == [dead]
    reason = rep.hosts_down[dead]
    assert reason.startswith("ConnectError: ") and "Connection refused" in reason
    assert f"{dead} could not be connected to {HOST_DOWN_AFTER} times in a row" in reason
    assert sum(msg == reason for msg in rep.failed.values()) >= 300 - 8  # given up: the same reason, at once


def test_a_host_down_in_one_run_is_tried_again_by_the_next(tmp_path):
    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{i}.jpg" for i in range(30)]
    rep = fetch_images(urls, tmp_path, backoff=0.01)
    assert len(rep.failed) == 30 and rep.hosts_down

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), H)  # the host is up now, on the port that refused
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        again = fetch_images(urls, tmp_path, backoff=0.01)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert again.downloaded == 30 and not again.failed and not again.hosts_down


def test_server_errors_are_retried_not_taken_for_a_host_down(tmp_path):
    """A 503 is an answer: the host is up, each URL gets its retries (bounded), none is given up unasked."""
    srv = ScriptedServer(lambda method, path, body: Reply(503, b"busy"))
    try:
        urls = [f"{srv.url}/{i}.jpg" for i in range(12)]
        rep = fetch_images(urls, tmp_path, concurrency=4, retries=2, backoff=0.01)
    finally:
        srv.close()
    assert not rep.hosts_down and set(rep.failed.values()) == {"HTTP 503"}
    assert len(srv.requests) == 12 * 3


def test_a_host_whose_connections_time_out_is_given_up_but_a_slow_answer_is_not(tmp_path):
    """A firewall dropping packets: no connection is made, each attempt waits its whole timeout (1,558 URLs at
    8 at a time and 3 attempts of 15 s: hours). A read timeout comes from a host that answered: retried only."""
    import httpx

    attempts = {"dropped": 0, "slow": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        attempts[host] += 1
        if host == "dropped":
            raise httpx.ConnectTimeout("timed out", request=request)
        raise httpx.ReadTimeout("timed out", request=request)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    urls = [f"http://{host}/{i}.jpg" for i in range(40) for host in ("dropped", "slow")]
    rep = fetch_images(urls, tmp_path, concurrency=1, retries=2, client=client, sleep=lambda s: None)
    assert list(rep.hosts_down) == ["dropped"]
    assert rep.hosts_down["dropped"].startswith("ConnectTimeout")
    assert attempts["dropped"] == HOST_DOWN_AFTER  # then given up: its other URLs fail without a connection
    assert attempts["slow"] == 40 * 3  # each URL its retries, never given up
    assert len(rep.failed) == 80
