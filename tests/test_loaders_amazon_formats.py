"""Users' own catalogues in the published formats: Amazon review/meta files (2014 loose JSON, 2018 meta
with an ``image`` list, BOMs, HTML entities, odd bytes) and MMRec folders given by their ``.inter`` file.

Each test writes a few format-faithful lines by hand and pins one bug found in a QA pass."""
from __future__ import annotations

import gzip
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from recgoat.datasets import PrepareConfig, load, load_amazon
from recgoat.datasets.amazon import read_amazon, read_meta, read_reviews
from recgoat.errors import DataError

FIX = Path(__file__).resolve().parent / "fixtures"
T0 = 1_388_534_400  # 2014-01-01
PRODUCTS = ["0000031852", "B00004U9V2", "B0000DJZ6S", "B0001ZNZJM", "B000GFY6V2", "B000HBD0P8"]


def _reviews_2014() -> list[dict]:
    """6 shoppers × 6 products, every field of a 2014 review (a 5-core keeps them all)."""
    return [{"reviewerID": f"A{u}QWERTY{u}", "asin": a, "reviewerName": f"Parent {u}", "helpful": [u % 3, 3],
             "reviewText": "Good value, works well.", "overall": float(1 + (u + i) % 5),
             "summary": "Good value", "unixReviewTime": T0 + 86_400 * (6 * u + i), "reviewTime": "01 1, 2014"}
            for u in range(6) for i, a in enumerate(PRODUCTS)]


def _write(path: Path, lines: list[str], gz: bool = False, bom: bool = False, eol: str = "\n") -> Path:
    data = (("\ufeff" if bom else "") + eol.join(lines) + eol).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _quiet(fn, *args, **kw):
    """Call ``fn`` with every warning raised as an error: valid data reads silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kw)


# ------------------------------------------------------------------------------------ file encodings
def test_2014_loose_json_reviews_are_read(tmp_path):
    """The 2014 files' own reader is ``eval(line)``: reviews written by Python's ``str(dict)`` (single quotes)
    were refused as "not valid JSON" while the same meta file format was accepted."""
    rows = _reviews_2014()
    loose = _write(tmp_path / "reviews_Baby.json.gz", [repr(r) for r in rows], gz=True)
    strict = _write(tmp_path / "Baby.json", [json.dumps(r) for r in rows])
    got, release = _quiet(read_reviews, loose)
    want, _ = read_reviews(strict)
    assert release == "2014/2018" and len(got) == 36
    assert got.equals(want)
    # a JSON line after literal ones (true/false/null are no Python literals) is read too
    mixed = _write(tmp_path / "meta_Baby.json", [repr({"asin": PRODUCTS[0], "title": "Tutu"}),
                                                 json.dumps({"asin": PRODUCTS[1], "title": "Bib", "gift": True,
                                                             "brand": None})])
    assert read_meta(mixed)["title"].tolist() == ["Tutu", "Bib"]


@pytest.mark.parametrize("gz", [False, True])
def test_byte_order_mark_crlf_and_blank_lines(tmp_path, gz):
    """A file saved by a Windows editor: BOM, CRLF, a trailing empty line. The BOM made line 1 'not valid
    JSON (Unexpected UTF-8 BOM)' for reviews and 'neither JSON nor a Python literal' for 2014 meta."""
    reviews = _write(tmp_path / "reviews_Baby.json", [json.dumps(r) for r in _reviews_2014()] + [""],
                     gz=gz, bom=True, eol="\r\n")
    meta = _write(tmp_path / "meta_Baby.json", [repr({"asin": a, "title": f"Product {a}"}) for a in PRODUCTS],
                  gz=gz, bom=True, eol="\r\n")
    ds = _quiet(load_amazon, reviews, meta)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (6, 6, 36)
    assert ds.items.set_index("item_id").loc[PRODUCTS[0], "title"] == f"Product {PRODUCTS[0]}"
    assert ds.user_ids[0] == "A0QWERTY0"  # no BOM glued to the first id


