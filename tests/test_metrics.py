"""Ranking metrics against hand-computed values, and the evaluator against a per-user reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recgoat.evaluation.evaluator import SELECTIONS, Evaluator
from recgoat.evaluation.metrics import metrics_from_hits


def _ndcg(hits, n_rel, k):
    dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits[:k]))
    idcg = sum(1 / math.log2(r + 2) for r in range(min(n_rel, k)))
    return dcg / idcg


@pytest.mark.parametrize("k", [1, 3, 5])
def test_metrics_hand_computed(k):
    # user 0: two relevant items, hits at ranks 1 and 3; user 1: ten relevant (> K), one hit at rank 5
    hits = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    n_rel = torch.tensor([2, 10])
    m = metrics_from_hits(hits, n_rel, (k,))
    h0, h1 = hits[0, :k].sum().item(), hits[1, :k].sum().item()
    assert m[f"recall@{k}"].tolist() == pytest.approx([h0 / 2, h1 / 10])
    assert m[f"precision@{k}"].tolist() == pytest.approx([h0 / k, h1 / k])
    assert m[f"hit@{k}"].tolist() == [float(h0 > 0), float(h1 > 0)]
    assert m[f"ndcg@{k}"].tolist() == pytest.approx([_ndcg([1, 0, 1, 0, 0], 2, k), _ndcg([0, 0, 0, 0, 1], 10, k)])


def test_metrics_exact_values_at_5():
    hits = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    m = metrics_from_hits(hits, torch.tensor([2, 10]), (5,))
    # written out by hand
    assert m["recall@5"].tolist() == pytest.approx([1.0, 0.1])
    assert m["precision@5"].tolist() == pytest.approx([0.4, 0.2])
    assert m["ndcg@5"][0].item() == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert m["ndcg@5"][1].item() == pytest.approx((1 / math.log2(6)) / sum(1 / math.log2(r + 2) for r in range(5)))
    assert m["map@5"].tolist() == pytest.approx([(1 / 1 + 2 / 3) / 2, (1 / 5) / 5])


def test_user_without_held_out_items_is_nan_and_excluded():
    hits = torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)
    m = metrics_from_hits(hits, torch.tensor([1, 0]), (1, 2))
    # user 0: its one held-out item at rank 1, by hand
    want = {"recall": (1.0, 1.0), "precision": (1.0, 0.5), "hit": (1.0, 1.0), "ndcg": (1.0, 1.0), "map": (1.0, 1.0)}
    for name, values in want.items():
        for k, value in zip((1, 2), values):
            assert m[f"{name}@{k}"][0].item() == pytest.approx(value), (name, k)
            assert math.isnan(m[f"{name}@{k}"][1].item()), (name, k)  # every metric, not only recall
    # excluded from the evaluator's users and means: user 1 holds nothing out, user 2 one item at rank 2
    mask = sp.csr_matrix((3, 3), dtype=np.float32)
    target = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]], dtype=np.float32))
    res = Evaluator(mask, target, ks=(1, 2)).evaluate_embeddings(torch.ones(3, 1), torch.tensor([[3.0], [2.0], [1.0]]))
    assert res.users.tolist() == [0, 2]
    assert res.per_user["recall@1"].tolist() == [1.0, 0.0]
    assert res.means["recall@1"] == 0.5 and res.means["precision@2"] == 0.5
    assert res.means["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def _reference(scores: np.ndarray, mask: sp.csr_matrix, target: sp.csr_matrix, k: int):
    """Plain per-user loop, the obvious way: sort, drop masked, compare with held-out set."""
    out = {"recall": [], "ndcg": [], "precision": [], "hit": [], "map": []}
    for u in range(scores.shape[0]):
        rel = set(target[u].indices)
        if not rel:
            continue
        s = scores[u].copy()
        s[mask[u].indices] = -np.inf
        ranked = np.argsort(-s, kind="stable")[:k]
        hits = [int(i in rel) for i in ranked]
        out["recall"].append(sum(hits) / len(rel))
        out["precision"].append(sum(hits) / k)
        out["hit"].append(float(sum(hits) > 0))
        out["ndcg"].append(_ndcg(hits, len(rel), k))
        prec = [sum(hits[: r + 1]) / (r + 1) for r in range(k)]
        out["map"].append(sum(p * h for p, h in zip(prec, hits)) / min(len(rel), k))
    return {f"{n}@{k}": float(np.mean(v)) for n, v in out.items()}


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("chunk", [7, 1000])
def test_evaluator_matches_per_user_reference(chunk, selection):
    rng = np.random.default_rng(0)
    n_users, n_items, d = 60, 40, 8
    dense = rng.random((n_users, n_items))
    mask = sp.csr_matrix(dense < 0.2, dtype=np.float32)
    held = (dense >= 0.2) & (dense < 0.3)
    held[:5] = False  # users with nothing held out
    target = sp.csr_matrix(held, dtype=np.float32)
    ue, ie = torch.randn(n_users, d), torch.randn(n_items, d)
    ev = Evaluator(mask, sp.csr_matrix(target), ks=(5, 10), chunk_size=chunk, selection=selection)
    res = ev.evaluate_embeddings(ue, ie)
    assert np.array_equal(res.users, np.flatnonzero(held.any(1))) and res.users.min() >= 5
    scores = (ue @ ie.T).numpy()
    for k in (5, 10):
        ref = _reference(scores, mask, sp.csr_matrix(target), k)
        for name, value in ref.items():
            assert res.means[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("selection", SELECTIONS)
def test_evaluator_never_ranks_masked_items(ml_small, selection):
    """Scores that put every masked (training + validation) item *above* the held-out ones, the held-out
    items next and everything else last: once the masked items are removed, the held-out items take the top
    places, so Recall@50 = min(1, 50/|T|) and NDCG@50 = 1 per user. A masked item left in the ranking
    would push the held-out items down (most users have far more than 50 training items)."""
    ev = Evaluator.for_split(ml_small, "test", ks=(50,), selection=selection)
    mask, target = ev.mask, ev.target
    assert mask.multiply(target).nnz == 0  # the premise: no held-out item is also masked
    item_emb = torch.eye(ml_small.n_items)
    n_rel = np.diff(target.indptr)[ev.users]
    want_recall = np.minimum(1.0, 50 / n_rel)
    seen_first = ev.evaluate_embeddings(torch.from_numpy(2 * mask.toarray() + target.toarray()), item_emb)
    np.testing.assert_allclose(seen_first.per_user["recall@50"], want_recall, rtol=1e-12)
    np.testing.assert_allclose(seen_first.per_user["ndcg@50"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(seen_first.per_user["hit@50"], 1.0)
    # a model that ranks the held-out items first scores the same
    perfect = ev.evaluate_embeddings(torch.from_numpy(target.toarray()), item_emb)
    assert perfect.means["recall@50"] == pytest.approx(np.mean(want_recall))
    assert perfect.means["ndcg@50"] == pytest.approx(1.0)
    # scores that prefer exactly the masked items: with them removed every remaining score is 0, and the
    # counting rule ranks the held-out items last among the unmasked ones (pessimistic ties): held-out
    # item j of |T| sits at 0-based rank n_unmasked − |T| + j, a hit when that is < 50
    res = ev.evaluate_embeddings(torch.from_numpy(mask.toarray()), item_emb)
    assert res.means["recall@50"] < 0.2
    if selection == "count":
        n_unmasked = ml_small.n_items - np.diff(mask.indptr)[ev.users]
        found = np.array([sum(n_un - t + j < 50 for j in range(t)) for n_un, t in zip(n_unmasked, n_rel)])
        np.testing.assert_allclose(res.per_user["recall@50"], found / n_rel, rtol=1e-12)


@pytest.mark.parametrize("selection", SELECTIONS)
def test_evaluator_with_fewer_unmasked_items_than_k(selection):
    """K = 10 of 12 items, with 8 of them masked for most users: the empty slots are never hits, and the
    few unmasked held-out items are all found (recall 1)."""
    rng = np.random.default_rng(1)
    n_users, n_items = 20, 12
    mask = np.zeros((n_users, n_items), bool)
    target = np.zeros_like(mask)
    for u in range(n_users):
        perm = rng.permutation(n_items)
        mask[u, perm[:8]] = True
        target[u, perm[8:10]] = True
    ev = Evaluator(sp.csr_matrix(mask, dtype=np.float32), sp.csr_matrix(target, dtype=np.float32), ks=(10,),
                   selection=selection)
    res = ev.evaluate_embeddings(torch.randn(n_users, 4), torch.randn(n_items, 4))
    assert res.means["recall@10"] == pytest.approx(1.0)
    assert res.means["precision@10"] == pytest.approx(0.2)


@pytest.mark.parametrize("d", [2, 16])
def test_count_faiss_and_torch_agree_on_real_shaped_scores(ml_small, d):
    """d = 2 gives many near-ties and users with up to dozens of held-out items."""
    g = torch.Generator().manual_seed(0)
    ue, ie = torch.randn(ml_small.n_users, d, generator=g), torch.randn(ml_small.n_items, d, generator=g)
    res = [Evaluator.for_split(ml_small, "test", selection=s).evaluate_embeddings(ue, ie) for s in SELECTIONS]
    for other in res[1:]:
        for name in res[0].means:
            assert np.array_equal(res[0].per_user[name], other.per_user[name]), name
    with pytest.raises(ValueError, match="selection"):
        Evaluator.for_split(ml_small, "test", selection="heap")


def test_count_ranks_ties_pessimistically():
    """Item scores 3, 2, 2, 2, 1 for one user whose held-out items are 1 and 3 (both scoring 2, tied with the
    unheld item 2): the tie group occupies ranks 2–4 and the held-out items take its last two, 3 and 4."""
    mask = sp.csr_matrix((1, 5), dtype=np.float32)
    target = sp.csr_matrix(np.array([[0, 1, 0, 1, 0]], dtype=np.float32))
    ev = Evaluator(mask, target, ks=(1, 2, 3, 4, 5))
    res = ev.evaluate_embeddings(torch.ones(1, 1), torch.tensor([[3.0], [2.0], [2.0], [2.0], [1.0]]))
    assert [res.means[f"hit@{k}"] for k in (1, 2, 3, 4, 5)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert res.means["recall@3"] == 0.5 and res.means["recall@4"] == 1.0
    assert res.means["map@4"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    # a model scoring every item alike earns nothing until K reaches the last places (ranks 3 and 4)
    flat = ev.evaluate_embeddings(torch.zeros(1, 1), torch.zeros(5, 1))
    assert [flat.means[f"recall@{k}"] for k in (1, 2, 3, 4, 5)] == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_count_never_counts_a_masked_or_nan_held_out_item():
    mask = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    target = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))  # user 0's item 0 also masked
    ev = Evaluator(mask, target, ks=(4,))
    item = torch.tensor([[4.0], [3.0], [float("nan")], [1.0]])
    res = ev.evaluate_embeddings(torch.ones(2, 1), item)
    assert res.per_user["hit@4"].tolist() == [1.0, 0.0]
    assert res.per_user["recall@4"].tolist() == [0.5, 0.0]


# ------------------------------------------------------------------ top-k tie rule
@pytest.mark.parametrize("row, k, expected", [
    ([1, 3, 3, 2, 3, 0], 2, [1, 2]),          # three tied at the top: the two lowest ids
    ([1, 3, 3, 2, 3, 0], 4, [1, 2, 4, 3]),
    ([5, 5, 5, 5], 3, [0, 1, 2]),             # all tied
    ([-np.inf, 1, 1, -np.inf, 2, 0], 6, [4, 1, 2, 5, 0, 3]),  # masked items last, by id too
    ([0.5, 0.25], 9, [0, 1]),                 # k beyond the row
])
def test_top_k_breaks_ties_by_lower_id(row, k, expected):
    from recgoat.evaluation.ranking import top_k

    assert top_k(np.array(row, np.float32), k).tolist() == expected


def test_top_k_equals_a_full_sort_by_score_then_id():
    from recgoat.evaluation.ranking import top_k

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float32)  # few distinct values: ties everywhere
    for k in (1, 5, 17, 30):
        want = [sorted(range(30), key=lambda i: (-row[i], i))[:k] for row in scores]
        assert top_k(scores, k).tolist() == want
