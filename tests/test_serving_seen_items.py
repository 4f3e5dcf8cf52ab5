"""Serving: what an exported service counts as a user's seen items, and GET parameters it must refuse.

1. ``exclude_seen`` left out training items only: a deployed service recommended items the user had in the
   validation/test splits, and ``/users/{id}/history`` counted training interactions only. ``export_run(seen=)``
   / ``recgoat export --seen`` now chooses (default ``all``), artifact.json and ``/metadata`` record it, and an
   artefact written before (no ``seen``) loads as its training history, as it did.
2. ``GET /recommend?exclude-seen=false`` (a typo) or ``?top_k=3`` were 200s that silently ignored the parameter,
   and ``k=2.0`` or ``k=" 5"`` were read as integers though POST's body refuses ``k: 5.0``: all are 422s now.

The tiny catalogue of the other serving QA modules (6 users × 12 items, each user with valid and test items),
BPR-MF for one epoch, served in process with FastAPI's TestClient.
"""
from __future__ import annotations

import json
import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from recgoat.errors import DataError
from recgoat.serving import export_run, load_run

from serving_helpers import shop_rows, train_shop

pytest.importorskip("httpx")

ITEMS = [f"i{i}" for i in range(12)]
USERS = [f"u{u}" for u in range(6)]
ACCEPTED = "accepted: user_id, k, exclude_seen"
NOT_INT = "Input should be a valid integer, unable to parse string as an integer"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rows = shop_rows(USERS, ITEMS, t0=100)
    model, ds = train_shop(tmp_path_factory.mktemp("s15") / "shop", rows, ITEMS)
    held_out = ds.interactions["split"] != "train"
    assert held_out.any() and ds.interactions[held_out]["user"].nunique() == ds.n_users  # every user holds some
    return model, ds


@pytest.fixture(scope="module")
def default(trained, tmp_path_factory):
    """The artefact of a plain export (what the GET parameter tests serve)."""
    return export_run(*trained, tmp_path_factory.mktemp("s15-art") / "all")


@pytest.fixture(scope="module")
def artefacts(trained, default):
    """{"all": the default export, "train": --seen train, "legacy": a train export without the seen field}."""
    root = default.parent
    out = {"all": default, "train": export_run(*trained, root / "train", seen="train")}
    legacy = root / "legacy"
    shutil.copytree(out["train"], legacy)
    meta = json.loads((legacy / "artifact.json").read_text())
    del meta["seen"]  # artifact.json carries no checksum of its own: as an older export wrote it
    (legacy / "artifact.json").write_text(json.dumps(meta))
    out["legacy"] = legacy
    return out


