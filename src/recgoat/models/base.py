"""The one API every model shares: ``fit``, ``score``, ``recommend``, ``save``, ``load``.

Every model scores by an inner product of a user and an item representation, so a model exposes
``embeddings() -> (Z_U, Z_I)`` and everything else — full-ranking evaluation, ``score``,
``recommend``, faiss retrieval, serving — is built once on top of it. Training-time behaviour lives in
``prepare`` (build graphs from the training split), ``loss`` (one mini-batch of BPR triples) and the
optional ``on_epoch_start`` hook.

A saved model is a folder: ``model.json`` (class, hyper-parameters, constructor dimensions, format
version), ``weights.safetensors`` (parameters, final embeddings and the training matrix for
``remove_seen``). Loading needs neither the dataset nor the features.
"""
from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
import re
import sys
import warnings
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import ConfigDict, ValidationError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from recgoat.errors import ConfigError, DataError, RecGOATError, did_you_mean
from recgoat.evaluation.ranking import top_k
from recgoat.io import _json_default, atomic_path, sha256_file, write_json
from recgoat.strict import StrictNumbers

if TYPE_CHECKING:  # imported for annotations only: the datasets and training layers import this module
    from recgoat.datasets.dataset import Dataset
    from recgoat.features.loading import Features
    from recgoat.training.trainer import TrainConfig

MODEL_FORMAT_VERSION = 1
MODELS: dict[str, type["Recommender"]] = {}


