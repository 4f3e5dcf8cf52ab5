"""Serving requests and indexes: bad input that reached a 500 or a traceback, a port already in use, edited
artefact metadata, and approximate indexes that returned short lists or reported a recall other than the
one served.

The service is exercised in-process (FastAPI's TestClient); a small BPR-MF model is trained on the first
60 users of the embedded ml-latest-small.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recgoat.errors import DataError
from recgoat.serving import ItemIndex, Run, brute_force_topk, export_run, load_run, recall_vs_exact, verify

pytest.importorskip("httpx")


def _dataset(seed: int = 2026):
    """The first 60 users of ml-latest-small, split with ``seed``."""
    import dataclasses

    from recgoat.datasets import load_raw, prepare
    from recgoat.datasets.registry import default_prepare_config

    name, inter, items, fields, info = load_raw("ml-latest-small")
    keep = inter["user"].drop_duplicates().iloc[:60]
    config = dataclasses.replace(default_prepare_config(name), seed=seed)
    return prepare(name, inter[inter["user"].isin(keep)], items, fields, config, info)


@pytest.fixture(scope="module")
def trained():
    import torch

    from recgoat.models import BPRMF
    from recgoat.training.trainer import TrainConfig

    ds = _dataset()
    torch.manual_seed(0)
    model = BPRMF.build(ds, {"embedding_dim": 16})
    model.fit(ds, TrainConfig(epochs=2, lr=5e-3, batch_size=1024, progress=False))
    return model, ds


@pytest.fixture(scope="module")
def artefact(trained, tmp_path_factory) -> Path:
    return export_run(*trained, tmp_path_factory.mktemp("qa") / "artefact")


@pytest.fixture(scope="module")
def client(artefact):
    from fastapi.testclient import TestClient

    from recgoat.serving import create_app

    # server exceptions as responses: a bug must show up as the 500 a user would get
    with TestClient(create_app(load_run(artefact)), raise_server_exceptions=False) as c:
        yield c


# ------------------------------------------------------------------------------------------- HTTP input
@pytest.mark.parametrize("body", [b'{"item_ids": ["1"], "k": "\\ud800"}', b'{"text": "\\udfff profile", "k": 3}'])
def test_lone_surrogate_in_json_is_422_not_500(client, body):
    """JSON's "\\ud800" parses to a lone surrogate; echoing it in the 422 body could not be encoded (a 500)."""
    r = client.post("/recommend", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", "k" if b'"k": "' in body else "text"]
    assert "\\ud800" in r.text or "\\udfff" in r.text  # shown escaped


# ------------------------------------------------------------------------------------------- artefacts
@pytest.mark.parametrize("field, value", [("n_users", "abc"), ("n_items", None), ("embedding_dim", 0),
                                          ("text_encoder", "foo"), ("summary", "x"), ("created", 5),
                                          ("model", ["bprmf"])])
def test_edited_artifact_json_is_refused_with_the_field_named(artefact, tmp_path, field, value):
    """artifact.json has no checksum: an edited field was a traceback from int() or a 500 from /metadata."""
    from typer.testing import CliRunner

    from recgoat.serving.cli import app

    bad = tmp_path / "edited"
    shutil.copytree(artefact, bad)
    meta = json.loads((bad / "artifact.json").read_text())
    meta[field] = value
    (bad / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=re.escape(f"invalid field(s): {field} ({value!r}); re-export the run")):
        verify(bad)
    out = CliRunner().invoke(app, ["recommend", str(bad), "--user", "1"])
    assert out.exit_code == 1 and out.output.count("\n") == 1 and f"invalid field(s): {field}" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)


# ------------------------------------------------------------------------------------------- serve
def test_serve_on_a_port_in_use_is_one_line_and_status_1(artefact, capsys):
    """uvicorn printed "serving … on http://…" first, then logged the bind error and exited with 3."""
    from recgoat.serving.__main__ import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(str(artefact), "127.0.0.1", port) == 1
    err = capsys.readouterr().err
    assert err == (f"error: cannot listen on 127.0.0.1:{port}: address already in use (another server? "
                   f"choose --port)\n")
    assert serve(str(artefact), "no-such-host.invalid", port) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot listen on no-such-host.invalid:") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------- retrieval
def _items(n: int = 3000, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = (rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=(n, 1))).astype(np.float32)
    return items, rng.normal(size=(40, d)).astype(np.float32)


