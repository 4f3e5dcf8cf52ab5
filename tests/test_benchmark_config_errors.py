"""`recgoat benchmark` runner and `make demo`: configuration errors before anything trains, failed cells
rerun with a corrected configuration, paths, seeds.

Tiny benchmarks (60 users of the embedded ml-latest-small, mostpop/bprmf, one seed, 1 epoch, no features);
every test runs in a fresh folder.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from recgoat.benchmark import BenchmarkConfig, load_config, run_benchmark
from recgoat.benchmark.runner import check_report_cells
from recgoat.errors import ConfigError, DataError

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "recgoat" / "configs"
DATASET = "ml-latest-small-u60"
SMALL = {"name": "ml-latest-small", "max_users": 60, "features": None}


def make_config(out: Path, sets: tuple[str, ...] = (), **over):
    base = {"datasets": [SMALL], "models": ["mostpop", "bprmf"], "seeds": [2026], "epochs": 1,
            "out": str(out), "progress": False}
    return load_config(None, {**base, **over}, ["train.num_threads=1", "train.batch_size=1024", *sets])


# ------------------------------------------------------------------------- configuration errors, up front
@pytest.mark.parametrize("prepare, message", [
    ({"k_core": -3}, "dataset later: bad prepare option: k_core must be an integer >= 0"),
    ({"kcore": 3}, "dataset later: bad prepare option: PrepareConfig.__init__() got an unexpected keyword "
                   "argument 'kcore'"),
    # load_dataset splits with split_seed: this seed was silently replaced
    ({"seed": 7}, "dataset later: prepare.seed: the split seed is the benchmark's `split_seed`"),
    # no validation/test split: every cell failed "has no train/valid/test split" once its turn came
    ({"split": "none"}, "dataset later: prepare.split none leaves no validation and test split"),
])
def test_bad_prepare_options_are_refused_before_anything_trains(tmp_path, prepare, message):
    """A bad `prepare` of the second dataset was found when its turn came, after the first dataset's cells
    had trained, and the message named neither the dataset nor the file."""
    out = tmp_path / "b"
    datasets = [SMALL, {**SMALL, "label": "later", "prepare": prepare}]
    cfg = BenchmarkConfig(datasets=datasets, models=["mostpop"], seeds=[2026], train={"epochs": 1}, out=out,
                          progress=False)
    with pytest.raises(ConfigError) as e:
        run_benchmark(cfg)
    assert str(e.value).startswith(message), str(e.value)
    assert not out.exists()  # nothing trained, not even benchmark.json
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps({"datasets": datasets, "models": ["mostpop"], "out": str(out)}))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def test_missing_later_dataset_is_refused_before_anything_trains(tmp_path):
    """The error named the path alone, not which entry of the config gave it: it names the dataset's label (given,
    or the folder's name) and the key."""
    out = tmp_path / "b"
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=f"^dataset nowhere: name {missing}: no such dataset name or folder"):
        run_benchmark(make_config(out, datasets=[SMALL, missing], models=["mostpop"]))
    with pytest.raises(DataError, match=f"^dataset mydata: name {missing}: no such dataset name or folder"):
        run_benchmark(make_config(out, datasets=[SMALL, {"name": missing, "label": "mydata"}], models=["mostpop"]))
    assert not out.exists()


def test_a_misspelt_dataset_name_is_named_once(tmp_path):
    """The label of an entry given by name is the name: the error said it twice ("dataset ml-latest-smal: name
    ml-latest-smal: no such …"); the did-you-mean suggestion stays."""
    out = tmp_path / "b"
    with pytest.raises(DataError) as e:
        run_benchmark(make_config(out, datasets=[SMALL, "ml-latest-smal"], models=["mostpop"]))
    assert str(e.value).startswith("dataset ml-latest-smal: no such dataset name or folder (did you mean "
                                   "'ml-latest-small'? "), str(e.value)
    assert str(e.value).count("ml-latest-smal:") == 1
    assert not out.exists()


def test_missing_feature_folder_is_refused_before_anything_trains(tmp_path):
    """A model needing features on a folder never encoded (the packaged benchmark-ml100k.yaml before `recgoat
    encode all`): the cells of the models before it trained, then the benchmark stopped. The error names the
    dataset entry and its `features` key, not the path alone."""
    out = tmp_path / "b"
    missing = str(tmp_path / "features")
    with pytest.raises(DataError, match=f"^dataset {DATASET}: features {missing}: feature folder not found"):
        run_benchmark(make_config(out, datasets=[{**SMALL, "features": missing}], models=["mostpop", "vbpr"]))
    assert not out.exists()


