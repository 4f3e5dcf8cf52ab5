"""Preprocessing and splitting on hand-made frames, and the Dataset container's own behaviour."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import Dataset, PrepareConfig, prepare
from recgoat.datasets.preprocess import assign_split, deduplicate, filter_rating, k_core, remap
from recgoat.errors import DataError
from recgoat.io import read_json


def raw_frame(n_users: int = 60, seed: int = 0, lo: int = 5, hi: int = 60, n_items: int = 200) -> pd.DataFrame:
    """Users with lo..hi-1 interactions each on distinct items, distinct timestamps, original str ids."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(lo, hi, n_users)
    users = np.repeat(np.arange(n_users), counts)
    items = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts])
    return pd.DataFrame({
        "user": "u" + pd.Series(users).astype(str),
        "item": "i" + pd.Series(items).astype(str),
        "rating": rng.integers(1, 6, len(users)).astype(np.float32),
        "timestamp": rng.permutation(len(users)).astype(np.int64) * 10 + 1_000_000,
    })


def split_of(df: pd.DataFrame, how: str = "random", seed: int = 1) -> pd.Series:
    dense = df.assign(user=pd.factorize(df["user"])[0])
    return assign_split(dense, how, seed=seed)


# ---------------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("how", ["random", "temporal", "loo"])
def test_split_disjoint_and_covering(how):
    df = raw_frame()
    ds = prepare("t", df, config=PrepareConfig(k_core=0, split=how))
    s = ds.interactions["split"]
    assert s.notna().all() and set(s.unique()) == {"train", "valid", "test"}
    assert len(ds.interactions) == len(df)  # nothing lost, nothing added
    pairs = {name: set(zip(g["user"], g["item"])) for name, g in ds.interactions.groupby("split", observed=True)}
    assert not (pairs["train"] & pairs["valid"]) and not (pairs["train"] & pairs["test"])
    assert not (pairs["valid"] & pairs["test"])
    assert sum(map(len, pairs.values())) == len(df)


def test_random_split_reproducible_and_seeded():
    df = raw_frame()
    a, b, c = split_of(df, seed=7), split_of(df, seed=7), split_of(df, seed=8)
    assert (a == b).all()
    assert (a != c).mean() > 0.1
    # the same counts per user whatever the seed: only which interactions go where changes
    per = lambda s: pd.crosstab(df["user"], s)  # noqa: E731
    pd.testing.assert_frame_equal(per(a), per(c))


def test_random_split_8_1_1_per_user_and_overall():
    df = raw_frame(n_users=300, lo=10, hi=80)
    s = split_of(df)
    table = pd.crosstab(df["user"], s)
    n = table.sum(axis=1)
    for name, ratio in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        assert (np.abs(table[name] - ratio * n) <= 1).all(), name
        assert abs(table[name].sum() / len(df) - ratio) < 0.01, name


def test_random_split_small_users_get_one_valid_one_test():
    # MMRec: users with fewer than 10 interactions keep n-2 for training
    df = raw_frame(n_users=50, lo=3, hi=10)
    table = pd.crosstab(df["user"], split_of(df))
    assert (table["valid"] == 1).all() and (table["test"] == 1).all()
    assert (table["train"] == table.sum(axis=1) - 2).all()
    # too small to hold anything out for validation: train first, then test
    tiny = pd.DataFrame({"user": [0, 1, 1], "item": [0, 0, 1]})
    labels = assign_split(tiny, "random")
    assert labels.iloc[0] == "train" and sorted(labels.iloc[1:]) == ["test", "train"]


def test_temporal_split_puts_later_interactions_in_test():
    df = raw_frame()
    ds = prepare("t", df, config=PrepareConfig(k_core=0, split="temporal"))
    g = ds.interactions.groupby(["user", "split"], observed=True)["timestamp"]
    lo, hi = g.min().unstack(), g.max().unstack()
    assert (hi["train"] < lo["valid"]).all() and (hi["valid"] < lo["test"]).all()


def test_temporal_split_needs_timestamps():
    with pytest.raises(DataError, match="temporal split needs a timestamp"):
        assign_split(pd.DataFrame({"user": [0, 0], "item": [0, 1]}), "temporal")


