"""The one-line-per-user layout (LightGCN, NGCF and their forks).

A folder holds ``train.txt``, an optional ``valid.txt`` and ``test.txt``; each line is
``user item item …`` (dense integer ids, whitespace separated). A user with no items in a split may
appear alone on a line. The data is already split, so loading does no filtering: a (user, item) pair
in two splits is refused (see :func:`~recgoat.datasets.mmrec.check_split_overlap`), an item repeated
within one split is kept once (with a warning), and ids must be dense (see
:func:`~recgoat.datasets.mmrec.dense_limit`).
"""
from __future__ import annotations

import warnings
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from recgoat.datasets.dataset import SPLITS, Dataset, folder_name
from recgoat.datasets.mmrec import (MAX_ID, check_dense, check_split_overlap, drop_held_out_without_train,
                                    drop_split_duplicates)
from recgoat.errors import DataError
from recgoat.io import atomic_path

FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
REQUIRED = ("train", "test")


def read_lines_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items) of every pair in one file, plus every user named (even those with no items)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is no id
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot be read: {e}") from None
    # Splitting each line is the one per-line step; the rest works on flat arrays.
    rows = [line.split() for line in text.splitlines()]
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    tokens = pd.Series(list(chain.from_iterable(rows)), dtype=object)
    if len(tokens) == 0:
        raise DataError(path, "file is empty")
    # [0-9], not \d: \d also matches other scripts' digits ("١", "１"), which int() would silently read
    ok = tokens.str.fullmatch(r"[0-9]+").to_numpy(bool)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        line_no = int(np.searchsorted(np.cumsum(lengths), bad, side="right")) + 1
        raise DataError(path, f"malformed line {line_no}: {tokens.iloc[bad]!r} is not a non-negative "
                              f"integer id (expected 'user item item …')")
    # ids beyond int64 would overflow the conversion; anything above 2**53 is no dense id anyway
    long = (tokens.str.len() > 16).to_numpy(bool)
    if long.any():
        big = np.flatnonzero(long)
        big = big[[int(tokens.iloc[i]) > MAX_ID for i in big]]
        if len(big):
            line_no = int(np.searchsorted(np.cumsum(lengths), big[0], side="right")) + 1
            raise DataError(path, f"line {line_no}: id {tokens.iloc[big[0]]} is above 2**53; this layout "
                                  "uses dense ids 0..N-1")
    values = tokens.to_numpy().astype(np.int64)
    nonblank = lengths > 0
    starts = np.r_[0, np.cumsum(lengths)[:-1]][nonblank]
    named_users = values[starts]
    n_items_per_line = lengths[nonblank] - 1
    users = np.repeat(named_users, n_items_per_line)
    is_item = np.ones(len(values), bool)
    is_item[starts] = False
    return users, values[is_item], named_users


def load_lines(folder: str | Path, name: str | None = None) -> Dataset:
    """Read a ``train.txt``/``valid.txt``/``test.txt`` folder into a split :class:`Dataset`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    frames, all_users, paths, named_by_split = [], [], {}, {}
    for split in SPLITS:
        path = folder / FILES[split]
        if not path.exists():
            if split in REQUIRED:
                raise DataError(path, "file not found (the line layout needs train.txt and test.txt)")
            continue
        users, items, named = read_lines_file(path)
        again = named[pd.Series(named).duplicated().to_numpy(bool)]
        if len(again):
            # read together (as LightGCN's reader does), but said: nothing is merged silently
            warnings.warn(f"{path}: {len(np.unique(again))} user(s) on more than one line (first: user {again[0]}); "
                          "their items are read together", UserWarning, stacklevel=2)
        paths[split] = path
        named_by_split[split] = named
        all_users.append(named)
        frames.append(pd.DataFrame({"user": users, "item": items,
                                    "split": np.full(len(users), split, dtype=object)}))
    inter = pd.concat(frames, ignore_index=True)
    if len(inter) == 0:
        raise DataError(folder / FILES["train"], "no interactions in any split")
    inter["split"] = pd.Categorical(inter["split"], categories=list(SPLITS))
    _check_dense_lines(named_by_split, inter, paths)
    inter = drop_split_duplicates(inter, paths)
    check_split_overlap(inter, folder, {s: p.name for s, p in paths.items()})
    n_users = int(max(u.max() for u in all_users)) + 1
    n_items = int(inter["item"].max()) + 1  # before dropping rows: an item only they held keeps its id
    inter = drop_held_out_without_train(inter, folder)
    item_ids = np.arange(n_items).astype(str).astype(object)
    return Dataset(name=name or folder_name(folder), interactions=inter,
                   user_ids=np.arange(n_users).astype(str).astype(object), item_ids=item_ids,
                   items=pd.DataFrame({"item_id": item_ids}), text_fields=[],
                   info={"source": str(folder.resolve()), "layout": "lines"})


def _check_dense_lines(named: dict[str, np.ndarray], inter: pd.DataFrame, paths: dict[str, Path]) -> None:
    """Refuse sparse user or item ids (before ``np.arange(max + 1)``), naming the file holding the max."""
    items = inter["item"].to_numpy()
    item_split = {s: items[(inter["split"] == s).to_numpy(bool)] for s in paths}
    for kind, per_split in (("user", named), ("item", item_split)):
        ids = np.concatenate(list(per_split.values()))
        if len(ids) == 0:
            continue
        top = int(ids.max())
        where = next(s for s, a in per_split.items() if len(a) and int(a.max()) == top)
        check_dense(ids, kind, paths[where])


def save_lines(dataset: Dataset, folder: str | Path) -> Path:
    """Write ``dataset`` as ``train.txt``/``valid.txt``/``test.txt`` with internal ids.

    Items keep time order within a user when timestamps exist. Every user gets a line in
    ``train.txt`` (alone if needed) so that the number of users survives a round trip.
    """
    folder = Path(folder)
    if not dataset.has_split:
        raise DataError(None, f"dataset {dataset.name!r} has no split; the line layout needs one")
    df = dataset.interactions
    order = ["user", "timestamp"] if "timestamp" in df.columns else ["user"]
    df = df.sort_values(order, kind="stable")
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        part = df[df["split"].astype(str) == split]
        if split == "valid" and len(part) == 0:
            # a valid.txt left by an earlier export would be read back as this dataset's validation split
            (folder / FILES[split]).unlink(missing_ok=True)
            continue
        joined = part["item"].astype(str).groupby(part["user"].to_numpy(), sort=True).agg(" ".join)
        if split == "train":
            joined = joined.reindex(np.arange(dataset.n_users), fill_value="")
        users = pd.Series(joined.index.astype(str), index=joined.index)
        lines = (users + np.where(joined.str.len() > 0, " ", "") + joined).tolist()
        with atomic_path(folder / FILES[split]) as tmp:
            tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
    return folder