def test_bytes_that_are_not_utf8_are_said_once(tmp_path):
    """A Latin-1 line (é as 0xE9) was read with errors='replace' silently: two shoppers 'Renée' and 'René'
    spelled in Latin-1 could collapse into one id without a word."""
    lines = [json.dumps(r).encode() for r in _reviews_2014()]
    lines[3] = json.dumps({"reviewerID": "Ren\u00e9e", "asin": PRODUCTS[0], "overall": 5.0,
                           "unixReviewTime": T0}, ensure_ascii=False).encode("latin-1")
    path = tmp_path / "reviews_Baby.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.warns(UserWarning, match=r"reviews_Baby\.json: 1 line is not valid UTF-8 \(first: line 4\)") as rec:
        inter, _ = read_reviews(path)
    assert len(rec) == 1 and len(inter) == 36 and "Ren\ufffde" in set(inter["user"])


# ------------------------------------------------------------------------------------ huge or odd lines
def test_a_deeply_nested_or_huge_number_line_is_one_data_error(tmp_path):
    """json.loads raised RecursionError / ValueError (not JSONDecodeError) past the reader: a traceback."""
    good = json.dumps(_reviews_2014()[0])
    nested = '{"reviewerID": "A", "helpful": ' + "[" * 100_000 + "]" * 100_000 + "}"
    deep = _write(tmp_path / "Baby.json", [good, nested])
    with pytest.raises(DataError, match=r"Baby\.json: malformed line 2: nested too deeply") as e:
        read_reviews(deep)
    assert e.value.path == str(deep)
    digits = _write(tmp_path / "meta_Baby.json",
                    [json.dumps({"asin": "B1"}), '{"asin": "B2", "price": ' + "9" * 5000 + "}"])
    with pytest.raises(DataError, match=r"meta_Baby\.json: malformed line 2: .*4300 digits"):
        read_meta(digits)
    # a literal with an unhashable key is no record either (literal_eval raised TypeError)
    unhashable = _write(tmp_path / "meta_Toys.json",
                        [repr({"asin": "B1"}), "{'asin': 'B2', 'related': {['B1']: 1}}"])
    with pytest.raises(DataError, match=r"meta_Toys\.json: malformed line 2: neither JSON nor a Python literal"):
        read_meta(unhashable)


def test_an_integer_price_beyond_float_range_is_nan(tmp_path):
    """pd.to_numeric raised OverflowError on a JSON/literal integer price of 400 digits."""
    meta = _write(tmp_path / "meta_Baby.json", [json.dumps({"asin": "B1", "title": "t", "price": 10**400}),
                                                json.dumps({"asin": "B2", "title": "t", "price": 7}),
                                                json.dumps({"asin": "B3", "title": "t", "price": 12.99})])
    prices = read_meta(meta).set_index("item_id")["price"]
    assert np.isnan(prices["B1"]) and prices["B2"] == 7.0 and prices["B3"] == 12.99


def test_a_bad_rating_is_reported_at_its_line(tmp_path):
    """The message said 'review N' (the count of reviews read) instead of the line: wrong after blank lines."""
    rows = [json.dumps(r) for r in _reviews_2014()[:4]]
    rows[3] = rows[3].replace('"overall": ', '"overall": "five", "x": ')
    path = _write(tmp_path / "Baby.json", [rows[0], "", "", rows[1], rows[2], rows[3]])
    with pytest.raises(DataError, match=r"1 review has a non-numeric or NaN rating \(first: line 6, value 'five'\)"):
        read_reviews(path)


