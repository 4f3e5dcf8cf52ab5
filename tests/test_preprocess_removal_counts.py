"""Preparation says what it removed: users, items and interactions dropped by ``min_rating``, dedup and the
k-core filter, and items of the item table that no interaction names, were counted nowhere, so a catalogue
that shrank could not say why. Counts are checked against hand-computed values on small data."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recgoat.cli import app
from recgoat.datasets import Dataset, PrepareConfig, prepare
from recgoat.errors import DataError

runner = CliRunner()

# (user, item, rating, timestamp). By hand, with min_rating=3 and k_core=2:
#   raw: users a b c d, items x y z w, 8 interactions
#   min_rating 3 drops a-z (1) and c-x (2): user c and item z go -> 1 user, 1 item, 2 interactions
#   dedup merges b-y's two rows -> 1 interaction
#   k-core 2 drops d-w (d and w have one interaction each) -> 1 user, 1 item, 1 interaction
#   left: a-x a-y b-x b-y (2 users, 2 items, 4 interactions)
ROWS = [("a", "x", 5.0, 1), ("a", "y", 4.0, 2), ("a", "z", 1.0, 3),
        ("b", "x", 5.0, 4), ("b", "y", 3.0, 5), ("b", "y", 5.0, 6),
        ("c", "x", 2.0, 7),
        ("d", "w", 5.0, 8)]
ITEMS = ["x", "y", "z", "w", "v", "u"]  # v and u: in the item table, in no interaction
EXPECTED = {
    "min_rating": {"users": 1, "items": 1, "interactions": 2},
    "dedup": {"users": 0, "items": 0, "interactions": 1},
    "k_core": {"users": 1, "items": 1, "interactions": 1},
    "unused_items": {"users": 0, "items": 2, "interactions": 0},
}
LINES = ["min_rating 3 removed 1 user, 1 item, 2 interactions",
         "dedup merged 1 duplicate interaction",
         "k-core 2 removed 1 user, 1 item, 1 interaction",
         "2 items of the item table had no interactions and were left out"]


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    inter = pd.DataFrame(ROWS, columns=["user", "item", "rating", "timestamp"])
    return inter, pd.DataFrame({"item_id": ITEMS, "title": [f"t {i}" for i in ITEMS]})


def _folder(root: Path) -> Path:
    """The same data as a generic dataset folder, for the command line."""
    root.mkdir()
    inter, items = _frames()
    inter.rename(columns={"user": "user_id", "item": "item_id"}).to_csv(root / "interactions.csv", index=False)
    items.to_csv(root / "items.csv", index=False)
    return root


def _prepared() -> Dataset:
    inter, items = _frames()
    return prepare("toy", inter, items, ["title"], PrepareConfig(min_rating=3, k_core=2, split="none"))


def test_prepare_records_what_each_step_removed():
    ds = _prepared()
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 2, 4)
    assert ds.info["prepare"]["removed"] == EXPECTED
    assert ds.info["prepare"]["raw_interactions"] == 8  # the existing field is kept


def test_steps_that_did_not_run_are_not_recorded_and_counts_are_plain_ints():
    """Steps switched off record nothing (not a misleading 0); the counts are ints, as JSON writes them."""
    inter, _ = _frames()
    ds = prepare("toy", inter, config=PrepareConfig(dedup=False, k_core=0, split="none"))
    assert ds.info["prepare"]["removed"] == {}
    removed = _prepared().info["prepare"]["removed"]
    assert all(type(n) is int for counts in removed.values() for n in counts.values())


def test_removal_counts_do_not_change_the_fingerprint():
    """``info`` is not hashed: recording the counts leaves caches and run folders keyed on the data valid."""
    ds = _prepared()
    bare = Dataset(name=ds.name, interactions=ds.interactions, user_ids=ds.user_ids, item_ids=ds.item_ids,
                   items=ds.items, text_fields=ds.text_fields, info={})
    assert bare.fingerprint() == ds.fingerprint()


def test_removal_lines_one_per_step_that_removed_something():
    from recgoat.datasets.preprocess import removal_lines

    assert removal_lines(_prepared().info) == LINES
    # nothing removed: no line; no counts recorded (an older folder, data split elsewhere): no line either
    inter, _ = _frames()
    assert removal_lines(prepare("toy", inter, config=PrepareConfig(k_core=0, split="none")).info) == [
        "dedup merged 1 duplicate interaction"]
    assert removal_lines(prepare("toy", inter.iloc[:5], config=PrepareConfig(k_core=0, split="none")).info) == []
    assert removal_lines({"prepare": {"k_core": 5}}) == [] and removal_lines({}) == []
    # thousands separated, zero parts left out
    info = {"prepare": {"k_core": 5, "removed": {"k_core": {"users": 0, "items": 340, "interactions": 1020}}}}
    assert removal_lines(info) == ["k-core 5 removed 340 items, 1,020 interactions"]


def test_no_interactions_left_says_which_step_removed_them():
    inter, _ = _frames()
    with pytest.raises(DataError, match=r"no interactions left after filtering \(8 raw, k_core=5, "
                                        r"min_rating=None: dedup merged 1 duplicate interaction; "
                                        r"k-core 5 removed 4 users, 4 items, 7 interactions\)"):
        prepare("toy", inter, config=PrepareConfig(k_core=5, split="none"))


def test_datasets_info_lists_removals_inside_its_json(tmp_path):
    folder = _folder(tmp_path / "toy")
    r = runner.invoke(app, ["datasets", "info", str(folder), "--min-rating", "3", "--k-core", "2",
                            "--split", "none"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)  # still one JSON object
    assert out["removed"] == LINES and (out["users"], out["items"], out["interactions"]) == (2, 2, 4)


def test_datasets_prepare_prints_removals_and_the_folder_keeps_them(tmp_path):
    folder = _folder(tmp_path / "toy")
    dest = tmp_path / "out"
    r = runner.invoke(app, ["datasets", "prepare", str(folder), "--out", str(dest), "--min-rating", "3",
                            "--k-core", "2", "--split", "none"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-4:] == LINES
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["info"]["prepare"]["removed"] == EXPECTED
    again = Dataset.load(dest)  # the manifest's fingerprint still matches the files
    assert again.info["prepare"]["removed"] == EXPECTED and again.fingerprint() == manifest["fingerprint"]
    r = runner.invoke(app, ["datasets", "info", str(dest)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["removed"] == LINES


def test_a_folder_prepared_before_the_counts_shows_no_removed_key(tmp_path):
    """An older manifest has no counts: `datasets info` must not claim that nothing was removed."""
    dest = tmp_path / "old"
    ds = _prepared()
    del ds.info["prepare"]["removed"]
    ds.save(dest)
    r = runner.invoke(app, ["datasets", "info", str(dest)])
    assert r.exit_code == 0, r.output
    assert "removed" not in json.loads(r.output)


def test_real_dataset_counts_and_fingerprint(ml_small):
    """ml-latest-small: 100,836 ratings of 9,724 movies (movies.csv lists 9,742) become 90,274 of 3,650 after
    5-core; its rows and fingerprint are those it had before the counts were recorded."""
    from recgoat.datasets.preprocess import removal_lines

    assert ml_small.fingerprint() == "028eecad9dad0c92"
    assert ml_small.info["prepare"]["removed"] == {
        "dedup": {"users": 0, "items": 0, "interactions": 0},
        "k_core": {"users": 0, "items": 9724 - 3650, "interactions": 100836 - 90274},
        "unused_items": {"users": 0, "items": 9742 - 9724, "interactions": 0}}
    assert removal_lines(ml_small.info) == ["k-core 5 removed 6,074 items, 10,562 interactions",
                                            "18 items of the item table had no interactions and were left out"]


def test_datasets_prepare_keeps_the_output_path_on_its_line_in_a_pipe(tmp_path):
    """A pipe gets 80 columns: the "prepared … → OUT" line was wrapped, the path cut onto a line of its own."""
    from typer.testing import CliRunner

    from recgoat.cli import app

    out = tmp_path / ("a-rather-long-folder-name-for-the-prepared-copy-" * 2)
    r = CliRunner().invoke(app, ["datasets", "prepare", "ml-latest-small", "--out", str(out)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("prepared "))
    assert line.endswith(f"→ {out}"), r.output


@pytest.mark.parametrize("unused, line", [
    (1, "1 item of the item table had no interactions and was left out"),  # was "1 item … and were left out"
    (3, "3 items of the item table had no interactions and were left out"),
])
def test_the_unused_items_line_agrees_with_its_count(unused, line):
    from recgoat.datasets.preprocess import removal_lines

    inter, _ = _frames()
    ids = ["x", "y", "z", "w", *["v", "u", "t"][:unused]]  # the last `unused` in no interaction
    items = pd.DataFrame({"item_id": ids, "title": [f"t {i}" for i in ids]})
    ds = prepare("shop", inter, items, ["title"], PrepareConfig(k_core=0))
    assert ds.info["prepare"]["removed"]["unused_items"]["items"] == unused
    assert removal_lines(ds.info)[-1] == line


@pytest.mark.parametrize("n, words", [(1, "1 interaction has no user id"), (2, "2 interactions have no user id")])
def test_counted_messages_agree_with_their_count(n, words):
    inter = pd.DataFrame({"user": [None] * n + ["a"], "item": ["x"] * (n + 1)})
    with pytest.raises(DataError, match=f"{words} \\(first at row 1\\)"):
        prepare("shop", inter)
