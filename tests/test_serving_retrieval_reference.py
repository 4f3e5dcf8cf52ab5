"""Retrieval: :class:`ItemIndex` against a brute-force numpy reference, and the service's two uses of it.

Ranking rule checked throughout: ``recommend`` ranks by the inner product ``z_u · z_i`` (the model's own
score), ``similar-items`` by the cosine of item embeddings; both best first, equal scores by ascending item
id, excluded ids (seen items, the query item) left out, and rows short of ``k`` padded with id ``-1`` and
score ``-inf``. The exact (flat) index follows the rule to the last place; an approximate one keeps it
among what it finds. Bad input is one :class:`ConfigError`, never a faiss or numpy error.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recgoat.errors import ConfigError
from recgoat.serving import ItemIndex, Run, brute_force_topk

from serving_helpers import train_shop

KINDS = ("flat", "hnsw", "hnsw-l2", "ivf")


def _reference(q: np.ndarray, items: np.ndarray, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by float32 numpy scores, one full stable sort per row: score descending, id ascending."""
    s = q.astype(np.float32) @ items.astype(np.float32).T
    ids = np.full((len(s), k), -1, np.int64)
    out = np.full((len(s), k), -np.inf, np.float32)
    for r, row in enumerate(s):
        left = np.setdiff1d(np.arange(len(row)), exclude[r] if exclude is not None else [])
        order = left[np.lexsort((left, -row[left]))][:k]
        ids[r, :len(order)], out[r, :len(order)] = order, row[order]
    return ids, out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_items", [1, 7, 64, 300])
@pytest.mark.parametrize("k", [1, 5, 50, 400])
def test_flat_search_equals_the_numpy_reference(seed, n_items, k):
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 9))
    items = rng.normal(size=(n_items, d)).astype(np.float32)
    q = rng.normal(size=(12, d)).astype(np.float32)
    # random seen sets, one row that has seen every item, one that has seen none
    exclude = [rng.choice(n_items, int(rng.integers(0, n_items + 1)), replace=False) for _ in range(len(q))]
    exclude[0], exclude[1] = np.arange(n_items), np.zeros(0, np.int64)
    index = ItemIndex(items)
    for ex in (None, exclude):
        ids, scores = index.search(q, k, ex)
        want_ids, want_scores = _reference(q, items, k, ex)
        assert ids.shape == scores.shape == (len(q), k) and scores.dtype == np.float32
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        for r in range(len(q)):  # the one-query path the service takes
            one, _ = index.search(q[r], k, None if ex is None else [ex[r]])
            np.testing.assert_array_equal(one[0], ids[r])
    assert (ids[0] == -1).all() and np.isneginf(scores[0]).all()  # seen everything: an empty list


