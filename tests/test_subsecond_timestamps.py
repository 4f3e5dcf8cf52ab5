"""Times within one second keep their order in temporal and leave-one-out splits.

The file loaders cut times to whole seconds (numbers floored, date strings' fractions dropped, Amazon 2023's
milliseconds divided by 1000), so times within a second tied and the split broke the tie at random: a later
item went to training and an earlier one to test. Whole-second data stays int64 (its fingerprint, and every
feature folder and benchmark cell recorded against it, unchanged); fractional times are kept as float seconds.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recgoat.datasets import load
from recgoat.datasets.amazon import load_amazon
from recgoat.datasets.preprocess import PrepareConfig

N_USERS, N_ITEMS = 6, 6


def _held_out(ds, split: str) -> list[set[str]]:
    inter = ds.interactions
    return [set(ds.item_ids[g.item[g.split == split]]) for _, g in inter.groupby("user")]


def _write_generic(folder, times) -> None:
    """Each user saw items 0..5 in that order, ``times[j]`` for item j (in shuffled rows)."""
    rows = [(f"u{u}", str(j), times[j]) for u in range(N_USERS) for j in range(N_ITEMS)]
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).sample(frac=1.0, random_state=0)
    folder.mkdir()
    df.to_csv(folder / "interactions.csv", index=False)


@pytest.mark.parametrize("times", [
    [1000 + 0.1 * j for j in range(N_ITEMS)],  # fractional Unix seconds
    [f"2020-01-01T00:00:00.{j}" for j in range(N_ITEMS)],  # date strings with tenths
], ids=["numbers", "dates"])
@pytest.mark.parametrize("split", ["temporal", "loo"])
def test_the_latest_item_within_one_second_is_held_out(tmp_path, times, split):
    _write_generic(tmp_path / "frac", times)
    ds = load(str(tmp_path / "frac"), PrepareConfig(split=split, k_core=0))
    assert _held_out(ds, "test") == [{"5"}] * N_USERS
    assert _held_out(ds, "valid") == [{"4"}] * N_USERS
    assert ds.interactions["timestamp"].dtype == np.float64


def test_whole_second_times_stay_int64(tmp_path):
    _write_generic(tmp_path / "whole", [1000.0 + j for j in range(N_ITEMS)])  # written as 1000.0, 1001.0, …
    ds = load(str(tmp_path / "whole"), PrepareConfig(split="temporal", k_core=0))
    assert ds.interactions["timestamp"].dtype == np.int64
    assert _held_out(ds, "test") == [{"5"}] * N_USERS


def test_amazon_2023_milliseconds_keep_their_order(tmp_path):
    with open(tmp_path / "Toy.jsonl", "w") as f:
        for u in range(N_USERS):
            for j in range(N_ITEMS):
                f.write(json.dumps({"user_id": f"U{u}", "parent_asin": f"I{j}", "rating": 5.0,
                                    "timestamp": 1_600_000_000_000 + 100 * j}) + "\n")
    ds = load_amazon(tmp_path / "Toy.jsonl", config=PrepareConfig(split="loo", k_core=0))
    assert _held_out(ds, "test") == [{"I5"}] * N_USERS
    assert _held_out(ds, "valid") == [{"I4"}] * N_USERS


def test_fractional_times_survive_save_and_load(tmp_path):
    _write_generic(tmp_path / "frac", [1000 + 0.1 * j for j in range(N_ITEMS)])
    ds = load(str(tmp_path / "frac"), PrepareConfig(split="temporal", k_core=0))
    ds.save(tmp_path / "prepared")
    again = load(str(tmp_path / "prepared"))
    assert again.fingerprint() == ds.fingerprint()
    assert np.array_equal(again.interactions["timestamp"].to_numpy(), ds.interactions["timestamp"].to_numpy())


def _frame(order: list[tuple[str, float]]) -> pd.DataFrame:
    """u0 saw the items of ``order`` at those times; u1..u5 saw items a, b, c a day apart (a 3-core)."""
    rows = [("u0", i, t) for i, t in order]
    rows += [(f"u{u}", i, 1000.0 + 86_400 * k) for u in range(1, 6) for k, i in enumerate("abc")]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def test_the_fingerprint_sees_the_order_within_a_second():
    from recgoat.datasets.preprocess import prepare

    cfg = PrepareConfig(split="none", k_core=0)
    one = prepare("x", _frame([("a", 100.1), ("b", 100.9), ("c", 50.0)]), config=cfg)
    other = prepare("x", _frame([("a", 100.9), ("b", 100.1), ("c", 50.0)]), config=cfg)
    assert one.fingerprint() != other.fingerprint()


def test_the_served_history_is_most_recent_first_within_a_second(tmp_path):
    from recgoat.datasets.preprocess import prepare
    from recgoat.models.base import get_model_class
    from recgoat.serving.artifacts import export_run, load_run

    ds = prepare("x", _frame([("a", 100.9), ("b", 100.2), ("c", 50.5)]), config=PrepareConfig(k_core=0))
    export_run(get_model_class("mostpop").build(ds), ds, tmp_path / "art")
    run = load_run(tmp_path / "art")
    u0 = int(np.flatnonzero(ds.user_ids == "u0")[0])
    assert [str(ds.item_ids[i]) for i in run.recent_history(u0)] == ["a", "b", "c"]
