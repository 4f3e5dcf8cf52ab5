"""A benchmark dataset given another dataset's feature folder is told so, with what to give instead.

The store's refusal said "made for dataset fingerprint … (other), but this dataset's is …: the data changed since
encoding; re-run `recgoat encode text`" for a folder of *other* data given by mistake (another dataset's, another
``max_users`` subset's): nothing had changed, re-encoding into that folder would overwrite the other dataset's
features, and a ``max_users`` subset cannot be encoded by `recgoat encode` at all. A folder of the same dataset whose
data changed is still refused with the store's words.

Benchmarks run on a constructed generic folder (40 users × 12 interactions) with a stand-in text matrix, VBPR;
every refusal comes before any cell trains.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest

from recgoat.benchmark import load_config, run_benchmark
from recgoat.errors import DataError

from test_benchmark_paths import write_data, write_text_features


def config(datasets: list[dict], out: Path):
    base = {"datasets": datasets, "models": ["vbpr"], "seeds": [1], "epochs": 1, "out": str(out), "progress": False}
    return load_config(None, base, ["train.num_threads=1", "train.batch_size=1024"])


@pytest.fixture()
def data(tmp_path) -> Path:
    return write_data(tmp_path / "tiny")


def test_another_subsets_features_are_named_as_such(data, tmp_path):
    feats = write_text_features({"name": str(data), "max_users": 30}, tmp_path / "feats30")  # made for 'tiny-u30'
    with pytest.raises(DataError) as e:
        run_benchmark(config([{"name": str(data), "max_users": 20, "features": str(feats)}], tmp_path / "b"))
    msg = str(e.value)
    assert "features of dataset tiny-u30, not of this benchmark's dataset tiny-u20" in msg, msg
    assert "key `features`" in msg and "`features: auto`" in msg and "cannot make features of a max_users" in msg
    assert "the data changed since encoding" not in msg and "re-run `recgoat encode" not in msg
    assert not (tmp_path / "b" / "runs").exists()


def test_another_datasets_features_are_named_as_such(data, tmp_path):
    other = write_data(tmp_path / "other")
    (other / "interactions.csv").write_text("\n".join((other / "interactions.csv").read_text().splitlines()[:-40]))
    feats = write_text_features({"name": str(other)}, tmp_path / "feats-other")
    with pytest.raises(DataError, match=r"features of dataset other, not of this benchmark's dataset tiny \(made "
                                        r"for dataset fingerprint \w+ \(other\), but this dataset's is \w+\); give "
                                        r"dataset tiny .*`recgoat encode all .*tiny --out DIR`"):
        run_benchmark(config([{"name": str(data), "features": str(feats)}], tmp_path / "b"))


def test_the_same_dataset_changed_since_encoding_keeps_the_stores_words(data, tmp_path):
    feats = write_text_features({"name": str(data)}, tmp_path / "feats")
    lines = (data / "interactions.csv").read_text().splitlines()
    (data / "interactions.csv").write_text("\n".join(lines[:-12]) + "\n")  # one user fewer
    with pytest.raises(DataError, match="the data changed since encoding; re-run `recgoat encode text`"):
        run_benchmark(config([{"name": str(data), "features": str(feats)}], tmp_path / "b"))
