"""Downloading item images given as URLs (Amazon metadata) into a local cache, once.

Why a module of its own: remote images are the one part of feature extraction that touches the
network, and networks fail in many small ways (timeouts, 5xx, resets). Each URL is fetched at most once
into ``cache_dir`` (its file name is a hash of the URL, written atomically so an interrupted run never
leaves half an image), with bounded concurrency, per-request timeouts and retries with exponential
backoff on transient failures only. A URL that still fails is reported, never raised: the image
encoder then gives that item a zero row and a False mask.

:func:`call_with_retries` is shared with the LLM profile backends.
"""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

import httpx

from recgoat.io import atomic_path

T = TypeVar("T")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
MAX_IMAGE_BYTES = 30 * 1024 * 1024


class TransientError(Exception):
    """A failure worth retrying (timeout, connection error, 5xx, 429, malformed answer)."""


class PermanentError(Exception):
    """A failure that retrying cannot fix (404, 401, a refused request)."""


def call_with_retries(fn: Callable[[], T], retries: int, backoff: float,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; on :class:`TransientError` retry up to ``retries`` times, waiting
    ``backoff * 2**attempt`` seconds between tries. The last transient error is re-raised."""
    attempt = 0
    while True:
        try:
            return fn()
        except TransientError:
            if attempt >= retries:
                raise
            sleep(backoff * (2 ** attempt))
            attempt += 1


def classify_http_error(exc: Exception) -> Exception:
    """Map an httpx exception or bad status to :class:`TransientError` / :class:`PermanentError`."""
    if isinstance(exc, (httpx.TimeoutException, httpx.TransportError)):
        return TransientError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        msg = f"HTTP {code}"
        if code >= 500 or code in (408, 429):
            return TransientError(msg)
        return PermanentError(msg)
    return PermanentError(f"{type(exc).__name__}: {exc}")


def cache_file(url: str, cache_dir: Path) -> Path:
    """Where ``url`` is cached: a hash of the URL plus its image suffix (``.img`` when unknown)."""
    suffix = Path(urlparse(url).path).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        suffix = ".img"
    return cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)


@dataclass
class DownloadReport:
    """Outcome of :func:`fetch_images`: where each URL lies locally and why the others failed."""

    paths: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    downloaded: int = 0
    cached: int = 0


def fetch_images(urls: list[str], cache_dir: str | Path, concurrency: int = 8, timeout: float = 15.0,
                 retries: int = 2, backoff: float = 0.5,
                 on_progress: Callable[[int], None] | None = None,
                 client: httpx.Client | None = None) -> DownloadReport:
    """Make every URL in ``urls`` available under ``cache_dir``, downloading only those not cached yet."""
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

    def fetch_once(url: str) -> bytes:
        try:
            with http.stream("GET", url, timeout=timeout) as resp:
                resp.raise_for_status()
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise PermanentError(f"larger than {MAX_IMAGE_BYTES} bytes")
                    chunks.append(chunk)
        except (httpx.HTTPError,) as exc:
            raise classify_http_error(exc) from exc
        data = b"".join(chunks)
        if not data:
            raise TransientError("empty body")
        return data

    def work(url: str) -> None:
        try:
            data = call_with_retries(lambda: fetch_once(url), retries, backoff)
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
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(work, todo))
    finally:
        if own_client:
            http.close()
    return report
