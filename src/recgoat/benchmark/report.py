r"""Turn a benchmark's run folders into ``results.csv``, ``results.md``, a standalone ``report.html`` and
``results.tex`` (the test tables for a paper).

Aggregation: for model :math:`m` on dataset :math:`d` with seeds :math:`s = 1..S`, every test metric
:math:`x_s` (taken at the best-*validation* epoch of seed :math:`s`) is summarised by the mean
:math:`\bar x = \frac1S \sum_s x_s` and the sample standard deviation
:math:`\sqrt{\frac{1}{S-1}\sum_s (x_s-\bar x)^2}` (empty for one seed). Timings are summarised alike.

Significance: models are ranked by mean *validation* selection metric (the test split never chooses
anything). Between the best and the second-best model, each test user's metric is first averaged over
seeds, users are paired by id, and a paired test over users is run: the Wilcoxon signed-rank test
(default; ``scipy.stats.wilcoxon``, zero differences dropped) or the paired t-test
(``scipy.stats.ttest_rel``; undefined, so no p-value, when every user's difference is the same).
Reference: Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 2006; Sakai,
"Statistical reform in information retrieval?", SIGIR Forum 2014.

Against a baseline (``baseline: MODEL``): every other model's relative difference of the mean test Recall and
NDCG at the selection K, :math:`\bar x_m / \bar x_b - 1`, and the same paired test against the baseline, its
p-values Holm-adjusted over the models compared on the dataset (a family of tests: the chance that some model
looks better than the baseline by luck grows with their number). ``baseline.csv`` holds the raw p-values too.

Grids (models sharing ``grid_of``, :func:`recgoat.benchmark.config.expand_grid`): :func:`tuned` keeps, per
dataset, the point with the best mean validation metric among the points finished on the most seeds (ties: the
first listed; with ``grid_seeds: N``, over the first N seeds only, the seeds every point trains on), as one row
named by the grid; the report shows these rows first, with their own significance line, then every point.
``tuned.csv`` holds the chosen rows.

What each model used (:func:`used_lines`): per dataset and model, the feature views its cells read (those absent or
that no item has, and where the profiles came from), how many seeds stopped at the epoch cap rather than early, and
how many learned next to nothing (the BPR loss at ln 2 throughout, the trainer's warning); ``used`` in
``results.csv``.

Every number comes from the cells' ``result.json`` / ``test_per_user.npz`` files (and ``log.jsonl`` for the loss
terms), so a report can be rebuilt at any time (``write_report``) without training anything.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recgoat.errors import DataError
from recgoat.io import atomic_path, read_json
from recgoat.words import plural

TIMINGS = {  # result column → (header, decimals)
    "seconds_per_epoch": ("s/epoch", 3),
    "epochs_to_best": ("epochs→best", 1),
    "eval_seconds": ("eval s", 3),
    "peak_memory_mb": ("peak MiB", 0),
    "memory_growth_mb": ("+MiB", 0),
}
METRIC_TITLES = {"recall": "Recall", "ndcg": "NDCG", "precision": "Precision", "hit": "Hit", "map": "MAP"}


# ------------------------------------------------------------------------------------- collection
def collect_runs(config, rows: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per finished cell: dataset, model, seed, run_dir, test metrics, validation metric, timings.

    ``rows``: the rows of an earlier call, by run folder, taken as they are (a finished cell's result is not
    rewritten) and completed with the cells finished since; the run reads each cell once for its choice of grid
    points and its report."""
    from recgoat.benchmark.cells import plan_cells
    from recgoat.benchmark.config import dataset_label

    known = {} if rows is None else rows
    found = []
    for cell in plan_cells(config):
        if str(cell.run_dir) in known:
            found.append(known[str(cell.run_dir)])
            continue
        if not cell.done:  # an interrupted cell: its result.json lacks the runner's "benchmark" entry
            continue
        r = read_json(cell.run_dir / "result.json")
        metric = r.get("train_config", {}).get("metric", config.train.metric)
        bench = r.get("benchmark", {})
        row: dict[str, Any] = {
            "dataset": dataset_label(cell.dataset), "model": cell.model.key, "seed": cell.seed,
            "run_dir": str(cell.run_dir), "selection_metric": metric,
            "valid_selection": float(r["valid"][metric]),
            "seconds_per_epoch": float(r["seconds_per_epoch"]),
            "epochs_to_best": float(r["best_epoch"] + 1 if r.get("epochs_run", 0) > 0 else 0),
            "epochs_run": float(r.get("epochs_run", 0)),
            "eval_seconds": float(r["eval_seconds"]),
            "peak_memory_mb": float(bench.get("cell_peak_rss_mb") or r["peak_memory_mb"]),
            # runs from before the growth was recorded have none: NaN, shown as "—"
            "memory_growth_mb": float(bench["cell_rss_growth_mb"]) if bench.get("cell_rss_growth_mb") is not None
            else float("nan"),
            "wall_seconds": float(r["wall_seconds"]),
        }
        row.update({k: float(v) for k, v in r["test"].items()})
        row.update(cell_usage(r, cell.run_dir))  # after the metrics: runs.csv's earlier columns stay where they were
        known[str(cell.run_dir)] = row
        found.append(row)
    return pd.DataFrame(found)


