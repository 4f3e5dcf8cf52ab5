"""`recgoat benchmark` preflight: models that cannot run on a dataset's features are refused before
anything trains; the significance line with one seed, and a t-test on zero-variance differences.

Benchmarks run on constructed generic folders (40 users × 12 interactions), MostPop/BPR-MF, 1 epoch, one
thread; a feature-reading cell is refused before its features would be encoded (``resolve_features`` is
replaced by a stub that fails the test if reached). The report tests write their inputs by hand.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from recgoat.benchmark import load_config, run_benchmark, runner
from recgoat.benchmark.report import aggregate, paired_test, significance, significance_line
from recgoat.errors import ConfigError

torch.set_num_threads(1)

METRIC = "recall@20"
# fixed fusion weights for both item views: RecGOAT refuses them where the features lack a view
GAMMAS = ["models.recgoat.params.gamma_t=0.3", "models.recgoat.params.gamma_v=0.2"]


def write_data(folder: Path, items: dict[str, list] | None = None) -> Path:
    """A generic-layout folder: 40 users with 12 distinct items each among 30; ``items`` columns (besides
    item_id) give an items.csv (a ``title`` is item text, an ``image`` an image path)."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), 1.0, t) for u in range(40) for t, i in enumerate(rng.choice(30, 12, replace=False))]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).to_csv(folder / "interactions.csv",
                                                                               index=False)
    if items:
        pd.DataFrame({"item_id": range(30), **items}).to_csv(folder / "items.csv", index=False)
    return folder


def config(datasets: list[dict], out: Path, models: list[str], sets: tuple[str, ...] = ()):
    base = {"datasets": datasets, "models": models, "seeds": [1], "epochs": 1, "out": str(out), "progress": False}
    return load_config(None, base, ["train.num_threads=1", "train.batch_size=1024", *sets])


@pytest.fixture
def no_encoding(monkeypatch) -> None:
    """Features are never encoded or read: a refused benchmark must stop before its first such cell."""
    def refuse(*a, **kw):
        raise AssertionError("a cell's features were resolved: the benchmark was not refused up front")

    monkeypatch.setattr("recgoat.benchmark.checks.resolve_features", refuse)


# ------------------------------------------------------------------------------------- preflight: pairs
def test_vbpr_on_auto_features_of_a_dataset_without_item_text_or_images_is_refused_up_front(
        tmp_path, trained_runs, no_encoding):
    """`features: auto` on a dataset with interactions only encodes nothing (user profiles are written from item
    text): VBPR's ConfigError came in the cell loop, after mostpop had trained, and no report was written."""
    data, out = write_data(tmp_path / "plain"), tmp_path / "b"
    with pytest.raises(ConfigError, match=r"^dataset plain: model 'vbpr' needs features but `features: auto` "
                                          r"encodes none for it: its items have no text or images"):
        run_benchmark(config([{"name": str(data), "features": "auto"}], out, ["mostpop", "vbpr"]))
    assert trained_runs == [] and not out.exists()


def test_every_pair_that_cannot_run_is_listed_in_one_error(tmp_path, trained_runs, no_encoding):
    """Three datasets × (mostpop, vbpr, recgoat with fixed weights for both views): each pair that cannot run
    is named once with why, in one error, and nothing trains (the old code stopped at the first one, midway).
    RecGOAT on text and profiles is listed too: its fixed weight of the image view would be ignored."""
    plain = write_data(tmp_path / "plain")
    texty = write_data(tmp_path / "texty", {"title": [f"t{i}" for i in range(30)]})
    nulled = write_data(tmp_path / "nulled")
    out = tmp_path / "b"
    datasets = [{"name": str(plain), "features": "auto"}, {"name": str(texty), "features": "auto"},
                {"name": str(nulled), "features": None}]
    with pytest.raises(ConfigError) as e:
        run_benchmark(config(datasets, out, ["mostpop", "vbpr", "recgoat"], tuple(GAMMAS)))
    head = "5 (dataset, model) pairs cannot run, so nothing was trained: "
    msg = str(e.value)
    assert msg.startswith(head)
    parts = msg.removeprefix(head).split("; dataset ")
    assert [p.removeprefix("dataset ").split(": model ")[0] + ":" + p.split(": model ")[1].split(" ")[0]
            for p in parts] == ["plain:'vbpr'", "plain:'recgoat'", "texty:'recgoat'", "nulled:'vbpr'",
                                "nulled:'recgoat'"]
    # plain has no item text: auto encodes nothing for it (profiles are written from item text)
    assert all("needs features but `features: auto` encodes none for it" in p for p in parts[:2])
    assert "model.params.gamma_v weights the image view" in parts[2]
    assert parts[2].endswith("(`features: auto` encodes text and profile for it)")
    assert parts[3].endswith("needs features but `features` is null; give a feature folder or `auto`")
    assert trained_runs == [] and not out.exists()


