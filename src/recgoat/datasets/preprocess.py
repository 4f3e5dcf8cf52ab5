"""Preprocessing and splitting, all vectorised and seeded.

Raw interactions (original ids) → rating threshold → deduplication → iterative k-core → id remapping
→ per-user split (random 8:1:1 as MMRec, temporal, or leave-one-out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from recgoat.datasets.dataset import Dataset
from recgoat.datasets.generic import id_strings
from recgoat.errors import ConfigError, DataError
from recgoat.words import plural
from recgoat.strict import is_int, is_real

SPLIT_METHODS = ("random", "temporal", "loo", "none")
#: why ``split: none`` cannot serve a training run (the run config and the benchmark say it alike)
NO_HELD_OUT = "none leaves no validation and test split to select and evaluate on"


@dataclass
class PrepareConfig:
    """How raw interactions become a split dataset.

    Values are checked on construction (and again by :func:`prepare`), so a bad ``--split`` or
    ``data.k_core`` is one :class:`ConfigError` naming the option, not a traceback from numpy later.
    """

    min_rating: float | None = None  # keep ratings >= this (implicit feedback); None keeps all
    # keep one interaction per (user, item): the latest when timestamps exist; off, a pair's repeats are
    # kept and all go to one split, and k_core counts them as interactions (a user with one item reviewed
    # five times passes a 5-core)
    dedup: bool = True
    k_core: int = 5  # iteratively drop users and items with fewer interactions (0 or 1 disables)
    split: str = "random"  # random | temporal | loo | none
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2026

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a :class:`ConfigError` naming the first invalid option (values are left unchanged)."""
        if self.split not in SPLIT_METHODS:
            raise ConfigError(f"unknown split {self.split!r}; expected random, temporal, loo or none")
        if not is_int(self.k_core) or self.k_core < 0:
            raise ConfigError(f"k_core must be an integer >= 0 (0 or 1 disables it), got {self.k_core!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.min_rating is not None and not (is_real(self.min_rating) and math.isfinite(self.min_rating)):
            raise ConfigError(f"min_rating must be a number or None, got {self.min_rating!r}")
        if not isinstance(self.dedup, (bool, np.bool_)):
            raise ConfigError(f"dedup must be true or false, got {self.dedup!r}")
        if not ratios_ok(self.ratios):
            raise ConfigError(f"{RATIOS_RULE}, got {self.ratios!r}")


RATIOS_RULE = ("ratios must be 3 non-negative numbers (train, valid, test) summing to 1 with a positive "
               "train share")


def ratios_ok(r) -> bool:
    """Whether ``r`` splits every interaction (:data:`RATIOS_RULE`); shares that do not sum to 1 would be
    read silently as some other split."""
    return (isinstance(r, (tuple, list)) and len(r) == 3
            and all(is_real(x) and math.isfinite(x) and x >= 0 for x in r)
            and r[0] > 0 and abs(sum(r) - 1.0) <= 1e-6)


def filter_rating(df: pd.DataFrame, min_rating: float | None) -> pd.DataFrame:
    if min_rating is None or "rating" not in df.columns:
        return df
    return df[df["rating"] >= min_rating]


def deduplicate(df: pd.DataFrame) -> pd.DataFrame:
    if "timestamp" in df.columns:
        df = df.sort_values("timestamp", kind="stable")
    return df.drop_duplicates(["user", "item"], keep="last")


def k_core(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than ``k`` interactions until none is left to drop."""
    if k <= 1:
        return df
    while True:
        # as floats: mapped through a categorical id column the counts came out categorical, and comparing
        # them with k raised a TypeError
        uc = df["user"].map(df["user"].value_counts()).astype(np.float64)
        ic = df["item"].map(df["item"].value_counts()).astype(np.float64)
        keep = (uc >= k) & (ic >= k)
        if keep.all():
            return df
        df = df[keep]


#: the steps whose removals :func:`prepare` records in ``info["prepare"]["removed"]``, in pipeline order
#: (``unused_items``: rows of the item table that no raw interaction names, left out of the dataset)
REMOVAL_STEPS = ("min_rating", "dedup", "k_core", "unused_items")


def _sizes(df: pd.DataFrame) -> dict[str, int]:
    """Distinct users and items and the interactions of ``df``: what a step's removals are counted against."""
    return {"users": int(df["user"].nunique()), "items": int(df["item"].nunique()), "interactions": len(df)}


def _minus(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: before[k] - after[k] for k in before}


def removal_lines(info: dict[str, Any] | None) -> list[str]:
    """One line per preparation step that removed something, as recorded by :func:`prepare` (e.g. "k-core 5
    removed 12 users, 340 items, 1,020 interactions"); none for a dataset whose preparation recorded no counts
    (an older prepared folder, one split elsewhere). Without them a catalogue that shrank did not say why."""
    prep = (info or {}).get("prepare")
    removed = prep.get("removed") if isinstance(prep, dict) else None
    if not isinstance(removed, dict):
        return []
    lines = []
    for step in REMOVAL_STEPS:
        counts = removed.get(step)
        if not isinstance(counts, dict):
            continue
        parts = [plural(n, what[:-1]) for what in ("users", "items", "interactions")
                 if isinstance(n := counts.get(what), int) and n > 0]
        if not parts:
            continue
        if step == "min_rating":
            threshold = prep.get("min_rating")
            shown = f"{threshold:g}" if is_real(threshold) else threshold  # 4.0 as typed: 4
            lines.append(f"min_rating {shown} removed {', '.join(parts)}")
        elif step == "dedup":  # repeats of a (user, item) pair: only interactions go
            lines.append(f"dedup merged {plural(counts['interactions'], 'duplicate interaction')}")
        elif step == "k_core":
            lines.append(f"k-core {prep.get('k_core')} removed {', '.join(parts)}")
        else:
            n = counts["items"]  # the one count this step records
            lines.append(f"{parts[0]} of the item table had no interactions and {'was' if n == 1 else 'were'} "
                         f"left out")
    return lines


def remap(df: pd.DataFrame, items: pd.DataFrame | None, keep_all_items: bool = False):
    """Dense internal ids. Returns (interactions, user_ids, item_ids, items aligned to internal ids)."""
    # id_strings as the loaders: astype(str) made an item table's float id 7.0 "7.0", matching no item "7"
    user_ids, u_idx = np.unique(id_strings(df["user"]).to_numpy(object), return_inverse=True)
    item_strs = id_strings(df["item"]).to_numpy(object)
    if keep_all_items and items is not None:
        item_ids = np.unique(np.concatenate([id_strings(items["item_id"]).to_numpy(object), item_strs]))
    else:
        item_ids = np.unique(item_strs)
    i_idx = np.searchsorted(item_ids, item_strs)
    out = df.copy()
    out["user"] = u_idx.astype(np.int64)
    out["item"] = i_idx.astype(np.int64)
    aligned = None
    if items is not None:
        meta = items.copy()
        meta["item_id"] = id_strings(meta["item_id"])
        meta = meta.drop_duplicates("item_id").set_index("item_id")
        aligned = meta.reindex(item_ids).reset_index().rename(columns={"index": "item_id"})
    return out.reset_index(drop=True), user_ids.astype(object), item_ids.astype(object), aligned


def _rank_within_user(users: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its 0-based rank inside its user's rows (ordered by ``keys``, the first deciding and
    the others breaking ties) and the user's count."""
    order = np.lexsort((*reversed(keys), users))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts_per_group = np.diff(np.r_[starts, len(users)])
    group_start = np.repeat(starts, counts_per_group)
    rank = np.empty(len(users), np.int64)
    rank[order] = np.arange(len(users)) - group_start
    count = np.empty(len(users), np.int64)
    count[order] = np.repeat(counts_per_group, counts_per_group)
    return rank, count


def assign_split(df: pd.DataFrame, how: str, ratios=(0.8, 0.1, 0.1), seed: int = 2026) -> pd.Series:
    """Per-user split labels.

    ``random``: each user's interactions are shuffled and cut 8:1:1 (MMRec's protocol: users with
    fewer than 10 give exactly one valid and one test; training keeps at least one interaction).
    ``temporal``: the same cut in time order (latest → test).
    ``loo``: the latest (or a random one without timestamps) → test, the one before → valid.
    """
    users = df["user"].to_numpy()
    rng = np.random.default_rng(seed)
    if how == "random":
        keys: tuple[np.ndarray, ...] = (rng.random(len(df)),)
    elif how in ("temporal", "loo"):
        if "timestamp" not in df.columns:
            if how == "temporal":
                raise DataError(None, "a temporal split needs a timestamp column")
            keys = (rng.random(len(df)),)
        else:
            # ties broken at random but reproducibly. The exact times order first: summed with the noise as
            # float64 alone, times a few nanoseconds apart (1e18) collapsed and could come out reversed.
            noisy = df["timestamp"].to_numpy(np.float64) + rng.random(len(df)) * 1e-3
            ts = df["timestamp"].to_numpy()
            keys = (noisy if ts.dtype == object else ts, noisy)
    else:
        raise ValueError(f"unknown split {how!r}; expected random, temporal or loo")
    rank, count = _rank_within_user(users, *keys)
    labels = np.full(len(df), "train", dtype=object)
    if how == "loo":
        labels[(rank == count - 1) & (count >= 3)] = "test"
        labels[(rank == count - 2) & (count >= 3)] = "valid"
    else:
        # MMRec's rule: hold out floor(20%) shared valid/test (valid gets the smaller half); users too
        # small for that still give one valid and one test item, keeping at least one for training.
        r_train, r_valid, r_test = ratios
        held = np.floor(count * (1.0 - r_train) + 1e-9).astype(np.int64)
        n_valid = np.floor(held * (r_valid / max(r_valid + r_test, 1e-12)) + 1e-9).astype(np.int64)
        n_test = held - n_valid
        if r_test > 0:
            n_test = np.minimum(np.maximum(n_test, 1), count - 1)
        if r_valid > 0:
            n_valid = np.maximum(n_valid, 1)
        n_valid = np.clip(n_valid, 0, count - 1 - n_test)
        n_train = count - n_valid - n_test
        labels[(rank >= n_train) & (rank < n_train + n_valid)] = "valid"
        labels[rank >= n_train + n_valid] = "test"
    return pd.Series(pd.Categorical(labels, categories=["train", "valid", "test"]), index=df.index)


def split_pairs(df: pd.DataFrame, how: str, ratios=(0.8, 0.1, 0.1), seed: int = 2026) -> pd.Series:
    """:func:`assign_split` over (user, item) pairs (internal int ids): the repeats of a pair, kept when
    deduplication is off, all go to the split of its latest interaction. Split row by row, a pair could be
    trained on and held out at once, and the masked evaluation could never count it."""
    uniq = deduplicate(df)
    if len(uniq) == len(df):
        return assign_split(df, how, ratios, seed)
    labels = assign_split(uniq, how, ratios, seed)
    n_items = int(df["item"].max()) + 1
    pair = df["user"].to_numpy(np.int64) * n_items + df["item"].to_numpy(np.int64)
    upair = uniq["user"].to_numpy(np.int64) * n_items + uniq["item"].to_numpy(np.int64)
    codes = pd.Series(labels.cat.codes.to_numpy(), index=upair).reindex(pair).to_numpy()
    return pd.Series(pd.Categorical.from_codes(codes, categories=labels.cat.categories), index=df.index)


def check_raw(df: pd.DataFrame, where: str) -> None:
    """DataError for a raw frame the loaders would have refused: frames built in Python skip their checks,
    and failed later with a raw KeyError or TypeError (a missing id sorted against strings)."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(where, f"interactions must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("user", "item") if c not in df.columns]
    if missing:
        raise DataError(where, f"interactions lack column(s) {', '.join(missing)}; columns are {list(df.columns)}")
    for col in ("user", "item"):
        empty = df[col].isna().to_numpy(bool)
        if empty.any():
            raise DataError(where, f"{plural(int(empty.sum()), 'interaction has', 'interactions have')} no {col} id "
                                   f"(first at row {int(np.flatnonzero(empty)[0]) + 1})")
    if "rating" in df.columns:
        r = df["rating"]
        if not pd.api.types.is_numeric_dtype(r.dtype) or not np.isfinite(r.to_numpy(np.float64, na_value=np.nan)).all():
            raise DataError(where, f"column 'rating' must hold finite numbers (dtype {r.dtype}); convert it, e.g. "
                                   "with pd.to_numeric")
    if "timestamp" in df.columns:
        t = df["timestamp"]
        ok = pd.api.types.is_datetime64_any_dtype(t.dtype) or pd.api.types.is_numeric_dtype(t.dtype)
        if not ok or t.isna().any():
            raise DataError(where, f"column 'timestamp' must hold numbers or datetimes, none missing (dtype "
                                   f"{t.dtype}); convert it, e.g. with pd.to_numeric or pd.to_datetime")
        if pd.api.types.is_float_dtype(t.dtype):
            # as the loaders refuse them: inf or beyond int64 all wrapped to -2**63 in the fingerprint's cast
            far = ~(np.abs(t.to_numpy(np.float64)) < 2.0 ** 63)
            if far.any():
                raise DataError(where, f"column 'timestamp' has {int(far.sum())} infinite or out-of-range values "
                                       f"(first at row {int(np.flatnonzero(far)[0]) + 1})")


def check_items(items: pd.DataFrame, where: str) -> None:
    """DataError for an item table built in Python that :func:`~recgoat.datasets.generic.read_items` would have
    refused: without ``item_id`` it was a raw KeyError, and of two rows for one id (7 and "7") the first was
    silently kept."""
    if not isinstance(items, pd.DataFrame) or "item_id" not in items.columns:
        cols = list(items.columns) if isinstance(items, pd.DataFrame) else type(items).__name__
        raise DataError(where, f"the item table needs an 'item_id' column; got {cols}")
    empty = items["item_id"].isna().to_numpy(bool)
    if empty.any():
        raise DataError(where, f"the item table has {plural(int(empty.sum()), 'row', 'rows')} with no item_id "
                               f"(first at row {int(np.flatnonzero(empty)[0]) + 1})")
    ids = id_strings(items["item_id"])
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        dups = plural(len(dup), "duplicated item id", "duplicated item ids")
        raise DataError(where, f"the item table has {dups} (e.g. {dup[0]!r}); each item "
                               "needs exactly one row")


def prepare(
    name: str,
    interactions: pd.DataFrame,
    items: pd.DataFrame | None = None,
    text_fields: list[str] | None = None,
    config: PrepareConfig | None = None,
    info: dict | None = None,
) -> Dataset:
    """Turn raw interactions (original ids in ``user``/``item``) into a split :class:`Dataset`."""
    cfg = config or PrepareConfig()
    cfg.validate()  # fields may have been assigned after construction
    # errors about the data name where it came from: the file or folder, else the dataset's name
    where = (info or {}).get("source") or f"dataset {name!r}"
    df = interactions
    check_raw(df, where)
    n_raw = len(df)
    if cfg.split == "temporal" and "timestamp" not in df.columns:
        raise DataError(where, "a temporal split needs a timestamp column")
    if cfg.min_rating is not None and "rating" not in df.columns:
        # filter_rating would keep every interaction: the threshold asked for was silently not applied
        raise DataError(where, f"min_rating={cfg.min_rating} needs a 'rating' column; the interactions have "
                               f"only {list(df.columns)}")
    # ids as the strings remap gives them, before deduplication and k-core count them: 1 and "1" were two
    # users there but one after remapping (its pairs then repeated despite dedup)
    df = df.assign(user=id_strings(df["user"]), item=id_strings(df["item"]))
    if items is not None:
        check_items(items, where)
    # what each step removes is recorded (not fingerprinted: info is not hashed) and shown by the CLI: a
    # catalogue that shrank silently could not be told from a loader bug
    removed: dict[str, dict[str, int]] = {}
    # items no raw interaction names (those only filtered interactions name count with the step)
    n_unused = None if items is None else int((~id_strings(items["item_id"]).isin(df["item"])).sum())
    steps: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame]]] = []
    if cfg.min_rating is not None:
        steps.append(("min_rating", lambda d: filter_rating(d, cfg.min_rating)))
    if cfg.dedup:
        steps.append(("dedup", deduplicate))
    if cfg.k_core > 1:
        steps.append(("k_core", lambda d: k_core(d, cfg.k_core)))
    before = _sizes(df)
    for step, apply in steps:
        df = apply(df)
        after = _sizes(df)
        removed[step] = _minus(before, after)
        before = after
    if n_unused is not None:
        removed["unused_items"] = {"users": 0, "items": n_unused, "interactions": 0}
    meta = dict(info or {})
    meta["prepare"] = {"min_rating": cfg.min_rating, "dedup": cfg.dedup, "k_core": cfg.k_core,
                       "split": cfg.split, "ratios": list(cfg.ratios), "seed": cfg.seed,
                       "raw_interactions": n_raw, "removed": removed}
    if len(df) == 0:
        why = "; ".join(removal_lines(meta))
        raise DataError(where, f"no interactions left after filtering ({n_raw} raw, k_core={cfg.k_core}, "
                              f"min_rating={cfg.min_rating}{': ' + why if why else ''})")
    df, user_ids, item_ids, aligned = remap(df, items)
    if cfg.split != "none":
        df["split"] = split_pairs(df, cfg.split, cfg.ratios, cfg.seed)
    df = df.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
    return Dataset(name=name, interactions=df, user_ids=user_ids, item_ids=item_ids, items=aligned,
                   text_fields=list(text_fields or []), info=meta)