class ModelConfig(StrictNumbers):
    """Hyper-parameters of a model; unknown or ill-typed keys are refused."""

    # a field's docstring (the string literal below it) is its description: `recgoat models show` prints it
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)
    # keys added after models were saved without them, with the behaviour those models had: a saved config
    # holds every key of its day (model_dump), so an absent one means "older model", not "the new default"
    legacy_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def legacy_settings(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """The keys a saved config ``saved`` lacks, with the values that keep the behaviour it was saved with."""
        return {k: v for k, v in cls.legacy_defaults.items() if k not in saved}

    @classmethod
    def saved_problem(cls, saved: dict[str, Any]) -> str | None:
        """Why a model saved with config ``saved`` cannot be loaded by this version (its equations or parameters
        changed since, so no legacy setting restores it), said to the user instead of a parameter-name mismatch;
        None when it can be."""
        return None

    @classmethod
    def with_legacy_settings(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """``saved`` (a saved config: a model's, a checkpoint's, a benchmark cell's) as the behaviour it was saved
        with, its missing keys filled in by :meth:`legacy_settings`."""
        return {**cls.legacy_settings(saved), **saved}


# a model name becomes a folder name (runs/<dataset>/<model>/…) and a benchmark label
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


class NaNScores(RecGOATError, FloatingPointError):
    """A model scored items NaN: it has no ranking of them (its embeddings hold NaN or inf), so ``recommend``
    refuses rather than return a list short of those items or ranked arbitrarily; the serving export refuses
    such embeddings too."""


class MissingMethod(ConfigError, NotImplementedError):
    """A model class leaves a method the harness calls to :class:`Recommender`, which has none to give
    (``embeddings``; ``loss`` for a model with parameters to train). Also a ``NotImplementedError``, which the base
    methods raised bare before."""


class ModelNameTaken(ConfigError):
    """A model name is already registered to another class (a built-in one, or another plugin's)."""


def is_builtin(cls: type) -> bool:
    """A model class defined by recgoat itself (``recgoat.models.*``), which no plugin may replace."""
    return cls.__module__.startswith("recgoat.models.")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(name: str) -> Callable[[type["Recommender"]], type["Recommender"]]:
    """Class decorator: make a model available by name (``recgoat train --model NAME``).

    A name already registered to another class is refused (:class:`ModelNameTaken`), so a plugin cannot
    silently replace a built-in model (or another plugin's) in a run or a benchmark table. The same class
    defined again (its module re-imported, a notebook cell re-run) replaces its earlier definition.
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ConfigError(f"model name {name!r} is not usable: use letters, digits and _.+- (it names run folders)")

    def wrap(cls: type["Recommender"]) -> type["Recommender"]:
        old = MODELS.get(name)
        if old is not None and old is not cls and _qualified(old) != _qualified(cls) \
                and not (is_builtin(cls) and not is_builtin(old)):  # recgoat's own model always wins
            kind = "the built-in model" if is_builtin(old) else "another model,"
            raise ModelNameTaken(f"model name {name!r} is taken by {kind} {_qualified(old)}; register "
                                 f"{_qualified(cls)} under another name")
        cls.name = name
        MODELS[name] = cls
        return cls

    return wrap


def feature_digests(features, dims: dict[str, Any]) -> dict[str, str]:
    """A short content hash of each feature matrix a model with constructor ``dims`` reads (``text``,
    ``image`` with its mask, ``profile``: those whose ``{name}_dim`` is non-zero); a model passes
    :meth:`Recommender.read_dims`, which zeroes the sizes of matrices it was built to leave out.

    A run's checkpoint records them: features re-encoded with another encoder or template keep their
    shape, so the sizes in ``dims`` alone would let a resumed run continue on other inputs.
    """
    out: dict[str, str] = {}
    if features is None:
        return out
    for name in ("text", "image", "profile"):
        x = getattr(features, name, None)
        if x is None or not int(dims.get(f"{name}_dim", 0) or 0):
            continue
        h = hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes())
        mask = getattr(features, "image_mask", None) if name == "image" else None
        if mask is not None:
            h.update(np.ascontiguousarray(mask, dtype=bool).tobytes())
        out[name] = h.hexdigest()[:16]
    return out


class Recommender(nn.Module):
    """Base class of every recommender.

    Subclasses set ``Config`` (a :class:`ModelConfig`) and implement :meth:`embeddings` and, when
    trainable, :meth:`loss`. Models that need the dataset or features beyond the training matrix
    implement :meth:`prepare` and :meth:`dims_from`.

    The fixed tensors ``prepare`` builds (sparse graphs, frozen features, index tensors) are non-persistent
    buffers (:func:`recgoat.graphs.bipartite.register_fixed`), not plain attributes: ``.double()``,
    ``.half()`` and ``.to(device)`` cast and move them with the weights (torch's ``Module._apply`` handles
    sparse CSR buffers as any other), and ``state_dict`` — what is saved — holds the learnt weights only.
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    trainable: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False  # reads item/user side features (the benchmark loads them)

    def __init__(self, n_users: int, n_items: int, config: ModelConfig | dict[str, Any] | None = None,
                 **dims: Any):
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            try:
                config = self.Config(**config)
            except ValidationError as e:  # the same one-line message as `recgoat train --set model.params…`
                from recgoat.config import format_validation_error

                raise ConfigError(f"{self.name}: {format_validation_error(e, prefix='model.params')}") from None
        self.config = config
        self.dims = dims
        self._train_csr: sp.csr_matrix | None = None
        # prepare() has run: a loaded model has its training matrix (for remove_seen) but no graphs or
        # features, so fit() must prepare it first
        self._prepared = False
        self._cached: tuple[Tensor, Tensor] | None = None
        self._cached_key: tuple = ()  # _weights_key() when _cached was computed
        # a loaded model: the content hash of the weights its saved final embeddings were computed from
        self._saved_weights: str | None = None
        self.summary: dict[str, Any] = {}
        # content hashes of the feature matrices prepare() was given (see feature_digests)
        self.feature_digests: dict[str, str] = {}
        # (features, their digests) that fit() has just computed, so prepare() does not hash them again
        self._known_digests: tuple[Any, dict[str, str]] | None = None
        # calls of Recommender.prepare: an override that never calls super().prepare() is told apart by it
        self._base_prepares = 0
        # the shapes of state_dict() once the whole __init__ has run (a subclass's too: _record_built_state)
        self._built_state: dict[str, tuple[int, ...]] | None = None
        if type(self).__init__ is Recommender.__init__:  # no subclass __init__ follows
            self._built_state = _state_shapes(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_built_state(cls.__dict__["__init__"])
        if "prepare" in cls.__dict__:
            cls.prepare = _checked_prepare(cls.__dict__["prepare"])

    # ----------------------------------------------------------------- construction
    def init_id_embeddings(self, dim: int) -> None:
        """The ID tables ``user_emb`` (U×d) and ``item_emb`` (I×d), Xavier-uniform (LightGCN's init)."""
        self.user_emb = nn.Embedding(self.n_users, dim)
        self.item_emb = nn.Embedding(self.n_items, dim)
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)

    @contextmanager
    def component_init(self, name: str) -> Iterator[None]:
        """Initialise the sub-module built inside this block from its own random stream.

        The stream is seeded by ``name`` and the global generator's current state, which it leaves as it
        found it. A component therefore starts from the same weights whatever else the model builds
        (or leaves out) before it, so an ablation that removes one branch changes that branch alone,
        not the initialisation of every branch built after it.
        """
        state = torch.random.get_rng_state()
        digest = hashlib.blake2b(state.numpy().tobytes(), digest_size=8, person=b"recgoat-init")
        digest.update(name.encode())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(digest.digest(), "little") & (2**63 - 1))
            yield

    def read_dims(self) -> dict[str, Any]:
        """``dims`` with ``{name}_dim`` set to 0 for each feature matrix this built model does not read: what
        :func:`feature_digests` hashes, so what a loaded model or a resumed run checks. ``dims_from`` sizes
        every matrix of the feature folder, without the config; a model whose config leaves some out
        (RecGOAT's ``use_profile``, ``modalities``) overrides this, else a reloaded one refused features it
        never reads."""
        return dict(self.dims)

    @classmethod
    def dims_from(cls, dataset: Dataset, features: Features | None = None) -> dict[str, Any]:
        """Constructor dimensions that depend on the data (feature sizes…); saved with the model."""
        return {}

    @classmethod
    def feature_kinds(cls, config: ModelConfig) -> tuple[str, ...]:
        """The kinds of side features (``recgoat encode``'s: ``text``, ``image``, ``users``) this model reads with
        ``config``: what ``--features auto`` encodes for it. Item text and images for a model that reads features."""
        return ("text", "image") if cls.needs_features else ()

    @classmethod
    def build(cls, dataset: Dataset, config: ModelConfig | dict[str, Any] | None = None,
              features: Features | None = None) -> "Recommender":
        model = cls(dataset.n_users, dataset.n_items, config, **cls.dims_from(dataset, features))
        model.prepare(dataset, features)
        return model

    def prepare(self, dataset: Dataset, features: Features | None = None) -> None:
        """Build what training needs from the training split only (graphs, statistics)."""
        if (dataset.n_users, dataset.n_items) != (self.n_users, self.n_items):  # a loaded model, other data
            raise DataError(None, f"{self.name} has {self.n_users} users × {self.n_items} items but dataset "
                                  f"{dataset.name!r} has {dataset.n_users} × {dataset.n_items}: not its data")
        known = getattr(self, "_known_digests", None)
        digests = known[1] if known is not None and known[0] is features \
            else feature_digests(features, self.read_dims())
        trained_on = getattr(self, "_saved_feature_digests", None)  # set by load()
        if trained_on is not None:
            # same-shaped features from another encoder or template would pass every size check, and the
            # learned projections would then read inputs they were never trained on
            # (features not given at all are the model's own prepare's to report, by name and shape)
            other = sorted(k for k in trained_on if k in digests and trained_on[k] != digests[k])
            if other:
                raise DataError(None, f"{self.name} was trained with other {' and '.join(other)} features than "
                                      f"those given (their contents differ; sizes alone would pass): give the "
                                      f"feature folder it was trained with")
        if features is not None and not digests and not self.needs_features:
            # LightGCN.build(ds, None, features) trained as if they were not there, without a word (`recgoat train`
            # notes it in its result instead: training.run.train)
            warnings.warn(f"{self.name} reads no side features: the features given are not used", UserWarning,
                          stacklevel=_caller_level())
        self._prepared = True
        self._base_prepares = self.__dict__.get("_base_prepares", 0) + 1
        self._cached = None  # embeddings of the graph and features before (a loaded model's saved ones)
        self.set_train_matrix(dataset.csr("train"))
        self.feature_digests = digests

    def set_train_matrix(self, train: sp.csr_matrix) -> None:
        self._train_csr = train.tocsr()

    @classmethod
    def unimplemented(cls) -> tuple[str, ...]:
        """The required methods ``cls`` leaves to this base class, whose own only raise :class:`MissingMethod`:
        ``embeddings``, and ``loss`` unless ``trainable`` is False. What ``recgoat models list`` shows a model's
        training by, and what the trainer refuses before anything runs (``loss`` only for a model with parameters
        to train: one without is evaluated once, as MostPop)."""
        need = ("embeddings", "loss") if cls.trainable else ("embeddings",)
        return tuple(m for m in need if getattr(cls, m) is getattr(Recommender, m))

    @classmethod
    def missing_method(cls, method: str) -> MissingMethod:
        """The error for ``method`` of :meth:`unimplemented`, naming the model and what to write."""
        what = {"embeddings": "embeddings(self) -> (Z_U, Z_I), the user and item representations whose inner "
                              "products are the scores",
                "loss": "loss(self, users, pos, neg) -> {'loss': ...}, the loss of a batch of BPR triples that "
                        "training minimises (a model without gradient training sets trainable = False instead)"}
        return MissingMethod(f"{cls.name} ({cls.__qualname__}) implements no {method}(): implement {what[method]}; "
                             f"see docs/extending.md, \"What a model implements\"")

    # ----------------------------------------------------------------- training hooks
    def loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        """Loss terms for a batch of BPR triples; key ``loss`` is the total that is minimised."""
        raise self.missing_method("loss")

    def on_epoch_start(self, epoch: int, rng: np.random.Generator) -> None:
        """Called before each training epoch (e.g. to resample a pruned graph)."""

    def train(self, mode: bool = True) -> "Recommender":
        if mode and self._prepared:
            self._cached = None  # parameters are about to change
        elif mode:
            # a loaded model keeps its saved embeddings (it cannot propagate without its graphs), but checks its
            # weights by content before using them again: `p.data -= lr * p.grad` leaves no version behind
            self._cached_key = ()
        return super().train(mode)

    # ----------------------------------------------------------------- inference
    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final ``(Z_U, Z_I)``; the score of (u, i) is ``Z_U[u] · Z_I[i]``."""
        raise self.missing_method("embeddings")

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """Embeddings in eval mode (dropout off), cached while the model stays in eval mode.

        Graph models propagate once here, so an evaluation or a batch of ``recommend`` calls never
        re-runs the full forward pass per user chunk.
        """
        if self._cached is not None:
            key = self._weights_key()
            if self._cached_key == key:
                return self._cached
            if not self._prepared and self._saved_weights is not None and self._weights_digest() == self._saved_weights:
                # a loaded model's copy (deepcopy) or its own state dict loaded again: other tensors or versions,
                # the same values; without its graphs it could not compute them again
                self._cached_key = key
                return self._cached
        was = self.training
        self.eval()
        with torch.no_grad():
            u, i = self._checked_embeddings(self.embeddings())
        out = (u.detach().float().contiguous(), i.detach().float().contiguous())
        if was:
            self.train(True)  # parameters may still change: do not keep the cache
        else:
            self._cached, self._cached_key = out, self._weights_key()
        return out

    def _weights_key(self) -> tuple:
        """Identity and in-place version of every parameter and buffer: eval mode keeps the embeddings cached,
        and ``load_state_dict`` or an optimizer step taken in eval mode changes the weights without ``train()``
        (the scores then came from the old weights, silently)."""
        # inference tensors (made under torch.inference_mode) have no version counter; .double(), .to(device) and
        # `p.data = other` swap a parameter's data without touching its version: dtype, device and the data's
        # address are part of the key. (An in-place edit through `p.data` leaves no trace but the values.)
        return tuple((id(t), -1 if t.is_inference() else t._version, t.dtype, t.device, _data_address(t))
                     for t in chain(self.parameters(), self.buffers()))

    def _checked_embeddings(self, out: Any) -> tuple[Tensor, Tensor]:
        """``embeddings()``'s result if it keeps the contract (two floating tensors ``[n_users, d]`` and
        ``[n_items, d]``), else a ConfigError naming the class: a plugin's mistake surfaced as a torch shape
        error inside the evaluator, or an AttributeError for numpy arrays."""
        def shape(x: Any) -> str:
            return f"{type(x).__name__} of shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__

        ok = isinstance(out, (tuple, list)) and len(out) == 2 and all(
            isinstance(x, Tensor) and x.dim() == 2 and x.is_floating_point() for x in out)
        if ok:
            u, i = out
            ok = u.shape[0] == self.n_users and i.shape[0] == self.n_items and u.shape[1] == i.shape[1]
        if not ok:
            got = f"({', '.join(shape(x) for x in out)})" if isinstance(out, (tuple, list)) else shape(out)
            raise ConfigError(f"{type(self).__name__}.embeddings() must return two floating tensors of shapes "
                              f"[n_users, d] = [{self.n_users}, d] and [n_items, d] = [{self.n_items}, d]; got "
                              f"{got}")
        return out[0], out[1]

    def _weights_digest(self) -> str:
        """A content hash of every parameter and buffer (names, dtypes, shapes and bytes)."""
        h = hashlib.sha256()
        for name, t in chain(self.named_parameters(), self.named_buffers()):
            t = t.detach().cpu()
            h.update(f"{name} {t.dtype} {tuple(t.shape)};".encode())
            # a graph buffer (register_fixed) is sparse CSR, whose bytes are its three arrays
            parts = (t.crow_indices(), t.col_indices(), t.values()) if t.layout == torch.sparse_csr else (t,)
            for part in parts:
                h.update(part.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def score(self, users: Tensor | np.ndarray | list[int], items: Tensor | np.ndarray | None = None) -> Tensor:
        """Scores ``[len(users), n_items]`` (or ``[len(users), len(items)]`` when items are given).

        ``users`` and ``items`` are 1-D sequences of internal integer indices (``0..n_users-1``,
        ``0..n_items-1``); a model does not know the dataset's raw ids: map them with ``dataset.user_index`` /
        ``dataset.item_index``. The scores are the model's as they are (NaN included); :meth:`recommend`
        refuses NaN ones.
        """
        u_emb, i_emb = self.final_embeddings()
        users = torch.as_tensor(_index_array(users, self.n_users, "user"), dtype=torch.long)
        if items is not None:
            i_emb = i_emb[torch.as_tensor(_index_array(items, self.n_items, "item"), dtype=torch.long)]
        return u_emb[users] @ i_emb.t()

    def seen_items(self, user: int) -> np.ndarray:
        """The items ``user`` (an internal index) has in the training matrix."""
        user = _as_index(user, self.n_users, "user")  # -1 read an empty row, n_users a bare IndexError
        if self._train_csr is None:
            return np.zeros(0, dtype=np.int64)
        m = self._train_csr
        return m.indices[m.indptr[user]:m.indptr[user + 1]].astype(np.int64)

    def recommend(self, user: int, k: int = 10, remove_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` internal item ids and their scores for one internal user id.

        ``user`` is an integer index ``0..n_users-1`` (Python or numpy integer); a model does not know the
        dataset's raw ids: map one with ``dataset.user_index(raw_id)`` and results back with
        ``dataset.item_ids[items]``. ``k`` must be >= 1; fewer come back when fewer items are left (none for a
        user who has seen them all). ``remove_seen`` leaves out the user's *training* items only (the model knows no
        other split); an exported artefact, ``recgoat recommend`` and ``recgoat serve`` leave out every split's
        by default (``recgoat export --seen``). Equal scores come in ascending item id
        (:func:`recgoat.evaluation.ranking.top_k`), as from the service; the service's faiss inner products
        round in the last bit differently from torch's, so two items whose scores differ by about float32's
        precision may come in the other order there. A model scoring any item NaN for ``user`` has no ranking
        to give: :class:`NaNScores`. Scores of ±inf rank as such (first, last).
        """
        user = _as_index(user, self.n_users, "user")
        k = _as_count(k, "k")
        if not isinstance(remove_seen, (bool, np.bool_)):  # the string "False" is true: seen items were removed
            raise TypeError(f"remove_seen must be True or False, got {type(remove_seen).__name__} {remove_seen!r}")
        s = self.score([user])[0].cpu().numpy()  # .cpu(): a model moved to a GPU scores there
        nan = np.flatnonzero(np.isnan(s))
        if len(nan):  # NaN items were left out of the list (short of k), or ranked last among real scores
            raise NaNScores(f"{self.name} scores {len(nan)} of {self.n_items} items NaN for user {user} (first: "
                            f"item {nan[0]}): its embeddings hold NaN or inf (did training diverge?), so it has "
                            f"no ranking to recommend from")
        if remove_seen:
            # the unseen items are ranked, not every item with the seen ones at -inf: k was cut to the finite
            # scores, which dropped a model's own -inf items and, for each +inf one, its lowest finite one
            keep = np.ones(self.n_items, dtype=bool)
            keep[self.seen_items(user)] = False
            candidates = np.flatnonzero(keep)  # ascending ids: top_k's tie order carries over
            ids = candidates[top_k(s[candidates], k)]
        else:
            ids = top_k(s, k)  # equal scores by ascending item id, as the serving index orders them
        return ids, s[ids]

    # ----------------------------------------------------------------- training entry point
    def fit(self, dataset: Dataset, train_config: TrainConfig | dict[str, Any] | None = None,
            features: Features | None = None, run_dir: str | Path | None = None, **kw: Any) -> dict[str, Any]:
        """Train with the shared :class:`~recgoat.training.Trainer` (early stopping on validation)."""
        from recgoat.training.trainer import Trainer, TrainConfig

        # checked before prepare: a refused config must not leave the model prepared on the features given
        cfg = train_config if train_config is not None else TrainConfig()
        if isinstance(cfg, dict):
            try:
                cfg = TrainConfig(**cfg)
            except ValidationError as e:  # pydantic's multi-line report: one line naming the key, as for models
                from recgoat.config import format_validation_error

                raise ConfigError(format_validation_error(e, prefix="train_config", model=TrainConfig)) from None
        if not isinstance(cfg, TrainConfig):  # a string or a number failed deep in the trainer (no .num_threads)
            raise TypeError(f"train_config must be a TrainConfig, a dict of its keys or None, got "
                            f"{type(cfg).__name__} {cfg!r}")
        # features given to a model prepared with others were silently ignored: it is prepared again with them
        digests = feature_digests(features, self.read_dims()) if features is not None else None
        if not self._prepared or (digests is not None and digests != self.feature_digests):
            self._known_digests = (features, digests) if digests is not None else None  # hashed once, here
            try:
                self.prepare(dataset, features)
            finally:
                self._known_digests = None
        return Trainer(cfg, run_dir=run_dir, **kw).fit(self, dataset)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` + ``weights.safetensors`` (parameters, final embeddings, train matrix).

        Everything is built and checked before either file is touched, and both are written beside their
        final names and renamed into place only once both are complete: a failed save (a ``summary`` value
        JSON cannot encode, a full disk) leaves a model already saved in ``path`` loadable. Before, the new
        weights replaced the old ones first, and the old ``model.json`` then failed its checksum.
        """
        path = _as_path(path)
        if path.exists() and not path.is_dir():
            raise DataError(path, "is a file, not a model folder")
        # weights load() could not restore: the saved model would be refused by every later command
        problem = _weights_not_built(self, "created after it: in prepare(), loss() or on_epoch_start()?")
        if problem:
            raise ConfigError(f"{problem}; nothing was saved")
        meta = {
            "format_version": MODEL_FORMAT_VERSION,
            "model": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "config": self.config.model_dump(mode="json"),
            "dims": self.dims,
            "summary": self.summary,
            # what prepare() was given: a loaded model is refused other features of the same shapes
            "feature_digests": (self.feature_digests if self._prepared
                                else getattr(self, "_saved_feature_digests", None)),
        }
        for key, value in meta.items():  # each field alone, so the message names the one that cannot be written
            try:
                json.dumps(value, default=_json_default)
            except (TypeError, ValueError) as e:  # an object JSON has no form for; a circular reference
                raise DataError(path / "model.json", f"cannot be written: model.{key} holds a value JSON cannot "
                                                     f"encode ({e}); nothing was saved") from None
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file among its parents, no permission
            raise DataError(path, f"cannot make the model folder there: {e.strerror or e}") from None
        u_emb, i_emb = self.final_embeddings()
        tensors = {f"param.{k}": v.detach().contiguous() for k, v in self.state_dict().items()}
        # clones: safetensors refuses tensors sharing storage (e.g. an embedding that is a parameter)
        tensors["final.user_emb"] = u_emb.clone()
        tensors["final.item_emb"] = i_emb.clone()
        if self._train_csr is not None:
            tensors["train.indptr"] = torch.from_numpy(self._train_csr.indptr.astype(np.int64))
            tensors["train.indices"] = torch.from_numpy(self._train_csr.indices.astype(np.int64))
        # the inner block renames model.json into place, the outer one then the weights: nothing is renamed
        # until both temporaries are complete (a crash between the two renames is the one window left)
        with atomic_path(path / "weights.safetensors") as weights_tmp:
            save_file(tensors, str(weights_tmp))
            meta["weights_sha256"] = sha256_file(weights_tmp)
            write_json(path / "model.json", meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """Load a saved model (the subclass is read from ``model.json``); checks version and hash.

        A folder that is incomplete, corrupt or whose ``model.json`` no longer matches its weights (an
        edited size or hyper-parameter) raises one :class:`DataError` naming the file.
        """
        path = _as_path(path)
        meta_path, weights_path = path / "model.json", path / "weights.safetensors"
        if not meta_path.is_file() or not weights_path.is_file():
            # a run folder keeps its saved model in best/ (and an artefact in model/): the path one level too high
            inner = next((path / sub for sub in ("best", "model") if (path / sub / "model.json").is_file()), None)
            hint = f"; the model saved in it is {inner}" if inner is not None else ""
            raise DataError(path, f"not a saved model folder (model.json and weights.safetensors expected){hint}")
        try:
            meta = json.loads(meta_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(meta_path, f"corrupt JSON: {e}") from None
        if not isinstance(meta, dict):
            raise DataError(meta_path, f"expected a JSON object, got {type(meta).__name__}")
        if meta.get("format_version") != MODEL_FORMAT_VERSION:
            raise DataError(meta_path, f"model format version {meta.get('format_version')} is not the "
                                       f"supported {MODEL_FORMAT_VERSION}")
        digest = sha256_file(weights_path)
        if digest != meta.get("weights_sha256"):
            raise DataError(weights_path, "checksum mismatch: the weights file is corrupt or was replaced")
        name, dims, config = meta.get("model"), meta.get("dims", {}), meta.get("config")
        sizes = {k: meta.get(k) for k in ("n_users", "n_items")}
        if not isinstance(name, str):
            raise DataError(meta_path, f"'model' must be a model name, got {name!r}")
        for key, value in sizes.items():
            if not _is_integer(value) or value < 1:
                raise DataError(meta_path, f"{key!r} must be an integer >= 1, got {value!r}")
        for key, value in (("config", config), ("dims", dims)):
            if not isinstance(value, dict):
                raise DataError(meta_path, f"{key!r} must be a JSON object, got {value!r}")
        # the name is looked up, never imported: a plugin must be installed or listed in RECGOAT_PLUGINS
        model_cls = find_model_class(name)
        if model_cls is None:
            raise DataError(meta_path, f"unknown model {name!r}; {_PLUGIN_HINT}")
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise DataError(meta_path, f"holds a {name} model, not a {cls.name}")
        retired = model_cls.Config.saved_problem(config)
        if retired:
            raise DataError(meta_path, retired)
        config = model_cls.Config.with_legacy_settings(config)
        try:
            model = model_cls(sizes["n_users"], sizes["n_items"], config, **dims)
        except ConfigError as e:
            raise DataError(meta_path, str(e)) from None
        except (TypeError, ValueError, KeyError) as e:  # dims a constructor cannot take
            raise DataError(meta_path, f"cannot build a {name} model from it: {e}") from None
        tensors = load_file(str(weights_path))
        state = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
        expected = model.state_dict()
        mismatch = sorted(set(expected) ^ set(state)) or sorted(
            k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape))
        unbuilt = sorted(set(state) - set(expected))
        if unbuilt and set(expected) <= set(state) and all(tuple(state[k].shape) == tuple(v.shape)
                                                           for k, v in expected.items()):
            # every weight __init__ makes is there, and more: a model (saved before save() refused them) that made
            # parameters outside __init__ is likelier than an edit
            raise DataError(meta_path, f"does not match {weights_path.name}: it holds parameters {_few(unbuilt)}, "
                                       f"which {name}'s __init__ does not create (created in prepare()?), so "
                                       f"this model cannot be restored: create them in __init__ and train again "
                                       f"(or, if model.json's config or dims were edited, restore them)")
        if mismatch:  # sizes, hyper-parameters or feature dimensions edited after saving
            raise DataError(meta_path, f"does not match {weights_path.name} (parameters {_few(mismatch)} "
                                       f"differ): was it edited?")
        model.load_state_dict(state, strict=True)
        u_emb, i_emb = tensors.get("final.user_emb"), tensors.get("final.item_emb")
        if u_emb is None or i_emb is None or u_emb.shape[0] != model.n_users or i_emb.shape[0] != model.n_items \
                or u_emb.shape[1:] != i_emb.shape[1:] or u_emb.dim() != 2:
            raise DataError(weights_path, "final embeddings missing or not of the saved model's sizes")
        # clones: a tensor read from the file is not 64-byte aligned, and a BLAS matrix-vector product
        # then rounds differently, so recommend() would differ from the saved model's in the last bit
        model._cached = (u_emb.clone(), i_emb.clone())
        model._cached_key = model._weights_key()
        model._saved_weights = model._weights_digest()
        if "train.indptr" in tensors:
            indptr = tensors["train.indptr"].numpy()
            indices = tensors.get("train.indices", torch.zeros(0, dtype=torch.long)).numpy()
            try:
                model._train_csr = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                                                 shape=(model.n_users, model.n_items))
                model._train_csr.check_format(full_check=True)
            except ValueError as e:
                raise DataError(weights_path, f"corrupt training matrix: {e}") from None
        summary = meta.get("summary", {})
        model.summary = summary if isinstance(summary, dict) else {}
        saved = meta.get("feature_digests")  # absent from models saved before it was recorded: not checked
        if saved is not None and not (isinstance(saved, dict) and all(isinstance(v, str) for v in saved.values())):
            raise DataError(meta_path, f"'feature_digests' must be a JSON object of strings, got {saved!r}")
        model._saved_feature_digests = saved
        model.eval()
        return model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(users={self.n_users}, items={self.n_items}, {self.config!r})"


_PREPARE_STATE = ("_prepared", "_cached", "_cached_key", "_train_csr", "feature_digests")


def _checked_prepare(prepare: Callable[..., None]) -> Callable[..., None]:
    """A subclass's ``prepare`` that puts the base state back when it raises, and, once the outermost override
    has run, refuses one that never called ``Recommender.prepare`` or made weights (:func:`_weights_not_built`).

    ``Recommender.prepare`` records the training matrix and feature digests before the subclass checks its
    features, so a refused call left a built model with the refused features' digests (saved with it: its own
    features were then refused on load) and a loaded one marked prepared, without the saved embeddings it scored
    from."""
    @functools.wraps(prepare)
    def wrapper(self: Recommender, *args: Any, **kwargs: Any) -> None:
        before = {k: self.__dict__.get(k) for k in _PREPARE_STATE}
        base_runs = self.__dict__.get("_base_prepares", 0)
        try:
            prepare(self, *args, **kwargs)
            if type(self).prepare is wrapper:  # the outermost override: the whole prepare has run
                if self.__dict__.get("_base_prepares", 0) == base_runs:
                    # without it the model has no training split: the trainer then said it was "prepared on
                    # another training split", of a model the CLI had just built from that very dataset
                    raise ConfigError(f"{self.name}: {type(self).__name__}.prepare() did not call "
                                      f"super().prepare(dataset, features), which records the training split "
                                      f"(self._train_csr) and the features' digests: call it first (docs/"
                                      f"extending.md, \"What a model implements\")")
                problem = _weights_not_built(self, "created in prepare()?")
                if problem:
                    raise ConfigError(problem)
        except BaseException:
            self.__dict__.update(before)
            raise

    return wrapper


def _record_built_state(init: Callable[..., None]) -> Callable[..., None]:
    """A subclass's ``__init__`` that records the shapes of the model's state once the outermost ``__init__``
    (the built class's own) has run: what ``load()`` rebuilds, and so all that a saved model can restore."""
    @functools.wraps(init)
    def wrapper(self: Recommender, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self).__init__ is wrapper:
            self._built_state = _state_shapes(self)

    return wrapper


def _state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor ``state_dict()`` holds, by name (what ``save()`` writes and ``load()`` expects)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _weights_not_built(model: Recommender, guess: str) -> str | None:
    """Why ``model``'s state is not the one its ``__init__`` built (None when it is), ``guess`` saying where the
    extra ones likely came from. ``load()`` rebuilds a model with ``__init__`` alone and loads the weights
    strictly: a parameter made in ``prepare`` trained and saved, and every later ``evaluate``, ``export`` and
    ``load`` then failed with "does not match weights.safetensors … was it edited?"."""
    built = model.__dict__.get("_built_state")
    if built is None:  # never recorded (a model unpickled from an older version): nothing to compare
        return None
    now = _state_shapes(model)
    added = [k for k in now if k not in built]
    gone = [k for k in built if k not in now]
    reshaped = [f"{k} {list(built[k])} → {list(now[k])}" for k in now if k in built and now[k] != built[k]]
    if not (added or gone or reshaped):
        return None
    params = dict(model.named_parameters())
    parts = []
    if added:
        kind = "parameters" if all(k in params for k in added) else "parameters or persistent buffers"
        parts.append(f"{kind} {_few(added)} are not created by __init__ ({guess})")
    if reshaped:
        parts.append(f"{_few(reshaped)} changed shape after __init__")
    if gone:
        parts.append(f"{_few(gone)} created by __init__ are gone")
    return (f"{model.name}: {'; '.join(parts)}, so a loaded model could not restore them (load() rebuilds it with "
            f"__init__ alone): create every parameter and persistent buffer in {type(model).__name__}.__init__, "
            f"with shapes from its arguments (docs/extending.md, \"What a model implements\"); a tensor rebuilt "
            f"from the data belongs in a buffer registered with persistent=False")


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + ("…" if len(names) > 3 else "")


def _as_path(path: Any) -> Path:
    """``path`` as a :class:`Path`; None or a number was pathlib's bare "expected str, bytes or os.PathLike"."""
    if not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
        raise TypeError(f"path must be a folder path (str or Path), got {type(path).__name__} {path!r}")
    return Path(path)


def _is_integer(x: Any) -> bool:
    """An integer scalar (Python, numpy, 0-d integer tensor) that is not a bool."""
    if isinstance(x, (bool, np.bool_)) or (isinstance(x, Tensor) and (x.dtype == torch.bool or x.dim() != 0)):
        return False  # a one-element tensor [3] (or [[3]]) has __index__ too: it passed as the scalar 3
    try:
        operator.index(x)
    except TypeError:
        return False
    return True


def _as_index(value: Any, n: int, kind: str) -> int:
    """``value`` as an index into ``0..n-1``: a TypeError for non-integers (raw ids, floats), a KeyError
    for integers out of range (as for an unknown id)."""
    if not _is_integer(value):
        raise TypeError(f"{kind} must be an integer {kind} index (0..{n - 1}), got {type(value).__name__} "
                        f"{value!r}; map raw ids with dataset.{kind}_index(raw_id)")
    value = operator.index(value)
    if not 0 <= value < n:
        raise KeyError(f"unknown {kind} index {value}")
    return value


def _as_count(value: Any, name: str) -> int:
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return value


def _index_array(values: Any, n: int, kind: str) -> np.ndarray:
    """``values`` as a 1-D numpy array of indices in ``0..n-1`` (checked: torch would wrap negative indices
    silently and report others as a bare IndexError, and index a block of another shape: ``score([[0, 1]])``
    was a 3-D tensor, ``score(3)`` a 1-D one)."""
    try:
        arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    except ValueError:  # numpy's "inhomogeneous shape" for a ragged nested list
        raise ValueError(f"{kind}s must be a 1-D sequence of {kind} indices, got a ragged nested "
                         f"{type(values).__name__}") from None
    if arr.size and arr.dtype.kind not in "iu":  # first: a raw id ("u1", of shape ()) is told how to map it
        got = {"b": "bool", "f": "float", "c": "complex", "U": "str", "S": "bytes"}.get(arr.dtype.kind, "object")
        raise TypeError(f"{kind}s must be integer {kind} indices (0..{n - 1}), got {got} values "
                        f"(e.g. {arr.reshape(-1)[:1].tolist()[0]!r}); map raw ids with dataset.{kind}_index(raw_id)")
    if arr.ndim != 1:
        single = f": pass [{kind}] for one {kind}" if arr.ndim == 0 else ""
        raise ValueError(f"{kind}s must be a 1-D sequence of {kind} indices, got shape {arr.shape}{single}")
    if arr.size == 0:
        return arr
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        raise KeyError(f"unknown {kind} index {lo if lo < 0 else hi} (expected 0..{n - 1})")
    # a pandas Series' values are read-only: torch.as_tensor warned "The given NumPy array is not writable"
    return arr if arr.flags.writeable else arr.copy()


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside ``recgoat.models`` from the caller's caller on: a warning
    raised in ``prepare`` then points at the user's ``build``/``fit`` line, however many model frames (a
    subclass's ``prepare``, ``_checked_prepare``) lie between."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_MODELS_DIR):
        frame, level = frame.f_back, level + 1
    return level


_MODELS_DIR = os.path.dirname(os.path.abspath(__file__))


def _data_address(t: Tensor) -> int:
    """Where ``t``'s values are (a sparse CSR buffer's: its values'); 0 on the shape-only ``meta`` device."""
    return (t if t.layout == torch.strided else t.values()).data_ptr()


def _import_all_models() -> None:
    import recgoat.models  # noqa: F401  (registers every model)


_PLUGIN_HINT = ("a plugin model needs its package installed (entry point group 'recgoat.models') or its module "
                "listed in RECGOAT_PLUGINS (see docs/extending.md)")


def find_model_class(name: str) -> type[Recommender] | None:
    """The model class registered as ``name``, looking in plugins (:mod:`recgoat.models.plugins`) only when
    recgoat's own models do not have it; None when no plugin does either."""
    _import_all_models()
    if name not in MODELS:
        from recgoat.models.plugins import discover

        discover(name)
    return MODELS.get(name)


def available_models(failures: list[str] | None = None) -> list[str]:
    """Every model name: recgoat's own, those of RECGOAT_PLUGINS' modules and installed plugins' names. A
    RECGOAT_PLUGINS module that fails to load raises its PluginError; given ``failures``, its message is
    appended there instead and the names of the others are returned."""
    _import_all_models()
    from recgoat.models.plugins import discover, plugin_names

    discover(None, failures)
    return sorted(set(MODELS) | set(plugin_names()))


def get_model_class(name: str) -> type[Recommender]:
    """The model class registered as ``name`` (a :class:`ConfigError` listing the available ones if none)."""
    cls = find_model_class(name)
    if cls is None:
        names = available_models()
        raise ConfigError(f"unknown model {name!r}; {did_you_mean(name, names, str.lower)}available: "
                          f"{', '.join(names)}; {_PLUGIN_HINT}")
    return cls