def test_recgoat_setting_that_fits_no_features_of_the_dataset_is_refused_up_front(tmp_path, trained_runs,
                                                                                   no_encoding):
    """A RecGOAT param the config accepts but the features do not: with text and images, a fixed gamma_t alone
    leaves the image view's weight unset (a ConfigError of the constructor, seen only once features exist)."""
    data = write_data(tmp_path / "mm", {"title": [f"t{i}" for i in range(30)],
                                        "image": [f"img/{i}.jpg" for i in range(30)]})
    out = tmp_path / "b"
    with pytest.raises(ConfigError, match=r"^dataset mm: model 'recgoat' cannot be built: recgoat: fixed fusion "
                                          r"weights need a gamma for every view used; .*encodes text and image and "
                                          r"profile for it\)$"):
        run_benchmark(config([{"name": str(data), "features": "auto"}], out, ["mostpop", "recgoat"],
                             ("models.recgoat.params.gamma_t=0.3",)))
    assert trained_runs == [] and not out.exists()


def test_feature_folder_without_the_kinds_a_model_needs_is_refused_up_front(tmp_path, trained_runs, no_encoding):
    """A given folder: its files say which kinds it holds, without reading them (a profile alone cannot feed
    VBPR; a folder with no feature file feeds nothing). Both were found in the cell loop, midway."""
    data, out = write_data(tmp_path / "plain"), tmp_path / "b"
    profiles, empty = tmp_path / "feats-profile", tmp_path / "feats-empty"
    profiles.mkdir()
    empty.mkdir()
    (profiles / "profile.npy").write_bytes(b"")  # existence is all the preflight reads
    datasets = [{"name": str(data), "label": "p", "features": str(profiles)},
                {"name": str(data), "label": "e", "features": str(empty)}]
    with pytest.raises(ConfigError) as e:
        run_benchmark(config(datasets, out, ["mostpop", "vbpr"]))
    msg = str(e.value)
    assert msg.startswith("2 (dataset, model) pairs cannot run")
    assert "dataset p: model 'vbpr' cannot be built: vbpr needs item text or image features" in msg
    assert f"(its feature folder {profiles} holds profile)" in msg
    assert f"dataset e: model 'vbpr' needs features but its feature folder {empty} holds no feature file" in msg
    assert trained_runs == [] and not out.exists()



def test_stand_in_features_are_as_wide_as_a_given_folders_files(tmp_path):
    """A given folder's widths are read from its files' headers (a model may check them); an unreadable file
    or `auto` (widths unknown before encoding) gets a stand-in width, and the check goes on."""
    np.save(tmp_path / "text.npy", np.zeros((30, 16), np.float32))
    (tmp_path / "profile.npy").write_bytes(b"")  # unreadable: load_features names it when the cell comes
    feats = runner._stand_in_features(("text", "profile"), str(tmp_path))
    assert feats.text.shape == (1, 16) and feats.image is None and feats.profile.shape == (1, runner._STAND_IN_DIM)
    assert runner._stand_in_features(("text",)).text.shape == (1, runner._STAND_IN_DIM)

def test_every_bad_model_param_is_named_in_one_error(tmp_path):
    """Two models with bad params: the first stopped the check and the second was found on the next run."""
    with pytest.raises(ConfigError) as e:
        config([{"name": str(write_data(tmp_path / "d")), "features": None}], tmp_path / "b", ["bprmf", "lightgcn"],
               ("models.bprmf.params.embedding_dim=abc", "models.lightgcn.params.n_layers=-1"))
    msg = str(e.value)
    assert msg.startswith("model 'bprmf': bad params: embedding_dim: Input should be a valid integer")
    assert "; model 'lightgcn': bad params: n_layers:" in msg