def test_leave_one_out():
    df = raw_frame(n_users=40, lo=1, hi=8)
    dense = df.assign(user=pd.factorize(df["user"])[0])
    s = assign_split(dense, "loo")
    table = pd.crosstab(dense["user"], s).reindex(columns=["train", "valid", "test"], fill_value=0)
    n = table.sum(axis=1)
    eligible = n >= 3
    assert eligible.any() and (~eligible).any()
    assert (table.loc[eligible, "test"] == 1).all() and (table.loc[eligible, "valid"] == 1).all()
    assert (table.loc[~eligible, "train"] == n[~eligible]).all()
    # the test interaction is the user's latest, validation the one before
    latest = dense.assign(split=s).sort_values("timestamp").groupby("user").tail(2)
    latest = latest[latest["user"].isin(n.index[eligible])]
    assert (latest.groupby("user")["split"].agg(list).map(tuple) == ("valid", "test")).all()


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        assign_split(pd.DataFrame({"user": [0], "item": [0]}), "weekly")


# ---------------------------------------------------------------------------------------- filters
def test_k_core_cascades_until_stable():
    df = pd.DataFrame({"user": ["u1", "u1", "u2", "u2", "u3", "u3", "u4"],
                       "item": ["i1", "i2", "i1", "i2", "i2", "i3", "i3"]})
    # u4 goes (1 interaction) → i3 falls to 1 → u3 falls to 1 → only u1, u2 × i1, i2 remain
    out = k_core(df, 2)
    assert sorted(zip(out["user"], out["item"])) == [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2")]
    assert k_core(df, 1).equals(df) and k_core(df, 0).equals(df)


def test_k_core_property_on_random_frame():
    df = raw_frame(n_users=80, lo=2, hi=12, n_items=40)
    out = k_core(df, 5)
    assert 0 < len(out) < len(df)
    assert out["user"].value_counts().min() >= 5 and out["item"].value_counts().min() >= 5


def test_deduplicate_keeps_latest():
    df = pd.DataFrame({"user": ["a", "a", "a", "b"], "item": ["x", "x", "y", "x"],
                       "rating": [5.0, 1.0, 3.0, 4.0], "timestamp": [300, 100, 200, 50]})
    out = deduplicate(df).set_index(["user", "item"])
    assert len(out) == 3
    assert out.loc[("a", "x"), "rating"] == 5.0 and out.loc[("a", "x"), "timestamp"] == 300


def test_min_rating_threshold():
    df = raw_frame()
    out = filter_rating(df, 4)
    assert len(out) == (df["rating"] >= 4).sum() and out["rating"].min() == 4
    assert filter_rating(df, None) is df
    ds = prepare("t", df, config=PrepareConfig(min_rating=4, k_core=0))
    assert ds.info["prepare"]["raw_interactions"] == len(df)
    assert len(ds.interactions) == (df["rating"] >= 4).sum()


def test_prepare_remaps_densely_and_aligns_items():
    df = raw_frame(n_users=30)
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(200)] + ["unused"],
                          "title": [f"Title {j}" for j in range(200)] + ["Nobody"]})
    ds = prepare("t", df, items, ["title"], PrepareConfig(k_core=3))
    inter = ds.interactions
    assert sorted(inter["user"].unique()) == list(range(ds.n_users))
    assert sorted(inter["item"].unique()) == list(range(ds.n_items))
    assert ds.items["item_id"].tolist() == list(ds.item_ids)
    j = int(inter["item"].iloc[0])
    assert ds.items["title"].iloc[j] == "Title " + ds.item_ids[j][1:]
    # original ids survive the mapping
    back = set(zip(ds.user_ids[inter["user"]], ds.item_ids[inter["item"]]))
    assert back <= set(zip(df["user"], df["item"]))


def test_prepare_raises_when_everything_is_filtered():
    df = pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"]})
    with pytest.raises(DataError, match="no interactions left after filtering"):
        prepare("t", df, config=PrepareConfig(k_core=5))


def test_remap_keep_all_items():
    df = pd.DataFrame({"user": ["a"], "item": ["x"]})
    items = pd.DataFrame({"item_id": ["x", "z"], "title": ["X", "Z"]})
    _, _, item_ids, aligned = remap(df, items, keep_all_items=True)
    assert list(item_ids) == ["x", "z"] and aligned["title"].tolist() == ["X", "Z"]


