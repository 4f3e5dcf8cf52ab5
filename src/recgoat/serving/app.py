r"""The recommendation service: a FastAPI app over a loaded artefact (:mod:`recgoat.serving.artifacts`).

Endpoints (OpenAPI docs at ``/docs``):

- ``GET /recommend?user_id=&k=&exclude_seen=`` — top-K for a training user, ranking
  :math:`z_u^\top z_i` with a faiss index; seen items (the user's interactions the artefact records: all
  splits, or training only, see ``/metadata``'s ``seen``) are filtered by over-fetching.
- ``GET /similar-items?item_id=&k=`` — nearest items by cosine of item embeddings,
  :math:`\cos(z_i, z_j)`, the item itself excluded. An ID-only model (no item text or image features)
  learned nothing about an item without training interactions: such items are never listed, and one asked
  about gets an empty list with a ``note`` saying why (``training_interactions`` is 0).
- ``POST /recommend`` — a user not in training (fold-in). From liked items ``L``:
  :math:`z = \frac1{|L|}\sum_{i\in L} z_i`, one LightGCN-style propagation step from the items (exact
  for a one-layer mean aggregator, a good proxy for MF). From a profile text ``t`` (runs exported with
  text features): encode ``t`` with the run's text encoder, take the ``m`` items whose text features are
  most cosine-similar, :math:`z = \sum_j w_j z_j` with :math:`w \propto \max(\cos, 0)`. Both given:
  the mean of the two vectors. A coordinate that every training user holds at the same value (the constant
  1 of a bias written as an inner product, :math:`[p_u, 1]\cdot[q_i, b_i]`, as VBPR and MostPop do) keeps
  that value instead of the items' mean. Fold-in is a heuristic: it assumes the user vectors live in the
  item vectors' space; a model whose user side is built otherwise (user features, a learned user-only
  transform) gets a vector it never trained on.
- ``GET /users``, ``GET /users/{id}/history``, ``GET /items``, ``GET /items/{id}/image`` — what the web
  page needs; the image endpoint only serves files listed in the artefact's item table, with the content
  type their bytes show (a file that is no JPEG, PNG, GIF or WebP image is a 404 saying so).
- ``GET /health``, ``GET /metadata`` (with ``index_recall``: an approximate index's recall@10 and @100
  against exact search on the lists as served, measured at start-up); ``GET /`` is the web page
  (``/?user_id=ID`` opens that user's page).

HEAD is answered wherever GET is, OPTIONS with the methods of the path. Unknown ids are 404 (a user not in
training is served by ``POST /recommend``), bad parameters 422 (an unknown query parameter too, and integer
parameters take integer text only); every input is validated so bad input never yields a 500.
"""
from __future__ import annotations

import difflib
import json
import math
import re
import threading
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recgoat.errors import RecGOATError
from recgoat.io import is_url
from recgoat.serving.artifacts import DISPLAY_FIELDS, SEEN_CHOICES, Run, display_text
from recgoat.serving.retrieval import ItemIndex, recall_vs_exact

STATIC = Path(__file__).parent / "static"
MAX_K = 1000
MAX_ID_CHARS = 200  # query ids longer than this and than every id of the run are refused (422)
LONG_FIELDS = ("title", "overview", "description")
TEXT_NEIGHBOURS = 20  # items whose embeddings represent a profile text
RECALL_KS, RECALL_USERS = (10, 100), 200  # an approximate index's recall is measured at start-up on this sample
# an image's content type comes from its first bytes (as a browser sniffs it), not its name: a PNG saved as
# .jpg was served as image/jpeg, and a file that is no image at all as an image too
IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))
IMAGE_KINDS = "a JPEG, PNG, GIF or WebP image"