def test_preflight_build_leaves_the_random_state_alone():
    """The preflight builds each model once (one user, one item); the global generators the cells then seed
    and draw from are left exactly as they were, so a valid benchmark's results do not change."""
    torch.manual_seed(123)
    np.random.seed(7)
    t0, n0 = torch.random.get_rng_state(), np.random.get_state()
    feats = runner._stand_in_features(("text", "image", "profile"))
    for name in ("vbpr", "recgoat", "bprmf", "lightgcn"):
        assert runner.build_problem(runner.ModelSpec(name=name), feats if name != "bprmf" else None) is None
    assert torch.equal(torch.random.get_rng_state(), t0)
    n1 = np.random.get_state()
    assert n1[0] == n0[0] and np.array_equal(n1[1], n0[1]) and n1[2:] == n0[2:]


def test_dataset_loaded_for_auto_features_is_reused_by_the_cells(tmp_path, monkeypatch, trained_runs):
    """Seeing what `auto` will encode loads the dataset once; the cells train on that same object (not a
    second load), with the features resolve_features gives them."""
    from recgoat.models.base import MODELS, register
    from recgoat.models.mostpop import MostPop

    @register("_qa4_feature_reader")
    class Reader(MostPop):
        needs_features = True

    loads: list[tuple[str, int | None]] = []
    real_load = runner.load_dataset

    def counting(spec, split_seed):
        loads.append((runner.dataset_label(spec), split_seed))
        return real_load(spec, split_seed)

    seen: list = []

    def fake_features(spec, dataset, out, tag, progress, which=None, device="cpu"):
        seen.append(dataset)
        return None

    monkeypatch.setattr("recgoat.benchmark.checks.load_dataset", counting)
    monkeypatch.setattr("recgoat.benchmark.checks.resolve_features", fake_features)
    try:
        data = write_data(tmp_path / "plain", {"title": [f"t{i}" for i in range(30)]})
        run = run_benchmark(config([{"name": str(data), "features": "auto"}], tmp_path / "b",
                                   ["mostpop", "_qa4_feature_reader"]))
    finally:
        MODELS.pop("_qa4_feature_reader", None)
    assert not run.failed and len(run.trained) == 2
    assert loads == [("plain", 2026)] and len(seen) == 1


# ------------------------------------------------------------------------------------- report
def sig(**over) -> dict:
    base = {"method": "wilcoxon", "best": "a", "second": "b", "metric": METRIC, "n_users": 30, "n_differing": 30,
            "mean_diff": 0.05, "statistic": 12.0, "p_value": 0.0123, "seeds_best": 1, "seeds_second": 1,
            "seed_pairing": "all"}
    return {**base, **over}


def test_one_seed_is_not_called_an_average_over_seeds(tmp_path):
    """A benchmark of one seed said "per-user recall@20 averaged over seeds": nothing was averaged."""
    users = np.arange(6)
    rows = []
    for model, vals, valid in (("a", [0.9, 0.8, 0.7, 0.6, 0.5, 0.45], 0.5), ("b", [0.1, 0.3, 0.2, 0.4, 0.1, 0.3], 0.4)):
        run_dir = tmp_path / model / "seed1"
        run_dir.mkdir(parents=True)
        np.savez_compressed(run_dir / "test_per_user.npz", users=users, recall_at_20=np.asarray(vals))
        rows.append({"dataset": "d", "model": model, "seed": 1, "run_dir": str(run_dir), "selection_metric": METRIC,
                     "valid_selection": valid, "seconds_per_epoch": 1.0, "epochs_to_best": 1.0, "epochs_run": 1.0,
                     "eval_seconds": 0.1, "peak_memory_mb": 1.0, "memory_growth_mb": 1.0, "wall_seconds": 1.0,
                     METRIC: float(np.mean(vals))})
    runs = pd.DataFrame(rows)
    cfg = SimpleNamespace(train=SimpleNamespace(metric=METRIC), significance="wilcoxon")
    s = significance(runs, aggregate(runs), cfg)["d"]
    assert (s["seeds_best"], s["seed_pairing"]) == (1, "all")
    line = significance_line(s)
    assert "averaged" not in line and f"over 6 test users (per-user {METRIC} of the one seed), mean difference" \
        in line
    # no seed in common, one on each side
    line = significance_line(sig(seed_pairing="disjoint"))
    assert "averaged" not in line
    assert f"(per-user {METRIC} of one seed each, a different one: no seed finished by both)" in line
    # several seeds: the line is as before, word for word
    assert significance_line(sig(seeds_best=3, seeds_second=3)) == (
        f"Significance: a (best on validation {METRIC}) vs b (second): paired Wilcoxon signed-rank over 30 test "
        f"users (per-user {METRIC} averaged over seeds), mean difference +0.0500, p = 0.0123.")


