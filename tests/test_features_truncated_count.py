"""The feature store's count of texts past the text model's token limit comes from the encoder's own count
while encoding (kept in each chunk's checkpoint), not from tokenizing every text a second time; a resumed
encode still reports the count over every text, chunks checkpointed by an older recgoat (no count kept)
included. The real packaged MiniLM, offline."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from features_helpers import toy_dataset  # noqa: E402
import recgoat.features.text as text_mod  # noqa: E402
from recgoat.features.store import FeatureConfig, encode_all  # noqa: E402
from recgoat.features.text import build_item_texts  # noqa: E402
from recgoat.io import read_json  # noqa: E402

LONG = "word " * 300
TITLES = [LONG, "a short title", LONG + "another ending", "short again", LONG + "a third one"]
LINE = ("text: 3 of the 5 item texts are longer than the text model's 256-token limit: it reads their start "
        "only (lower max_chars (--max-chars), or use a model with a longer limit)")


@pytest.fixture
def ds():
    items = pd.DataFrame({"item_id": list("abcde"), "title": TITLES})
    return toy_dataset(items, [[0, 1], [1, 2], [3, 4], [0, 4]])


@pytest.fixture
def tokenized(monkeypatch) -> list[int]:
    """The number of texts each count_truncated call tokenized."""
    calls: list[int] = []
    real = text_mod.TextEncoder.count_truncated

    def spy(self, texts):
        calls.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(text_mod.TextEncoder, "count_truncated", spy)
    return calls


def encode(ds, out: Path, **cfg) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the encoder's own warning is the store's to say, once
        encode_all(ds, out, FeatureConfig(max_chars=5000, chunk_size=2, **cfg), which=["text"], progress=False)


def test_store_count_is_the_encoders_and_each_text_is_tokenized_once(ds, tokenized, tmp_path, capsys) -> None:
    encode(ds, tmp_path / "f")
    assert read_json(tmp_path / "f" / "text.json")["truncated_texts"] == 3
    assert capsys.readouterr().err.count(LINE) == 1
    assert sum(tokenized) == ds.n_items  # was twice: per block in TextEncoder.encode, then all over in the store
    texts = build_item_texts(ds.items, ds.n_items, ds.text_fields, None, 5000)
    tokenized.clear()
    assert text_mod.TextEncoder().count_truncated(texts) == 3


def interrupted_encode(ds, out, monkeypatch, at_chunk: int) -> None:
    """``encode(ds, out)`` stopped by a Ctrl-C as the text encoder starts chunk ``at_chunk`` (1-based): the
    chunks before it are checkpointed in ``out/.partial``."""
    real = text_mod.TextEncoder.encode
    calls = []

    def killed(self, texts, on_progress=None):
        calls.append(len(texts))
        if len(calls) == at_chunk:
            raise KeyboardInterrupt
        return real(self, texts, on_progress)

    monkeypatch.setattr(text_mod.TextEncoder, "encode", killed)
    with pytest.raises(KeyboardInterrupt):
        encode(ds, out)
    monkeypatch.setattr(text_mod.TextEncoder, "encode", real)


def test_a_resumed_encode_reports_the_same_count(ds, tokenized, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "f"
    interrupted_encode(ds, out, monkeypatch, at_chunk=2)
    [partial] = (out / ".partial").iterdir()
    assert [read_json(partial / "00000.json")["truncated"]] == [1]  # the first chunk: LONG and a short title
    capsys.readouterr()
    tokenized.clear()
    encode(ds, out)
    assert read_json(out / "text.json")["truncated_texts"] == 3
    assert capsys.readouterr().err.count(LINE) == 1
    assert sum(tokenized) == ds.n_items - 2  # the resumed chunk kept its count


def test_chunks_checkpointed_without_a_count_are_counted_by_the_store(ds, tokenized, tmp_path, capsys,
                                                                      monkeypatch) -> None:
    """Checkpoints of an older recgoat hold no count: the store tokenizes those chunks' texts itself."""
    out = tmp_path / "f"
    interrupted_encode(ds, out, monkeypatch, at_chunk=3)
    [partial] = (out / ".partial").iterdir()
    for meta_path in sorted(partial.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        del meta["truncated"]
        meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    tokenized.clear()
    encode(ds, out)
    assert read_json(out / "text.json")["truncated_texts"] == 3
    assert capsys.readouterr().err.count(LINE) == 1
    assert sorted(tokenized) == [1, 2, 2]  # the last chunk while encoding, the two resumed ones by the store


def test_one_cut_text_is_said_in_the_singular(tmp_path, capsys) -> None:
    """"1 of the 3 item texts are longer…" and "1 texts cut…": a count of 1 takes the singular, in the store's
    note, the summary line of `recgoat encode` and the encoder's own warning (which the store still hides)."""
    from recgoat.features.cli import _summary

    items = pd.DataFrame({"item_id": list("abc"), "title": [LONG, "a short title", "short again"]})
    one = toy_dataset(items, [[0, 1], [1, 2], [0, 2]])
    encode(one, tmp_path / "f")  # warnings are errors: the encoder's singular warning is filtered as its plural
    assert capsys.readouterr().err.count("text: 1 of the 3 item texts is longer than the text model's 256-token "
                                         "limit: it reads its start only") == 1
    _summary(tmp_path / "f", ("text",))
    assert "; 1 text cut at the text model's token limit" in capsys.readouterr().out
    with pytest.warns(UserWarning, match=r"^1 of the 2 texts is longer than the text model's 256-token limit"):
        text_mod.TextEncoder().encode([LONG, "short"])