@pytest.mark.parametrize("kind, opts", [("ivf", {"nlist": 50, "nprobe": 1}), ("hnsw", {"ef_search": 16}),
                                        ("hnsw-l2", {"ef_search": 16})])
def test_approximate_lists_are_full_when_enough_items_are_left(kind, opts):
    """IVF with few probes (or HNSW with a narrow beam) found fewer candidates than the over-fetch asked
    for, so heavy users got fewer than k items although plenty were left."""
    items, q = _items()
    rng = np.random.default_rng(1)
    exclude = [rng.choice(len(items), 1500, replace=False) for _ in range(len(q))]
    index = ItemIndex(items, kind, **opts)
    for k in (10, 500, 1500, 2000):
        ids, scores = index.search(q, k, exclude)
        want = min(k, len(items) - 1500)
        assert ((ids >= 0).sum(axis=1) == want).all(), (k, (ids >= 0).sum(axis=1))
        assert (ids[:, want:] == -1).all() and np.isneginf(scores[:, want:]).all()
        for r in range(len(q)):
            assert not np.isin(ids[r, :want], exclude[r]).any()
            assert len(set(ids[r, :want].tolist())) == want
        one, _ = index.search(q[:1], k, exclude[:1])  # the single-query (serving) path
        assert (one[0] >= 0).sum() == want


def test_recall_vs_exact_measures_what_is_served():
    items, q = _items()
    exact = ItemIndex(items)
    # an exact index is exact even when k is past the catalogue (was 0.5: padding counted as misses)
    assert recall_vs_exact(ItemIndex(items[:5]), ItemIndex(items[:5]), q, 10) == 1.0
    rng = np.random.default_rng(2)
    exclude = [rng.choice(len(items), 1000, replace=False) for _ in range(len(q))]
    weak = ItemIndex(items, "ivf", nlist=50, nprobe=1)
    a, _ = weak.search(q, 10, exclude)
    e, _ = brute_force_topk(q, items, 10, exclude)
    expected = np.mean([len(set(a[r]) & set(e[r])) / 10 for r in range(len(q))])
    assert recall_vs_exact(weak, exact, q, 10, exclude) == pytest.approx(expected)
    assert expected < 0.95


def _synthetic_run(n_users: int = 200, n_items: int = 3000) -> Run:
    items, _ = _items(n_items)
    rng = np.random.default_rng(3)
    users = rng.normal(size=(n_users, items.shape[1])).astype(np.float32)
    u = np.repeat(np.arange(n_users), 50)
    i = np.concatenate([rng.choice(n_items, 50, replace=False) for _ in range(n_users)])
    history = pd.DataFrame({"user": u, "item": i, "timestamp": 0})
    seen = sp.csr_matrix((np.ones(len(i), np.float32), (u, i)), shape=(n_users, n_items))
    seen.sort_indices()
    table = pd.DataFrame({"item_id": [str(x) for x in range(n_items)], "title": [f"t{x}" for x in range(n_items)]})
    return Run(path=Path("."), meta={"format_version": 1, "model": "synthetic", "dataset": "synthetic"},
               user_emb=users, item_emb=items, user_ids=[str(x) for x in range(n_users)],
               item_ids=[str(x) for x in range(n_items)], items=table, history=history, seen=seen)


def test_metadata_reports_the_served_recall_of_an_approximate_index():
    """Nothing reported an approximate index's recall; recall_vs_exact measured lists without the seen items
    excluded, i.e. not the lists the service returns."""
    from fastapi.testclient import TestClient

    from recgoat.serving import create_app
    from recgoat.serving.app import RECALL_KS

    run = _synthetic_run()
    with TestClient(create_app(run, "ivf")) as c:
        got = c.get("/metadata").json()["index_recall"]
    seen = [run.seen_items(u) for u in range(run.n_users)]
    for k in RECALL_KS:
        expected = recall_vs_exact(ItemIndex(run.item_emb, "ivf"), ItemIndex(run.item_emb), run.user_emb, k, seen)
        assert got[f"recall@{k}"] == pytest.approx(expected, abs=1e-4)
        assert 0.0 < expected < 1.0
    with TestClient(create_app(run, "flat")) as c:
        assert c.get("/metadata").json()["index_recall"] == {f"recall@{k}": 1.0 for k in RECALL_KS}


