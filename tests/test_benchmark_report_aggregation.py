"""The benchmark report on hand-built inputs: aggregation, bold, the paired test, failed cells.

Nothing trains here: run folders (``result.json`` + ``test_per_user.npz``) or the ``runs`` frame that
:func:`recgoat.benchmark.report.collect_runs` would return are written by hand, and every expected value
is computed independently (numpy / scipy / fractions).
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recgoat.benchmark import load_config
from recgoat.benchmark.report import (_tex, aggregate, holm, latex, markdown, paired_test, per_user_means, significance,
                                      tables, versus_baseline, write_report)

METRIC = "recall@20"


def write_cell(run_dir: Path, users, per_user: dict[str, list[float]]) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run_dir / "test_per_user.npz", users=np.asarray(users, np.int64),
                        **{k.replace("@", "_at_"): np.asarray(v, float) for k, v in per_user.items()})
    return str(run_dir)


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """A ``collect_runs``-shaped frame: each row gives dataset, model, seed, run_dir, valid, test."""
    out = []
    for r in rows:
        out.append({"dataset": r.get("dataset", "d"), "model": r["model"], "seed": r["seed"],
                    "run_dir": r.get("run_dir", ""), "selection_metric": METRIC, "valid_selection": r["valid"],
                    "seconds_per_epoch": r.get("spe", 1.0), "epochs_to_best": 1.0, "epochs_run": 1.0,
                    "eval_seconds": 0.1, "peak_memory_mb": r.get("mem", 100.0), "memory_growth_mb": 10.0,
                    "wall_seconds": 1.0, **r["test"]})
    return pd.DataFrame(out)


def bench_config(**over):
    cfg = SimpleNamespace(train=SimpleNamespace(metric=METRIC, ks=[20]), significance="wilcoxon",
                          seeds=[1, 2, 3], report_metrics=["recall", "ndcg"], ks_reported=[20],
                          models=[])
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


# ------------------------------------------------------------------------------------- paired test
# per-seed recall values of one user for two models: the same three numbers in another seed order, so
# the user's seed-averaged metric is the same for both — yet summed in another order in floating point
SAME_MULTISET = [((0.9, 0.7, 0.3), (0.3, 0.7, 0.9)), ((0.9, 0.7, 0.3), (0.7, 0.3, 0.9)),
                 ((0.1, 0.6, 0.7), (0.7, 0.6, 0.1)), ((0.3, 0.7, 0.9), (0.9, 0.3, 0.7))]


def seed_runs(tmp_path: Path, model: str, per_user_seed_values: list[tuple[float, ...]]) -> list[str]:
    """One run folder per seed; user u's metric in seed s is per_user_seed_values[u][s]."""
    values = np.asarray(per_user_seed_values, float)
    return [write_cell(tmp_path / model / f"seed{s}", np.arange(len(values)), {METRIC: values[:, s]})
            for s in range(values.shape[1])]


def test_same_values_in_another_seed_order_are_no_difference(tmp_path):
    """Per-user means over seeds that are equal up to float rounding are not a difference: the old code
    saw ~1e-16 differences and ran the signed-rank test on pure rounding noise (p < 1 between two models
    whose every user has the same seed-averaged metric)."""
    a = per_user_means(seed_runs(tmp_path, "a", [x for x, _ in SAME_MULTISET]), METRIC)
    b = per_user_means(seed_runs(tmp_path, "b", [y for _, y in SAME_MULTISET]), METRIC)
    assert (a != b).any()  # the premise: floating point does see a difference
    for method in ("wilcoxon", "ttest"):
        res = paired_test(a, b, method)
        assert res["n_users"] == len(SAME_MULTISET)
        assert res["p_value"] == 1.0 and np.isnan(res["statistic"]), (method, res)
        assert abs(res["mean_diff"]) < 1e-15


