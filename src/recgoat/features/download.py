"""Downloading item images given as URLs (Amazon metadata) into a local cache, once.

Why a module of its own: remote images are the one part of feature extraction that touches the
network, and networks fail in many small ways (timeouts, 5xx, resets). Each URL is fetched at most once
into ``cache_dir`` (its file name is a hash of the URL, written atomically so an interrupted run never
leaves half an image), with bounded concurrency, per-request timeouts and retries with exponential
backoff on transient failures only (a server's ``Retry-After`` is honoured, up to :data:`MAX_RETRY_AFTER`).
A host that cannot be connected to :data:`HOST_DOWN_AFTER` times in a row (refused, its name not resolved, no
connection made in time) is taken as down for the rest of the run: its other URLs fail at once, with the same reason.
A URL that still fails is reported, never raised: the image encoder then gives that item a zero row and a
False mask. An answer that is not an image (an HTML error page served with status 200) is refused, not
cached: once cached, a re-run would never fetch the real image again.

:func:`call_with_retries` is shared with the LLM profile backends.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

import httpx

from recgoat.io import atomic_path

T = TypeVar("T")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
MAX_IMAGE_BYTES = 30 * 1024 * 1024
# the longest Retry-After wait honoured per retry: a server asking for an hour gets the bounded retry instead
MAX_RETRY_AFTER = 60.0
# one attempt's whole answer must arrive within this many `timeout`s: httpx's timeout bounds each read, so a
# server trickling a byte a second would otherwise hold a download (and its worker) for hours
DEADLINE_TIMEOUTS = 4.0
# a host whose connections fail this many times in a row, none answered in between, is down for the rest of the
# run: 1,558 URLs on a host refusing every connection took 5 minutes of retries and backoff, each URL on its own
HOST_DOWN_AFTER = 5


class TransientError(Exception):
    """A failure worth retrying (timeout, connection error, 5xx, 429, malformed answer); ``retry_after``:
    the seconds the server asked to wait before the next try (its ``Retry-After`` header), if it did."""

    def __init__(self, *args: object, retry_after: float | None = None):
        super().__init__(*args)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix (404, 401, a refused request)."""


