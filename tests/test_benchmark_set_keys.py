"""`--set` reaches entries whose key holds `.` or `=` (labels such as `BPRMF.hand`, dataset folders such as
`my.data`, grid points such as `lightgcn+lr=0.01`), and `--report-only --out FOLDER -m GRID` selects the grid's
points from the folder's record as `-c FILE -m GRID` selects them from the file."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recgoat.benchmark import load_config, run_benchmark
from recgoat.benchmark.cli import app
from recgoat.benchmark.runner import RECORD, load_recorded_config
from recgoat.errors import ConfigError
from test_benchmark_grid import GRID_FILE

torch.set_num_threads(1)

MODELS = {"models": [{"name": "bprmf", "label": "BPRMF.hand"}, {"name": "bprmf", "label": "BPRMF"}, "mostpop"]}


def _config(tmp_path: Path, tree: dict, sets: list[str]):
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps({"datasets": ["ml-latest-small"], "models": ["mostpop"], **tree}))  # JSON is YAML
    return load_config(path, None, sets)


def test_a_label_with_dots_is_reached_and_the_longest_key_wins(tmp_path):
    cfg = _config(tmp_path, MODELS, ["models.BPRMF.hand.train.lr=0.01", "models.BPRMF.train.lr=0.02"])
    assert {m.key: m.train.get("lr") for m in cfg.models} == {"BPRMF.hand": 0.01, "BPRMF": 0.02, "mostpop": None}


def test_a_dataset_folder_with_dots_is_reached(tmp_path):
    folder = tmp_path / "my.data"
    cfg = _config(tmp_path, {"datasets": ["ml-latest-small", "reviews_Baby.json.gz", str(folder)]},
                  ["datasets.reviews_Baby.json.gz.max_users=50", f"datasets.{folder}.features=null"])
    assert [(d.name, d.max_users, d.features) for d in cfg.datasets][1:] == [
        ("reviews_Baby.json.gz", 50, "auto"), (str(folder), None, None)]


def test_a_grid_points_label_with_equals_signs_is_reached(tmp_path):
    """A run's record holds a grid as its points: `--set` on one of them, with `=` in its key and as the value's."""
    cfg = _config(tmp_path, {"models": [{"name": "lightgcn", "grid": {"params.n_layers": [1, 2]}}]}, [])
    (tmp_path / RECORD).write_text(json.dumps(cfg.model_dump(mode="json")))
    rec = load_recorded_config(tmp_path, None, ["models.lightgcn+n_layers=2.train.lr=0.03",
                                                "models.lightgcn+n_layers=1.params.embedding_dim=8"])
    assert {m.key: (m.train.get("lr"), m.params.get("embedding_dim")) for m in rec.models} == {
        "lightgcn+n_layers=1": (None, 8), "lightgcn+n_layers=2": (0.03, None)}


@pytest.mark.parametrize("item, message", [
    # a real miss keeps its error, naming the first segment and the entries there are
    ("models.BPRMF.other.train.lr=0.01", None),  # `BPRMF` then key `other`: a setting, checked by the config
    ("models.nope.train.lr=0.01", "no entry 'nope' in models; its entries: 'BPRMF.hand', 'BPRMF', 'mostpop'"),
    ("models.BPRMF.hand=1", "cannot replace a whole list entry"),
    ("models.BPRMF.hand", "--set expects key=value"),
])
def test_real_misses_keep_their_errors(tmp_path, item, message):
    with pytest.raises(ConfigError, match=message and message.replace("(", r"\(")) as e:
        _config(tmp_path, MODELS, [item])
    assert "Traceback" not in str(e.value)


def test_the_record_selects_a_grid_by_its_name_as_the_file_does(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(GRID_FILE)
    full = load_config(path)
    (tmp_path / RECORD).write_text(json.dumps(full.model_dump(mode="json")))
    for chosen in (["lightgcn"], ["mf"], ["mostpop", "lightgcn"]):
        from_file = [m.model_dump() for m in load_config(path, {"models": chosen}).models]
        assert [m.model_dump() for m in load_recorded_config(tmp_path, {"models": chosen}).models] == from_file, chosen


def test_report_only_with_out_alone_reports_a_grid_by_its_name(tmp_path):
    out = tmp_path / "bench"
    base = {"datasets": ["ml-latest-small"], "models": ["mostpop", {"name": "bprmf", "grid": {"params.embedding_dim":
                                                                                              [4, 8]}}],
            "seeds": [2026], "epochs": 1, "out": str(out), "progress": False}
    run = run_benchmark(load_config(None, base, ["datasets.ml-latest-small.max_users=60",
                                                 "datasets.ml-latest-small.features=null", "train.num_threads=1"]))
    assert not run.failed and len(run.trained) == 3
    res = CliRunner().invoke(app, ["--out", str(out), "--report-only", "-m", "bprmf"])
    assert res.exit_code == 0, res.output
    assert "bprmf+embedding_dim=4" in res.output and "bprmf+embedding_dim=8" in res.output
    assert "mostpop" not in res.output
