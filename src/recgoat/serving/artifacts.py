"""Model artefacts: a trained run exported as a self-describing, checksummed folder.

Serving needs no dataset, no features and no model forward pass: everything a request touches is
precomputed at export time. Scores are the shared model API's inner product
(``score(u, i) = Z_U[u] · Z_I[i]``, see :mod:`recgoat.models.base`), so the final embeddings are all a
ranking needs; the model itself is kept too (``model/``, :meth:`Recommender.save` format) so a loaded
run reproduces the in-memory model's scores exactly.

Layout::

    artifact.json          format version, created, model and dataset names, sizes, sha256 of every file
    model/                 model.json + weights.safetensors (Recommender.save, carries its own sha256); serving
                           reads which item features the model used and its training matrix from them
    embeddings.safetensors final ``user_emb`` (U×d) and ``item_emb`` (I×d), float32
    ids.json               {"users": [...], "items": [...]}: original id of each internal id
    items.parquet          item_id, display fields (title, genres, year, …), ``image`` (relative file or URL)
    history.parquet        each user's seen interactions: user, item (internal ids), timestamp, rating; which
                           ones artifact.json's ``seen`` says: ``all`` (train+valid+test, the default) or
                           ``train`` (the training split; artefacts without ``seen`` recorded only that)
    images/                local item images copied from the dataset (only files listed in items.parquet)
    text.safetensors       optional: item text features (I×Dt) when the run was exported with features

Loading (:func:`load_run`) checks the format version and every file's sha256 and refuses a folder that
is incomplete, corrupt or inconsistent with a :class:`~recgoat.errors.DataError`. Nothing is pickled:
tensors are safetensors, tables Parquet, the rest JSON.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from recgoat.errors import DataError, option
from recgoat.evaluation.ranking import SAFE_SCORE_BOUND, score_bound
from recgoat.io import (atomic_folder, check_folder_path, folder_entries, is_url, read_json, sha256_file,
                        write_json)

# still 1 with the optional ``seen`` field: an artefact without it loads as before (training history), and an
# older recgoat serves a newer one's history.parquet as recorded
ARTIFACT_FORMAT_VERSION = 1
ARTIFACT_FILE = "artifact.json"
# item columns worth showing; long free text is cut so the table stays small
DISPLAY_FIELDS = ("title", "genres", "year", "category", "categories", "brand", "overview", "description")
MAX_TEXT_CHARS = 400
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}
# files every artefact has; the manifest must list (and so checksum) each of them
REQUIRED_FILES = ("model/model.json", "model/weights.safetensors", "embeddings.safetensors", "ids.json",
                  "items.parquet", "history.parquet")
TEXT_FILE = "text.safetensors"
# which interactions history.parquet records as a user's seen items: a deployed service must not recommend what
# a user had in the validation/test splits either ("all"); "train" is what the model was evaluated against
SEEN_CHOICES = ("all", "train")
LEGACY_SEEN = "train"  # an artefact exported before the choice was recorded holds the training split
# top-level names export writes: a folder holding only these is an artefact (or one an older export left
# half-written), which --overwrite may replace; anything else in it is the user's and is never deleted
ARTEFACT_NAMES = frozenset({ARTIFACT_FILE, "model", "embeddings.safetensors", "ids.json", "items.parquet",
                            "history.parquet", "images", TEXT_FILE})


# --------------------------------------------------------------------------------------------- export
def _display_items(dataset, out: Path) -> pd.DataFrame:
    """One row per internal item: original id, short display fields, and a servable image reference. An image
    the image encoder cannot read is left out, by the encoder's own test (:func:`~recgoat.features.image.image_problem`:
    a full decode; Pillow's ``verify()`` passed a truncated JPEG, which the service then served as a broken picture)."""
    from recgoat.features.image import image_problem  # the feature stage: loaded by export only, not by serve

    table = pd.DataFrame({"item_id": [str(i) for i in dataset.item_ids]})
    src = dataset.items
    if src is not None:
        for col in DISPLAY_FIELDS:
            if col in src.columns:
                text = src[col].astype("string").fillna("").str.replace("|", ", ", regex=False)
                table[col] = text.str.slice(0, MAX_TEXT_CHARS).to_numpy(dtype=object)
    if "title" not in table.columns:
        table["title"] = table["item_id"]
    images: list[str | None] = [None] * len(table)
    unreadable: list[str] = []
    if dataset.has_images:
        (out / "images").mkdir(exist_ok=True)
        for i, ref in enumerate(dataset.image_sources()):
            if not isinstance(ref, str) or not ref:
                continue
            if is_url(ref):
                images[i] = ref  # shown by the browser directly; never fetched by the server
                continue
            path = Path(ref)
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                problem = image_problem(path)
                if problem is not None:  # served, it would be a broken picture on the page
                    unreadable.append(f"item {table['item_id'][i]}: {problem}")
                    continue
                rel = f"images/{i}{path.suffix.lower()}"
                shutil.copyfile(path, out / rel)
                images[i] = rel
    if unreadable:
        warnings.warn(f"{len(unreadable)} item image(s) could not be decoded and are left out of the artefact "
                      f"(those items are shown without a picture), e.g. {unreadable[0]}", UserWarning, stacklevel=3)
    table["image"] = pd.Series(images, dtype=object)
    return table


