"""Item text from the items table: a title that is literally "None", "NaN" or "<NA>" is text, only a missing cell is
empty; a max_chars too small to keep a word is refused. End to end: items files read by the loaders, then
:func:`build_item_texts`."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from recgoat.datasets import Dataset, load  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features.cli import app  # noqa: E402
from recgoat.features.text import MIN_MAX_CHARS, build_item_texts, items_without_text, truncate  # noqa: E402

# titles that are words (films and products are named so), beside items whose title is really missing
LITERAL = ["None", "NaN", "nan", "null", "N/A", "<NA>"]


def _interactions(folder, n_items: int) -> None:
    """Every one of 10 users has every item: no item is dropped by the default 5-core filter."""
    rows = [f"u{u},i{i},4,{1000 + 100 * u + i}" for u in range(10) for i in range(n_items)]
    (folder / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")


def _texts_by_id(ds: Dataset, template: str | None = None) -> dict[str, str]:
    texts = build_item_texts(ds.items, ds.n_items, ds.text_fields, template)
    return dict(zip(map(str, ds.item_ids), texts))


def _csv_folder(tmp_path):
    """items.csv: i0..i5 titled with the literal words, i6 with an empty title cell, i7 with an empty genre."""
    folder = tmp_path / "csv"
    folder.mkdir()
    _interactions(folder, 8)
    lines = [f"i{k},{t},Drama" for k, t in enumerate(LITERAL)] + ["i6,,Comedy", "i7,Heat,"]
    (folder / "items.csv").write_text("item_id,title,genres\n" + "\n".join(lines) + "\n")
    return folder


def _parquet_folder(tmp_path):
    """items.parquet with real nulls: a None title, a None genre, and a year column with a gap (floats)."""
    folder = tmp_path / "pq"
    folder.mkdir()
    _interactions(folder, 8)
    pd.DataFrame({"item_id": [f"i{k}" for k in range(8)],
                  "title": [*LITERAL, None, "Heat"],
                  "genres": ["Drama"] * 6 + ["Comedy", None],
                  "year": [1990.0, 1991.0, 1992.0, 1993.0, 1994.0, 1995.0, 1996.0, float("nan")],
                  }).to_parquet(folder / "items.parquet", index=False)
    return folder


@pytest.mark.parametrize("make", [_csv_folder, _parquet_folder], ids=["csv", "parquet"])
def test_literal_none_nan_titles_are_kept_and_missing_cells_blank(tmp_path, make):
    """"None", "nan" and "<NA>" were blanked after stringifying, as if the title were missing: those items got
    the text of an item without a title (and were counted among the items with no text)."""
    ds = load(make(tmp_path))
    texts = _texts_by_id(ds)
    for k, word in enumerate(LITERAL):
        assert texts[f"i{k}"].startswith(f"title: {word}\ngenres: Drama"), (word, texts[f"i{k}"])
    assert texts["i6"].startswith("genres: Comedy") and "title" not in texts["i6"]  # the missing title: no line
    assert texts["i7"].startswith("title: Heat") and "genres" not in texts["i7"]
    by_template = _texts_by_id(ds, "{title} | {genres}")
    assert [by_template[f"i{k}"] for k in range(len(LITERAL))] == [f"{w} | Drama" for w in LITERAL]
    assert by_template["i6"] == "| Comedy" and by_template["i7"] == "Heat |"
    # only the item whose title cell is empty has no title
    assert items_without_text(ds.items, ds.n_items, ["title"], None) == 1
    assert items_without_text(ds.items, ds.n_items, ["title"], "{title}") == 1


def test_prepared_dataset_saved_to_parquet_keeps_literal_titles(tmp_path):
    """Saved (items.parquet) and loaded back, a missing title is still missing and "None" still a title."""
    ds = load(_csv_folder(tmp_path))
    ds.save(tmp_path / "prepared")
    back = Dataset.load(tmp_path / "prepared")
    assert _texts_by_id(back) == _texts_by_id(ds)
    texts = _texts_by_id(back, "{title}")
    assert [texts[f"i{k}"] for k in range(len(LITERAL))] == LITERAL and texts["i6"] == ""


def test_missing_values_of_every_kind_are_blank():
    """None, NaN and pd.NA in object, float, nullable string and categorical columns: ''."""
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"],
                          "title": pd.Series(["None", None, float("nan"), pd.NA], dtype=object),
                          "brand": pd.Series(["nan", pd.NA, "<NA>", None], dtype="string"),
                          "price": [1.5, float("nan"), 2.0, None],
                          "categories": pd.Categorical(["NaN", None, "Toys", "null"])})
    got = build_item_texts(items, 4, ["title", "brand", "price", "categories"], max_chars=None)
    assert got == ["title: None\nbrand: nan\nprice: 1.5\ncategories: NaN", "",
                   "brand: <NA>\nprice: 2.0\ncategories: Toys", "categories: null"]


# ---------------------------------------------------------------------------------------------- max_chars
ITEMS = pd.DataFrame({"item_id": ["a", "b"], "title": ["Toy Story (1995)", "Heat"],
                      "overview": ["Toys come alive when nobody is looking.", ""]})


@pytest.mark.parametrize("max_chars", [1, 2, 8, MIN_MAX_CHARS - 1])
def test_a_limit_too_small_for_a_word_is_a_config_error(max_chars):
    """max_chars=1 gave every item the text "…"; a limit just below the minimum kept "title: Toy" at best."""
    with pytest.raises(ConfigError) as err:
        build_item_texts(ITEMS, 2, ["title", "overview"], max_chars=max_chars)
    msg = str(err.value)
    assert msg.startswith(f"max_chars (--max-chars) must be at least {MIN_MAX_CHARS}, got {max_chars}: ")
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="at least"):  # refused whatever the items: no table at all too
        build_item_texts(None, 2, ["title"], max_chars=max_chars)


@pytest.mark.parametrize("max_chars", [2.5, 100.0, "300", True])
def test_a_limit_that_is_no_whole_number_is_a_config_error(max_chars):
    with pytest.raises(ConfigError, match=r"max_chars \(--max-chars\) must be a whole number of characters, got"):
        build_item_texts(ITEMS, 2, ["title"], max_chars=max_chars)


def test_the_smallest_limit_keeps_a_word_and_no_limit_is_still_none_or_zero():
    texts = build_item_texts(ITEMS, 2, ["title", "overview"], max_chars=MIN_MAX_CHARS)
    assert texts == ["title: Toy Stor…", "title: Heat"]
    assert all(len(t) <= MIN_MAX_CHARS for t in texts)
    full = "title: Toy Story (1995)\noverview: Toys come alive when nobody is looking."
    assert build_item_texts(ITEMS, 2, ["title", "overview"], max_chars=None)[0] == full
    assert build_item_texts(ITEMS, 2, ["title", "overview"], max_chars=0)[0] == full
    assert truncate("word " * 10, 1) == "…"  # truncate itself, used with internal limits, is unchanged


def test_cli_refuses_a_too_small_max_chars_in_one_line(tmp_path):
    folder = _csv_folder(tmp_path)
    res = CliRunner().invoke(app, ["text", str(folder), "--out", str(tmp_path / "f"), "--max-chars", "1",
                                   "--no-progress"])
    assert res.exit_code == 1 and len(res.output.splitlines()) == 1, res.output
    assert res.output.startswith(f"error: max_chars (--max-chars) must be at least {MIN_MAX_CHARS}, got 1: ")
    assert not (tmp_path / "f" / "text.npy").exists()


def test_ml_latest_empty_tag_cells_are_no_tag(tmp_path):
    """An empty cell in MovieLens' tags.csv was joined as the tag "nan" (and fails under pandas 3); a blank
    one as an empty tag between commas."""
    from recgoat.datasets.registry import _load_ml_latest

    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,3.0,101\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n10,Heat (1995),Action\n20,Up (2009),Comedy\n")
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,10,,5\n1,10,Heist,6\n1,10,  ,7\n"
                                       "1,20,,8\n")
    _, movies, _ = _load_ml_latest(tmp_path)
    tags = dict(zip(movies["item_id"], movies["tags"]))
    assert tags["10"] == "heist"
    assert pd.isna(tags["20"])  # only empty tags: no tag text at all, not "nan"


@pytest.mark.parametrize("budget", [1, 15])
def test_a_profile_history_budget_too_small_for_a_word_is_a_config_error(budget):
    from recgoat.features.store import FeatureConfig

    with pytest.raises(ConfigError, match=r"profile_char_budget \(--char-budget\) must be at least 16"):
        FeatureConfig(profile_char_budget=budget).validate()
    FeatureConfig(profile_char_budget=MIN_MAX_CHARS).validate()
