"""A benchmark configuration error names where the wrong value came from: the ``--set`` item, or the file.

- An error a ``--set`` caused was prefixed with the config file's name (``run.yaml: train.epoch: unknown key`` for
  ``--set train.epoch=3``), sending the reader to a file that holds no such key; it now names the ``--set`` item.
- ``seeds: 2026`` or ``seeds: "2026,2027"`` (the form ``--seeds`` takes) got pydantic's bare "Input should be a
  valid list"; the message now shows the form wanted in YAML and on the command line, and the value given.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from recgoat.benchmark import load_config
from recgoat.errors import ConfigError

BASE = "datasets: [ml-latest-small]\nmodels:\n  - name: lightgcn\n    params: {embedding_dim: 8}\nseeds: [1]\n"


def write(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("item, says", [
    ("train.epoch=3", "train.epoch: unknown key (did you mean 'epochs'?"),
    ("models.lightgcn.params.n_layer=2", "bad params: n_layer: unknown key (did you mean 'n_layers'?"),
    ("seeds=7", "seeds: a list of integers"),
])
def test_an_error_of_a_set_item_names_that_item_not_the_file(tmp_path, item, says):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path), None, ["train.lr=0.01", item])
    assert str(e.value).startswith(f"--set {item}: ") and says in str(e.value)
    assert "run.yaml" not in str(e.value)


def test_an_error_of_the_file_still_names_the_file(tmp_path):
    path = write(tmp_path, BASE.replace("embedding_dim", "embeding_dim"))
    with pytest.raises(ConfigError, match=r"run\.yaml: model 'lightgcn': bad params: embeding_dim: unknown key"):
        load_config(path, None, ["train.lr=0.01"])
    with pytest.raises(ConfigError, match=r"run\.yaml: train\.lrr: unknown key"):
        load_config(write(tmp_path, BASE + "train: {lrr: 1}\n"), None, ["train.epochs=2"])


@pytest.mark.parametrize("value, shown", [('"2026,2027"', "'2026,2027'"), ("2026", "2026")])
def test_seeds_not_a_list_says_the_form_wanted(tmp_path, value, shown):
    path = write(tmp_path, BASE.replace("seeds: [1]", f"seeds: {value}"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "run.yaml: seeds: a list of integers, e.g. seeds: [2026, 2027]" in msg
    assert "--seeds 2026,2027" in msg and msg.endswith(f"got {shown}")
