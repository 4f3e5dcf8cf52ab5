"""Metrics: the evaluator and ``metrics_from_hits`` against a plain per-user Python reference.

The reference spells out METHOD.md §6 and the docstrings of ``evaluation/metrics.py`` and
``evaluation/evaluator.py`` one user at a time: full ranking over the unmasked items, empty slots past the
last unmasked item, Recall = hits/|T|, Precision = hits/K, NDCG with ideal DCG over min(|T|, K) ranks,
MAP = sum of Precision@r over the hit ranks / min(|T|, K) (MMRec's), users without held-out items skipped,
ties ranked pessimistically by the counting selection, a masked held-out item never a hit but still in |T|.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from recgoat.evaluation.evaluator import SELECTIONS, Evaluator  # noqa: E402
from recgoat.evaluation.metrics import METRICS, metrics_from_hits  # noqa: E402
from recgoat.evaluation.ranking import top_k  # noqa: E402


# ------------------------------------------------------------------ the reference
def ref_metrics(hits: list[int], n_rel: int, k: int) -> dict[str, float]:
    """One user's metrics at K from its ranked 0/1 hit list (shorter than K: the rest are empty slots)."""
    h = (list(hits) + [0] * k)[:k]
    n_hit = sum(h)
    dcg = 0.0
    for r in range(1, k + 1):
        if h[r - 1]:
            dcg += 1.0 / math.log2(r + 1)
    idcg = 0.0
    for r in range(1, min(n_rel, k) + 1):
        idcg += 1.0 / math.log2(r + 1)
    ap = 0.0
    for r in range(1, k + 1):
        if h[r - 1]:
            ap += sum(h[:r]) / r
    return {"recall": n_hit / n_rel, "precision": n_hit / k, "hit": float(n_hit > 0), "ndcg": dcg / idcg,
            "map": ap / min(n_rel, k)}


def ref_evaluate(scores: np.ndarray, mask: np.ndarray, target: np.ndarray, ks):
    """Per-user loop: rank the unmasked items by score, equal scores with held-out items last (the
    counting selection's pessimistic rule), then by id; users with nothing held out skipped."""
    users, per_user = [], {f"{n}@{k}": [] for n in METRICS for k in ks}
    for u in range(scores.shape[0]):
        rel = {i for i in range(scores.shape[1]) if target[u, i]}
        if not rel:
            continue
        users.append(u)
        cand = [i for i in range(scores.shape[1]) if not mask[u, i]]
        ranked = sorted(cand, key=lambda i: (-float(scores[u, i]), i in rel, i))
        hits = [int(i in rel) for i in ranked]
        for k in ks:
            for name, value in ref_metrics(hits, len(rel), k).items():
                per_user[f"{name}@{k}"].append(value)
    return np.array(users, dtype=np.int64), {n: np.array(v) for n, v in per_user.items()}


def assert_matches(res, users, per_user, exact=False):
    assert np.array_equal(res.users, users)
    for name, want in per_user.items():
        got = res.per_user[name]
        assert got.shape == want.shape, name
        if exact:
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
        mean = float(np.mean(want)) if len(want) else float("nan")
        assert res.means[name] == pytest.approx(mean, rel=1e-12, abs=1e-12, nan_ok=True), name


def _problem(seed, n_users=40, n_items=30, p_mask=0.3, p_held=0.15):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items))
    mask = dense < p_mask
    target = (dense >= p_mask) & (dense < p_mask + p_held)
    target[:3] = False                      # users with nothing held out
    target[3] = False
    target[3, np.flatnonzero(mask[3])[:2]] = True   # held out, but every item also masked
    mask[4] = False
    target[4] = ~np.eye(1, n_items, 0, dtype=bool)[0]  # many relevant items: all but item 0
    mask[5] = True
    mask[5, :3] = False                     # only 3 unmasked items (fewer than most K)
    target[5] = False
    target[5, [1, 7]] = True                # item 7 held out and masked, item 1 unmasked
    return rng, mask, target


def _csr(a):
    return sp.csr_matrix(np.asarray(a, dtype=np.float32))


def _distinct_scores(rng, n_users, n_items, d=8):
    """Random float32 embeddings whose scores are well separated (no ties, no float rounding reorders)."""
    ue = torch.from_numpy(rng.normal(size=(n_users, d)).astype(np.float32))
    ie = torch.from_numpy(rng.normal(size=(n_items, d)).astype(np.float32))
    s = ue.double() @ ie.double().T
    gaps = np.diff(np.sort(s.numpy(), axis=1), axis=1)
    assert gaps.min() > 1e-5  # the premise
    return ue, ie, s.numpy()