# ------------------------------------------------------------------------------------ meta fields
def test_2018_meta_image_list_gives_the_item_image(tmp_path):
    """Most 2018 meta files hold the product pictures in an ``image`` list (no imageURL/imageURLHighRes):
    every item came out with no image, silently."""
    reviews = _write(tmp_path / "Pet_Supplies.json", [json.dumps(r) for r in _reviews_2014()])
    meta = _write(tmp_path / "meta_Pet_Supplies.json", [json.dumps({
        "category": ["Pet Supplies", "Dogs"], "tech1": "", "description": ["Dog treat recipes.", "", ""], "fit": "",
        "title": f"Treat Cookbook {a}", "also_buy": [], "tech2": "", "brand": "Pet Qwerks",
        "image": [f"https://images-na.ssl-images-amazon.com/images/I/41{a[-4:]}L._SS40_.jpg",
                  "https://images-na.ssl-images-amazon.com/images/I/41n5wUvfhsL._SS40_.jpg"],
        "feature": ["Recipe book"], "rank": "190,234 in Pet Supplies (", "also_view": [], "main_cat": "Pet Supplies",
        "similar_item": "", "date": "", "price": "$7.86", "asin": a}) for a in PRODUCTS])
    ds = _quiet(load_amazon, reviews, meta)
    assert ds.has_images
    # those are 40-pixel thumbnails: the full-size picture is the URL without its size modifiers
    assert ds.items.set_index("item_id").loc[PRODUCTS[1], "image"] == \
        "https://images-na.ssl-images-amazon.com/images/I/41U9V2L.jpg"
    # the high-res list still wins where a file has both
    both = _write(tmp_path / "meta_X.json", [json.dumps({"asin": "B1", "image": ["thumb.jpg"],
                                                         "imageURLHighRes": ["big.jpg"]})])
    assert read_meta(both)["image"].tolist() == ["big.jpg"]


def test_html_entities_in_titles_and_categories_are_decoded(tmp_path):
    """2014/2018 meta carry HTML entities ('Sports &amp; Outdoors', '&#39;'): they reached the text encoders
    and LLM prompts as written, and 'A &amp; B' / 'A & B' were two categories."""
    meta = _write(tmp_path / "meta_Baby.json", [repr({
        "asin": "B1", "title": "Johnson&#39;s Baby Shampoo &amp; Wash, 13.6 fl. oz", "brand": "Johnson &amp; Johnson",
        "categories": [["Baby", "Bathing &amp; Skin Care"], ["Baby", "Bathing & Skin Care", "Shampoo"]],
        "description": "Gentle&nbsp;formula &lt;no more tears&gt;"})])
    row = read_meta(meta).iloc[0]
    assert row["title"] == "Johnson's Baby Shampoo & Wash, 13.6 fl. oz"
    assert row["brand"] == "Johnson & Johnson"
    assert row["categories"] == "Baby|Bathing & Skin Care|Shampoo"
    assert row["description"] == "Gentle formula <no more tears>"
    # a bare ampersand is kept as it is
    assert read_amazon(*[FIX / "amazon2014" / f for f in ("reviews_Baby.json.gz", "meta_Baby.json.gz")])[1] \
        .set_index("item_id").loc["B00002", "categories"] == "Baby Products|Health & Baby Care|Teethers"


def test_reviewed_items_missing_from_meta_are_said_once(tmp_path):
    """The generic loader warns when items have no row in the item table; the Amazon reader said nothing
    although such items silently get no text and no image."""
    reviews = _write(tmp_path / "reviews_Baby.json", [json.dumps(r) for r in _reviews_2014()])
    meta = _write(tmp_path / "meta_Baby.json", [repr({"asin": a, "title": "t"}) for a in PRODUCTS[:4]]
                  + [repr({"asin": "B0ORPHAN01", "title": "never reviewed"})])
    missing = r"meta_Baby\.json: 2 of the 6 items in reviews_Baby\.json have no line"
    with pytest.warns(UserWarning, match=missing) as rec:
        ds = load_amazon(reviews, meta, config=PrepareConfig(k_core=0))
    assert len(rec) == 1
    texts = ds.item_texts()
    assert sum(t == "" for t in texts) == 2 and ds.n_items == 6
    _quiet(read_amazon, *[FIX / "amazon2018" / f for f in ("Baby.json.gz", "meta_Baby.json.gz")])  # all present