def sniff_image(head: bytes) -> str | None:
    """The content type of an image file from its first 12 bytes, or None when they are no such image's."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((media for sig, media in IMAGE_SIGNATURES if head.startswith(sig)), None)


# ------------------------------------------------------------------------------------------- schemas
class Item(BaseModel):
    item_id: str
    title: str
    score: float | None = None
    image_url: str | None = None
    details: dict[str, str] = Field(default_factory=dict, description="other display fields (genres, year…)")


class Recommendations(BaseModel):
    user_id: str | None = Field(None, description="null for a cold-start (POST) request")
    k: int
    exclude_seen: bool
    items: list[Item]


class SimilarItems(BaseModel):
    item: Item
    k: int
    training_interactions: int | None = Field(
        description="the item's interactions in the model's training data (null where the artefact does not "
                    "record them)")
    note: str | None = Field(
        description="set for an item without training interactions: an ID-only model lists no similar items "
                    "for it (it learned nothing about it); a model with item text/image features lists them "
                    "by those features")
    items: list[Item] = Field(description="an ID-only model never lists items without training interactions")


class History(BaseModel):
    user_id: str
    n_interactions: int = Field(description="the user's seen items as the artefact records them (/metadata's seen)")
    items: list[Item] = Field(description="most recent first")


class UserRow(BaseModel):
    user_id: str
    n_interactions: int = Field(description="the user's seen items as the artefact records them (/metadata's seen)")


class Users(BaseModel):
    total: int
    users: list[UserRow]


class ItemList(BaseModel):
    total: int
    items: list[Item]


class Health(BaseModel):
    status: str
    model: str
    users: int
    items: int


class Metadata(BaseModel):
    format_version: int
    created: str | None
    model: str
    dataset: str
    dataset_fingerprint: str | None
    n_users: int
    n_items: int
    embedding_dim: int
    index: str
    index_recall: dict[str, float] = Field(description=f"recall@k of the index against exact search, seen "
                                                       f"items excluded, on up to {RECALL_USERS} training users")
    has_images: bool
    has_text_encoder: bool
    text_encoder: str | None
    seen: Literal[SEEN_CHOICES] = Field(description="the interactions recorded as each user's seen history, which "
                                                    "exclude_seen leaves out and /users/{id}/history lists: all "
                                                    "(train, valid and test) or train (the training split only; "
                                                    "every artefact exported before this choice); `recgoat export "
                                                    "--seen` chooses")
    display_fields: list[str]
    summary: dict[str, Any]


class ErrorMessage(BaseModel):
    """The body of a 404 (unknown id), a 503, and of a 422 that no single field explains."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class FieldErrors(BaseModel):
    """The body of a 422 for a bad parameter or body field (FastAPI's validation error)."""

    detail: list[FieldError]


# the error bodies as sent, declared in /openapi.json (404s and POST's string 422s were undeclared)
NOT_FOUND = {404: {"model": ErrorMessage, "description": "unknown id"}}


def _integer_ids(v: Any) -> Any:
    """JSON integers in ``item_ids`` as their decimal text: catalogue ids are strings, but MovieLens-style
    ids are numbers and a client sends ``[50, 181]`` as readily as ``["50", "181"]``. Booleans and floats stay
    refused (``true`` and ``50.0`` name no item), as the strict body refuses them elsewhere."""
    if isinstance(v, list):
        return [str(i) if isinstance(i, int) and not isinstance(i, bool) else i for i in v]
    return v


class ColdStart(BaseModel):
    """A user not in training: items they liked and/or a profile text."""

    # strict: JSON true is not k=1 and "10" is not 10; a request that means something else is refused
    model_config = ConfigDict(extra="forbid", strict=True)
    item_ids: Annotated[list[str], BeforeValidator(_integer_ids)] = Field(default_factory=list, max_length=2000)
    text: str | None = Field(None, max_length=10_000, description="profile text (runs with a text encoder)")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = Field(True, description="leave out the liked items")


def fold_in_fields(has_text_encoder: bool) -> str:
    """What a cold-start body may hold, by its field names: "a profile text" alone sent clients guessing
    ``profile`` or ``profile_text`` (each a 422 "extra inputs are not permitted"), and a run without a text
    encoder was still offered a text it refuses."""
    return "liked item ids in item_ids" + (", or a profile text in text" if has_text_encoder else
                                             "; this run has no text encoder, so no profile text")


ECHO_CHARS = 200  # an error echoes at most this much of an input string (a 10,000-char text came back whole)


