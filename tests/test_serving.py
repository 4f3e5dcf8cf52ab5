"""Serving: artefact round trip, refusal of corrupt folders, faiss retrieval, the HTTP service as a real
process, and the web page in headless Chromium.

A BPR-MF model is trained for a few epochs on the first 150 users of ml100k-mm (posters and text), or of
the embedded ml-latest-small when the shared data is absent.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recgoat.errors import ConfigError, DataError
from recgoat.serving import ItemIndex, brute_force_topk, export_run, load_run, recall_vs_exact

from serving_helpers import browser_page

httpx = pytest.importorskip("httpx")

ARTIFACTS = Path(__file__).parent / "artifacts"
N_USERS = 150


# ------------------------------------------------------------------------------------------- fixtures
def _subset(n_users: int = N_USERS):
    """The first ``n_users`` users of ml100k-mm (ml-latest-small without shared data), re-prepared."""
    from recgoat.datasets import load_raw, prepare
    from recgoat.datasets.registry import default_prepare_config, shared_root

    name = "ml100k-mm" if shared_root() is not None and (shared_root() / "ml100k-mm").is_dir() \
        else "ml-latest-small"
    name, inter, items, fields, info = load_raw(name)
    keep = inter["user"].drop_duplicates().iloc[:n_users]
    return prepare(name, inter[inter["user"].isin(keep)], items, fields, default_prepare_config(name), info)


@pytest.fixture(scope="module")
def dataset():
    return _subset()


@pytest.fixture(scope="module")
def model(dataset):
    from recgoat.models import BPRMF
    from recgoat.training.trainer import TrainConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = BPRMF.build(dataset, {"embedding_dim": 32})
    m.fit(dataset, TrainConfig(epochs=5, lr=5e-3, batch_size=1024, progress=False))
    m.eval()
    return m


@pytest.fixture(scope="module")
def artefact(model, dataset, tmp_path_factory) -> Path:
    # seen="train": the service then masks what model.recommend does, which these tests compare it with
    return export_run(model, dataset, tmp_path_factory.mktemp("serving") / "artefact", seen="train")


@pytest.fixture(scope="module")
def run(artefact):
    return load_run(artefact)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(artefact: Path, *extra: str):
    """The service as a real process on a free loopback port; yields an HTTP client for it."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recgoat.serving", str(artefact), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("server did not answer /health within 90 s")
            time.sleep(0.3)
        with httpx.Client(base_url=base, timeout=20) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(artefact):
    with _serve(artefact) as client:
        yield client


@pytest.fixture(scope="module")
def text_artefact(model, dataset, tmp_path_factory) -> Path:
    """The same model exported with item text features (titles, the packaged text encoder)."""
    from recgoat.features import encode_all
    from recgoat.features.store import FeatureConfig

    root = tmp_path_factory.mktemp("serving-text")
    feats = encode_all(dataset, root / "feat", FeatureConfig(text_template="{title}"), which=("text",),
                       progress=False)
    return export_run(model, dataset, root / "artefact", feats, seen="train")  # as `artefact`


@pytest.fixture(scope="module")
def text_server(text_artefact):
    with _serve(text_artefact) as client:
        yield client