def test_meta_lines_that_disagree_for_one_item_are_said_once(tmp_path):
    """Repeated lines for one item (common in the 2018 files) were reduced to the first silently, even when
    they disagree; identical repeats lose nothing and stay silent."""
    line = json.dumps({"asin": "B1", "title": "Bib", "price": "$3.00"})
    same = _write(tmp_path / "meta_A.json", [line, line, json.dumps({"asin": "B2", "title": "Cup"})])
    assert _quiet(read_meta, same)["item_id"].tolist() == ["B1", "B2"]
    differ = _write(tmp_path / "meta_B.json", [line, json.dumps({"asin": "B1", "title": "Bib, 2 pack"}), line])
    with pytest.warns(UserWarning, match=r"meta_B\.json: 1 item has several different lines \(e\.g\. 'B1'\)"):
        got = read_meta(differ)
    assert got["title"].tolist() == ["Bib"]


# ------------------------------------------------------------------------------------ MMRec dispatch
def test_mmrec_inter_file_given_itself_loads_its_folder(tmp_path):
    """`recgoat.datasets.load("data/baby/baby.inter")` was 'not a dataset file, nor another recognised layout
    (… mmrec: <name>.inter …)': the message listed the very file given."""
    folder = Path(shutil.copytree(FIX / "mmrec_tiny", tmp_path / "mmrec_tiny"))
    shutil.copy(folder / "mmrec_tiny.inter", folder / "other.inter")
    ds = load(folder / "mmrec_tiny.inter")
    by_folder = load(folder).fingerprint()
    assert ds.name == "mmrec_tiny" and ds.stats()["split"] == {"train": 9, "valid": 3, "test": 4}
    assert list(ds.user_ids)[:2] == ["A1B2C3D4E5F6G7", "A2QWERTYUIOP12"]  # the folder's mappings are read
    assert set(ds.info["features"]) == {"text", "image"}
    assert load(folder / "other.inter").name == "other" and ds.fingerprint() == by_folder
    from recgoat.datasets.registry import load_raw

    with pytest.raises(DataError, match="already split"):
        load_raw(folder / "mmrec_tiny.inter")


@pytest.mark.parametrize("url, full", [
    ("https://images-na.ssl-images-amazon.com/images/I/41n5wUvfhsL._SS40_.jpg",
     "https://images-na.ssl-images-amazon.com/images/I/41n5wUvfhsL.jpg"),
    ("https://m.media-amazon.com/images/I/71abc+XYZ._AC_SX300_SY300_.png",
     "https://m.media-amazon.com/images/I/71abc+XYZ.png"),
    ("https://images-na.ssl-images-amazon.com/images/I/41n5wUvfhsL.jpg",  # already full size
     "https://images-na.ssl-images-amazon.com/images/I/41n5wUvfhsL.jpg"),
    ("https://example.com/images/I/41n5._SS40_.jpg", "https://example.com/images/I/41n5._SS40_.jpg"),  # not Amazon's
    ("thumb.jpg", "thumb.jpg"),
])
def test_amazon_thumbnail_urls_point_to_the_full_size_picture(url, full):
    from recgoat.datasets.amazon import _full_size

    assert _full_size(url) == full


@pytest.mark.parametrize("raw, text", [
    ("<p>Soft cotton.</p><p>Machine <b>washable</b>.<br/>Imported</p>", "Soft cotton. Machine washable . Imported"),
    ('<div class="aplus">Fits < 5 lbs & up</div>', "Fits < 5 lbs & up"),  # a lone "<" is text
    ("Use &lt;b&gt; for bold", "Use <b> for bold"),  # an escaped tag is the text it shows
])
def test_html_tags_in_descriptions_are_removed(raw, text):
    """2018 descriptions hold HTML markup ('<p>…</p>', '<br>'): it reached the text encoders as written."""
    from recgoat.datasets.amazon import _text

    assert _text(raw) == text