def test_wilcoxon_drops_rounding_noise_like_zero_differences(tmp_path):
    """Users whose seed-averaged metric is equal for both models (up to rounding) are dropped like any zero
    difference: the test equals scipy's over the other users alone. The old code ranked the noise, which
    halved the p-value here (0.098 instead of 0.1875)."""
    real_a = [(0.5, 0.2, 0.2), (0.4, 0.4, 0.4), (0.3, 0.3, 0.3), (1.0, 0.2, 0.3), (0.6, 0.6, 0.9)]
    real_b = [(0.2, 0.2, 0.2), (0.1, 0.1, 0.1), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (0.5, 0.4, 0.45)]
    a = per_user_means(seed_runs(tmp_path, "a", [x for x, _ in SAME_MULTISET] + real_a), METRIC)
    b = per_user_means(seed_runs(tmp_path, "b", [y for _, y in SAME_MULTISET] + real_b), METRIC)
    assert (a.iloc[:4] != b.iloc[:4]).any()  # the premise: rounding noise on the equal users

    def exact_mean(vals):
        return sum(Fraction(str(v)) for v in vals) / len(vals)

    real = [exact_mean(x) - exact_mean(y) for x, y in zip(real_a, real_b)]
    assert real == [Fraction(1, 10), Fraction(3, 10), Fraction(-1, 5), Fraction(1, 2), Fraction(1, 4)]
    # by hand: |d| ranks 1, 4, 2, 5, 3; W- = 2 = min(W+, W-); exact p = 2 · #{rank sums <= 2} / 2^5 = 6/32
    res = paired_test(a, b, "wilcoxon")
    assert res["n_users"] == 9 and res["n_differing"] == 5  # the four rounding-noise users are zeros
    from recgoat.benchmark.report import significance_line

    line = significance_line({**res, "best": "a", "second": "b", "metric": METRIC})
    assert "over 9 test users, 5 with a difference (per-user" in line  # what the signed-rank test rests on
    assert res["statistic"] == 2.0 and res["p_value"] == pytest.approx(6 / 32, rel=1e-12)
    sub = stats.wilcoxon(a.iloc[4:].to_numpy(), b.iloc[4:].to_numpy())  # scipy on the users that differ
    assert res["p_value"] == pytest.approx(float(sub.pvalue), rel=1e-12)
    assert res["mean_diff"] == pytest.approx(float(sum(real)) / 9, abs=1e-12)
    t = paired_test(a, b, "ttest")
    exact = np.r_[np.zeros(4), np.array(real, float)]
    assert t["p_value"] == pytest.approx(float(stats.ttest_1samp(exact, 0.0).pvalue), rel=1e-6)


def test_paired_test_pairs_only_common_users():
    a = pd.Series([0.5, 0.1, 0.9, 0.4, 0.7], index=[3, 1, 2, 10, 4])
    b = pd.Series([0.2, 0.3, 0.0, 0.8, 0.5], index=[1, 2, 3, 4, 99])
    # common users 1..4: differences 0.1-0.2, 0.9-0.3, 0.5-0.0, 0.7-0.8
    diff = np.array([-0.1, 0.6, 0.5, -0.1])
    res = paired_test(a, b, "wilcoxon")
    assert res["n_users"] == 4 and res["mean_diff"] == pytest.approx(diff.mean(), abs=1e-12)
    assert res["n_differing"] == 4  # every user differs: the line names no second count
    assert res["p_value"] == pytest.approx(stats.wilcoxon(diff).pvalue, rel=1e-12)
    one = paired_test(a.loc[[1]], b.loc[[1]])  # a single user: no test
    assert one["n_users"] == 1 and one["p_value"] == 1.0 and np.isnan(one["statistic"])


# ------------------------------------------------------------------------------------- ranking
def test_best_on_validation_is_chosen_on_validation_only(tmp_path):
    """``good_test`` is best on every test number but second on validation: the test compares ``good_valid``
    (first) against it, with the difference taken as first minus second."""
    users = np.arange(6)
    pa, pb, pc = [0.1, 0.2, 0.0, 0.3, 0.1, 0.2], [0.9, 0.8, 0.7, 0.9, 0.6, 0.8], [0.0] * 6
    rows = []
    for model, valid, per_user in (("good_valid", 0.50, pa), ("good_test", 0.40, pb), ("worst", 0.10, pc)):
        for seed in (1, 2):
            d = write_cell(tmp_path / model / f"seed{seed}", users, {METRIC: per_user})
            rows.append({"model": model, "seed": seed, "run_dir": d, "valid": valid + 0.001 * seed,
                         "test": {METRIC: float(np.mean(per_user))}})
    runs = runs_frame(rows)
    sig = significance(runs, aggregate(runs), bench_config())["d"]
    assert (sig["best"], sig["second"]) == ("good_valid", "good_test")
    assert sig["mean_diff"] == pytest.approx(np.mean(np.subtract(pa, pb)), abs=1e-12)
    assert sig["p_value"] == pytest.approx(stats.wilcoxon(pa, pb).pvalue, rel=1e-12)