# ------------------------------------------------------------------------------------------- export
def test_export_into_the_current_folder_is_refused(artefact, tmp_path, monkeypatch):
    """``--out .`` in an empty folder was a ValueError traceback from the folder swap (Path('.') has no name);
    with an artefact there and --overwrite the swap would have removed the shell's working folder."""
    from typer.testing import CliRunner

    from recgoat.serving.artifacts import check_destination
    from recgoat.serving.cli import app

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    msg = "is the current folder (or holds it); the artefact replaces its folder as a whole"
    for out in (".", "", str(empty), "../empty/"):
        with pytest.raises(DataError, match=re.escape(msg)):
            check_destination(out)
    args = ["export", str(artefact / "model"), "--dataset", "ml-latest-small", "--out", "."]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 1 and out.output == f"error: .: {msg}: give a new folder, e.g. --out ./artefact\n"
    copy = tmp_path / "copy"
    shutil.copytree(artefact, copy)
    monkeypatch.chdir(copy / "model")
    with pytest.raises(DataError, match=re.escape(msg)):
        check_destination("..", overwrite=True)
    assert verify(copy)["model"] == "bprmf"


@pytest.mark.parametrize("query, name, values", [("user_id=1&k=3&k=4", "k", ["3", "4"]),
                                                 ("user_id=1&user_id=2&k=1", "user_id", ["1", "2"]),
                                                 ("user_id=1&exclude_seen=true&exclude_seen=false", "exclude_seen",
                                                  ["true", "false"])])
def test_a_repeated_query_parameter_is_422_naming_it(client, query, name, values):
    """``?k=3&k=4`` was answered for k=4 (FastAPI keeps the last value): an ambiguous request, refused."""
    r = client.get("/recommend?" + query)
    assert r.status_code == 422
    assert r.json() == {"detail": [{"type": "repeated", "loc": ["query", name], "msg": "Given more than once",
                                    "input": values}]}
    assert client.get("/users?" + "&".join(["q=1"] * 5000)).json()["detail"][0]["input"] == ["1"] * 10
    assert client.get("/recommend?user_id=1&k=3").status_code == 200  # distinct parameters are fine


def test_an_unreadable_artefact_file_is_named_not_a_traceback(artefact, monkeypatch):
    """A file without read permission was a PermissionError traceback from the checksum pass (as root the
    permission bits do not bite, so the refusal is simulated where the file is opened)."""
    import errno

    from recgoat.serving import artifacts

    real = artifacts.sha256_file

    def unreadable(path):
        if Path(path).name == "items.parquet":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(artifacts, "sha256_file", unreadable)
    with pytest.raises(DataError, match=r"items\.parquet: cannot be read \(Permission denied\)$"):
        load_run(artefact)


