"""What each model used, in the benchmark's report: the feature views its cells read (absent and empty ones named,
template-made profiles labelled), how many seeds stopped at the epoch cap, and how many learned next to nothing.

Failed before its fix: after `recgoat benchmark -d txt -m bprmf,lattice,recgoat`, none of results.md, report.html
or results.tex said that the image view was missing, that RecGOAT used text plus template-made profiles, or that
every cell stopped at the epoch cap; the BPR-plateau warning went to stderr only. All of it is in the cells'
result.json (and log.jsonl)."""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import pytest
import torch

from recgoat.benchmark import load_config, run_benchmark
from recgoat.benchmark.report import aggregate, views_text
from test_benchmark_paths import write_data, write_text_features

torch.set_num_threads(1)

CAP = "stopped at the epoch cap (2 epochs) in 2 of 2 seeds, not by early stopping"
PLATEAU = "BPR loss at ln 2 in every epoch in 2 of 2 seeds: it learned next to nothing"
EXPECTED = {  # model → the start of its line, and whether the cap / the plateau are named
    "mostpop": ("views: no side features", False, False),
    "bprmf": ("views: no side features", True, True),
    "vbpr": ("views: text; absent: image", True, False),
    "recgoat": ("views: text; absent: image, profile", True, False),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny benchmark on a text-only feature folder, two seeds of two epochs each; BPR-MF at a learning rate
    too small to move its loss off ln 2."""
    tmp = tmp_path_factory.mktemp("used")
    spec = {"name": str(write_data(tmp / "tiny")), "features": str(tmp / "feats")}
    write_text_features({"name": spec["name"]}, Path(spec["features"]))
    models = ["mostpop", {"name": "bprmf", "train": {"lr": 1e-9}}, "vbpr", "recgoat"]
    cfg = load_config(None, {"datasets": [spec], "models": models, "seeds": [1, 2], "epochs": 2,
                             "out": str(tmp / "out"), "progress": False},
                      ["train.num_threads=1", "train.batch_size=1024", "train.patience=5", "train.lr=0.05"])
    run = run_benchmark(cfg)
    assert not run.failed, run.failed
    return tmp / "out"


def test_results_md_says_what_each_model_used(bench):
    md = (bench / "results.md").read_text()
    section = md.split("### What each model used\n", 1)[1].split("\n## ", 1)[0]
    lines = {line[2:].split(": ", 1)[0]: line[2:].split(": ", 1)[1] for line in section.strip().splitlines()}
    assert list(lines) == list(EXPECTED)
    for model, (views, capped, flat) in EXPECTED.items():
        assert lines[model].startswith(views), (model, lines[model])
        assert (CAP in lines[model]) is capped, (model, lines[model])
        assert (PLATEAU in lines[model]) is flat, (model, lines[model])


def test_report_html_and_tex_carry_the_same_lines(bench):
    md = (bench / "results.md").read_text()
    page = (bench / "report.html").read_text()
    tex = (bench / "results.tex").read_text()
    assert "<h3>What each model used</h3>" in page and "% tiny: what each model used" in tex
    for line in md.split("### What each model used\n", 1)[1].strip().splitlines():
        model, text = line[2:].split(": ", 1)
        assert f"<li><b>{model}</b>: {html.escape(text)}</li>" in page
        assert f"%   {model}: {text}" in tex


def test_results_csv_keeps_its_columns_and_adds_used_last(bench):
    csv = pd.read_csv(bench / "results.csv")
    runs = pd.read_csv(bench / "runs.csv")
    assert list(csv.columns) == [*aggregate(runs).columns, "used"]
    assert csv.set_index("model").loc["vbpr", "used"].startswith("views: text; absent: image; " + CAP)
    # runs.csv: one row per cell, the new columns after the metrics
    assert list(runs.columns)[-3:] == ["views", "at_epoch_cap", "plateau"]
    assert runs.groupby("model")["plateau"].all().to_dict() == {"bprmf": True, "mostpop": False, "recgoat": False,
                                                               "vbpr": False}


def test_views_text_names_empty_views_and_template_made_profiles():
    assert views_text({"modalities_used": ["text", "image"], "empty_views": ["image"]}) == \
        "text, image (empty: no item has one)"
    recgoat = {"modalities_used": ["text"], "modalities_missing": ["image"], "profile_branch": True,
               "profile_missing": False, "profile_source": "(template-made profile, no LLM)"}
    assert views_text(recgoat) == "text, profile (template-made profile, no LLM); absent: image"
    assert views_text({**recgoat, "profile_source": "openai:QwQ-32B"}).startswith("text, profile (openai:QwQ-32B)")
    assert views_text({"modalities_used": [], "modalities_missing": [], "profile_branch": False}) == \
        "none (ID embeddings only)"
    assert views_text({}) == "no side features"
