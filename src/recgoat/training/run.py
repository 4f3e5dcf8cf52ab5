"""One training run from a :class:`~recgoat.config.RunConfig`: the Python API behind ``recgoat train``.

``train(cfg)`` loads and prepares the dataset, loads side features when configured, builds the model,
trains it with early stopping on validation and returns the result dict (also in ``result.json``).
``evaluate(run_dir)`` reloads the best checkpoint and its dataset and recomputes the metrics.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from recgoat.config import RunConfig, read_run_config, run_config_from
from recgoat.datasets import Dataset, PrepareConfig, load
from recgoat.errors import ConfigError, DataError, option
from recgoat.evaluation.evaluator import Evaluator
from recgoat.io import read_json, write_json
from recgoat.models.base import Recommender, get_model_class
from recgoat.training.trainer import (DATA_CHANGE, TrainConfig, Trainer, check_run_dir, check_train_device,
                                     other_configuration)

EVAL_SPLITS = ("valid", "test")  # the held-out splits a run can be evaluated on


def load_dataset(cfg: RunConfig, check_options: bool = False) -> Dataset:
    """``cfg.data`` loaded and prepared. ``check_options``: refuse preparation options the configuration
    sets explicitly when the dataset is a folder already split (they would be ignored)."""
    d = cfg.data
    if check_options:
        from recgoat.datasets.registry import PREPARE_OPTIONS, refuse_ignored_prepare_options

        refuse_ignored_prepare_options(d.name, {k: getattr(d, k) for k in PREPARE_OPTIONS if k in d.model_fields_set})
    return load(d.name, PrepareConfig(min_rating=d.min_rating, k_core=d.k_core, split=d.split,
                                      ratios=d.ratios, seed=d.seed))


def load_side_features(dataset: Dataset, folder: str | None, cfg: RunConfig | None = None):
    if folder is None:
        return None
    from recgoat.datasets.registry import PREPARE_OPTIONS
    from recgoat.features import load_features
    from recgoat.features.loading import FingerprintMismatch

    try:
        return load_features(dataset, folder)
    except FingerprintMismatch as e:
        given = {k: getattr(cfg.data, k) for k in PREPARE_OPTIONS if k in cfg.data.model_fields_set} if cfg else {}
        if not given or e.other_dataset:  # another dataset's features: preparing this one otherwise cannot help
            raise
        # `encode` prepares the data with the default options, so re-running it (the advice) fails the same way
        opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items() if k != "ratios")
        raise DataError(e.path, f"{e.mismatch}: `recgoat encode` prepares the data "
                                f"with the default options, this run with "
                                f"{', '.join(f'{k}={v}' for k, v in given.items())}; prepare the data once with them "
                                f"(`recgoat datasets prepare {cfg.data.name} {opts} --out DIR`), then encode and "
                                f"train on DIR (`recgoat encode all DIR --reuse-from {folder}` copies its item "
                                f"text and image matrices, which do not depend on the split)") from None


def default_run_dir(cfg: RunConfig, dataset: Dataset) -> Path:
    """``<out>/<dataset>/<model>/seed<S>``; data prepared with options of its own is named by them,
    ``<out>/<dataset>+seed=7+k_core=10/…``: another split of the data is another experiment, as another trainer
    seed is (in the default data's folder, its run was refused for its checkpoint's other data fingerprint).
    The options are those the data was prepared with (:func:`prepared_options`), so a folder written by
    ``recgoat datasets prepare ml100k-mm --seed 7`` trains where ``--set data.seed=7`` does."""
    own = "".join(f"+{k}={_option_text(v)}" for k, v in prepared_options(cfg, dataset).items())
    return Path(cfg.out) / f"{dataset.name}{own}" / cfg.model.name / f"seed{cfg.trainer.seed}"


def data_options(cfg: RunConfig) -> dict[str, Any]:
    """The preparation options (``data.seed``, ``data.k_core``, …) the run sets to other than their defaults; one
    set to its default value (``--set data.seed=2026``) prepares the same data, so is not among them."""
    from recgoat.config import DataConfig
    from recgoat.datasets.registry import PREPARE_OPTIONS

    return {k: getattr(cfg.data, k) for k in PREPARE_OPTIONS
            if getattr(cfg.data, k) != DataConfig.model_fields[k].default}


def prepared_options(cfg: RunConfig, dataset: Dataset) -> dict[str, Any]:
    """The preparation options the data was prepared with, other than the defaults: those its ``info["prepare"]``
    records (a prepared folder's manifest: how ``datasets prepare`` made it; or this run's own preparation, which
    are the run's :func:`data_options`), else the run's :func:`data_options` (data split elsewhere, an MMRec or
    line-per-user folder, records none). Before, a prepared folder's options went unseen: data prepared with
    ``--seed 7`` trained in the default split's folder, and was refused there for its other data."""
    recorded = recorded_prepare_options(dataset)
    return recorded if recorded is not None else data_options(cfg)


def recorded_prepare_options(dataset: Dataset) -> dict[str, Any] | None:
    """The options ``dataset.info["prepare"]`` records other than their defaults (the run configuration's
    ``data.*``, and ``dedup``, which only the Python API turns off), in :data:`PREPARE_OPTIONS`' order and
    typed as the run configuration types them (a min_rating recorded as ``4`` is ``4.0``, as ``--set
    data.min_rating=4`` gives it); None when nothing is recorded."""
    from recgoat.config import DataConfig
    from recgoat.datasets.registry import PREPARE_OPTIONS
    from recgoat.strict import is_int, is_real

    info = getattr(dataset, "info", None)
    prep = info.get("prepare") if isinstance(info, dict) else None
    if not isinstance(prep, dict):
        return None

    def typed(key: str, v: Any) -> Any:
        if key == "min_rating" and is_real(v):
            return float(v)
        if key == "ratios" and isinstance(v, (list, tuple)) and all(is_real(x) for x in v):
            return tuple(float(x) for x in v)
        if key in ("k_core", "seed") and is_int(v):
            return int(v)
        return v

    defaults = {k: DataConfig.model_fields[k].default for k in PREPARE_OPTIONS} | {"dedup": PrepareConfig.dedup}
    return {k: typed(k, prep[k]) for k in defaults if k in prep and typed(k, prep[k]) != defaults[k]}


def _option_text(value: Any) -> str:
    """A preparation option's value in a folder name: as ``--set`` takes it (a tuple as ``0.7,0.15,0.15``)."""
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def train(cfg: RunConfig, run_dir: str | Path | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train the configured model; returns the result (validation and test at the best epoch).

    A run the trainer would refuse (a run folder that is a file, empty held-out splits, a checkpoint of
    another configuration) is refused before ``run_config.json`` is written, so the folder stays as it was.
    """
    if run_dir is not None:
        check_run_dir(Path(run_dir))  # before the dataset loads
    check_train_device(cfg.trainer)  # likewise: `--device cuda` on a machine without one
    dataset = dataset if dataset is not None else load_dataset(cfg, check_options=True)
    refuse_unsplit(cfg.data.name, dataset)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg, dataset)
    auto_notes: list[str] = []
    if cfg.features == AUTO:
        # an encode can take hours: a run its folder's checkpoint refuses is refused before it, not after
        _refuse_other_run(run_dir, cfg, dataset)
        cfg, features, auto_notes = encode_auto_features(cfg, dataset)
    else:
        features = load_side_features(dataset, cfg.features, cfg)
    # initialisation depends on the run's seed only; torch takes no seed >= 2**64 (trainer.seed has no upper
    # bound: a ValueError "Overflow when unpacking long long"), and below it the reduction changes nothing
    torch.manual_seed(cfg.trainer.seed % 2**64)
    cls = get_model_class(cfg.model.name)
    if features is None and cls.needs_features:
        _warn_of_mmrec_features(dataset, cfg)
    with warnings.catch_warnings():  # said once, in the result's notes below (naming the folder)
        warnings.filterwarnings("ignore", message=".* reads no side features", category=UserWarning)
        model = cls.build(dataset, cfg.model.params, features)
    # the trainer writes run_config.json only once its checks pass
    result = Trainer(cfg.trainer, run_dir=run_dir, run_config=recorded_run_config(cfg)).fit(model, dataset)
    # a model that neither declares features nor read any matrix of them (e.g. LightGCN given --features)
    notes = auto_notes if features is None or cls.needs_features or model.feature_digests else [
        f"{cfg.model.name} reads no side features: the feature folder {cfg.features} was not used"]
    return {**result, "run_dir": str(run_dir), "notes": notes}  # where `recgoat evaluate` / `export` find it


def refuse_unsplit(given: str, dataset: Dataset) -> None:
    """A :class:`DataError` naming the dataset as given (``--dataset``: the folder) when it has no train/valid/test
    split. The error came from deep in the trainer, naming the manifest's dataset name ("dataset 'ml-latest-small'
    has no train/valid/test split; prepare it first") for a folder the user had prepared, with ``--split none``;
    a prepared folder keeps its split (``--set data.split=random`` is refused there), so it is prepared again."""
    if dataset.has_split:
        return
    from recgoat.datasets.registry import SHARED

    info = dataset.info if isinstance(dataset.info, dict) else {}
    prep = info.get("prepare") if isinstance(info.get("prepare"), dict) else {}
    source = info.get("source")
    if dataset.name in SHARED or source == f"embedded:{dataset.name}":
        source = dataset.name  # the name it is loaded by
    if not isinstance(source, str) or not source:
        source = "SOURCE"
    redo = (f"prepare the raw data again with one (`recgoat datasets prepare {source} --split random --out DIR`) "
            f"and train on DIR, or train on {source} itself (split as data.split says)")
    if prep.get("split") == "none":
        raise DataError(given, f"this dataset folder was prepared without a split (--split none), and training "
                               f"needs train, valid and test; a prepared folder keeps its split (data.split does "
                               f"not apply to it): {redo}")
    raise DataError(given, f"dataset {dataset.name!r} has no train/valid/test split, and training needs one: {redo}")


#: ``features: auto`` (``--features auto``); a folder named "auto" is given as ``./auto``
AUTO = "auto"


def auto_feature_folder(cfg: RunConfig, dataset: Dataset) -> Path:
    """Where ``--features auto`` encodes: ``<out>/features/<dataset>``, the benchmark's folder for it, so that
    every run (and the benchmark) with the same ``out`` shares one encode; else :func:`own_feature_folder`.

    A folder of its own for a run that prepares the data with options of its own (another split seed, k-core…):
    user profiles are made from one split's training items, and a shared folder re-encoded for another split no
    longer loaded for the first run's ``recgoat evaluate``. And for a run whose shared folder already holds
    features of other data (another dataset of the same name, the benchmark's other split, data changed since,
    :func:`_made_for_other_data`): encoding there removed that data's features (an MMRec folder's imported
    matrices), and its runs' ``export`` then failed, or packaged features its model was not trained on."""
    plain = _shared_feature_folder(cfg, dataset)
    own = prepared_options(cfg, dataset) or _made_for_other_data(plain, dataset)
    return own_feature_folder(cfg, dataset) if own else plain


def _shared_feature_folder(cfg: RunConfig, dataset: Dataset) -> Path:
    """``<out>/features/<dataset>``: the folder every run of the dataset (and the benchmark) shares by default."""
    return Path(cfg.out) / "features" / dataset.name


def own_feature_folder(cfg: RunConfig, dataset: Dataset) -> Path:
    """``<out>/features/<dataset>-<key>``, the key a digest of the prepared data's fingerprint and the folder it
    was read from: two MMRec folders of one name and one ``.inter`` file share a fingerprint (it hashes no
    feature file), and their imported features differ."""
    info = dataset.info if isinstance(dataset.info, dict) else {}
    key = hashlib.sha256(f"{dataset.fingerprint()}\0{info.get('source', '')}".encode()).hexdigest()[:12]
    return Path(cfg.out) / "features" / f"{dataset.name}-{key}"


def _made_for_other_data(folder: Path, dataset: Dataset) -> bool:
    """Whether a manifest (or ``item_ids.json``) in the feature ``folder`` records a dataset fingerprint other than
    ``dataset``'s, or features imported from another MMRec folder's file than ``dataset``'s own (the fingerprint
    is that of the interactions only: two MMRec folders of one name and one ``.inter`` file, with other feature
    files, share it, and the second run's import replaced the first's features, which `export` then packaged for
    the first run's model). Unreadable files are left to the store to name."""
    from recgoat.datasets.mmrec import FEATURE_FILES, mmrec_feature_kinds

    fingerprint = dataset.fingerprint()
    info = dataset.info if isinstance(dataset.info, dict) else {}
    # only for an MMRec folder's own files: features imported by hand (`encode import-mmrec`) into the folder of
    # a dataset of another layout are kept there by the encode, as before
    own_files = {str(Path(str(info["features"][kind])).resolve()) for kind in mmrec_feature_kinds(dataset)} \
        if info.get("layout") == "mmrec" else None
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            record = read_json(path)
            made_for, source = record.get("dataset_fingerprint"), record.get("imported_from")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(made_for, str) and made_for != fingerprint:
            return True
        if (own_files is not None and isinstance(source, str) and Path(source).name in FEATURE_FILES.values()
                and str(Path(source).resolve()) not in own_files):
            return True
    return False


def encode_auto_features(cfg: RunConfig, dataset: Dataset) -> tuple[RunConfig, Any, list[str]]:
    """``features: auto``: the features the model reads (:meth:`~recgoat.models.base.Recommender.feature_kinds`:
    user profiles for RecGOAT's profile branch only), encoded (an MMRec folder's own imported first) into
    :func:`auto_feature_folder` and loaded; the configuration returned names that folder (absolute), as
    ``run_config.json`` records it for ``recgoat evaluate`` / ``export`` / ``serve``. A model that reads no side
    features gets none, and nothing is encoded."""
    from recgoat.features.auto import encode_auto, kinds_read
    from recgoat.training.trainer import show_progress

    kinds = kinds_read(cfg.model.name, cfg.model.params)
    if not kinds:
        return (cfg.model_copy(update={"features": None}), None,
                [f"{cfg.model.name} reads no side features: --features auto encoded nothing"])
    folder = auto_feature_folder(cfg, dataset)
    plain = _shared_feature_folder(cfg, dataset)
    why = ""
    if folder != plain and not prepared_options(cfg, dataset):  # auto_feature_folder's other reason
        why = f"; {plain} holds features of other data (another dataset named {dataset.name!r}, or another split), " \
              f"left as they are"
    # runs started together (seeds, models) wait for the one encoding, then reuse its work
    features = encode_auto(dataset, folder, progress=show_progress(cfg.trainer), which=kinds,
                           on_wait=lambda line: print(line, file=sys.stderr, flush=True), device=cfg.trainer.device)
    return (cfg.model_copy(update={"features": str(folder.resolve())}), features,
            [f"features: auto, encoded into {folder} (reused by later runs){why}"])


def _refuse_other_run(run_dir: Path, cfg: RunConfig, dataset: Dataset) -> None:
    """The trainer's refusal of a checkpoint made by another model or on other data (``Trainer.resume_state``),
    said before ``--features auto`` encodes: it came only once the encode had finished (minutes to hours), e.g.
    for another dataset or model given the same ``--run-dir``. The other differences need the built model and
    are left to the trainer."""
    if not cfg.trainer.resume or not get_model_class(cfg.model.name).needs_features:
        return
    try:
        sig = read_json(run_dir / "checkpoint" / "state.json").get("signature")
    except (OSError, ValueError, AttributeError):
        return  # none, or unreadable: the trainer says so
    if not isinstance(sig, dict):
        return
    changes = [f"{key}: {json.dumps(old)} → {json.dumps(new)}"
               for key, old, new in (("model.name", sig.get("model"), cfg.model.name),
                                     (DATA_CHANGE, sig.get("dataset_fingerprint"), dataset.fingerprint()))
               if old is not None and old != new]
    if changes:
        raise other_configuration(run_dir, changes)


def _warn_of_mmrec_features(dataset: Dataset, cfg: RunConfig) -> None:
    """An MMRec folder's own feature files go unread without ``--features``: RecGOAT trained on IDs alone (its
    summary said only "features absent") and the other multimodal models were refused, neither naming them."""
    from recgoat.datasets.mmrec import FEATURE_FILES, mmrec_feature_kinds

    kinds = mmrec_feature_kinds(dataset)
    if kinds:
        src = dataset.info["source"]
        warnings.warn(f"{src} holds MMRec's {' and '.join(FEATURE_FILES[k] for k in kinds)}, but no feature folder "
                      f"was given: {cfg.model.name} does not read them; give --features auto (imports them, and "
                      f"encodes what they lack), or import them with `recgoat encode import-mmrec {src} "
                      f"{cfg.data.name} --out FEATURES` and give --features FEATURES",
                      UserWarning, stacklevel=3)


def recorded_run_config(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as ``run_config.json`` records it: a dataset or feature folder given by a relative path is
    made absolute, so `recgoat evaluate` / `export` find it from any working folder (they read it back)."""
    from recgoat.datasets.registry import stable_reference

    data = cfg.model_dump(mode="json")
    data["data"]["name"] = stable_reference(cfg.data.name)
    if cfg.features is not None:
        data["features"] = stable_reference(cfg.features, names=())
    return data


def trained_fingerprint(run_dir: Path) -> tuple[Path | None, str | None]:
    """The fingerprint of the data a run was trained on and the file recording it: ``result.json``, else
    the checkpoint's signature (a run stopped before its end); ``(None, None)`` when neither records one
    (runs of older versions)."""
    for path in (run_dir / "result.json", run_dir / "checkpoint" / "state.json"):
        if not path.is_file():
            continue
        try:
            record = read_json(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(path, f"corrupt JSON: {e}") from None
        if path.name == "state.json" and isinstance(record, dict):
            record = record.get("signature")
        fp = record.get("dataset_fingerprint") if isinstance(record, dict) else None
        if isinstance(fp, str):
            return path, fp
    return None, None


def unfinished_note(run_dir: Path) -> str | None:
    """A line saying that the run in ``run_dir`` has not finished (a checkpoint, no result.json), so its best/ is
    the best model so far; None for a finished run or a folder that is no run. Why: evaluate and export used a run
    stopped at epoch 73 of 300, or one still training in another process, without a word."""
    if (run_dir / "result.json").exists() or not (run_dir / "checkpoint" / "state.json").is_file():
        return None
    try:
        state = read_json(run_dir / "checkpoint" / "state.json")
        last, best = int(state["epoch"]), int(state["best"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{run_dir}: the run has not finished (no result.json): its best model so far is used"
    return (f"{run_dir}: the run has not finished (no result.json; stopped, or still training, after epoch {last}): "
            f"its best model so far (epoch {best}) is used; the same training command resumes it")


def logged_metric(run_dir: Path, metric: str) -> list[float]:
    """The validation ``metric`` of each evaluation ``run_dir/log.jsonl`` records (NaN reads back as NaN;
    nothing when the log is missing or unreadable)."""
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    values = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        valid = row.get("valid") if isinstance(row, dict) else None
        if isinstance(valid, dict) and isinstance(valid.get(metric), float):
            values.append(valid[metric])
    return values


RUN_RECORDS = ("run_config.json", "cell.json")  # what `recgoat train` and a benchmark cell record, looked for in order


@dataclass(frozen=True)
class RunRecord:
    """What a run folder records about how it was trained: a `recgoat train` run's ``run_config.json``, else a
    benchmark cell's ``cell.json`` (:func:`read_run_record`). `recgoat evaluate` and `recgoat export` both read a
    run through it, so they agree on which record holds the run's data and where that data is now.

    The file is read once; what it means is worked out when asked for, so each command fails at the step it always
    did: a record that is not valid raises (a ConfigError or DataError naming it) only once its trainer or data are
    asked for, and a cell's data is looked for only when loaded (evaluate first says a run has no best model), while
    ``content`` serves lenient look-ups (export's feature folder) whatever the record holds."""

    path: Path  # run_config.json or cell.json
    content: Any  # its JSON as read; None when not readable (read_error says why)
    source: str | None = None  # the data to load instead of the recorded (--dataset: a name or folder)
    read_error: Exception | None = field(default=None, repr=False)
    # how the caller gives `source`, named in messages: its Python argument (export_run_dir's dataset=, evaluate's
    # dataset_source=), or --dataset under cli_spelling: a Python caller has no flag to pass
    argument: str = "dataset="

    def _pass_dataset(self) -> str:
        return f"pass {option('--dataset', self.argument)}"

    @property
    def is_cell(self) -> bool:
        return self.path.name == "cell.json"

    @cached_property
    def config(self) -> RunConfig:
        """run_config.json as a :class:`RunConfig` (its folders absolute: :func:`recorded_run_config`)."""
        if self.read_error is not None:
            return read_run_config(self.path)  # its ConfigError says why the file cannot be read
        return run_config_from(self.content, self.path)

    @cached_property
    def _cell(self) -> tuple[Any, int]:
        """cell.json's DatasetSpec and split seed (:func:`read_cell`)."""
        from recgoat.benchmark.config import DatasetSpec

        meta = self.content
        try:
            if self.read_error is not None:
                raise self.read_error
            data = meta["data"]
            label = meta.get("dataset")  # the dataset's label (or its default one) the cell was trained under
            spec = DatasetSpec(name=data["name"], label=label if isinstance(label, str) and label else None,
                               max_users=data.get("max_users"), prepare=data.get("prepare") or {})
            split_seed = int(data.get("split_seed") or 0)  # None: a folder already split, the seed does not apply
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError) as e:
            raise DataError(self.path, f"not a readable benchmark cell record ({type(e).__name__}: {e})") from None
        return spec, split_seed

    @cached_property
    def trainer(self) -> TrainConfig:
        """The trainer settings the run was trained with."""
        if not self.is_cell:
            return self.config.trainer
        _ = self._cell  # a record that is not a cell's says so first, then a train section that is not one
        try:
            return TrainConfig(**self.content["train"])
        except (KeyError, TypeError, ValidationError) as e:
            raise DataError(self.path, f"not a readable benchmark cell record ({type(e).__name__}: {e})") from None

    @cached_property
    def _cell_data(self) -> Any:
        """The :class:`~recgoat.benchmark.config.DatasetSpec` of :func:`read_cell` with its dataset where it is now:
        ``source`` when given, else where ``cell.json`` records it (:func:`~recgoat.benchmark.paths.locate_recorded`:
        its absolute path, that path moved with the benchmark folder, then as typed); the label stays the cell's.
        A DataError naming the record, the paths tried and how to give the data (``--dataset``) when none exists."""
        from recgoat.benchmark.config import dataset_label
        from recgoat.benchmark.paths import locate_recorded

        spec, source = self._cell[0], self.source
        if source is None:
            found, tried = locate_recorded(spec.name, self.content, "dataset", self.path.parent)
            if found is None:
                cwd = self.content["paths"].get("cwd")
                ran = f" (the benchmark ran in {cwd})" if isinstance(cwd, str) else ""
                raise DataError(self.path, f"records dataset {spec.name}{ran}, which is not found at "
                                           f"{' nor '.join(tried)}: moved or deleted; {self._pass_dataset()} with "
                                           f"the data the cell was trained on (prepared, split and labelled as "
                                           f"cell.json records)")
            source = found
        if source == spec.name:
            return spec
        return spec.model_copy(update={"name": source, "label": dataset_label(spec)})

    @property
    def dataset_name(self) -> str:
        """The dataset name or folder the run's data loads from: ``source`` when given, else the recorded one (a
        cell's where it is now: a DataError when it is nowhere)."""
        if self.is_cell:
            return self._cell_data.name
        return self.source if self.source is not None else self.config.data.name

    @property
    def recorded_fingerprint(self) -> str | None:
        """cell.json's fingerprint of the data (run_config.json records none: :func:`trained_fingerprint`)."""
        fp = self.content.get("dataset_fingerprint") if self.is_cell and isinstance(self.content, dict) else None
        return fp if isinstance(fp, str) else None

    def _check_found(self, name: str) -> None:
        """A DataError naming this record when the data it records is not found from here (a moved folder said
        only "no such dataset name or folder", not that the run's record names it, nor what to do)."""
        from recgoat.datasets.registry import SHARED, find_source

        try:
            find_source(name)
        except DataError as e:
            # a shared name says where it was looked for; a relative folder is relative to where the run started
            why = e.problem if name in SHARED else "no such folder" if Path(name).is_absolute() else \
                "no such folder here; a relative path is relative to the folder the run was started in"
            raise DataError(self.path, f"records dataset {name}, which is not found from here ({why}): "
                                       f"{self._pass_dataset()} with the data the run was trained on") from None

    def load_dataset(self) -> Dataset:
        """The run's data, prepared as it was for training: a cell's under its label, split as the benchmark split
        it; from ``source``, named as the run's data was (the name is part of the fingerprint: a folder moved under
        another name holds the same data, as a cell keeps its label)."""
        if self.source is None:
            self._check_found(self.dataset_name)  # a cell's: where it is now, or a DataError naming the paths tried
        if self.is_cell:
            from recgoat.benchmark.data import load_dataset as load_cell_dataset

            return load_cell_dataset(self._cell_data, self._cell[1])
        cfg = self.config
        if self.source is None:
            return load_dataset(cfg)
        ds = load_dataset(cfg.model_copy(update={"data": cfg.data.model_copy(update={"name": self.source})}))
        try:
            name = read_json(self.path.parent / "result.json").get("dataset")
        except (OSError, ValueError, AttributeError):  # a run stopped before its end: the name as loaded
            name = None
        if isinstance(name, str) and name:
            ds.name = name
        return ds


def read_run_record(run_dir: str | Path, source: str | None = None, argument: str = "dataset=") -> RunRecord | None:
    """The record of the run in ``run_dir`` (:class:`RunRecord`): its run_config.json, else its cell.json; None when
    it holds neither (a saved model folder, or no run). ``source``: the data to load instead of the recorded;
    ``argument``: the caller's argument that gives it, as messages name it."""
    for name in RUN_RECORDS:
        if (Path(run_dir) / name).is_file():
            return _read_record(Path(run_dir) / name, source, argument)
    return None


def _read_record(path: Path, source: str | None = None, argument: str = "dataset=") -> RunRecord:
    try:
        return RunRecord(path, read_json(path), source, argument=argument)
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return RunRecord(path, None, source, e, argument)


def read_cell(path: Path) -> tuple[dict, Any, int]:
    """A benchmark cell's ``cell.json``: the record, the :class:`~recgoat.benchmark.config.DatasetSpec` its data
    was loaded with (name, label, ``max_users``, preparation options: the label is part of the fingerprint)
    and its split seed; one DataError for a record that is not one."""
    record = _read_record(path)
    return (record.content, *record._cell)


def evaluate(run_dir: str | Path, split: str = "test", dataset: Dataset | None = None,
             test_mask: str = "train+valid", dataset_source: str | None = None) -> dict[str, float]:
    """Metrics of a finished run's (or benchmark cell's) best checkpoint on ``split``, recomputed from the
    saved model, on the data its record names (``dataset_source``: another name or folder, prepared as recorded;
    the fingerprint is checked either way).

    ``test_mask="train"`` scores the test split with training items masked only (MMRec's convention)
    instead of training and validation items; written to ``evaluate_test-mask-train.json``. Errors name these
    arguments (``dataset_source=``) where `recgoat evaluate` names its options (``--dataset``)."""
    from recgoat.evaluation.evaluator import TEST_MASKS

    run_dir = Path(run_dir)
    if split not in EVAL_SPLITS:
        raise ConfigError(f"unknown split {split!r} ({option('--split', 'split=')}); expected "
                          f"{' or '.join(EVAL_SPLITS)}")
    if test_mask not in TEST_MASKS:
        raise ConfigError(f"unknown test mask {test_mask!r} ({option('--test-mask', 'test_mask=')}); expected "
                          f"{' or '.join(TEST_MASKS)}")
    if test_mask != "train+valid" and split != "test":
        raise ConfigError(f"{option('--test-mask', 'test_mask=')} applies to the test split; validation always "
                          f"masks training items only")
    record = read_run_record(run_dir, dataset_source, "dataset_source=")
    if record is None:
        raise DataError(run_dir, "not a run folder written by `recgoat train` or a benchmark cell (no "
                                 "run_config.json or cell.json)")
    trainer = record.trainer
    if not (run_dir / "best").exists():
        scores = logged_metric(run_dir, trainer.metric)
        if scores and all(math.isnan(v) for v in scores):  # validated but never a best (Trainer._no_best)
            raise DataError(run_dir, f"no best model: the validation metric {trainer.metric} was NaN at every "
                                     f"evaluation in log.jsonl ({len(scores)}: no validation user scored, or a "
                                     f"diverged model: lower trainer.lr); fix the cause and train afresh")
        # a run stopped before its first validation has a checkpoint but no best model yet
        raise DataError(run_dir, "no best model yet: the run stopped before its first validation; resume it "
                                 "with the same `recgoat train` command (it continues from its checkpoint)")
    dataset = dataset if dataset is not None else record.load_dataset()
    note = unfinished_note(run_dir)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    model = Recommender.load(run_dir / "best")
    where, fp = trained_fingerprint(run_dir)
    if fp is not None and fp != dataset.fingerprint():
        # data given by --dataset is loaded under the run's name (part of the fingerprint): name what was given
        given = f"{dataset_source} ({option('--dataset', 'dataset_source=')}, loaded as {dataset.name!r})" \
            if dataset_source is not None else repr(dataset.name)
        raise DataError(where, f"the run was trained on dataset fingerprint {fp}, but {given} has "
                               f"{dataset.fingerprint()}: not the same data")
    if model.n_users != dataset.n_users or model.n_items != dataset.n_items:
        raise DataError(run_dir, f"model has {model.n_users} users × {model.n_items} items but dataset "
                                 f"{dataset.name!r} has {dataset.n_users} × {dataset.n_items}")
    res = Evaluator.for_split(dataset, split, trainer.ks, trainer.eval_chunk_size, trainer.eval_selection,
                              test_mask=test_mask).evaluate(model)
    suffix = "" if test_mask == "train+valid" else f"-mask-{test_mask}"
    write_json(run_dir / f"evaluate_{split}{suffix}.json", res.means)
    return res.means
