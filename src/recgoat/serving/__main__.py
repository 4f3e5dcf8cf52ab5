"""``python -m recgoat.serving ARTEFACT [--host 127.0.0.1] [--port 8000] [--index flat]``: run the service.

One uvicorn worker; faiss and torch are kept to one thread each, since requests are tiny and concurrency
comes from the event loop, not from intra-op threads.
"""
from __future__ import annotations

import argparse
import errno
import gc
import signal
import socket
import sys
import threading
import warnings


def main(argv: list[str] | None = None) -> int:
    from recgoat.serving.retrieval import INDEX_KINDS

    p = argparse.ArgumentParser(prog="python -m recgoat.serving", description=__doc__.splitlines()[0])
    p.add_argument("run", help="artefact folder written by `recgoat export`")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port; 0: a free one the system chooses "
                                                           "(default: 8000)")
    p.add_argument("--index", choices=INDEX_KINDS, default="flat",
                   help="flat: exact; hnsw, hnsw-l2 or ivf: approximate (see /metadata index_recall; default: flat)")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level (default: warning)")
    args = p.parse_args(argv)
    try:
        return serve(args.run, args.host, args.port, args.index, args.log_level)
    except KeyboardInterrupt:  # while loading (torch, the artefact): nothing was started, nothing to tidy
        print("interrupted", file=sys.stderr)
        return 130


def serve(run_path: str, host: str = "127.0.0.1", port: int = 8000, index: str = "flat",
          log_level: str = "warning") -> int:
    import faiss
    import torch
    import uvicorn

    from recgoat.errors import RecGOATError
    from recgoat.serving.app import create_app
    from recgoat.serving.artifacts import load_run

    if not 0 <= port <= 65535:
        # getaddrinfo takes the port modulo 65536: --port 70000 listened on 4464 while announcing 70000
        print(f"error: port {port} is not a TCP port (0 to 65535)", file=sys.stderr)
        return 1
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    try:
        app = create_app(load_run(run_path), index)
    except RecGOATError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # everything loaded so far lives as long as the process: keep it out of the cyclic GC's full passes,
    # which would otherwise walk torch, pandas and the item table and show up as latency spikes
    gc.collect()
    gc.freeze()
    # bind first: uvicorn reports a port in use only after the "serving" line, as a log record, with exit 3
    try:
        sock = _listen(host, port)
    except OSError as e:
        reason = "address already in use (another server? choose --port)" if e.errno == errno.EADDRINUSE \
            else (e.strerror or str(e))
        print(f"error: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]  # the port listened on (--port 0: one the system chose)
    svc = app.state.service
    recall = "" if index == "flat" else \
        f", {index} index vs exact: " + ", ".join(f"{k} {v:.3f}" for k, v in svc.index_recall.items())
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"  # an IPv6 address in brackets
    # a Ctrl-C in the instant between the "serving" line and uvicorn's event loop starting leaves its serve()
    # coroutine never awaited: Python's RuntimeWarning about it (two lines) would follow "server stopped"
    warnings.filterwarnings("ignore", message="coroutine 'Server.serve' was never awaited", category=RuntimeWarning)
    # SIGTERM (docker stop, systemd, kill) stops the server as Ctrl-C does: uvicorn shuts down gracefully, then
    # re-raises the signal to the handler it found, which was the default one: exit 143 without "server stopped"
    # built before the "serving" line: it configures logging, and a SIGTERM sent on seeing the line raised inside
    # logging's handler lock ("cannot release un-acquired lock", exit 1 instead of a clean stop)
    try:
        config = uvicorn.Config(app, host=host, port=port, workers=1, log_level=log_level, access_log=False)
    except BaseException:
        sock.close()
        raise
    on_main = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    term = signal.signal(signal.SIGTERM, _terminated) if on_main else None
    try:
        print(f"serving {run_path} on {url} (docs: /docs{recall})", file=sys.stderr, flush=True)
        uvicorn.Server(config).run(sockets=[sock])
    except (KeyboardInterrupt, _Terminated):
        # Ctrl-C is how a server is stopped: uvicorn shuts down gracefully, then re-raises the signal, which
        # ended the process with a traceback (and `recgoat serve` with a line about resuming training); the
        # try starts at the "serving" line, as a Ctrl-C right after it stops the server just the same
        pass
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, term)
        sock.close()
    print("server stopped", file=sys.stderr)
    return 0


class _Terminated(BaseException):
    """SIGTERM arrived: the server is stopped as by Ctrl-C (a BaseException, as KeyboardInterrupt is, so that no
    ``except Exception`` on the way swallows it)."""


def _terminated(signum, frame) -> None:
    raise _Terminated


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, as uvicorn would open it (OSError when it cannot)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.create_server(address, family=family, backlog=2048)
    # uvicorn sends a response's head and body in two writes. asyncio sets TCP_NODELAY only on sockets whose
    # proto is IPPROTO_TCP, and create_server's is 0, so Nagle held each body until the client's delayed ACK:
    # 44 ms per keep-alive request (21 requests/s for one client). Accepted connections inherit the option.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


if __name__ == "__main__":
    sys.exit(main())
