"""Evaluation at cut-offs far beyond the catalogue, and non-integer cut-offs refused: each test pins a bug that
was found and fixed.

Metrics are checked against values computed by hand in the comments.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recgoat.evaluation.evaluator import SELECTIONS, Evaluator
from recgoat.evaluation.metrics import metrics_from_hits

HUGE_K = 10**12  # padded as before, one user's empty slots alone would be a terabyte


def _problem() -> tuple[sp.csr_matrix, sp.csr_matrix, torch.Tensor, torch.Tensor]:
    """4 items scored 4, 3, 2, 1 by every user (1-d embeddings).

    user 0: item 0 masked, held out {1, 3}: ranked 1 (hit), 2, 3 (hit)
    user 1: nothing masked, held out {2}:   ranked 0, 1, 2 (hit), 3
    user 2: nothing held out (not evaluated)
    """
    mask = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    target = sp.csr_matrix(np.array([[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]], np.float32))
    return mask, target, torch.ones(3, 1), torch.tensor([[4.0], [3.0], [2.0], [1.0]])


L2, L3 = math.log2(3), 2.0  # log2(rank + 1) at ranks 2 and 3
EXPECTED = {  # user 0, user 1
    "recall@2": [1 / 2, 0.0], "precision@2": [1 / 2, 0.0], "hit@2": [1.0, 0.0],
    "ndcg@2": [1 / (1 + 1 / L2), 0.0], "map@2": [1 / 2, 0.0],
    f"recall@{HUGE_K}": [1.0, 1.0], f"precision@{HUGE_K}": [2 / HUGE_K, 1 / HUGE_K], f"hit@{HUGE_K}": [1.0, 1.0],
    f"ndcg@{HUGE_K}": [(1 + 1 / L3) / (1 + 1 / L2), (1 / L3) / 1],
    f"map@{HUGE_K}": [(1 / 1 + 2 / 3) / 2, (1 / 3) / 1],
}


@pytest.mark.parametrize("selection", SELECTIONS)
def test_k_far_beyond_the_catalogue_is_computed_without_padding(selection):
    """A K past the catalogue padded the hit matrix to [users, K] (then four float64 copies of it): ks=(5,
    2_000_000) on 200 users × 40 items peaked at 15 GB, K = 10^12 failed to allocate. The slots past the
    last item are read as empty instead; the values are those of the padded matrix."""
    mask, target, ue, ie = _problem()
    res = Evaluator(mask, target, (HUGE_K, 2), selection=selection).evaluate_embeddings(ue, ie)
    assert list(res.users) == [0, 1]
    assert set(res.per_user) == set(EXPECTED)
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(res.per_user[name], want, rtol=1e-15, atol=0, err_msg=name)
        assert res.means[name] == pytest.approx(np.mean(want), rel=1e-15)


def test_metrics_from_hits_reads_columns_past_the_matrix_as_empty_only_when_asked():
    hits = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.bool)  # the two users of _problem, 3 ranked slots
    got = metrics_from_hits(hits, torch.tensor([2, 1]), (2, HUGE_K), empty_after=True)
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-15, atol=0, err_msg=name)
    with pytest.raises(ValueError, match=f"K={HUGE_K} exceeds the 3 ranked items"):
        metrics_from_hits(hits, torch.tensor([2, 1]), (2, HUGE_K))


def test_ideal_dcg_past_the_hit_columns():
    """More held-out items than ranked slots (|T| = 4, 2 slots, K = 5): the ideal DCG still counts
    min(|T|, K) = 4 ranks, as the padded matrix's table did."""
    got = metrics_from_hits(torch.tensor([[True, True]]), torch.tensor([4]), (5,), empty_after=True)
    ideal = 1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)
    assert got["ndcg@5"].item() == pytest.approx((1 + 1 / math.log2(3)) / ideal, rel=1e-15)
    assert got["map@5"].item() == pytest.approx((1 + 1) / 4, rel=1e-15)


def test_reading_past_the_columns_equals_padding_them_bit_for_bit():
    """Results of valid runs do not move: every metric equals, to the bit, the one of the padded matrix."""
    rng = np.random.default_rng(0)
    hits = torch.from_numpy(rng.random((60, 7)) < 0.3)
    n_rel = torch.from_numpy(rng.integers(0, 12, 60))
    ks = (1, 3, 7, 8, 20, 33)
    padded = metrics_from_hits(torch.cat([hits, torch.zeros(60, 26, dtype=torch.bool)], 1), n_rel, ks)
    read = metrics_from_hits(hits, n_rel, ks, empty_after=True)
    assert padded.keys() == read.keys()
    for name in padded:
        assert torch.equal(padded[name].isnan(), read[name].isnan()), name
        assert torch.equal(padded[name].nan_to_num(), read[name].nan_to_num()), name


@pytest.mark.parametrize("ks", [(2.5,), (True, 5), ("5",), (5, np.float64(10.0))])
def test_non_integer_cut_offs_are_refused_up_front(ks):
    """K = 2.5 passed the check (>= 1) and failed at evaluation in tensor indexing, "5" failed the check with
    a TypeError, True was K = 1."""
    mask, target, _, _ = _problem()
    with pytest.raises(ValueError, match="ks must be a non-empty list of integer cut-offs >= 1"):
        Evaluator(mask, target, ks)