# ------------------------------------------------------------------------------------- what each model used
def cell_usage(r: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What one cell's model read and how its training ended, from its ``result.json`` (``r``): ``views`` (a short
    text: :func:`views_text`), ``at_epoch_cap`` (it trained up to ``epochs`` without stopping early) and
    ``plateau`` (the trainer's BPR-plateau warning, which went to stderr only: read again from ``log.jsonl``,
    whose rows keep the loss terms that the result's history leaves out)."""
    summary = r.get("summary") if isinstance(r.get("summary"), dict) else {}
    cap = (r.get("train_config") or {}).get("epochs")
    ran = int(r.get("epochs_run") or 0)
    return {"views": views_text(summary), "at_epoch_cap": bool(ran and isinstance(cap, int) and ran >= cap),
            "plateau": bool(ran) and _plateaued(str(r.get("model", "")), run_dir / "log.jsonl")}


def views_text(summary: dict[str, Any]) -> str:
    """The feature views a run summary says the model read, in the words of ``recgoat train``'s "feature views
    used" line: empty ones (no item has them) marked, then those absent from the features."""
    from recgoat.models.modalities import views_read

    if "modalities_used" not in summary:
        return "no side features"
    used = list(summary.get("modalities_used") or [])
    views = views_read(summary, profile_source=True)
    # RecGOAT lists the views asked for but absent; a peer reads every view the features hold
    absent = list(summary["modalities_missing"]) if "modalities_missing" in summary else [
        m for m in ("text", "image") if m not in used]
    if summary.get("profile_missing"):
        absent.append("profile")
    text = ", ".join(views) or "none (ID embeddings only)"
    return text + (f"; absent: {', '.join(absent)}" if absent else "")


def _plateaued(model: str, log: Path) -> bool:
    """Whether the trainer's :func:`~recgoat.training.trainer.plateau_message` holds for the rows of ``log``
    (False when it cannot be read: a note, not a figure)."""
    from recgoat.training.trainer import plateau_message

    rows = []
    try:
        with open(log, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        return False
    return plateau_message(model, [row for row in rows if isinstance(row, dict)]) is not None


def used_lines(runs: pd.DataFrame, dataset: str) -> list[tuple[str, str]]:
    """``(model, what it used)`` for each model of ``dataset``: its views (each different one, when seeds
    differ), then how many of its seeds stopped at the epoch cap or learned next to nothing."""
    if runs.empty or "views" not in runs.columns:
        return []
    out = []
    for model, rows in runs[runs["dataset"] == dataset].groupby("model", sort=False):
        n = len(rows)
        parts = [f"views: {' | '.join(dict.fromkeys(rows['views'].astype(str)))}"]
        capped = rows[rows["at_epoch_cap"].astype(bool)]
        if len(capped):
            caps = "/".join(str(int(e)) for e in dict.fromkeys(capped["epochs_run"]))
            parts.append(f"stopped at the epoch cap ({caps} epochs) in {len(capped)} of {plural(n, 'seed')}, not by "
                         f"early stopping: it may not have converged")
        flat = int(rows["plateau"].astype(bool).sum())
        if flat:
            parts.append(f"BPR loss at ln 2 in every epoch in {flat} of {plural(n, 'seed')}: it learned next to "
                         f"nothing (raise train.lr, or train longer)")
        out.append((str(model), "; ".join(parts)))
    return out


def add_used(table: pd.DataFrame, runs: pd.DataFrame, label: str = "model") -> pd.DataFrame:
    """``table`` (the aggregate rows, or the tuned ones) with a last column ``used``: :func:`used_lines` of each
    row's model (of the point named in ``label``: a tuned row's ``chosen``, else its ``model``). Added last, so
    that results.csv's and tuned.csv's other columns stay where they were; none on a table without rows."""
    if table.empty:
        return table
    used = {(d, m): text for d in runs["dataset"].unique() for m, text in used_lines(runs, d)}
    table = table.copy()
    names = [c if label in table.columns and c else m for c, m in zip(table.get(label, table["model"]), table["model"])]
    table["used"] = [used.get((d, n), "") for d, n in zip(table["dataset"], names)]
    return table


def _used(rows: pd.DataFrame, dataset: str) -> list[tuple[str, str]]:
    """``(model, used)`` of ``dataset``'s rows that have a ``used`` text (:func:`add_used`)."""
    if "used" not in rows.columns:
        return []
    part = rows[rows["dataset"] == dataset]
    return [(str(m), str(u)) for m, u in zip(part["model"], part["used"]) if isinstance(u, str) and u]


USED_TITLE = "What each model used"


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds of every metric@K and timing, one row per dataset × model."""
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "model", "n_seeds"])
    value_cols = [c for c in runs.columns if "@" in c] + ["valid_selection", *TIMINGS, "epochs_run", "wall_seconds"]
    g = runs.groupby(["dataset", "model"], sort=False)[value_cols]
    mean, std = g.mean(), g.std(ddof=1)
    # a value some seeds lack (e.g. +MiB of runs from before it was recorded) has no mean over the row's
    # seeds: a mean of the others would pass for one over all n_seeds (and could be bolded), so NaN ("—")
    whole = g.count().eq(g.size(), axis=0)
    mean, std = mean.where(whole), std.where(whole)
    out = pd.concat([mean.add_suffix("_mean"), std.add_suffix("_std")], axis=1)
    ordered = [f"{c}_{s}" for c in value_cols for s in ("mean", "std")]
    out = out[ordered]
    out.insert(0, "n_seeds", g.size())
    out.insert(1, "selection_metric", runs.groupby(["dataset", "model"], sort=False)["selection_metric"].first())
    return out.reset_index()


def grid_groups(config) -> dict[str, str]:
    """Each grid point's label → its grid (``grid_of``), in the config's order."""
    return {m.key: m.grid_of for m in config.models if m.grid_of}


def grid_seed_count(config) -> int:
    """How many of the benchmark's first seeds a grid's points are all trained on and compared over
    (``grid_seeds``; every seed when it is unset)."""
    n = len(config.seeds)
    limit = getattr(config, "grid_seeds", None)
    return n if limit is None else min(limit, n)


def chosen_points(runs: pd.DataFrame, config) -> dict[tuple[str, str], tuple[str, int, float]]:
    """``(dataset, grid) → (label, points, valid)``: the point validation chooses in each grid, how many points
    it was compared with, and its mean validation figure over the seeds compared. Only the grid's first
    :func:`grid_seed_count` seeds count: among the points finished on the most of them, the best mean validation
    selection metric wins (ties: the first listed). The test split chooses nothing."""
    best: dict[tuple[str, str], tuple[str, int, float]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    # the config's order: a later point must be strictly better to win a tie
    for r in grid_point_stats(runs, config).itertuples(index=False):
        key, n, mean = (r.dataset, r.grid), int(r.seeds), float(r.valid_mean)
        counts.setdefault(key, []).append(n)
        if key not in best or (n, mean) > best[key][1:]:
            best[key] = (r.model, n, mean)
    return {key: (b[0], counts[key].count(b[1]), b[2]) for key, b in best.items()}


def grid_point_stats(runs: pd.DataFrame, config) -> pd.DataFrame:
    """Every grid point's validation selection metric over the seeds its grid compares (:func:`grid_seed_count`):
    one row per dataset × point, in the config's order, with ``grid``, ``seeds`` (how many finished), ``valid_mean``
    and ``valid_std`` (sample std; NaN for one seed). What :func:`chosen_points` chooses from."""
    cols = ["dataset", "grid", "model", "seeds", "valid_mean", "valid_std"]
    group = grid_groups(config)
    if runs.empty or not group:
        return pd.DataFrame(columns=cols)
    seeds = config.seeds[:grid_seed_count(config)]
    part = runs[runs["seed"].isin(seeds) & runs["model"].isin(list(group))]
    stats = part.groupby(["dataset", "model"], sort=False)["valid_selection"].agg(["size", "mean", "std"])
    rows = [(dataset, group[label], label, int(stats.loc[(dataset, label), "size"]),
             float(stats.loc[(dataset, label), "mean"]), float(stats.loc[(dataset, label), "std"]))
            for dataset in runs["dataset"].unique() for label in group if (dataset, label) in stats.index]
    return pd.DataFrame(rows, columns=cols)


def tuned(agg: pd.DataFrame, runs: pd.DataFrame, config,
          picks: dict[tuple[str, str], tuple[str, int, float]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every grid as one row per dataset: the aggregate row (over all its finished seeds) of the point
    :func:`chosen_points` picks (``picks``, when known already), renamed to the grid, with the point's label in
    ``chosen``, the number of points compared in ``points`` and the validation figure it was chosen on in
    ``chosen_on``; other models as they are (``chosen`` empty, ``points`` 1). Also the runs of the rows kept,
    renamed alike, for the paired test."""
    group = grid_groups(config)
    picks = chosen_points(runs, config) if picks is None else picks
    rows, kept = [], []
    for dataset, part in agg.groupby("dataset", sort=False):
        done: set[str] = set()
        for _, r in part.iterrows():
            g = group.get(r["model"])
            if g is None:
                rows.append({**r.to_dict(), "chosen": "", "points": 1, "chosen_on": float("nan")})
                kept.append((dataset, r["model"], r["model"]))
                continue
            if g in done or (dataset, g) not in picks:
                continue
            done.add(g)
            label, points, chosen_on = picks[(dataset, g)]
            best = part[part["model"] == label].iloc[0]
            rows.append({**best.to_dict(), "model": g, "chosen": label, "points": points, "chosen_on": chosen_on})
            kept.append((dataset, label, g))
    table = pd.DataFrame(rows, columns=[*agg.columns, "chosen", "points", "chosen_on"])
    rename = {(d, label): name for d, label, name in kept}
    keys = list(zip(runs.get("dataset", []), runs.get("model", [])))
    chosen_runs = runs[[k in rename for k in keys]].copy()
    chosen_runs["model"] = [rename[k] for k in zip(chosen_runs["dataset"], chosen_runs["model"])]
    return table, chosen_runs


def later_seed_of_unchosen_point(runs: pd.DataFrame, config,
                                 picks: dict[tuple[str, str], tuple[str, int, float]] | None = None) -> pd.Series:
    """Per run, whether it is a seed beyond ``grid_seeds`` of a grid point its grid did not choose (``picks``:
    :func:`chosen_points`, when known already; such a cell is not trained with ``grid_seeds``; one finished by an
    earlier run without it is left out of the report, so that every unchosen point is shown over the same seeds
    its grid compared)."""
    n = grid_seed_count(config)
    if runs.empty or n == len(config.seeds):
        return pd.Series(False, index=runs.index)
    group = grid_groups(config)
    picks = {k: v[0] for k, v in (chosen_points(runs, config) if picks is None else picks).items()}
    later = ~runs["seed"].isin(config.seeds[:n])
    unchosen = [label in group and picks.get((d, group[label])) != label
                for d, label in zip(runs["dataset"], runs["model"])]
    return later & pd.Series(unchosen, index=runs.index)


def has_grids(config) -> bool:
    return any(m.grid_of for m in config.models)


def chosen_line(rows: pd.DataFrame, config) -> str:
    """Which point each grid of a dataset's tuned rows chose, on which validation figure (with ``grid_seeds``,
    the figure over the seeds compared, then the point's figure over all its seeds)."""
    n = grid_seed_count(config)
    by_seed = n < len(config.seeds)
    on = f" on seed{'' if n == 1 else 's'} {', '.join(map(str, config.seeds[:n]))}" if by_seed else ""
    picks = []
    for _, r in rows.iterrows():
        if not r["chosen"]:
            continue
        figure = r["chosen_on"] if by_seed else r["valid_selection_mean"]
        overall = f"; {r['valid_selection_mean']:.4f} over all its seeds" if by_seed else ""
        picks.append(f"{r['model']}: {r['chosen']} (valid {config.train.metric} {figure:.4f}{on}, best of "
                     f"{int(r['points'])} point{'' if r['points'] == 1 else 's'}{overall})")
    return "Chosen on validation: " + "; ".join(picks) + "."


TUNED_NOTE = ("Each grid is one row, named by the grid: per dataset, its point with the best mean validation "
              "{metric} (among the points finished on the most seeds; ties: the first listed); the test split "
              "chooses nothing. Every point is listed in the sections after this one.")


EVERY_POINT_NOTE = ("Every grid point as trained. Test figures are not bolded here: the point best on them would "
                    "be a choice made on test; the tuned section above chose on validation.")


# ------------------------------------------------------------------------------------- significance
def per_user_means(run_dirs: list[str | Path], metric: str) -> pd.Series:
    """A user's test ``metric`` averaged over the given runs (seeds); index = internal user id."""
    key = metric.replace("@", "_at_")
    parts = []
    for d in run_dirs:
        path = Path(d) / "test_per_user.npz"
        try:
            with np.load(path) as z:
                parts.append(pd.Series(z[key], index=z["users"]))
        # deleted or damaged after the cell finished (a damaged deflate stream is zlib.error, a cut one EOFError)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(path, f"the paired test reads each cell's per-user {metric} here, and it is missing or "
                                  f"unreadable ({type(e).__name__}: {e}); delete the cell's folder and run the "
                                  f"benchmark again to recompute it") from None
    return pd.concat(parts, axis=1).mean(axis=1, skipna=True).dropna()


_ZERO_DIFF = 1e-12  # |difference| at or below this (rounding noise) counts as zero


def paired_test(a: pd.Series, b: pd.Series, method: str = "wilcoxon") -> dict[str, Any]:
    """Paired test over the users present in both ``a`` and ``b`` (Series indexed by user id)."""
    from scipy import stats

    # a NaN metric is no value: such a user is in one model only (a NaN pair made mean_diff NaN and p = 1)
    users = a.dropna().index.intersection(b.dropna().index)
    x, y = a.loc[users].to_numpy(float), b.loc[users].to_numpy(float)
    diff = x - y
    out: dict[str, Any] = {"method": method, "n_users": int(len(users)),
                           "mean_diff": float(diff.mean()) if len(diff) else float("nan")}
    # a per-user metric averaged over seeds carries rounding noise: the same values summed in another seed
    # order differ by ~1e-16, which the signed-rank test would count as a (smallest-ranked) difference
    # instead of a zero to drop. Metrics live in [0, 1]: a difference this small is a zero.
    diff[np.abs(diff) <= _ZERO_DIFF] = 0.0
    # the signed-rank test drops zero differences: it rests on these users alone
    out["n_differing"] = int(np.count_nonzero(diff))
    if len(users) < 2 or not np.any(diff != 0):
        # no evidence of any difference (identical rankings or too few users)
        out.update(statistic=float("nan"), p_value=1.0)
        return out
    if method == "ttest" and np.ptp(diff) <= _ZERO_DIFF:
        # every user differs by the same amount (up to rounding): the differences have no variance, t divides
        # by zero and scipy says t = ±inf, p = 0 (or ~1e-30 from rounding noise), "p < 1e-300" even for three
        # users. The t-test is undefined here: no statistic, no p-value, and the line says why
        out.update(statistic=float("nan"), p_value=float("nan"), undefined="zero-variance differences")
        return out
    if method == "wilcoxon":
        res = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    elif method == "ttest":
        res = stats.ttest_rel(x, y, alternative="two-sided")
    else:
        raise ValueError(f"unknown paired test {method!r}")
    p = float(res.pvalue)
    out.update(statistic=float(res.statistic), p_value=min(max(p, 0.0), 1.0) if math.isfinite(p) else 1.0)
    return out


def significance(runs: pd.DataFrame, agg: pd.DataFrame, config) -> dict[str, dict[str, Any]]:
    """Per dataset: best vs second-best model (ranked on validation), paired over test users."""
    out: dict[str, dict[str, Any]] = {}
    for dataset, rows in agg.groupby("dataset", sort=False):
        if len(rows) < 2:
            continue
        # a stable sort: models tied on validation keep the configuration's order (the first listed wins)
        ranked = rows.sort_values("valid_selection_mean", ascending=False, kind="stable")
        best, second = ranked["model"].iloc[0], ranked["model"].iloc[1]
        metric = config.train.metric
        res = paired_models(runs[runs["dataset"] == dataset], best, second, metric, config.significance)
        res.update(best=best, second=second, metric=metric)
        out[str(dataset)] = res
    return out


def paired_models(runs: pd.DataFrame, a: str, b: str, metric: str, method: str,
                  means: Callable[[list[str], str], pd.Series] = per_user_means) -> dict[str, Any]:
    """:func:`paired_test` of models ``a`` and ``b`` (one dataset's ``runs``) on the per-user test ``metric``
    averaged over seeds, with ``seeds_best`` / ``seeds_second`` (how many each side averaged) and ``seed_pairing``:
    paired users mean paired seeds too, so where a cell failed both sides average over the seeds both finished
    ("common"); with no seed in common each side keeps its own ("disjoint"). ``means``: :func:`per_user_means`, or
    a memo of it where one side recurs."""
    dirs_a = runs.loc[runs["model"] == a].set_index("seed")["run_dir"]
    dirs_b = runs.loc[runs["model"] == b].set_index("seed")["run_dir"]
    common = [s for s in dirs_a.index if s in dirs_b.index]
    pairing = "all"
    if not common:
        pairing = "disjoint"
    elif len(common) < len(dirs_a) or len(common) < len(dirs_b):
        dirs_a, dirs_b, pairing = dirs_a.loc[common], dirs_b.loc[common], "common"
    res = paired_test(means(dirs_a.tolist(), metric), means(dirs_b.tolist(), metric), method)
    res.update(seeds_best=len(dirs_a), seeds_second=len(dirs_b), seed_pairing=pairing)
    return res


def holm(p_values: list[float]) -> list[float]:
    r"""Holm–Bonferroni adjusted p-values (Holm, Scand. J. Statist. 1979): with :math:`p_{(1)} \le \dots \le p_{(m)}`,
    :math:`\tilde p_{(i)} = \max_{j \le i} \min(1, (m - j + 1)\, p_{(j)})`. NaN (no test) is left out of the family
    and stays NaN. Written here because scipy offers only Benjamini–Hochberg (``false_discovery_control``) and
    statsmodels is not a dependency for six lines."""
    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out.tolist()


def baseline_metrics(config) -> list[str]:
    """What the baseline comparison reports: recall and NDCG (those of ``report_metrics``) at the selection metric's
    K, else the selection metric alone."""
    k = config.train.metric.split("@")[1]
    return [f"{m}@{k}" for m in config.report_metrics if m in ("recall", "ndcg")] or [config.train.metric]


def versus_baseline(rows: pd.DataFrame, runs: pd.DataFrame, config) -> pd.DataFrame:
    """Every model against ``config.baseline`` on each dataset: per :func:`baseline_metrics` metric, the relative
    difference of the mean test figures (``<metric>_rel``, e.g. +0.05 for 5 % above), the paired test over users
    (:func:`paired_models`, ``<metric>_p``) and its Holm-adjusted p-value over the models compared on that dataset
    (``<metric>_p_holm``). ``rows``: the table compared (the tuned rows when there are grids; ``runs`` named alike)."""
    base = config.baseline
    metrics = baseline_metrics(config)
    read: dict[tuple[tuple[str, ...], str], pd.Series] = {}

    def means(run_dirs: list[str], metric: str) -> pd.Series:  # the baseline's files are read once, not per model
        key = (tuple(run_dirs), metric)
        if key not in read:
            read[key] = per_user_means(run_dirs, metric)
        return read[key]

    out = []
    for dataset, part in rows.groupby("dataset", sort=False):
        if base not in set(part["model"]):
            continue
        by_model = part.set_index("model")
        b = by_model.loc[base]
        sel = runs[runs["dataset"] == dataset]
        lines = [{"dataset": dataset, "model": m, "baseline": base} for m in part["model"] if m != base]
        for metric in metrics:
            ps = []
            for line in lines:
                r = by_model.loc[line["model"]]
                line[f"{metric}_rel"] = r[f"{metric}_mean"] / b[f"{metric}_mean"] - 1.0 \
                    if b[f"{metric}_mean"] > 0 else float("nan")
                test = paired_models(sel, line["model"], base, metric, config.significance, means)
                ps.append(test["p_value"])
                line[f"{metric}_p"] = test["p_value"]
            for line, adj in zip(lines, holm(ps)):
                line[f"{metric}_p_holm"] = adj
        out.extend(lines)
    cols = ["dataset", "model", "baseline", *[f"{m}_{s}" for m in metrics for s in ("rel", "p", "p_holm")]]
    return pd.DataFrame(out, columns=cols)


def baseline_table(cmp: pd.DataFrame, dataset: str, config) -> Table:
    """:func:`versus_baseline`'s rows of ``dataset`` as a report table: relative difference and Holm-adjusted p."""
    metrics = baseline_metrics(config)
    header = ["Model"]
    for m in metrics:
        name, k = m.split("@")
        header += [f"{METRIC_TITLES[name]}@{k} vs {config.baseline}", "p (Holm)"]
    cells, bold = [], []
    for _, r in cmp[cmp["dataset"] == dataset].iterrows():
        line = [str(r["model"])]
        for m in metrics:
            rel = r[f"{m}_rel"]
            line += ["—" if not math.isfinite(rel) else f"{100 * rel:+.1f}%", _p_short(r[f"{m}_p_holm"])]
        cells.append(line)
        bold.append([False] * len(line))
    return f"Against the baseline ({config.baseline})", header, cells, bold


def versus_note(config) -> str:
    name = "Wilcoxon signed-rank" if config.significance == "wilcoxon" else "paired t-test"
    return (f"Relative difference of the mean test figures from {config.baseline}'s; p: paired {name} test over "
            f"the test users (per-user figures averaged over the seeds both finished), Holm-adjusted over the "
            f"models compared (baseline.csv has the unadjusted p too).")


def _p_short(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def significance_line(s: dict[str, Any]) -> str:
    head = f"Significance: {s['best']} (best on validation {s['metric']}) vs {s['second']} (second): "
    n_users = s["n_users"]
    if n_users < 2:  # no test was run: its placeholder p = 1 is no p-value to print (nor +nan for no user)
        diff = f", mean difference {s['mean_diff']:+.4f}" if n_users else ""
        return f"{head}no paired test, {n_users} test user{'' if n_users == 1 else 's'} in common{diff}."
    name = "Wilcoxon signed-rank" if s["method"] == "wilcoxon" else "paired t-test"
    n = s.get("seeds_best")
    over = {"common": f"the {n} seed{'' if n == 1 else 's'} both finished",
            "disjoint": f"seeds; no seed finished by both: {s.get('seeds_best')} and {s.get('seeds_second')} "
                        f"different ones"}.get(s.get("seed_pairing"), "seeds")
    per_user = f"per-user {s['metric']} averaged over {over}"
    # one seed on each side: nothing was averaged over seeds
    if s.get("seed_pairing") == "all" and n == 1:
        per_user = f"per-user {s['metric']} of the one seed"
    elif s.get("seed_pairing") == "disjoint" and n == 1 and s.get("seeds_second") == 1:
        per_user = f"per-user {s['metric']} of one seed each, a different one: no seed finished by both"
    if s.get("undefined"):  # no p-value was computed (paired_test): say why rather than print a number
        what = ("no p-value: every user's difference is the same, so the differences have zero variance and the "
                "t-test is undefined (the Wilcoxon signed-rank test, `significance: wilcoxon`, still applies)")
    else:
        what = _p_text(s["p_value"])
    return (f"{head}paired {name} over {s['n_users']} test users{_differing(s)} ({per_user}), "
            f"mean difference {s['mean_diff']:+.4f}, {what}.")


def _differing(s: dict[str, Any]) -> str:
    n = s.get("n_differing")
    return "" if n is None or n == s["n_users"] else f", {n} with a difference"


def _p_text(p: float) -> str:
    # a p-value below the smallest double underflows to 0.0: "p = 0" would claim certainty
    return "p < 1e-300" if p < 1e-300 else f"p = {p:.3g}"


# ------------------------------------------------------------------------------------- tables
def _fmt(mean: float, std: float, dec: int) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.{dec}f}" if not math.isfinite(std) else f"{mean:.{dec}f} ± {std:.{dec}f}"


Table = tuple[str, list[str], list[list[str]], list[list[bool]]]  # title, header, cells, bold


def _table(rows: pd.DataFrame, title: str, cols: list[tuple[str, str, int, bool]]) -> Table:
    """``cols``: (aggregate column, header, decimals, bold the column's best mean)."""
    header = ["Model", *[h for _, h, _, _ in cols]]
    best = {c: rows[f"{c}_mean"].max() for c, _, _, b in cols if b}
    cells, bold = [], []
    for _, r in rows.iterrows():
        line, marks = [str(r["model"])], [False]
        for c, _, dec, b in cols:
            line.append(_fmt(r[f"{c}_mean"], r[f"{c}_std"], dec))
            # ties at the shown precision are all bold: "**0.1234**" beside a plain "0.1234" claimed a lead the
            # table cannot show (and that one seed more could reverse)
            marks.append(b and math.isfinite(best[c]) and math.isfinite(r[f"{c}_mean"])
                         and f"{r[f'{c}_mean']:.{dec}f}" == f"{best[c]:.{dec}f}")
        cells.append(line)
        bold.append(marks)
    return title, header, cells, bold


def tables(agg: pd.DataFrame, dataset: str, config, bold_test: bool = True) -> list[Table]:
    """A dataset's tables: test metrics at each reported K (best mean bold unless ``bold_test`` is False), the
    validation metric models are ranked and chosen on, then training cost."""
    rows = agg[agg["dataset"] == dataset]
    out = []
    for k in config.ks_reported:
        cols = [(f"{m}@{k}", f"{METRIC_TITLES[m]}@{k}", 4, bold_test) for m in config.report_metrics
                if f"{m}@{k}_mean" in rows.columns]
        if cols:
            out.append(_table(rows, f"Test metrics @{k}", cols))
    # what the significance line's "best on validation" and each run's best epoch rest on, visible
    metric = config.train.metric
    out.append(_table(rows, f"Validation {metric} (the selection metric)",
                      [("valid_selection", f"valid {metric}", 4, True)]))
    cost = [(c, h, dec, False) for c, (h, dec) in TIMINGS.items() if f"{c}_mean" in rows.columns]
    out.append(_table(rows, "Cost", cost))
    return out


COST_NOTE = ("Cost: training seconds per epoch (with any per-epoch graph resampling), epochs to the "
             "best-validation checkpoint, seconds per validation evaluation, the process's peak resident "
             "memory during the cell (MiB; it includes the loaded dataset and features), and +MiB, how much "
             "the cell added to the memory held when it started (the model's own footprint).")


def seed_shortfall(agg: pd.DataFrame, config, tuned_rows: pd.DataFrame | None = None) -> str:
    """A sentence naming the rows averaged over fewer seeds than they should be (their other cells failed), or
    "" when every row has them all. With ``grid_seeds``, a grid point its grid did not choose (``tuned_rows``:
    the :func:`tuned` rows naming the chosen ones) should have the first ``grid_seeds`` seeds only."""
    n, first = len(config.seeds), grid_seed_count(config)
    group = set(grid_groups(config)) if first < n else set()
    chosen = set() if tuned_rows is None else {(d, c) for d, c in zip(tuned_rows["dataset"], tuned_rows["chosen"]) if c}

    def expected(dataset: str, model: str) -> int:
        return first if model in group and (dataset, model) not in chosen else n

    short = [f"{r.model} on {r.dataset} ({int(r.n_seeds)} of {expected(r.dataset, r.model)})"
             for r in agg.itertuples() if r.n_seeds < expected(r.dataset, r.model)]
    return f"Fewer seeds (the others failed, see below): {', '.join(short)}." if short else ""


def grid_seeds_note(config) -> str:
    """The sentence saying that grid points were trained on the first seeds only, or "" (every seed)."""
    n = grid_seed_count(config)
    if n == len(config.seeds) or not has_grids(config):
        return ""
    return (f"Grid points are trained on the first {n} seed{'' if n == 1 else 's'} "
            f"({', '.join(map(str, config.seeds[:n]))}) and compared on their mean validation "
            f"{config.train.metric} there (grid_seeds: {n}); the point each grid chooses is then trained on every "
            f"seed.")


def _one_line(text: str) -> str:
    """An error message as one line: a multi-line one would end its list item (a line such as ``## …`` or
    ``---`` would even become a heading)."""
    return " ".join(str(text).split())


def _md_tables(agg: pd.DataFrame, dataset: str, config, level: str, bold_test: bool = True) -> list[str]:
    return [line for t in tables(agg, dataset, config, bold_test) for line in _md_table(t, level)]


def _md_versus(versus: pd.DataFrame | None, dataset: str, config, level: str) -> list[str]:
    if versus is None or not (versus["dataset"] == dataset).any():
        return []
    return [*_md_table(baseline_table(versus, dataset, config), level), "", versus_note(config)]


def _md_table(table: Table, level: str) -> list[str]:
    title, header, cells, bold = table
    parts = [f"\n{level} {title}\n", "| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for line, b in zip(cells, bold):
        parts.append("| " + " | ".join(f"**{v}**" if isb else v for v, isb in zip(line, b)) + " |")
    return parts


def markdown(agg: pd.DataFrame, sig: dict[str, dict], config, failed: dict[str, str] | None = None,
             grids: tuple[pd.DataFrame, dict[str, dict]] | None = None, versus: pd.DataFrame | None = None) -> str:
    """The report as Markdown; ``grids``: the :func:`tuned` rows and their significance, shown first; ``versus``:
    :func:`versus_baseline` of the rows shown first (the tuned ones with grids), after their tables; each dataset's
    section ends with what each model used (``agg``'s ``used``: :func:`add_used`)."""
    short = seed_shortfall(agg, config, grids[0] if grids is not None else None)
    by_grid = grid_seeds_note(config)
    parts = [f"# Benchmark results\n\nTest metrics at the best-validation epoch ({config.train.metric}), "
             f"mean ± sample std over seeds {', '.join(map(str, config.seeds))}; best mean in bold (ties at the "
             f"shown precision all bold). {by_grid + ' ' if by_grid else ''}"
             f"{short + ' ' if short else ''}{COST_NOTE}\n"]
    if grids is not None:
        tagg, tsig = grids
        parts.append(f"\n## Tuned on validation\n\n{TUNED_NOTE.format(metric=config.train.metric)}\n")
        for dataset in tagg["dataset"].unique():
            parts.append(f"\n### {dataset} (tuned)\n\n{chosen_line(tagg[tagg['dataset'] == dataset], config)}\n")
            parts.extend(_md_tables(tagg, dataset, config, "####"))
            if dataset in tsig:
                parts.append("\n" + significance_line(tsig[dataset]))
            parts.extend(_md_versus(versus, dataset, config, "####"))
    for dataset in agg["dataset"].unique():
        parts.append(f"\n## {dataset}\n")
        if grids is not None:
            parts.append(f"\n{EVERY_POINT_NOTE}\n")
        parts.extend(_md_tables(agg, dataset, config, "###", bold_test=grids is None))
        if dataset in sig:
            parts.append("\n" + significance_line(sig[dataset]))
        if grids is None:
            parts.extend(_md_versus(versus, dataset, config, "###"))
        used = _used(agg, dataset)
        if used:
            parts.append(f"\n### {USED_TITLE}\n")
            parts.extend(f"- {model}: {_one_line(text)}" for model, text in used)
    if failed:
        parts.append("\n## Failed cells\n")
        parts.extend(f"- {k}: {_one_line(v)}" for k, v in failed.items())
    return "\n".join(parts) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"\textless{}", ">": r"\textgreater{}"}


def _tex(text: str) -> str:
    """``text`` as LaTeX source that prints it (model labels hold ``_``, ``+``, ``=``; a dataset folder anything)."""
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("—", "---")


def latex(agg: pd.DataFrame, config, grids: tuple[pd.DataFrame, dict[str, dict]] | None = None,
          versus: pd.DataFrame | None = None) -> str:
    r"""The test tables as LaTeX (``booktabs``), one ``table`` per dataset and reported K, ready to ``\input``
    into a paper: with grids, each grid's chosen row (the tuned section's table), else every model; best mean
    bold as in the Markdown (ties at the shown precision all bold); then, with ``versus``
    (:func:`versus_baseline`), each dataset's comparison with the baseline."""
    rows = grids[0] if grids is not None else agg
    seeds = ", ".join(map(str, config.seeds))
    how = "tuned on validation, " if grids is not None else ""
    short = seed_shortfall(agg, config, grids[0] if grids is not None else None)
    parts = [f"% recgoat benchmark: test metrics at the best-validation epoch ({config.train.metric}), {how}"
             f"mean $\\pm$ sample std over seeds {seeds}.", *([f"% {short}"] if short else []),
             "% Needs \\usepackage{booktabs}.", ""]
    for dataset in rows["dataset"].unique():
        shown = [t for t in tables(rows, dataset, config) if t[0].startswith("Test metrics")]
        captions = [f"{t[0][0].lower() + t[0][1:]} (mean ± std over seeds{', ' + how.strip(', ') if how else ''})"
                    for t in shown]
        if versus is not None and (versus["dataset"] == dataset).any():
            shown.append(baseline_table(versus, dataset, config))
            captions.append(f"against {config.baseline}: relative difference of the mean test figures and the "
                            f"paired test's p over the test users, Holm-adjusted over the models")
        for (_, header, cells, bold), caption in zip(shown, captions):
            parts += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(dataset)}: {_tex(caption)}.}}",
                      r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
                      " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
            for line, marks in zip(cells, bold):
                parts.append(" & ".join(rf"\textbf{{{_tex(v)}}}" if b else _tex(v) for v, b in zip(line, marks))
                             + r" \\")
            parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        # not typeset: what the figures above rest on, beside them for whoever puts them in a paper
        used = _used(rows, dataset)
        if used:
            parts += [f"% {dataset}: {USED_TITLE.lower()}", *(f"%   {m}: {_one_line(u)}" for m, u in used), ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------- plots
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def learning_curves(runs: pd.DataFrame, dataset: str) -> str:
    """Validation selection metric per epoch, mean over seeds (thin lines: single seeds)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sel = runs[runs["dataset"] == dataset]
    metric = sel["selection_metric"].iloc[0]
    for i, (model, rows) in enumerate(sel.groupby("model", sort=False)):
        color = f"C{i % 10}"
        curves = {}
        for _, r in rows.iterrows():
            hist = read_json(Path(r["run_dir"]) / "result.json").get("history", [])
            pts = {h["epoch"] + 1: h[f"valid_{metric}"] for h in hist if f"valid_{metric}" in h}
            if pts:
                curves[r["seed"]] = pd.Series(pts)
        if curves:
            frame = pd.DataFrame(curves).sort_index()
            for c in frame.columns:
                ax.plot(frame.index, frame[c], color=color, alpha=0.25, lw=0.8)
            ax.plot(frame.index, frame.mean(axis=1), color=color, lw=2, label=model, marker="o", ms=3)
        else:  # not trained by gradient: its one validation value
            ax.axhline(rows["valid_selection"].mean(), color=color, ls="--", lw=1.5, label=f"{model} (no training)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{dataset}: learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def metric_bars(agg: pd.DataFrame, dataset: str, config, what: str = "") -> str:
    """Grouped bars (metric@K groups, one bar per model) with ±1 std error bars; ``what`` qualifies the title
    (e.g. "each grid at its chosen point")."""
    import matplotlib.pyplot as plt

    rows = agg[agg["dataset"] == dataset]
    cols = [f"{m}@{k}" for m in config.report_metrics for k in config.ks_reported if f"{m}@{k}_mean" in rows]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(cols) + 2), 3.8))
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(cols))
    for i, (_, r) in enumerate(rows.iterrows()):
        means = [r[f"{c}_mean"] for c in cols]
        stds = np.nan_to_num([r[f"{c}_std"] for c in cols])
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=r["model"], color=f"C{i % 10}")
    ax.set_xticks(x, [f"{METRIC_TITLES[c.split('@')[0]]}@{c.split('@')[1]}" for c in cols], rotation=30)
    ax.set_title(f"{dataset}: test metrics{f', {what}' if what else ''} (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def timing_bars(agg: pd.DataFrame, dataset: str) -> str:
    import matplotlib.pyplot as plt

    rows = agg[agg["dataset"] == dataset]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    mem = ("memory_growth_mb", "memory the cell added (MiB)") if rows["memory_growth_mb_mean"].notna().all() \
        else ("peak_memory_mb", "peak memory (MiB)")
    for ax, (col, title) in zip(axes, [("seconds_per_epoch", "training s/epoch"), ("eval_seconds", "evaluation s"),
                                       mem]):
        ax.bar(rows["model"], rows[f"{col}_mean"], yerr=np.nan_to_num(rows[f"{col}_std"].to_numpy(float)),
               capsize=3, color=[f"C{i % 10}" for i in range(len(rows))])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def grid_search_dots(points: pd.DataFrame, picks: dict[tuple[str, str], tuple[str, int, float]], dataset: str,
                     metric: str) -> str:
    """One panel per grid: each point's mean validation ``metric`` over the seeds compared, ±1 std (dots, not
    bars: the axis does not start at zero, so that close points stay apart), the chosen point in red; points
    finished on fewer seeds than the others (not compared) hollow."""
    import matplotlib.pyplot as plt

    rows = points[points["dataset"] == dataset]
    grids = list(dict.fromkeys(rows["grid"]))
    sizes = [int((rows["grid"] == g).sum()) for g in grids]
    fig, axes = plt.subplots(len(grids), 1, squeeze=False,
                             figsize=(7.2, sum(0.28 * n + 0.9 for n in sizes)), height_ratios=sizes)
    for ax, g in zip(axes[:, 0], grids):
        def short(label: str) -> str:  # the grid's name prefixes every automatic label
            return label[len(g) + 1:] if label.startswith(g + "+") else label

        part = rows[rows["grid"] == g]
        chosen = picks.get((dataset, g), ("", 0, 0.0))[0]
        most = part["seeds"].max()
        y = np.arange(len(part))[::-1]  # the config's order from the top
        for yi, r in zip(y, part.itertuples(index=False)):
            color = "C3" if r.model == chosen else "C0"
            ax.errorbar(r.valid_mean, yi, xerr=0.0 if np.isnan(r.valid_std) else r.valid_std, fmt="o", capsize=3,
                        color=color, mfc=color if r.seeds == most else "white")
        ax.set_yticks(y, [short(m) for m in part["model"]], fontsize=8)
        ax.set_ylim(-0.6, len(part) - 0.4)
        ax.set_title(f"{g}: validation {metric} per grid point (chosen: {short(chosen)})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------- html
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px}
td{text-align:right}td:first-child{text-align:left}th{background:#f3f3f3}.sig{background:#f7f7ff;padding:.6em}
img{max-width:100%;display:block;margin:1em 0}code{background:#f3f3f3;padding:1px 4px}"""