def _json_safe(x: Any) -> Any:
    """``x`` with non-finite floats as strings (JSON has no NaN or infinity, so echoing them would fail),
    long strings cut to :data:`ECHO_CHARS` characters and lone surrogates escaped."""
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if isinstance(x, str):
        if len(x) > ECHO_CHARS:
            x = f"{x[:ECHO_CHARS]}… ({len(x)} characters)"
        # JSON's "\ud800" parses to a lone surrogate, which the UTF-8 response body cannot hold: a 500
        return x.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(x, dict):
        return {_json_safe(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _json_content_type(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this Content-Type as JSON (``*/json`` or ``*/*+json``)."""
    subtype = (content_type or "").split(";")[0].strip().lower().partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    content_type = request.headers.get("content-type")
    if not _json_content_type(content_type) and any(e.get("loc", ())[:1] == ("body",) for e in errors):
        # FastAPI reads a body as JSON only when its Content-Type says so: `curl -d '{...}'` sends
        # application/x-www-form-urlencoded, and the JSON text came back as "Input should be a valid
        # dictionary or object to extract fields from", which named no cause
        got = f"Content-Type {_json_safe(content_type)!r}" if content_type else "no Content-Type"
        return JSONResponse(status_code=422, content={
            "detail": f"the body must be JSON sent with Content-Type: application/json; this request has {got} "
                      f"(curl: add -H 'Content-Type: application/json')"})
    # FastAPI's own handler echoes the offending input, and Python's JSON parser reads NaN, Infinity and
    # 1e400 as floats, which the echo cannot write: a 500 for bad input. Same body, made writable.
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(errors))})


class _RepeatedQuery:
    """ASGI middleware refusing a query parameter given twice (``?k=3&k=4``), which FastAPI would silently
    read as its last value: an ambiguous request gets a 422 naming the parameter, like any bad parameter."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if b"&" in query:  # the common single-parameter request costs nothing
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            seen: set[str] = set()
            repeated = next((k for k, _ in pairs if k in seen or seen.add(k)), None)
            if repeated is not None:
                error = {"type": "repeated", "loc": ["query", repeated], "msg": "Given more than once",
                         "input": [v for k, v in pairs if k == repeated][:10]}
                await JSONResponse(status_code=422, content={"detail": _json_safe([error])})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _integer_text(v: Any) -> Any:
    """Refuse query text that is not an integer as written: pydantic's lax parsing read ``k=2.0`` and ``k= 5`` as
    integers, which POST's strict body refuses (``k: 5.0``). Same error type and message as ``k=abc``."""
    if isinstance(v, str) and not re.fullmatch(r"-?[0-9]+", v):
        raise PydanticCustomError("int_parsing",
                                  "Input should be a valid integer, unable to parse string as an integer")
    return v


# integer query parameters, decimal digits only. The validator goes in the annotation, after Query(): FastAPI
# skipped it beside a Query() default, and before Query() the OpenAPI schema lost its minimum/maximum. At module
# level: FastAPI resolves the (string) annotations in the module's globals.
_INTEGER_TEXT = BeforeValidator(_integer_text)
QueryK = Annotated[int, Query(ge=1, le=MAX_K, description="number of items"), _INTEGER_TEXT]
QueryCount = Annotated[int, Query(ge=1, le=MAX_K), _INTEGER_TEXT]
QueryOffset = Annotated[int, Query(ge=0), _INTEGER_TEXT]
QueryPage = Annotated[int, Query(ge=1, le=1000), _INTEGER_TEXT]


def _known_query_only(accepted: dict[Any, tuple[str, ...]]):
    """A dependency refusing query parameters the route does not declare, which FastAPI silently ignored
    (``exclude-seen=false`` served seen items, ``top_k=3`` ten), as POST bodies refuse extra keys: a 422
    in the FieldErrors shape naming each one and the accepted names. ``accepted``: each endpoint's query
    parameter names, filled once the routes exist; a route declaring none is left alone."""

    async def check(request: Request) -> None:
        names = accepted.get(request.scope.get("endpoint"))
        if not names:
            return
        errors = []
        for key, value in request.query_params.multi_items():
            if key in names:
                continue
            near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            errors.append({"type": "extra_forbidden", "loc": ["query", key],
                           "msg": f"Unknown query parameter{hint}; accepted: {', '.join(names)}", "input": value})
        if errors:
            raise RequestValidationError(errors)

    return check


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    # a body that is not UTF-8 was FastAPI's undeclared 400 "There was an error parsing the body", naming
    # neither the body nor the problem: now the 422 that any other malformed JSON body gets
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        error = {"type": "json_invalid", "loc": ["body", cause.start], "msg": "JSON decode error", "input": {},
                 "ctx": {"error": f"the body is not valid {cause.encoding.upper()} ({cause.reason} at byte "
                                  f"{cause.start}): send JSON as UTF-8"}}
        return JSONResponse(status_code=422, content={"detail": [error]})
    return await http_exception_handler(request, exc)


class _Methods:
    """ASGI middleware for the methods FastAPI's routes leave out. HEAD is answered as GET without the body
    (HTTP requires HEAD wherever GET is; FastAPI answered 405 on every route but /health), OPTIONS with 204 and
    the methods the path allows, and a 405 names all of them in Allow (``PUT /recommend`` said ``Allow: GET``,
    as if POST were refused, because Starlette names the first route matching the path only)."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app, self.router = app, router

    def allowed(self, scope: Scope) -> set[str]:
        """The methods some route serves at this path; empty when no route matches it."""
        methods: set[str] = set()
        probe = {**scope, "method": "GET"}
        for route in self.router.routes:
            if route.matches(probe)[0] is not Match.NONE:
                methods |= getattr(route, "methods", None) or {"GET", "HEAD"}  # a Mount: the static files
        if "GET" in methods:
            methods.add("HEAD")
        return methods | {"OPTIONS"} if methods else methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method") if scope["type"] == "http" else None
        if method in (None, "GET"):  # the hot path costs nothing
            await self.app(scope, receive, send)
            return
        allowed = self.allowed(scope)
        allow_header = (b"allow", ", ".join(sorted(allowed)).encode())
        if method == "OPTIONS" and allowed:
            await Response(status_code=204, headers={"Allow": allow_header[1].decode()})(scope, receive, send)
            return
        head = method == "HEAD" and "GET" in allowed
        if head:  # the server keeps its own scope: it still knows the request is a HEAD
            scope = {**scope, "method": "GET"}

        async def send_(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405 and allowed:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, allow_header]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}  # GET's headers (Content-Length included), no body
            await send(message)

        await self.app(scope, receive, send_)


# ------------------------------------------------------------------------------------------- service
class Service:
    """Request logic on top of a :class:`Run`: indexes, display rows, fold-in."""

    def __init__(self, run: Run, index: str = "flat"):
        self.run = run
        self.index = ItemIndex(run.item_emb, index)
        # user coordinates every training user holds at one value: the 1 of the bias trick ([p_u, 1]·[q_i, b_i],
        # VBPR's, MostPop's), no preference of the user. Fold-in keeps them at that value; averaged like the
        # rest they became the basket's mean bias, which ranked the catalogue anti-popular for a niche basket.
        u = run.user_emb
        fixed = (u == u[:1]).all(axis=0) if len(u) > 1 else np.zeros(u.shape[1], bool)  # one user: nothing known
        self.fixed_user = (np.flatnonzero(fixed), u[0, fixed].copy())
        # what an approximate index loses on the lists as served: reported by /metadata and `serve`
        self.index_recall = {f"recall@{k}": 1.0 if index == "flat" else round(self._index_recall(k), 4)
                             for k in RECALL_KS}
        norms = np.linalg.norm(run.item_emb, axis=1, keepdims=True)
        unit = run.item_emb / np.maximum(norms, 1e-12)
        counts = run.item_train_counts
        # an ID-only model's embedding of an item without training interactions is its initialisation, moved
        # only as a sampled negative: such items came out "similar" to one another at cosines near 1. The
        # cosine index then holds the trained items alone (internal ids: similar_pool); a model with item
        # features embeds every item by its content, so all of them stay.
        self.similar_pool: np.ndarray | None = None
        if run.id_only and counts is not None and not counts.all():
            self.similar_pool = np.flatnonzero(counts)
            unit = unit[self.similar_pool]
        self.cosine = ItemIndex(unit, "flat") if len(unit) else None
        self.n_seen = np.diff(run.seen.indptr)
        items = run.items
        # short fields only: long descriptions would bloat every response (the CLI still shows them)
        self.fields = [c for c in DISPLAY_FIELDS if c in items.columns and c not in LONG_FIELDS]
        titles = run.titles
        images = [self._image_url(i) for i in range(run.n_items)]
        cols = {c: [display_text(v) for v in items[c].tolist()] for c in self.fields}
        # display rows built once; a request only adds scores
        self.rows = [{"item_id": run.item_ids[i], "title": titles[i], "image_url": images[i],
                      "details": {c: cols[c][i] for c in self.fields if cols[c][i]}}
                     for i in range(run.n_items)]
        # "%r" for the score: repr of a Python float is valid JSON and round-trips exactly
        self.fragments = [Item.model_construct(score=None, **row).model_dump_json().replace("%", "%%")
                          .replace('"score":null', '"score":%r', 1) for row in self.rows]
        self.titles_lower = pd.Series(titles, dtype=object).str.lower()
        self.user_series = pd.Series(run.user_ids, dtype=object)
        allowed = {rel for rel in run.meta.get("files", {}) if rel.startswith("images/")}
        self.image_files = {i: run.path / ref for i, ref in enumerate(run.image_refs)
                            if ref is not None and ref in allowed}
        self._image_types: dict[int, str | None] = {}  # sniffed on an image's first request
        self._encoder = None
        self._encoder_lock = threading.Lock()
        # one profile text at a time: the encoder's tokenizer is shared state (a Rust tokenizer used from two
        # threads meets "Already borrowed"; before TextEncoder counted tokens on its own copy, concurrent
        # requests also read texts past the model's limit), and one model call is not sped up by a second
        self._encode_lock = threading.Lock()

    def _index_recall(self, k: int) -> float:
        run = self.run
        users = np.unique(np.linspace(0, run.n_users - 1, min(RECALL_USERS, run.n_users)).astype(np.int64))
        return recall_vs_exact(self.index, ItemIndex(run.item_emb, "flat"), run.user_emb[users], k,
                               [run.seen_items(u) for u in users.tolist()])

    def _image_url(self, i: int) -> str | None:
        ref = self.run.image_refs[i]
        if ref is None:
            return None
        if is_url(ref):
            return ref
        return f"/items/{quote(self.run.item_ids[i], safe='')}/image"

    # ------------------------------------------------------------------ lookups (404 on unknown ids)
    def user(self, user_id: str, hint: str = "") -> int:
        u = self.run.user_index.get(user_id)
        if u is None:
            raise HTTPException(404, f"unknown user_id {_json_safe(user_id)!r}{hint}")
        return u

    def item(self, item_id: str) -> int:
        i = self.run.item_index.get(item_id)
        if i is None:
            raise HTTPException(404, f"unknown item_id {_json_safe(item_id)!r}")
        return i

    def recommendations_json(self, user_id: str | None, k: int, exclude_seen: bool, ids: np.ndarray,
                             scores: np.ndarray) -> bytes:
        return ('{"user_id":%s,"k":%d,"exclude_seen":%s,"items":[%s]}'
                % (json.dumps(user_id), k, "true" if exclude_seen else "false", self.scored(ids, scores))).encode()

    def scored(self, ids: np.ndarray, scores: np.ndarray) -> str:
        """JSON list body of scored items (ids ``-1`` are padding and dropped)."""
        return ",".join(self.fragments[i] % float(scores[j]) for j, i in enumerate(ids.tolist()) if i >= 0)

    def items_out(self, ids: np.ndarray, scores: np.ndarray | None = None) -> list[Item]:
        out = []
        for j, i in enumerate(ids.tolist()):
            if i < 0:
                break
            row = self.rows[i]
            out.append(Item.model_construct(score=None if scores is None else float(scores[j]), **row))
        return out

    # ------------------------------------------------------------------ requests
    def recommend(self, u: int, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        exclude = [self.run.seen_items(u)] if exclude_seen else None
        ids, scores = self.index.search(self.run.user_emb[u:u + 1], k, exclude)
        return ids[0], scores[0]

    def similar(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items nearest item ``i`` by cosine (padded with id -1): none for an item an ID-only model
        never saw in training, and never such an item (see :attr:`similar_pool`)."""
        pool = self.similar_pool
        if pool is None:
            ids, scores = self.cosine.search(self.cosine_query(i), k, [np.array([i])])
            return ids[0], scores[0]
        pos = int(np.searchsorted(pool, i))
        if self.cosine is None or pos == len(pool) or pool[pos] != i:
            return np.full(k, -1, np.int64), np.full(k, -np.inf, np.float32)
        # pool is sorted, so ties still go by ascending internal id
        ids, scores = self.cosine.search(self.cosine_query(i), k, [np.array([pos])])
        return np.where(ids[0] >= 0, pool[ids[0]], -1), scores[0]

    def training_interactions(self, i: int) -> int | None:
        counts = self.run.item_train_counts
        return None if counts is None else int(counts[i])

    def similar_note(self, i: int) -> str | None:
        """Why item ``i``'s similar items are missing or rest on content alone (None when neither)."""
        if self.training_interactions(i) != 0:
            return None
        run = self.run
        head = f"item {run.item_ids[i]!r} had no interactions in the training data"
        if run.id_only:
            return (f"{head}: the model ({run.meta.get('model')}) reads no item features and learns an item from "
                    f"its interactions alone, so its embedding says nothing about it: no similar items are listed")
        if run.item_features:
            return f"{head}: its similar items come from its {' and '.join(run.item_features)} features alone"
        return head  # what the model read is unknown (a Run built by hand)

    def image_type(self, i: int) -> str | None:
        """The content type of item ``i``'s image file by its first bytes (None: not an image it can serve),
        read once per file: the artefact's files are checksummed at load and not rewritten while served."""
        if i not in self._image_types:
            try:
                with open(self.image_files[i], "rb") as f:
                    head = f.read(12)
            except OSError:
                head = b""
            self._image_types[i] = sniff_image(head)
        return self._image_types[i]

    def cosine_query(self, i: int) -> np.ndarray:
        v = self.run.item_emb[i:i + 1]
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def encoder(self):
        with self._encoder_lock:
            if self._encoder is None:
                from recgoat.features.text import DEFAULT_TEXT_MODEL_NAME, TextEncoder

                name = (self.run.meta.get("text_encoder") or {}).get("encoder") or ""
                # the feature manifest names the packaged model "<name> (packaged …)"
                self._encoder = TextEncoder(None if name.startswith(DEFAULT_TEXT_MODEL_NAME) else name)
            return self._encoder

    def fold_in(self, items: np.ndarray, text: str | None) -> np.ndarray:
        parts = []
        if len(items):
            parts.append(self.run.item_emb[items].mean(axis=0))
        if text:
            top, w = self.text_neighbours(text)
            parts.append(w @ self.run.item_emb[top])
        z = np.mean(parts, axis=0, dtype=np.float32)
        cols, values = self.fixed_user
        z[cols] = values
        return z[None, :]

    def text_neighbours(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The items whose text features are nearest a profile text (by cosine), and their weights."""
        with self._encode_lock:
            t = self.encoder().encode([text])[0]
        feats = self.run.item_text
        sims = feats @ t / np.maximum(np.linalg.norm(feats, axis=1) * np.linalg.norm(t), 1e-12)
        top = np.argpartition(-sims, min(TEXT_NEIGHBOURS, len(sims)) - 1)[:TEXT_NEIGHBOURS]
        top = top[np.argsort(-sims[top], kind="stable")]
        w = np.maximum(sims[top], 0.0)
        w = w / w.sum() if w.sum() > 0 else np.full(len(top), 1.0 / len(top))
        return top, w.astype(np.float32)


# ------------------------------------------------------------------------------------------- app
def _warm(svc: Service) -> None:
    try:
        svc.encoder()
    except RecGOATError:
        pass  # reported as 503 on the first request that needs it


def create_app(run: Run, index: str = "flat") -> FastAPI:
    """The FastAPI app serving ``run`` (``index``: ``flat`` exact; ``hnsw``, ``hnsw-l2`` or ``ivf`` approximate)."""
    svc = Service(run, index)
    if run.has_text_encoder:  # load the text model in the background so the first profile is quick
        threading.Thread(target=_warm, args=(svc,), daemon=True).start()
    meta = run.meta
    # FastAPI's own /docs and /redoc pages load their scripts from a CDN and are blank offline;
    # fastapi-offline serves the same pages from assets packaged with it
    accepted: dict[Any, tuple[str, ...]] = {}  # endpoint -> its query parameters, filled below
    # no trailing-slash redirects: Starlette's Location header decodes the path once more, so
    # /users/%25342/history/ was sent to /users/%342/history and served user "42"'s history
    app = FastAPIOffline(title="recgoat recommendations", version=str(meta.get("format_version")),
                         description=f"{meta.get('model')} trained on {meta.get('dataset')}",
                         dependencies=[Depends(_known_query_only(accepted))], redirect_slashes=False)
    app.state.service = svc
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(_RepeatedQuery)
    app.add_middleware(_Methods, router=app.router)  # outermost: reads the routes added below at request time
    seen_doc = ("leave out the user's seen items: " + ("every interaction the dataset holds (train, valid and test)"
                if run.seen_scope == "all" else "their training interactions") + " (`recgoat export --seen`)")
    # an id of the run is never refused as too long (a 250-character id was a 422 here, a 200 from /history)
    # a 404 for an unknown user says where a new user goes (the docs named no route for them)
    cold_start_hint = f": not a user of the training data (for a new user, POST /recommend with " \
                      f"{fold_in_fields(run.has_text_encoder)})"
    max_user = max([MAX_ID_CHARS, *map(len, run.user_ids)])
    max_item = max([MAX_ID_CHARS, *map(len, run.item_ids)])

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", model=str(meta.get("model")), users=run.n_users, items=run.n_items)

    @app.get("/metadata", response_model=Metadata)
    async def metadata() -> Metadata:
        enc = (meta.get("text_encoder") or {}).get("encoder") if run.has_text_encoder else None
        return Metadata(format_version=meta["format_version"], created=meta.get("created"),
                        model=str(meta.get("model")), dataset=str(meta.get("dataset")),
                        dataset_fingerprint=meta.get("dataset_fingerprint"), n_users=run.n_users,
                        n_items=run.n_items, embedding_dim=int(run.item_emb.shape[1]), index=index,
                        index_recall=svc.index_recall,
                        has_images=bool(svc.image_files), has_text_encoder=run.has_text_encoder,
                        text_encoder=enc, seen=run.seen_scope, display_fields=["title", *svc.fields],
                        summary=meta.get("summary") or {})

    @app.get("/recommend", response_model=Recommendations, responses={
        404: {"model": ErrorMessage, "description": "unknown user_id: not a user of the training data"}})
    async def recommend(user_id: str = Query(..., min_length=1, max_length=max_user,
                                             description="a training user's id, matched as an exact string "
                                                         "(\"007\" is not \"7\")"),
                        k: QueryK = 10,
                        exclude_seen: bool = Query(True, description=seen_doc)) -> Response:
        """Top-``k`` items for a user of the training data, by the inner product of user and item embeddings;
        ``exclude_seen`` leaves out the items of their seen history as the artefact records it (``/metadata``'s
        ``seen``: ``all`` their train, valid and test interactions, ``train`` the training split only). Fewer
        than ``k`` items come back when the catalogue holds fewer (less the excluded ones).

        **Cold start**: a user id unknown to the run is a 404; for a new user, ``POST /recommend`` with items
        they liked (``item_ids``) and/or a profile text."""
        ids, scores = svc.recommend(svc.user(user_id, cold_start_hint), k, exclude_seen)
        # the hot path: JSON assembled from per-item fragments made once (same schema as Recommendations)
        return Response(svc.recommendations_json(user_id, k, exclude_seen, ids, scores),
                        media_type="application/json")

    @app.post("/recommend", response_model=Recommendations, responses={
        **NOT_FOUND, 422: {"model": FieldErrors | ErrorMessage, "description": "bad body, or nothing to fold in"},
        503: {"model": ErrorMessage, "description": "the text encoder cannot be loaded"}})
    async def recommend_cold(body: ColdStart) -> Response:
        """Top-``k`` items for a user not in the training data (cold start), folded in from items they liked
        and/or a profile text (runs exported with text features). ``item_ids`` may be JSON numbers for numeric
        ids (``[50, 181]`` is ``["50", "181"]``). Repeated ``item_ids`` count once; with
        ``exclude_seen`` the liked items are left out, and fewer than ``k`` items come back when fewer are left.

        The new user's vector is the mean of the liked items' embeddings (a text: the weighted mean of the
        items nearest it), except on coordinates every training user holds at one value (a bias written as
        ``[p_u, 1]·[q_i, b_i]``), which keep it. It approximates a trained user well for models whose user and
        item vectors share their space (MF, LightGCN); for a user side built otherwise it is a rough guess.
        """
        # each unknown id named once (a basket repeating one unknown id listed it as often)
        unknown = list(dict.fromkeys(i for i in body.item_ids if i not in run.item_index))
        if unknown:
            # an id is echoed cut short, as in a 422 (a 100,000-character id came back whole)
            raise HTTPException(404, f"unknown item_id(s): {', '.join(repr(_json_safe(i)) for i in unknown[:20])}")
        text = (body.text or "").strip()
        if text and not run.has_text_encoder:
            raise HTTPException(422, "this run has no text encoder (export it with --features to enable "
                                     "profile texts); give item_ids instead")
        if not body.item_ids and not text:
            raise HTTPException(422, f"nothing to fold in: give {fold_in_fields(run.has_text_encoder)}")
        items = np.unique(np.array([run.item_index[i] for i in body.item_ids], np.int64))
        try:
            # the text encoder is a model forward pass: off the event loop
            z = await run_in_threadpool(svc.fold_in, items, text) if text else svc.fold_in(items, None)
        except RecGOATError as e:  # the text model could not be loaded on this machine
            raise HTTPException(503, f"text encoder unavailable: {e}") from None
        ids, scores = svc.index.search(z, body.k, [items] if body.exclude_seen else None)
        return Response(svc.recommendations_json(None, body.k, body.exclude_seen, ids[0], scores[0]),
                        media_type="application/json")

    @app.get("/similar-items", response_model=SimilarItems, responses=NOT_FOUND)
    async def similar_items(item_id: str = Query(..., min_length=1, max_length=max_item), k: QueryK = 10) -> Response:
        """The ``k`` items nearest ``item_id`` by the cosine of their embeddings. ``training_interactions``: the
        item's interactions in the training data. An ID-only model (no item text or image features) learned
        nothing about an item without any: such an item gets an empty list and a ``note`` saying so, and is
        never listed for another; a model with item features lists them by those features (``note`` says so)."""
        i = svc.item(item_id)
        ids, scores = svc.similar(i, k)
        unscored = svc.fragments[i].replace('"score":%r', '"score":null', 1) % ()
        body = '{"item":%s,"k":%d,"training_interactions":%s,"note":%s,"items":[%s]}' % (
            unscored, k, json.dumps(svc.training_interactions(i)), json.dumps(svc.similar_note(i)),
            svc.scored(ids, scores))
        return Response(body.encode(), media_type="application/json")

    @app.get("/users", response_model=Users)
    async def users(offset: QueryOffset = 0, limit: QueryPage = 50,
                    q: str | None = Query(None, max_length=max_user, description="user id prefix")) -> Users:
        ids = run.user_ids
        idx = np.arange(run.n_users) if not q else np.flatnonzero(svc.user_series.str.startswith(q).to_numpy())
        page = idx[offset:offset + limit]
        return Users(total=len(idx), users=[UserRow(user_id=ids[u], n_interactions=int(svc.n_seen[u]))
                                            for u in page.tolist()])

    # :path: an id may hold "/" (the page sends it as %2F, which arrives decoded)
    @app.get("/users/{user_id:path}/history", response_model=History, responses=NOT_FOUND)
    async def history(user_id: str, n: QueryCount = 20) -> History:
        """The user's seen history as the artefact records it (``/metadata``'s ``seen``), most recent first."""
        u = svc.user(user_id)
        return History(user_id=user_id, n_interactions=int(svc.n_seen[u]),
                       items=svc.items_out(run.recent_history(u, n)))

    @app.get("/items", response_model=ItemList)
    async def items(q: str = Query("", max_length=200, description="case-insensitive title substring"),
                    limit: QueryCount = 20, offset: QueryOffset = 0) -> ItemList:
        needle = q.lower().strip()
        hits = np.flatnonzero(svc.titles_lower.str.contains(needle, regex=False).to_numpy()) if needle \
            else np.arange(run.n_items)
        # offset as in /users: a catalogue past the largest limit was listed by its total but unreachable
        return ItemList(total=len(hits), items=svc.items_out(hits[offset:offset + limit]))

    @app.get("/items/{item_id:path}/image", response_class=FileResponse,
             responses={404: {"model": ErrorMessage,
                              "description": "unknown item, or the item has no image file, or its file is no "
                                             "JPEG, PNG, GIF or WebP image"}})
    async def image(item_id: str) -> FileResponse:
        """The item's image file, with the content type its bytes show (not its name's suffix)."""
        i = svc.item(item_id)
        path = svc.image_files.get(i)
        if path is None or not path.is_file():
            raise HTTPException(404, f"item {item_id!r} has no image")
        media = svc.image_type(i)  # 12 bytes read once per file: not worth a thread
        if media is None:
            raise HTTPException(404, f"item {item_id!r} has no image to serve: its file {run.image_refs[i]} is "
                                     f"not {IMAGE_KINDS}")
        # nosniff: the type is the bytes' own, so a browser has nothing to second-guess
        return FileResponse(path, media_type=media,
                            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    accepted.update({r.endpoint: tuple(f.alias for f in r.dependant.query_params)
                     for r in app.routes if isinstance(r, APIRoute)})
    return app
