"""Item images: the real packaged EfficientNet-Lite0 on ml100k-mm posters, bad images, plug-in models."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from features_helpers import cosine, mini_dataset  # noqa: E402
from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features.image import ImageEncoder, ImagePreprocessor, load_image_backbone  # noqa: E402


@pytest.fixture(scope="module")
def posters():
    ds = mini_dataset()
    return [p for p in ds.items["image"].tolist()[:6]]


@pytest.fixture(scope="module")
def encoder():
    return ImageEncoder(batch_size=8, workers=2)


def test_preprocessor_gives_centre_crop(tmp_path):
    img = Image.new("RGB", (92, 138), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 92, 10))  # a blue band at the top is cropped away
    path = tmp_path / "p.png"
    img.save(path)
    arr = ImagePreprocessor(224).load(path)
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    assert (arr[:, :, 0] > 200).all() and (arr[:, :, 2] < 50).all()


def test_real_model_on_posters(encoder, posters, tmp_path):
    # a resized, slightly cropped copy of poster 0 must be nearer to it than to any other poster
    with Image.open(posters[0]) as im:
        w, h = im.size
        copy = im.convert("RGB").crop((3, 4, w - 3, h - 4)).resize((int(w * 1.6), int(h * 1.6)), Image.BILINEAR)
    copy_path = tmp_path / "copy.jpg"
    copy.save(copy_path, quality=90)
    x, mask, problems = encoder.encode(posters + [str(copy_path)])
    assert x.shape == (7, 1280) and x.dtype == np.float32 and np.isfinite(x).all()
    assert mask.all() and problems.counts() == {"missing": 0, "unreadable": 0}
    assert (np.abs(x).sum(1) > 0).all()
    sims = [cosine(x[-1], x[i]) for i in range(6)]
    assert int(np.argmax(sims)) == 0, sims
    x2, _, _ = encoder.encode(posters[:2])  # deterministic, independent of batch composition
    np.testing.assert_allclose(x2, x[:2], atol=1e-4)


def test_bad_images_give_zero_rows_and_mask(encoder, posters, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(posters[1], "rb").read()[:200])
    text = tmp_path / "text.png"
    text.write_text("hello")
    paths = [posters[0], None, str(tmp_path / "absent.jpg"), str(corrupt), str(truncated), str(text)]
    x, mask, problems = encoder.encode(paths)
    assert mask.tolist() == [True, False, False, False, False, False]
    assert (x[1:] == 0).all() and np.abs(x[0]).sum() > 0
    assert problems.counts() == {"missing": 2, "unreadable": 3}
    assert "corrupt.jpg" in problems.unreadable[3]


class TinyNet(nn.Module):
    """A plug-in model returning a feature map (pooled by the encoder)."""

    image_size = 64

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3, stride=2)

    def forward(self, x):
        return self.conv(x)


def make_tiny() -> nn.Module:
    return TinyNet()


def test_plug_in_model(posters):
    enc = ImageEncoder(TinyNet(), batch_size=2)
    assert enc.dim == 5 and enc.pre.image_size == 64
    x, mask, _ = enc.encode(posters[:3])
    assert x.shape == (3, 5) and mask.all()
    enc2 = ImageEncoder("test_features_image:make_tiny")
    np.testing.assert_allclose(enc2.encode(posters[:3])[0], x, atol=1e-6)
    with pytest.raises(ConfigError, match="package.module:factory"):
        load_image_backbone("resnet50")
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_image_backbone("no_such_module_xyz:build")


class NanTinyNet(TinyNet):
    def forward(self, x):
        y = super().forward(x)
        if len(y) > 1:  # not the encoder's 1-image probe of the output size
            y[1] = float("nan")
        return y


def test_non_finite_model_output_is_passed_on_not_hidden(posters):
    # NaN is the model's fault, not the image's: it is not turned into a "bad image" (zero row, mask
    # False) but returned for the feature store to refuse (see test_features_store)
    x, mask, problems = ImageEncoder(NanTinyNet(), batch_size=3).encode(posters[:3])
    assert mask.all() and problems.counts() == {"missing": 0, "unreadable": 0}
    assert np.isnan(x[1]).all() and np.isfinite(x[[0, 2]]).all()


def test_a_rows_features_depend_on_neither_batch_company_nor_threads(encoder, posters):
    """A short batch's convolutions round differently (the last 5 posters of ml100k-mm moved by 6e-6 between
    a 1- and a 2-thread encode, which moved a RecGOAT run's validation Recall@20 by 0.009): every batch now
    runs at the full batch size, so a row is the same whichever images share its batch, and at the default
    batch size the same with 1 and 2 threads."""
    paths = [str(p) for p in posters][:5]
    assert np.array_equal(encoder.encode(paths[:1])[0][0], encoder.encode(paths)[0][0])  # batch size 8
    default = ImageEncoder(workers=2)
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(default.encode(paths)[0])
    finally:
        torch.set_num_threads(before)
    assert default.batch_size == 32 and np.array_equal(out[0], out[1])


def test_images_of_windows_with_gaps_are_packed_and_keep_their_rows(encoder, posters):
    """A catalogue with few images ran one padded forward pass per window holding any image; the images of
    windows with a gap are packed into full batches now, each row exactly what it was (the NCHW format a
    padded batch always ran in), and full windows run as before (channels-last)."""
    paths = ([str(p) for p in posters] * 4)[:20]
    full = paths[:8]  # batch size 8: a full first window
    listed = full + [None, *paths[8:11], None, None, None, None] + [None] * 8 + [*paths[11:16], None, None, None]
    calls = []
    forward = encoder._forward
    try:
        encoder._forward = lambda x: calls.append(x.is_contiguous()) or forward(x)
        x, mask, _ = encoder.encode(listed)
    finally:
        encoder._forward = forward
    # the full window (channels-last), then 3 + 5 gappy images packed into one NCHW batch (were 2 passes)
    assert calls == [False, True]
    assert mask.tolist() == [p is not None for p in listed]
    assert np.array_equal(x[:8], encoder.encode(full)[0])
    for row in np.flatnonzero(mask)[8:]:
        assert np.array_equal(x[row], encoder.encode([listed[row]])[0][0])  # alone in a padded batch
    assert not x[~mask].any()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_a_transparent_image_is_seen_on_white(tmp_path, mode):
    """A product cut out on a transparent background decodes like the same product on white; dropping
    the alpha channel showed the colour stored under the transparent pixels (black here) instead."""
    size, box = 64, (16, 16, 48, 48)
    cut = Image.new("RGBA", (size, size), (0, 0, 0, 0))  # transparent black
    cut.paste((200, 30, 30, 255), box)
    on_white = Image.new("RGB", (size, size), (255, 255, 255))
    on_white.paste((200, 30, 30), box)
    if mode == "LA":
        cut, on_white = cut.convert("LA"), on_white.convert("L").convert("RGB")
    elif mode == "P":  # a palette image with one transparent index, as GIFs and small PNGs store it
        cut = cut.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        transparent = cut.getpixel((0, 0))
        cut.info["transparency"] = transparent
    cut.save(tmp_path / "cut.png", transparency=cut.info["transparency"]) if mode == "P" \
        else cut.save(tmp_path / "cut.png")
    on_white.save(tmp_path / "white.png")
    pre = ImagePreprocessor(image_size=32)
    a, b = pre.load(tmp_path / "cut.png"), pre.load(tmp_path / "white.png")
    assert a[0, 0].tolist() == [255, 255, 255]  # the background, not black
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # palette rounding only
