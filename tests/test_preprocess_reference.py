"""Preprocessing checked against plain-Python references on small random frames: k-core to a fixed point,
deduplication, dense id remapping, the per-user split sizes (MMRec's 8:1:1 rule), partitions, temporal
order with ties, row-order independence, and degenerate inputs refused with a DataError naming the column."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import PrepareConfig, prepare
from recgoat.datasets.preprocess import assign_split, k_core
from recgoat.errors import DataError

SEEDS = [0, 1, 2, 3, 4, 27]


def random_frame(seed: int, n: int = 240, n_users: int = 25, n_items: int = 30, ts_levels: int = 10**6,
                 ids: str = "str") -> pd.DataFrame:
    """Random interactions with repeated pairs; ``ts_levels`` small makes many tied timestamps."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    df = pd.DataFrame({"user": users, "item": items, "rating": rng.integers(1, 6, n).astype(np.float64),
                       "timestamp": rng.integers(0, ts_levels, n).astype(np.int64)})
    if ids == "str":
        df["user"] = ["u" + str(u) for u in users]
        df["item"] = ["i" + str(i) for i in items]
    return df


# ------------------------------------------------------------------------------------------ references
def ref_k_core(rows: list[tuple], k: int) -> list[int]:
    """Positions of the rows left when users and items with < k rows are dropped until none is."""
    alive = list(range(len(rows)))
    while True:
        uc: dict = {}
        ic: dict = {}
        for j in alive:
            u, i = rows[j]
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        nxt = [j for j in alive if uc[rows[j][0]] >= k and ic[rows[j][1]] >= k]
        if len(nxt) == len(alive):
            return alive
        alive = nxt


def ref_dedup(records: list[dict]) -> list[dict]:
    """One record per (user, item): the latest by timestamp, the last in input order among equal times."""
    best: dict = {}
    for r in records:
        key = (r["user"], r["item"])
        if key not in best or r["timestamp"] >= best[key]["timestamp"]:
            best[key] = r
    return list(best.values())


def ref_sizes(n: int) -> tuple[int, int, int]:
    """MMRec's 8:1:1 per user in integers: floor(20%) held out, valid the smaller half; users too small for
    that still give one valid and one test item while training keeps at least one."""
    if n == 1:
        return 1, 0, 0
    if n == 2:
        return 1, 0, 1
    held = n * 2 // 10
    valid, test = held // 2, held - held // 2
    if held < 2:
        valid, test = 1, 1
    return n - valid - test, valid, test


def split_table(users, labels) -> pd.DataFrame:
    t = pd.crosstab(pd.Series(np.asarray(users)), pd.Series(np.asarray(labels, dtype=object)))
    return t.reindex(columns=["train", "valid", "test"], fill_value=0)


# ------------------------------------------------------------------------------------------ k-core
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("dtype", ["int", "str", "category"])
def test_k_core_matches_the_brute_force_fixed_point(seed, k, dtype):
    df = random_frame(seed, n=int(np.random.default_rng(seed).integers(60, 260)), ids="int")[["user", "item"]]
    if dtype != "int":
        df = df.astype(dtype)  # a categorical id column made the counts categorical: a TypeError comparing to k
    out = k_core(df, k)
    expected = ref_k_core(list(zip(df["user"].tolist(), df["item"].tolist())), k)
    assert sorted(out.index.tolist()) == sorted(df.index[expected].tolist())
    if len(out):
        assert out["user"].value_counts().loc[lambda c: c > 0].min() >= k
        assert out["item"].value_counts().loc[lambda c: c > 0].min() >= k


def staircase() -> pd.DataFrame:
    """User j has j + 1 interactions: every user's count differs (pandas then maps a categorical column's
    counts to a categorical, which could not be compared with k)."""
    users = np.repeat(np.arange(6), np.arange(1, 7))
    items = np.concatenate([np.arange(n) for n in range(1, 7)])
    return pd.DataFrame({"user": ["u" + str(u) for u in users], "item": ["i" + str(i) for i in items]})


@pytest.mark.parametrize("k", [2, 3])
def test_k_core_on_categorical_ids_with_distinct_counts(k):
    df = staircase().astype("category")
    out = k_core(df, k)
    expected = ref_k_core(list(zip(df["user"].tolist(), df["item"].tolist())), k)
    assert 0 < len(expected) < len(df)
    assert sorted(out.index.tolist()) == sorted(df.index[expected].tolist())


