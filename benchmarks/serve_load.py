"""Load test of the recommendation service on loopback, and recall of the approximate indexes.

Trains BPR-MF on ml100k-mm (or takes ``--run ARTEFACT``), starts ``python -m recgoat.serving`` (uvicorn,
1 worker) on a free loopback port, then runs ``--clients`` concurrent keep-alive clients for
``--duration`` seconds against one endpoint and prints throughput and p50/p99 latency. The clients are
plain asyncio HTTP/1.1 so the load generator costs little CPU next to the server on a 2-core machine.
Targets (issue 6): >= 500 requests/s and p99 <= 50 ms for GET /recommend.

``--recall`` (or ``--recall-only``) also reports recall@k (``--recall-k``, default 10 and 100) of the
approximate indexes (hnsw, hnsw-l2, ivf) against the exact flat index, over every user of the run, as
served (seen items excluded) and not, on the run's items and on a larger catalogue (the run's items
plus random vectors with the same per-dimension spread, ``--catalogue`` items in all) so the
approximate indexes face a realistic size.

    python benchmarks/serve_load.py                      # 32 clients, 20 s, GET /recommend
    python benchmarks/serve_load.py --endpoint similar --clients 8 --duration 5 --recall
    python benchmarks/serve_load.py --run artefacts/lightgcn --recall-only
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_artefact(out: Path, epochs: int) -> Path:
    """Train BPR-MF on ml100k-mm and export it (reused when ``out`` already holds an artefact)."""
    if (out / "artifact.json").exists():
        return out
    import torch

    from recgoat.datasets import load
    from recgoat.models import BPRMF
    from recgoat.serving import export_run
    from recgoat.training.trainer import TrainConfig

    torch.set_num_threads(1)
    torch.manual_seed(2026)  # the initialisation: without it each fresh artefact had another test recall
    ds = load("ml100k-mm")
    model = BPRMF.build(ds, {"embedding_dim": 64})
    t = time.perf_counter()
    res = model.fit(ds, TrainConfig(epochs=epochs, lr=5e-3, batch_size=2048, progress=False, patience=5))
    print(f"trained bprmf on {ds.name} ({ds.n_users} users, {ds.n_items} items) in {time.perf_counter() - t:.0f} s; "
          f"test recall@20 {res['test']['recall@20']:.4f}")
    return export_run(model, ds, out, overwrite=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), including the load warm-up."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _client(host: str, port: int, paths: list[str], deadline: float, lat: list[float], errors: list[str],
                  body: bytes | None) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rnd = random.Random(id(lat) ^ len(lat))
    try:
        while time.perf_counter() < deadline:
            path = rnd.choice(paths)
            if body is None:
                req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            else:
                req = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            status = head.split(b" ", 2)[1]
            if status != b"200":
                errors.append(status.decode())
    finally:
        writer.close()


async def load(host: str, port: int, paths: list[str], clients: int, duration: float,
               body: bytes | None) -> tuple[list[float], list[str], float]:
    lat: list[float] = []
    errors: list[str] = []
    await _client(host, port, paths[:1], time.perf_counter() + 1.0, [], [], body)  # warm-up
    t0 = time.perf_counter()
    deadline = t0 + duration
    await asyncio.gather(*(_client(host, port, paths, deadline, lat, errors, body) for _ in range(clients)))
    return lat, errors, time.perf_counter() - t0


def recall_report(run_path: Path, ks: list[int], catalogue: int) -> None:
    """Recall@k of each approximate index against exact search, over every user of the run, on the run's
    items and on a larger catalogue; "served" excludes each user's seen items, as the service does."""
    from recgoat.serving import INDEX_KINDS, ItemIndex, load_run, recall_vs_exact

    run = load_run(run_path)
    rng = np.random.default_rng(0)
    item = run.item_emb
    big = np.vstack([item, rng.normal(item.mean(0), item.std(0), size=(max(catalogue - len(item), 0), item.shape[1]))
                     .astype(np.float32)])
    seen = [run.seen_items(u) for u in range(run.n_users)]
    for name, items in (("run", item), (f"{len(big)}-item catalogue", big)):
        exact = ItemIndex(items, "flat")
        for kind in [k for k in INDEX_KINDS if k != "flat"]:
            t = time.perf_counter()
            approx = ItemIndex(items, kind)
            build = time.perf_counter() - t
            cells = []
            for k in ks:
                cells.append(f"@{k} {recall_vs_exact(approx, exact, run.user_emb, k):.4f} / "
                             f"served {recall_vs_exact(approx, exact, run.user_emb, k, seen):.4f}")
            print(f"recall {kind:7s} vs exact on {name:22s}: {';  '.join(cells)}   (build {build:.2f} s)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="artefact folder (default: train BPR-MF on ml100k-mm)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/recgoat-serve-bench"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--endpoint", choices=("recommend", "similar", "post"), default="recommend")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--index", choices=("flat", "hnsw", "hnsw-l2", "ivf"), default="flat")
    p.add_argument("--url", help="load an already running service (host:port) instead of starting one")
    p.add_argument("--recall", action="store_true", help="also report recall of the approximate indexes vs exact")
    p.add_argument("--recall-k", default="10,100", help="the k of the recall report (comma-separated)")
    p.add_argument("--recall-only", action="store_true", help="the recall report alone, no load test")
    p.add_argument("--catalogue", type=int, default=100_000, help="catalogue size for the recall test")
    args = p.parse_args()

    run_path = args.run or build_artefact(args.workdir / "artefact", args.epochs)
    from recgoat.serving import load_run

    if args.recall_only:
        recall_report(run_path, [int(k) for k in args.recall_k.split(",")], args.catalogue)
        return 0
    run = load_run(run_path)
    if args.endpoint == "recommend":
        paths = [f"/recommend?user_id={u}&k={args.k}&exclude_seen=true" for u in run.user_ids]
        body = None
    elif args.endpoint == "similar":
        paths = [f"/similar-items?item_id={i}&k={args.k}" for i in run.item_ids]
        body = None
    else:
        paths = ["/recommend"]
        body = ('{"item_ids": [%s], "k": %d}' % (", ".join(f'"{i}"' for i in run.item_ids[:5]), args.k)).encode()

    server = None
    if args.url:
        host, port = args.url.rsplit(":", 1)
        port = int(port)
    else:
        host, port = "127.0.0.1", free_port()
        server = subprocess.Popen([sys.executable, "-m", "recgoat.serving", str(run_path), "--host", host,
                                   "--port", str(port), "--index", args.index])
    try:
        import httpx

        for _ in range(120):
            try:
                if httpx.get(f"http://{host}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            print("service did not come up", file=sys.stderr)
            return 1
        cpu0 = cpu_seconds(server.pid) if server is not None else None
        client_cpu = time.process_time()
        lat, errors, wall = asyncio.run(load(host, port, paths, args.clients, args.duration, body))
        client_cpu = time.process_time() - client_cpu
        cpu = cpu_seconds(server.pid) - cpu0 if server is not None else None
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    ms = np.array(lat) * 1e3
    print(f"{args.endpoint} ({args.index} index, k={args.k}): {len(lat)} requests by {args.clients} clients in "
          f"{wall:.1f} s -> {len(lat) / wall:.0f} requests/s; latency p50 {np.percentile(ms, 50):.1f} ms, "
          f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms; non-200: {len(errors)}")
    if cpu is not None:
        # on a shared machine throughput depends on the neighbours; CPU per request does not
        print(f"server CPU: {cpu / max(len(lat), 1) * 1e3:.2f} ms per request ({cpu / wall:.0%} of one core); "
              f"load generator CPU: {client_cpu / max(len(lat), 1) * 1e3:.2f} ms per request; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.recall:
        recall_report(run_path, [int(k) for k in args.recall_k.split(",")], args.catalogue)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
