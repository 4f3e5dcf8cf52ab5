"""Serving: the HTTP contract a client integrates against — error bodies that
/openapi.json did not declare, unknown ids echoed back whole, and an item listing that could not be paged.

A tiny catalogue with URL-awkward ids is written as CSV, a BPR-MF model is trained for one epoch, and the
service is exercised in process with FastAPI's TestClient.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from concurrent.futures import ThreadPoolExecutor

import pytest

from recgoat.serving import export_run, load_run

from serving_helpers import shop_rows, train_shop

pytest.importorskip("httpx")

USERS = ["042", "42", "a b", "a+b", "x/y", "u?#&=", "é✓", "u7", "u8", "u9"]
ITEMS = [f"i{i}" for i in range(20)] + ["007", "it/em", "i+j", "i j", "ü#?"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rows = shop_rows(USERS, ITEMS, step=10)
    return train_shop(tmp_path_factory.mktemp("qa3") / "shop", rows, ITEMS)


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    # seen="train": the service then masks what Recommender.recommend does, which the guards compare with
    return load_run(export_run(*trained, tmp_path_factory.mktemp("qa3-art") / "artefact", seen="train"))


@pytest.fixture(scope="module")
def client(run):
    from fastapi.testclient import TestClient

    from recgoat.serving import create_app

    with TestClient(create_app(run), raise_server_exceptions=False) as c:
        yield c


def _conforms(value, schema: dict, spec: dict) -> bool:
    """Whether ``value`` fits ``schema`` (the subset of JSON Schema FastAPI writes), ``$ref``s into ``spec``."""
    if "$ref" in schema:
        return _conforms(value, spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], spec)
    if "anyOf" in schema:
        return any(_conforms(value, s, spec) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict) or any(r not in value for r in schema.get("required", [])):
            return False
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        return all(_conforms(v, props[k], spec) if k in props else
                   (extra is not False and (extra is True or _conforms(v, extra, spec))) for k, v in value.items())
    if kind == "array":
        return isinstance(value, list) and all(_conforms(v, schema.get("items", {}), spec) for v in value)
    checks = {"string": lambda v: isinstance(v, str), "integer": lambda v: isinstance(v, int),
              "number": lambda v: isinstance(v, (int, float)), "boolean": lambda v: isinstance(v, bool),
              "null": lambda v: v is None}
    return checks[kind](value) if kind in checks else True


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/recommend?user_id=nobody", None, 404),
    ("GET", "/recommend?user_id=u7&k=0", None, 422),
    ("GET", "/similar-items?item_id=nothing", None, 404),
    ("GET", "/users/nobody/history", None, 404),
    ("GET", "/items/nothing/image", None, 404),
    ("GET", "/items/i1/image", None, 404),  # no image file
    ("POST", "/recommend", {"item_ids": ["nothing"]}, 404),
    ("POST", "/recommend", {"item_ids": []}, 422),  # nothing to fold in: a string detail
    ("POST", "/recommend", {"text": "space operas"}, 422),  # no text encoder: a string detail
    ("POST", "/recommend", {"item_ids": ["i1"], "k": 0}, 422),  # a field error: a list detail
])
def test_every_error_body_is_declared_in_openapi(client, method, path, body, status):
    """/openapi.json declared no 404 anywhere and, for POST /recommend, only FastAPI's list-of-field-errors
    422, while the service answers unknown ids with a 404 ``{"detail": "<message>"}`` and a POST with
    nothing to fold in (or text for a run without an encoder) with a string-detail 422: a client generated
    from the schema failed to parse these bodies."""
    spec = client.get("/openapi.json").json()
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    route = path.split("?")[0]
    key = {"/items/nothing/image": "/items/{item_id}/image", "/items/i1/image": "/items/{item_id}/image",
           "/users/nobody/history": "/users/{user_id}/history"}.get(route, route)
    declared = spec["paths"][key][method.lower()]["responses"]
    assert str(status) in declared, f"{method} {key} answers {status} but declares only {sorted(declared)}"
    schema = declared[str(status)]["content"]["application/json"]["schema"]
    assert _conforms(r.json(), schema, spec), (r.json(), schema)


@pytest.mark.parametrize("content_type, said", [
    ("application/x-www-form-urlencoded", "Content-Type 'application/x-www-form-urlencoded'"),  # curl -d's
    ("text/plain", "Content-Type 'text/plain'"),
    (None, "no Content-Type"),
])
def test_a_json_body_sent_as_another_content_type_is_told_so(client, content_type, said):
    """FastAPI parses a body as JSON only under a JSON Content-Type: `curl -X POST … -d '{"item_ids": […]}'`
    (form-encoded) was a 422 "Input should be a valid dictionary or object to extract fields from". It now
    says what to send, as one message of the declared string-detail 422."""
    body = b'{"item_ids": ["i1"], "k": 3}'
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/recommend", content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": f"the body must be JSON sent with Content-Type: application/json; this request "
                                  f"has {said} (curl: add -H 'Content-Type: application/json')"}
    spec = client.get("/openapi.json").json()
    assert _conforms(r.json(), spec["paths"]["/recommend"]["post"]["responses"]["422"]["content"]
                     ["application/json"]["schema"], spec)
    ok = client.post("/recommend", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3
    # a JSON body of the wrong shape keeps its field error
    wrong = client.post("/recommend", content=b"[1]", headers={"content-type": "application/json"})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["type"] == "model_attributes_type"


def test_unknown_posted_ids_are_not_echoed_whole(client):
    """A POST with unknown item ids echoed each of up to 20 of them in full in the 404 (a 100,000-character
    id came back whole, twenty of them 2 MB), although every other error cuts an input to 200 characters."""
    long_id = "x" * 100_000
    r = client.post("/recommend", json={"item_ids": [long_id] * 3 + ["i1"]})
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert detail.startswith("unknown item_id(s): ") and len(detail) < 2_000, len(detail)
    assert "(100000 characters)" in detail
    r = client.get("/items/" + "y" * 5_000 + "/image")
    assert r.status_code == 404 and len(r.json()["detail"]) < 1_000
    # short unknown ids are still named exactly
    assert client.post("/recommend", json={"item_ids": ["nope"]}).json() == {"detail": "unknown item_id(s): 'nope'"}


def test_items_can_be_paged_like_users(client, run):
    """GET /items took no offset (silently ignored): its ``total`` counted items that no request could list
    once a catalogue outgrew the largest ``limit``. Pages of 7 now cover the catalogue exactly once."""
    everything = client.get("/items", params={"limit": 1000}).json()
    assert everything["total"] == run.n_items == len(everything["items"])
    pages = []
    for offset in range(0, run.n_items + 7, 7):
        r = client.get("/items", params={"limit": 7, "offset": offset})
        assert r.status_code == 200 and r.json()["total"] == run.n_items
        pages += r.json()["items"]
    assert [it["item_id"] for it in pages] == [it["item_id"] for it in everything["items"]]
    hits = client.get("/items", params={"q": "title 1", "limit": 3, "offset": 2}).json()
    all_hits = client.get("/items", params={"q": "title 1", "limit": 1000}).json()
    assert hits["total"] == all_hits["total"] and hits["items"] == all_hits["items"][2:5]
    assert client.get("/items", params={"offset": -1}).status_code == 422


def test_get_post_python_and_concurrent_requests_agree(client, run, trained):
    """Regression guard for the contract the fixes above must keep: GET /recommend equals the Python
    ``Recommender.recommend`` (same items, order and scores) for ids with URL-special characters, also
    under concurrent requests."""
    model, _ = trained

    def get(args):
        uid, k, exclude = args
        return args, client.get("/recommend", params={"user_id": uid, "k": k, "exclude_seen": exclude}).json()

    jobs = [(uid, k, ex) for uid in USERS for k in (1, 4, 1000) for ex in (True, False)] * 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(get, jobs))
    for (uid, k, ex), body in answers:
        ids, scores = model.recommend(run.user_index[uid], k, remove_seen=ex)
        assert body["user_id"] == uid and body["k"] == k and body["exclude_seen"] is ex
        assert [it["item_id"] for it in body["items"]] == [run.item_ids[i] for i in ids]
        assert [it["score"] for it in body["items"]] == pytest.approx(scores.tolist(), abs=1e-5)


def test_health_answers_head(client):
    """Load balancers and `curl -I` probe health with HEAD: it got 405 Method Not Allowed."""
    head, get = client.head("/health"), client.get("/health")
    assert head.status_code == 200 == get.status_code and head.content == b""
    assert get.json()["status"] == "ok"
