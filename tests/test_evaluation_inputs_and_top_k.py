"""Evaluation: edge cases of the evaluator's inputs and of the top-k rule, against hand-computed values."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from recgoat.evaluation.evaluator import SELECTIONS, Evaluator  # noqa: E402
from recgoat.evaluation.ranking import SAFE_SCORE_BOUND, score_bound, top_k  # noqa: E402


def _raw_csr(data, indices, indptr, n_items):
    """A CSR built from raw arrays, as given: scipy keeps repeated columns and stored zeros."""
    return sp.csr_matrix((np.asarray(data, np.float32), np.asarray(indices), np.asarray(indptr)),
                         shape=(len(indptr) - 1, n_items))


@pytest.mark.parametrize("selection", SELECTIONS)
def test_duplicate_held_out_item_counts_once(selection):
    """User 0 holds out item 1, listed twice in a non-canonical CSR; item scores 1, 4, 3, 2 put item 1 first.
    One relevant item found at rank 1: Recall@1 = 1, Precision@2 = 1/2, NDCG@2 = 1, MAP@2 = 1. Before, the
    pair counted as two relevant items (Recall@1 = 1/2) and counting scored it as two hits (Precision@2 = 1)."""
    target = _raw_csr([1, 1], [1, 1], [0, 2], 4)
    mask = sp.csr_matrix((1, 4), dtype=np.float32)
    res = Evaluator(mask, target, ks=(1, 2), selection=selection).evaluate_embeddings(
        torch.ones(1, 1), torch.tensor([[1.0], [4.0], [3.0], [2.0]]))
    assert res.per_user["recall@1"].tolist() == [1.0]
    assert res.per_user["recall@2"].tolist() == [1.0]
    assert res.per_user["precision@1"].tolist() == [1.0]
    assert res.per_user["precision@2"].tolist() == [0.5]
    assert res.per_user["ndcg@2"].tolist() == [1.0]
    assert res.per_user["map@2"].tolist() == [1.0]
    assert target.nnz == 2  # the caller's matrix is left as it was


@pytest.mark.parametrize("selection", SELECTIONS)
def test_explicitly_stored_zeros_are_neither_held_out_nor_masked(selection):
    """Scores 1, 3, 4, 2 rank items 2, 1, 3, 0. User 0 holds out item 1 (item 2 is a stored 0): one relevant
    item at rank 2, Recall@1 = 0, Recall@2 = 1, NDCG@2 = 1/log2(3), Precision@2 = 1/2. User 1's only target
    entry is a stored 0: not evaluated. User 2 holds out item 1 and has a stored 0 on item 2 in the mask:
    item 2 stays a candidate ahead of item 1, so again Recall@1 = 0, Recall@2 = 1."""
    target = _raw_csr([1, 0, 0, 1], [1, 2, 0, 1], [0, 2, 3, 4], 4)
    mask = _raw_csr([0], [2], [0, 0, 0, 1], 4)
    res = Evaluator(mask, target, ks=(1, 2), selection=selection).evaluate_embeddings(
        torch.ones(3, 1), torch.tensor([[1.0], [3.0], [4.0], [2.0]]))
    assert res.users.tolist() == [0, 2]
    assert res.per_user["recall@1"].tolist() == [0.0, 0.0]
    assert res.per_user["recall@2"].tolist() == [1.0, 1.0]
    assert res.per_user["precision@2"].tolist() == [0.5, 0.5]
    assert res.per_user["ndcg@2"] == pytest.approx([1 / math.log2(3)] * 2)
    assert res.per_user["map@2"].tolist() == [0.5, 0.5]
    assert target.nnz == 4 and mask.nnz == 1  # the caller's matrices are left as they were


def test_user_embeddings_of_another_size_are_refused():
    """2 users in the split, 3 rows of user embeddings (another dataset's, or users and items swapped): the
    item count was checked, the user count was not, and the first rows were silently scored."""
    mask = sp.csr_matrix((2, 4), dtype=np.float32)
    target = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    ev = Evaluator(mask, target, ks=(1,))
    with pytest.raises(ValueError, match="user embeddings have 3 rows, the evaluator expects 2"):
        ev.evaluate_embeddings(torch.ones(3, 1), torch.ones(4, 1))
    assert ev.evaluate_embeddings(torch.ones(2, 1), torch.tensor([[4.0], [3.0], [2.0], [1.0]])).means[
        "recall@1"] == 0.5


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5])
def test_chunk_size_must_be_a_positive_integer(chunk_size):
    """0 failed in range() and -1 with 'negative dimensions are not allowed', neither naming chunk_size."""
    mask = sp.csr_matrix((1, 3), dtype=np.float32)
    target = sp.csr_matrix(np.array([[1, 0, 0]], np.float32))
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        Evaluator(mask, target, ks=(1,), chunk_size=chunk_size)


@pytest.mark.parametrize("row, k, expected", [
    ([1, np.nan, 3, 2], 2, [2, 3]),                        # k short of the NaN item (worked before)
    ([1, np.nan, 3, 2], 4, [2, 3, 0, 1]),                  # k reaches it: NaN last
    ([np.nan, -np.inf, 1, np.nan, -np.inf], 5, [2, 1, 4, 0, 3]),  # after −∞ too, NaN items by id
    ([np.nan, np.nan], 1, [0]),
])
def test_top_k_puts_nan_scores_last(row, k, expected):
    """Once k reached a NaN item, the k-th value was NaN, equal to nothing: a row chose fewer than k ids and
    top_k raised 'cannot reshape array' (Recommender.recommend, the serving brute force)."""
    assert top_k(np.array(row, np.float32), k).tolist() == expected


def test_top_k_with_nan_in_one_row_keeps_the_other_rows():
    scores = np.array([[1, np.nan, 3, 2], [1, 2, 3, 4], [3, 3, np.inf, 0]], np.float32)
    assert top_k(scores, 4).tolist() == [[2, 3, 0, 1], [3, 2, 1, 0], [2, 0, 1, 3]]
    assert top_k(scores, 2).tolist() == [[2, 3], [3, 2], [2, 0]]


# ------------------------------------------------------------------------------------- score bound
@pytest.mark.parametrize("users, items, expected", [
    ([[3.0, 4.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 2.0]], 5.0 * 2.0),  # largest norms 5 and 2
    ([[1.0, 1.0]], [[1.0, np.nan]], math.inf),                        # NaN: no bound
    ([[np.inf, 0.0]], [[1.0, 0.0]], math.inf),
    (np.zeros((0, 2)), [[1.0, 0.0]], 0.0),                           # nothing to score
    ([[1e30, 1e30]], [[1e30, 0.0]], math.sqrt(2) * 1e60),             # norms in float64: no overflow of the bound
])
def test_score_bound_is_the_norm_product(users, items, expected):
    got = score_bound(np.asarray(users, np.float32), np.asarray(items, np.float32))
    assert got == pytest.approx(expected, rel=1e-6) if math.isfinite(expected) else got == expected


def test_score_bound_bounds_every_score():
    rng = np.random.default_rng(0)
    u, i = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(70, 8)).astype(np.float32) * 3
    assert np.abs(u.astype(np.float64) @ i.T.astype(np.float64)).max() <= score_bound(u, i)


@pytest.mark.parametrize("selection", SELECTIONS)
def test_an_overflowing_score_is_no_hit(selection):
    # finite embeddings whose product overflows float32: the held-out item scores inf, which is no score;
    # the evaluator takes its NaN path because the bound says so (the export check uses the same bound)
    users = torch.tensor([[1e20, 0.0]])
    items = torch.tensor([[1e20, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert not score_bound(users.numpy(), items.numpy()) < SAFE_SCORE_BOUND
    target = sp.csr_matrix(np.array([[1, 0, 0]], np.float32))
    ev = Evaluator(sp.csr_matrix((1, 3), dtype=np.float32), target, ks=(1, 3), selection=selection)
    res = ev.evaluate_embeddings(users, items)
    assert res.per_user["hit@1"].tolist() == [0.0] and res.per_user["hit@3"].tolist() == [0.0]