KS = (1, 2, 3, 5, 10, 29, 30, 45)  # K < |T|, K > |T|, K > unmasked items, K = and > the catalogue


# ------------------------------------------------------------------ metrics_from_hits alone
def test_metrics_from_hits_equals_reference_on_random_hit_lists():
    rng = np.random.default_rng(0)
    n, max_k = 300, 25
    hits = rng.random((n, max_k)) < rng.random((n, 1))
    n_rel = np.maximum(hits.sum(1), rng.integers(0, 40, n))  # >= the hits, some far above K, some 0
    n_rel[:7] = 0
    hits[:7] = False
    ks = (1, 2, 4, 7, 13, 25)
    got = metrics_from_hits(torch.from_numpy(hits), torch.from_numpy(n_rel), ks)
    for u in range(n):
        for k in ks:
            if n_rel[u] == 0:
                assert all(math.isnan(got[f"{m}@{k}"][u].item()) for m in METRICS)
                continue
            want = ref_metrics(hits[u].astype(int).tolist(), int(n_rel[u]), k)
            for m in METRICS:
                assert got[f"{m}@{k}"][u].item() == pytest.approx(want[m], rel=1e-12, abs=1e-15), (u, k, m)


def test_hand_computed_map_ndcg_precision_denominators():
    # |T| = 3, K = 4, hits at ranks 2 and 4: MAP = (1/2 + 2/4) / min(3, 4) = 1/3 (MMRec's), not / |hits|
    # or / K; NDCG's ideal DCG has min(3, 4) = 3 terms; Precision divides by K = 4
    m = metrics_from_hits(torch.tensor([[0, 1, 0, 1]]), torch.tensor([3]), (4, 2))
    assert m["map@4"].item() == pytest.approx(1 / 3)
    assert m["ndcg@4"].item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 0.5))
    assert m["precision@4"].item() == pytest.approx(0.5)
    assert m["recall@4"].item() == pytest.approx(2 / 3)
    # K = 2 < |T|: MAP over min(3, 2) = 2, ideal DCG over 2 ranks
    assert m["map@2"].item() == pytest.approx((1 / 2) / 2)
    assert m["ndcg@2"].item() == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # |T| = 1 with its hit at rank 3: MAP = 1/3, NDCG = 1/log2(4) = 0.5
    m = metrics_from_hits(torch.tensor([[0, 0, 1]]), torch.tensor([1]), (3,))
    assert m["map@3"].item() == pytest.approx(1 / 3) and m["ndcg@3"].item() == pytest.approx(0.5)


# ------------------------------------------------------------------ the evaluator, no ties
@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluator_equals_reference_without_ties(selection, seed):
    rng, mask, target = _problem(seed)
    ue, ie, scores = _distinct_scores(rng, *mask.shape)
    users, per_user = ref_evaluate(scores, mask, target, KS)
    assert users[0] == 3 and 5 in users  # the all-masked user is evaluated (zeros), the empty ones are not
    for chunk in (1, 7, mask.shape[0]):
        res = Evaluator(_csr(mask), _csr(target), ks=KS, chunk_size=chunk, selection=selection).evaluate_embeddings(ue, ie)
        assert_matches(res, users, per_user)
    # the all-masked user scores zero everywhere but counts in the means; the catalogue-wide user too
    assert all(res.per_user[f"{m}@{k}"][0] == 0.0 for m in METRICS for k in KS)


@pytest.mark.parametrize("seed", [0, 6])
def test_selections_and_chunks_agree_exactly_without_ties(seed):
    rng, mask, target = _problem(seed, n_users=50, n_items=40)
    ue, ie, _ = _distinct_scores(rng, *mask.shape)
    results = [Evaluator(_csr(mask), _csr(target), ks=KS, chunk_size=c, selection=s).evaluate_embeddings(ue, ie)
               for s in SELECTIONS for c in (1, 7, 50)]
    for other in results[1:]:
        assert np.array_equal(other.users, results[0].users)
        for name in results[0].per_user:
            assert np.array_equal(other.per_user[name], results[0].per_user[name]), name
            assert other.means[name] == results[0].means[name], name


@pytest.mark.parametrize("selection", SELECTIONS)
def test_float64_embeddings_score_as_their_float32_rounding(selection):
    rng, mask, target = _problem(4)
    u64, i64 = rng.normal(size=(mask.shape[0], 8)), rng.normal(size=(mask.shape[1], 8))
    ev = Evaluator(_csr(mask), _csr(target), ks=KS, chunk_size=7, selection=selection)
    a = ev.evaluate_embeddings(torch.from_numpy(u64), torch.from_numpy(i64))
    b = ev.evaluate_embeddings(torch.from_numpy(u64).float(), torch.from_numpy(i64).float())
    for name in a.per_user:
        assert np.array_equal(a.per_user[name], b.per_user[name]), name


