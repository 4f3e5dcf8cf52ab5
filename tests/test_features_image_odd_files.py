"""Odd image files of a real catalogue give one message naming the file and the problem (session-16 audit)."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from recgoat.features.image import ImageEncoder


class _Tiny(nn.Module):
    """A 3-d plug-in backbone: fast, no weights to load."""

    dim = 3
    image_size = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@pytest.fixture
def encoder() -> ImageEncoder:
    return ImageEncoder(_Tiny(), batch_size=4, workers=2)


def _photo(path, size=(40, 30)) -> str:
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (size[1], size[0], 3), np.uint8)).save(path)
    return str(path)


def test_symlink_loop_and_dangling_link_are_named_not_file_not_found(tmp_path, encoder):
    loop, dangling = tmp_path / "loop.jpg", tmp_path / "dangling.jpg"
    os.symlink("loop.jpg", loop)
    os.symlink("gone.jpg", dangling)
    _, mask, problems = encoder.encode([str(loop), str(dangling), _photo(tmp_path / "ok.png")])
    assert mask.tolist() == [False, False, True]
    assert problems.unreadable[0].startswith(f"{loop}: a symbolic link that leads to no file (")
    assert problems.missing[1] == f"{dangling}: a symbolic link to gone.jpg, which does not exist"


def test_zero_byte_image_is_said_empty(tmp_path, encoder):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _, mask, problems = encoder.encode([str(empty)])
    assert not mask[0] and problems.unreadable == {0: f"{empty}: empty file (0 bytes)"}


def test_decompression_bomb_warning_names_the_file(tmp_path, encoder, monkeypatch):
    big = _photo(tmp_path / "huge poster.png", (40, 40))  # 1,600 pixels: past a limit of 1,100, within twice it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)  # the 32×32 crop (1,024) is within it
    with pytest.warns(Image.DecompressionBombWarning) as got:
        _, mask, _ = encoder.encode([big])
    assert mask[0]  # Pillow only warns up to twice its limit: the image is still encoded
    assert [str(w.message).split(": ")[0] for w in got] == [big]


def test_warnings_outside_decoding_are_unchanged():
    from recgoat.features.image import _warnings_name_the_file

    with pytest.warns(UserWarning, match="^plain$"), _warnings_name_the_file():
        warnings.warn("plain", UserWarning)


@pytest.mark.parametrize("value, hint", [
    ("HTTPS:/cdn.example.com/a.jpg", "it reads as a URL (HTTPS:...); only http:// and https:// URLs are fetched"),
    ("s3:/bucket/a.jpg", "it reads as a URL (s3:...)"),
    ("data:image/png;base64,iVBOR", "it reads as a URL (data:...)"),
    ("//cdn.example.com/a.jpg", "a URL without http: or https:?"),
    ("a.jpg ", "the value has spaces around it: "),
    ("images\\a.jpg", "a Windows path?"),
])
def test_not_found_says_why_the_value_may_not_be_a_file(tmp_path, encoder, value, hint):
    path = value if value.startswith("//") else f"{tmp_path}/{value}"
    _, _, problems = encoder.encode([path])
    assert problems.missing[0].startswith(f"{path}: file not found (") and hint in problems.missing[0]


def test_plain_missing_file_message_is_unchanged(tmp_path, encoder):
    _, _, problems = encoder.encode([str(tmp_path / "C:" / "absent.jpg")])
    assert problems.missing[0] == f"{tmp_path / 'C:' / 'absent.jpg'}: file not found"


def test_a_symlink_loop_in_the_image_folder_does_not_stop_the_dataset_loading(tmp_path, encoder):
    from recgoat.datasets.generic import find_images

    images = tmp_path / "images"
    images.mkdir()
    _photo(images / "1.png")
    os.symlink("2.jpg", images / "2.jpg")  # an item's image that loops
    os.symlink("9.jpg", images / "9.jpg")  # no item's: never looked at
    found = find_images(pd.Series([1, 2, 3]), images)
    assert found.iloc[0] == str((images / "1.png").resolve()) and found.iloc[1] == str(images / "2.jpg")
    assert found.isna().tolist() == [False, False, True]
    _, mask, problems = encoder.encode([found.iloc[0], found.iloc[1]])
    assert mask.tolist() == [True, False] and "a symbolic link that leads to no file" in problems.unreadable[1]