def test_ties_from_duplicate_and_zero_embeddings_go_by_ascending_id():
    """Duplicated items tie exactly, zero items score 0 for every query, and a zero query ties everything:
    the exact index lists each tie by ascending id, past the over-fetched candidates too."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(4, 5)).astype(np.float32)
    items = np.concatenate([np.repeat(base, 30, axis=0), np.zeros((20, 5), np.float32)])[rng.permutation(140)]
    q = np.concatenate([rng.normal(size=(6, 5)), np.zeros((1, 5))]).astype(np.float32)
    exclude = [rng.choice(140, int(rng.integers(0, 60)), replace=False) for _ in range(len(q))]
    index = ItemIndex(items)
    for k in (1, 29, 31, 70, 140):
        ids, scores = index.search(q, k, exclude)
        np.testing.assert_array_equal(ids, _reference(q, items, k, exclude)[0])
        left = np.setdiff1d(np.arange(140), exclude[-1])
        assert ids[-1][ids[-1] >= 0].tolist() == left[:k].tolist() and (scores[-1][ids[-1] >= 0] == 0).all()
    for kind in KINDS[1:]:  # an approximate index chooses among ties its own way, but orders what it returns
        ids, scores = ItemIndex(items, kind).search(q, 40, exclude)
        for r in range(len(q)):
            got = ids[r][ids[r] >= 0]
            assert len(got) == 40 and not np.isin(got, exclude[r]).any()
            assert got.tolist() == got[np.lexsort((got, -scores[r][:len(got)]))].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_k_past_the_catalogue_or_the_unseen_items_pads_the_rest(kind):
    rng = np.random.default_rng(4)
    items = rng.normal(size=(60, 6)).astype(np.float32)
    q = rng.normal(size=(3, 6)).astype(np.float32)
    exclude = [np.arange(60), rng.choice(60, 55, replace=False), np.zeros(0, np.int64)]
    ids, scores = ItemIndex(items, kind).search(q, 100, exclude)
    want, _ = _reference(q, items, 100, exclude)
    assert ids.shape == (3, 100)
    assert [(row >= 0).sum() for row in ids] == [0, 5, 60]  # nothing, the 5 unseen, the whole catalogue
    assert (np.isneginf(scores) == (ids < 0)).all()
    for r in range(3):  # whatever the index kind: a list that holds every candidate left is the exact one
        np.testing.assert_array_equal(ids[r], want[r])


def test_float64_non_contiguous_and_list_inputs_rank_as_float32():
    rng = np.random.default_rng(5)
    items = rng.normal(size=(80, 8))
    wide = rng.normal(size=(10, 16))
    q = wide[:, ::2]  # a strided float64 view
    exclude = [rng.choice(80, 10, replace=False).astype(np.int32) for _ in range(10)]
    want = ItemIndex(items.astype(np.float32)).search(np.ascontiguousarray(q, np.float32), 7, exclude)
    for it, qq, ex in [(np.asfortranarray(items), q, exclude),
                       (items.tolist(), q.tolist(), [e.tolist() for e in exclude]),
                       (np.repeat(items, 2, axis=1)[:, ::2], np.asfortranarray(q), [set(e.tolist()) for e in exclude])]:
        got = ItemIndex(it).search(qq, 7, ex)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # a repeated excluded id is one excluded id, in the index and in the reference alike
    doubled = [np.concatenate([e, e]) for e in exclude]
    np.testing.assert_array_equal(ItemIndex(items).search(q, 7, doubled)[0], want[0])
    np.testing.assert_array_equal(brute_force_topk(q, items, 7, doubled)[0], want[0])


_ITEMS = np.random.default_rng(6).normal(size=(10, 4)).astype(np.float32)


@pytest.mark.parametrize("queries, k, exclude, match", [
    (np.ones((1, 3)), 3, None, "4-wide"),  # was a bare AssertionError from faiss
    (np.ones((2, 10, 4)), 3, None, "4-wide"),  # was "too many values to unpack"
    (np.full((1, 4), np.nan), 3, None, "NaN"),  # was an empty list
    (np.full((1, 4), np.inf), 3, None, "NaN or inf"),
    (np.array([["a"] * 4]), 3, None, "numbers"),
    (_ITEMS[:1], 2.7, None, "k must be an integer"),  # was a silent k=2
    (_ITEMS[:1], "3", None, "k must be an integer"),
    (_ITEMS[:1], True, None, "k must be an integer"),
    (_ITEMS[:1], float("nan"), None, "k must be an integer"),
    (_ITEMS[:1], 0, None, "k must be an integer >= 1"),
    (_ITEMS[:1], 3, [np.array([10])], r"outside 0\.\.9"),  # was an IndexError
    (_ITEMS[:1], 10, [np.array([-1])], r"outside 0\.\.9"),  # silently left out the last item
    (_ITEMS[:2], 3, [np.array([11]), np.array([5])], r"exclude\[0\].*outside"),  # banned item 1 of row 1
    (_ITEMS[:2], 3, [np.array([1])], "one id list per query row"),  # was an IndexError
    (_ITEMS[:1], 3, [np.array([1.7])], "integer item ids"),  # was a silent 1
])
def test_bad_search_input_is_one_config_error(queries, k, exclude, match):
    with pytest.raises(ConfigError, match=match):
        ItemIndex(_ITEMS).search(queries, k, exclude)


def test_out_of_range_exclusions_are_refused_by_the_reference_too():
    with pytest.raises(ConfigError, match="outside"):
        brute_force_topk(_ITEMS[:2], _ITEMS, 3, [np.array([-1]), np.array([2])])


@pytest.mark.parametrize("items, kind, opts, match", [
    (np.zeros((0, 4)), "flat", {}, "non-empty"),
    (np.zeros((5, 0)), "flat", {}, "non-empty"),  # was accepted, answering nonsense
    (np.full((5, 2), np.nan), "flat", {}, "NaN"),  # was every list empty
    (np.array([[np.inf, 0.0], [1.0, 0.0]]), "flat", {}, "NaN or inf"),
    (np.array([[1.0, None]], dtype=object), "flat", {}, "numbers"),  # None was a silent NaN
    (np.array([["a", "b"]]), "flat", {}, "numbers"),
    (_ITEMS, "hnsw", {"hnsw_m": 1}, "hnsw_m"),  # faiss aborted the whole process
    (_ITEMS, "hnsw-l2", {"hnsw_m": 0}, "hnsw_m"),
    (_ITEMS, "ivf", {"nlist": 50}, "nlist"),  # a faiss RuntimeError (more lists than points)
    (_ITEMS, "ivf", {"nprobe": 0}, "nprobe"),  # a faiss RuntimeError at the first search
])
def test_bad_index_input_is_one_config_error(items, kind, opts, match):
    with pytest.raises(ConfigError, match=match):
        ItemIndex(items, kind, **opts).search(np.ones((1, items.shape[1])), 3)


def test_repeated_excluded_ids_do_not_leave_an_approximate_list_short():
    """The shortfall check counted a repeated excluded id twice: with 1,500 of 3,000 items excluded, each
    listed twice, it thought nothing was left and kept IVF's (one probe) short lists unrepaired."""
    rng = np.random.default_rng(7)
    items = rng.normal(size=(3000, 16)).astype(np.float32)
    q = rng.normal(size=(8, 16)).astype(np.float32)
    exclude = [np.tile(rng.choice(3000, 1500, replace=False), 2) for _ in range(len(q))]
    ids, _ = ItemIndex(items, "ivf", nlist=50, nprobe=1).search(q, 500, exclude)
    assert ((ids >= 0).sum(axis=1) == 500).all()
    assert not any(np.isin(ids[r], exclude[r]).any() for r in range(len(q)))


