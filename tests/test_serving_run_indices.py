"""Serving's Python API: a loaded artefact (:class:`recgoat.serving.Run`) takes the indices the model API takes
(``Run.score`` checked nothing: 2-D users gave a 3-D tensor, negative ones wrapped), and a history table with
missing values is refused by name. Each test failed before its fix."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat.errors import DataError
from recgoat.serving import export_run, load_run
from recgoat.serving.artifacts import sha256_file

from serving_helpers import shop_rows, train_shop

ITEMS = [f"i{i}" for i in range(12)]
USERS = [f"u{u}" for u in range(6)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rows = shop_rows(USERS, ITEMS, t0=100)
    return train_shop(tmp_path_factory.mktemp("qa4") / "shop", rows, ITEMS)


@pytest.fixture(scope="module")
def artefact(trained, tmp_path_factory):
    return export_run(*trained, tmp_path_factory.mktemp("qa4-art") / "artefact")


@pytest.fixture(scope="module")
def run(artefact):
    return load_run(artefact)


# ------------------------------------------------------------------ Run.score: the checks of Recommender.score
@pytest.mark.parametrize("users, error, message", [
    ([[0, 1]], ValueError, r"^users must be a 1-D sequence of user indices, got shape \(1, 2\)$"),
    (3, ValueError, r"^users must be a 1-D sequence of user indices, got shape \(\)(: pass \[user\] for one user)$"),
    ([-1], KeyError, r"unknown user index -1 \(expected 0\.\.5\)"),
    ([6], KeyError, r"unknown user index 6 \(expected 0\.\.5\)"),
    ([0.5], TypeError, r"^users must be integer user indices \(0\.\.5\), got float values"),
    (["u1"], TypeError, r"map raw ids with dataset\.user_index\(raw_id\)$"),
])
def test_run_score_refuses_what_the_model_refuses(run, trained, users, error, message):
    """Run.score([[0, 1]]) was a [1, 2, n_items] tensor, score(3) one row, score([-1]) the last user's scores and
    score([6]) a bare IndexError; Recommender.score refuses each with the same message."""
    model = trained[0]
    with pytest.raises(error, match=message):
        model.score(users)
    with pytest.raises(error, match=message):
        run.score(users)


def test_run_score_matches_the_model_and_takes_items(run, trained):
    model = trained[0]
    users = np.arange(run.n_users)
    assert torch.equal(run.score(users), model.score(users))
    assert torch.equal(run.score(torch.tensor([2, 0])), model.score([2, 0]))
    assert run.score([]).shape == (0, run.n_items)
    torch.testing.assert_close(run.score([1, 3], [5, 0]), model.score([1, 3], [5, 0]))
    with pytest.raises(KeyError, match=r"unknown item index -2 \(expected 0\.\.11\)"):
        run.score([0], [-2])


# ------------------------------------------------------------------ seen items, history and images by index
def test_seen_items_recent_history_and_image_ref_refuse_indices_out_of_range(run, trained):
    """seen_items(-1) read an empty row (the indptr slice [n:0]), seen_items(n_users) raised a bare IndexError,
    recent_history(u, -2) cut the two oldest items off instead of refusing, image_ref(-1) was the last item's."""
    every = trained[1].csr(None)  # export's default seen="all": every split's interactions
    for u in range(run.n_users):
        assert sorted(run.seen_items(u).tolist()) == sorted(every[u].indices.tolist())
    for bad in (-1, run.n_users):
        with pytest.raises(KeyError, match=rf"unknown user index {bad}"):
            run.seen_items(bad)
        with pytest.raises(KeyError, match=rf"unknown user index {bad}"):
            run.recent_history(bad)
    with pytest.raises(TypeError, match=r"user must be an integer user index"):
        run.seen_items("u1")
    with pytest.raises(ValueError, match=r"^n must be an integer >= 0, got int -2$"):
        run.recent_history(0, -2)
    assert run.recent_history(0, 0).tolist() == []
    assert run.recent_history(0, 3).tolist() == run.seen_items(0)[::-1][:3].tolist()
    with pytest.raises(KeyError, match=r"unknown item index -1"):
        run.image_ref(-1)
    assert run.image_ref(0) is None  # the shop has no images


# ------------------------------------------------------------------ history with missing values
def _rehash(folder) -> None:
    """Rewrite the manifest's checksums, as a folder edited by another tool would carry them."""
    meta = json.loads((folder / "artifact.json").read_text())
    meta["files"] = {rel: sha256_file(folder / rel) for rel in meta["files"]}
    (folder / "artifact.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("column", ["user", "item", "timestamp"])
def test_a_history_with_missing_values_is_refused_by_name(artefact, tmp_path, column):
    """A nullable integer column (Int64) passed the integer check: a missing user or item was pandas' bare
    "cannot convert to 'int64'-dtype NumPy array" ValueError, a missing time loaded and sorted the history anyhow."""
    folder = tmp_path / "art"
    shutil.copytree(artefact, folder)
    history = pd.read_parquet(folder / "history.parquet")
    history[column] = history[column].astype("Int64")
    history.loc[0, column] = pd.NA
    history.to_parquet(folder / "history.parquet", index=False)
    _rehash(folder)
    with pytest.raises(DataError, match=rf"history\.parquet: unreadable or malformed \(ValueError: column {column} "
                                        rf"has 1 missing value\(s\)\); re-export the run$"):
        load_run(folder)
    # a nullable column without missing values is read as before
    history[column] = history[column].fillna(0)
    history.to_parquet(folder / "history.parquet", index=False)
    _rehash(folder)
    assert load_run(folder).history[column].dtype == np.int64
