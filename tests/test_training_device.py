"""Training on another device (``trainer.device``): refused in one line where this machine lacks it, and on a CUDA
GPU the same function as on the CPU, repeatable to float rounding, and interchangeable with the CPU through saved
models and checkpoints.

The GPU tests run only where torch sees a CUDA GPU (CI has none; a session lent one runs them there, see
tests/README.md). Every trainable model and six RecGOAT variants, on 30 users of ml-latest-small with random
text, image and profile features (``recgoat_helpers.small_problem``).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from recgoat.errors import ConfigError
from recgoat.models import Recommender, get_model_class
from recgoat.training.trainer import TrainConfig, Trainer

from conftest import run_main
from recgoat_helpers import small_problem
from test_models_api_consistency import TRAINABLE

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@pytest.fixture(scope="module")
def problem(ml_small):
    return small_problem(ml_small)


# RecGOAT's other code paths: PyG's GAT layers (scatter-adds), GATv2, the naive fusions, the undebiased transport,
# the item graphs attended in full rather than for a step's items only
RECGOAT_VARIANTS = [{"gat_impl": "pyg"}, {"gat_v2": True}, {"fusion": "concat"}, {"fusion": "sum"},
                    {"ot_debias": False, "align_target": "id"}, {"train_item_subset": False, "gat_layers": 2}]
CASES = [(name, {}) for name in TRAINABLE] + [("recgoat", v) for v in RECGOAT_VARIANTS]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in params.items()) for name, params in CASES]


def _build(name: str, problem, seed: int = 0, **params) -> Recommender:
    ds, feats = problem
    torch.manual_seed(seed)
    cls = get_model_class(name)
    # float32 projections: RecGOAT's "auto" picks bfloat16 by the CPU, which is no question of the device
    extra = {"projection_dtype": "float32"} if name == "recgoat" else {}
    return cls.build(ds, {"embedding_dim": 8, **extra, **params}, feats if cls.needs_features else None)


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 256, "lr": 5e-3, "progress": False, "num_threads": 1, **kw})


# ------------------------------------------------------------------ anywhere: refusals
@pytest.mark.parametrize("bad", ["nonsense", "CPU", "meta", "cuda:x"])
def test_a_device_torch_cannot_compute_on_is_refused_by_the_configuration(bad):
    with pytest.raises(ValidationError, match=r"device must be a torch device that computes \(cpu, cuda"):
        TrainConfig(device=bad)


@NO_GPU
def test_training_on_an_absent_gpu_is_one_error_before_any_file(problem, tmp_path):
    model = _build("lightgcn", problem)
    with pytest.raises(ConfigError) as e:
        Trainer(_config(device="cuda"), run_dir=tmp_path / "run").fit(model, problem[0])
    assert str(e.value) == ("trainer.device 'cuda': no CUDA GPU is available to torch here; "
                            "use --set trainer.device=cpu")
    assert not (tmp_path / "run").exists()
    assert next(model.parameters()).device.type == "cpu"


@NO_GPU
@pytest.mark.parametrize("how", [["--device", "cuda"], ["--set", "trainer.device=cuda"]])
def test_the_command_line_says_so_in_one_line_before_loading_anything(monkeypatch, capsys, tmp_path, how):
    from recgoat.training import run

    monkeypatch.setattr(run, "load_dataset", lambda *a, **k: pytest.fail("the dataset was loaded first"))
    code, err = run_main(monkeypatch, capsys, "train", "--dataset", "ml-latest-small", "--model", "bprmf",
                         "--epochs", "1", "--run-dir", str(tmp_path / "run"), *how)
    assert code == 1
    assert err.strip().splitlines() == ["error: trainer.device 'cuda': no CUDA GPU is available to torch here; "
                                        "use --set trainer.device=cpu"]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ on a CUDA GPU
@GPU
@pytest.mark.parametrize("name, params", CASES, ids=CASE_IDS)
def test_loss_and_gradients_on_the_gpu_equal_the_cpu_ones(problem, name, params):
    """The same weights and batch (eval mode: no dropout) give the same loss terms and gradients on both
    devices, to float rounding: the GPU computes the CPU's function, hand-written backwards included."""
    ds = problem[0]
    cpu, gpu = _build(name, problem, **params), _build(name, problem, **params).to("cuda")
    train = ds.split_frame("train")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train), 64, replace=False)
    u = torch.as_tensor(train["user"].to_numpy()[pick], dtype=torch.long)
    p = torch.as_tensor(train["item"].to_numpy()[pick], dtype=torch.long)
    n = torch.as_tensor(rng.integers(0, ds.n_items, 64), dtype=torch.long)
    cpu.eval(), gpu.eval()
    on_cpu, on_gpu = cpu.loss(u, p, n), gpu.loss(u.cuda(), p.cuda(), n.cuda())
    assert set(on_cpu) == set(on_gpu)
    for k in on_cpu:
        assert float(on_gpu[k]) == pytest.approx(float(on_cpu[k]), rel=1e-4, abs=1e-6), k
    on_cpu["loss"].backward(), on_gpu["loss"].backward()
    for (k, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert (a.grad is None) == (b.grad is None), k
        if a.grad is not None:
            torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-3, atol=1e-6, msg=k)


