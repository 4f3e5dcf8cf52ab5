"""Feature encoders on the files and texts a real catalogue has: odd image modes, EXIF rotation, animated
and degenerate images, broken files and links; empty, missing, unicode and over-long texts. Tiny generated
images and a handful of texts: the real models load once per module."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from recgoat.features.image import ImageEncoder, ImagePreprocessor  # noqa: E402
from recgoat.features.text import TextEncoder, build_item_texts  # noqa: E402

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 200, 0)


def halves(w: int = 60, h: int = 40) -> Image.Image:
    """Red left half, blue right half: a rotation or a channel mix-up shows at the corners."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2], a[:, w // 2:] = RED, BLUE
    return Image.fromarray(a)


def diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.fixture(scope="module")
def pre():
    return ImagePreprocessor(32)


# ------------------------------------------------------------------------------------------ decoding
def test_cmyk_jpeg_decodes_like_its_rgb_original(tmp_path, pre):
    halves().convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    halves().save(tmp_path / "rgb.png")
    a = pre.load(tmp_path / "cmyk.jpg")
    assert diff(a, pre.load(tmp_path / "rgb.png")) <= 8  # JPEG rounding only, no inverted channels
    assert a[0, 0].tolist()[0] > 240 and a[0, -1].tolist()[2] > 240


def test_exif_orientation_is_applied(tmp_path, pre):
    """A phone JPEG stores its pixels sideways with Orientation=6: it is seen upright, like a JPEG of the
    upright pixels; a corrupt or nonsense orientation is ignored, not a crash."""
    halves().save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    halves().rotate(90, expand=True).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    up, side = pre.load(tmp_path / "upright.jpg"), pre.load(tmp_path / "sideways.jpg")
    assert diff(up, side) <= 10 and side[0, 0, 0] > 240 and side[0, -1, 2] > 240
    for value in (0, 9, 65535):
        exif[0x0112] = value
        halves().save(tmp_path / f"o{value}.jpg", exif=exif, quality=95)
        assert diff(pre.load(tmp_path / f"o{value}.jpg"), up) <= 10
    # the TIFF header inside the EXIF segment damaged: orientation unknown, the pixels still decode
    raw = bytearray((tmp_path / "sideways.jpg").read_bytes())
    at = raw.find(b"Exif\x00\x00") + 6
    raw[at:at + 2] = b"XX"
    (tmp_path / "badexif.jpg").write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert pre.load(tmp_path / "badexif.jpg").shape == (32, 32, 3)


@pytest.mark.parametrize("fmt,kw", [("gif", {}), ("webp", {"lossless": True}), ("png", {})])
def test_animated_images_give_their_first_frame(tmp_path, pre, fmt, kw):
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, GREEN, BLUE)]
    frames[0].save(tmp_path / f"anim.{fmt}", save_all=True, append_images=frames[1:], duration=100, **kw)
    with Image.open(tmp_path / f"anim.{fmt}") as im:
        assert getattr(im, "n_frames", 1) == 3  # really animated
    a = pre.load(tmp_path / f"anim.{fmt}")
    assert (np.abs(a.astype(int) - RED).max(axis=2) <= 3).all()


def test_grayscale_and_1_bit_images_decode_as_their_rgb_copies(tmp_path, pre):
    gray = halves().convert("L")
    gray.save(tmp_path / "l.png")
    gray.convert("RGB").save(tmp_path / "l_rgb.png")
    assert np.array_equal(pre.load(tmp_path / "l.png"), pre.load(tmp_path / "l_rgb.png"))
    one = halves().convert("1")
    one.save(tmp_path / "one.png")
    one.convert("RGB").save(tmp_path / "one_rgb.png")
    assert np.array_equal(pre.load(tmp_path / "one.png"), pre.load(tmp_path / "one_rgb.png"))


@pytest.mark.parametrize("size", [(1, 1), (4000, 10), (10, 4000), (1, 5), (3, 2)])
def test_degenerate_sizes_give_a_full_crop(tmp_path, pre, size):
    Image.new("RGB", size, GREEN).save(tmp_path / "x.png")
    a = pre.load(tmp_path / "x.png")
    assert a.shape == (32, 32, 3) and (a == GREEN).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_trns_chunk_transparency_is_seen_on_white(tmp_path, pre, mode):
    """Grayscale and RGB PNGs mark one colour transparent with a tRNS chunk (no alpha channel)."""
    img = halves().convert(mode)
    key = img.getpixel((0, 0))  # the red half is the transparent colour
    img.save(tmp_path / "t.png", transparency=key)
    a = pre.load(tmp_path / "t.png")
    assert (a[:, :14] == 255).all()  # the transparent half: white, not red (or its gray)
    right = img.convert("RGB").getpixel((59, 0))  # the opaque half keeps its colour
    assert (np.abs(a[:, 18:].astype(int) - right).max(axis=2) <= 1).all() and right != (255, 255, 255)


def test_dark_16_bit_grayscale_png_decodes_dark(tmp_path, pre):
    # a 16-bit image whose values are all <= 255 was taken for 8-bit data and decoded mid-gray
    dark = (np.arange(40 * 60).reshape(40, 60) % 200).astype(np.uint16)  # at most 199/65535: black
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    with Image.open(tmp_path / "dark16.png") as im:
        assert im.mode.startswith("I;16")
    assert pre.load(tmp_path / "dark16.png").max() <= 1


# ------------------------------------------------------------------------------------------ encoding
@pytest.fixture(scope="module")
def image_encoder():
    return ImageEncoder(batch_size=4, workers=2)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("catalogue")
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (90, 90, 90)]
    for k, c in enumerate(colours):
        img = Image.new("RGB", (48, 64), c)
        img.paste((255, 255, 255), (8 * k, 8, 8 * k + 12, 40))
        img.save(d / f"p{k}.png")
    return d