def test_validation_tie_keeps_the_configured_order(tmp_path):
    """Twenty models, m17 and m18 tied best on validation: the first listed is "best", the other "second"
    (the old unstable sort picked m18 over m17)."""
    users = np.arange(4)
    rows = []
    for i in range(20):
        valid = {17: 0.5, 18: 0.5, 19: 0.2}.get(i, 0.1)
        d = write_cell(tmp_path / f"m{i:02d}", users, {METRIC: [0.1 * (i % 5), 0.2, 0.3, 0.05 * i]})
        rows.append({"model": f"m{i:02d}", "seed": 1, "run_dir": d, "valid": valid, "test": {METRIC: 0.1}})
    runs = runs_frame(rows)
    sig = significance(runs, aggregate(runs), bench_config())["d"]
    assert (sig["best"], sig["second"]) == ("m17", "m18")


# ------------------------------------------------------------------------------------- tables
def test_mean_sample_std_single_seed_and_bold():
    """Sample std (ddof=1); a one-seed row has no ±; NaN means are "—" and never bold; ties are all bold;
    the cost columns are never bold (lower is better there)."""
    rows = []
    for model, seeds_vals, spe in (("a", [0.2, 0.4, 0.3], 9.0), ("b", [0.3, 0.3, 0.3], 1.0), ("c", [0.1], 0.5)):
        for s, v in enumerate(seeds_vals):
            rows.append({"model": model, "seed": s, "valid": 0.1, "spe": spe,
                         "test": {METRIC: v, "ndcg@20": float("nan") if model == "c" else v / 2}})
    agg = aggregate(runs_frame(rows)).set_index("model")
    assert agg.loc["a", f"{METRIC}_std"] == pytest.approx(0.1, abs=1e-12)  # sqrt(((-.1)²+.1²+0)/2)
    assert agg.loc["b", f"{METRIC}_std"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(agg.loc["c", f"{METRIC}_std"]) and list(agg["n_seeds"]) == [3, 3, 1]
    title, header, cells, bold = tables(agg.reset_index(), "d", bench_config())[0]
    assert header == ["Model", "Recall@20", "NDCG@20"]
    assert cells == [["a", "0.3000 ± 0.1000", "0.1500 ± 0.0500"], ["b", "0.3000 ± 0.0000", "0.1500 ± 0.0000"],
                     ["c", "0.1000", "—"]]
    assert bold == [[False, True, True], [False, True, True], [False, False, False]]
    cost = tables(agg.reset_index(), "d", bench_config())[-1]
    assert cost[0] == "Cost" and not any(any(b) for b in cost[3])


def test_latex_tables_escape_labels_and_bold_as_the_markdown():
    """results.tex: one booktabs table per dataset and K, labels escaped (``_`` ``&`` ``%`` ``#`` ``$`` ``{}``),
    ± as $\\pm$, "—" as "---", the bold cells those of :func:`tables`; with grids, only the tuned rows."""
    rows = []
    for model, vals in (("lgm_rec&co", [0.2, 0.4, 0.3]), ("b%#$", [0.3, 0.3, 0.3]), ("{c}", [0.1])):
        for s, v in enumerate(vals):
            rows.append({"dataset": "my_data", "model": model, "seed": s, "valid": 0.1,
                         "test": {METRIC: v, "ndcg@20": float("nan") if model == "{c}" else v / 2}})
    agg = aggregate(runs_frame(rows))
    tex = latex(agg, bench_config())
    body = [ln for ln in tex.splitlines() if ln.endswith(r" \\")]
    assert body == [r"Model & Recall@20 & NDCG@20 \\",
                    r"lgm\_rec\&co & \textbf{0.3000 $\pm$ 0.1000} & \textbf{0.1500 $\pm$ 0.0500} \\",
                    r"b\%\#\$ & \textbf{0.3000 $\pm$ 0.0000} & \textbf{0.1500 $\pm$ 0.0000} \\",
                    r"\{c\} & 0.1000 & --- \\"]
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    assert r"\begin{tabular}{lrr}" in tex
    assert _tex("p < 1e-4, x > y, -5.0%") == r"p \textless{} 1e-4, x \textgreater{} y, -5.0\%"  # < is ¡ in OT1
    assert r"\caption{my\_data: test metrics @20 (mean $\pm$ std over seeds).}" in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    # with grids: the tuned rows stand for the models (here one row, as if the others were unchosen points)
    tuned_rows = agg[agg["model"] == "{c}"].assign(chosen="", points=1, chosen_on=float("nan"))
    tex = latex(agg, bench_config(), (tuned_rows, {}))
    assert [ln.split(" & ")[0] for ln in tex.splitlines() if ln.endswith(r" \\")] == ["Model", r"\{c\}"]
    assert "tuned on validation" in tex


# ------------------------------------------------------------------------------------- against a baseline
@pytest.mark.parametrize("p, adjusted", [
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    ([0.01, 0.04, 0.03, float("nan"), 0.005], [0.03, 0.06, 0.06, float("nan"), 0.02]),
    ([0.5, 0.6], [1.0, 1.0]),  # 0.5 × 2 = 1, then the running max keeps 0.6 × 1 at 1
    ([0.2], [0.2]),
    ([0.01, 0.01], [0.02, 0.02]),
])
def test_holm_adjusted_p_values_by_hand(p, adjusted):
    np.testing.assert_allclose(holm(p), adjusted, rtol=0, atol=1e-15)


def test_every_model_against_the_baseline_by_hand(tmp_path):
    """Two models against a baseline over 8 users × 2 seeds: the relative difference of the mean test figures,
    the Wilcoxon p of the seed-averaged per-user figures, and Holm over the two, each computed here apart;
    a cell failed on one seed pairs the other model's seeds with the baseline's alike (seed 2 only)."""
    rng = np.random.default_rng(0)
    users = np.arange(8)
    per = {"base": rng.random((2, 8)) * 0.4, "a": rng.random((2, 8)) * 0.4 + 0.2, "b": rng.random((2, 8)) * 0.4}
    rows = []
    for model, vals in per.items():
        for seed in (1, 2):
            if model == "b" and seed == 1:
                continue  # failed
            d = write_cell(tmp_path / model / f"seed{seed}", users, {METRIC: vals[seed - 1],
                                                                      "ndcg@20": vals[seed - 1] / 2})
            rows.append({"model": model, "seed": seed, "run_dir": d, "valid": 0.1,
                         "test": {METRIC: float(vals[seed - 1].mean()), "ndcg@20": float(vals[seed - 1].mean() / 2)}})
    runs = runs_frame(rows)
    cmp = versus_baseline(aggregate(runs), runs, bench_config(baseline="base")).set_index("model")
    assert list(cmp.index) == ["a", "b"]
    p_a = stats.wilcoxon(per["a"].mean(0), per["base"].mean(0)).pvalue
    p_b = stats.wilcoxon(per["b"][1], per["base"][1]).pvalue  # seed 2 on both sides
    for metric, scale in ((METRIC, 1.0), ("ndcg@20", 0.5)):
        assert cmp.loc["a", f"{metric}_rel"] == pytest.approx(per["a"].mean() / per["base"].mean() - 1, rel=1e-12)
        assert cmp.loc["b", f"{metric}_rel"] == pytest.approx(per["b"][1].mean() / per["base"].mean() - 1,
                                                              rel=1e-12)
        assert cmp.loc["a", f"{metric}_p"] == pytest.approx(p_a, rel=1e-12)
        assert cmp.loc["b", f"{metric}_p"] == pytest.approx(p_b, rel=1e-12)
        lo, hi = sorted([p_a, p_b])
        expect = {p_a: None, p_b: None}
        expect[lo] = min(1.0, 2 * lo)
        expect[hi] = max(min(1.0, 2 * lo), hi)
        assert cmp.loc["a", f"{metric}_p_holm"] == pytest.approx(expect[p_a], rel=1e-12)
        assert cmp.loc["b", f"{metric}_p_holm"] == pytest.approx(expect[p_b], rel=1e-12)
    tex = latex(aggregate(runs), bench_config(baseline="base"), versus=cmp.reset_index())
    assert r"\caption{d: against base: relative difference" in tex and tex.count(r"\begin{table}") == 2
    assert r"Model & Recall@20 vs base & p (Holm) & NDCG@20 vs base & p (Holm) \\" in tex
    md = markdown(aggregate(runs), {}, bench_config(baseline="base"), versus=cmp.reset_index())
    table = md[md.index("### Against the baseline (base)"):]
    assert "| Model | Recall@20 vs base | p (Holm) | NDCG@20 vs base | p (Holm) |" in table
    rel_a = 100 * (per["a"].mean() / per["base"].mean() - 1)
    assert f"| a | {rel_a:+.1f}% | {expect[p_a]:.4f} | {rel_a:+.1f}% | {expect[p_a]:.4f} |" in table


# ------------------------------------------------------------------------------------- failed cells
FAILED = {"d/bprmf/seed2026": "RuntimeError: first line\n## second line\n---",
          "d/mostpop/seed2026": "ValueError: <script>alert(1)</script> & more"}


def test_md_failed_cell_messages_stay_on_their_list_item():
    """A multi-line error message ended its list item in results.md; its "## ..." line became a heading."""
    agg = aggregate(pd.DataFrame())
    md = markdown(agg, {}, bench_config(seeds=[2026]), FAILED)
    lines = md.splitlines()
    assert "- d/bprmf/seed2026: RuntimeError: first line ## second line ---" in lines
    assert "- d/mostpop/seed2026: ValueError: <script>alert(1)</script> & more" in lines
    assert [ln for ln in lines if ln.startswith("#")] == ["# Benchmark results", "## Failed cells"]


def test_html_names_failed_cells_when_no_cell_finished(tmp_path):
    """With every cell failed, report.html said only "No finished cells." and dropped the failed list."""
    out = tmp_path / "bench"
    out.mkdir()
    cfg = load_config(None, {"datasets": ["ml-latest-small"], "models": ["mostpop", "bprmf"], "seeds": [2026],
                             "out": str(out), "progress": False})
    paths = write_report(out, cfg, failed=FAILED)
    page = paths["html"].read_text()
    assert "No finished cells." in page
    assert ("<li>d/mostpop/seed2026: ValueError: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more</li>"
            in page)
    assert "<li>d/bprmf/seed2026: RuntimeError: first line" in page and "<script" not in page
    assert "- d/bprmf/seed2026: RuntimeError: first line" in paths["md"].read_text()
    csv = pd.read_csv(paths["csv"])
    assert csv.empty and list(csv.columns) == ["dataset", "model", "n_seeds"]


def test_a_failed_cell_leaves_the_paired_test_on_the_seeds_both_finished(tmp_path):
    """best finished seeds 1 and 2, second seeds 2 and 3 (their other cell failed): the per-user means
    compared are those of seed 2 alone on both sides, not seeds {1, 2} against seeds {2, 3}."""
    users = np.arange(8)
    per_seed = {("best", 1): [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
                ("best", 2): [0.5, 0.6, 0.2, 0.4, 0.3, 0.8, 0.1, 0.7],
                ("second", 2): [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.4, 0.2],
                ("second", 3): [0.0] * 8}
    rows = []
    for (model, seed), vals in per_seed.items():
        d = write_cell(tmp_path / model / f"seed{seed}", users, {METRIC: vals})
        rows.append({"model": model, "seed": seed, "run_dir": d, "valid": 0.5 if model == "best" else 0.4,
                     "test": {METRIC: float(np.mean(vals))}})
    runs = runs_frame(rows)
    sig = significance(runs, aggregate(runs), bench_config())["d"]
    a, b = per_seed[("best", 2)], per_seed[("second", 2)]
    assert sig["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)), abs=1e-12)
    assert sig["p_value"] == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)
    assert (sig["seeds_best"], sig["seeds_second"], sig["seed_pairing"]) == (1, 1, "common")
    from recgoat.benchmark.report import significance_line

    assert "averaged over the 1 seed both finished" in significance_line(sig)
    # with no seed in common each side keeps its own, and the line says so
    runs2 = runs[~((runs["model"] == "second") & (runs["seed"] == 2))]
    sig2 = significance(runs2, aggregate(runs2), bench_config())["d"]
    assert sig2["seed_pairing"] == "disjoint" and "no seed finished by both" in significance_line(sig2)


def test_an_underflowing_p_value_is_not_printed_as_zero():
    from recgoat.benchmark.report import significance_line

    s = {"method": "wilcoxon", "best": "a", "second": "b", "metric": METRIC, "n_users": 5000,
         "mean_diff": 0.2, "p_value": 0.0, "seeds_best": 3, "seeds_second": 3, "seed_pairing": "all"}
    assert significance_line(s).endswith("mean difference +0.2000, p < 1e-300.")
    assert significance_line({**s, "p_value": 0.0123}).endswith("p = 0.0123.")


@pytest.mark.parametrize("damage", ["deleted", "truncated", "other metric", "deflate"])
def test_a_missing_per_user_file_is_one_error_naming_it(tmp_path, damage):
    """A finished cell whose test_per_user.npz was deleted or damaged afterwards: the report stopped with a
    traceback from inside numpy; now one DataError naming the file and how to recompute it."""
    from recgoat.errors import DataError

    runs = seed_runs(tmp_path, "a", [(0.1, 0.2), (0.3, 0.4)])
    path = Path(runs[1]) / "test_per_user.npz"
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:20])
    elif damage == "deflate":  # was a zlib.error traceback
        from test_graph_cache import break_deflate

        break_deflate(path)
    else:
        np.savez(path, users=np.arange(2), hit_at_5=np.zeros(2))
    with pytest.raises(DataError, match=r"test_per_user\.npz: the paired test reads each cell's per-user "
                                        r"recall@20 here, and it is missing or unreadable .* run the benchmark again"):
        per_user_means(runs, METRIC)
