"""User preference profiles: an LLM (or an offline template) summarises each user's history (METHOD.md §1).

Why this shape:

- **Leakage guard.** A user's history is built from the TRAINING split only (valid/test items would hand
  the model the answer); most recent first when timestamps exist, and capped by a character budget so a
  heavy user cannot overflow the model's context.
- **Two-step prompt.** First the attributes the items share, then the user's preferences along several
  dimensions with evidence; the reasoning is fenced in ``<think>`` and the result in ``<answer>``. Only
  the answer is embedded; the full response is kept in the cache for inspection.
- **Backends.** ``template`` (offline, deterministic, the default: shares of genres/categories,
  recurring brands and keywords, typical year/price — labelled template-made everywhere), ``openai``
  (any OpenAI-compatible chat-completions endpoint: vLLM, Ollama, llama.cpp server, …) and
  ``transformers`` (a local causal LM).
- **Resumable cache.** Each profile is keyed by a hash of (history, prompt, backend/model, generation
  settings, and for the ``openai`` backend the server's URL without credentials: llama.cpp serves any
  model name, so two servers must not share answers) and appended to a JSONL file with fsync as soon as
  it arrives, so an interrupted run resumes where it stopped and a re-run makes no repeated LLM calls.
  Users with the same history share one request and its answer; lines of other prompts/models/servers stay
  in the file, unused, and are counted (``cache_records_not_used``).
- **Failures.** An endpoint that is unreachable, refuses, or does not speak chat-completions stops the
  run at once (every user would fail alike). A response without a usable answer (e.g. ``<think>`` cut off
  by ``llm_max_tokens``, or an answer cut there before ``</answer>``) or a prompt too long for the model's
  context (as the server says, or a local model's position limit) concerns that user only: the others go
  on and are cached, and one :class:`ProfileError` at the end names the failed users, the endpoint and
  what to change; a re-run asks only for those users. A ``Retry-After`` from
  a rate-limited server is honoured between retries, up to ``download.MAX_RETRY_AFTER`` seconds per wait.
- **Interruption.** On Ctrl-C no new request, retry or backoff wait starts; requests already on the wire
  finish their current try and their answers are cached (a second Ctrl-C stops waiting for them).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import unicodedata
import warnings
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import httpx
import numpy as np
import pandas as pd

from recgoat.datasets import Dataset
from recgoat.errors import ConfigError, DataError, RecGOATError
from recgoat.features.device import check_device
from recgoat.features.download import (PermanentError, TransientError, call_with_retries,
                                       classify_http_error)
from recgoat.features.text import clean_column, items_without_text, missing_local_model, truncate

PROMPT_VERSION = "recgoat-profile-v1"
TEMPLATE_VERSION = "recgoat-template-v1"
TEMPLATE_LABEL = "(template-made profile, no LLM)"
EMPTY_HISTORY_ANSWER = "No training history: preferences unknown."
BACKENDS = ("template", "openai", "transformers")

SYSTEM_PROMPT = (
    "You study what a person likes from the things they chose. You reason carefully from the evidence "
    "you are given and never invent items that are not in the list."
)
USER_PROMPT = """Below are the items one user chose, most recent first, one per line:

{history}

Work in two steps.
Step 1 - Shared attributes: say what these items have in common: category or genre, function, style,
material, usage scenario and price range, wherever the items tell you.
Step 2 - Preferences: from step 1, describe this user's preferences along each dimension below, and
back each one with evidence from the list:
  a) style and aesthetics;
  b) function and usability;
  c) context and emotion (when, why, in what mood);
  d) anything else, such as loyalty to a brand or sensitivity to price.
Put your reasoning between <think> and </think>. Then give the final preference profile, at most
120 words of plain prose, between <answer> and </answer>, and write nothing after </answer>."""

_GENRE_COLS = ("genres", "categories", "category")
_KEYWORD_COLS = ("tags", "features", "keywords")
_STOP = frozenset("""a an and are as at be by for from has have in into is it its of on or that the
their this to was were with without his her he she they them you your our not but all one two new
de la le les el los del""".split())
_WORD = re.compile(r"[a-z][a-z'\-]{2,}")  # ASCII text (the common case, and the original rule)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_THINK_END = re.compile(r"</think>", re.I)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# what str.splitlines() breaks on: inside one item's line it would split the "one per line" history
_LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")
_ANSWER_CLOSED = re.compile(r"<answer>.*?</answer>", re.S | re.I)
# what OpenAI, vLLM, llama.cpp (and llama-cpp-python), TGI and Anthropic-style servers say when the prompt
# (plus max_tokens) does not fit the model's context
_CONTEXT_TOO_LONG = re.compile(
    r"maximum context length|context[ _]length[ _]exceeded|exceed\w* (?:the )?(?:available )?context"
    r"|exceed_context_size|maximum model length|(?:prompt|input)\b[^.]{0,40}\btoo long"
    r"|max_new_tokens`? must be", re.I)
_CONTEXT_STATUSES = (400, 413, 422)
CONTEXT_REASON = "prompt too long for the model's context"
PROMPT_FAILED_REASON = "the server failed on this prompt alone"
EMPTY_REASON = "the LLM's response is empty"
CUT_NOTE = "cut off at llm_max_tokens"  # in a failure's reason when the generation stopped at the token limit


@lru_cache(maxsize=1)
def _unicode_word() -> re.Pattern[str]:
    """A keyword in any script: a letter, then 2+ letters, combining marks, ``'`` or ``-`` (``_WORD`` for
    every alphabet). Marks are in (Devanagari vowel signs, Arabic harakat, the dot of a case-folded "İ"
    are not ``str.isalpha``); digits, ``_`` and numeric symbols (², ½, Ⅻ) are out, as in ``_WORD``.
    Built on first use from the BMP's character categories (~50 ms)."""
    def ranges(cats: tuple[str, ...]) -> str:
        spans: list[list[int]] = []
        for c in range(0x10000):
            if unicodedata.category(chr(c)).startswith(cats):
                if spans and spans[-1][1] == c - 1:
                    spans[-1][1] = c
                else:
                    spans.append([c, c])
        return "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in spans)

    letter = rf"(?![{ranges(('Nl', 'No'))}])[^\W\d_]"
    return re.compile(rf"{letter}(?:{letter}|[{ranges(('M',))}'\-]){{2,}}")


