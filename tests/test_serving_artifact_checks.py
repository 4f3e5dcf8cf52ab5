"""Serving artefact checks: ids the service refused although the run holds them, items without a title,
repeated interactions, unservable embeddings, malformed or newer artefacts, and ports out of range.

Everything runs on a tiny catalogue written as CSV (awkward ids, a missing title, each interaction twice,
prepared without deduplication) and a BPR-MF model trained for one epoch; the service is exercised in
process with FastAPI's TestClient.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recgoat.errors import DataError
from recgoat.serving import export_run, load_run

from serving_helpers import train_shop

pytest.importorskip("httpx")

LONG_USER = "u" * 250  # ids longer than the 200 characters the query parameters allowed
LONG_ITEM = "i" * 230
USERS = ["042", "42", "a b", "é✓", LONG_USER, "u5", "u6", "u7"]
ITEMS = [f"i{i}" for i in range(10)] + ["007", LONG_ITEM]
UNTITLED = "i1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # every pair twice (two timestamps): without deduplication the training split holds both rows
    rows = [(u, it, 1000 + 10 * j + rep) for ui, u in enumerate(USERS) for j, it in enumerate(ITEMS)
            if (ui + j) % 3 for rep in (0, 1)]
    titles = [f"Title {i}" for i in range(len(ITEMS))]
    titles[ITEMS.index(UNTITLED)] = None
    return train_shop(tmp_path_factory.mktemp("qa2") / "shop", rows, ITEMS, titles, dedup=False)


@pytest.fixture(scope="module")
def artefact(trained, tmp_path_factory) -> Path:
    return export_run(*trained, tmp_path_factory.mktemp("qa2-art") / "artefact")


@pytest.fixture(scope="module")
def run(artefact):
    return load_run(artefact)


@pytest.fixture(scope="module")
def client(run):
    from fastapi.testclient import TestClient

    from recgoat.serving import create_app

    with TestClient(create_app(run), raise_server_exceptions=False) as c:
        yield c


def _rehash(folder: Path, *names: str) -> None:
    """Record the current sha256 of ``names`` in artifact.json (a folder edited by another tool)."""
    meta = json.loads((folder / "artifact.json").read_text())
    for name in names:
        meta["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "artifact.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------- ids
def test_ids_of_the_run_longer_than_200_characters_are_served(client, run):
    """GET /recommend and /similar-items capped ids at 200 characters: a user or item of the run with a
    longer id got a 422, although /users/{id}/history answered for the same user."""
    r = client.get("/recommend", params={"user_id": LONG_USER, "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == LONG_USER and len(r.json()["items"]) == 3
    r = client.get("/similar-items", params={"item_id": LONG_ITEM, "k": 2})
    assert r.status_code == 200, r.text
    assert r.json()["item"]["item_id"] == LONG_ITEM
    # an id longer than any of the run's is still refused before the lookup
    assert client.get("/recommend", params={"user_id": "u" * 251}).status_code == 422
    r = client.get("/recommend", params={"user_id": "u" * 240})
    assert r.status_code == 404 and "unknown user_id" in r.json()["detail"]
    # raw ids are matched exactly: "042" and "42" are two users, " 42" is neither
    assert client.get("/recommend", params={"user_id": "042"}).json()["user_id"] == "042"
    assert client.get("/recommend", params={"user_id": "42"}).json()["user_id"] == "42"
    assert client.get("/recommend", params={"user_id": " 42"}).status_code == 404


# ------------------------------------------------------------------------------------------- titles
def test_an_item_without_a_title_is_shown_by_its_id(client, artefact, run):
    """A catalogue row without a title was shown as an empty title: a blank card on the web page and blank
    cells (and "items similar to i1 —  (cosine)") in `recgoat recommend`."""
    from typer.testing import CliRunner

    from recgoat.serving.cli import app

    r = client.get("/items", params={"limit": 1000})
    titles = {it["item_id"]: it["title"] for it in r.json()["items"]}
    assert titles[UNTITLED] == UNTITLED
    assert titles["i0"] == "Title 0"
    r = client.get("/similar-items", params={"item_id": UNTITLED, "k": 1})
    assert r.json()["item"]["title"] == UNTITLED
    out = CliRunner().invoke(app, ["recommend", str(artefact), "--item", UNTITLED, "-k", "3"])
    assert out.exit_code == 0, out.output
    assert f"items similar to {UNTITLED} — {UNTITLED} (cosine)" in out.output


def test_history_0_prints_no_history_table(artefact):
    from typer.testing import CliRunner

    from recgoat.serving.cli import app

    out = CliRunner().invoke(app, ["recommend", str(artefact), "--user", "042", "-k", "2", "--history", "0"])
    assert out.exit_code == 0, out.output
    assert "user 042:" not in out.output and "top 2 for user 042" in out.output
    full = CliRunner().invoke(app, ["recommend", str(artefact), "--user", "042", "-k", "2", "--history", "1"])
    assert "user 042:" in full.output  # the history table's title


# ------------------------------------------------------------------------------------------- history
def test_a_pair_seen_twice_is_one_seen_item(client, run, trained):
    """A dataset prepared without deduplication has each training pair twice: the recent history listed
    every item twice and n_interactions (the "items in training") counted them twice. The seen history is every
    split's interactions (export's default seen="all")."""
    model, ds = trained
    train = ds.interactions
    assert train.duplicated(["user", "item"]).any()  # the fixture really has repeated pairs
    every = ds.csr(None)
    for u in range(run.n_users):
        seen = run.seen_items(u)
        assert sorted(seen.tolist()) == sorted(every[u].indices.tolist())
        hist = run.recent_history(u, 100)
        assert len(set(hist.tolist())) == len(hist) == len(seen)
    u = ds.user_ids.tolist().index("042")
    r = client.get("/users/042/history", params={"n": 100}).json()
    assert r["n_interactions"] == every[u].nnz
    ids = [it["item_id"] for it in r["items"]]
    assert len(set(ids)) == len(ids)
    # most recent first: the items' last timestamps, descending
    last = train[train["user"] == u].groupby("item")["timestamp"].max()
    assert ids == [str(ds.item_ids[i]) for i in last.sort_values(ascending=False, kind="stable").index]


# ------------------------------------------------------------------------------------------- embeddings
def test_export_refuses_unservable_embeddings(trained, tmp_path, monkeypatch):
    """A model whose final embeddings are NaN, or so large that every score overflows float32, was exported
    without complaint: the artefact then failed every load (NaN) or served empty lists (overflow)."""
    model, ds = trained
    u, i = model.final_embeddings()
    for bad, msg in (((u * float("nan"), i), "embeddings hold NaN or inf"),
                     ((u * 1e20, i * 1e20), "embeddings so large that scores overflow float32")):
        monkeypatch.setattr(model, "final_embeddings", lambda bad=bad: bad)
        with pytest.raises(DataError, match=re.escape(f"cannot export model 'bprmf': its final {msg}")):
            export_run(model, ds, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_overflowing_embeddings_in_an_artefact_are_refused(artefact, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "huge"
    shutil.copytree(artefact, bad)
    emb = load_file(str(bad / "embeddings.safetensors"))
    save_file({k: v * 1e20 for k, v in emb.items()}, str(bad / "embeddings.safetensors"))
    _rehash(bad, "embeddings.safetensors")
    assert torch.isfinite(load_file(str(bad / "embeddings.safetensors"))["user_emb"]).all()
    with pytest.raises(DataError, match=r"scores overflow float32"):
        load_run(bad)


# ------------------------------------------------------------------------------------------- artefacts
def test_a_newer_format_version_says_to_upgrade(artefact, tmp_path):
    bad = tmp_path / "newer"
    shutil.copytree(artefact, bad)
    meta = json.loads((bad / "artifact.json").read_text())
    meta["format_version"] = 2
    (bad / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"artifact\.json: artefact format version 2 was written by a newer "
                                        r"recgoat; this one reads version 1: upgrade recgoat"):
        load_run(bad)


@pytest.mark.parametrize("name, edit, expected", [
    ("ids.json", lambda p: p.write_text(json.dumps({"users": ["a"]})), r'expected \{"users"'),
    ("ids.json", lambda p: p.write_text("[1, 2]"), r'expected \{"users"'),
    ("history.parquet", lambda p: pd.DataFrame({"u": [0]}).to_parquet(p), r"no user or item column"),
    ("history.parquet", lambda p: pd.DataFrame({"user": [0.5], "item": [0]}).to_parquet(p),
     r"column user holds float64 values"),
    ("items.parquet", lambda p: p.write_bytes(b"not parquet"), r"unreadable or malformed \("),
    ("embeddings.safetensors", lambda p: p.write_bytes(b"\x00" * 16), r"unreadable or malformed \("),
])
def test_malformed_files_with_matching_checksums_are_named(artefact, tmp_path, name, edit, expected):
    """A folder re-hashed after an edit (or written by another tool) passes the checksums; its malformed
    files were a KeyError, TypeError or safetensors traceback instead of one error naming the file."""
    from typer.testing import CliRunner

    from recgoat.serving.cli import app

    bad = tmp_path / "edited"
    shutil.copytree(artefact, bad)
    edit(bad / name)
    _rehash(bad, name)
    with pytest.raises(DataError, match=re.escape(str(bad / name)) + ": .*" + expected):
        load_run(bad)
    out = CliRunner().invoke(app, ["recommend", str(bad), "--user", "042"])
    assert out.exit_code == 1 and out.output.startswith("error: ") and out.output.count("\n") == 1, out.output


# ------------------------------------------------------------------------------------------- serve
def test_serve_refuses_ports_out_of_range_and_announces_the_real_port(artefact, capsys, monkeypatch):
    """getaddrinfo takes a port modulo 65536: `python -m recgoat.serving A --port 70000` listened on 4464 while
    announcing 70000; --port 0 listened on a port the system chose and announced port 0."""
    import uvicorn

    from recgoat.serving.__main__ import serve

    bound = []
    def run(self, sockets=None):  # instead of serving: note the socket's address and close it
        bound.append(sockets[0].getsockname())
        sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    try:
        assert serve(str(artefact), "127.0.0.1", 70000) == 1
        assert capsys.readouterr().err == "error: port 70000 is not a TCP port (0 to 65535)\n"
        assert bound == []
        assert serve(str(artefact), "127.0.0.1", 0) == 0
        host, port = bound[0]
        assert host == "127.0.0.1" and port != 0  # loopback by default
        assert f"on http://127.0.0.1:{port}/ " in capsys.readouterr().err
    finally:
        import gc

        gc.unfreeze()  # serve() froze the objects alive at start-up
