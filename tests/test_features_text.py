"""Item text: template, truncation, and the real packaged MiniLM model run offline on ml100k-mm items."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import cosine, mini_dataset  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features.text import TextEncoder, build_item_texts, resolve_text_model, truncate  # noqa: E402

ITEMS = pd.DataFrame({"item_id": ["a", "b"], "title": ["Toy Story (1995)", "Heat"],
                      "genres": ["Animation|Children", None], "overview": ["Toys  come\talive.", ""]})


def test_default_template_lists_non_empty_fields():
    texts = build_item_texts(ITEMS, 2, ["title", "genres", "overview"])
    assert texts[0] == "title: Toy Story (1995)\ngenres: Animation, Children\noverview: Toys come alive."
    assert texts[1] == "title: Heat"


def test_custom_template_and_unknown_field():
    texts = build_item_texts(ITEMS, 2, ["title"], template="{title}. Genres: {genres}. {overview}")
    assert texts == ["Toy Story (1995). Genres: Animation, Children. Toys come alive.", "Heat. Genres: ."]
    with pytest.raises(ConfigError, match=r"\{brand\}.*available: item_id, title"):
        build_item_texts(ITEMS, 2, ["title"], template="{title} by {brand}")


@pytest.mark.parametrize("template, problem", [
    ("{title!x}", "{title!x} cannot format text: Unknown conversion specifier x"),
    ("{title:d}", "{title:d} cannot format text: Unknown format code 'd' for object of type 'str'"),
    ("{title:>9999999999}", "the format spec of {title} asks for more than 100000 characters"),
    ("{title} {}", "'{}' names no column"),
])
def test_template_that_cannot_format_text_is_a_config_error(template, problem):
    """Checked before formatting: a bare ValueError/IndexError (or gigabytes of padding) used to come from
    inside the first item's str.format."""
    with pytest.raises(ConfigError) as err:
        build_item_texts(ITEMS, 2, ["title"], template=template)
    assert str(err.value).startswith(f"text template {template!r}: {problem}")
    assert build_item_texts(ITEMS, 2, ["title"], template="{title:.3}|{genres!s}") == ["Toy|Animation, Children",
                                                                                       "Hea|"]


def test_template_fields_are_column_names_as_written():
    """A column named "genre.main", "score[0]" or "0" raised KeyError 'genre' / ValueError from str.format's
    attribute, index and positional syntax, with a traceback from `recgoat encode text`."""
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["T1", "T2"], "genre.main": ["g1", None],
                          "score[0]": [1, 2], "0": ["z", "y"]})
    got = build_item_texts(items, 2, ["title"], "{title} ({genre.main}) {score[0]} x {0} {{lit}} {title!r:>6}")
    assert got == ["T1 (g1) 1 x z {lit} 'T1'", "T2 () 2 x y {lit} 'T2'"]  # whitespace runs collapsed
    with pytest.raises(ConfigError, match=r"uses \{title.upper\} but the dataset has no such column"):
        build_item_texts(items, 2, ["title"], "{title.upper}")


def test_truncate_at_word_boundary():
    text = "word " * 100
    cut = truncate(text, 52)
    assert len(cut) <= 52 and cut.endswith("…") and not cut[:-1].endswith(" ")
    assert cut[:-1].split() == ["word"] * len(cut[:-1].split())
    assert truncate("short", 52) == "short"


def test_texts_are_truncated_to_max_chars():
    ds = mini_dataset()
    texts = build_item_texts(ds.items, ds.n_items, ds.text_fields, max_chars=120)
    assert all(len(t) <= 120 for t in texts) and any(t.endswith("…") for t in texts)


def test_default_model_is_the_packaged_one():
    target, identity = resolve_text_model(None)
    assert os.path.isdir(target) and "all-MiniLM-L6-v2" in identity
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_text_model("./no/such/model")


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(batch_size=4)


def test_real_model_shapes_determinism_and_semantics(encoder):
    ds = mini_dataset()
    texts = build_item_texts(ds.items, ds.n_items, ds.text_fields, max_chars=600)
    idx = {t: i for i, t in enumerate(ds.items["title"])}
    pick = [idx["Aladdin (1992)"], idx["Lion King, The (1994)"], idx["Platoon (1986)"]]
    sub = [texts[i] for i in pick]
    x = encoder.encode(sub)
    assert x.shape == (3, 384) and x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_array_equal(x, encoder.encode(sub))  # deterministic
    # order does not matter (length-sorted batches are un-sorted)
    np.testing.assert_allclose(encoder.encode(sub[::-1])[::-1], x, atol=1e-5)
    aladdin, lion, war = x
    assert cosine(aladdin, lion) > cosine(aladdin, war)
    assert cosine(aladdin, lion) > cosine(lion, war)


def test_loading_the_text_model_prints_no_progress_bar(capfd):
    # transformers drew a "Loading weights" bar on stderr at every load, through --no-progress and -q
    from transformers.utils import logging as hf_logging

    from recgoat.features.text import TextEncoder

    capfd.readouterr()
    enc = TextEncoder(None)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err
    assert enc.dim == 384
    assert hf_logging.is_progress_bar_enabled()  # the user's own setting is left as it was
