"""The shared trainer: Adam, BPR mini-batches, early stopping on validation, checkpoints, resume.

Model selection uses the validation split only; test metrics are computed once, for the checkpoint
that was best on validation, and never feed back into any choice (METHOD.md §6, §9).

Reproducibility: every epoch draws from generators seeded by ``(seed, epoch)``, so a run resumed from
its last checkpoint continues exactly as the uninterrupted run would have. The checkpoint records what its
trajectory depends on (:func:`run_signature`: model, data fingerprint, hashes of the features the model
reads, lr, batch size, seed...); resuming it
under other values is refused rather than mixing two runs, while patience may change and epochs may
grow (not shrink below the epochs already run, which a resumed run cannot undo).

Run folder layout::

    log.jsonl              one line per epoch (loss terms, validation metrics, seconds)
    checkpoint/            last epoch: state.json naming its model-EPOCH.safetensors, optimizer-EPOCH.pt
                           (with their SHA-256, and best/'s, all checked on resume) and the wall time so far
    best/                  best-validation model (Recommender.save format; staged in best.new/ until
                           the checkpoint recording it is written)
    result.json            validation and test metrics at the best epoch, timings, memory
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from safetensors.torch import load_file, save_file

from recgoat.errors import ConfigError, DataError, TrainingDiverged
from recgoat.evaluation.evaluator import DEFAULT_KS, Evaluator, Selection
from recgoat.features.device import check_device, parse_device
from recgoat.io import (atomic_path, folder_lock, holds_lock, nearest_existing, sha256_file, sweep_stale_temps,
                        write_json)
from recgoat.strict import StrictNumbers
from recgoat.training.sampling import NegativeSampler, users_without_negatives

# TrainConfig fields that, with the model and the data, decide a run's trajectory: a checkpoint resumes only
# under the same values. The others (epochs, patience, eval_every...) may change, e.g. to extend a run.
SIGNATURE_TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "seed", "metric", "eval_selection", "lr_decay",
                        "lr_decay_every")
# signature keys added after runs were recorded without them, with the behaviour those runs had (a constant lr):
# a checkpoint or benchmark cell that lacks one ran with this value, and is compared as such
LEGACY_TRAIN_SETTINGS = {"lr_decay": 1.0, "lr_decay_every": 50.0}
# Adam turns weight_decay and its first step lr / (1 - beta1) = 10·lr into float32 scalars (max 3.4e38): a
# larger value was a RuntimeError ("cannot be converted to type float without overflow") mid-epoch
LR_MAX, WEIGHT_DECAY_MAX = 1e37, 1e38
# how every refusal to resume a damaged checkpoint ends
# the command line's words and the Python API's: `model.fit(..., run_dir=...)` users have no --set
_AFRESH = "to start afresh use --set trainer.resume=false or another --run-dir (Python: TrainConfig(resume=False) or " \
    "another run_dir)"



def plateau_message(name: str, history: list[dict]) -> str | None:
    """Why a run learned nothing, when its mean BPR term stayed at ln 2 in every epoch (all scores alike: the
    plateau a small learning rate leaves RecGOAT on, docs/benchmarks.md), else None. Such a run ends with a
    "best" model a tenth as good as LightGCN's, and nothing said so (the README's own RecGOAT command)."""
    bpr = [r["bpr"] for r in history if isinstance(r.get("bpr"), (int, float)) and math.isfinite(r["bpr"])]
    if len(bpr) < 2 or min(bpr) < math.log(2) - 0.005:
        return None
    return (f"{name}: the BPR loss stayed at ln 2 = 0.693 in all {len(bpr)} epochs (positive and negative items "
            f"scored alike), so the model learned next to nothing from the interactions; raise the learning rate "
            f"(trainer.lr; a benchmark's train.lr; RecGOAT at d = 64 needs about 5e-3, docs/benchmarks.md) or let it "
            f"train longer (min_epochs)")


def _brief(e: BaseException, limit: int = 160) -> str:
    """``Type: first line`` of an exception, cut: torch's unpickling errors run to a page of advice (re-run with
    ``weights_only=False``, file an issue) that is wrong for a corrupt file."""
    full = str(e)
    if "WeightsUnpickler error:" in full:  # the page's one line of substance ("Unsupported operand 103")
        full = full.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in full.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _foreign_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> str:
    """Why ``weights`` are not ``model``'s (other parameter names or shapes), in one line; '' when they fit.
    ``load_state_dict`` says it in a page listing every key."""
    own = model.state_dict()
    extra, missing = sorted(set(weights) - set(own)), sorted(set(own) - set(weights))
    shapes = [k for k in own.keys() & weights.keys() if tuple(own[k].shape) != tuple(weights[k].shape)]
    parts = []
    for what, keys in (("unexpected", extra), ("missing", missing)):
        if keys:
            parts.append(f"{len(keys)} {what} tensor(s), e.g. {keys[0]!r}")
    if shapes:
        k = sorted(shapes)[0]
        parts.append(f"{len(shapes)} of another shape, e.g. {k!r} {tuple(weights[k].shape)} against "
                     f"{tuple(own[k].shape)}")
    return "; ".join(parts)

class TrainConfig(StrictNumbers):
    """Training hyper-parameters shared by every model."""

    # a field's docstring is its description: `recgoat train --print-config` writes it above the key
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    # bounds refuse values that would end in an error deep inside torch or the loop (lr=-1, eval_every=0)
    epochs: int = Field(200, ge=1)
    """The most epochs trained (early stopping may end sooner)."""
    batch_size: int = Field(2048, ge=1)
    """BPR triples (user, positive, sampled negative) per step."""
    lr: float = Field(1e-3, ge=0, allow_inf_nan=False)
    """Adam's learning rate (0: the parameters stay at their initialisation)."""
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Adam's weight decay (the models' own L2 terms are their reg_weight)."""
    lr_decay: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    """MMRec's learning_rate_scheduler [lr_decay, lr_decay_every]: epoch e trains at lr · lr_decay^(e /
    lr_decay_every), as torch's LambdaLR stepped once an epoch (1.0, constant, is MMRec's default; MGCN's
    authors use 0.96 per 50 epochs)."""
    lr_decay_every: float = Field(50.0, gt=0, allow_inf_nan=False)
    """Epochs per factor lr_decay of the learning rate."""
    patience: int = Field(10, ge=0)
    """Evaluations without improvement of the metric before stopping; 0 stops at the first one (never before it)."""
    min_epochs: int = Field(0, ge=0)
    """No early stop before this many epochs: a model whose loss sits on a plateau at first (RecGOAT with the
    alignment terms on and a small lr: BPR ≈ ln 2 for tens of epochs) is not stopped at epoch 0."""
    eval_every: int = Field(1, ge=1)
    """Epochs between evaluations on the validation split."""
    metric: str = "recall@20"
    """The validation metric that selects the best epoch and stops early (recall, ndcg, precision, hit or map,
    at one of ks)."""
    ks: tuple[int, ...] = DEFAULT_KS
    """The cut-offs K every metric is computed at."""
    seed: int = Field(2026, ge=0)
    """Fixes the initial weights and the sampled negatives (numpy's generators take no negative seed)."""
    num_threads: int | None = Field(None, ge=0)
    """Torch's threads for this run (null or 0: torch's default, every core)."""
    device: str = "cpu"
    """Where the model trains: cpu, cuda, cuda:1, mps... (sampling and the ranking evaluation stay on the CPU)."""
    eval_chunk_size: int = Field(256, ge=1)
    """Users per scoring block of the evaluation: small blocks stay in cache."""
    eval_selection: Selection = "count"
    """How the evaluator ranks: "count" (ties count against the model, fastest), or a top-K list by "faiss"
    heaps or "torch" topk (ties in arbitrary order, as MMRec's torch.topk)."""
    progress: bool = True
    """A progress bar: left unset, only on a terminal or in Jupyter; set true, always."""
    resume: bool = True
    """Resume the run folder's checkpoint (false: start afresh there)."""

    @field_validator("lr", "weight_decay")
    @classmethod
    def _fits_float32(cls, v: float, info: ValidationInfo) -> float:
        top = LR_MAX if info.field_name == "lr" else WEIGHT_DECAY_MAX
        if v > top:
            raise ValueError(f"must be at most {top:g} (Adam computes with it in float32)")
        return v

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str) -> str:
        # whether this machine has it is checked when training starts: a configuration may be written elsewhere
        if parse_device(v) is None:
            raise ValueError(f"device must be a torch device that computes (cpu, cuda, cuda:1, mps), got {v!r}")
        return v

    @classmethod
    def with_legacy_settings(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """``saved`` (a recorded train section: a checkpoint's, a benchmark cell's) with the settings it lacks at
        :data:`LEGACY_TRAIN_SETTINGS`, the behaviour it was recorded with (as ``ModelConfig.with_legacy_settings``
        does for a model's)."""
        return {**LEGACY_TRAIN_SETTINGS, **saved}

    @property
    def torch_device(self) -> torch.device:
        """``device`` as torch's (validated: it parses)."""
        return torch.device(self.device)

    @field_validator("metric")
    @classmethod
    def _metric_known(cls, v: str) -> str:
        name, _, k = v.partition("@")
        if name not in ("recall", "ndcg", "precision", "hit", "map") or not (k.isascii() and k.isdigit()):
            raise ValueError(f"metric must look like recall@20, got {v!r}")
        # the evaluator names its metrics recall@20: "recall@020" would be a KeyError after the first epoch
        return f"{name}@{int(k)}"

    @field_validator("ks")
    @classmethod
    def _ks_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or min(v) < 1:
            raise ValueError("ks must be a non-empty list of cut-offs >= 1")
        return v

    @model_validator(mode="after")
    def _metric_evaluated(self) -> "TrainConfig":
        """Model selection reads the metric from the evaluated cut-offs, so its K must be one of them."""
        k = int(self.metric.partition("@")[2])
        if k not in self.ks:
            raise ValueError(f"metric {self.metric} is not evaluated: K={k} is not one of ks {list(self.ks)}")
        return self


@contextlib.contextmanager
def deterministic_kernels(warn_only: bool = False):
    """torch's deterministic kernels for the duration of a training run, then the caller's settings back.
    ``warn_only`` (a GPU run): an operation without a deterministic kernel there warns instead of stopping the run
    (GPU runs repeat to float rounding only in any case, :meth:`Trainer.fit`).

    With more than one thread, the backward of a row gather ``x[idx]`` (``index_put_`` with accumulation)
    adds rows from several threads in arbitrary order, so two runs with the same seed drifted apart (LGMRec
    in ``make demo``: test Recall@20 0.250–0.257 over three runs). The deterministic kernel accumulates
    serially; nothing measurable is lost at our batch sizes. Uninitialised memory is not NaN-filled (the
    default in deterministic mode): it costs a pass over every fresh buffer and no result depends on it.
    """
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        det.fill_uninitialized_memory = before[2]


def check_train_device(config: TrainConfig) -> None:
    """A ConfigError when this machine lacks ``config.device`` (``cuda`` without a GPU): said before a dataset
    loads or features encode, not after."""
    check_device(config.device, name="trainer.device", purpose="train on", fix="--set trainer.device=cpu")


def run_signature(model, dataset, config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint's trajectory depends on (kept in its ``state.json``, compared on resume)."""
    sig = {"model": model.name, "model_config": model.config.model_dump(mode="json"), "dims": model.dims,
           "dataset_fingerprint": dataset.fingerprint(), "features": dict(model.feature_digests),
           "train": {k: getattr(config, k) for k in SIGNATURE_TRAIN_KEYS}}
    return json.loads(json.dumps(sig))  # as it reads back from state.json (tuples become lists)


def _with_legacy_settings(sig: dict[str, Any]) -> dict[str, Any]:
    """``sig`` with the trainer settings (:data:`LEGACY_TRAIN_SETTINGS`) and model options its ``train`` and
    ``model_config`` lack that meant another behaviour when it was saved (``Config.with_legacy_settings``, as
    :meth:`Recommender.load` reads them); the model's as they are for an unknown model."""
    from recgoat.models.base import find_model_class

    if isinstance(sig.get("train"), dict):
        sig = {**sig, "train": TrainConfig.with_legacy_settings(sig["train"])}
    saved, name = sig.get("model_config"), sig.get("model")
    cls = find_model_class(name) if isinstance(name, str) else None
    if cls is None or not isinstance(saved, dict):
        return sig
    return {**sig, "model_config": cls.Config.with_legacy_settings(saved)}


#: how :func:`signature_changes` (and the refusal before ``features: auto`` encodes) name a change of the data
DATA_CHANGE = "data (fingerprint)"


def signature_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every value that differs, named as in the run configuration."""
    def flat(sig: dict[str, Any]) -> dict[str, Any]:
        out = {"model.name": sig.get("model"),
               **{f"model.params.{k}": v for k, v in (sig.get("model_config") or {}).items()},
               **{f"features ({k})": v for k, v in (sig.get("dims") or {}).items()},
               DATA_CHANGE: sig.get("dataset_fingerprint"),
               **{f"trainer.{k}": v for k, v in (sig.get("train") or {}).items()}}
        if "features" in sig:
            out["feature values"] = sig["features"]
        return out

    a, b = flat(_with_legacy_settings(old)), flat(new)
    # a checkpoint written by an older version records fewer keys (no feature hashes, no eval_selection,
    # no model option added since): its run had no such setting, so only what it recorded is compared (a model
    # option whose absence meant another behaviour, e.g. RecGOAT's gat_activation, as its legacy value)
    return [f"{k}: {json.dumps(a.get(k))} → {json.dumps(b.get(k))}" for k in a if a.get(k) != b.get(k)]


def check_run_dir(path: Path) -> None:
    """A :class:`ConfigError` naming ``path`` when it or a parent is a file (so no run folder can be made)."""
    p = nearest_existing(path)
    if p is not None and not p.is_dir():
        raise ConfigError(f"{path}: exists and is not a folder; choose another run folder (--run-dir)"
                          if p == path else f"{path}: cannot create the run folder: {p} is a file")


def make_run_dir(path: Path) -> None:
    """Create a run folder; a :class:`ConfigError` naming it when that is impossible."""
    check_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the run folder: {e.strerror or e}") from None


def check_held_out(dataset) -> None:
    """Model selection needs validation users and the report test users: a :class:`DataError` when a split
    holds no interaction (e.g. ``data.ratios=[1,0,0]``), instead of a run that can never evaluate."""
    empty = [s for s in ("valid", "test") if len(dataset.split_frame(s)) == 0]
    if empty:
        which = "the valid and test splits hold" if len(empty) == 2 else f"the {empty[0]} split holds"
        info = getattr(dataset, "info", None) or {}
        if info.get("layout") in PRESPLIT_FIX:  # split by its files: ratios and split options do not apply
            raise DataError(info.get("source"), f"{which} no interactions; validation and test need users with "
                                                f"held-out items ({PRESPLIT_FIX[info['layout']]})")
        raise DataError(None, f"dataset {dataset.name!r}: {which} no interactions; validation and test need "
                              f"users with held-out items (check data.ratios and data.split)")


# where a pre-split folder's held-out rows come from
PRESPLIT_FIX = {"mmrec": "the .inter file's rows with x_label 1 are validation, 2 test",
                "lines": "valid.txt and test.txt list them"}


def check_trained_on(model, dataset) -> None:
    """A :class:`DataError` when ``model`` was prepared on another training split than ``dataset``'s (built
    on another split seed, or a loaded model): it would train on, and MostPop count, pairs that ``dataset``
    holds out for validation and test, while being evaluated on ``dataset``'s splits (leakage)."""
    train = dataset.csr("train")
    ours = model._train_csr
    if ours is None:  # not "another split": Recommender.prepare never ran (an override without super().prepare)
        raise ConfigError(f"{model.name} was never prepared by the base class (Recommender.prepare), so it has no "
                          f"training split: a prepare() override must call super().prepare(dataset, features) first")
    if ours.shape != train.shape or (ours.astype(bool) != train.astype(bool)).nnz:
        raise DataError(None, f"{model.name} was prepared on another training split than the one of dataset "
                              f"{dataset.name!r}: build the model from this dataset (Model.build(dataset))")


def check_implemented(model) -> None:
    """A :class:`~recgoat.models.base.MissingMethod` naming the method ``model``'s class leaves to the base class
    that this run would call: found at the first validation (``embeddings``) or batch (``loss``), it was a bare
    NotImplementedError's traceback, after the run folder was written."""
    for method in type(model).unimplemented():
        if method != "loss" or _trains(model):
            raise model.missing_method(method)


def check_negatives(train, dataset) -> None:
    """BPR needs a non-interacted item per user: a :class:`DataError` naming the users who have every
    item in the training split (possible in pre-split data), instead of the sampler's ValueError."""
    full = users_without_negatives(train)
    if len(full):
        raw = ", ".join(str(dataset.user_ids[u]) for u in full[:5])  # the ids as in the user's files
        more = ", …" if len(full) > 5 else ""
        raise DataError(None, f"dataset {dataset.name!r}: {len(full)} user(s) ({raw}{more}) "
                              f"interacted with all {train.shape[1]} items in the training split, so no negative "
                              f"item exists for BPR; remove them or add items")


def _saved_digest(folder: Path) -> str | None:
    """The weights digest ``Recommender.save`` recorded in ``folder/model.json`` (None if unreadable)."""
    try:
        return json.loads((folder / "model.json").read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def _count(v: Any) -> bool:
    """An int >= 0 (not a bool): a checkpoint's epoch and count of evaluations without improvement."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _log_row_problem(row: Any, metric: str) -> str | None:
    """Why ``row`` is not a ``log.jsonl`` row as :meth:`Trainer._log` writes it (None when it is one): a resumed
    run reads its epoch, seconds and validation metric (a hand-edited row was a KeyError or TypeError)."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    if not _count(row.get("epoch")):
        return "no epoch number"
    for key in ("train_seconds", "eval_seconds"):
        if (key in row or key == "train_seconds") and not _number(row.get(key)):
            return f"{key} is not a number"
    valid = row.get("valid")
    if "valid" in row and not (isinstance(valid, dict) and _number(valid.get(metric))
                               and all(_number(v) for v in valid.values())):
        return f"valid is not the validation metrics with {metric}"
    return None


def _torn_row(line: bytes) -> bool:
    """Whether ``line`` is the start of a row cut short (json.dumps writes ASCII, an object)."""
    if not (line.isascii() and line.lstrip().startswith(b"{")):
        return False
    try:
        json.loads(line)
    except ValueError:
        return True
    return False


# the files the trainer writes in the run folder itself (`recgoat evaluate` writes its evaluate_*.json there
# without the lock: its temporaries are not the trainer's to judge)
_RUN_FILES = ("log.jsonl", "result.json", "run_config.json")


def _valid_best(best: Any) -> bool:
    """A checkpoint's best-epoch record as the trainer writes it: epoch -1 (none yet) or a validated epoch
    with its score and metrics. (A record without its score was a KeyError at the next evaluation, a
    negative epoch a numpy ValueError on resume; every version wrote all three keys.)"""
    if not isinstance(best, dict):
        return False
    epoch, score = best.get("epoch"), best.get("score")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= -1):
        return False
    if not (isinstance(score, (int, float)) and not isinstance(score, bool)):
        return False
    return epoch == -1 or isinstance(best.get("valid"), dict)


def _trains(model) -> bool:
    """Whether the trainer runs epochs (and keeps checkpoints) for ``model``."""
    return model.trainable and any(p.requires_grad for p in model.parameters())


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


class Trainer:
    """Trains any :class:`~recgoat.models.base.Recommender` and keeps the best validation checkpoint."""

    def __init__(self, config: TrainConfig | None = None, run_dir: str | Path | None = None,
                 on_epoch_end: Callable[[int, dict], None] | None = None,
                 run_config: dict[str, Any] | None = None):
        self.config = config or TrainConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.on_epoch_end = on_epoch_end
        # written as run_dir/run_config.json once the run has passed every check, so a refused run
        # leaves the folder as it was (recgoat.training.run.train's whole configuration)
        self.run_config = run_config

    # ------------------------------------------------------------------ helpers
    def _seed_epoch(self, epoch: int) -> np.random.Generator:
        torch.manual_seed((self.config.seed * 1_000_003 + epoch) % 2**63)
        return np.random.default_rng([self.config.seed, epoch])

    def _save_checkpoint(self, model, optimizer, state: dict) -> None:
        """Weights and optimizer go to files named by epoch, then ``state.json`` (atomic) names them: a kill
        at any point leaves the previous ``state.json`` naming the previous epoch's complete pair. (With
        fixed names, a kill after the weights but before ``state.json`` paired epoch e's weights with
        epoch e-1's state, and the resumed run re-trained epoch e from them.)

        ``state.json`` records both files' SHA-256, checked on resume: bytes changed inside a tensor still load
        (and resumed another trajectory, silently). Hashing costs one read of the two files per epoch (three
        times the parameters' size, from the page cache)."""
        ck = self.run_dir / "checkpoint"
        ck.mkdir(parents=True, exist_ok=True)
        files = {"model": f"model-{state['epoch']:06d}.safetensors", "optimizer": f"optimizer-{state['epoch']:06d}.pt"}
        digests = {}
        with atomic_path(ck / files["model"]) as tmp:
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
            digests["model"] = sha256_file(tmp)
        with atomic_path(ck / files["optimizer"]) as tmp:
            torch.save(optimizer.state_dict(), tmp)
            digests["optimizer"] = sha256_file(tmp)
        # written last: it commits the checkpoint
        write_json(ck / "state.json", {**state, "files": files, "files_sha256": digests})
        for old in ck.iterdir():  # earlier epochs' pairs (and the fixed names of older versions)
            if old.name.startswith(("model", "optimizer")) and old.name not in files.values():
                old.unlink(missing_ok=True)

    def _stage_best(self, model) -> str:
        """Save a new best-validation model to ``best.new/`` (promoted to ``best/`` once the epoch's
        checkpoint names it); returns its weights' digest, which the checkpoint records.

        Saved straight to ``best/``, a kill before the checkpoint left ``best/`` holding a lost epoch while
        the checkpoint's state named an earlier best: a resumed run that did not retrace that epoch exactly
        (another thread count) reported validation and test numbers of two different models."""
        staged = self.run_dir / "best.new"
        shutil.rmtree(staged, ignore_errors=True)
        model.save(staged)
        return _saved_digest(staged)

    def _drop_results(self) -> None:
        """Remove what describes the model in ``best/`` (result, per-user test values, `recgoat evaluate`'s
        files) before that model is replaced."""
        for stale in ("result.json", "test_per_user.npz", *(f.name for f in self.run_dir.glob("evaluate_*.json"))):
            (self.run_dir / stale).unlink(missing_ok=True)

    def _promote_best(self) -> None:
        """``best.new/`` → ``best/`` (after the checkpoint that records it; see :meth:`_stage_best`)."""
        staged, best = self.run_dir / "best.new", self.run_dir / "best"
        if staged.is_dir():
            # a resumed run extending a finished one kept the old best epoch's result.json and evaluate_*.json
            # beside the new best/ until its end (for good when killed first); result.json is rewritten then
            self._drop_results()
            shutil.rmtree(best, ignore_errors=True)
            staged.rename(best)

    def _staged_is_best(self, state: dict) -> bool:
        """Whether ``best.new/`` holds the checkpoint's best model (a kill came between the checkpoint and the
        promotion), its weights intact."""
        staged, want = self.run_dir / "best.new", state["best"].get("weights_sha256")
        if want is None or not staged.is_dir() or _saved_digest(staged) != want:
            return False
        weights = staged / "weights.safetensors"
        return weights.is_file() and sha256_file(weights) == want

    def _check_best(self, state: dict) -> None:
        """A :class:`DataError` unless the checkpoint's best model is there, intact: in ``best.new/`` awaiting
        its promotion, else in ``best/``. Read-only (:meth:`_reconcile_best` acts on it under the lock). A
        damaged ``best/weights.safetensors`` was a safetensors traceback after training, or, still loadable,
        silently reported as the test metrics of the best epoch."""
        best = state["best"]
        if best["epoch"] < 0 or self._staged_is_best(state):
            return
        weights = self.run_dir / "best" / "weights.safetensors"
        if not weights.is_file():
            # the best-validation weights the resumed run would report (unless a later epoch beats them)
            raise DataError(weights, f"missing: the checkpoint's best epoch {best['epoch']} has no saved "
                                     f"model; {_AFRESH}")
        # checkpoints of older versions record no digest: best/model.json's, written with the weights
        want = best.get("weights_sha256") or _saved_digest(weights.parent)
        if want is not None and sha256_file(weights) != want:
            raise DataError(weights, f"checksum mismatch: not the best model (epoch {best['epoch']}) the "
                                     f"checkpoint recorded, corrupt or replaced; {_AFRESH}")

    def _reconcile_best(self, state: dict) -> None:
        """On resume, with the run folder locked: finish a promotion a kill interrupted (``best.new/`` is the
        checkpoint's best), or drop a staged best of the lost epoch."""
        staged = self.run_dir / "best.new"
        if not staged.is_dir():
            return
        if self._staged_is_best(state):
            self._promote_best()
        else:
            shutil.rmtree(staged, ignore_errors=True)

    def _sweep_dead_temps(self) -> None:
        """Delete the temporaries of the trainer's files that a killed writer left in this run folder.

        Only with the folder's lock held (no other trainer can be writing here), so without
        :func:`~recgoat.io.sweep_stale_temps`' hour of grace (for writers on another machine), which left a
        full-size copy of the weights and optimizer in checkpoint/ for that long after a kill."""
        if not holds_lock(self.run_dir):  # unlocked (no flock here): leave them to that sweep
            return
        sweep_stale_temps(self.run_dir, min_age=0, names=_RUN_FILES)
        sweep_stale_temps(self.run_dir / "checkpoint", min_age=0)

    def _checkpoint_files(self, state: dict) -> dict[str, Path]:
        """The weights and optimizer files ``state`` names (fixed names for checkpoints of older versions)."""
        ck = self.run_dir / "checkpoint"
        files = state.get("files") or {"model": "model.safetensors", "optimizer": "optimizer.pt"}
        return {k: ck / files[k] for k in ("model", "optimizer")}

    def _load_checkpoint(self, model, optimizer, state: dict) -> None:
        files = self._checkpoint_files(state)
        try:
            weights = load_file(str(files["model"]))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own
            raise DataError(files["model"], f"unreadable checkpoint ({_brief(e)}); {_AFRESH}") from None
        foreign = _foreign_weights(model, weights)
        if foreign:
            raise DataError(files["model"], f"holds weights of another model than this run's "
                                            f"{type(model).__name__} ({foreign}); {_AFRESH}")
        try:
            model.load_state_dict(weights)
        except Exception as e:  # noqa: BLE001
            raise DataError(files["model"], f"unreadable checkpoint ({_brief(e)}); {_AFRESH}") from None
        try:
            optimizer.load_state_dict(torch.load(files["optimizer"], weights_only=True))
        except Exception as e:  # noqa: BLE001 - pickle and torch each raise their own
            raise DataError(files["optimizer"], f"unreadable optimizer checkpoint, corrupt or not a torch optimizer "
                                                f"state ({_brief(e)}); {_AFRESH}") from None

    def resume_state(self, model, signature: dict[str, Any] | None) -> dict | None:
        """The checkpoint state this run resumes (None: a fresh start); a :class:`ConfigError` when the
        checkpoint was trained with another model, data or trajectory settings than this run's
        ``signature`` (:func:`run_signature`), which resuming would silently mix into this run, or that has
        run more epochs than trainer.epochs. A checkpoint of an older version, without a signature, is
        resumed as before."""
        if self.run_dir is None or not self.config.resume or not _trains(model):
            return None
        path = self.run_dir / "checkpoint" / "state.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(path, f"unreadable checkpoint state ({e}); {_AFRESH}") from None
        files = state.get("files", {}) if isinstance(state, dict) else None
        sums = state.get("files_sha256", {}) if isinstance(state, dict) else None
        if not (isinstance(state, dict) and _count(state.get("epoch")) and _count(state.get("bad"))
                and _valid_best(state.get("best"))
                and isinstance(files, dict) and ("files" not in state or
                                                 all(isinstance(files.get(k), str) for k in ("model", "optimizer")))
                and isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values())):
            raise DataError(path, f"not a checkpoint state (expected epoch, bad, best); {_AFRESH}")
        old = state.get("signature")
        if old is not None:
            changes = signature_changes(old, signature)
            if changes:
                raise other_configuration(self.run_dir, changes)
        done = state["epoch"] + 1
        if done > self.config.epochs:
            # epochs already run cannot be undone: the run's best epoch, log and epochs_run would lie beyond
            # trainer.epochs, and its best is not what a run of trainer.epochs would have chosen (the forced
            # last-epoch evaluation, patience and min_epochs all depend on it)
            raise ConfigError(f"{self.run_dir}: has already run {done} epochs, more than trainer.epochs="
                              f"{self.config.epochs}, and a resumed run cannot undo epochs; set trainer.epochs="
                              f"{done} or more to continue it ({done}: report it as it stands), or to start "
                              f"afresh with {self.config.epochs} epochs give it {_OWN_FOLDER}")
        for key, f in self._checkpoint_files(state).items():
            if not f.is_file():
                raise DataError(f, f"missing: the checkpoint is incomplete; {_AFRESH}")
            # checkpoints of older versions record no digests: their files are read as they are
            if key in sums and sha256_file(f) != sums[key]:
                raise DataError(f, f"checksum mismatch: the checkpoint file is corrupt or was replaced since it "
                                   f"was written; {_AFRESH}")
        self._check_best(state)
        self._log_rows(state["epoch"])  # a damaged log is refused here, before the run writes anything
        return state

    def preflight(self, model, dataset, signature: dict[str, Any] | None) -> dict | None:
        """Every check that can refuse this run, done before anything is written or trained; returns
        :meth:`resume_state`. Read-only: it runs before (or without) the run folder's lock, so it must not
        change what a live run in that folder owns (it deleted such a run's newly staged best/)."""
        if self.run_dir is not None:
            check_run_dir(self.run_dir)
        check_implemented(model)
        check_held_out(dataset)
        check_trained_on(model, dataset)
        if _trains(model):
            check_negatives(model._train_csr, dataset)
        return self.resume_state(model, signature)

    def _log(self, row: dict) -> None:
        if self.run_dir is None:
            return
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def _log_rows(self, last_epoch: int) -> list[dict]:
        """The log rows up to the checkpointed epoch (later ones belong to the lost work); a :class:`DataError`
        naming the line when one is not a log row.

        Only a last line without its newline that starts like a row is skipped: a kill while appending cuts
        one there, and it belongs to the lost epoch. Any other line that is not a row was damaged or edited:
        skipping it would silently drop an epoch from the run's history, times and epochs_run (it was a
        UnicodeDecodeError, KeyError or TypeError)."""
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return []
        data = path.read_bytes()
        lines = data.split(b"\n")
        last = lines.pop()  # b"" when the file ends with its newline
        rows = []
        for n, line in enumerate(lines, 1):
            rows.append(self._log_row(path, n, line))
        if last.strip() and not _torn_row(last):
            rows.append(self._log_row(path, len(lines) + 1, last))
        return [r for r in rows if r is not None and r["epoch"] <= last_epoch]

    def _log_row(self, path: Path, n: int, line: bytes) -> dict | None:
        """Line ``n`` of ``log.jsonl`` as a row (None: blank); a :class:`DataError` when it is none."""
        if not line.strip():
            return None
        try:
            row, why = json.loads(line.decode("utf-8")), None
        except UnicodeDecodeError:
            row, why = None, "not UTF-8 text"
        except json.JSONDecodeError:
            row, why = None, "not JSON"
        why = why or _log_row_problem(row, self.config.metric)
        if why:
            raise DataError(path, f"line {n}: not a log row ({why}); {_AFRESH}")
        return row

    def _truncate_log(self, last_epoch: int) -> list[dict]:
        """Keep log lines up to the checkpointed epoch (later ones belong to the lost work)."""
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return []
        rows = self._log_rows(last_epoch)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def _no_best(self, history: list[dict], bad: int, start_epoch: int) -> None:
        """Raise why a trained run has no best epoch: its validation metric was NaN at every evaluation
        (NaN is never better, so each counted in ``bad``), or it resumed a never-evaluated checkpoint at
        trainer.epochs. (Both read "resumed past trainer.epochs" before, even for a fresh run.)"""
        cfg = self.config
        where = f"{self.run_dir}: " if self.run_dir is not None else ""
        evaluated = [r["epoch"] for r in history if "valid" in r]
        if evaluated or bad:
            span = ("" if not evaluated else f", epoch {evaluated[0]}" if len(evaluated) == 1
                    else f", epochs {evaluated[0]}–{evaluated[-1]}")
            raise TrainingDiverged(
                f"{where}the validation metric {cfg.metric} was NaN at every evaluation "
                f"({max(bad, len(evaluated))} of them{span}), so no epoch can be chosen as the best; a NaN mean "
                f"means no validation user was scored (an empty validation split: check data.ratios and "
                f"data.split) or the model's outputs are not numbers (divergence: lower trainer.lr or the loss "
                f"weights)")
        raise ConfigError(f"{where}the checkpoint is at epoch {start_epoch - 1} with no validation yet, and "
                          f"trainer.epochs={cfg.epochs} ends before the next evaluation; raise trainer.epochs")

    # ------------------------------------------------------------------ main loop
    def fit(self, model, dataset) -> dict[str, Any]:
        """Train ``model`` on ``dataset``'s training split with early stopping on validation; two runs with
        the same seed and thread count give the same model (:func:`deterministic_kernels`).

        ``num_threads`` holds for this run only: the caller's torch thread count is back when it returns or
        raises (it stayed set, so the process's later work ran at the trainer's count, not its own).

        ``device`` (e.g. ``cuda``): the model moves there after ``prepare`` and stays there; mini-batches are
        drawn on the CPU and moved, the ranking evaluation runs on the CPU from the model's embeddings. Runs on
        a GPU repeat to float rounding only: deterministic kernels (warning, not stopping, where an operation
        has none there) and cuBLAS's fixed workspace are set, but cuSPARSE's sparse products (torch's on CUDA,
        unflagged by its deterministic mode) sum in no fixed order (two runs' losses differ by ~1e-8 relative).
        They differ from a CPU run's in rounding and in dropout's random stream; a checkpoint resumes on either
        device."""
        threads = torch.get_num_threads()
        try:
            with deterministic_kernels(warn_only=self.config.torch_device.type != "cpu"), \
                    contextlib.ExitStack() as self._exit:
                return self._fit(model, dataset)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, model, dataset) -> dict[str, Any]:
        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        check_train_device(cfg)
        if cfg.torch_device.type == "cuda":
            # cuBLAS's deterministic workspace (deterministic_kernels): torch refuses a matrix product without it
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.cuda.reset_peak_memory_stats(cfg.device)
        if not model._prepared:  # a loaded model has its training matrix but no graphs: prepare builds them
            model.prepare(dataset)
        model.to(cfg.device)  # after prepare: the graphs it builds are buffers, and move with the weights
        # what a checkpoint of this run records and a resumed one is compared with
        signature = run_signature(model, dataset, cfg) if self.run_dir is not None and _trains(model) else None
        state = self._open_run_dir(model, dataset, signature)
        valid_eval = Evaluator.for_split(dataset, "valid", cfg.ks, cfg.eval_chunk_size, cfg.eval_selection)
        run = _Course(t_start=time.perf_counter())
        if state is None and self.run_dir is not None:
            self._clear_earlier_run()
        if _trains(model):
            self._train(model, state, signature, valid_eval, run)
            if run.best["epoch"] < 0:
                self._no_best(run.history, run.bad, run.start_epoch)
            plateau = plateau_message(model.name, run.history)
            if plateau:
                warnings.warn(plateau, UserWarning, stacklevel=2)
            self._restore_best(model, run)
        else:
            t1 = time.perf_counter()
            run.best = {"score": None, "epoch": 0, "valid": valid_eval.evaluate(model).means}
            run.eval_times.append(time.perf_counter() - t1)
            run.best["score"] = run.best["valid"][cfg.metric]
            if self.run_dir is not None:
                model.save(self.run_dir / "best")
        return self._test(model, dataset, valid_eval, run)

    def _open_run_dir(self, model, dataset, signature: dict[str, Any] | None) -> dict | None:
        """Lock and check the run folder (made only once the checks pass); the checkpoint state to resume, if any.

        One writer per run folder: two runs in one folder would interleave checkpoints and logs. An existing
        folder is locked before its checkpoint is read: a live run's files change under the checks (a new run
        folder is made only once the checks pass, so a refused run leaves none behind)."""
        locked = self.run_dir is not None and self.run_dir.is_dir()
        if locked:
            self._exit.enter_context(folder_lock(self.run_dir))
        state = self.preflight(model, dataset, signature)
        if self.run_dir is not None:
            make_run_dir(self.run_dir)
            if not locked:
                self._exit.enter_context(folder_lock(self.run_dir))
                # another run may have made the folder and checkpointed in it since preflight looked
                state = self.resume_state(model, signature)
            self._sweep_dead_temps()
            if state is not None:
                self._reconcile_best(state)
            if self.run_config is not None:
                write_json(self.run_dir / "run_config.json", self.run_config)
        return state

    def _clear_earlier_run(self) -> None:
        """A fresh start (or a model without epochs, e.g. MostPop): what an earlier run left here describes another
        trajectory (its checkpoint must not be resumed if this run stops before writing its own, nor by a later
        run of that model, which then loaded this run's best/ into it: a RuntimeError; its result no longer
        describes best/; its best/ and what `recgoat evaluate` wrote of it are another model, which evaluate and
        export took for this run's until its first validation replaced it)."""
        self._drop_results()
        for stale in ("log.jsonl", "checkpoint/state.json"):
            (self.run_dir / stale).unlink(missing_ok=True)
        for stale in ("best.new", "best"):
            shutil.rmtree(self.run_dir / stale, ignore_errors=True)

    def _train(self, model, state: dict | None, signature: dict[str, Any] | None, valid_eval: Evaluator,
               run: _Course) -> None:
        """The epochs, from ``state``'s checkpoint when resuming, until ``trainer.epochs`` or early stopping."""
        cfg = self.config
        sampler = NegativeSampler(model._train_csr)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None:
            self._load_checkpoint(model, optimizer, state)
            run.resume(state, self._truncate_log(state["epoch"]))
        bar = _progress(cfg.epochs, run.start_epoch, show_progress(cfg), model.name)
        for epoch in range(run.start_epoch, cfg.epochs):
            # bad >= 1: patience 0 stops at the first evaluation without improvement, not after the first.
            # With no best yet, every evaluation so far was NaN (never > -inf): stopping too spares the
            # remaining epochs of a run that ends in the error below anyway
            if run.bad >= max(cfg.patience, 1) and epoch >= cfg.min_epochs:
                break
            row = self._train_epoch(model, sampler, optimizer, epoch, run)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                self._validate(model, valid_eval, epoch, row, run)
            run.history.append(row)
            self._log(row)
            if self.run_dir is not None:
                self._save_checkpoint(model, optimizer, {
                    "epoch": epoch, "bad": run.bad, "best": run.best, "signature": signature,
                    "wall_seconds": round(run.wall_seconds(), 4)})
                self._promote_best()
            bar.update(1, row, run.best)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, row)
        bar.close()

    def _train_epoch(self, model, sampler: NegativeSampler, optimizer: torch.optim.Optimizer, epoch: int,
                     run: _Course) -> dict[str, Any]:
        """One pass over the training interactions; its log row (mean loss terms, seconds). A TrainingDiverged
        when the loss or a parameter stops being finite."""
        cfg = self.config
        rng = self._seed_epoch(epoch)
        model.train()
        t0 = time.perf_counter()  # per-epoch model work (e.g. FREEDOM's graph pruning) is training time
        model.on_epoch_start(epoch, rng)
        lr = self.epoch_lr(epoch)
        for group in optimizer.param_groups:  # set, not multiplied: a resumed run gets its epoch's lr as well
            group["lr"] = lr
        sums: dict[str, float] = {}
        n_batches = 0
        dev = cfg.torch_device
        for users, pos, neg in sampler.epoch(cfg.batch_size, rng):
            if dev.type != "cpu":
                users, pos, neg = (t.to(dev, non_blocking=True) for t in (users, pos, neg))
            terms = _checked_terms(model, model.loss(users, pos, neg))
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)
            n_batches += 1
        train_s = time.perf_counter() - t0
        run.train_times.append(train_s)
        row: dict[str, Any] = {"epoch": epoch, "train_seconds": round(train_s, 4)}
        if cfg.lr_decay != 1.0:
            row["lr"] = lr
        row.update({k: v / max(n_batches, 1) for k, v in sums.items()})
        # the epoch's last step can overflow the parameters while every loss was finite: that epoch
        # must not be evaluated, chosen as best or checkpointed either
        bad_param = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
        if not math.isfinite(row.get("loss", 0.0)) or bad_param is not None:
            where = f"{self.run_dir}: " if self.run_dir is not None else ""
            what = (f"loss became {row['loss']}" if not math.isfinite(row.get("loss", 0.0))
                    else f"parameter {bad_param} became non-finite")
            raise TrainingDiverged(f"{where}{model.name}: {what} at epoch {epoch}; lower the learning rate "
                                   f"or the loss weights (the last finite epoch's checkpoint is kept)")
        return row

    def epoch_lr(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based): ``lr · lr_decay^(epoch / lr_decay_every)``."""
        cfg = self.config
        return cfg.lr * cfg.lr_decay ** (epoch / cfg.lr_decay_every)

    def _validate(self, model, valid_eval: Evaluator, epoch: int, row: dict[str, Any], run: _Course) -> None:
        """Evaluate on validation into ``row``; a better score becomes the best model (staged in the run folder,
        or kept in memory), another one counts towards early stopping."""
        # eval mode keeps the propagated embeddings cached, so saving a new best reuses them
        # instead of propagating again (model.train() at the next epoch drops them)
        model.eval()
        t1 = time.perf_counter()
        _check_finite_embeddings(model, epoch, self.run_dir)
        res = valid_eval.evaluate(model)
        run.eval_times.append(time.perf_counter() - t1)
        row["eval_seconds"] = round(run.eval_times[-1], 4)
        row["valid"] = res.means
        score = res.means[self.config.metric]
        if score > run.best["score"]:
            run.best = {"score": score, "epoch": epoch, "valid": res.means}
            run.bad = 0
            if self.run_dir is not None:
                run.best["weights_sha256"] = self._stage_best(model)
            else:
                run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            run.bad += 1

    def _restore_best(self, model, run: _Course) -> None:
        """The best-validation parameters back into ``model`` before testing (from best/, or from memory)."""
        best_file = self.run_dir / "best" / "weights.safetensors" if self.run_dir is not None else None
        if best_file is not None and best_file.exists():
            try:
                tensors = load_file(str(best_file))
            except Exception as e:  # noqa: BLE001 - safetensors raises its own
                raise DataError(best_file, f"unreadable best model ({_brief(e)}); {_AFRESH}") from None
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
        elif run.best["epoch"] >= 0:
            model.load_state_dict(run.best_state)

    def _test(self, model, dataset, valid_eval: Evaluator, run: _Course) -> dict[str, Any]:
        """Test the best model; the run's result, written with its per-user figures to the run folder."""
        cfg = self.config
        model.eval()
        model._cached = None
        test_res = Evaluator.for_split(dataset, "test", cfg.ks, cfg.eval_chunk_size, cfg.eval_selection).evaluate(model)
        best = run.best
        if set(best["valid"]) != set(test_res.means):
            # resumed under other trainer.ks: the checkpoint's best was validated at the old cut-offs, so the
            # result (and `recgoat train`'s table) mixed two sets of columns; the best model, loaded above, again
            best = {**best, "valid": valid_eval.evaluate(model).means}
        result = {
            "model": model.name,
            "dataset": dataset.name,
            "dataset_fingerprint": dataset.fingerprint(),
            "model_config": model.config.model_dump(mode="json"),
            "train_config": cfg.model_dump(mode="json"),
            "best_epoch": best["epoch"],
            "epochs_run": len(run.train_times),
            "resumed_epochs": run.start_epoch,  # epochs restored from a checkpoint (0: a fresh run)
            "valid": best["valid"],
            "test": test_res.means,
            "seconds_per_epoch": float(np.mean(run.train_times)) if run.train_times else 0.0,
            "eval_seconds": float(np.mean(run.eval_times)) if run.eval_times else 0.0,
            # every run's, up to the checkpoint this one resumed (a resumed run counted only its own part)
            "wall_seconds": run.wall_seconds(),
            "peak_memory_mb": peak_memory_mb(),
            "device": cfg.device,
            **({"peak_gpu_memory_mb": torch.cuda.max_memory_allocated(cfg.device) / 2**20}
               if cfg.torch_device.type == "cuda" else {}),
            "summary": model.summary,
            "history": [{k: r[k] for k in ("epoch", "loss") if k in r}
                        | ({"valid_" + cfg.metric: r["valid"][cfg.metric]} if "valid" in r else {})
                        for r in run.history],
        }
        self.test_result = test_res
        if self.run_dir is not None:
            # per-user figures first, both atomically: a result.json always has its complete test_per_user.npz
            with atomic_path(self.run_dir / "test_per_user.npz") as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, users=test_res.users,
                                    **{k.replace("@", "_at_"): v for k, v in test_res.per_user.items()})
            write_json(self.run_dir / "result.json", result)
        return result