def _run(item_emb: np.ndarray, user_emb: np.ndarray, seen: list[list[int]]) -> Run:
    n_users, n_items = len(user_emb), len(item_emb)
    u = np.repeat(np.arange(n_users), [len(s) for s in seen])
    i = np.array([x for s in seen for x in s], np.int64)
    csr = sp.csr_matrix((np.ones(len(i), np.float32), (u, i)), shape=(n_users, n_items))
    csr.sort_indices()
    names = [str(x) for x in range(n_items)]
    return Run(path=Path("."), meta={"format_version": 1, "model": "synthetic", "dataset": "synthetic"},
               user_emb=user_emb, item_emb=item_emb, user_ids=[str(x) for x in range(n_users)], item_ids=names,
               items=pd.DataFrame({"item_id": names, "title": names}),
               history=pd.DataFrame({"user": u, "item": i, "timestamp": 0}), seen=csr)


def test_service_recommends_by_inner_product_and_similar_items_by_cosine():
    """recommend: the model's score z_u · z_i (magnitude counts), seen items out; similar-items: cosine of
    item embeddings, the item itself out, an exact copy first, a zero item tied with every item at 0."""
    from recgoat.serving.app import Service

    rng = np.random.default_rng(8)
    items = (rng.normal(size=(40, 6)) * rng.uniform(0.1, 3.0, size=(40, 1))).astype(np.float32)
    items[5] = items[2]  # a copy
    items[9] = 0.0  # a zero vector
    users = rng.normal(size=(4, 6)).astype(np.float32)
    seen = [[0, 1, 2], list(range(40)), [], [9]]
    svc = Service(_run(items, users, seen))
    for u in range(4):
        ids, scores = svc.recommend(u, 50, True)
        want, want_scores = _reference(users[u:u + 1], items, 50, [seen[u]])
        np.testing.assert_array_equal(ids, want[0])
        np.testing.assert_allclose(scores, want_scores[0], rtol=1e-5, atol=1e-5)
    unit = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    for i in (2, 9, 17):
        ids, scores = svc.similar(i, 45)
        want, want_scores = _reference(unit[i:i + 1], unit, 45, [[i]])
        np.testing.assert_array_equal(ids, want[0])
        np.testing.assert_allclose(scores, want_scores[0], rtol=1e-5, atol=1e-5)
        assert i not in ids.tolist() and (ids[39:] == -1).all()  # 39 others, then padding
    assert svc.similar(2, 1)[0].tolist() == [5] and svc.similar(2, 1)[1][0] == pytest.approx(1.0, abs=1e-6)
    assert svc.similar(9, 39)[0].tolist() == [i for i in range(40) if i != 9]  # all tied at 0: by id
    # the cosine ranking is not the inner-product one: a far longer item wins the dot product
    assert svc.similar(17, 39)[0].tolist() != _reference(items[17:18], items, 39, [[17]])[0][0].tolist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    users, items = [f"u{u}" for u in range(12)], [f"i{i}" for i in range(30)]
    rows = [(u, it, 100 + j) for a, u in enumerate(users) for j, it in enumerate(items) if (a * 7 + j * 3) % 5 < 2]
    return train_shop(tmp_path_factory.mktemp("retrieval") / "shop", rows, items)