def keywords(text: str) -> list[str]:
    """The sorted distinct keywords of case-folded, NFC text, stop words out."""
    # ASCII text keeps the original, faster rule (identical output for it)
    words = _WORD.findall(text) if text.isascii() else _unicode_word().findall(text)
    return sorted({w for w in words if w not in _STOP})


class ProfileError(RecGOATError):
    """The LLM backend could not produce profiles (unreachable, refusing, or answering garbage)."""


# ---------------------------------------------------------------------------------------------- history
@dataclass
class UserHistory:
    """The training-split items of one user, most recent first, within the character budget."""

    user: int
    items: list[int]
    text: str


NO_TEXT_WHY = "a user profile written from item ids alone says nothing about the user's preferences"
NO_TEXT_FIX = "give the dataset an items file with text, e.g. by preparing it from the raw files with their metadata"


def profile_text_problem(dataset: Dataset) -> str | None:
    """Why no profile can be written for ``dataset``'s users, else None: its items have no text (no text
    columns, or every item blank in all of them), so every history would be :func:`item_briefs`' ``item <id>``
    placeholders, and the profiles, the profile branch and the user-user graph built on them would be noise.
    Single items without text, in a dataset that has text, keep their placeholder."""
    if dataset.has_text and dataset.n_items > 0:
        blank = items_without_text(dataset.items, dataset.n_items, list(dataset.text_fields))
        if blank < dataset.n_items:
            return None
        what = (f"dataset {dataset.name} has no item text (its text field{'s' if len(dataset.text_fields) > 1 else ''} "
                f"{', '.join(dataset.text_fields)} blank for every item)")
    else:
        what = f"dataset {dataset.name} has no item text"
    return f"{what}: {NO_TEXT_WHY}"


def item_briefs(dataset: Dataset, max_chars: int = 200) -> list[str]:
    """One short line per item for histories: title (or first text field), year, genres, brand, price."""
    n = dataset.n_items
    items = dataset.items
    if items is None:
        return [f"item {i}" for i in dataset.item_ids]
    cols = set(items.columns)
    title_col = "title" if "title" in cols else next((f for f in dataset.text_fields if f in cols), None)
    # on the items' own index: ``where`` aligns by label, and an items table that kept the index of the frame
    # it was filtered from gave NaN briefs (a TypeError in truncate) against a default one
    idx = items.index
    base = clean_column(items[title_col]) if title_col else pd.Series([""] * n, index=idx)
    base = base.where(base.str.len() > 0, pd.Series([f"item {i}" for i in dataset.item_ids], index=idx))
    out = base.copy()
    if "year" in cols and title_col == "title":
        year = clean_column(items["year"])
        has = (year.str.len() > 0) & ~base.str.contains(r"\(\d{4}\)\s*$", regex=True)
        out = out.where(~has, out + " (" + year + ")")
    for col, label in ((next((c for c in _GENRE_COLS if c in cols), None), ""), ("brand", "brand: "),
                       ("price", "price: ")):
        if col and col in cols:
            v = clean_column(items[col])
            out = out.where(v.str.len() == 0, out + " | " + label + v)
    return [truncate(t, max_chars) for t in out.tolist()]


def build_histories(dataset: Dataset, briefs: list[str], char_budget: int) -> list[UserHistory]:
    """Every user's TRAINING-split history (most recent first when timestamps exist), capped by chars."""
    train = dataset.split_frame("train")
    if "timestamp" in train.columns:
        # newest first; ties broken by item id so the order is deterministic
        train = train.sort_values(["user", "timestamp", "item"], ascending=[True, False, True], kind="stable")
    else:
        train = train.sort_values(["user"], kind="stable")
    users = train["user"].to_numpy()
    items = train["item"].to_numpy()
    bounds = np.r_[0, np.flatnonzero(np.diff(users)) + 1, len(users)]
    per_user: dict[int, np.ndarray] = {int(users[s]): items[s:e] for s, e in zip(bounds[:-1], bounds[1:]) if e > s}
    out = []
    for u in range(dataset.n_users):
        chosen, lines, used = [], [], 0
        for i in per_user.get(u, ()):
            # a line break inside a title or description (text fields may hold them) would split the item
            line = "- " + _LINE_BREAK.sub(" ", briefs[int(i)])
            if lines and used + len(line) + 1 > char_budget:
                break
            lines.append(line if used + len(line) <= char_budget else truncate(line, char_budget))
            chosen.append(int(i))
            used += len(line) + 1
        out.append(UserHistory(u, chosen, "\n".join(lines)))
    return out


def build_messages(history_text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.format(history=history_text)}]