@dataclass
class _Course:
    """A training run's course so far: what a checkpoint restores (:meth:`resume`) and the result reports."""

    t_start: float  # this process's start of the run (perf_counter)
    history: list[dict] = field(default_factory=list)  # log rows, one per epoch
    train_times: list[float] = field(default_factory=list)
    eval_times: list[float] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"score": -math.inf, "epoch": -1, "valid": None})
    best_state: dict[str, torch.Tensor] | None = None  # the best parameters, without a run folder to stage them
    start_epoch: int = 0
    bad: int = 0  # evaluations since the best one
    wall_before: float = 0.0  # the wall time of the earlier runs this one resumes (_resumed_wall_seconds)

    def resume(self, state: dict, history: list[dict]) -> None:
        """Continue from checkpoint ``state`` with the log rows of its epochs."""
        self.start_epoch, self.bad, self.best = state["epoch"] + 1, state["bad"], state["best"]
        self.history = history
        self.train_times = [r["train_seconds"] for r in history]
        self.eval_times = [r["eval_seconds"] for r in history if "eval_seconds" in r]
        self.wall_before = _resumed_wall_seconds(state, history)

    def wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start


def _resumed_wall_seconds(state: dict, history: list[dict]) -> float:
    """The wall time the runs before this resumed one spent up to its checkpoint: the checkpoint's record, or, for
    a checkpoint of an older version (none recorded), the restored epochs' training and validation seconds in the
    log (without the checkpoints' writing)."""
    recorded = state.get("wall_seconds")
    if _number(recorded) and math.isfinite(recorded) and recorded >= 0:
        return float(recorded)
    return float(sum(r["train_seconds"] + r.get("eval_seconds", 0.0) for r in history))