def test_served_ranking_equals_the_trained_models_recommend(trained, tmp_path):
    """Through export and load, the exact index gives model.recommend's list for every user, every k up to
    past the catalogue, with and without seen items, by the one-query and the batched path alike; each list
    is the head of the next longer one."""
    from recgoat.serving import export_run, load_run
    from recgoat.serving.app import Service

    model, ds = trained
    run = load_run(export_run(model, ds, tmp_path / "art", seen="train"))  # model.recommend masks training only
    svc = Service(run)
    seen = [run.seen_items(u) for u in range(run.n_users)]
    for exclude_seen in (True, False):
        prev = None
        for k in range(1, run.n_items + 3):
            batch, _ = svc.index.search(run.user_emb, k, seen if exclude_seen else None)
            for u in range(run.n_users):
                want, want_scores = model.recommend(u, k, remove_seen=exclude_seen)
                ids, scores = svc.recommend(u, k, exclude_seen)
                assert ids[ids >= 0].tolist() == want.tolist() == batch[u][batch[u] >= 0].tolist(), (u, k)
                np.testing.assert_allclose(scores[:len(want)], want_scores, rtol=1e-5, atol=1e-5)
                if prev is not None:
                    assert ids[:k - 1].tolist() == prev[u].tolist()
            prev = batch


def test_a_user_whose_seen_items_rank_first_is_not_re_ranked_exactly(monkeypatch):
    """The exact index re-ranked by brute force every list whose k-th kept item was the last one fetched,
    which is every list whose seen items all rank above it (the usual case for a trained model): a full
    second scoring pass per request. It now fetches one more candidate, and only a real tie re-ranks."""
    import recgoat.serving.retrieval as retrieval

    rng = np.random.default_rng(9)
    items = rng.normal(size=(2000, 16)).astype(np.float32)
    q = rng.normal(size=(5, 16)).astype(np.float32)
    top = np.argsort(-(q @ items.T), axis=1, kind="stable")
    exclude = [top[r, :50] for r in range(len(q))]
    calls = []
    monkeypatch.setattr(retrieval, "brute_force_topk", lambda *a, **kw: calls.append(1) or brute_force_topk(*a, **kw))
    index = ItemIndex(items)
    for r in range(len(q)):
        ids, _ = index.search(q[r], 10, [exclude[r]])
        np.testing.assert_array_equal(ids[0], top[r, 50:60])
    assert calls == []
    tied = np.concatenate([items, np.repeat(items[:1], 30, axis=0)])  # a real tie at the boundary still is
    ids, _ = ItemIndex(tied).search(items[0], 5)
    np.testing.assert_array_equal(ids, _reference(items[:1], tied, 5)[0])
    assert calls