def test_per_user_values_follow_the_user_ids():
    """Permuting the users permutes their rows: each user's values stay with its id."""
    rng, mask, target = _problem(5)
    ue, ie, _ = _distinct_scores(rng, *mask.shape)
    perm = rng.permutation(mask.shape[0])
    a = Evaluator(_csr(mask), _csr(target), ks=KS, chunk_size=7).evaluate_embeddings(ue, ie)
    b = Evaluator(_csr(mask[perm]), _csr(target[perm]), ks=KS, chunk_size=7).evaluate_embeddings(ue[perm], ie)
    back = {int(perm[u]): i for i, u in enumerate(b.users)}
    for name in a.per_user:
        got = np.array([b.per_user[name][back[int(u)]] for u in a.users])
        np.testing.assert_array_equal(got, a.per_user[name], err_msg=name)
        assert b.means[name] == pytest.approx(a.means[name], rel=1e-12)


# ------------------------------------------------------------------ ties
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_selection_equals_the_pessimistic_reference_with_ties(seed):
    rng, mask, target = _problem(seed)
    # integer embeddings: exact float32 scores from a handful of values, ties everywhere
    ue = torch.from_numpy(rng.integers(-2, 3, size=(mask.shape[0], 2)).astype(np.float32))
    ie = torch.from_numpy(rng.integers(-2, 3, size=(mask.shape[1], 2)).astype(np.float32))
    scores = (ue.double() @ ie.double().T).numpy()
    users, per_user = ref_evaluate(scores, mask, target, KS)
    results = {}
    for chunk in (1, 7, mask.shape[0]):
        res = Evaluator(_csr(mask), _csr(target), ks=KS, chunk_size=chunk, selection="count").evaluate_embeddings(ue, ie)
        assert_matches(res, users, per_user)
        results[chunk] = res
    # the top-K selections order ties arbitrarily, never worse than the pessimistic count
    for selection in ("faiss", "torch"):
        res = Evaluator(_csr(mask), _csr(target), ks=KS, selection=selection).evaluate_embeddings(ue, ie)
        for name in ("recall", "hit", "ndcg", "precision", "map"):
            for k in KS:
                assert (res.per_user[f"{name}@{k}"] >= results[1].per_user[f"{name}@{k}"] - 1e-12).all(), (name, k)


def test_top_k_tie_rule_against_a_full_sort():
    rng = np.random.default_rng(7)
    s = rng.integers(-3, 3, size=(40, 25)).astype(np.float64)
    s[rng.random(s.shape) < 0.1] = -np.inf
    s[rng.random(s.shape) < 0.05] = np.nan
    for k in (1, 3, 10, 25, 40):
        want = [sorted(range(25), key=lambda i: (np.isnan(row[i]), -row[i] if not np.isnan(row[i]) else 0, i))[:k]
                for row in s]
        assert top_k(s, k).tolist() == want


# ------------------------------------------------------------------ masking through for_split
class _Split:
    def __init__(self, **mats):
        self.mats = {k: _csr(v) for k, v in mats.items()}

    def csr(self, split):
        return self.mats[split]


@pytest.mark.parametrize("selection", SELECTIONS)
def test_for_split_masks_train_and_valid_and_never_hits_a_masked_item(selection):
    rng = np.random.default_rng(11)
    n_users, n_items = 30, 20
    dense = rng.random((n_users, n_items))
    train, valid, test = dense < 0.3, (dense >= 0.3) & (dense < 0.4), (dense >= 0.4) & (dense < 0.5)
    test[0, np.flatnonzero(train[0])[:1]] = True   # a test item also in training
    test[1, np.flatnonzero(valid[1])[:1]] = True   # a test item also in validation
    ds = _Split(train=train, valid=valid, test=test)
    # scores that rank every masked item first: a masked item left in the ranking would show
    ue = torch.eye(n_users)
    for split, test_mask, masked in (("valid", "train+valid", train), ("test", "train+valid", train | valid),
                                     ("test", "train", train)):
        target = valid if split == "valid" else test
        ie = torch.from_numpy((2.0 * masked + target + rng.random((n_users, n_items)) * 0.1).T.astype(np.float32))
        ev = Evaluator.for_split(ds, split, ks=KS, chunk_size=7, selection=selection, test_mask=test_mask)
        res = ev.evaluate_embeddings(ue, ie)
        users, per_user = ref_evaluate((ue.double() @ ie.double().T).numpy(), masked, target, KS)
        assert_matches(res, users, per_user)
        if split == "test":
            # the held-out item also in training is masked: never a hit, still one of |T| (Recall < 1)
            assert res.per_user["recall@45"][0] == pytest.approx(1 - 1 / test[0].sum())
    # the MMRec convention: a validation item stays a candidate that is never a hit, ranked above the test
    # items here, so it costs ranks; a validation item also held out in test is found
    ev = Evaluator.for_split(ds, "test", ks=(1,), selection=selection, test_mask="train")
    ie = torch.from_numpy((2.0 * train + 1.5 * valid + test).T.astype(np.float32))
    res = ev.evaluate_embeddings(ue, ie)
    want = [float(test[u, np.flatnonzero(valid[u])].any()) if valid[u].any() else 1.0 for u in res.users]
    assert res.per_user["hit@1"].tolist() == want


