"""The TextEncoder: texts past the model's token limit are counted and warned about; missing, non-str and
surrogate-bearing texts; a bare str; bad devices, batch sizes and model folders. The real packaged MiniLM
model, offline; it loads once per module (and once more where a fresh encoder's warn-once state matters)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from recgoat.errors import ConfigError  # noqa: E402
from recgoat.features.text import TextEncoder, resolve_text_model  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(batch_size=4)


def test_texts_past_the_token_limit_are_counted_and_warned_about_once() -> None:
    """The model reads 256 tokens ([CLS] and [SEP] included) and dropped the rest without a word."""
    enc = TextEncoder(batch_size=2)  # fresh: the warning is once per encoder
    assert enc.max_seq_length == 256 and enc.truncated_texts == 0
    fits, over = "word " * 254, "word " * 255  # 254 + 2 special tokens = 256 exactly; one more is cut
    assert enc.count_truncated([fits, over, "short", over + "tail"]) == 2
    with pytest.warns(UserWarning, match=r"^2 of the 3 texts are longer than the text model's 256-token limit"):
        x = enc.encode([over, "short", over + " a different ending"])
    np.testing.assert_array_equal(x[0], x[2])  # still cut the same way: the encodings do not change
    assert enc.truncated_texts == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning from the same encoder
        enc.encode([over, fits])
    assert enc.truncated_texts == 3


def test_missing_texts_encode_as_the_empty_text(encoder: TextEncoder) -> None:
    """None/NaN (a missing field read by pandas) failed with "object of type 'NoneType' has no len()"."""
    x = encoder.encode([None, float("nan"), pd.NA, np.float32("nan"), "", "a film"])
    for row in range(4):
        np.testing.assert_allclose(x[row], x[4], atol=1e-6)  # ~2e-7 apart: different length-sorted batches
    assert np.abs(x[5] - x[4]).max() > 0.05


def test_lone_surrogates_become_replacement_characters(encoder: TextEncoder) -> None:
    """A surrogateescape'd non-UTF-8 byte or a JSON "\\udcff" escape made the tokenizer raise a bare
    TypeError ("TextEncodeInput must be Union[...]"); a surrogate pair split into halves is its character."""
    got = encoder.encode(["caf\udce9 au lait", "clapper \ud83c\udfac board"])
    want = encoder.encode(["caf\ufffd au lait", "clapper 🎬 board"])
    np.testing.assert_array_equal(got, want)
    assert encoder.count_truncated(["caf\udce9"]) == 0


@pytest.mark.parametrize("bad, message", [
    ([b"caf\xe9"], r"^text 0 is of type bytes \(b'caf\\xe9'\), not a str; decode it first"),
    (["ok", 42], r"^text 1 is of type int \(42\), not a str$"),
    ("one text", r"^encode takes a list of texts, not one str: wrap it, encode\(\[text\]\)"),
])
def test_what_is_not_a_list_of_texts_is_refused_clearly(encoder: TextEncoder, bad: object, message: str) -> None:
    """A bare str was encoded one row per character; an int failed with "has no len()"."""
    with pytest.raises(TypeError, match=message):
        encoder.encode(bad)


@pytest.mark.parametrize("device, message", [
    ("bogus", "device 'bogus' is not a torch device"),
    ("CPU", "device 'CPU' is not a torch device"),
    ("cuda:7", "device 'cuda:7'"),
])
def test_bad_device_is_a_config_error_before_loading(device: str, message: str) -> None:
    """TextEncoder (the serving app builds one itself) let torch fail with a RuntimeError/AssertionError."""
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ConfigError, match=message):
        TextEncoder(device=device)


@pytest.mark.parametrize("batch_size", [0, -1, True, 2.5, "x"])
def test_batch_size_must_be_a_positive_integer(batch_size: object) -> None:
    """0 and -1 were silently read as 1, True as 1 and 2.5 as 2; 'x' failed with a bare ValueError."""
    with pytest.raises(ConfigError, match=r"^text batch_size must be a positive integer, got "):
        TextEncoder(batch_size=batch_size)


def test_model_folder_that_does_not_load_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """Corrupt weights raised a SafetensorError (no ConfigError, no path); a folder that is no model got a
    hint about network access."""
    packaged = Path(resolve_text_model(None)[0])
    broken = tmp_path / "broken model"
    broken.mkdir()
    for f in packaged.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).symlink_to(f, target_is_directory=f.is_dir())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="model folder") as err:
        TextEncoder(str(broken))
    assert str(broken) in str(err.value) and "SafetensorError" in str(err.value)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a model")
    with pytest.raises(ConfigError, match="model folder") as err:
        TextEncoder(str(junk))
    assert str(junk) in str(err.value) and "network" not in str(err.value)


def test_the_feature_store_records_and_reports_how_many_texts_were_cut(tmp_path: Path, capsys) -> None:
    """`recgoat encode text` writes the count into text.json (over every text, resumed chunks included) and
    its summary line says it; the encodings are those of the cut texts."""
    from features_helpers import toy_dataset
    from recgoat.features.cli import _summary
    from recgoat.features.store import FeatureConfig, encode_all
    from recgoat.io import read_json

    titles = ["word " * 300, "a short title", "word " * 300 + "another ending"]
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": titles})
    ds = toy_dataset(items, [[0, 1], [1, 2], [0, 2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the encoder's warning (one chunk's count, pointing into store.py) is not
        encode_all(ds, tmp_path, FeatureConfig(max_chars=5000), which=["text"], progress=False)
    # said on stderr even without progress output, as a problem with the data is
    assert "text: 2 of the 3 item texts are longer than the text model's 256-token limit" in capsys.readouterr().err
    assert read_json(tmp_path / "text.json")["truncated_texts"] == 2
    capsys.readouterr()
    _summary(tmp_path, ("text",))
    out = capsys.readouterr().out
    assert "2 texts cut at the text model's token limit" in out, out


def test_counting_leaves_the_shared_tokenizer_as_it_was(encoder: TextEncoder) -> None:
    """count_truncated called the model's tokenizer with truncation=False, which switches truncation off on it
    until its next call: the service, encoding in several threads, then fed 512-token texts to the model."""
    backend = encoder.model.tokenizer.backend_tokenizer
    encoder.model.tokenizer(["warm up"], truncation=True, max_length=encoder.max_seq_length)
    before = backend.truncation
    assert before is not None
    over = "word " * 300
    assert encoder.count_truncated([over, "short"]) == 1
    assert backend.truncation == before