def test_awkward_files_give_zero_rows_the_right_mask_and_counts(tmp_path, image_encoder, image_files):
    good = str(image_files / "p0.png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "page.JPG").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    halves().save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    os.symlink(good, tmp_path / "link.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    Image.open(good).save(tmp_path / "UPPER.PNG")
    paths = [good, str(tmp_path / "zero.jpg"), str(tmp_path / "page.JPG"), str(tmp_path / "cut.jpg"),
             str(tmp_path / "link.png"), str(tmp_path / "dangling.png"), str(tmp_path / "UPPER.PNG"), "", None]
    x, mask, problems = image_encoder.encode(paths)
    assert mask.tolist() == [True, False, False, False, True, False, True, False, False]
    assert (x[~mask] == 0).all() and (np.abs(x[mask]).sum(1) > 0).all() and np.isfinite(x).all()
    assert problems.counts() == {"missing": 3, "unreadable": 3}
    assert set(problems.missing) == {5, 7, 8} and set(problems.unreadable) == {1, 2, 3}
    assert "cut.jpg" in problems.unreadable[3] and "page.JPG" in problems.unreadable[2]
    # a link and an upper-case name are the same picture: the same row, bit for bit
    assert np.array_equal(x[4], x[0]) and np.array_equal(x[6], x[0])


def test_a_row_does_not_depend_on_its_batch_or_on_failed_neighbours(tmp_path, image_encoder, image_files):
    """Batches of 4 (the last one short), the same image twice, and bad images between good ones (the
    good ones then sit at other positions of their batch): every row equals the image encoded alone."""
    p = [str(image_files / f"p{k}.png") for k in range(5)]
    bad = str(tmp_path / "absent.jpg")
    paths = [p[0], p[1], bad, p[2], p[0], p[3], bad, p[4]]
    x, mask, problems = image_encoder.encode(paths)
    assert mask.tolist() == [True, True, False, True, True, True, False, True]
    assert problems.counts() == {"missing": 2, "unreadable": 0}
    assert np.array_equal(x[0], x[4])  # the same image twice
    alone = {q: image_encoder.encode([q])[0][0] for q in p}
    for row, q in enumerate(paths):
        if q != bad:
            assert np.array_equal(x[row], alone[q]), row
    assert len({x[r].tobytes() for r in (0, 1, 3, 5, 7)}) == 5  # different images, different rows


# ------------------------------------------------------------------------------------------ texts
@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(batch_size=4)


def test_item_texts_skip_missing_fields_and_keep_unicode():
    items = pd.DataFrame({"title": ["Amélie 🎬", np.nan, None, "Up"],
                          "genres": ["Comedy|Romance", None, pd.NA, ""],
                          "overview": ["", "  spaced \t out  ", np.nan, "x" * 60]})
    texts = build_item_texts(items, 4, ["title", "genres", "overview"], max_chars=45)
    assert texts[0] == "title: Amélie 🎬\ngenres: Comedy, Romance"
    assert texts[1] == "overview: spaced out" and texts[2] == ""
    assert len(texts[3]) == 45 and texts[3].endswith("…")
    assert build_item_texts(items, 4, ["title"], template="{title} – {genres}") == [
        "Amélie 🎬 – Comedy, Romance", "–", "–", "Up –"]


def test_text_rows_are_unit_norm_finite_and_deterministic(text_encoder):
    """The packaged model ends in a Normalize module: every row has norm 1, the empty text included; the
    same text gives the same row (within 1e-6) wherever it sits, and whitespace-only texts equal the empty one."""
    texts = ["", "Amélie 🎬 😀", "A &amp; B", "toy story", "", "toy story", " ", "\n", "漢字のテキスト"]
    x = text_encoder.encode(texts)
    assert x.shape == (9, 384) and x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # not bit for bit: the two empty texts land in different length-sorted batches and differ by ~1e-7
    np.testing.assert_allclose(x[4], x[0], atol=1e-6)
    np.testing.assert_allclose(x[5], x[3], atol=1e-6)
    np.testing.assert_allclose(x[6], x[0], atol=1e-6)
    np.testing.assert_allclose(x[7], x[0], atol=1e-6)
    assert np.abs(x[1] - x[0]).max() > 0.05 and np.abs(x[8] - x[0]).max() > 0.05  # not read as empty


def test_text_row_is_nearly_independent_of_its_batch(text_encoder):
    """Not bit for bit (batches are padded to their longest text, so a row moves by ~2e-7 with its
    company), but within float tolerance."""
    texts = ["a short one", "a somewhat longer text about an animated film with songs", "war", "",
             "another medium length description of a product", "x y z"]
    x = text_encoder.encode(texts)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(text_encoder.encode([t])[0], x[i], atol=1e-6)


def test_text_beyond_256_tokens_is_cut_by_the_model_and_counted(text_encoder):
    """The model reads 256 tokens: what follows changes nothing (build_item_texts' max_chars=1200 can hold
    more than that, e.g. ~300 tokens of English, ~1200 of CJK); the encoder counts such texts."""
    assert text_encoder.model.max_seq_length == 256
    long = "word " * 400
    texts = [long, long + "a completely different ending about spaceships", long[:200]]
    assert text_encoder.count_truncated(texts) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warned once per encoder (tests/test_features_text_encoder.py checks that)
        x = text_encoder.encode(texts)
    assert np.array_equal(x[0], x[1]) and np.abs(x[0] - x[2]).max() > 1e-3
