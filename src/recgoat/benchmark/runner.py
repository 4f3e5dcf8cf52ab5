"""Run every (dataset, model, seed) cell of a benchmark, resumably: :func:`run_benchmark`.

A benchmark is the product ``datasets × models × seeds``. Each cell trains one model with the shared
:class:`~recgoat.training.trainer.Trainer` into its own run folder (:func:`run_cell`)::

    <out>/runs/<dataset>/<model>/seed<seed>/   cell.json, log.jsonl, checkpoint/, best/,
                                               result.json, test_per_user.npz

Model selection is validation-only: the trainer keeps the epoch with the best validation
``train.metric`` (Recall@20 by default) and reports test metrics for that checkpoint alone; the report
likewise ranks models by their mean *validation* metric (METHOD.md §6, §9).

Seeds: a cell's seed sets ``torch.manual_seed``/``numpy`` before ``Model.build`` (so initialisation
differs per seed) and ``TrainConfig.seed`` (negative sampling). The train/valid/test split is the same
for every seed (``split_seed``) unless ``split_seeds: true``, in which case seed *s* also re-splits.

This module runs the benchmark: the order of the steps (:func:`run_benchmark`: the checks, the folder lock, the
cells one by one or in workers, the report), the training of one cell (:func:`run_cell`) and ``--report-only``
(:func:`report_only`). Each concept lives in a module of its name under ``recgoat/benchmark/``:

- ``config.py``: :class:`BenchmarkConfig`, :class:`DatasetSpec`, :class:`ModelSpec`, hyper-parameter grids
  (:func:`expand_grid`), reading a benchmark YAML or record with ``--set`` overrides (:func:`load_config`,
  :func:`load_recorded_config`) and the checks that need no data (:func:`check_config`);
- ``cells.py``: :class:`Cell`, :class:`BenchmarkRun`, the cells of a benchmark (:func:`plan_cells`) and the grid's
  later seeds (:func:`split_grid_seeds`, :func:`split_later_grid_cells`, :func:`required_cells`);
- ``data.py``: loading a cell's dataset (:func:`load_dataset`) and its features, ``features: auto`` included
  (:func:`auto_feature_folder`, :func:`resolve_features`, :func:`auto_kinds`);
- ``paths.py``: the paths ``cell.json`` records, and finding them again (:func:`recorded_paths`,
  :func:`locate_recorded`, :func:`with_recorded_paths`);
- ``resume.py``: what ``cell.json`` records, and when a run folder is resumed, started afresh or refused
  (:func:`check_signature`, ``_signature_diff``, ``_restartable``);
- ``checks.py``: what is checked before anything trains (:func:`preflight`, :func:`pair_problems`,
  :func:`build_problem`, :func:`feature_kinds`, :func:`check_data_versions`, :func:`check_feature_versions`,
  :func:`check_inputs_before_training`, :func:`check_features_before_training`, :func:`check_report_cells`), and a
  cell's inputs from the datasets and features they loaded (``_cell_inputs``);
- ``memory.py``: a cell's peak memory (:class:`PeakRSS`);
- ``workers.py``: ``jobs: N``, the cells trained in worker processes (``_run_in_workers``, ``_stop_workers``,
  ``_watch_parent``, ``_sigint_blocked``);
- ``report.py``: ``results.csv``, ``results.md``, ``report.html`` and ``results.tex``.

Every name this module held before it was split is still importable from it (they are imported here). A test that
replaces one of them replaces it where its callers look it up: ``run_cell`` here, ``load_dataset`` and
``resolve_features`` in :mod:`recgoat.benchmark.checks`.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from recgoat.benchmark.cells import (BenchmarkRun, Cell, plan_cells, required_cells, split_grid_seeds,
                                     split_later_grid_cells)
from recgoat.benchmark.checks import (_STAND_IN_DIM, _cell_inputs, _checked_features, _feature_groups, _feature_split,
                                      _keeps_checked_features, _kinds_before_encoding, _listed, _load_cached,
                                      _stand_in_features, _trained_feature_digests, build_problem, check_data_versions,
                                      check_dataset_source, check_feature_versions, check_features_before_training,
                                      check_inputs_before_training, check_report_cells, feature_kinds, pair_problems,
                                      preflight, probe_model)
from recgoat.benchmark.config import (_SAFE_NAME, GRID_SECTIONS, RECORD, _NoEntry, BenchmarkConfig, DatasetSpec,
                                      ModelSpec, _apply, _apply_set, _as_list, _check_name, _config_from_tree,
                                      _entry_key, _find_entry, _grid_value_text, _pick, _set_splits, check_config,
                                      check_model_params, check_prepare, check_seeds, dataset_label, expand_grid,
                                      load_config, load_recorded_config)
from recgoat.benchmark.data import (auto_feature_folder, auto_kinds, feature_folder, is_presplit, load_dataset,
                                    needs_features, resolve_features)
from recgoat.benchmark.memory import PeakRSS
from recgoat.benchmark.paths import (_consistent_absolute, _recorded_locations, _relocated, locate_recorded,
                                     recorded_paths, with_recorded_paths)
from recgoat.benchmark.resume import (_COSMETIC_TRAIN_KEYS, _MISMATCH_FIX, _UNSET, TRAIN_ON, _comparable,
                                      _comparable_leaves,
                                      _data_signature, _effective_params, _mismatch_message, _model_config_changes,
                                      _recorded_mapping, _recorded_model_config, _restartable,
                                      _same_data_by_recorded_paths, _setting_changes, _signature, _signature_diff,
                                      check_signature, reopen_extended)
from recgoat.benchmark.workers import (_PARENT_POLL_S, _STOP_GRACE_S, _WORKER_CACHE, _WORKER_IN_CELL,
                                       _WORKER_INTERRUPTED, _WORKER_STOP, _run_in_workers, _sigint_blocked,
                                       _stop_workers, _train_in_worker, _watch_parent, _worker_init, _worker_sigint)
from recgoat.errors import RecGOATError, TrainingDiverged
from recgoat.io import atomic_path, folder_lock, read_json, write_json
from recgoat.training.trainer import TrainConfig


# every name this module held before it was split into the modules above, importable from here as before
__all__ = ["GRID_SECTIONS", "RECORD", "BenchmarkConfig", "BenchmarkRun", "Cell", "DatasetSpec", "ModelSpec", "PeakRSS",
           "auto_feature_folder", "auto_kinds", "build_problem", "check_config", "check_data_versions",
           "check_dataset_source", "check_feature_versions", "check_features_before_training",
           "check_inputs_before_training", "check_model_params", "check_prepare", "check_report_cells", "check_seeds",
           "check_signature", "dataset_label", "expand_grid", "feature_folder", "feature_kinds", "is_presplit",
           "load_config", "load_dataset", "load_recorded_config", "locate_recorded", "needs_features", "pair_problems",
           "plan_cells", "preflight", "probe_model", "recorded_paths", "report_only", "required_cells",
           "resolve_features", "run_benchmark", "run_cell", "split_grid_seeds", "split_later_grid_cells",
           "with_recorded_paths", "_COSMETIC_TRAIN_KEYS", "_MISMATCH_FIX", "_PARENT_POLL_S", "_SAFE_NAME",
           "_STAND_IN_DIM", "_STOP_GRACE_S", "_UNSET", "_WORKER_CACHE", "_WORKER_IN_CELL", "_WORKER_INTERRUPTED",
           "_WORKER_STOP", "_CellBar", "_NoEntry", "_apply", "_apply_set", "_as_list", "_cell_inputs", "_check_name",
           "_checked_features", "_comparable", "_comparable_leaves", "_config_from_tree", "_consistent_absolute",
           "_data_signature", "_effective_params", "_entry_key", "_fatal", "_feature_groups", "_feature_split",
           "_find_entry", "_grid_value_text", "_keeps_checked_features", "_kinds_before_encoding", "_listed",
           "_load_cached", "_mismatch_message", "_model_config_changes", "_pick", "_recorded_locations",
           "_recorded_mapping", "_recorded_model_config", "_relocated", "_restartable", "_run_cells", "_run_in_workers",
           "_same_data_by_recorded_paths", "_set_splits", "_setting_changes", "_sigint_blocked", "_signature",
           "_signature_diff", "_stand_in_features", "_stop_workers", "_train_in_worker", "_trained_feature_digests",
           "_watch_parent", "_worker_init", "_worker_sigint"]


def report_only(config: BenchmarkConfig) -> dict[str, Path]:
    """Rebuild ``results.csv``/``results.md``/``report.html``/``results.tex`` of a finished benchmark without training.

    Every requested cell must be finished with this configuration (:func:`check_report_cells`); nothing
    is written otherwise. With ``grid_seeds``, the grid points are chosen once, for the check (which later seeds
    are required) and the report, on one read of each cell, as :func:`run_benchmark` chooses them.
    """
    from recgoat.benchmark.report import chosen_points, collect_runs, write_report as _write

    config = with_recorded_paths(config)
    rows: dict[str, dict[str, Any]] = {}  # the finished cells' report rows (collect_runs): each cell read once
    picks = None
    if split_grid_seeds(config, plan_cells(config))[1]:
        picks = chosen_points(collect_runs(config, rows), config)
    check_report_cells(config, picks)
    return _write(Path(config.out), config, runs=collect_runs(config, rows), picks=picks)


def run_cell(cell: Cell, dataset, features, train_cfg: TrainConfig) -> dict[str, Any]:
    """Train one cell (resuming its checkpoint if any) and return its ``result.json`` content."""
    from recgoat.models.base import get_model_class
    from recgoat.training.trainer import Trainer

    model_cls = get_model_class(cell.model.name)
    check_model_params(cell.model)  # before cell.json records them: bad params must not claim the folder
    sig = _signature(cell, train_cfg, dataset)
    plan = check_signature(cell, sig)
    if plan == TRAIN_ON:
        # before cell.json records the larger cap: a run killed from here on must not leave the smaller cap's
        # result looking like a finished cell of the larger one
        _unfinish(cell.run_dir / "result.json")
    elif plan is not None:  # a failed or never-checkpointed cell of another configuration: afresh
        train_cfg = train_cfg.model_copy(update={"resume": False})
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cell.run_dir / "cell.json", sig)
    (cell.run_dir / "error.txt").unlink(missing_ok=True)  # an earlier failure's report no longer applies
    # seed initialisation: differs per seed, identical when a cell is re-run
    # torch takes no seed >= 2**64; reduced as `recgoat train` reduces it (run.py), so a cell and a run of the
    # same seed start alike (modulo 2**63 gave seeds 2**63 + s the initialisation of seed s)
    torch.manual_seed(cell.seed % 2**64)
    np.random.seed(cell.seed % 2**32)
    with PeakRSS() as mem:
        model = model_cls.build(dataset, cell.model.params, features)
        result = Trainer(train_cfg, run_dir=cell.run_dir).fit(model, dataset)
    result = {**result, "benchmark": {"label": cell.model.key, "seed": cell.seed,
                                      "dataset": dataset.name, "cell_peak_rss_mb": mem.peak_mb,
                                      "cell_start_rss_mb": mem.start_mb, "cell_rss_growth_mb": mem.growth_mb}}
    write_json(cell.run_dir / "result.json", result)
    return result


def _unfinish(path: Path) -> None:
    """Take the runner's ``benchmark`` entry out of the ``result.json`` at ``path`` (if there), so its cell reads as
    unfinished (:attr:`Cell.done`) until the trainer and :func:`run_cell` write the new one."""
    try:
        result = read_json(path)
    except (OSError, ValueError):
        return
    if isinstance(result, dict) and "benchmark" in result:
        del result["benchmark"]
        write_json(path, result)


def run_benchmark(config: BenchmarkConfig, on_cell: Callable[[Cell, str], None] | None = None,
                  write_report: bool = True) -> BenchmarkRun:
    """Run (or resume) every cell, then write ``results.csv``, ``results.md``, ``report.html`` and ``results.tex``.

    ``on_cell(cell, status)`` is told ``"skipped"``, ``"start"``, ``"done"``, ``"failed"``, or ``"unchosen"``
    (a grid point's seed beyond ``grid_seeds``, not trained: validation chose another point).
    """
    from recgoat.models.base import get_model_class

    model_classes = {m.key: get_model_class(m.name) for m in config.models}  # unknown names fail early
    # bars only where someone watches them, unless asked for; relative paths of a run from another working folder
    config = with_recorded_paths(config.where_watched())
    out = Path(config.out)
    cells = plan_cells(config)
    # finished under a smaller train.epochs: trained on to this one (only marked here; the folder is untouched)
    reopen_extended(cells, lambda c: _signature(c, config.cell_train_config(c.model, c.seed)))
    data_cache: dict[tuple[str, int | None], Any] = {}  # datasets loaded by the checks, for the cells to reuse
    preflight(config, cells, data_cache)  # before benchmark.json is replaced: a refused run leaves the folder as it was
    data_cache = check_data_versions(cells, data_cache)  # the datasets it loads are the ones the cells train on
    # each feature folder is read once by the checks: a given one here (a refused run leaves no folder behind), an
    # `auto` one under the lock (encoding writes into the benchmark folder)
    feat_cache = check_inputs_before_training(config, cells, model_classes, data_cache)
    with folder_lock(out):  # one writer per benchmark folder: two would train the same cells at once
        feat_cache = check_features_before_training(config, cells, model_classes, data_cache, feat_cache)
        return _run_cells(config, cells, model_classes, on_cell, write_report, data_cache, feat_cache)


def _run_cells(config: BenchmarkConfig, cells: list[Cell], model_classes: dict[str, Any],
               on_cell: Callable[[Cell, str], None] | None, write_report: bool,
               data_cache: dict[tuple[str, int | None], Any] | None = None,
               feat_cache: dict[tuple[str, int | None], Any] | None = None) -> BenchmarkRun:
    out = Path(config.out)
    write_json(out / "benchmark.json", config.model_dump(mode="json"))
    run = BenchmarkRun(config)
    notify = on_cell or (lambda c, s: None)
    data_cache = dict(data_cache or {})
    feat_cache = dict(feat_cache or {})
    first, later = split_grid_seeds(config, cells)
    # before the choice is made: the later seeds of one point per (dataset, grid)
    one_point_each = {(dataset_label(c.dataset), c.model.grid_of, c.seed) for c in later}
    bar = _CellBar(len(first) + len(one_point_each), config.progress)

    def finished(cell: Cell, result: dict[str, Any], seconds: float) -> None:
        run.results.append(result)
        run.trained.append(cell.title)
        bar.write(f"{cell.title}: {config.train.metric} valid "
                  f"{result['valid'][config.train.metric]:.4f} test {result['test'][config.train.metric]:.4f}"
                  f" ({seconds:.1f}s)")
        notify(cell, "done")
        bar.advance()

    def failed(cell: Cell, msg: str, trace: str) -> None:
        run.failed[cell.title] = msg
        with atomic_path(cell.run_dir / "error.txt") as tmp:  # makes the folder; never a cut-off trace
            tmp.write_text(trace)
        bar.write(f"FAILED {cell.title}: {msg}")
        notify(cell, "failed")
        bar.advance()

    def skip(cell: Cell) -> None:  # its cell.json was checked by preflight
        run.results.append(read_json(cell.run_dir / "result.json"))
        run.skipped.append(cell.title)
        notify(cell, "skipped")
        bar.advance()

    def one(cell: Cell) -> None:
        bar.describe(cell.title)
        if cell.done:
            skip(cell)
            return
        notify(cell, "start")
        t0 = time.perf_counter()
        try:
            dataset, features, train_cfg = _cell_inputs(config, cell, model_classes, data_cache, feat_cache)
            result = run_cell(cell, dataset, features, train_cfg)
        except Exception as e:  # noqa: BLE001 — one diverging model must not sink the benchmark
            # a configuration error would fail every later cell the same way; a diverging loss is this
            # cell's own (its model's lr or loss weights), so the other cells still run
            if config.on_error == "raise" or _fatal(e):
                raise
            failed(cell, f"{type(e).__name__}: {e}", traceback.format_exc())
        else:
            finished(cell, result, time.perf_counter() - t0)

    def phase(batch: list[Cell]) -> None:
        if config.jobs > 1:
            to_train = [not c.done for c in batch]  # a file test each: read once
            if sum(to_train) >= 2:
                for cell, train in zip(batch, to_train):
                    if not train:
                        skip(cell)
                todo = [c for c, train in zip(batch, to_train) if train]
                _run_in_workers(config, todo, model_classes, data_cache, feat_cache, notify, finished, failed)
                return
        for cell in batch:
            one(cell)

    from recgoat.benchmark.report import chosen_points, collect_runs, write_report as _write

    rows: dict[str, dict[str, Any]] = {}  # the finished cells' report rows (collect_runs): each cell read once
    picks = None
    try:
        phase(first)
        # grid_seeds: every point has its first seeds now; the chosen ones train on the rest. Chosen once, here, for
        # the report too: the later seeds trained next choose nothing (only the first seeds are compared)
        if later:
            picks = chosen_points(collect_runs(config, rows), config)
        chosen, unchosen = split_later_grid_cells(config, later, picks)
        run.unchosen = [c.title for c in unchosen]
        bar.set_total(len(first) + len(chosen))
        phase(chosen)
        for cell in unchosen:
            notify(cell, "unchosen")
    finally:
        bar.close()
    if write_report:
        run.report = _write(out, config, failed=run.failed, runs=collect_runs(config, rows), picks=picks)
    return run


def _fatal(e: BaseException) -> bool:
    """An error that would fail every later cell alike (the user's data or configuration): it stops the run. A
    diverging loss (:class:`TrainingDiverged`) and any other exception are the cell's own."""
    return isinstance(e, RecGOATError) and not isinstance(e, TrainingDiverged)


class _CellBar:
    """A tqdm bar over cells (the trainer's epoch bar nests below it)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="benchmark", unit="cell", dynamic_ncols=True, position=0)

    def describe(self, title: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(title)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def set_total(self, total: int) -> None:
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()

    def write(self, text: str) -> None:
        """One line per finished or failed cell: above the bar, or on stderr without one (a log or a pipe
        otherwise saw nothing for the whole run, failures included)."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