def test_categorical_ids_prepare_as_their_strings():
    for df in (staircase(), random_frame(27, ids="str")):
        a = prepare("c", df.astype({"user": "category", "item": "category"}), config=PrepareConfig(k_core=3))
        b = prepare("c", df, config=PrepareConfig(k_core=3))
        assert a.fingerprint() == b.fingerprint() and len(a.interactions) > 0


# ------------------------------------------------------------------------------------------ whole pipeline
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ids", ["int", "str"])
@pytest.mark.parametrize("k, min_rating", [(0, None), (2, None), (3, 2.0)])
def test_prepare_keeps_exactly_the_reference_interactions_with_dense_ids(seed, ids, k, min_rating):
    df = random_frame(seed, ts_levels=40, ids=ids)  # repeated pairs, tied times
    before = df.copy()
    ds = prepare("p", df, config=PrepareConfig(k_core=k, min_rating=min_rating, seed=seed))
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is left alone

    records = [dict(r) for r in df.to_dict("records") if min_rating is None or r["rating"] >= min_rating]
    records = ref_dedup(records)
    records = [records[j] for j in ref_k_core([(r["user"], r["item"]) for r in records], k)]
    want = sorted((str(r["user"]), str(r["item"]), r["rating"], r["timestamp"]) for r in records)

    inter = ds.interactions
    got = sorted(zip(ds.user_ids[inter["user"]], ds.item_ids[inter["item"]], inter["rating"], inter["timestamp"]))
    assert got == want
    # dense 0..n-1 ids, each mapping to a distinct original id that does occur
    assert sorted(set(inter["user"])) == list(range(ds.n_users)) == list(range(len(set(ds.user_ids))))
    assert sorted(set(inter["item"])) == list(range(ds.n_items)) == list(range(len(set(ds.item_ids))))
    assert set(ds.user_ids) == {w[0] for w in want} and set(ds.item_ids) == {w[1] for w in want}
    assert all(ds.user_index(u) == j for j, u in enumerate(ds.user_ids))


def test_ids_spelled_as_int_and_str_are_one_id():
    """remap makes 1 and "1" one user "1"; deduplication and k-core counted them apart: a pair stayed twice
    despite dedup, and a user with 2 interactions fell to a 2-core."""
    df = pd.DataFrame({"user": [1, "1", 2, 2, "2"], "item": ["x", "y", "x", "y", "y"]})
    ds = prepare("m", df, config=PrepareConfig(k_core=2, split="none"))
    pairs = sorted(zip(ds.user_ids[ds.interactions["user"]], ds.item_ids[ds.interactions["item"]]))
    assert pairs == [("1", "x"), ("1", "y"), ("2", "x"), ("2", "y")]


# ------------------------------------------------------------------------------------------ split sizes
@pytest.mark.parametrize("seed", [0, 5, 2026])
@pytest.mark.parametrize("how", ["random", "temporal"])
def test_split_sizes_per_user_follow_mmrec_for_every_size(seed, how):
    sizes = list(range(1, 31)) + [47, 99]
    users = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user": users, "item": np.arange(len(users)),
                       "timestamp": rng.integers(0, 5, len(users))})  # ties: sizes must not depend on them
    table = split_table(users, assign_split(df, how, seed=seed))
    got = [tuple(int(x) for x in row) for row in table.to_numpy()]
    assert got == [ref_sizes(n) for n in sizes]


@pytest.mark.parametrize("ratios", [(0.7, 0.15, 0.15), (0.6, 0.0, 0.4), (0.5, 0.5, 0.0), (0.9, 0.05, 0.05)])
def test_split_sizes_with_other_ratios_keep_a_training_item(ratios):
    sizes = list(range(1, 41))
    users = np.repeat(np.arange(len(sizes)), sizes)
    df = pd.DataFrame({"user": users, "item": np.arange(len(users))})
    table = split_table(users, assign_split(df, "random", ratios=ratios, seed=3))
    n = np.array(sizes)
    assert (table.sum(axis=1).to_numpy() == n).all()
    assert (table["train"] >= 1).all()
    held = np.floor(n * (1 - ratios[0]) + 1e-9)
    # never fewer held out than the ratio asks, and no more than the 1-valid-1-test floor adds
    assert (table["valid"] + table["test"] >= np.minimum(held, n - 1)).all()
    assert (table["valid"] + table["test"] <= np.maximum(held, np.minimum(2, n - 1))).all()
    if ratios[1] == 0:
        assert (table["valid"] == 0).all()
    if ratios[2] == 0:
        assert (table["test"] == 0).all()


