"""The service's cold-start errors name the body's fields, and offer a profile text only where the run reads one.

Why: POST /recommend with nothing to fold in answered "give at least one liked item id in item_ids, or a profile
text", and an unknown user's 404 "POST /recommend with liked item_ids or a profile text": a client then sent
``{"profile": …}`` or ``{"profile_text": …}`` and got "Extra inputs are not permitted" (the field is ``text``),
and a run without a text encoder was offered a text it refuses with another 422.
"""
from __future__ import annotations

import pytest

from recgoat.serving import export_run, load_run
from serving_helpers import shop_rows, train_shop

pytest.importorskip("httpx")

USERS = [f"u{u}" for u in range(6)]
ITEMS = [f"i{i}" for i in range(8)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rows = shop_rows(USERS, ITEMS)
    return train_shop(tmp_path_factory.mktemp("cold") / "shop", rows, ITEMS)


def _client(run):
    from fastapi.testclient import TestClient

    from recgoat.serving import create_app

    return TestClient(create_app(run), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def id_only(trained, tmp_path_factory):
    with _client(load_run(export_run(*trained, tmp_path_factory.mktemp("cold-art") / "a"))) as c:
        yield c


@pytest.fixture(scope="module")
def with_text(trained, tmp_path_factory):
    from recgoat.features import encode_all
    from recgoat.features.store import FeatureConfig

    root = tmp_path_factory.mktemp("cold-text")
    model, ds = trained
    feats = encode_all(ds, root / "feat", FeatureConfig(text_template="{title}"), which=("text",), progress=False)
    with _client(load_run(export_run(model, ds, root / "a", feats))) as c:
        yield c


def test_nothing_to_fold_in_names_the_text_field_where_the_run_reads_one(with_text):
    r = with_text.post("/recommend", json={"item_ids": []})
    assert r.status_code == 422
    assert r.json()["detail"] == "nothing to fold in: give liked item ids in item_ids, or a profile text in text"
    # the field it names is the one the service takes
    r = with_text.post("/recommend", json={"text": "a short title", "k": 2})
    assert r.status_code == 200 and len(r.json()["items"]) == 2


def test_a_run_without_a_text_encoder_offers_no_profile_text(id_only):
    r = id_only.post("/recommend", json={})
    assert r.status_code == 422
    assert r.json()["detail"] == ("nothing to fold in: give liked item ids in item_ids; this run has no text "
                                  "encoder, so no profile text")
    r = id_only.get("/recommend", params={"user_id": "nobody"})
    assert r.status_code == 404
    assert r.json()["detail"] == ("unknown user_id 'nobody': not a user of the training data (for a new user, POST "
                                  "/recommend with liked item ids in item_ids; this run has no text encoder, so no "
                                  "profile text)")


def test_an_unknown_users_404_names_the_fields_of_a_cold_start(with_text):
    r = with_text.get("/recommend", params={"user_id": "nobody"})
    assert r.status_code == 404
    assert r.json()["detail"] == ("unknown user_id 'nobody': not a user of the training data (for a new user, POST "
                                  "/recommend with liked item ids in item_ids, or a profile text in text)")


@pytest.fixture(scope="module")
def numeric_ids(tmp_path_factory):
    """A catalogue whose ids are numbers, as MovieLens': a client sends them as JSON numbers."""
    items = [str(50 + i) for i in range(8)]
    rows = shop_rows([str(u) for u in range(6)], items)
    root = tmp_path_factory.mktemp("cold-numeric")
    trained = train_shop(root / "shop", rows, items)
    with _client(load_run(export_run(*trained, root / "a"))) as c:
        yield c


def test_numeric_item_ids_are_read_as_the_ids_they_spell(numeric_ids):
    as_text = numeric_ids.post("/recommend", json={"item_ids": ["50", "53"], "k": 3})
    as_numbers = numeric_ids.post("/recommend", json={"item_ids": [50, 53], "k": 3})
    assert as_text.status_code == 200 and as_numbers.status_code == 200
    assert as_numbers.json() == as_text.json()
    assert {"50", "53"}.isdisjoint(i["item_id"] for i in as_numbers.json()["items"])  # liked ones left out
    assert numeric_ids.post("/recommend", json={"item_ids": [999]}).json()["detail"] == "unknown item_id(s): '999'"


@pytest.mark.parametrize("bad", [True, 50.0, [50], None])
def test_item_ids_that_spell_no_id_are_refused(numeric_ids, bad):
    r = numeric_ids.post("/recommend", json={"item_ids": [bad]})
    assert r.status_code == 422