def _checked_terms(model, terms: Any) -> dict[str, Any]:
    """``loss()``'s result if it keeps the contract (a dict whose ``"loss"`` is a scalar tensor, every other
    value a scalar tensor or number), else a ConfigError naming the class: a plugin's mistake was a bare
    KeyError, AttributeError or torch's "grad can be implicitly created only for scalar outputs"."""
    def scalar(v: Any, tensor_only: bool) -> bool:
        if isinstance(v, torch.Tensor):
            return v.numel() == 1 and v.is_floating_point()
        return not tensor_only and isinstance(v, (int, float)) and not isinstance(v, bool)

    loss = terms.get("loss") if isinstance(terms, dict) else None
    if loss is None or not scalar(loss, True) or not all(scalar(v, False) for v in terms.values()):
        bad = (type(terms).__name__ if not isinstance(terms, dict) else "no 'loss'" if loss is None else
               ", ".join(f"{k}: {type(v).__name__}{tuple(v.shape) if isinstance(v, torch.Tensor) else ''}"
                         for k, v in terms.items()))
        raise ConfigError(f"{type(model).__name__}.loss() must return a dict whose 'loss' is a scalar floating "
                          f"tensor (other entries scalar tensors or numbers, logged); got {bad}")
    return terms


def _check_finite_embeddings(model, epoch: int, run_dir: Path | None) -> None:
    """A TrainingDiverged when the final embeddings hold NaN or inf while every parameter is finite (a
    division by a zero norm, a plugin's bug): the evaluator scores NaN as the worst, so the run went on with
    every metric 0 and `export` refused the model only afterwards."""
    for side, emb in zip(("user", "item"), model.final_embeddings()):
        bad = ~torch.isfinite(emb).all(dim=1)
        if bad.any():
            where = f"{run_dir}: " if run_dir is not None else ""
            raise TrainingDiverged(f"{where}{model.name}: {int(bad.sum())} {side} embeddings hold NaN or inf at "
                                   f"epoch {epoch} (first: {side} index {int(torch.nonzero(bad)[0])}) although "
                                   f"every parameter is finite; check the model's embeddings()")