# ---------------------------------------------------------------------------------------- Dataset
def hand_dataset() -> Dataset:
    inter = pd.DataFrame({
        "user": [0, 0, 0, 1, 1, 2], "item": [0, 1, 1, 2, 0, 3],
        "rating": np.float32([5, 3, 4, 2, 1, 4]), "timestamp": [1, 2, 3, 4, 5, 6],
        "split": pd.Categorical(["train", "train", "train", "test", "valid", "train"],
                                categories=["train", "valid", "test"]),
    })
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "title": ["A", "B", None, "D"],
                          "genres": ["x|y", None, "z", None], "image": [None, "b.jpg", None, None]})
    return Dataset("hand", inter, np.array(["u0", "u1", "u2"], object), np.array(["a", "b", "c", "d"], object),
                   items, ["title", "genres"], {"source": "test"})


def test_stats_on_hand_made_dataset():
    s = hand_dataset().stats()
    assert s["users"] == 3 and s["items"] == 4 and s["interactions"] == 6
    assert s["sparsity"] == pytest.approx(1 - 6 / 12)
    assert s["has_rating"] and s["has_timestamp"] and s["images"] == 1
    assert s["split"] == {"train": 4, "valid": 1, "test": 1}
    assert s["text_fields"] == ["title", "genres"]


def test_csr_shape_and_values():
    ds = hand_dataset()
    m = ds.csr("train")
    assert m.shape == (3, 4)
    # (0, 1) appears twice: binary matrix clips to 1
    np.testing.assert_array_equal(m.toarray(), [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    w = ds.csr("train", weight="rating").toarray()
    assert w[0, 1] == 7 and w[0, 0] == 5 and w[2, 3] == 4  # weights of duplicates are summed
    assert ds.csr(None).nnz == 5
    assert ds.csr("test").toarray()[1, 2] == 1 and ds.csr("test").nnz == 1
    with pytest.raises(ValueError, match="unknown split"):
        ds.csr("holdout")


def test_item_texts_and_lookups():
    ds = hand_dataset()
    texts = ds.item_texts()
    assert texts[0] == "title: A\ngenres: x, y" and texts[1] == "title: B" and texts[2] == "genres: z"
    assert ds.user_index("u2") == 2 and ds.item_index("c") == 2
    with pytest.raises(KeyError):
        ds.item_index("nope")


def test_dataset_save_load_round_trip(tmp_path):
    ds = prepare("rt", raw_frame(n_users=30), config=PrepareConfig(k_core=2))
    ds.save(tmp_path / "rt")
    back = Dataset.load(tmp_path / "rt")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    assert list(back.user_ids) == list(ds.user_ids) and list(back.item_ids) == list(ds.item_ids)
    assert back.info == ds.info and back.text_fields == ds.text_fields
    manifest = read_json(tmp_path / "rt" / "manifest.json")
    assert back.fingerprint() == ds.fingerprint() == manifest["fingerprint"]
    assert manifest["stats"]["interactions"] == len(ds.interactions)


def test_fingerprint_changes_with_data(tmp_path):
    ds = hand_dataset()
    before = ds.fingerprint()
    ds.interactions.loc[0, "rating"] = 1.0
    assert ds.fingerprint() != before
    other = hand_dataset()
    other.items.loc[0, "title"] = "changed"
    assert other.fingerprint() != before


def test_dataset_load_errors(tmp_path):
    with pytest.raises(DataError, match="no manifest.json"):
        Dataset.load(tmp_path)
    hand_dataset().save(tmp_path / "h")
    manifest = tmp_path / "h" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(DataError, match="format version 99"):
        Dataset.load(tmp_path / "h")


def test_split_frame_without_split():
    ds = hand_dataset()
    ds.interactions = ds.interactions.drop(columns="split")
    with pytest.raises(DataError, match="has no train/valid/test split"):
        ds.split_frame("train")


def test_fingerprint_ignores_storage_dtypes():
    """Caches must not look stale because pandas stores the same values differently (object vs ``str``
    strings, float32 vs float64 ratings, categorical vs plain split labels): this once broke CI."""
    ds = hand_dataset()
    before = ds.fingerprint()
    ds.items = ds.items.astype(object)
    ds.interactions = ds.interactions.astype({"rating": "float64", "split": str})
    assert ds.fingerprint() == before
    ds.items = ds.items.astype("string")
    ds.interactions = ds.interactions.astype({"rating": "float32", "split": "category"})
    assert ds.fingerprint() == before