@pytest.mark.parametrize("selection", SELECTIONS)
def test_nan_scores_rank_against_the_model_in_every_selection(selection):
    """NaN scores count as +inf (ranked above every held-out item, never hits themselves, still in |T|)."""
    rng, mask, target = _problem(8)
    ue, ie, _ = _distinct_scores(rng, *mask.shape)
    ie[[2, 9, 17]] = float("nan")   # three items score NaN for everyone
    ue[6] = float("nan")            # one user scores NaN everywhere
    scores = (ue.double() @ ie.double().T).numpy()
    finite = np.isfinite(scores)
    users, per_user = ref_evaluate(np.where(finite, scores, np.inf), mask, target & finite, KS)
    # the reference drops the NaN held-out items from T above; put them back into |T|
    n_rel_true = target.sum(1)[users]
    n_rel_ref = (target & finite).sum(1)[users]
    assert (n_rel_true != n_rel_ref).any()
    res = Evaluator(_csr(mask), _csr(target), ks=KS, chunk_size=7, selection=selection).evaluate_embeddings(ue, ie)
    assert np.array_equal(res.users, np.flatnonzero(target.any(1)))
    for u_pos, u in enumerate(res.users):
        rel = set(np.flatnonzero(target[u]))
        s = np.where(finite[u], scores[u], np.inf)
        cand = [i for i in range(mask.shape[1]) if not mask[u, i]]
        ranked = sorted(cand, key=lambda i: (-s[i], i in rel, i))
        hits = [int(i in rel and finite[u, i]) for i in ranked]
        for k in KS:
            want = ref_metrics(hits, len(rel), k)
            for m in METRICS:
                assert res.per_user[f"{m}@{k}"][u_pos] == pytest.approx(want[m], rel=1e-12, abs=1e-12), (u, k, m)


# ------------------------------------------------------------------ bugs found by this pass
@pytest.mark.parametrize("selection", SELECTIONS)
def test_a_score_of_exactly_minus_float32_max_is_ranked_by_every_selection(selection):
    """On the overflow path a finite score can be -FLT_MAX; faiss's empty heap slots hold -FLT_MAX and took
    only larger scores, so the faiss selection never picked that item (Recall@4 = 0.5 where counting and
    torch.topk gave 1). Fixed by starting the heaps at −∞ (masked items still never enter)."""
    fmax = float(np.finfo(np.float32).max)
    mask = _csr([[0, 0, 0, 0, 1]])
    target = _csr([[0, 1, 1, 0, 1]])  # item 4 held out but masked: never a hit
    items = torch.tensor([[1.0], [-fmax], [-3e38], [2.0], [5.0]])
    res = Evaluator(mask, target, ks=(4, 5), selection=selection).evaluate_embeddings(torch.ones(1, 1), items)
    want3 = ref_metrics([0, 0, 1, 1], 3, 4)  # ranked 3, 0, 2, 1
    for m in METRICS:
        assert res.per_user[f"{m}@4"][0] == pytest.approx(want3[m]), m
    assert res.per_user["recall@5"][0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int64, np.bool_,
                                   np.float16, np.float32, np.float64])
def test_top_k_follows_the_tie_rule_for_every_dtype(dtype):
    """``top_k`` negated the scores: unsigned counts wrapped (0 became the largest) and the row selected the
    wrong number of ids (a reshape error), bool raised, and the most negative int64 ranked first."""
    rng = np.random.default_rng(3)
    if dtype is np.bool_:
        s = rng.random((20, 15)) < 0.4
    else:
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        s = rng.integers(0, 5, size=(20, 15)).astype(dtype)
        if info is not None:
            s[rng.random(s.shape) < 0.1] = info.min
            s[rng.random(s.shape) < 0.1] = info.max
    for k in (1, 4, 15, 20):
        want = [sorted(range(15), key=lambda i: (-int(row[i]) if s.dtype.kind in "iub" else -float(row[i]), i))[:k]
                for row in s]
        assert top_k(s, k).tolist() == want
        assert top_k(s[0], k).tolist() == want[0]