def call_with_retries(fn: Callable[[], T], retries: int, backoff: float,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; on :class:`TransientError` retry up to ``retries`` times, waiting
    ``backoff * 2**attempt`` seconds between tries, or longer when the error carries the server's
    ``retry_after`` (asked sooner, a rate-limiting server refuses again). The last transient error is re-raised."""
    attempt = 0
    while True:
        try:
            return fn()
        except TransientError as exc:
            if attempt >= retries:
                raise
            asked = exc.retry_after
            wait = backoff * (2 ** attempt)
            sleep(max(wait, min(asked, MAX_RETRY_AFTER)) if asked is not None else wait)
            attempt += 1


def retry_after(resp: httpx.Response) -> float | None:
    """The wait in seconds a ``Retry-After`` header asks for (seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER`; None without a usable one."""
    value = resp.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def classify_http_error(exc: Exception) -> Exception:
    """Map an httpx exception or bad status to :class:`TransientError` / :class:`PermanentError`."""
    if isinstance(exc, httpx.UnsupportedProtocol):  # "ftp://", "http:///x", a redirect to "file:": no retry helps
        return PermanentError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, (httpx.TimeoutException, httpx.TransportError)):
        return TransientError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        msg = f"HTTP {code}"
        if code >= 500 or code in (408, 429):
            return TransientError(msg, retry_after=retry_after(exc.response))
        return PermanentError(msg)
    return PermanentError(f"{type(exc).__name__}: {exc}")


def cache_file(url: str, cache_dir: Path) -> Path:
    """Where ``url`` is cached: a hash of the URL plus its image suffix (``.img`` when unknown)."""
    try:
        suffix = Path(urlparse(url).path).suffix.lower()
    except ValueError:  # "http://[::1/x.jpg": fetching it fails and is reported, naming the URL
        suffix = ""
    if suffix not in IMAGE_SUFFIXES:
        suffix = ".img"
    # surrogatepass: a lone surrogate (from JSON metadata) is still hashed, and fails as a bad URL, not here
    # for the whole list; any other URL encodes as before, so existing caches keep their names
    return cache_dir / (hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:32] + suffix)


# answers that are certainly not an image (an error or login page); octet-stream and no type are let through
_NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/javascript")


def _check_image_answer(content_type: str, head: bytes) -> None:
    """A :class:`PermanentError` for an answer that is an HTML/JSON/text page rather than image bytes."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype.startswith(_NOT_IMAGE_TYPES) or "html" in ctype:
        raise PermanentError(f"not an image: the server answered Content-Type {ctype!r}")
    if head.lstrip()[:1] == b"<":  # no image format starts with "<"; HTML and XML pages do
        raise PermanentError(f"not an image: the answer starts with {head.lstrip()[:40]!r}")


@dataclass
class DownloadReport:
    """Outcome of :func:`fetch_images`: where each URL lies locally and why the others failed."""

    paths: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    downloaded: int = 0
    cached: int = 0
    hosts_down: dict[str, str] = field(default_factory=dict)  # host → why its URLs were given up


def _host(url: str) -> str | None:
    """``host[:port]`` of ``url``, the unit :data:`HOST_DOWN_AFTER` counts failed connections by (None: no host)."""
    try:
        return urlparse(url).netloc.rpartition("@")[2].lower() or None
    except ValueError:
        return None


def fetch_images(urls: list[str], cache_dir: str | Path, concurrency: int = 8, timeout: float = 15.0,
                 retries: int = 2, backoff: float = 0.5,
                 on_progress: Callable[[int], None] | None = None,
                 client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 host_down_after: int = HOST_DOWN_AFTER) -> DownloadReport:
    """Make every URL in ``urls`` available under ``cache_dir``, downloading only those not cached yet.
    ``sleep`` waits between retries (a parameter for tests). A host that cannot be connected to
    ``host_down_after`` times in a row is given up for this run (``report.hosts_down``); its URLs are failures,
    tried again by the next run. Read timeouts and 5xx answers are not counted: they are retried, ``retries`` times."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    report = DownloadReport()
    todo: list[str] = []
    for url in dict.fromkeys(urls):  # unique, order kept
        target = cache_file(url, cache_dir)
        if target.exists() and target.stat().st_size > 0:
            report.paths[url] = target
            report.cached += 1
        else:
            todo.append(url)
    if on_progress and report.cached:
        on_progress(report.cached)
    if not todo:
        return report

    own_client = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True,
                                  limits=httpx.Limits(max_connections=max(concurrency, 1)))
    lock = threading.Lock()
    failed_connections: dict[str, int] = {}  # by host: connections failed in a row

    def fetch_once(url: str) -> bytes:
        host = _host(url)
        with lock:
            down = report.hosts_down.get(host) if host is not None else None
        if down is not None:
            raise PermanentError(down)
        deadline = time.monotonic() + DEADLINE_TIMEOUTS * timeout
        try:
            with http.stream("GET", url, timeout=timeout) as resp:
                if host is not None:
                    with lock:  # it answered: up, whatever the answer
                        failed_connections[host] = 0
                resp.raise_for_status()
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    if not chunks:
                        _check_image_answer(resp.headers.get("content-type", ""), chunk)
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise PermanentError(f"larger than {MAX_IMAGE_BYTES} bytes")
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise TransientError(f"Timeout: the image did not arrive within "
                                             f"{DEADLINE_TIMEOUTS * timeout:g} s ({size} bytes so far)")
        except httpx.HTTPError as exc:
            err = classify_http_error(exc)
            if isinstance(err, TransientError) and err.retry_after is not None:
                err.args = (f"{err} (Retry-After: {err.retry_after:g} s)",)
            # refused, the name not resolved, no route (ConnectError), or no connection made in time (ConnectTimeout:
            # a firewall dropping packets; 1,558 URLs, each waiting out its timeouts, took hours). A read timeout
            # or a 5xx comes from a host that answered: retried, never counted
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) and host is not None \
                    and host_down_after > 0:
                with lock:
                    n = failed_connections[host] = failed_connections.get(host, 0) + 1
                    if n >= host_down_after and host not in report.hosts_down:
                        report.hosts_down[host] = f"{err} ({host} could not be connected to {n} times in a row: " \
                                                  f"its other images are not tried in this run)"
                    down = report.hosts_down.get(host)
                if down is not None:
                    raise PermanentError(down) from exc
            raise err from exc
        except (httpx.InvalidURL, ValueError) as exc:  # ValueError: UnicodeError/IDNAError of a bad host name
            raise PermanentError(f"invalid URL: {type(exc).__name__}: {exc}") from None
        data = b"".join(chunks)
        if not data:
            raise TransientError("empty body")
        return data

    def work(url: str) -> None:
        try:
            data = call_with_retries(lambda: fetch_once(url), retries, backoff, sleep=sleep)
            target = cache_file(url, cache_dir)
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            with lock:
                report.paths[url] = target
                report.downloaded += 1
        except (TransientError, PermanentError) as exc:
            with lock:
                report.failed[url] = str(exc)
        if on_progress:
            on_progress(1)

    try:
        # an exception or Ctrl-C while waiting cancels the queued URLs (Executor.map's iterator does on close)
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(work, todo))
    finally:
        if own_client:
            http.close()
    return report