def test_export_refuses_a_dataset_split_otherwise(trained, tmp_path):
    """A saved model folder (no result.json to compare fingerprints) exported with the same data split with
    another seed was accepted: same sizes, but the history, and so the seen items left out, were not the
    model's training interactions."""
    model, ds = trained
    other = _dataset(seed=7)
    assert (other.n_users, other.n_items) == (ds.n_users, ds.n_items)
    with pytest.raises(DataError, match=r"the model was trained on other interactions than the training split "
                                        r"of dataset 'ml-latest-small' \(\d+ user-item pairs differ\)"):
        export_run(model, other, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    model.save(tmp_path / "saved")  # and from a saved model folder, as `recgoat export` loads it
    from recgoat.models.base import Recommender

    with pytest.raises(DataError, match="other interactions"):
        export_run(Recommender.load(tmp_path / "saved"), other, tmp_path / "a")
    assert verify(export_run(Recommender.load(tmp_path / "saved"), ds, tmp_path / "b"))["model"] == "bprmf"


def test_ids_holding_a_slash_reach_the_path_endpoints(tmp_path):
    """Catalogue ids such as "team/alice" or "sku/1" arrive decoded from %2F; the history and image routes
    did not match them (404 for a known id)."""
    from urllib.parse import quote

    from fastapi.testclient import TestClient
    from PIL import Image

    from recgoat.datasets import PrepareConfig, load_raw, prepare
    from recgoat.models import BPRMF
    from recgoat.serving import create_app
    from recgoat.training.trainer import TrainConfig

    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    rows = [(f"team/u{u}", f"sku/{i}") for u in range(8) for i in range(6) if (u + i) % 3]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(folder / "interactions.csv", index=False)
    pd.DataFrame({"item_id": [f"sku/{i}" for i in range(6)], "title": [f"T{i}" for i in range(6)],
                  "image": [str(folder / "images" / f"{i}.png") for i in range(6)]}
                 ).to_csv(folder / "items.csv", index=False)
    for i in range(6):
        Image.new("RGB", (4, 4), (40 * i, 0, 0)).save(folder / "images" / f"{i}.png")
    name, inter, items, fields, info = load_raw(str(folder))
    # images/ is matched by item id stem, which "sku/2" cannot be a file name of: name the files directly
    items = items.assign(image=[str(folder / "images" / f"{i}.png") for i in range(6)])
    ds = prepare(name, inter, items, fields, PrepareConfig(k_core=0), info)
    model = BPRMF.build(ds, {"embedding_dim": 4})
    model.fit(ds, TrainConfig(epochs=1, progress=False))
    with TestClient(create_app(load_run(export_run(model, ds, tmp_path / "art"))),
                    raise_server_exceptions=False) as c:
        r = c.get(f"/users/{quote('team/u1', safe='')}/history")
        assert r.status_code == 200 and r.json()["user_id"] == "team/u1", r.text
        assert all(it["item_id"].startswith("sku/") for it in r.json()["items"])
        r = c.get(f"/items/{quote('sku/2', safe='')}/image")
        assert r.status_code == 200 and r.content == (folder / "images" / "2.png").read_bytes()
        assert c.get(f"/users/{quote('team/nobody', safe='')}/history").status_code == 404


def test_mostpop_service_lists_equal_the_python_api(tmp_path):
    """MostPop scores are counts, tied everywhere: torch.topk and faiss each chose among equal scores their
    own way (the order differed for every user, the k-th item for half of them). Both now put the lower
    item id first, so the service answers exactly what model.recommend does."""
    from fastapi.testclient import TestClient

    from recgoat.models import MostPop
    from recgoat.serving import create_app

    ds = _dataset()
    model = MostPop.build(ds)
    model.fit(ds)
    run = load_run(export_run(model, ds, tmp_path / "art", seen="train"))  # the Python API masks training only
    with TestClient(create_app(run), raise_server_exceptions=False) as c:  # the exact (flat) index
        for k in (10, 50):
            for u in range(ds.n_users):
                ids, _ = model.recommend(u, k)
                r = c.get("/recommend", params={"user_id": str(ds.user_ids[u]), "k": k})
                assert r.status_code == 200, r.text
                got = [it["item_id"] for it in r.json()["items"]]
                assert got == [str(ds.item_ids[i]) for i in ids], (u, k)


def test_exact_index_ranks_ties_by_id_beyond_the_fetched_candidates():
    """Flat search fetches k + |seen| candidates; a tie at the k-th place that runs past them is ranked
    exactly, so the seen items and the tie rule give the same list as brute force."""
    rng = np.random.default_rng(1)
    items = np.repeat(rng.normal(size=(6, 4)).astype(np.float32), 50, axis=0)  # 6 distinct rows, 50 copies
    queries = rng.normal(size=(20, 4)).astype(np.float32)
    exclude = [rng.choice(300, size=int(rng.integers(0, 40)), replace=False) for _ in range(20)]
    got, _ = ItemIndex(items, "flat").search(queries, 30, exclude)
    want, _ = brute_force_topk(queries, items, 30, exclude)
    assert got.tolist() == want.tolist()


def test_hnsw_l2_reduction_ranks_by_inner_product():
    """hnsw-l2 searches ``[x, sqrt(M² − ‖x‖²)]`` with ``[q, 0]``: each augmented item has norm M, its L2
    order is the inner-product order, and the scores it returns are the inner products themselves."""
    from recgoat.serving.retrieval import _augment_items

    items, q = _items()
    aug = _augment_items(items)
    norms = np.linalg.norm(aug.astype(np.float64), axis=1)
    assert np.allclose(norms, norms.max(), rtol=1e-5)
    qa = np.hstack([q, np.zeros((len(q), 1), np.float32)]).astype(np.float64)
    d2 = ((qa[:, None, :] - aug[None].astype(np.float64)) ** 2).sum(-1)
    ip = q.astype(np.float64) @ items.T.astype(np.float64)
    assert np.allclose(d2, (qa ** 2).sum(1)[:, None] + norms.max() ** 2 - 2 * ip, atol=1e-3)
    index = ItemIndex(items, "hnsw-l2", ef_search=400)
    ids, scores = index.search(q, 20)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ items.T, ids, axis=1), rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert recall_vs_exact(index, ItemIndex(items), q, 20) >= 0.95