def _html_tables(agg: pd.DataFrame, dataset: str, config, level: str, bold_test: bool = True) -> list[str]:
    return [line for t in tables(agg, dataset, config, bold_test) for line in _html_table(t, level)]


def _html_versus(versus: pd.DataFrame | None, dataset: str, config, level: str) -> list[str]:
    if versus is None or not (versus["dataset"] == dataset).any():
        return []
    return [*_html_table(baseline_table(versus, dataset, config), level), f"<p>{html.escape(versus_note(config))}</p>"]


def _html_table(table: Table, level: str) -> list[str]:
    esc = html.escape
    title, header, cells, bold = table
    body = [f"<{level}>{esc(title)}</{level}><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for line, b in zip(cells, bold):
        body.append("<tr>" + "".join(f"<td><b>{esc(v)}</b></td>" if isb else f"<td>{esc(v)}</td>"
                                     for v, isb in zip(line, b)) + "</tr>")
    body.append("</table>")
    return body


def html_report(runs: pd.DataFrame, agg: pd.DataFrame, sig: dict[str, dict], config,
                failed: dict[str, str] | None = None,
                grids: tuple[pd.DataFrame, dict[str, dict]] | None = None,
                picks: dict[tuple[str, str], tuple[str, int, float]] | None = None,
                versus: pd.DataFrame | None = None) -> str:
    """The report as an HTML page with its plots inlined; ``grids`` and ``versus`` as :func:`markdown`'s, ``picks``
    the :func:`chosen_points` (found from ``runs`` when not given)."""
    esc = html.escape
    by_grid = grid_seeds_note(config)
    body = [f"<h1>Benchmark results</h1><p>Test metrics at the best-validation epoch "
            f"(<code>{esc(config.train.metric)}</code>), mean ± sample std over seeds "
            f"<code>{esc(', '.join(map(str, config.seeds)))}</code>; best mean in bold (ties at the shown "
            f"precision all bold). {esc(by_grid + ' ') if by_grid else ''}"
            f"Models: {esc(', '.join(m.key for m in config.models))}.</p>"]
    short = seed_shortfall(agg, config, grids[0] if grids is not None else None)
    if short:
        body.append(f"<p><strong>{esc(short)}</strong></p>")
    body.append(f"<p>{esc(COST_NOTE)}</p>")
    if agg.empty:
        body.append("<p>No finished cells.</p>")
    if grids is not None:
        tagg, tsig = grids
        points = grid_point_stats(runs, config)
        body.append(f"<h2>Tuned on validation</h2><p>{esc(TUNED_NOTE.format(metric=config.train.metric))}</p>")
        for dataset in tagg["dataset"].unique():
            body.append(f"<h3>{esc(str(dataset))} (tuned)</h3>"
                        f"<p>{esc(chosen_line(tagg[tagg['dataset'] == dataset], config))}</p>")
            body.extend(_html_tables(tagg, dataset, config, "h4"))
            if dataset in tsig:
                body.append(f"<p class='sig'>{esc(significance_line(tsig[dataset]))}</p>")
            body.extend(_html_versus(versus, dataset, config, "h4"))
            if (points["dataset"] == dataset).any():
                picks = chosen_points(runs, config) if picks is None else picks
                body.append(f"<img alt='grid search {esc(str(dataset))}' "
                            f"src='{grid_search_dots(points, picks, dataset, config.train.metric)}'>")
            if not tagg[tagg["dataset"] == dataset].empty:
                body.append(f"<img alt='metric bars {esc(str(dataset))} (tuned)' "
                            f"src='{metric_bars(tagg, dataset, config, 'each grid at its chosen point')}'>")
    for dataset in agg["dataset"].unique():
        body.append(f"<h2>{esc(str(dataset))}</h2>")
        if grids is not None:
            body.append(f"<p>{esc(EVERY_POINT_NOTE)}</p>")
        body.extend(_html_tables(agg, dataset, config, "h3", bold_test=grids is None))
        if dataset in sig:
            body.append(f"<p class='sig'>{esc(significance_line(sig[dataset]))}</p>")
        if grids is None:
            body.extend(_html_versus(versus, dataset, config, "h3"))
        used = _used(agg, dataset)
        if used:
            body.append(f"<h3>{USED_TITLE}</h3><ul class='used'>" + "".join(
                f"<li><b>{esc(model)}</b>: {esc(text)}</li>" for model, text in used) + "</ul>")
        body.append(f"<img alt='learning curves {esc(str(dataset))}' src='{learning_curves(runs, dataset)}'>")
        body.append(f"<img alt='metric bars {esc(str(dataset))}' src='{metric_bars(agg, dataset, config)}'>")
        body.append(f"<img alt='timing bars {esc(str(dataset))}' src='{timing_bars(agg, dataset)}'>")
    if failed:
        body.append("<h2>Failed cells</h2><ul>" + "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in failed.items())
                    + "</ul>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>recgoat benchmark</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def write_report(out: str | Path, config, failed: dict[str, str] | None = None, runs: pd.DataFrame | None = None,
                 picks: dict[tuple[str, str], tuple[str, int, float]] | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``report.html`` under ``out`` from the run folders (``runs``:
    :func:`collect_runs` of them, when known already), with the grid points :func:`chosen_points` picks (``picks``,
    when known already: the runner's, which chose the points trained beyond ``grid_seeds``)."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    runs = collect_runs(config) if runs is None else runs
    # chosen once, on every run: the runs left out below are seeds beyond the ones compared, which choose nothing
    picks = chosen_points(runs, config) if picks is None else picks
    runs = runs[~later_seed_of_unchosen_point(runs, config, picks)].reset_index(drop=True)
    agg = aggregate(runs)
    sig = significance(runs, agg, config) if not runs.empty else {}
    paths = {"csv": out / "results.csv", "md": out / "results.md", "html": out / "report.html",
             "tex": out / "results.tex", "runs_csv": out / "runs.csv"}
    grids = None
    if has_grids(config):
        tagg, truns = tuned(agg, runs, config, picks)
        tagg = add_used(tagg, runs, "chosen")  # a grid's row: what its chosen point used
        grids = (tagg, significance(truns, tagg, config) if not truns.empty else {})
        paths["tuned_csv"] = out / "tuned.csv"
        with atomic_path(paths["tuned_csv"]) as tmp:
            tagg.to_csv(tmp, index=False)
    versus = None
    if getattr(config, "baseline", None) and not runs.empty:
        shown = (tagg, truns) if grids is not None else (agg, runs)
        versus = versus_baseline(shown[0], shown[1], config)
        paths["baseline_csv"] = out / "baseline.csv"
        with atomic_path(paths["baseline_csv"]) as tmp:
            versus.to_csv(tmp, index=False)
    agg = add_used(agg, runs)
    with atomic_path(paths["csv"]) as tmp:
        agg.to_csv(tmp, index=False)
    with atomic_path(paths["runs_csv"]) as tmp:
        runs.to_csv(tmp, index=False)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown(agg, sig, config, failed, grids, versus))
    with atomic_path(paths["tex"]) as tmp:
        tmp.write_text(latex(agg, config, grids, versus))
    with atomic_path(paths["html"]) as tmp:
        # with no finished cell too: the page still names the failed cells
        tmp.write_text(html_report(runs, agg, sig, config, failed, grids, picks, versus))
    return paths