@GPU
@pytest.mark.parametrize("name, params", CASES, ids=CASE_IDS)
def test_a_model_trains_on_the_gpu_repeatably_and_its_saved_model_scores_alike_on_the_cpu(problem, name, params,
                                                                                           tmp_path):
    ds = problem[0]
    deterministic = torch.are_deterministic_algorithms_enabled()
    results, models = [], []
    for run in ("a", "b"):
        model = _build(name, problem, **params)
        results.append(Trainer(_config(device="cuda"), run_dir=tmp_path / run).fit(model, ds))
        models.append(model)
    a, b = results
    assert next(models[0].parameters()).device.type == "cuda"  # stays where it trained
    assert torch.are_deterministic_algorithms_enabled() == deterministic  # the caller's setting back
    assert a["device"] == "cuda" and a["peak_gpu_memory_mb"] > 0
    assert all(math.isfinite(r["loss"]) for r in a["history"])
    # the same seed, the same run, to float rounding: cuSPARSE's sparse products (torch's on CUDA) do not sum in a
    # fixed order, and torch's deterministic mode has no alternative to them (seen: losses equal to ~1e-8)
    assert [r["epoch"] for r in a["history"]] == [r["epoch"] for r in b["history"]] == [0, 1]
    for ra, rb in zip(a["history"], b["history"]):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)
    for split in ("valid", "test"):
        assert b[split] == pytest.approx(a[split], abs=0.01)
    loaded = Recommender.load(tmp_path / "a" / "best")
    assert loaded.final_embeddings()[0].device.type == "cpu"
    users = list(range(ds.n_users))
    torch.testing.assert_close(loaded.score(users), models[0].score(users).cpu(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(loaded.recommend(0, 5)[0], models[0].recommend(0, 5)[0])


@GPU
@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_resumes_on_the_other_device(problem, tmp_path, first, then):
    """Weights and Adam's state move to the resuming run's device; the run goes on from its epoch."""
    ds = problem[0]
    run = tmp_path / "run"
    Trainer(_config(epochs=1, device=first), run_dir=run).fit(_build("recgoat", problem), ds)
    model = _build("recgoat", problem)
    result = Trainer(_config(epochs=2, device=then), run_dir=run).fit(model, ds)
    assert result["resumed_epochs"] == 1 and result["epochs_run"] == 2 and result["device"] == then
    assert next(model.parameters()).device.type == then
    assert [r["epoch"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())] == [0, 1]


# ------------------------------------------------------------------ the benchmark
def _bench(data, out, models: list[str], *sets: str):
    from recgoat.benchmark import load_config

    base = {"datasets": [{"name": str(data), "features": None}], "models": models, "seeds": [1], "epochs": 1,
            "out": str(out), "progress": False}
    return load_config(None, base, ["train.num_threads=1", "train.batch_size=64", *sets])


@NO_GPU
def test_a_benchmark_on_an_absent_gpu_is_refused_before_training_and_its_finished_cells_stand(tmp_path):
    """train.device is no setting of the experiment (as the thread count): finished cells stand under another one;
    cells still to train are refused at once, not failed one by one."""
    from recgoat.benchmark import run_benchmark
    from test_benchmark_paths import write_data

    data, out = write_data(tmp_path / "tiny"), tmp_path / "bench"
    assert run_benchmark(_bench(data, out, ["bprmf"])).trained == ["tiny/bprmf/seed1"]
    again = run_benchmark(_bench(data, out, ["bprmf"], "train.device=cuda"))
    assert again.skipped == ["tiny/bprmf/seed1"] and not again.trained and not again.failed
    with pytest.raises(ConfigError, match=r"^train.device 'cuda': no CUDA GPU is available to torch here; use "
                                          r"--set train.device=cpu$"):
        run_benchmark(_bench(data, out, ["bprmf", "lightgcn"], "train.device=cuda"))
    assert not (out / "runs" / "tiny" / "lightgcn").exists()