# ------------------------------------------------------------------------------------------ partitions
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("how", ["random", "temporal", "loo"])
def test_split_partitions_pairs_every_user_trains_and_time_is_respected(seed, how):
    df = random_frame(seed, n=300, n_users=40, ts_levels=8)  # tiny users and many tied times
    cfg = PrepareConfig(k_core=0, split=how, seed=seed)
    ds = prepare("s", df, config=cfg)
    inter = ds.interactions
    pd.testing.assert_frame_equal(inter, prepare("s", df, config=cfg).interactions)  # deterministic
    assert inter["split"].notna().all()
    assert not inter.duplicated(["user", "item"]).any()
    table = split_table(inter["user"], inter["split"])
    assert (table["train"] >= 1).all() and len(table) == ds.n_users  # no user without training
    if how != "loo":
        assert [tuple(r) for r in table.to_numpy()] == [ref_sizes(n) for n in table.sum(axis=1)]
    if how in ("temporal", "loo"):
        g = inter.groupby(["user", "split"], observed=True)["timestamp"]
        lo, hi = g.min().unstack(), g.max().unstack()
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            both = hi[a].notna() & lo[b].notna()
            assert (hi.loc[both, a] <= lo.loc[both, b]).all(), (a, b)  # ties may straddle, never inversions


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("how", ["random", "temporal", "loo"])
def test_split_does_not_depend_on_row_order_when_times_are_distinct(seed, how):
    rng = np.random.default_rng(seed)
    df = random_frame(seed, n=300).drop_duplicates(["user", "item"])
    df = df.assign(timestamp=rng.permutation(len(df)))
    shuffled = df.sample(frac=1.0, random_state=seed + 1)

    def labels(frame: pd.DataFrame) -> dict:
        ds = prepare("o", frame, config=PrepareConfig(k_core=2, split=how, seed=11))
        i = ds.interactions
        return dict(zip(zip(ds.user_ids[i["user"]], ds.item_ids[i["item"]]), i["split"].astype(str)))

    a, b = labels(df), labels(shuffled)
    assert a == b and set(a.values()) == {"train", "valid", "test"}


def test_seed_changes_which_interactions_are_held_out_not_how_many():
    df = random_frame(4, n=400, n_users=20).drop_duplicates(["user", "item"])
    splits = [prepare("s", df, config=PrepareConfig(k_core=0, seed=s)).interactions for s in (1, 2)]
    assert (splits[0]["split"] != splits[1]["split"]).mean() > 0.1
    pd.testing.assert_frame_equal(split_table(splits[0]["user"], splits[0]["split"]),
                                  split_table(splits[1]["user"], splits[1]["split"]))


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("column, values", [
    ("rating", [5.0, np.nan, 3.0]),
    ("rating", pd.array([5.0, None, 3.0], dtype="Float64")),
    ("timestamp", [1.0, np.nan, 3.0]),
    ("timestamp", pd.array([1, None, 3], dtype="Int64")),
])
def test_missing_rating_or_timestamp_names_the_column(column, values):
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"], column: values})
    with pytest.raises(DataError, match=f"column '{column}'"):
        prepare("bad", df, config=PrepareConfig(k_core=0))


@pytest.mark.parametrize("value", [np.inf, -np.inf, 1e20])
def test_infinite_or_out_of_range_timestamps_are_refused(value):
    # the loaders refuse them; from Python they were kept and all hashed as -2**63 in the fingerprint
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"], "timestamp": [1.0, value, 2.0]})
    with pytest.raises(DataError, match=r"column 'timestamp' has 1 infinite or out-of-range values \(first at row 2"):
        prepare("bad", df, config=PrepareConfig(k_core=0, split="temporal"))


def test_min_rating_without_a_rating_column_is_refused_not_ignored():
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"]})
    with pytest.raises(DataError, match=r"min_rating=4 needs a 'rating' column"):
        prepare("bad", df, config=PrepareConfig(k_core=0, min_rating=4))


@pytest.mark.parametrize("config", [PrepareConfig(k_core=0, min_rating=6), PrepareConfig(k_core=3)])
def test_filtering_everything_away_is_a_clear_error(config):
    df = random_frame(0, n=20, n_users=10, n_items=10)
    df["rating"] = 5.0
    df = df.drop_duplicates(["user", "item"]).groupby("user").head(1)  # one interaction per user
    with pytest.raises(DataError, match=r"no interactions left after filtering \(\d+ raw"):
        prepare("gone", df, config=config)