def display_text(value: Any) -> str:
    """A catalogue cell as shown: empty where it is missing (None, NaN, pd.NA), never "nan". A title that
    is the word "None" or "NaN" is shown as such (export writes missing cells as "")."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def display_titles(items: pd.DataFrame, item_ids: list[str]) -> list[str]:
    """The title shown for each item: its ``title``, or its id where the catalogue has none (a blank card
    or table cell otherwise; older artefacts stored a missing title as an empty string)."""
    col = items["title"].tolist() if "title" in items.columns else [None] * len(item_ids)
    return [t if t.strip() else i for t, i in zip(map(display_text, col), item_ids)]


def check_embeddings(user_emb: np.ndarray, item_emb: np.ndarray) -> str | None:
    """What makes these final embeddings unservable (None when they are fine): NaN or inf, or values so
    large that an inner product ``z_u · z_i`` overflows float32 (``|z_u · z_i| <= ‖z_u‖ ‖z_i‖``), which
    would make every score inf or NaN and the lists empty or arbitrary."""
    bound = score_bound(user_emb, item_emb)
    if bound == float("inf"):  # the bound's float64 norms of float32 values stay finite: inf means NaN/inf
        return "embeddings hold NaN or inf"
    if not bound < SAFE_SCORE_BOUND:
        return (f"embeddings so large that scores overflow float32 (largest user norm × largest item norm "
                f"= {bound:.3g}): the model diverged; retrain it with a smaller learning rate")
    return None


def check_destination(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an ``out_dir`` that export must not replace, before anything is computed or written.

    Accepted: a new folder, an empty one, or (with ``overwrite``) an existing artefact folder.
    """
    out = Path(out_dir)
    check_folder_path(out, "the artefact must go into a folder")
    here = Path.cwd()
    if Path(os.path.abspath(out)) in (here, *here.parents):
        # the new folder is renamed into place as a whole: the old one, the shell's working folder, would go
        raise DataError(out, "is the current folder (or holds it); the artefact replaces its folder as a whole: "
                             f"give a new folder, e.g. {option('--out ./artefact', './artefact')}")
    names = folder_entries(out)
    if not names:
        return  # a new or empty folder
    foreign = sorted(names - ARTEFACT_NAMES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
        raise DataError(out, f"exists and is not an artefact folder (it holds {shown}); refusing to overwrite it: "
                             f"choose a new or empty folder")
    if not overwrite:
        raise DataError(out, f"already holds an artefact; pass {option('--overwrite', 'overwrite=True')} to replace "
                             f"it")


def check_seen(seen: str) -> None:
    """Refuse a ``seen`` choice :func:`export_run` does not know (a ValueError: a caller's mistake, not data)."""
    if seen not in SEEN_CHOICES:
        raise ValueError(f"seen must be one of {', '.join(SEEN_CHOICES)}, got {seen!r}")


def export_run(model, dataset, out_dir: str | Path, features_folder: str | Path | None = None,
               overwrite: bool = False, seen: str = "all") -> Path:
    """Write a trained ``model`` and what serving needs from ``dataset`` into ``out_dir``.

    ``features_folder`` (from ``recgoat encode``) adds the item text features and the name of their
    text encoder, which enables cold-start recommendation from a profile text.

    ``seen`` chooses the interactions recorded as each user's seen history (what ``exclude_seen`` leaves
    out and ``/users/{id}/history`` lists): ``all`` (every interaction of the dataset: train, valid and
    test) or ``train`` (the training split only, as the model was evaluated).

    ``out_dir`` must be new or empty, or an artefact folder with ``overwrite``. Every input is checked
    before ``out_dir`` is touched, and the artefact is built in a temporary sibling folder that replaces
    ``out_dir`` only once complete: a failure at any point leaves an existing artefact as it was.
    """
    out = Path(out_dir)
    check_seen(seen)
    if model.n_users != dataset.n_users or model.n_items != dataset.n_items:
        raise DataError(out, f"model has {model.n_users} users × {model.n_items} items but dataset "
                             f"{dataset.name!r} has {dataset.n_users} × {dataset.n_items}: not the data it was "
                             f"trained on")
    # same sizes, other interactions (another split seed, another data version): the artefact's history, and
    # so the seen items the service leaves out, would not be the ones the model was trained on
    trained = getattr(model, "_train_csr", None)
    if trained is not None and dataset.has_split:
        moved = (trained.astype(bool) != dataset.csr("train").astype(bool)).nnz
        if moved:
            raise DataError(None, f"the model was trained on other interactions than the training split of "
                                  f"dataset {dataset.name!r} ({moved} user-item pairs differ): not the data or "
                                  f"split it was trained on")
    check_destination(out, overwrite)
    model.eval()
    u_emb, i_emb = model.final_embeddings()
    problem = check_embeddings(u_emb.detach().cpu().numpy(), i_emb.detach().cpu().numpy())
    if problem:  # the artefact would be written, then refused by every load (or served empty lists)
        raise DataError(None, f"cannot export model {model.name!r}: its final {problem}; nothing was written")
    feats = None
    if features_folder is not None:
        from recgoat.features.store import load_features, named_as_encoded

        # a benchmark cell's dataset carries its label, the features the name they were encoded under
        feats = load_features(named_as_encoded(dataset, features_folder), features_folder)
        _check_trained_text(model, feats, Path(features_folder))
    with atomic_folder(out) as tmp:
        _write_artefact(model, dataset, tmp, feats, (u_emb, i_emb), seen)
    return out


def _check_trained_text(model, feats, folder: Path) -> None:
    """Refuse item text features other than those the model was trained on (by the content digest its
    ``model.json`` records): same-shaped text re-encoded since, or another dataset's of the same name, passed
    every size check and was packaged for cold-start ranking beside a model that never read it."""
    from recgoat.models.base import feature_digests

    trained = getattr(model, "_saved_feature_digests", None) or getattr(model, "feature_digests", None) or {}
    if feats is None or feats.text is None or "text" not in trained:
        return
    now = feature_digests(feats, {"text_dim": feats.text.shape[1]}).get("text")
    if now != trained["text"]:
        raise DataError(folder, f"its text features (digest {now}) are not those model {model.name!r} was trained "
                                f"on (digest {trained['text']}): the folder was re-encoded since, or holds another "
                                f"dataset's; export with the feature folder the run was trained with, or train again")


def _write_artefact(model, dataset, out: Path, feats, embeddings: tuple[torch.Tensor, torch.Tensor],
                    seen: str = "all") -> None:
    """Every file of the artefact, ``artifact.json`` (with their checksums) last, into the empty ``out``;
    ``embeddings``: the model's final embeddings, as :func:`export_run` checked them (model in eval mode);
    ``seen``: which interactions history.parquet records (:data:`SEEN_CHOICES`)."""
    model.save(out / "model")
    u_emb, i_emb = embeddings
    save_file({"user_emb": u_emb.clone().contiguous(), "item_emb": i_emb.clone().contiguous()},
              str(out / "embeddings.safetensors"))
    write_json(out / "ids.json", {"users": [str(u) for u in dataset.user_ids],
                                  "items": [str(i) for i in dataset.item_ids]})
    _display_items(dataset, out).to_parquet(out / "items.parquet", index=False)
    # a dataset without a split is all training data: both choices record every interaction
    inter = dataset.split_frame("train") if seen == "train" and dataset.has_split else dataset.interactions
    if "timestamp" in inter.columns:
        # whole seconds are stored (older loaders read int64) and load_run orders ties by row: rows in exact
        # time order keep "most recent first" right for times within one second
        inter = inter.sort_values("timestamp", kind="stable")
    hist = pd.DataFrame({"user": inter["user"].to_numpy(np.int64), "item": inter["item"].to_numpy(np.int64)})
    hist["timestamp"] = inter["timestamp"].to_numpy(np.int64) if "timestamp" in inter.columns else 0
    if "rating" in inter.columns:
        hist["rating"] = inter["rating"].to_numpy(np.float32)
    hist.to_parquet(out / "history.parquet", index=False)

    text_model = None
    if feats is not None and feats.text is not None:
        save_file({"item_text": torch.from_numpy(np.ascontiguousarray(feats.text, np.float32))},
                  str(out / TEXT_FILE))
        man = feats.manifests.get("text", {})
        text_model = {"encoder": man.get("encoder"), "text_model": man.get("text_model")}

    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != ARTIFACT_FILE)
    write_json(out / ARTIFACT_FILE, {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model.name,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "n_users": int(dataset.n_users),
        "n_items": int(dataset.n_items),
        "embedding_dim": int(i_emb.shape[1]),
        "text_encoder": text_model,
        "seen": seen,
        "summary": model.summary,
        "files": {p.relative_to(out).as_posix(): sha256_file(p) for p in files},
    })