@pytest.mark.parametrize("a, b, d", [([0.5, 0.75, 0.25], [0.25, 0.5, 0.0], 0.25),  # exactly equal: t = inf
                                     ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], 0.1)])  # equal up to rounding: t ~ 1e16
def test_ttest_on_equal_differences_is_undefined_not_p_zero(a, b, d):
    """Three users, each better by the same amount: scipy's t is ±inf (or ~1e16 from rounding) and p = 0, which
    the line printed as "p < 1e-300" (or p = 9e-33). The t-test is undefined for zero-variance differences."""
    x, y = pd.Series(a), pd.Series(b)
    assert stats.ttest_rel(x, y).pvalue < 1e-20  # the premise: scipy claims overwhelming evidence
    res = paired_test(x, y, "ttest")
    assert (res["n_users"], res["n_differing"]) == (3, 3) and res["mean_diff"] == pytest.approx(d, abs=1e-12)
    assert math.isnan(res["p_value"]) and math.isnan(res["statistic"]) and res["undefined"]
    line = significance_line(sig(**res))
    assert "p =" not in line and "p <" not in line and "nan" not in line
    assert line.endswith("no p-value: every user's difference is the same, so the differences have zero variance "
                         "and the t-test is undefined (the Wilcoxon signed-rank test, `significance: wilcoxon`, "
                         "still applies).")
    w = paired_test(x, y, "wilcoxon")  # the signed-rank test is defined here, and unchanged
    assert "undefined" not in w and w["p_value"] == pytest.approx(float(stats.wilcoxon(x - y).pvalue), rel=1e-12)


def test_ttest_with_any_spread_is_scipys_bit_for_bit():
    """Differences that differ by more than rounding keep scipy's t-test exactly."""
    x = pd.Series([0.5, 0.75, 0.25, 0.4])
    y = pd.Series([0.25, 0.5, 0.0, 0.15 - 1e-9])
    res = paired_test(x, y, "ttest")
    ref = stats.ttest_rel(x.to_numpy(), y.to_numpy())
    assert res["p_value"] == float(ref.pvalue) and res["statistic"] == float(ref.statistic)
    assert "undefined" not in res and res["p_value"] > 0


def test_a_model_class_lacking_loss_is_refused_before_any_cell_trains(tmp_path, trained_runs, monkeypatch):
    """A plugin without loss() failed only when its own cell came, after the cells before it had trained."""
    from recgoat.models.base import MODELS, Recommender

    class NoLoss(Recommender):
        name = "noloss_probe"

        def __init__(self, n_users, n_items, config=None, **dims):
            super().__init__(n_users, n_items, config, **dims)
            self.init_id_embeddings(4)

        def embeddings(self):
            return self.user_emb.weight, self.item_emb.weight

    monkeypatch.setitem(MODELS, "noloss_probe", NoLoss)
    data, out = write_data(tmp_path / "plain"), tmp_path / "b"
    with pytest.raises(ConfigError, match=r"^dataset plain: model 'noloss_probe' cannot train: noloss_probe "
                                          r"\(.*NoLoss\) implements no loss\(\)"):
        run_benchmark(config([{"name": str(data), "features": None}], out, ["mostpop", "noloss_probe"]))
    assert trained_runs == [] and not out.exists()