def _client(folder):
    from fastapi.testclient import TestClient

    from recgoat.serving import create_app

    return TestClient(create_app(load_run(folder)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(default):
    with _client(default) as c:
        yield c


def _ids(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


# ------------------------------------------------------------------ 1. the seen history an artefact records
def test_the_default_export_leaves_out_every_split_of_a_users_history(default, trained, client):
    """A deployed service recommended the user's own validation/test items, and /history counted only training."""
    model, ds = trained
    every, train = ds.csr(None), ds.csr("train")
    run = load_run(default)
    for u, uid in enumerate(ds.user_ids.tolist()):
        held_out = set(every[u].indices.tolist()) - set(train[u].indices.tolist())
        assert held_out, uid
        assert sorted(run.seen_items(u).tolist()) == sorted(every[u].indices.tolist())
        body = client.get("/recommend", params={"user_id": uid, "k": 1000}).json()
        assert not {ds.item_ids[i] for i in every[u].indices} & set(_ids(body)), uid
        assert len(body["items"]) == ds.n_items - every[u].nnz
        # exclude_seen=false still ranks the whole catalogue, held-out items included
        assert len(client.get("/recommend", params={"user_id": uid, "k": 1000, "exclude_seen": "false"})
                   .json()["items"]) == ds.n_items
        hist = client.get(f"/users/{uid}/history", params={"n": 1000}).json()
        assert hist["n_interactions"] == every[u].nnz == len(hist["items"])
        assert {it["item_id"] for it in hist["items"]} == {ds.item_ids[i] for i in every[u].indices}
    users = client.get("/users").json()["users"]
    assert [r["n_interactions"] for r in users] == np.diff(every.indptr).tolist()
    assert json.loads((default / "artifact.json").read_text())["seen"] == "all"
    assert run.seen_scope == "all" and client.get("/metadata").json()["seen"] == "all"


@pytest.mark.parametrize("kind", ["train", "legacy"])
def test_seen_train_and_an_older_artefact_keep_the_training_history(artefacts, trained, kind):
    """`--seen train` is today's behaviour (what the model masks in evaluation), and an artefact exported
    before the option (no `seen` in artifact.json) still loads as its training history."""
    model, ds = trained
    train = ds.csr("train")
    run = load_run(artefacts[kind])
    assert run.seen_scope == "train" and (run.seen != train).nnz == 0
    with _client(artefacts[kind]) as c:
        meta = c.get("/metadata").json()
        assert meta["seen"] == "train" and meta["format_version"] == 1
        for u, uid in enumerate(ds.user_ids.tolist()):
            body = c.get("/recommend", params={"user_id": uid, "k": 1000}).json()
            assert _ids(body) == [ds.item_ids[i] for i in model.recommend(u, 1000)[0]]
            assert c.get(f"/users/{uid}/history").json()["n_interactions"] == train[u].nnz


def test_the_seen_choice_is_checked_on_export_and_load(artefacts, trained, tmp_path):
    with pytest.raises(ValueError, match=r"^seen must be one of all, train, got 'valid'$"):
        export_run(*trained, tmp_path / "x", seen="valid")
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "bad"
    shutil.copytree(artefacts["all"], bad)
    meta = json.loads((bad / "artifact.json").read_text())
    meta["seen"] = "everything"
    (bad / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"invalid field\(s\): seen \('everything'\); re-export the run$"):
        load_run(bad)


def test_the_openapi_docs_say_what_exclude_seen_leaves_out(client, artefacts):
    """The docs said exclude_seen leaves out the training history, whichever the artefact records."""
    def described(c):
        spec = c.get("/openapi.json").json()
        param = next(p for p in spec["paths"]["/recommend"]["get"]["parameters"] if p["name"] == "exclude_seen")
        return param["description"], spec["components"]["schemas"]["Metadata"]["properties"]["seen"]

    doc, seen = described(client)
    assert "train, valid and test" in doc and "--seen" in doc
    assert seen["enum"] == ["all", "train"] and "exclude_seen" in seen["description"]
    with _client(artefacts["legacy"]) as c:
        assert "training interactions" in described(c)[0]


def test_export_cli_takes_seen(trained, tmp_path):
    """`recgoat export --seen train|all` (default all); another value is a usage error (exit 2)."""
    from typer.testing import CliRunner

    from recgoat.cli import app

    model, ds = trained
    model.save(tmp_path / "model")
    ds.save(tmp_path / "data")
    runner = CliRunner()
    base = ["export", str(tmp_path / "model"), "--dataset", str(tmp_path / "data"), "--out"]
    for args, want in (([], "all"), (["--seen", "train"], "train"), (["--seen", "all"], "all")):
        out = tmp_path / f"art-{want}-{len(args)}"
        r = runner.invoke(app, [*base, str(out), *args])
        assert r.exit_code == 0, r.output
        assert load_run(out).seen_scope == want
    r = runner.invoke(app, [*base, str(tmp_path / "nope"), "--seen", "valid"])
    assert r.exit_code == 2 and not (tmp_path / "nope").exists()
    assert "--seen" in runner.invoke(app, ["export", "--help"]).output


# ------------------------------------------------------------------ 2. GET parameters that were silently ignored
@pytest.mark.parametrize("query, name, msg", [
    ({"user_id": "u1", "exclude-seen": "false", "k": 3}, "exclude-seen",
     f"Unknown query parameter (did you mean 'exclude_seen'?); {ACCEPTED}"),
    ({"user_id": "u1", "top_k": 3}, "top_k", f"Unknown query parameter; {ACCEPTED}"),
])
def test_get_recommend_refuses_an_unknown_parameter(client, query, name, msg):
    """Both were 200s: the typo served seen items with "exclude_seen": true, top_k=3 ten items."""
    r = client.get("/recommend", params=query)
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"type": "extra_forbidden", "loc": ["query", name], "msg": msg,
                                    "input": str(query[name])}]}
    assert client.head("/recommend", params=query).status_code == 422  # HEAD is answered as GET


@pytest.mark.parametrize("path, query, accepted", [
    ("/similar-items", {"item_id": "i1", "kk": 2}, "item_id, k"),
    ("/users", {"limit": 2, "prefix": "u"}, "offset, limit, q"),
    ("/users/u1/history", {"m": 3}, "n"),
    ("/items", {"query": "Title"}, "q, limit, offset"),
])
def test_every_get_endpoint_with_parameters_refuses_unknown_ones(client, path, query, accepted):
    r = client.get(path, params=query)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["type"] == "extra_forbidden" and error["msg"].endswith(f"; accepted: {accepted}")
    assert error["loc"] == ["query", next(k for k in query if k not in accepted.split(", "))]


def test_known_parameters_and_endpoints_without_any_still_answer(client):
    assert client.get("/recommend", params={"user_id": "u1", "k": 3, "exclude_seen": "false"}).status_code == 200
    assert len(client.get("/items", params={"q": "Title", "limit": 2, "offset": 1}).json()["items"]) == 2
    assert client.get("/health", params={"v": "2"}).status_code == 200  # declares none: a cache-buster is harmless
    assert client.get("/", params={"utm": "x"}).status_code == 200


@pytest.mark.parametrize("path, given, name, value", [
    ("/recommend", {"user_id": "u1"}, "k", "2.0"),
    ("/recommend", {"user_id": "u1"}, "k", " 5"),
    ("/recommend", {"user_id": "u1"}, "k", "1e1"),
    ("/recommend", {"user_id": "u1"}, "k", "+5"),
    ("/similar-items", {"item_id": "i1"}, "k", "3.0"),
    ("/users/u1/history", {}, "n", "2.0"),
    ("/users", {}, "limit", "5 "),
    ("/items", {}, "offset", "0.0"),
])
def test_integer_parameters_take_integer_text_only(client, path, given, name, value):
    """GET read k=2.0 and k=" 5" as integers, while POST's body refuses k: 5.0: the same 422 as k=abc now."""
    r = client.get(path, params={**given, name: value})
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": [{"type": "int_parsing", "loc": ["query", name], "msg": NOT_INT, "input": value}]}
    assert client.post("/recommend", json={"item_ids": ["i1"], "k": 5.0}).status_code == 422
    ok = client.get("/recommend", params={"user_id": "u1", "k": "05"})
    assert ok.status_code == 200 and ok.json()["k"] == 5