def system_in_user_turn(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages`` with the system message's text put at the start of the first user turn, for a chat template
    that refuses the system role (Gemma 2's raises "System role not supported"): the model still reads it, first."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def extract_answer(response: str) -> tuple[str, bool]:
    """(the part to embed, whether an ``<answer>`` tag was found).

    Only the text outside ``<think>`` blocks counts: reasoning often restates the instructions ("... between
    <answer> and </answer>"), which must not be taken for the answer. A response with a ``</think>`` but no
    ``<think>`` (chat templates of reasoning models open it in the prompt) is reasoning up to that tag.
    Without the tag, that visible text is used; an empty result is an error.
    """
    visible = _THINK_END.split(_THINK.sub("", response or ""))[-1]
    m = _ANSWER.search(visible)
    if m and m.group(1).strip():
        return m.group(1).strip(), True
    rest = re.sub(r"</?(answer|think)>", "", visible, flags=re.I).strip()
    if not rest:
        raise ProfileError(f"the LLM's response has no usable answer: {response[:200]!r}")
    return rest, False


# ---------------------------------------------------------------------------------------------- backends
@dataclass
class ProfileResult:
    response: str
    answer: str
    answer_tagged: bool = True


OnResult = Callable[[UserHistory, ProfileResult], None]
OnFailure = Callable[[UserHistory, str], None]


def _raise(h: UserHistory, reason: str) -> None:
    raise ProfileError(reason)


class ProfileBackend:
    """Turns histories into profiles. ``identity`` names everything that changes the output.

    ``generate`` calls ``on_result`` per profile made and ``on_failure(history, reason)`` per user whose
    response had no usable answer (and goes on with the others); it raises for failures of the backend
    itself (endpoint unreachable, refusing).
    """

    name = "base"
    identity = "base"

    def describe(self) -> str:
        """Where the profiles come from, for error messages."""
        return self.identity

    def generate(self, histories: list[UserHistory], on_result: OnResult,
                 on_failure: OnFailure = _raise) -> None:
        raise NotImplementedError

    @staticmethod
    def deliver(h: UserHistory, response: str, on_result: OnResult, on_failure: OnFailure,
                note: str = "", cut: bool = False) -> None:
        """Extract the answer from ``response`` and pass it on, or report the user as failed. ``cut``: the
        generation stopped at the token limit, so an answer not closed by ``</answer>`` is a fragment."""
        # a lone surrogate (JSON "\ud83c" from a server that split an emoji between tokens) cannot be
        # written as UTF-8: it would crash the cache append, and the embedder, mid-run
        response = response.encode("utf-8", "replace").decode("utf-8")
        if not response.strip():  # told apart from a cut answer: raising llm_max_tokens does not help it
            on_failure(h, f"{EMPTY_REASON}{note}")
            return
        try:
            answer, tagged = extract_answer(response)
        except ProfileError as exc:
            on_failure(h, f"{exc}{note}")
            return
        if cut and not _ANSWER_CLOSED.search(_THINK_END.split(_THINK.sub("", response))[-1]):
            # the answer itself was cut mid-sentence: cached, it would be embedded as if whole and never asked
            # again; failed, the error says to raise llm_max_tokens
            on_failure(h, f"the answer was cut off before </answer>: {truncate(answer, 120)!r}{note}")
            return
        on_result(h, ProfileResult(response, answer, tagged))


def _prices(col: pd.Series) -> np.ndarray:
    """A price column as floats (``parse_prices``: numbers kept, "$12.99" parsed, negative or unparsable
    values NaN)."""
    from recgoat.datasets.amazon import parse_prices

    return parse_prices(col).to_numpy(np.float64)


class TemplateBackend(ProfileBackend):
    """Offline, deterministic profile from counts over the history (no LLM; labelled as such)."""

    name = "template"
    identity = f"template:{TEMPLATE_VERSION}"

    def __init__(self, dataset: Dataset):
        items = dataset.items if dataset.items is not None else pd.DataFrame(index=range(dataset.n_items))
        cols = set(items.columns)
        n = dataset.n_items
        gcol = next((c for c in _GENRE_COLS if c in cols), None)
        self.genres = [[g.strip() for g in str(v).split("|") if g.strip()] if isinstance(v, str) else []
                       for v in (items[gcol] if gcol else [None] * n)]
        self.brands = clean_column(items["brand"]).tolist() if "brand" in cols else [""] * n
        self.years = pd.to_numeric(items["year"], errors="coerce").to_numpy(float) if "year" in cols \
            else np.full(n, np.nan)
        self.prices = _prices(items["price"]) if "price" in cols else np.full(n, np.nan)
        kcols = [c for c in _KEYWORD_COLS if c in cols] or [c for c in ("title",) if c in cols]
        kw_text = pd.Series([""] * n, index=items.index)
        for c in kcols:
            # NFC first: a decomposed "é" (e + U+0301) must give the same keyword as a composed one;
            # casefold, not lower: "Straße" and "STRASSE" are one keyword
            kw_text = kw_text + " " + clean_column(items[c]).str.normalize("NFC").str.casefold() \
                .str.replace("\u2019", "'", regex=False)  # typographic apostrophe: Schindler’s = Schindler's
        self.keywords = [keywords(t) for t in kw_text]
        self.titles = item_briefs(dataset, max_chars=80)
        self.kw_source = kcols

    def material(self, h: UserHistory) -> str:
        """What the template reads beyond the history text (its cache key must cover it)."""
        return json.dumps([[self.genres[i], self.brands[i], self.years[i] if np.isfinite(self.years[i]) else None,
                            self.prices[i] if np.isfinite(self.prices[i]) else None, self.keywords[i]]
                           for i in h.items])

    def profile(self, h: UserHistory) -> ProfileResult:
        n = len(h.items)
        if n == 0:
            return ProfileResult(f"{TEMPLATE_LABEL} <answer>{EMPTY_HISTORY_ANSWER}</answer>",
                                 f"{TEMPLATE_LABEL} {EMPTY_HISTORY_ANSWER}")
        parts = []
        genres = Counter(g for i in h.items for g in self.genres[i])
        if genres:
            top = sorted(genres.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            parts.append("Favourite genres/categories: " + ", ".join(f"{g} ({100 * c / n:.0f}% of items)"
                                                                     for g, c in top) + ".")
        brands = Counter(b for i in h.items if (b := self.brands[i]))
        rec_brands = [(b, c) for b, c in sorted(brands.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 2][:4]
        if rec_brands:
            parts.append("Recurring brands: " + ", ".join(f"{b} ({c} items)" for b, c in rec_brands) + ".")
        kws = Counter(w for i in h.items for w in self.keywords[i])
        rec_kws = [w for w, c in sorted(kws.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 2][:8]
        if rec_kws:
            parts.append("Recurring keywords: " + ", ".join(rec_kws) + ".")
        years = self.years[h.items]
        years = years[np.isfinite(years)]
        if len(years):
            lo, hi = np.percentile(years, [25, 75])
            parts.append(f"Typical year: {np.median(years):.0f} (middle half {lo:.0f}-{hi:.0f}).")
        prices = self.prices[h.items]
        prices = prices[np.isfinite(prices)]
        if len(prices):
            parts.append(f"Typical price: {np.median(prices):.2f}.")
        parts.append("Recent choices: " + "; ".join(self.titles[i] for i in h.items[:5]) + ".")
        answer = f"{TEMPLATE_LABEL} " + " ".join(parts)
        response = (f"<think>{TEMPLATE_LABEL} Counted over the user's {n} most recent training items "
                    f"(within the character budget); keywords from {', '.join(self.kw_source) or 'nothing'}."
                    f"</think><answer>{answer}</answer>")
        return ProfileResult(response, answer)

    def generate(self, histories, on_result, on_failure=_raise):
        for h in histories:
            on_result(h, self.profile(h))


_STATUS_HINTS = {
    400: "; if the prompt is too long for the model's context, lower profile_char_budget (--char-budget) "
         "or llm_max_tokens",
    401: "; check the API key (llm_api_key_env names the environment variable holding it)",
    403: "; check the API key (llm_api_key_env names the environment variable holding it)",
    404: "; check llm_base_url (the server's /v1 URL) and llm_model (a name the server serves)",
    413: "; the prompt is too large: lower profile_char_budget (--char-budget)",
}


class ContextLengthError(ProfileError):
    """The server refused ONE prompt as too long for the model's context: that user fails, the others go on."""


class _PromptTooLong(PermanentError):
    """Inside the retry loop: a context-length refusal (never retried, like any 4xx)."""


class _Stopped(Exception):
    """The run stopped (Ctrl-C, another request's endpoint failure) while this request waited to retry."""


@dataclass
class _PromptFailed:
    """A request that failed after its retries (a 5xx, a timeout, a malformed answer) while the endpoint
    answered other users' prompts: that user's failure, not the run's."""

    error: ProfileError


# per worker thread of OpenAIBackend.generate: the backoff wait of its run (thread-local, so that
# ``complete`` keeps its signature for subclasses that override it)
_worker = threading.local()


def endpoint_of(url: httpx.URL) -> str:
    """``url`` as it names a server in cache keys and messages: no ``user:password``, query or fragment
    (they may carry credentials), the scheme's default port left out, no trailing slash."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    port = "" if url.port in (None, {"http": 80, "https": 443}.get(url.scheme)) else f":{url.port}"
    return f"{url.scheme}://{host}{port}{url.path.rstrip('/')}"


def chat_url(base_url: str) -> str:
    """The chat-completions URL of an ``llm_base_url`` (``…/v1`` or the full ``…/v1/chat/completions``)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def endpoint_key(base_url: str | None) -> str:
    """The endpoint an :class:`OpenAIBackend` on ``llm_base_url`` names in its cache key (the text itself
    when it is no URL: the backend refuses it with its own message)."""
    try:
        return endpoint_of(httpx.URL(chat_url(str(base_url))))
    except (httpx.InvalidURL, TypeError, ValueError):
        return str(base_url)


def _server_says(resp: httpx.Response, redact: Callable[[str], str] = lambda t: t) -> str:
    """The error message in a refused request's body, on one line: `` (server: ...)`` or ``""``. ``redact``
    runs before the cut to 240 characters: a key cut in two would no longer be found and half of it shown."""
    try:
        body: Any = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") or err.get("detail") or err if isinstance(err, dict) else err
    except (ValueError, UnicodeDecodeError):
        msg = resp.text
    msg = " ".join(redact(str(msg)).split())
    return f" (server: {truncate(msg, 240)})" if msg else ""


class OpenAIBackend(ProfileBackend):
    """Any OpenAI-compatible ``/chat/completions`` endpoint, with bounded concurrency and retries."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 timeout: float = 120.0, retries: int = 3, backoff: float = 1.0, max_tokens: int = 512,
                 temperature: float = 0.0):
        if not base_url:
            raise ConfigError("the openai profile backend needs llm_base_url (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ConfigError("the openai profile backend needs llm_model (the served model's name)")
        self.url = chat_url(base_url)
        parsed = httpx.URL(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            # else every request fails alike (UnsupportedProtocol), retried with backoff before the error
            raise ConfigError(f"llm_base_url {base_url!r} is not an http(s) URL with a host; expected e.g. "
                              f"http://127.0.0.1:8000/v1")
        self.endpoint = endpoint_of(parsed)  # shown in messages and part of the cache key: never a password
        self.model = model
        self.headers = {"Content-Type": "application/json"}
        self._key = ""
        if api_key_env:
            if not _ENV_NAME.fullmatch(api_key_env):
                # most likely the key itself was passed: never echo it into a terminal or a CI log
                raise ConfigError("llm_api_key_env must be the NAME of an environment variable holding the API "
                                  "key (e.g. MY_LLM_KEY), not the key itself; the value given is not a variable "
                                  "name, so it is not shown")
            # a key read from a file often ends in a line break, which no HTTP header may carry
            key = os.environ.get(api_key_env, "").strip()
            if not key:
                raise ConfigError(f"environment variable {api_key_env} (llm_api_key_env) is not set or empty")
            if not (key.isascii() and key.isprintable()):
                # httpx would reject the header with the key's value in its message (and so in ours)
                raise ConfigError(f"the API key in environment variable {api_key_env} holds characters an HTTP "
                                  f"header cannot carry (a control or non-ASCII character); its value is not shown")
            self._key = key
            self.headers["Authorization"] = f"Bearer {key}"
        self.concurrency = max(1, int(concurrency))
        self.timeout, self.retries, self.backoff = float(timeout), max(0, int(retries)), float(backoff)
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)
        # the endpoint is in the cache key: llama.cpp serves any model name, so without it a second server
        # would silently get the first one's answers (never the API key: it does not change the answer)
        self.identity = (f"openai:{model}:max_tokens={self.max_tokens}:temperature={self.temperature}"
                         f":endpoint={self.endpoint}")

    def describe(self) -> str:
        return f"model {self.model!r} at {self.endpoint}"

    def _redact(self, text: str) -> str:
        """``text`` without the API key (a server may echo it in an error body)."""
        return text.replace(self._key, "***") if self._key else text

    def payload(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The chat-completions request body for one prompt."""
        return {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature}

    def complete(self, client: httpx.Client, messages: list[dict[str, str]]) -> tuple[str, str | None]:
        """(message content, finish_reason) of one chat completion; raises :class:`ContextLengthError` when
        the server says the prompt is too long for the model's context and :class:`ProfileError` when the
        endpoint fails. Empty content is returned, not retried: at a fixed temperature the model would
        answer the same (a reasoning model whose thinking used up max_tokens gives no content). Waits
        between retries with ``_worker.pause`` where ``generate`` set one (a stopping run cuts it short)."""
        payload = self.payload(messages)

        def once() -> tuple[str, str | None]:
            try:
                resp = client.post(self.url, json=payload, headers=self.headers, timeout=self.timeout)
                resp.raise_for_status()
            except httpx.HTTPStatusError as exc:
                # the server's own words ("model `x` does not exist", "exceeds the context size") say what to fix
                err, code = classify_http_error(exc), exc.response.status_code
                # redacted here, not only in the final message: these errors are its __cause__, and a
                # traceback shows the whole chain
                says = _server_says(exc.response, self._redact)
                if code in _CONTEXT_STATUSES and _CONTEXT_TOO_LONG.search(exc.response.text):
                    raise _PromptTooLong(f"{err}{says}") from exc
                # a rate-limited (429) or overloaded (503) server says when to come back: classify_http_error
                # keeps its Retry-After on the error, and call_with_retries waits that long (bounded)
                wait = getattr(err, "retry_after", None)
                msg = f"{err}{says}{f' (Retry-After: {wait:g} s)' if wait is not None else ''}" \
                      f"{_STATUS_HINTS.get(code, '')}"
                raise (TransientError(msg, retry_after=wait) if isinstance(err, TransientError)
                       else type(err)(msg)) from exc
            except httpx.HTTPError as exc:
                err = classify_http_error(exc)
                if isinstance(exc, httpx.TimeoutException):
                    err = type(err)(f"{err} (no answer within llm_timeout={self.timeout:g} s; raise it for a "
                                    f"slow model)")
                raise err from exc
            try:
                choice = resp.json()["choices"][0]
                content = choice["message"].get("content")
                finish = choice.get("finish_reason")
                if isinstance(content, list):  # content parts, as the chat-completions spec allows
                    content = "".join(p["text"] for p in content
                                      if isinstance(p, dict) and isinstance(p.get("text"), str))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                raise TransientError(f"malformed answer (not a chat-completions JSON): "
                                     f"{self._redact(resp.text)[:120]!r}") from exc
            if content is not None and not isinstance(content, str):
                raise TransientError(f"malformed answer: message content is {type(content).__name__}")
            return content or "", finish if isinstance(finish, str) else None

        try:
            return call_with_retries(once, self.retries, self.backoff, sleep=getattr(_worker, "pause", time.sleep))
        except TransientError as exc:
            tries = self.retries + 1
            raise ProfileError(self._redact(f"LLM endpoint {self.endpoint} failed after {tries} "
                                            f"{'try' if tries == 1 else 'tries'}: {exc}")) from exc
        except _PromptTooLong as exc:
            raise ContextLengthError(self._redact(f"{CONTEXT_REASON}: {self.endpoint} refused the request: {exc}")) \
                from exc
        except PermanentError as exc:
            raise ProfileError(self._redact(f"LLM endpoint {self.endpoint} refused the request: {exc}")) from exc

    def _deliver(self, h: UserHistory, got: tuple[str, str | None], on_result: OnResult,
                 on_failure: OnFailure) -> None:
        response, finish = got
        # the finish reason is said for every failure: "stop" tells the user the token limit was not the cause
        note = f" (finish_reason={finish!r}: {CUT_NOTE}={self.max_tokens})" if finish == "length" else \
            f" (finish_reason={finish!r})" if finish is not None else ""
        self.deliver(h, response, on_result, on_failure, note, cut=finish == "length")

    def generate(self, histories, on_result, on_failure=_raise):
        # set by Ctrl-C, an error in a callback or the first endpoint failure: from then on no request, retry
        # or backoff wait starts (a sleeping retry wakes at once)
        stop = threading.Event()

        def pause(seconds: float) -> None:
            if stop.wait(seconds):
                raise _Stopped

        # a request failing after its retries while others are answered is its prompt's failure (a prompt the
        # server always answers with a 500 stopped every run, naming no user); failures in a row beyond the
        # requests in flight mean the endpoint itself went down: the run stops with its error
        answered = threading.Event()
        lock = threading.Lock()
        in_a_row = [0]

        def prompt_only(exc: ProfileError) -> bool:
            if not isinstance(exc.__cause__, TransientError) or not answered.is_set():
                return False
            with lock:
                in_a_row[0] += 1
                return in_a_row[0] <= self.concurrency + 1

        def task(client: httpx.Client, h: UserHistory
                 ) -> tuple[str, str | None] | ContextLengthError | _PromptFailed | None:
            if stop.is_set():
                return None
            _worker.pause = pause
            try:
                got = self.complete(client, build_messages(h.text))
            except ContextLengthError as exc:
                return exc  # this user's prompt only: the others go on
            except _Stopped:
                return None
            except ProfileError as exc:
                if prompt_only(exc):
                    return _PromptFailed(exc)
                stop.set()
                raise
            except BaseException:
                stop.set()
                raise
            with lock:
                in_a_row[0] = 0
            answered.set()
            return got

        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        pending: dict[Future, UserHistory] = {}
        abandon = False
        with httpx.Client(limits=httpx.Limits(max_connections=self.concurrency)) as client:
            try:
                for h in histories:  # inside the try: a Ctrl-C while submitting thousands is handled too
                    pending[pool.submit(task, client, h)] = h
                # as_completed registers with every future once; wait(FIRST_COMPLETED) in a loop rescans all
                # pending futures per answer, quadratic in users (minutes of overhead for 20k users)
                for fut in as_completed(list(pending)):
                    h = pending.pop(fut)
                    got = fut.result()  # raises ProfileError: already finished ones are saved
                    if isinstance(got, ContextLengthError):
                        on_failure(h, f"{got} (history: {len(h.text)} characters)")
                    elif isinstance(got, _PromptFailed):
                        on_failure(h, f"{PROMPT_FAILED_REASON}: {got.error}")
                    elif got is not None:
                        self._deliver(h, got, on_result, on_failure)
            except BaseException:
                stop.set()
                for fut in pending:
                    fut.cancel()
                try:
                    # requests on the wire finish their current try (no retry: stop is set); keep their
                    # answers, they cost LLM time
                    wait(pending)
                except KeyboardInterrupt:
                    abandon = True  # a second Ctrl-C: stop waiting for them
                    raise
                for fut, h in pending.items():
                    got = None if fut.cancelled() or fut.exception() is not None else fut.result()
                    if isinstance(got, tuple):
                        self._deliver(h, got, on_result, lambda *_: None)
                raise
            finally:
                pool.shutdown(wait=not abandon, cancel_futures=True)


# how the transformers backend's prompt reaches its model (TransformersBackend._prompt_form)
CHAT, SYSTEM_IN_USER_TURN, PLAIN_TEXT = "chat template", "chat template, system message in the user turn", "plain text"


class TransformersBackend(ProfileBackend):
    """A local causal LM through ``transformers`` (a folder, a hub name, or a ``.gguf`` file).

    ``batch_size`` prompts are generated together, left-padded (``llm_concurrency``: the prompts in flight,
    as for the ``openai`` backend). Batching is what makes a local model usable for thousands of users: one
    decoding step costs about the same for 8 prompts as for 1 while the weights dominate the memory traffic.
    Prompts are grouped by length so that little of a batch is padding; each prompt keeps the token ids it
    has alone, and with greedy decoding its answer is the one it gets alone (up to floating-point rounding in
    the differently shaped products, which can flip a near-tie between two tokens).
    """

    name = "transformers"

    def __init__(self, model: str, device: str = "cpu", max_new_tokens: int = 512, temperature: float = 0.0,
                 batch_size: int = 4):
        if not model:
            raise ConfigError("the transformers profile backend needs llm_model (a local path or model name)")
        if int(batch_size) < 1:
            raise ConfigError(f"the transformers profile backend needs a batch size (llm_concurrency) >= 1, "
                              f"got {batch_size}")
        check_device(device)  # before loading: else torch fails inside .to(device) (or computes nothing: meta)
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover
            raise ConfigError("the transformers profile backend needs `pip install transformers`") from exc
        path = Path(model).expanduser()
        kwargs: dict[str, Any] = {}
        source = model
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ConfigError(f"GGUF file {path} not found")
            source, kwargs = str(path.parent), {"gguf_file": path.name}
        missing = missing_local_model(model, "--llm-model")
        if missing:  # else tried as a hub repo id: the hub's "Repo id must use alphanumeric chars" error
            raise ConfigError(missing)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(device).eval()
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            raise ConfigError(f"cannot load causal LM {model!r} with transformers: {exc}") from exc
        self.device, self.model_name = device, model
        self.max_new_tokens, self.temperature = int(max_new_tokens), float(temperature)
        self.batch_size = int(batch_size)
        if not getattr(self.tokenizer, "chat_template", None):
            # the prompt then goes as plain text: a base model continues it (the packaged Gemma 3 270M writes
            # "I hope this helps!" and repeats itself) and its answers are refused as cut at llm_max_tokens
            warnings.warn(f"{model!r} has no chat template: the profile prompt goes to it as plain text, which "
                          f"only an instruction-following model answers; a base model continues it instead",
                          stacklevel=2)
        self.prompt_form = self._prompt_form()
        # not the batch size: it changes how fast, not what (see the class docstring); the prompt form does: a
        # prompt with its system message moved is another prompt, whose answers must not come from the cache
        self.identity = f"transformers:{model}:max_new_tokens={self.max_new_tokens}:temperature={self.temperature}" \
            + (":system-in-user-turn" if self.prompt_form == SYSTEM_IN_USER_TURN else "")

    def _chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        return list(ids["input_ids"])

    def _prompt_form(self) -> str:
        """How the profile prompt reaches the model, found once on a sample prompt: :data:`CHAT` (its chat
        template), :data:`SYSTEM_IN_USER_TURN` (a template that refuses the system message: merged into the user
        turn, :func:`system_in_user_turn`, warned once) or :data:`PLAIN_TEXT` (no chat template, warned above).

        Why only a template's own refusal falls back: any failure (a broken template, an older transformers
        refusing ``return_dict``) turned the prompt into plain text silently, changing what the model read and
        what was cached; any other failure is now a :class:`ConfigError` naming the model. Why once, at load: the
        form is part of ``identity``, hence of the profile cache key, which is made before any prompt."""
        if not getattr(self.tokenizer, "chat_template", None):
            return PLAIN_TEXT
        from jinja2.exceptions import TemplateError  # what a template's raise_exception() raises

        sample = build_messages("")
        try:
            self._chat_ids(sample)
            return CHAT
        except TemplateError as exc:
            refused = exc
        except Exception as exc:
            raise ConfigError(f"cannot build the profile prompt with the chat template of {self.model_name!r}: "
                              f"{type(exc).__name__}: {exc}") from exc
        try:
            self._chat_ids(system_in_user_turn(sample))
        except Exception as exc:
            raise ConfigError(f"the chat template of {self.model_name!r} refuses the profile prompt ({refused}), "
                              f"also with its system message moved into the user turn ({type(exc).__name__}: "
                              f"{exc})") from exc
        warnings.warn(f"the chat template of {self.model_name!r} refuses a system message ({refused}): the profile "
                      f"prompt's system message goes at the start of the user turn instead", stacklevel=3)
        return SYSTEM_IN_USER_TURN

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """``messages`` as the model's prompt token ids, in its prompt form (:meth:`_prompt_form`)."""
        if self.prompt_form == PLAIN_TEXT:
            return list(self.tokenizer("\n\n".join(m["content"] for m in messages) + "\n\n")["input_ids"])
        return self._chat_ids(system_in_user_turn(messages) if self.prompt_form == SYSTEM_IN_USER_TURN else messages)

    def _stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}

    def complete_batch(self, prompts: list[list[int]]) -> list[tuple[str, bool]]:
        """``(response, cut)`` for each prompt (token ids), generated together, left-padded; ``cut``: it
        stopped at ``max_new_tokens`` without an end-of-sequence token."""
        import torch

        stop = self._stop_ids()
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = min(stop) if stop else 0
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        sample = self.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=self.max_new_tokens, do_sample=sample, pad_token_id=pad,
                                      **({"temperature": self.temperature} if sample else {}))
        new = out[:, width:].cpu()
        ended = torch.isin(new, torch.tensor(sorted(stop), dtype=new.dtype))
        # a row's answer ends at its first stop token; the rows that ended earlier are padded after it
        length = torch.where(ended.any(1), ended.int().argmax(1), torch.full((len(new),), new.shape[1]))
        return [(self.tokenizer.decode(row[:n], skip_special_tokens=True), n >= self.max_new_tokens)
                for row, n in zip(new, length.tolist())]

    def complete_all(self, prompts: list[list[int]]) -> Iterator[tuple[int, str, bool]]:
        """``(index, response, cut)`` for every prompt, ``batch_size`` at a time, grouped by length so that
        little of a batch is padding; each batch's answers come as soon as it is done."""
        order = np.argsort([len(p) for p in prompts], kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, (response, cut) in zip(chunk, self.complete_batch([prompts[i] for i in chunk])):
                yield int(i), response, cut

    def describe(self) -> str:
        return f"local model {self.model_name!r} (transformers)"

    def context_limit(self) -> int | None:
        """Tokens the model reads and writes at most (its position limit), if its config says."""
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(cfg, name, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        return None

    def generate(self, histories, on_result, on_failure=_raise):
        prompts = [self._prompt_ids(build_messages(h.text)) for h in histories]
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        limit = self.context_limit()
        fits = np.ones(len(prompts), dtype=bool) if limit is None else lengths + self.max_new_tokens <= limit
        # as a server refuses them: that user fails (a shorter char budget fixes it), the others go on;
        # generated, a learned-position model fails inside torch and a RoPE model goes past what it was trained on
        for i in np.flatnonzero(~fits):
            on_failure(histories[i], f"{CONTEXT_REASON}: {lengths[i]} prompt tokens + llm_max_tokens="
                                     f"{self.max_new_tokens} > the model's {limit} (history: "
                                     f"{len(histories[i].text)} characters)")
        kept = np.flatnonzero(fits)
        note = f" ({CUT_NOTE}={self.max_new_tokens})"
        for j, response, cut in self.complete_all([prompts[i] for i in kept]):
            self.deliver(histories[kept[j]], response, on_result, on_failure, note if cut else "", cut=cut)


def make_backend(dataset: Dataset, config: Any) -> ProfileBackend:
    """The backend ``config.profile_backend`` names (config: a :class:`~recgoat.features.FeatureConfig`)."""
    kind = config.profile_backend
    if kind == "template":
        return TemplateBackend(dataset)
    if kind == "openai":
        return OpenAIBackend(config.llm_base_url, config.llm_model, config.llm_api_key_env,
                             config.llm_concurrency, config.llm_timeout, config.llm_retries,
                             config.llm_backoff, config.llm_max_tokens, config.llm_temperature)
    if kind == "transformers":
        return TransformersBackend(config.llm_model, config.device, config.llm_max_tokens, config.llm_temperature,
                                  config.llm_concurrency)
    raise ConfigError(f"unknown profile backend {kind!r}; expected one of {', '.join(BACKENDS)}")


# ---------------------------------------------------------------------------------------------- cache
class ProfileCache:
    """Append-only JSONL of profiles keyed by hash; a torn line (crash mid-write) or any other unreadable one
    is skipped, its number kept in ``unreadable_lines`` (:func:`unreadable_lines_notice` says so)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.unreadable_lines: list[int] = []  # 1-based
        if self.path.exists():
            with self.path.open("rb") as f:
                for number, raw in enumerate(f, 1):
                    if not raw.strip():  # a blank line (an edit) holds nothing to lose
                        continue
                    try:
                        rec = json.loads(raw)
                        # a hand-edited line without a text answer would crash the run (KeyError) or the
                        # embedder (None): skipped like a torn one, so that user is asked again
                        if not isinstance(rec["answer"], str):
                            raise TypeError("answer is not text")
                        self.records[rec["key"]] = rec
                    except (ValueError, KeyError, TypeError):
                        self.unreadable_lines.append(number)

    @property
    def skipped_lines(self) -> int:
        return len(self.unreadable_lines)

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, records: Iterable[dict]) -> None:
        """Append records durably (flush + fsync) after a newline if the file ends mid-line."""
        records = list(records)
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            if f.tell() > 0:
                with self.path.open("rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write(b"\n")
            for rec in records:
                f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode())
                self.records[rec["key"]] = rec
            f.flush()
            os.fsync(f.fileno())


def unreadable_lines_notice(cache: ProfileCache) -> str | None:
    """One line saying which lines of the cache file were skipped as unreadable, and what that costs; None
    when there are none. Why: they were skipped silently, and a damaged file went unnoticed."""
    lines = cache.unreadable_lines
    if not lines:
        return None
    n = len(lines)
    shown = ", ".join(map(str, lines[:5])) + (", …" if n > 5 else "")
    return (f"{cache.path}: skipped {n} unreadable line{'s' if n != 1 else ''} (line{'s' if n != 1 else ''} "
            f"{shown}: not a whole JSON profile record, e.g. cut short by a run killed mid-write); a user whose "
            f"profile was only there gets it made again, nothing else is lost")


def profile_key(backend: ProfileBackend, history: UserHistory, extra: str = "") -> str:
    h = hashlib.sha256()
    for part in (PROMPT_VERSION, SYSTEM_PROMPT, USER_PROMPT, backend.identity, history.text, extra):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _failure_kind(reason: str) -> str:
    """What a failed user's ``reason`` says went wrong: its advice in :func:`failed_users_error`."""
    for prefix, kind in ((CONTEXT_REASON, "too_long"), (PROMPT_FAILED_REASON, "server")):
        if reason.startswith(prefix):
            return kind
    if CUT_NOTE in reason:  # finish_reason "length", or a local model's generation at max_new_tokens
        return "cut"
    return "empty" if reason.startswith(EMPTY_REASON) else "other"


def failed_users_error(dataset: Dataset, backend: ProfileBackend, config: Any, cache_path: str | Path,
                       failed: list[tuple[UserHistory, str]], n_users: int, made: int) -> ProfileError:
    """One error for every user who got no profile (no usable answer, or a prompt too long for the model's
    context): how many, which, where, and what to do for each kind of failure. ``made``: the profiles this run
    got or found cached; with none, the error does not say the others are cached."""
    failed = sorted(failed, key=lambda f: f[0].user)
    ids = ", ".join(str(dataset.user_ids[h.user]) for h, _ in failed[:5]) + (", …" if len(failed) > 5 else "")
    kinds = Counter(_failure_kind(reason) for _, reason in failed)
    too_long, server = kinds["too_long"], kinds["server"]
    advice = []
    if too_long:
        advice.append(
            f"{too_long} had a {CONTEXT_REASON}: lower profile_char_budget (--char-budget, now "
            f"{config.profile_char_budget}; only users whose history is longer than the new budget are asked "
            f"again), serve the model with a larger context, or lower llm_max_tokens (now "
            f"{config.llm_max_tokens}; prompt and answer share the context, but every user is asked again).")
    if server:
        advice.append(f"{server} had {PROMPT_FAILED_REASON} (other users' prompts were answered): its log "
                      f"says why; a re-run asks them again.")
    if kinds["cut"]:
        advice.append(
            f"{kinds['cut']} {'was' if kinds['cut'] == 1 else 'were'} cut off at the token limit. Raise "
            f"llm_max_tokens (now {config.llm_max_tokens}; a reasoning model can spend it all inside <think>).")
    if kinds["empty"]:
        # content null or "" with finish_reason "stop": the model ended at once, which more tokens do not change
        log = "the server's log may say why; " if backend.name == "openai" else ""
        advice.append(f"{kinds['empty']} got an empty response, not one cut at the token limit: {log}check that "
                      f"llm_model is an instruction-following chat model.")
    if kinds["other"]:
        advice.append("Check that the model writes its profile between <answer> and </answer>.")
    cached = (f"The other profiles are cached in {cache_path} and a re-run asks only for the failed users."
              if made else f"No profile was made, so none is cached in {cache_path}: a re-run asks for them all.")
    return ProfileError(
        f"{len(failed)} of {n_users} users got no usable profile from {backend.describe()} (user ids: {ids}); "
        f"first: user {dataset.user_ids[failed[0][0].user]}: {failed[0][1]}. {cached} " + " ".join(advice))


@dataclass
class ProfileRun:
    """Answers per user (in user order) and what it took to get them."""

    answers: list[str]
    cached: int = 0
    generated: int = 0
    empty: int = 0
    untagged: int = 0
    keys_digest: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


def make_profiles(dataset: Dataset, config: Any, cache_path: str | Path,
                  on_progress: Callable[[int], None] | None = None,
                  backend: ProfileBackend | None = None,
                  on_notice: Callable[[str], None] | None = None) -> ProfileRun:
    """Profiles for every user, from the cache where possible, appending each new one as it arrives.
    ``on_notice`` is told of unreadable cache lines (:func:`unreadable_lines_notice`), before any profile is
    made; without it they are a warning."""
    if not dataset.has_split:
        raise ConfigError(f"dataset {dataset.name!r} has no train split: profiles need one (prepare it first)")
    no_text = profile_text_problem(dataset)
    if no_text is not None:
        raise DataError(None, f"{no_text}; {NO_TEXT_FIX}")
    backend = backend or make_backend(dataset, config)
    histories = build_histories(dataset, item_briefs(dataset), int(config.profile_char_budget))
    cache = ProfileCache(cache_path)
    notice = unreadable_lines_notice(cache)
    if notice:
        if on_notice is not None:
            on_notice(notice)
        else:
            warnings.warn(notice, stacklevel=2)
    extra = (lambda h: backend.material(h)) if isinstance(backend, TemplateBackend) else (lambda h: "")
    keys = [profile_key(backend, h, extra(h)) for h in histories]
    answers: list[str | None] = [None] * len(histories)
    run = ProfileRun(answers=[])
    # lines of other prompt versions, models, servers or histories: kept in the file, not used; counted so the
    # run says why a full cache still asks the LLM
    wanted = set(keys)
    unused = sum(k not in wanted for k in cache.records)
    todo = []
    # users with the same history share one prompt: asked once, they share its answer. Asked apiece, they
    # cost twice and (sampling, or a server not deterministic) got different answers, and a resumed run gave
    # them both the one cached last. The template stays as it was (deterministic, nothing to save).
    share = backend.name != "template"
    twins: dict[str, list[UserHistory]] = {}
    for h, key in zip(histories, keys):
        rec = cache.get(key)
        if rec is not None:
            answers[h.user] = rec["answer"]
            run.cached += 1
        elif not h.items and backend.name != "template":
            answers[h.user] = EMPTY_HISTORY_ANSWER
            run.empty += 1
        elif share and key in twins:
            twins[key].append(h)
        else:
            twins[key] = []
            todo.append(h)
    if on_progress and (run.cached + run.empty):
        on_progress(run.cached + run.empty)

    batch: list[dict] = []
    durable_each = backend.name != "template"  # LLM answers are costly: fsync each one

    def on_result(h: UserHistory, res: ProfileResult) -> None:
        rec = {"key": keys[h.user], "user": str(dataset.user_ids[h.user]), "backend": backend.name,
               "identity": backend.identity, "prompt_version": PROMPT_VERSION, "n_history": len(h.items),
               "answer_tagged": res.answer_tagged, "response": res.response, "answer": res.answer,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        sharing = [h, *twins.get(keys[h.user], ())]
        for t in sharing:
            answers[t.user] = res.answer
        run.generated += len(sharing)
        run.untagged += len(sharing) * int(not res.answer_tagged)
        if durable_each:
            cache.append([rec])
        else:
            batch.append(rec)
        if on_progress:
            on_progress(len(sharing))

    failed: list[tuple[UserHistory, str]] = []

    def on_failure(h: UserHistory, reason: str) -> None:
        sharing = [h, *twins.get(keys[h.user], ())]
        failed.extend((t, reason) for t in sharing)  # not cached: a re-run asks for these users again
        if on_progress:
            on_progress(len(sharing))

    try:
        backend.generate(todo, on_result, on_failure)
    finally:
        cache.append(batch)
    if failed:
        raise failed_users_error(dataset, backend, config, cache_path, failed, len(histories),
                                 run.cached + run.generated)
    run.answers = [a if a is not None else EMPTY_HISTORY_ANSWER for a in answers]
    run.keys_digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    run.stats = {"cached": run.cached, "generated": run.generated, "empty_history": run.empty,
                 "answers_without_tag": run.untagged, "torn_cache_lines": cache.skipped_lines,
                 "cache_records_not_used": unused}
    return run