# how a refused run folder is left for a fresh start: another folder first (an earlier try is worth comparing)
_OWN_FOLDER = ("a folder of its own with --run-dir DIR (or another --out), or overwrite that run with --set "
               "trainer.resume=false (Python: another run_dir, or TrainConfig(resume=False))")


def other_configuration(run_dir, changes: list[str]) -> ConfigError:
    """The refusal of a run folder whose checkpoint was made with another configuration (``changes``: what
    differs, as :func:`signature_changes` words it). When the data differs (another dataset, split or version of
    it), another folder comes first: that run is of other data, not an earlier try of this one, and the advice to
    start afresh with ``trainer.resume=false`` overwrote it."""
    said = '; '.join(changes)
    if any(c.startswith(DATA_CHANGE) for c in changes):
        return ConfigError(f"{run_dir}: was run with a different configuration ({said}); this run's data differs "
                           f"from that run's: give it a folder of its own with --run-dir DIR (or another --out) "
                           f"(Python: another run_dir); --set trainer.resume=false would overwrite that run of "
                           f"other data (Python: TrainConfig(resume=False))")
    # another folder first here too: an earlier try (other params, preset, learning rate) is worth comparing
    return ConfigError(f"{run_dir}: was run with a different configuration ({said}); to start afresh give "
                       f"this run {_OWN_FOLDER}")


def show_progress(cfg: TrainConfig) -> bool:
    """Whether to draw the epoch bar: ``progress`` as set, or by default only where someone watches it (stderr
    a terminal, or a Jupyter kernel). tqdm redraws with carriage returns, which fill a log or a pipe with
    garbage: the commands already left it off there, ``model.fit`` in a script did not (12.7 KB for the
    README's LightGCN example)."""
    if not cfg.progress or "progress" in cfg.model_fields_set:
        return cfg.progress
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class _progress:
    """A tqdm bar over epochs showing loss and the selection metric (silent when disabled)."""

    def __init__(self, total: int, initial: int, enabled: bool, name: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=name, unit="epoch", leave=False,
                            dynamic_ncols=True)

    def update(self, n: int, row: dict, best: dict) -> None:
        if self.bar is None:
            return
        post = {"loss": f"{row.get('loss', float('nan')):.4f}"}
        if "valid" in row:
            post["best"] = f"{best['score']:.4f}@{best['epoch']}"
        self.bar.set_postfix(post)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