# ------------------------------------------------------------------------------------------- artefacts
def test_round_trip_scores_are_exact(model, run, dataset):
    users = np.arange(dataset.n_users)
    expected = model.score(users)
    assert torch.equal(run.score(users), expected)
    assert torch.equal(run.model.score(users), expected)  # the saved model itself, reloaded
    for u in (0, dataset.n_users // 2, dataset.n_users - 1):
        np.testing.assert_array_equal(run.model.recommend(u, 10)[0], model.recommend(u, 10)[0])


def test_artefact_is_self_describing(artefact, run, dataset):
    meta = json.loads((artefact / "artifact.json").read_text())
    assert meta["format_version"] == 1 and meta["model"] == "bprmf" and meta["dataset"] == dataset.name
    on_disk = {p.relative_to(artefact).as_posix() for p in artefact.rglob("*") if p.is_file()} - {"artifact.json"}
    assert set(meta["files"]) == on_disk
    assert not [p for p in on_disk if p.endswith((".pkl", ".pickle", ".pt", ".pth"))]
    assert run.user_ids == [str(u) for u in dataset.user_ids]
    assert run.item_ids == [str(i) for i in dataset.item_ids]
    assert run.items["title"].tolist() == dataset.items["title"].astype(str).tolist()
    train = dataset.csr("train")
    assert (run.seen != train).nnz == 0
    # recent history is really the latest training interactions of the user
    tr = dataset.split_frame("train")
    u = int(np.argmax(np.diff(train.indptr)))
    rows = tr[tr["user"] == u].sort_values("timestamp")
    assert set(run.recent_history(u, 5)) <= set(rows["item"].tail(10))
    if dataset.has_images:
        imgs = run.items["image"].dropna()
        assert len(imgs) > 0 and imgs.str.startswith("images/").all()
        i = int(imgs.index[0])
        assert (artefact / imgs.iloc[0]).read_bytes() == Path(dataset.items["image"].iloc[i]).read_bytes()


def _copy(artefact: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(artefact, dst)
    return dst


def test_corrupt_or_mismatched_folder_is_refused(artefact, tmp_path):
    bad = _copy(artefact, tmp_path)
    data = bytearray((bad / "embeddings.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "embeddings.safetensors").write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_run(bad)

    shutil.rmtree(bad)
    bad = _copy(artefact, tmp_path)
    meta = json.loads((bad / "artifact.json").read_text())
    meta["format_version"] = 99
    (bad / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version 99"):
        load_run(bad)

    meta["format_version"] = 1
    meta["files"]["../outside.txt"] = "0" * 64
    (bad / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="outside the artefact"):
        load_run(bad)

    shutil.rmtree(bad)
    bad = _copy(artefact, tmp_path)
    (bad / "ids.json").unlink()
    with pytest.raises(DataError, match="missing"):
        load_run(bad)

    (bad / "artifact.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt JSON"):
        load_run(bad)

    # a required file dropped from the manifest would be read unchecked: replaced by zeros here
    shutil.rmtree(bad)
    bad = _copy(artefact, tmp_path)
    meta = json.loads((bad / "artifact.json").read_text())
    del meta["files"]["embeddings.safetensors"]
    (bad / "artifact.json").write_text(json.dumps(meta))
    from safetensors.torch import save_file

    emb = load_run(artefact)
    save_file({"user_emb": torch.zeros(emb.user_emb.shape), "item_emb": torch.zeros(emb.item_emb.shape)},
              str(bad / "embeddings.safetensors"))
    with pytest.raises(DataError, match="does not list embeddings.safetensors"):
        load_run(bad)
    # optional text features slipped in after export are refused, not served
    shutil.rmtree(bad)
    bad = _copy(artefact, tmp_path)
    save_file({"item_text": torch.zeros(emb.n_items, 4)}, str(bad / "text.safetensors"))
    with pytest.raises(DataError, match="does not list text.safetensors"):
        load_run(bad)

    trainer_run = tmp_path / "trainer-run"
    (trainer_run / "best").mkdir(parents=True)
    with pytest.raises(DataError, match="recgoat export"):
        load_run(trainer_run)


def test_export_refuses_other_dataset(model, tmp_path):
    other = _subset(N_USERS // 2)
    with pytest.raises(DataError, match="not the data it was trained on"):
        export_run(model, other, tmp_path / "x")
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to overwrite"):
        export_run(model, _subset(), tmp_path / "occupied")


# ------------------------------------------------------------------------------------------- retrieval
def test_flat_index_equals_brute_force(run, model):
    index = ItemIndex(run.item_emb, "flat")
    seen = [run.seen_items(u) for u in range(run.n_users)]
    ids, scores = index.search(run.user_emb, 20, seen)
    ref_ids, ref_scores = brute_force_topk(run.user_emb, run.item_emb, 20, seen)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    for u in range(run.n_users):  # the single-query path used by the service, and the model's own ranking
        one, _ = index.search(run.user_emb[u:u + 1], 20, [seen[u]])
        np.testing.assert_array_equal(one[0], ids[u])
    np.testing.assert_array_equal(ids[7], model.recommend(7, 20)[0])
    assert not np.isin(ids[7], seen[7]).any()
    # without exclusion seen items come back (BPR ranks training items high)
    plain, _ = index.search(run.user_emb, 20)
    assert np.isin(plain[7], seen[7]).any()


def test_search_edge_cases():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(6, 4)).astype(np.float32)
    index = ItemIndex(items)
    ids, scores = index.search(rng.normal(size=(2, 4)), 10, [np.arange(6), np.array([0, 1])])
    assert (ids[0] == -1).all() and np.isneginf(scores[0]).all()  # everything excluded
    assert sorted(ids[1][:4].tolist()) == [2, 3, 4, 5] and (ids[1][4:] == -1).all()
    with pytest.raises(ConfigError):
        index.search(items[:1], 0)
    with pytest.raises(ConfigError, match="index kind"):
        ItemIndex(items, "annoy")


def test_approximate_indexes_recall(run):
    exact = ItemIndex(run.item_emb, "flat")
    assert recall_vs_exact(exact, exact, run.user_emb, 10) == 1.0
    for kind in ("hnsw", "hnsw-l2", "ivf"):
        r = recall_vs_exact(ItemIndex(run.item_emb, kind), exact, run.user_emb, 10)
        assert 0.8 <= r <= 1.0, (kind, r)
    # a deliberately crippled IVF (1 probe of many lists) must lose recall: the measure can fail
    rng = np.random.default_rng(1)
    big = rng.normal(size=(5000, 16)).astype(np.float32)
    q = rng.normal(size=(200, 16)).astype(np.float32)
    weak = ItemIndex(big, "ivf", nlist=100, nprobe=1)
    assert recall_vs_exact(weak, ItemIndex(big), q, 10) < 0.9


def test_text_fold_in_math(run):
    """Profile-text fold-in with a stand-in encoder: neighbours by text cosine, weights ∝ cosine."""
    from recgoat.serving.app import TEXT_NEIGHBOURS, Service

    svc = Service(run)
    rng = np.random.default_rng(0)
    run.item_text = rng.normal(size=(run.n_items, 8)).astype(np.float32)
    try:
        target = run.item_text[3] * 2.0

        class Stub:
            def encode(self, texts):
                return np.stack([target for _ in texts])

        svc._encoder = Stub()
        z = svc.fold_in(np.zeros(0, np.int64), "anything")[0]
        cos = run.item_text @ target / (np.linalg.norm(run.item_text, axis=1) * np.linalg.norm(target))
        top = np.argsort(-cos)[:TEXT_NEIGHBOURS]
        w = np.maximum(cos[top], 0) / np.maximum(cos[top], 0).sum()
        np.testing.assert_allclose(z, w @ run.item_emb[top], rtol=1e-5, atol=1e-6)
        both = svc.fold_in(np.array([5, 9]), "anything")[0]
        np.testing.assert_allclose(both, (z + run.item_emb[[5, 9]].mean(0)) / 2, rtol=1e-5, atol=1e-6)
    finally:
        run.item_text = None


# ------------------------------------------------------------------------------------------- HTTP
def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return found


def test_connections_are_accepted_with_nagle_off():
    """uvicorn writes a response's head and body apart; with Nagle on, the body waited for the client's delayed
    ACK: 44 ms per keep-alive request. asyncio leaves TCP_NODELAY unset on create_server's sockets (proto 0)."""
    from recgoat.serving.__main__ import _listen

    with _listen("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(sock.getsockname()[:2]):
            conn, _ = sock.accept()
            with conn:
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_health_metadata_docs(server, run):
    if os.path.exists("/proc/net/tcp"):  # the default bind is loopback only, checked on the live socket
        assert _listening_addresses(server.base_url.port) == {"127.0.0.1"}
    h = server.get("/health").json()
    assert h == {"status": "ok", "model": "bprmf", "users": run.n_users, "items": run.n_items}
    m = server.get("/metadata").json()
    assert m["n_items"] == run.n_items and m["index"] == "flat" and m["has_text_encoder"] is False
    assert m["embedding_dim"] == run.item_emb.shape[1]
    spec = server.get("/openapi.json").json()
    assert {"/recommend", "/similar-items", "/health", "/metadata"} <= set(spec["paths"])
    assert {"get", "post"} <= set(spec["paths"]["/recommend"])
    docs = server.get("/docs")  # works offline: its script and stylesheet come from this server, not a CDN
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', docs.text)
    assert len(assets) == 2 and all(a.startswith("/") for a in assets), assets
    for a in assets:
        r = server.get(a)
        assert r.status_code == 200 and len(r.content) > 10_000
    page = server.get("/")
    # self-contained: no external stylesheet, script or font
    assert page.status_code == 200 and "recgoat" in page.text
    assert "<link" not in page.text and 'src="http' not in page.text and "@import" not in page.text


def test_get_recommend_matches_model(server, run, model):
    u = 11
    uid = run.user_ids[u]
    r = server.get("/recommend", params={"user_id": uid, "k": 10})
    assert r.status_code == 200
    body = r.json()
    got = [run.item_index[i["item_id"]] for i in body["items"]]
    expected_ids, expected_scores = model.recommend(u, 10)
    assert got == expected_ids.tolist()
    np.testing.assert_allclose([i["score"] for i in body["items"]], expected_scores, rtol=1e-5, atol=1e-5)
    assert body["items"][0]["title"] == run.items["title"].iloc[got[0]]
    assert body["user_id"] == uid and body["k"] == 10 and body["exclude_seen"] is True
    plain = server.get("/recommend", params={"user_id": uid, "k": 10, "exclude_seen": "false"}).json()
    ids_plain = [run.item_index[i["item_id"]] for i in plain["items"]]
    assert ids_plain == model.recommend(u, 10, remove_seen=False)[0].tolist()
    many = server.get("/recommend", params={"user_id": uid, "k": 1000}).json()
    # k past the unseen items: all of them, no padding
    assert len(many["items"]) == min(1000, run.n_items - len(run.seen_items(u)))


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-l2", "ivf"])
def test_service_with_an_approximate_index(artefact, run, model, kind):
    """``--index hnsw|ivf``: the service answers from that index, close to exact and never a seen item."""
    with _serve(artefact, "--index", kind) as client:
        assert client.get("/metadata").json()["index"] == kind
        overlap = []
        for u in range(0, run.n_users, 10):
            got = [run.item_index[x["item_id"]] for x in
                   client.get("/recommend", params={"user_id": run.user_ids[u], "k": 10}).json()["items"]]
            assert len(got) == 10 and not set(got) & set(run.seen_items(u).tolist())
            overlap.append(len(set(got) & set(model.recommend(u, 10)[0].tolist())) / 10)
        assert np.mean(overlap) >= 0.9, overlap


def test_similar_items(server, run):
    i = int(np.argmax(np.diff(run.seen.tocsc().indptr)))  # the most popular item
    iid = run.item_ids[i]
    body = server.get("/similar-items", params={"item_id": iid, "k": 5}).json()
    assert body["item"]["item_id"] == iid and len(body["items"]) == 5
    got = [run.item_index[x["item_id"]] for x in body["items"]]
    assert i not in got
    unit = run.item_emb / np.linalg.norm(run.item_emb, axis=1, keepdims=True)
    cos = unit @ unit[i]
    cos[i] = -np.inf
    assert got == np.argsort(-cos, kind="stable")[:5].tolist()


def test_cold_start_post(server, run):
    basket = [run.item_ids[j] for j in (0, 4, 9)]
    r = server.post("/recommend", json={"item_ids": basket + [basket[0]], "k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] is None and len(body["items"]) == 7
    got = [run.item_index[x["item_id"]] for x in body["items"]]
    assert not set(got) & {0, 4, 9}
    z = run.item_emb[[0, 4, 9]].mean(0)
    ref, _ = brute_force_topk(z[None], run.item_emb, 7, [np.array([0, 4, 9])])
    assert got == ref[0].tolist()
    keep = server.post("/recommend", json={"item_ids": basket, "k": 7, "exclude_seen": False}).json()
    assert [run.item_index[x["item_id"]] for x in keep["items"]] == brute_force_topk(z[None], run.item_emb, 7)[0][0].tolist()


def test_a_trailing_slash_is_not_redirected(server, run):
    """Starlette's slash redirect decoded the path once more: /users/%25342/history/ went to /users/%342/history,
    i.e. user "42"'s history was served for user "%342". Such a path is now simply not found."""
    uid = run.user_ids[3]
    assert server.get(f"/users/{uid}/history").status_code == 200
    r = server.get(f"/users/{uid}/history/", follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_history_users_items_and_images(server, run, dataset):
    uid = run.user_ids[3]
    h = server.get(f"/users/{uid}/history", params={"n": 5}).json()
    assert h["n_interactions"] == len(run.seen_items(3))
    assert [run.item_index[x["item_id"]] for x in h["items"]] == run.recent_history(3, 5).tolist()
    users = server.get("/users", params={"limit": 7, "offset": 2}).json()
    assert users["total"] == run.n_users and [u["user_id"] for u in users["users"]] == run.user_ids[2:9]
    title = run.items["title"].iloc[0]
    found = server.get("/items", params={"q": title[:8].upper()}).json()
    assert run.item_ids[0] in [x["item_id"] for x in found["items"]]
    if dataset.has_images:
        with_img = int(np.flatnonzero(run.items["image"].notna())[0])
        r = server.get(f"/items/{run.item_ids[with_img]}/image")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/")
        assert r.content == Path(dataset.items["image"].iloc[with_img]).read_bytes()
        without = np.flatnonzero(run.items["image"].isna())
        if len(without):
            assert server.get(f"/items/{run.item_ids[int(without[0])]}/image").status_code == 404
    for sneaky in ("..%2F..%2Fartifact.json", "%2E%2E", "..%2Fids.json"):
        assert server.get(f"/items/{sneaky}/image").status_code == 404


@pytest.mark.parametrize("method,path,payload,status", [
    ("GET", "/recommend?user_id=no-such-user", None, 404),
    ("GET", "/recommend", None, 422),
    ("GET", "/recommend?user_id=", None, 422),
    ("GET", "/recommend?user_id={u}&k=0", None, 422),
    ("GET", "/recommend?user_id={u}&k=-3", None, 422),
    ("GET", "/recommend?user_id={u}&k=abc", None, 422),
    ("GET", "/recommend?user_id={u}&k=1.5", None, 422),
    ("GET", "/recommend?user_id={u}&k=100000000000000000000", None, 422),
    ("GET", "/recommend?user_id={u}&exclude_seen=maybe", None, 422),
    ("GET", "/similar-items?item_id=no-such-item", None, 404),
    ("GET", "/similar-items", None, 422),
    ("GET", "/similar-items?item_id={i}&k=0", None, 422),
    ("GET", "/users/no-such-user/history", None, 404),
    ("GET", "/users/{u}/history?n=0", None, 422),
    ("GET", "/users?limit=0", None, 422),
    ("GET", "/users?offset=-1", None, 422),
    ("GET", "/items/no-such-item/image", None, 404),
    ("GET", "/items?limit=abc", None, 422),
    ("POST", "/recommend", {"item_ids": ["no-such-item"]}, 404),
    ("POST", "/recommend", {"item_ids": []}, 422),
    ("POST", "/recommend", {}, 422),
    ("POST", "/recommend", {"item_ids": "{i}"}, 422),
    ("POST", "/recommend", {"item_ids": [["{i}"]]}, 422),
    ("POST", "/recommend", {"item_ids": ["{i}"], "k": 0}, 422),
    ("POST", "/recommend", {"item_ids": ["{i}"], "k": "ten"}, 422),
    ("POST", "/recommend", {"item_ids": ["{i}"], "surprise": 1}, 422),
    ("POST", "/recommend", {"text": "I love space operas"}, 422),  # this run has no text encoder
    ("POST", "/recommend", {"text": "   "}, 422),
    ("POST", "/recommend", [1, 2, 3], 422),
    ("POST", "/recommend", "not json", 422),
])
def test_bad_input_is_4xx_never_500(server, run, method, path, payload, status):
    u, i = run.user_ids[0], run.item_ids[0]
    path = path.replace("{u}", u).replace("{i}", i)
    if method == "GET":
        r = server.get(path)
    elif payload == "not json":
        r = server.post(path, content=b"{not json", headers={"content-type": "application/json"})
    else:
        payload = json.loads(json.dumps(payload).replace("{i}", i))
        r = server.post(path, json=payload)
    assert r.status_code == status, r.text
    assert "detail" in r.json()


@pytest.mark.parametrize("body", [
    '{"item_ids":["{i}"],"k":1e400}',
    '{"item_ids":["{i}"],"k":NaN}',
    '{"item_ids":["{i}"],"k":-Infinity}',
    '{"item_ids":[NaN]}',
    '{"item_ids":["{i}"],"text":Infinity}',
    '{"item_ids":["{i}"],"exclude_seen":NaN}',
    '{"item_ids":["{i}"],"k":true}',
    '{"item_ids":["{i}"],"k":"10"}',
    '{"item_ids":["{i}"],"k":10.0}',
    '{"item_ids":["{i}"],"exclude_seen":"yes"}',
    '{"item_ids":[{"{i}":1}]}',
])
def test_non_finite_or_loosely_typed_json_is_422(server, run, body):
    # Python's JSON parser reads NaN, Infinity and 1e400 as floats; echoing them back must not fail
    r = server.post("/recommend", content=body.replace("{i}", run.item_ids[0]).encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_responses_match_their_schemas_even_for_awkward_titles(artefact):
    """The hot endpoints write JSON from precomputed fragments: it must still be the declared schema."""
    from fastapi.testclient import TestClient

    from recgoat.serving.app import Recommendations, SimilarItems, create_app

    run = load_run(artefact)
    awkward = 'Quote " back\\slash 100% %s %r {} é'
    best = int(run.score([0])[0].argmax())
    run.items.loc[[0, best], "title"] = awkward
    client = TestClient(create_app(run))
    sim = SimilarItems.model_validate_json(client.get("/similar-items", params={"item_id": run.item_ids[0]}).content)
    assert sim.item.title == awkward and sim.item.score is None and len(sim.items) == 10
    rec = Recommendations.model_validate_json(client.get(
        "/recommend", params={"user_id": run.user_ids[0], "k": 1000, "exclude_seen": False}).content)
    assert len(rec.items) == min(1000, run.n_items) and rec.items[0].title == awkward
    top = np.sort(run.score([0])[0].numpy())[::-1][:len(rec.items)]
    np.testing.assert_allclose([i.score for i in rec.items], top, rtol=1e-5, atol=1e-5)
    cold = Recommendations.model_validate_json(client.post("/recommend", json={"item_ids": [run.item_ids[1]]}).content)
    assert cold.user_id is None and len(cold.items) == 10


# ------------------------------------------------------------------------------------------- CLI
def test_cli_recommend_and_similar(artefact, run):
    from typer.testing import CliRunner

    from recgoat.serving.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["recommend", str(artefact), "--user", run.user_ids[11], "-k", "3"])
    assert out.exit_code == 0, out.output
    top = run.score([11])[0].clone()
    top[torch.from_numpy(run.seen_items(11).astype(np.int64))] = -torch.inf
    first = int(torch.argmax(top))
    assert run.items["title"].iloc[first][:20] in out.output
    assert run.items["title"].iloc[int(run.recent_history(11, 1)[0])][:20] in out.output
    sim = runner.invoke(app, ["recommend", str(artefact), "--item", run.item_ids[0], "-k", "3"])
    assert sim.exit_code == 0 and "similar" in sim.output
    bad = runner.invoke(app, ["recommend", str(artefact), "--user", "no-such-user"])
    assert bad.exit_code == 1 and "unknown user id" in bad.output
    assert "note:" not in out.output
    # more than the unseen items: a short table, and why (it was said nowhere)
    left = run.n_items - len(run.seen_items(11))
    many = runner.invoke(app, ["recommend", str(artefact), "--user", run.user_ids[11], "-k", str(run.n_items + 5)])
    assert many.exit_code == 0
    assert f"note: {left} of the {run.n_items} items are left to recommend to user {run.user_ids[11]}" \
        in " ".join(many.output.split())


def test_serve_entry_points_refuse_bad_folders_and_bind_loopback(tmp_path, capsys):
    from typer.testing import CliRunner

    from recgoat.serving.__main__ import main
    from recgoat.serving.cli import app

    assert main([str(tmp_path / "nothing")]) == 1
    assert "no such artefact folder" in capsys.readouterr().err
    out = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert out.exit_code == 1 and "artifact.json is missing" in out.output
    import inspect

    from recgoat.serving import __main__ as entry

    assert inspect.signature(entry.serve).parameters["host"].default == "127.0.0.1"


def test_cli_export_from_trainer_run(model, dataset, tmp_path):
    from typer.testing import CliRunner

    from recgoat.serving.cli import app

    run_dir = tmp_path / "run"
    model.save(run_dir / "best")
    (run_dir / "result.json").write_text(json.dumps({"dataset_fingerprint": "0123456789abcdef"}))
    dataset.save(tmp_path / "ds")
    runner = CliRunner()
    bad = runner.invoke(app, ["export", str(run_dir), "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "a")])
    assert bad.exit_code == 1 and "fingerprint" in bad.output
    (run_dir / "result.json").write_text(json.dumps({"dataset_fingerprint": dataset.fingerprint()}))
    ok = runner.invoke(app, ["export", str(run_dir), "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert torch.equal(load_run(tmp_path / "a").score([0, 1]), model.score([0, 1]))


# ------------------------------------------------------------------------------------------- browser
def test_web_page_in_headless_chromium(text_server, run, tmp_path):
    """Against the run with a text encoder, so the profile-text box is shown and used too."""
    server = text_server
    base = str(server.base_url).rstrip("/")
    u = int(np.argmax(np.diff(run.seen.indptr)))
    with browser_page(tmp_path / "profile") as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/", timeout=30_000)
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        page.fill("#user", run.user_ids[u])
        page.click("#show")
        page.wait_for_selector("#recs .card", timeout=30_000)
        page.wait_for_selector("#history .card", timeout=30_000)
        recs = page.eval_on_selector_all("#recs .card", "els => els.map(e => e.dataset.itemId)")
        expected = [run.item_ids[i] for i in run.score([u])[0].masked_fill(
            torch.from_numpy(np.isin(np.arange(run.n_items), run.seen_items(u))), -torch.inf
        ).topk(10).indices.tolist()]
        assert recs == expected
        titles = page.inner_text("#recs")
        assert run.items["title"].iloc[run.item_index[recs[0]]] in titles
        if run.items["image"].notna().any():
            page.wait_for_function(
                "() => [...document.querySelectorAll('#recs img')].some(i => i.complete && i.naturalWidth > 0)",
                timeout=30_000)
        page.click("#recs .card button")
        page.wait_for_selector("#similar .card", timeout=30_000)
        assert page.inner_text("#similar-title").startswith("Similar to")
        # a cold-start basket: search a title, add it, ask for recommendations
        title = run.items["title"].iloc[run.item_index[recs[0]]]
        page.fill("#search", title[:10])
        page.wait_for_selector("#results li", timeout=30_000)
        page.click("#results li")
        page.wait_for_selector("#basket span", timeout=30_000)
        page.click("#go-cold")
        page.wait_for_function("() => document.querySelector('#recs-title').textContent.includes('new user')",
                               timeout=30_000)
        assert page.locator("#recs .card").count() == 10
        # a profile text alone (the basket emptied): the cards are the service's answer for that text
        page.click("#clear")
        page.fill("#profile", title)
        page.click("#go-cold")
        page.wait_for_function("() => document.querySelector('#recs-title').textContent.includes('0 liked "
                               "items + profile')", timeout=30_000)
        cards = page.eval_on_selector_all("#recs .card", "els => els.map(e => e.dataset.itemId)")
        answer = server.post("/recommend", json={"text": title, "k": 10}).json()
        assert cards == [x["item_id"] for x in answer["items"]]
        page.click("#show")  # back to the chosen user for the screenshot
        page.wait_for_function("() => document.querySelector('#recs-title').textContent.includes('for user')",
                               timeout=30_000)
        page.click("#recs .card button")
        page.wait_for_selector("#similar .card", timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "serving-page.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        assert shot.stat().st_size > 10_000 and not errors, errors


# ------------------------------------------------------------------------------------------- profile text
def test_profile_text_cold_start_over_http(text_server, text_artefact):
    """A run exported with text features answers a profile text through the packaged text encoder."""
    from recgoat.serving.app import Service

    run = load_run(text_artefact)
    assert run.has_text_encoder and run.item_text.shape == (run.n_items, 384)
    assert text_server.get("/metadata").json()["has_text_encoder"] is True
    svc = Service(run)  # the same request logic in this process, for the expected answer
    x = int(np.argmax(np.diff(run.seen.tocsc().indptr)))  # a popular item
    title = str(run.items["title"].iloc[x])
    top, w = svc.text_neighbours(title)
    assert top[0] == x and w[0] == w.max()  # its own title is nearest its own (title-only) text features
    r = text_server.post("/recommend", json={"text": title, "k": 5, "exclude_seen": False})
    assert r.status_code == 200, r.text
    ids, _ = svc.index.search((w @ run.item_emb[top])[None], 5)
    assert [run.item_index[i["item_id"]] for i in r.json()["items"]] == ids[0].tolist()
    # text and liked items together: the mean of the two fold-ins, liked items left out
    basket = [run.item_ids[j] for j in (0, 4)]
    both = text_server.post("/recommend", json={"item_ids": basket, "text": title, "k": 5}).json()
    z = svc.fold_in(np.array([0, 4]), title)
    ids, _ = svc.index.search(z, 5, [np.array([0, 4])])
    assert [run.item_index[i["item_id"]] for i in both["items"]] == ids[0].tolist()
    for body in ({"text": "é" * 10_000, "k": 3}, {"text": "nul \x00 and emoji \U0001f37f", "k": 3}):
        assert text_server.post("/recommend", json=body).status_code == 200
    too_long = text_server.post("/recommend", json={"text": "x" * 10_001})
    assert too_long.status_code == 422
    assert len(too_long.content) < 2_000 and "(10001 characters)" in too_long.text  # the echo is cut short


def test_unloadable_text_encoder_is_503_not_500(text_artefact, tmp_path):
    """The encoder named by the run cannot be loaded here: profile texts get 503, liked items still work."""
    broken = _copy(text_artefact, tmp_path)
    meta = json.loads((broken / "artifact.json").read_text())
    meta["text_encoder"]["encoder"] = str(tmp_path / "no-such-encoder")
    (broken / "artifact.json").write_text(json.dumps(meta))
    run = load_run(broken)
    with _serve(broken) as client:
        r = client.post("/recommend", json={"text": "space operas", "k": 3})
        assert r.status_code == 503 and "text encoder unavailable" in r.json()["detail"], r.text
        assert "no-such-encoder" in r.json()["detail"]
        ok = client.post("/recommend", json={"item_ids": [run.item_ids[0]], "k": 3})
        assert ok.status_code == 200 and len(ok.json()["items"]) == 3


def test_export_defaults_to_the_runs_feature_folder(tmp_path):
    """`recgoat export` without --features uses the folder run_config.json records (a text-trained run
    would otherwise lose its text encoder), and says so; a recorded folder that is gone is reported."""
    from recgoat.serving.export import _recorded_features
    from recgoat.training.run import read_run_record

    def _run_features(run):
        return _recorded_features(read_run_record(run))

    run = tmp_path / "run"
    run.mkdir()
    assert _run_features(run) == (None, None)  # not a trainer run folder: nothing recorded
    feats = tmp_path / "feats"
    feats.mkdir()
    (run / "run_config.json").write_text(json.dumps({"features": str(feats)}))
    folder, note = _run_features(run)
    assert folder == feats and "the run's" in note
    (run / "run_config.json").write_text(json.dumps({"features": str(tmp_path / "gone")}))
    folder, note = _run_features(run)
    # called from Python: its argument's name (`recgoat export` says --features: cli_spelling)
    assert folder is None and "not found" in note and "(pass features= to" in note
    from recgoat.errors import cli_spelling

    with cli_spelling():
        assert "(pass --features to" in _run_features(run)[1]
    (run / "run_config.json").write_text(json.dumps({"features": None}))
    assert _run_features(run) == (None, None)