# --------------------------------------------------------------------------------------------- load
@dataclass
class Run:
    """A loaded artefact: embeddings, id maps, display table and seen history, all validated."""

    path: Path
    meta: dict[str, Any]
    user_emb: np.ndarray  # U×d float32
    item_emb: np.ndarray  # I×d float32
    user_ids: list[str]
    item_ids: list[str]
    items: pd.DataFrame
    history: pd.DataFrame
    seen: sp.csr_matrix  # U×I seen matrix (see seen_scope), rows sorted by time for "recent history"
    item_text: np.ndarray | None = None
    # each item's interactions in the model's training matrix (None: the artefact does not record them)
    item_train_counts: np.ndarray | None = None
    # the item feature matrices (text, image) the model read: () for an ID-only model, None when unknown
    item_features: tuple[str, ...] | None = None
    _model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {it: i for i, it in enumerate(self.item_ids)}
        col = self.items["image"].tolist() if "image" in self.items.columns else [None] * len(self.item_ids)
        self.image_refs: list[str | None] = [v if isinstance(v, str) and v else None for v in col]

    @property
    def titles(self) -> list[str]:
        """Each item's display title (its id where it has none), from the current item table."""
        return display_titles(self.items, self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def seen_scope(self) -> str:
        """Which interactions ``seen`` holds: ``all`` (train, valid and test) or ``train`` (the training split;
        every artefact exported before the choice was recorded)."""
        return self.meta.get("seen") or LEGACY_SEEN

    @property
    def id_only(self) -> bool:
        """Whether the model's item embeddings rest on interactions alone (no item text or image features): an
        item without training interactions then has the embedding it was initialised with (moved only as a
        sampled negative), which says nothing about it. False when unknown."""
        return self.item_features == ()

    @property
    def has_text_encoder(self) -> bool:
        enc = self.meta.get("text_encoder") or {}
        return self.item_text is not None and bool(enc.get("encoder"))

    @property
    def model(self):
        """The saved :class:`Recommender` itself (loaded on first use; serving does not need it)."""
        if self._model is None:
            from recgoat.models.base import Recommender

            self._model = Recommender.load(self.path / "model")
        return self._model

    def score(self, users: Any, items: Any = None) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` (``[len(users), len(items)]`` when items are given): the same float32
        product as :meth:`Recommender.score`, with its checks (1-D internal indices in range: a 2-D ``users``
        gave a 3-D tensor and a negative index silently scored the user counted from the end)."""
        from recgoat.models.base import _index_array

        user_emb, item_emb = torch.from_numpy(self.user_emb), torch.from_numpy(self.item_emb)
        users = torch.as_tensor(_index_array(users, self.n_users, "user"), dtype=torch.long)
        if items is not None:
            item_emb = item_emb[torch.as_tensor(_index_array(items, self.n_items, "item"), dtype=torch.long)]
        return user_emb[users] @ item_emb.t()

    def seen_items(self, user: int) -> np.ndarray:
        """The seen items of ``user`` (:attr:`seen_scope`'s interactions; an internal index; -1 read an empty row,
        ``n_users`` an IndexError)."""
        from recgoat.models.base import _as_index

        user = _as_index(user, self.n_users, "user")
        m = self.seen
        return m.indices[m.indptr[user]:m.indptr[user + 1]]

    def recent_history(self, user: int, n: int = 20) -> np.ndarray:
        """The user's last ``n`` (>= 0) seen items, most recent first."""
        from recgoat.models.base import _is_integer

        if not _is_integer(n) or n < 0:  # a negative n cut the |n| oldest items off instead
            raise ValueError(f"n must be an integer >= 0, got {type(n).__name__} {n!r}")
        return self.seen_items(user)[::-1][:n]

    def image_ref(self, item: int) -> str | None:
        """The item's image as listed in the item table: a file inside the artefact or a URL (or None)."""
        from recgoat.models.base import _as_index

        return self.image_refs[_as_index(item, self.n_items, "item")]  # -1 was the last item's image


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _optional_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


# what export writes into artifact.json, field by field
_META_FIELDS = {
    "created": _optional_str,
    "model": lambda v: isinstance(v, str) and bool(v),
    "dataset": lambda v: isinstance(v, str) and bool(v),
    "dataset_fingerprint": _optional_str,
    "n_users": _count,
    "n_items": _count,
    "embedding_dim": _count,
    "text_encoder": lambda v: v is None or (isinstance(v, dict) and all(map(_optional_str, v.values()))),
    "seen": lambda v: v is None or (isinstance(v, str) and v in SEEN_CHOICES),  # absent: written before it existed
    "summary": lambda v: v is None or isinstance(v, dict),
}


def verify(path: str | Path) -> dict[str, Any]:
    """Check ``artifact.json``'s format version and every listed file's sha256; return the metadata."""
    try:
        return _verify(Path(path))
    except OSError as e:  # an unreadable file or folder (permissions): name it rather than a traceback
        raise DataError(Path(e.filename or path), f"cannot be read ({e.strerror or e})") from None


def _verify(path: Path) -> dict[str, Any]:
    meta_path = path / ARTIFACT_FILE
    if not path.is_dir():
        raise DataError(path, "no such artefact folder")
    if not meta_path.exists():
        hint = " (a trainer run folder: export it first with `recgoat export RUN_DIR --out DIR`)" \
            if (path / "best").is_dir() or (path / "result.json").exists() else ""
        raise DataError(path, f"not a model artefact folder: {ARTIFACT_FILE} is missing{hint}")
    try:
        meta = read_json(meta_path)
    except ValueError as e:
        raise DataError(meta_path, f"corrupt JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != ARTIFACT_FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if isinstance(version, (int, float)) and not isinstance(version, bool) and version > ARTIFACT_FORMAT_VERSION:
            raise DataError(meta_path, f"artefact format version {version!r} was written by a newer recgoat; this "
                                       f"one reads version {ARTIFACT_FORMAT_VERSION}: upgrade recgoat to load it")
        raise DataError(meta_path, f"artefact format version {version!r} is not the supported "
                                   f"{ARTIFACT_FORMAT_VERSION}; re-export the run with this version of recgoat")
    # artifact.json is the one file without a checksum: check the fields loading and /metadata read, so an
    # edited value is refused here rather than failing deep inside int(), the app or a response schema
    wrong = [f"{key} ({meta.get(key)!r:.60})" for key, ok in _META_FIELDS.items() if not ok(meta.get(key))]
    if wrong:
        raise DataError(meta_path, f"invalid field(s): {', '.join(wrong)}; re-export the run")
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise DataError(meta_path, "lists no files")
    # a file the manifest does not list would be read unchecked: refuse rather than trust it
    unlisted = [rel for rel in REQUIRED_FILES if rel not in files]
    if (path / TEXT_FILE).exists() and TEXT_FILE not in files:
        unlisted.append(TEXT_FILE)
    if unlisted:
        raise DataError(meta_path, f"does not list {', '.join(unlisted)}: the folder was changed after export "
                                   f"or written by another tool; re-export the run")
    for rel, digest in files.items():
        f = (path / rel).resolve()
        if path.resolve() not in f.parents:
            raise DataError(meta_path, f"lists a file outside the artefact: {rel!r}")
        if not f.is_file():
            raise DataError(f, "missing: the artefact is incomplete")
        if sha256_file(f) != digest:
            raise DataError(f, "checksum mismatch: the file is corrupt or was replaced")
    return meta


def load_run(path: str | Path) -> Run:
    """Load and validate an artefact folder written by :func:`export_run`."""
    path = Path(path)
    meta = verify(path)
    n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
    # the checksums match what the manifest lists, but a folder written by another tool (or re-hashed after an
    # edit) may still hold a file of the wrong kind or shape: name it rather than a KeyError deep in here
    with _reading(path / "embeddings.safetensors"):
        emb = load_file(str(path / "embeddings.safetensors"))
        # copies: a tensor read from the file is not 64-byte aligned, and BLAS then rounds some products differently
        user_emb, item_emb = emb["user_emb"].float().numpy().copy(), emb["item_emb"].float().numpy().copy()
        if user_emb.ndim != 2 or item_emb.ndim != 2:
            raise ValueError(f"user_emb and item_emb must be matrices, got shapes {user_emb.shape}, {item_emb.shape}")
    with _reading(path / "ids.json"):
        ids = read_json(path / "ids.json")
        if not (isinstance(ids, dict) and isinstance(ids.get("users"), list) and isinstance(ids.get("items"), list)):
            raise ValueError('expected {"users": [...], "items": [...]}')
        users, items_ids = [str(u) for u in ids["users"]], [str(i) for i in ids["items"]]
        for kind, got in (("user", users), ("item", items_ids)):
            if len(set(got)) != len(got):
                dup = next(x for x, c in pd.Series(got).value_counts().items() if c > 1)
                raise ValueError(f"{kind} id {dup!r} is listed more than once")
    with _reading(path / "items.parquet"):
        items = pd.read_parquet(path / "items.parquet")
        if "title" not in items.columns:
            raise ValueError(f"no title column (columns: {', '.join(map(str, items.columns))})")
    with _reading(path / "history.parquet"):
        history = pd.read_parquet(path / "history.parquet")
        missing = [c for c in ("user", "item") if c not in history.columns]
        if missing:
            raise ValueError(f"no {' or '.join(missing)} column")
        if "timestamp" not in history.columns:
            history["timestamp"] = 0
        for c in ("user", "item", "timestamp"):
            if not pd.api.types.is_integer_dtype(history[c]):
                raise ValueError(f"column {c} holds {history[c].dtype} values, not integers")
            # a nullable integer column (Int64) passed the dtype check: a missing user or item was a bare
            # ValueError below, a missing time sorted the history arbitrarily
            if history[c].isna().any():
                raise ValueError(f"column {c} has {int(history[c].isna().sum())} missing value(s)")
            history[c] = history[c].astype(np.int64)
    problems = []
    if user_emb.shape[0] != n_users or len(users) != n_users:
        problems.append(f"{user_emb.shape[0]} user embeddings / {len(users)} user ids for {n_users} users")
    if item_emb.shape[0] != n_items or len(items_ids) != n_items or len(items) != n_items:
        problems.append(f"{item_emb.shape[0]} item embeddings / {len(items_ids)} item ids / {len(items)} item "
                        f"rows for {n_items} items")
    if user_emb.shape[1:] != item_emb.shape[1:]:
        problems.append(f"user and item embedding sizes differ ({user_emb.shape[1:]} vs {item_emb.shape[1:]})")
    else:
        problem = check_embeddings(user_emb, item_emb)
        if problem:
            problems.append(problem)
    if len(history) and (history["user"].max() >= n_users or history["item"].max() >= n_items
                         or history["user"].min() < 0 or history["item"].min() < 0):
        problems.append("history refers to ids outside the id maps")
    if problems:
        raise DataError(path, "inconsistent artefact: " + "; ".join(problems))
    # rows ordered by time so the tail of a row is the user's most recent history
    order = np.lexsort((history["timestamp"].to_numpy(), history["user"].to_numpy()))
    u = history["user"].to_numpy(np.int64)[order]
    i = history["item"].to_numpy(np.int64)[order]
    # a pair seen more than once (a dataset prepared without dedup) is one seen item, at its latest time: the
    # recent history would list it twice, and the count of seen items would overstate what is left out
    _, last = np.unique((u * n_items + i)[::-1], return_index=True)
    keep = np.sort(len(u) - 1 - last)
    u, i = u[keep], i[keep]
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
    seen = sp.csr_matrix((np.ones(len(i), np.float32), i, indptr), shape=(n_users, n_items))
    item_text = None
    if TEXT_FILE in meta["files"]:
        with _reading(path / TEXT_FILE):
            item_text = load_file(str(path / TEXT_FILE))["item_text"].float().numpy()
        if item_text.ndim != 2 or item_text.shape[0] != n_items or not np.isfinite(item_text).all():
            raise DataError(path / TEXT_FILE, f"inconsistent artefact: text features of shape {item_text.shape} "
                                              f"for {n_items} items, or not all finite")
    with _reading(path / "model" / "model.json"):
        item_features = _item_features(read_json(path / "model" / "model.json"))
    with _reading(path / "model" / "weights.safetensors"):
        train_counts = _train_counts(path / "model" / "weights.safetensors", n_items)
    if train_counts is None and meta.get("seen") == "train":  # older models: the history is the training split
        train_counts = np.bincount(seen.indices, minlength=n_items)
    return Run(path=path, meta=meta, user_emb=np.ascontiguousarray(user_emb, np.float32),
               item_emb=np.ascontiguousarray(item_emb, np.float32), user_ids=users, item_ids=items_ids,
               items=items, history=history, seen=seen, item_text=item_text, item_train_counts=train_counts,
               item_features=item_features)


def _item_features(model_meta: Any) -> tuple[str, ...]:
    """The item feature matrices (``text``, ``image``) a saved model read, from its ``model.json``: the
    ``feature_digests`` it was prepared with, or (models saved before they were recorded) its non-zero
    ``{name}_dim`` sizes. User profiles are left out: they shape no item's embedding."""
    if not isinstance(model_meta, dict):
        raise ValueError(f"expected a JSON object, got {type(model_meta).__name__}")
    digests = model_meta.get("feature_digests")
    if isinstance(digests, dict):
        return tuple(name for name in ("text", "image") if name in digests)
    dims = model_meta.get("dims") if isinstance(model_meta.get("dims"), dict) else {}
    return tuple(name for name in ("text", "image")
                 if isinstance(dims.get(f"{name}_dim"), (int, float)) and dims[f"{name}_dim"] > 0)


def _train_counts(weights: Path, n_items: int) -> np.ndarray | None:
    """Each item's interactions in the training matrix saved with the model (None when it saved none); only
    that tensor is read, not the weights."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as f:
        if "train.indices" not in f.keys():
            return None
        indices = f.get_tensor("train.indices")
    if indices.ndim != 1 or (len(indices) and (indices.min() < 0 or indices.max() >= n_items)):
        raise ValueError(f"the training matrix refers to items outside 0..{n_items - 1}")
    return np.bincount(indices.astype(np.int64), minlength=n_items)


@contextmanager
def _reading(file: Path):
    """Any failure while reading and checking ``file`` becomes one DataError naming it."""
    try:
        yield
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors, pyarrow, JSON and shape errors alike
        raise DataError(file, f"unreadable or malformed ({type(e).__name__}: {e}); re-export the run") from None
