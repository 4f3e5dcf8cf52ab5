"""Serving HTTP methods and bodies: the HTTP service under concurrent profile texts, the methods HTTP expects of it
(HEAD, OPTIONS, a 405's Allow), a body that is not UTF-8, and what a cold-start user is told. Each test
named after a bug failed before its fix; the last one guards answers that the fixes must not change.

A tiny catalogue with numeric-looking ids ("007" and "7" are different users and items) is written as CSV,
BPR-MF is trained on it for one epoch and exported with text features from the packaged text encoder, and
the service is exercised in process with FastAPI's TestClient.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

from recgoat.serving import export_run, load_run

from serving_helpers import shop_rows, train_shop

pytest.importorskip("httpx")

USERS = ["007", "7", "u1", "u2", "u3", "u4"]
ITEMS = [f"i{i}" for i in range(20)] + ["007", "7", "it/em"]
TOPICS = ["space", "love", "war", "cats", "dogs", "robots", "pirates", "ghosts", "cars", "food"]
TITLES = [f"A film about {t}" for t in TOPICS * 2] + ["a spy", "seven", "a path"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rows = shop_rows(USERS, ITEMS, step=10)
    return train_shop(tmp_path_factory.mktemp("qa5") / "shop", rows, ITEMS, TITLES)


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    from recgoat.features import encode_all
    from recgoat.features.store import FeatureConfig

    root = tmp_path_factory.mktemp("qa5-art")
    feats = encode_all(trained[1], root / "feat", FeatureConfig(text_template="{title}"), which=("text",),
                       progress=False)
    # seen="train": the service then masks what Recommender.recommend does, which the guards compare with
    return load_run(export_run(*trained, root / "artefact", feats, seen="train"))


@pytest.fixture(scope="module")
def client(run):
    from fastapi.testclient import TestClient

    from recgoat.serving import create_app

    # server exceptions as responses: a bug must show up as the 500 a user would get
    with TestClient(create_app(run), raise_server_exceptions=False) as c:
        yield c


def _ids(body: dict) -> list[str]:
    return [it["item_id"] for it in body["items"]]


# ------------------------------------------------------------------ concurrent profile texts
def test_concurrent_profile_texts_are_encoded_one_at_a_time(client, monkeypatch):
    """TextEncoder.encode counts over-long texts with the shared fast tokenizer set to no truncation, then
    encodes with truncation on: two profile texts at once in FastAPI's threadpool let one request tokenize
    untruncated. A text over 512 tokens was a 500 ("The size of tensor a (1602) must match the size of tensor
    b (512)"), 2 or 3 in 200 concurrent requests; one of 257..512 tokens got another embedding, so other items.
    The encoder is now entered by one request at a time: answers equal the sequential ones."""
    svc = client.app.state.service
    texts = [("robots and space %d " % i) * (300 if i % 2 else 3) for i in range(24)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the encoder warns once about texts past its token limit
        sequential = [client.post("/recommend", json={"text": t, "k": 5}).json() for t in texts]
        model = svc.encoder().model
        original, active, most = model.encode, [0], [0]
        lock = threading.Lock()

        def encode(*args, **kwargs):  # records how many requests are inside the model at once
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            try:
                time.sleep(0.02)  # widens the window two requests would share
                return original(*args, **kwargs)
            finally:
                with lock:
                    active[0] -= 1

        monkeypatch.setattr(model, "encode", encode)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: client.post("/recommend", json={"text": t, "k": 5}), texts))
    assert [r.status_code for r in answers] == [200] * len(texts), [r.text for r in answers if r.status_code != 200]
    assert most[0] == 1, f"{most[0]} requests were inside the text encoder at once"
    assert [r.json() for r in answers] == sequential


# ------------------------------------------------------------------ HEAD, OPTIONS, 405
@pytest.mark.parametrize("path", ["/recommend?user_id=007", "/recommend?user_id=nobody", "/metadata", "/health",
                                  "/users?q=u", "/items?limit=3", "/users/7/history", "/similar-items?item_id=7",
                                  "/", "/docs"])
def test_head_is_answered_wherever_get_is(client, path):
    """HTTP requires HEAD wherever GET is served (monitors and `curl -I` probe with it); FastAPI's routes
    answered 405 Method Not Allowed on every path but /health. HEAD now has GET's status and headers and no body."""
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code, (head.status_code, head.text)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content))


