"""The benchmark report against independent computations, on hand-written run folders (nothing trains).

Means/sample stds are recomputed with numpy from the written ``result.json`` files, per-user means with
plain Python from the ``test_per_user.npz`` arrays, the signed-rank p-value by exact enumeration of the
rank sums and the t-test's from Student's t distribution — never by the code under test.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import html
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recgoat.benchmark import load_config
from recgoat.benchmark.report import (aggregate, html_report, markdown, paired_test, significance, significance_line,
                                      tables, write_report)
from recgoat.benchmark.runner import plan_cells
from recgoat.errors import ConfigError

METRIC = "recall@20"
KS = [10, 20]
METRICS = ["recall", "ndcg", "precision", "hit", "map"]


# ------------------------------------------------------------------------------------- independent references
def exact_signed_rank_p(d: np.ndarray) -> float:
    """Two-sided exact Wilcoxon signed-rank p-value (zeros dropped, no ties among |d|): 2·P(W <= min(W+, W-))."""
    d = d[d != 0]
    n = len(d)
    ranks = stats.rankdata(np.abs(d))
    assert np.all(ranks == np.round(ranks)), "the enumeration assumes no ties"
    w = min(ranks[d > 0].sum(), ranks[d < 0].sum())
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for r in range(1, n + 1):  # number of subsets of {1..n} per rank sum
        counts[r:] = counts[r:] + counts[:-r].copy()
    return min(1.0, 2 * counts[: int(w) + 1].sum() / 2 ** n)


def t_p(d: np.ndarray) -> float:
    n = len(d)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


# ------------------------------------------------------------------------------------- a fake benchmark
def fake_benchmark(out: Path, models: list[str], seeds: list[int], per_user, test, valid, **over):
    """Run folders as a finished benchmark leaves them: ``per_user(model, seed)`` → (users, {metric@k: values}),
    ``test(model, seed)`` → result.json test dict, ``valid(model, seed)`` → the validation selection metric."""
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "models": models, "seeds": seeds, "out": str(out),
                             "progress": False, **over}, [f"train.ks={KS}"])
    for c in plan_cells(cfg):
        c.run_dir.mkdir(parents=True)
        users, values = per_user(c.model.key, c.seed)
        np.savez_compressed(c.run_dir / "test_per_user.npz", users=np.asarray(users, np.int64),
                            **{k.replace("@", "_at_"): np.asarray(v, float) for k, v in values.items()})
        r = {"train_config": {"metric": METRIC}, "valid": {METRIC: valid(c.model.key, c.seed)},
             "test": test(c.model.key, c.seed), "seconds_per_epoch": 1.0 + c.seed, "best_epoch": 2,
             "epochs_run": 5, "eval_seconds": 0.25, "peak_memory_mb": 1.0, "wall_seconds": 3.0,
             "history": [{"epoch": e, "loss": 1.0 / (e + 1), f"valid_{METRIC}": 0.1 * e} for e in range(5)],
             "benchmark": {"cell_peak_rss_mb": 100.0 + c.seed, "cell_rss_growth_mb": 10.0}}
        (c.run_dir / "result.json").write_text(json.dumps(r))
    return cfg


def md_table(md: str, title: str) -> list[list[str]]:
    lines = md.split(f"### {title}\n")[1].strip("\n").split("\n\n")[0].splitlines()
    assert lines[0].startswith("| Model |") and lines[1].startswith("|:---|")
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


# ------------------------------------------------------------------------------------- end to end
def test_report_figures_equal_independent_computations(tmp_path):
    """Three models × three seeds, each seed storing its test users in another order and the third seed
    one user fewer: results.csv round-trips numpy's mean and sample std (ddof=1, stated as "sample std"),
    the md table shows them rounded with the best mean bold, and the significance line compares the best
    on *validation* with the second, pairing users by id, with the exact signed-rank p-value."""
    rng = np.random.default_rng(7)
    models, seeds, n_users = ["mostpop", "bprmf", "lightgcn"], [1, 2, 3], 14
    # continuous per-user values: no ties among |differences|, so the exact enumeration applies
    truth = {(m, s): rng.random(n_users) for m in models for s in seeds}
    tests = {(m, s): {f"{x}@{k}": float(rng.random()) for x in METRICS for k in KS} for m in models for s in seeds}
    valids = {("mostpop", s): 0.2 for s in seeds} | {("bprmf", s): 0.3 + 0.01 * s for s in seeds} \
        | {("lightgcn", s): 0.25 for s in seeds}  # bprmf best on validation, then lightgcn

    def per_user(m, s):
        order = rng.permutation(n_users)[: n_users - (s == 3)]  # seed 3 lacks one user
        return 100 + order, {METRIC: truth[(m, s)][order]}

    cfg = fake_benchmark(tmp_path / "b", models, seeds, per_user, lambda m, s: tests[(m, s)],
                         lambda m, s: valids[(m, s)])
    paths = write_report(tmp_path / "b", cfg)
    csv = pd.read_csv(paths["csv"]).set_index("model")
    md = paths["md"].read_text()
    assert "mean ± sample std over seeds 1, 2, 3" in md
    for m in models:
        for col in tests[(m, 1)]:
            v = np.array([tests[(m, s)][col] for s in seeds])
            assert csv.loc[m, f"{col}_mean"] == pytest.approx(v.mean(), rel=1e-12)
            assert csv.loc[m, f"{col}_std"] == pytest.approx(v.std(ddof=1), rel=1e-12)
        spe = np.array([1.0 + s for s in seeds])
        assert csv.loc[m, "seconds_per_epoch_std"] == pytest.approx(spe.std(ddof=1), rel=1e-12)
        assert csv.loc[m, "epochs_to_best_mean"] == 3.0 and csv.loc[m, "n_seeds"] == 3
    rows = md_table(md, "Test metrics @10")
    assert [r[0] for r in rows] == models
    means = {m: np.mean([tests[(m, s)]["ndcg@10"] for s in seeds]) for m in models}
    col = METRICS.index("ndcg") + 1
    for r in rows:
        v = np.array([tests[(r[0], s)]["ndcg@10"] for s in seeds])
        text = f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"
        assert r[col] == (f"**{text}**" if r[0] == max(means, key=means.get) else text)
    valid_rows = md_table(md, f"Validation {METRIC} (the selection metric)")
    assert [r[0] for r in valid_rows if r[1].startswith("**")] == ["bprmf"]

    # the per-user means by hand, user by user, then the differences over the users both models have
    def by_hand(m):
        acc: dict[int, list[float]] = {}
        for s in seeds:
            for i in range(n_users - (s == 3)):
                acc.setdefault(100 + i, [])
        for s in seeds:
            with np.load(Path(cfg.out) / "runs" / "ml-latest-small" / m / f"seed{s}" / "test_per_user.npz") as z:
                for u, x in zip(z["users"].tolist(), z["recall_at_20"].tolist()):
                    acc[u].append(x)
        return {u: sum(xs) / len(xs) for u, xs in acc.items()}

    a, b = by_hand("bprmf"), by_hand("lightgcn")
    d = np.array([a[u] - b[u] for u in sorted(a)])
    line = [ln for ln in md.splitlines() if ln.startswith("Significance:")]
    p = exact_signed_rank_p(d)
    assert line == [f"Significance: bprmf (best on validation {METRIC}) vs lightgcn (second): paired Wilcoxon "
                    f"signed-rank over {n_users} test users (per-user {METRIC} averaged over seeds), "
                    f"mean difference {d.mean():+.4f}, p = {p:.3g}."]
    sig = significance(pd.read_csv(paths["runs_csv"]), aggregate(pd.read_csv(paths["runs_csv"])), cfg)
    assert sig["ml-latest-small"]["p_value"] == pytest.approx(p, rel=1e-9)
    page = paths["html"].read_text()
    assert html.escape(line[0]) in page and "<td><b>" in page


def test_ttest_p_value_equals_students_t_by_hand(tmp_path):
    rng = np.random.default_rng(3)
    users = np.arange(40)
    vals = {(m, s): rng.random(40) for m in ("mostpop", "bprmf") for s in (5, 6)}
    cfg = fake_benchmark(tmp_path / "b", ["mostpop", "bprmf"], [5, 6],
                         lambda m, s: (users[::-1] if s == 6 else users,
                                       {METRIC: vals[(m, s)][::-1] if s == 6 else vals[(m, s)]}),
                         lambda m, s: {f"{x}@{k}": 0.5 for x in METRICS for k in KS},
                         lambda m, s: 0.4 if m == "mostpop" else 0.1, significance="ttest")
    md = write_report(tmp_path / "b", cfg)["md"].read_text()
    d = (vals[("mostpop", 5)] + vals[("mostpop", 6)]) / 2 - (vals[("bprmf", 5)] + vals[("bprmf", 6)]) / 2
    assert f"paired t-test over 40 test users (per-user {METRIC} averaged over seeds), mean difference " \
           f"{d.mean():+.4f}, p = {t_p(d):.3g}." in md


# ------------------------------------------------------------------------------------- paired test edge cases
def test_pairs_by_user_id_and_drops_users_of_one_model():
    a = pd.Series([0.9, 0.1, 0.5, 0.7, 0.3, 0.8], index=[7, 3, 5, 1, 9, 42])  # 42: in a only
    b = pd.Series([0.2, 0.4, 0.35, 0.05, 0.0, 0.6], index=[1, 5, 3, 7, 9, 11])  # 11: in b only
    d = np.array([0.7 - 0.2, 0.1 - 0.35, 0.5 - 0.4, 0.9 - 0.05, 0.3 - 0.0])  # users 1, 3, 5, 7, 9
    for method, ref in (("wilcoxon", exact_signed_rank_p), ("ttest", t_p)):
        res = paired_test(a, b, method)
        assert (res["n_users"], res["n_differing"]) == (5, 5)
        assert res["mean_diff"] == pytest.approx(d.mean(), abs=1e-12)
        assert res["p_value"] == pytest.approx(ref(d), rel=1e-9), method


def test_a_nan_user_metric_is_a_user_of_one_model_only():
    """A NaN per-user value made mean_diff NaN, counted as "a difference", and turned the test into p = 1
    (scipy's NaN p-value replaced by 1): that user is now left out like any user of one model only."""
    a = pd.Series([0.9, np.nan, 0.5, 0.7, 0.3, 0.6])
    b = pd.Series([0.1, 0.2, 0.45, np.nan, 0.25, 0.0])
    d = np.array([0.8, 0.05, 0.05 + 1e-9, 0.6])  # users 0, 2, 4, 5 (a tiny shift: no tie)
    a[2] += 1e-9
    res = paired_test(a, b)
    assert (res["n_users"], res["n_differing"]) == (4, 4)
    assert res["mean_diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert res["p_value"] == pytest.approx(exact_signed_rank_p(d), rel=1e-9) and res["p_value"] < 1


def sig_dict(res: dict) -> dict:
    return {**res, "best": "a", "second": "b", "metric": METRIC, "seeds_best": 2, "seeds_second": 2,
            "seed_pairing": "all"}


@pytest.mark.parametrize("b_index, n", [([5, 6], 0), ([2, 6], 1)])
def test_no_test_is_not_printed_as_a_p_value(b_index, n):
    """With fewer than two users in common no test is run: the line said "over 0 test users ... mean
    difference +nan, p = 1" — a p-value nothing computed. It now says there was no test."""
    res = paired_test(pd.Series([0.1, 0.9], index=[1, 2]), pd.Series([0.4, 0.3], index=b_index))
    assert res["n_users"] == n
    line = significance_line(sig_dict(res))
    assert "p =" not in line and "nan" not in line.lower() and "no paired test" in line
    assert line.endswith(f"{n} test user{'s' if n == 0 else ''} in common{', mean difference +0.5000' if n else ''}.")


def test_all_differences_zero():
    a = pd.Series([0.25, 0.5, 0.0, 1.0], index=[4, 3, 2, 1])
    b = a.iloc[::-1]  # the same values by user, in another order
    for method in ("wilcoxon", "ttest"):
        res = paired_test(a, b, method)
        assert (res["n_users"], res["n_differing"], res["mean_diff"]) == (4, 0, 0.0)
        assert res["p_value"] == 1.0 and math.isnan(res["statistic"])
        assert "over 4 test users, 0 with a difference (per-user" in significance_line(sig_dict(res))


def test_single_seed_and_single_model(tmp_path):
    """One seed: the test is on that seed's per-user values; one model: no significance line at all."""
    rng = np.random.default_rng(11)
    vals = {m: rng.random(9) for m in ("mostpop", "bprmf")}
    common = dict(per_user=lambda m, s: (np.arange(9), {METRIC: vals[m]}),
                  test=lambda m, s: {f"{x}@{k}": 0.5 for x in METRICS for k in KS},
                  valid=lambda m, s: 0.9 if m == "bprmf" else 0.1)
    cfg = fake_benchmark(tmp_path / "two", ["mostpop", "bprmf"], [2026], **common)
    paths = write_report(tmp_path / "two", cfg)
    d = vals["bprmf"] - vals["mostpop"]
    assert "vs mostpop (second): paired Wilcoxon signed-rank over 9 test users" in paths["md"].read_text()
    assert f"p = {exact_signed_rank_p(d):.3g}." in paths["md"].read_text()
    assert "± " not in "".join(md_table(paths["md"].read_text(), "Test metrics @20")[0])  # one seed: no std
    assert pd.read_csv(paths["csv"])[f"{METRIC}_std"].isna().all()
    cfg1 = fake_benchmark(tmp_path / "one", ["bprmf"], [2026], **common)
    paths = write_report(tmp_path / "one", cfg1)
    assert "Significance" not in paths["md"].read_text() and "Significance" not in paths["html"].read_text()


# ------------------------------------------------------------------------------------- tables
def runs_frame(values: dict[tuple[str, int], dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "d", "model": m, "seed": s, "run_dir": "", "selection_metric": METRIC,
                          "valid_selection": v.pop("valid", 0.1), "seconds_per_epoch": 1.0, "epochs_to_best": 1.0,
                          "epochs_run": 1.0, "eval_seconds": 0.1, "peak_memory_mb": 100.0,
                          "memory_growth_mb": v.pop("growth", 10.0), "wall_seconds": 1.0, **v}
                         for (m, s), v in values.items()])


def test_a_value_some_seeds_lack_has_no_mean():
    """Model c's seed 2 lacks recall@20 (and seed 1 the +MiB of older runs): its row showed the other
    seed's value as *the* mean, without ± like a one-seed row, and bolded it as the best, while n_seeds
    and the header said 2 seeds. It is now "—", not bold; where every seed has it, nothing changes."""
    runs = runs_frame({("a", 1): {METRIC: 0.3}, ("a", 2): {METRIC: 0.4},
                       ("c", 1): {METRIC: 0.9, "growth": float("nan")}, ("c", 2): {METRIC: float("nan")}})
    agg = aggregate(runs).set_index("model")
    assert agg.loc["c", "n_seeds"] == 2 and math.isnan(agg.loc["c", f"{METRIC}_mean"])
    assert math.isnan(agg.loc["c", "memory_growth_mb_mean"]) and agg.loc["c", "peak_memory_mb_mean"] == 100.0
    assert agg.loc["a", f"{METRIC}_mean"] == pytest.approx(0.35, abs=1e-12)
    cfg = SimpleNamespace(train=SimpleNamespace(metric=METRIC), report_metrics=["recall"], ks_reported=[20])
    _, _, cells, bold = tables(agg.reset_index(), "d", cfg)[0]
    assert cells == [["a", "0.3500 ± 0.0707"], ["c", "—"]] and bold == [[False, True], [False, False]]
    assert tables(agg.reset_index(), "d", cfg)[-1][2][1][-1] == "—"  # +MiB


def test_validation_table_bolds_the_model_the_test_calls_best(tmp_path):
    users = np.arange(5)
    runs = runs_frame({("x", 1): {METRIC: 0.5, "valid": 0.2}, ("y", 1): {METRIC: 0.1, "valid": 0.6},
                       ("z", 1): {METRIC: 0.3, "valid": float("nan")}})
    for i, m in enumerate("xyz"):
        d = tmp_path / m
        d.mkdir()
        np.savez(d / "test_per_user.npz", users=users, recall_at_20=np.linspace(0, 1, 5) ** (i + 1))
        runs.loc[runs["model"] == m, "run_dir"] = str(d)
    agg = aggregate(runs)
    cfg = SimpleNamespace(train=SimpleNamespace(metric=METRIC), report_metrics=["recall"], ks_reported=[20],
                          significance="wilcoxon")
    sig = significance(runs, agg, cfg)["d"]
    assert (sig["best"], sig["second"]) == ("y", "x")  # NaN validation ranks last, test results count nothing
    title, _, cells, bold = tables(agg, "d", cfg)[1]
    assert title.startswith("Validation") and [c[0] for c, b in zip(cells, bold) if b[1]] == ["y"]
    assert cells[2][1] == "—"


# ------------------------------------------------------------------------------------- escaping
@pytest.mark.parametrize("label", ["a|b", "<b>", "a&b", "it's", 'say"x"', "a b"])
def test_labels_that_would_break_a_table_are_refused(label):
    """report.py writes labels into markdown tables and HTML unescaped by markdown: the config is what
    keeps '|' (a new column) out; HTML escapes anyway (next test)."""
    with pytest.raises(ConfigError, match="cannot name a folder"):
        load_config(None, {"datasets": ["ml-latest-small"], "models": [{"name": "mostpop", "label": label}]})


def test_html_escapes_labels_everywhere(tmp_path):
    label = "<i>a&b's \"m\"</i>"
    d = tmp_path / "cell"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"history": []}))
    runs = runs_frame({(label, 1): {METRIC: 0.5}, ("plain", 1): {METRIC: 0.4}})
    runs["run_dir"] = str(d)
    agg = aggregate(runs)
    cfg = SimpleNamespace(train=SimpleNamespace(metric=METRIC), report_metrics=["recall"], ks_reported=[20],
                          seeds=[1], models=[SimpleNamespace(key=label), SimpleNamespace(key="plain")])
    sig = {"d": {**sig_dict(paired_test(pd.Series([0.1, 0.9]), pd.Series([0.2, 0.3]))), "best": label}}
    page = html_report(runs, agg, sig, cfg)
    assert "<i>" not in page and label not in page
    esc = html.escape(label)
    assert f"<td>{esc}</td>" in page and f"Significance: {esc} (best" in page and f"Models: {esc}, plain" in page
    assert markdown(agg, sig, cfg).count(f"| {label} |") == 3  # md keeps labels verbatim (config-checked)