@pytest.mark.parametrize("model, message", [
    ("{name: nosuch}", "unknown model 'nosuch'"),
    ("{name: bprmf, params: {embedding_dim: abc}}", "model 'bprmf': bad params: embedding_dim: Input should be"),
    ("{name: bprmf, train: {lr: -1}}", "model 'bprmf': bad train override: lr: Input should be"),
])
def test_model_errors_of_a_config_file_name_the_file(tmp_path, model, message):
    path = tmp_path / "bench.yaml"
    path.write_text(f"datasets: [ml-latest-small]\nmodels: [mostpop, {model}]\nout: {tmp_path / 'b'}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def test_epochs_option_with_an_empty_train_section(tmp_path):
    """`train:` with its settings commented out reads as null: --epochs was a TypeError traceback."""
    path = tmp_path / "bench.yaml"
    path.write_text("datasets: [ml-latest-small]\nmodels: [bprmf]\ntrain:\n  # epochs: 200\n")
    assert load_config(path, {"epochs": 3}).train.epochs == 3
    path.write_text("datasets: [ml-latest-small]\nmodels: [bprmf]\ntrain: [1]\n")
    with pytest.raises(ConfigError, match=f"^{path}: train: must be a mapping"):
        load_config(path, {"epochs": 3})


def test_models_and_dataset_options_choose_among_the_config_entries(tmp_path):
    """`-c FILE --models lightgcn` ran LightGCN with default params instead of the file's, and a labelled entry
    (`--models recgoat-ml100k`) was an unknown model; `--dataset` dropped the file's max_users/features."""
    cfg = load_config(CONFIGS / "benchmark-default.yaml", {"models": ["lightgcn", "mostpop", "vbpr"]})
    assert [(m.key, m.params) for m in cfg.models] == [
        ("lightgcn", {"embedding_dim": 64, "n_layers": 3, "reg_weight": 1e-4}), ("mostpop", {}), ("vbpr", {})]
    cfg = load_config(CONFIGS / "benchmark-ml100k.yaml", {"models": ["recgoat-ml100k", "recgoat"]})
    assert [(m.key, m.name, m.preset) for m in cfg.models] == [("recgoat-ml100k", "recgoat", "ml100k"),
                                                               ("recgoat", "recgoat", None)]
    path = tmp_path / "bench.yaml"
    path.write_text("datasets:\n  - {name: ml-latest-small, max_users: 60, features: null}\nmodels: [mostpop]\n")
    cfg = load_config(path, {"datasets": ["ml-latest-small", "ml100k-mm"]})
    assert [(d.name, d.max_users, d.features) for d in cfg.datasets] == [("ml-latest-small", 60, None),
                                                                         ("ml100k-mm", None, "auto")]


# ------------------------------------------------------------------------------------ failed cells, resume
def test_diverged_cell_runs_again_once_its_settings_are_fixed(tmp_path):
    """The failure says "lower the learning rate"; doing so was refused ("train differ") because the failed
    cell's cell.json held the old lr, though the cell had no result to protect."""
    out = tmp_path / "b"
    bad = ("models.bprmf.train.lr=1e30", "models.bprmf.params.reg_weight=1e30")
    run = run_benchmark(make_config(out, bad))
    assert list(run.failed) == [f"{DATASET}/bprmf/seed2026"] and run.trained == [f"{DATASET}/mostpop/seed2026"]
    run = run_benchmark(make_config(out))
    assert run.trained == [f"{DATASET}/bprmf/seed2026"] and not run.failed
    cell = out / "runs" / DATASET / "bprmf" / "seed2026"
    assert not (cell / "error.txt").exists()
    assert json.loads((cell / "cell.json").read_text())["train"]["lr"] == 1e-3
    assert len(check_report_cells(make_config(out))) == 2
    # an interrupted cell with a checkpoint (no failure) is still protected from a changed configuration
    (cell / "result.json").unlink()
    with pytest.raises(ConfigError,
                       match=r"bprmf/seed2026: was run with a different configuration \(train\.lr: 0\.001 → 0\.01\)"):
        run_benchmark(make_config(out, ("models.bprmf.train.lr=0.01",)))


def test_model_that_could_not_be_built_does_not_claim_its_folder(tmp_path):
    """A ConfigError from Model.build stops the benchmark; the corrected params were then refused ("params
    differ") because cell.json, written before the build, recorded the failed ones."""
    from recgoat.models.base import MODELS, register
    from recgoat.models.bprmf import BPRMF

    @register("unbuildable_probe")
    class Probe(BPRMF):
        @classmethod
        def build(cls, dataset, config=None, features=None):
            if (config or {}).get("embedding_dim") == 7:
                raise ConfigError("unbuildable_probe: embedding_dim 7 cannot be built")
            return super().build(dataset, config, features)

    try:
        out = tmp_path / "b"
        with pytest.raises(ConfigError, match="cannot be built"):
            run_benchmark(make_config(out, ("models.unbuildable_probe.params.embedding_dim=7",),
                                      models=["unbuildable_probe"]))
        run = run_benchmark(make_config(out, ("models.unbuildable_probe.params.embedding_dim=8",),
                                        models=["unbuildable_probe"]))
        assert run.trained == [f"{DATASET}/unbuildable_probe/seed2026"] and not run.failed
    finally:
        MODELS.pop("unbuildable_probe", None)


# ------------------------------------------------------------------------------------------ paths, seeds
def test_dataset_folder_by_relative_or_absolute_path_is_one_configuration(tmp_path, monkeypatch):
    """A cell run on `data/lines` was refused ("data differ") when the same folder was given by its absolute
    path, by a resumed run and by --report-only."""
    from recgoat.datasets import load, save_lines
    from conftest import subset_users

    monkeypatch.chdir(tmp_path)
    save_lines(subset_users(load("ml-latest-small"), 60), tmp_path / "data" / "lines")
    out = Path("b")  # relative, as the dataset
    assert len(run_benchmark(make_config(out, datasets=["data/lines"], models=["mostpop"])).trained) == 1
    run = run_benchmark(make_config(out, datasets=[str(tmp_path / "data" / "lines")], models=["mostpop"]))
    assert run.skipped == ["lines/mostpop/seed2026"] and not run.trained
    assert len(check_report_cells(make_config(out, datasets=["./data/../data/lines"], models=["mostpop"]))) == 1
    # an already split folder takes no max_users: refused before the first dataset's cells train
    with pytest.raises(ConfigError, match="^dataset data/lines: already split; max_users/prepare do not apply"):
        run_benchmark(make_config(Path("b2"), datasets=[SMALL, {"name": "data/lines", "max_users": 5}]))
    assert not Path("b2").exists()


def test_a_seed_beyond_torch_range_trains(tmp_path):
    """torch.manual_seed takes no seed >= 2**64: every cell of such a seed failed with "Overflow when
    unpacking long long" (the trainer itself reduces its seeds modulo 2**63)."""
    run = run_benchmark(make_config(tmp_path / "b", seeds=[2**64]))
    assert not run.failed and len(run.trained) == 2, run.failed


# ------------------------------------------------------------------------------------------------- demo
@pytest.mark.parametrize("models, message", [
    ("nosuch", "--models: unknown model 'nosuch'"),
    ("bprmf,bprmf", "--models: models repeat: ['bprmf']"),
    (",", "--models: no model given in ','"),
])
def test_demo_refuses_bad_models_before_encoding(tmp_path, capsys, monkeypatch, models, message):
    """An unknown model was refused only after the dataset's features were encoded (over a minute)."""
    import recgoat.features
    from recgoat.demo import main

    def encode_all(*a, **k):
        raise AssertionError("encoded before the models were checked")

    monkeypatch.setattr(recgoat.features, "encode_all", encode_all)
    assert main(["--out", str(tmp_path / "demo"), "--models", models]) == 1
    assert message in " ".join(capsys.readouterr().err.split())  # rich wraps at the terminal width
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("key, value", [("seeds", [True]), ("seeds", [2026, False]), ("split_seed", True)])
def test_boolean_seeds_are_refused(key, value):
    """pydantic reads true/false as 1/0: `seeds: [true]` (a YAML slip) trained seed 1 without a word."""
    with pytest.raises(ValidationError, match="seeds are integers"):
        BenchmarkConfig(datasets=["ml-latest-small"], models=["bprmf"], **{key: value})