def test_options_and_405_name_every_method_of_the_path(client):
    """OPTIONS was 405 everywhere, and a 405 on /recommend said ``Allow: GET`` (Starlette names the first route
    matching the path), as if the POST that folds in a new user were refused."""
    r = client.options("/recommend")
    assert r.status_code == 204 and r.content == b""
    assert r.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    put = client.put("/recommend", json={})
    assert put.status_code == 405 and put.json() == {"detail": "Method Not Allowed"}
    assert put.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    post = client.post("/health")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.options("/users/7/history").headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.options("/no-such-path").status_code == 404


# ------------------------------------------------------------------ a body that is not UTF-8
@pytest.mark.parametrize("body, pos", [(b'{"text": "caf\xe9 films"}', 13), (b'{"item_ids": ["\xff"]}', 15)])
def test_a_body_that_is_not_utf8_is_the_declared_422(client, body, pos):
    """A Latin-1 body was FastAPI's 400 "There was an error parsing the body": a status /openapi.json does not
    declare, naming neither the body nor the problem. It is now the 422 of any malformed JSON body."""
    r = client.post("/recommend", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body", pos]
    assert "not valid UTF-8" in error["ctx"]["error"] and f"at byte {pos}" in error["ctx"]["error"]
    declared = client.get("/openapi.json").json()["paths"]["/recommend"]["post"]["responses"]
    assert "422" in declared and "400" not in declared


# ------------------------------------------------------------------ cold start
def test_a_cold_start_user_is_told_where_to_go(client, run):
    """/docs said nothing of users not in training and GET /recommend's 404 only "unknown user_id '07'": a client
    had to find POST /recommend on its own. Both now name it; ids stay exact strings ("07" is no user)."""
    spec = client.get("/openapi.json").json()["paths"]["/recommend"]
    assert "POST /recommend" in spec["get"]["description"] and "Cold start" in spec["get"]["description"]
    assert "not a user of the training data" in spec["get"]["responses"]["404"]["description"]
    assert "cold start" in spec["post"]["description"]
    r = client.get("/recommend", params={"user_id": "07"})
    assert r.status_code == 404
    assert r.json()["detail"].startswith("unknown user_id '07': not a user of the training data")
    assert "POST /recommend" in r.json()["detail"]
    assert client.get("/users/07/history").json() == {"detail": "unknown user_id '07'"}


def test_an_unknown_id_repeated_in_a_basket_is_named_once(client):
    """A basket repeating an unknown id listed it as often in the 404 (up to 20 times)."""
    r = client.post("/recommend", json={"item_ids": ["i1", "nope", "nope", "7", "nope", "x", "x"]})
    assert r.status_code == 404 and r.json() == {"detail": "unknown item_id(s): 'nope', 'x'"}


# ------------------------------------------------------------------ answers that must not change
def test_numeric_looking_ids_duplicates_and_k_past_the_catalogue(client, run, trained):
    """Guard: "007" and "7" are different users and items; a basket's repeated ids count once; k past what is
    left gives every item left, ranked as the model ranks them, with and without exclusion."""
    model = trained[0]
    for uid in ("007", "7"):
        for ex in (True, False):
            body = client.get("/recommend", params={"user_id": uid, "k": 1000, "exclude_seen": ex}).json()
            ids, scores = model.recommend(run.user_index[uid], 1000, remove_seen=ex)
            assert body["user_id"] == uid and body["k"] == 1000
            assert _ids(body) == [run.item_ids[i] for i in ids]
            assert [it["score"] for it in body["items"]] == pytest.approx(scores.tolist(), abs=1e-5)
            assert len(body["items"]) == run.n_items - (len(run.seen_items(run.user_index[uid])) if ex else 0)
    once = client.post("/recommend", json={"item_ids": ["7", "007"], "k": 1000}).json()
    twice = client.post("/recommend", json={"item_ids": ["007", "7", "7", "007"], "k": 1000}).json()
    assert once == twice and len(once["items"]) == run.n_items - 2
    assert not {"7", "007"} & set(_ids(once))
    kept = client.post("/recommend", json={"item_ids": ["7"], "k": 1000, "exclude_seen": False}).json()
    assert len(kept["items"]) == run.n_items
    z = run.item_emb[run.item_index["7"]][None]
    ids, _ = client.app.state.service.index.search(z, 1000)
    assert _ids(kept) == [run.item_ids[i] for i in ids[0] if i >= 0]
    meta = client.get("/metadata").json()
    assert meta["has_text_encoder"] is True and meta["text_encoder"].startswith("sentence-transformers/")
    assert (meta["n_users"], meta["n_items"], meta["embedding_dim"]) == (len(USERS), len(ITEMS), 8)
