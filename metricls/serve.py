"""The HTTP service: a FastAPI app around one loaded Tagger (`metricls serve TAGGER`).

Endpoints: ``POST /tag``, ``GET /labels``, ``GET /health``, ``GET /openapi.json`` (``/docs``,
``/redoc``), ``GET /`` (a self-contained web page). Every error is JSON ``{"detail": "..."}``, one
line naming the field: 400 for a body that is not JSON (or not UTF-8) or a bad Host header, 413
when a size limit is exceeded (body bytes, texts per request, characters per text, and 100,000
JSON values, or twice max_batch vectors), 415 for a body that is not ``application/json``, 422 for
any other bad value (a wrong type, an unknown field, nesting deeper than 32 levels, a lone
surrogate in a text; an integer too long for Python's int() is read as a float, inf).

A /tag body of up to 64 KiB (a few dozen texts) is parsed and checked on the event loop, which
costs less than handing it to a thread; a bigger one is parsed in a worker thread, so /health
keeps answering meanwhile. Either way its size and shape (items per request, their types,
unknown keys) are checked before pydantic sees it, so a hostile body costs one short message.
Texts are tagged in batches by one tagging thread (`serve_batching`), explanations in a worker
thread.

DNS rebinding: a server bound to a loopback address (127.0.0.1, the default, localhost or ::1)
answers only requests whose Host header names loopback (localhost, 127.x.x.x, [::1], with or
without a port); others get 400. Bound to 0.0.0.0 or another address it accepts any Host.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
)
from starlette.concurrency import run_in_threadpool

from metricls import serve_guards as guards
from metricls import serve_page
from metricls.artifacts import read_json
from metricls.errors import InputError
from metricls.manifest import MANIFEST, check_folder, versions
from metricls.serve_batching import MicroBatcher
from metricls.tagger import Tagger
from metricls.validation import check_features, check_positive_int, check_texts, describe

log = logging.getLogger(__name__)
SETTINGS_ENV = "METRICLS_SERVE_SETTINGS"  # JSON {"tagger": path, limits...} for --workers > 1
SERVE_TORCH_THREADS = 1  # see `_serving_threads`
BATCH_ITEMS = 256  # most inputs of concurrent requests tagged in one call (at least max_batch)
PARSE_ON_LOOP_BYTES = 64 << 10  # bodies parsed on the event loop; bigger ones in a thread


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may hold; each is a positive int."""

    max_batch: int = 128  # texts (or vectors) per request
    max_text_chars: int = 100_000  # characters per text (debtags: at most 79,946)
    max_body_bytes: int = 4 << 20  # request body, checked before it is parsed
    max_k: int = 100  # tags per input

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_positive_int(getattr(self, f.name), f.name)


# ---- request and response bodies ----------------------------------------------------------------
def _threshold(value: Any) -> Any:
    """null, "tuned" or a JSON number (the tagger refuses NaN and inf with its own message)."""
    if value is None or value == "tuned":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected null, a number or 'tuned', got {describe(value)}")
    return value


Threshold = Annotated[float | Literal["tuned"] | None, BeforeValidator(_threshold)]


class TagRequest(BaseModel):
    """Inputs to tag (`texts`, or `vectors` for a tagger with a `features` backbone)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"texts": ["Python bindings for the GTK toolkit"], "k": 5, "threshold": None}]})

    texts: list[str] | None = Field(None, description="Texts to tag, one per item.")
    vectors: list[list[StrictFloat]] | None = Field(
        None, description="Feature rows (n, d), for a tagger that reads vectors.")
    k: StrictInt = Field(5, description="At most this many tags per input (1 to max_k).")
    threshold: Threshold = Field(None, description=(
        "null: the k best tags; a number: only tags scoring at least this; 'tuned': the "
        "per-label thresholds tuned on the validation split (a variable number of tags)."))
    explain: StrictBool = Field(False, description=(
        "true: each tag also carries its evidence (nearest training items carrying it, the "
        "words shared with its TF-IDF prototype, its similarities); with threshold null."))


_FIELDS = tuple(TagRequest.model_fields)


class Neighbour(BaseModel):
    """An indexed item near the input that carries the tag."""

    id: str
    similarity: float


class Tag(BaseModel):
    """One tag of one input; the other fields come with ``"explain": true``."""

    label: str
    score: float
    description: str | None = None
    neighbours: list[Neighbour] | None = None
    terms: list[str] | None = None
    similarity: float | None = None
    vote: float | None = None
    features: dict[str, float] | None = None


class TagResponse(BaseModel):
    """Tags per input, in input order, best first; `took_ms` is the server's time."""

    tags: list[list[Tag]]
    took_ms: float


class LabelInfo(BaseModel):
    """A label, the number of training items carrying it, and its tuned threshold."""

    name: str
    count: int
    threshold: float | None


class LabelsResponse(BaseModel):
    """Every label the tagger can return; a label's id is its position."""

    labels: list[LabelInfo]
    n_train_items: int


class Health(BaseModel):
    """What is being served."""

    status: Literal["ok"]
    tagger: str
    labels: int
    inputs: Literal["texts", "vectors"]
    vector_dim: int | None
    backend: str
    manifest_sha256: str | None
    created: str | None
    versions: dict[str, str]
    limits: dict[str, int]


class ErrorBody(BaseModel):
    """Every error response."""

    detail: str


# ---- the app ------------------------------------------------------------------------------------
def create_app(tagger_or_path: Tagger | str | Path, *, max_batch: int = Limits.max_batch,
               max_text_chars: int = Limits.max_text_chars,
               max_body_bytes: int = Limits.max_body_bytes,
               max_k: int = Limits.max_k, host: str | None = None) -> FastAPI:
    """A FastAPI app serving one tagger (a loaded `Tagger`, or a folder loaded once here).

    `host` is the address the server binds: a loopback one turns on the Host-header check (see
    the module doc); None (an app under test or mounted elsewhere) leaves it off. Requests are
    tagged by `Tagger.predict` in the batcher's thread, explained in worker threads (both are
    thread-safe).
    """
    limits = Limits(max_batch, max_text_chars, max_body_bytes, max_k)
    if isinstance(tagger_or_path, Tagger):
        tagger, manifest = tagger_or_path, {}
    else:
        tagger = Tagger.load(tagger_or_path)
        manifest = read_json(Path(tagger_or_path) / MANIFEST)  # verified by load
    dim = _vector_dim(tagger)
    # one prediction now loads what loads lazily (MiniLM): the first request is not slow
    tagger.predict(np.zeros((1, dim), np.float32) if dim is not None else ["warm-up"], k=1)
    health = Health(status="ok", tagger=tagger.config.name, labels=len(tagger.labels),
                    inputs="vectors" if dim is not None else "texts", vector_dim=dim,
                    backend=tagger.state.proto_index.backend,
                    manifest_sha256=manifest.get("manifest_sha256"),
                    created=manifest.get("created"), versions=versions(),
                    limits=dataclasses.asdict(limits))
    max_values = max(guards.MAX_VALUES, 2 * limits.max_batch * (dim or 1))  # room for vectors
    # concurrent requests are tagged together (serve_batching); each gets its own rows
    batcher = MicroBatcher(lambda key, inputs: tagger.predict(inputs, k=key[0], threshold=key[1]),
                           max_items=max(BATCH_ITEMS, limits.max_batch))

    title = f"metricls: {health.tagger}"
    app = FastAPI(title=title, version=health.versions["metricls"], docs_url=None,
                  redoc_url=None, description=_description(health, limits))
    app.add_middleware(guards.BodyLimit, max_bytes=limits.max_body_bytes)
    if host is not None and guards.is_loopback(host):
        app.add_middleware(guards.LoopbackHostOnly, bound_to=host)
    _add_error_handlers(app)
    _document_tag_request(app)
    # the answers that never change are rendered once; async routes answer on the event loop
    health_json, labels_json = health.model_dump_json(), _labels(tagger).model_dump_json()
    docs = {"/docs": get_swagger_ui_html(openapi_url="openapi.json",
                                         title=html.escape(title) + " - Swagger UI").body,
            "/redoc": get_redoc_html(openapi_url="openapi.json",
                                     title=html.escape(title) + " - ReDoc").body,
            "/": serve_page.page(health.tagger, dim, limits.max_k).encode()}
    errors = {code: {"model": ErrorBody} for code in (400, 413, 415, 422)}

    @app.post("/tag", response_model=TagResponse, responses=errors, openapi_extra=_TAG_BODY)
    async def tag(request: Request) -> Response:
        """Tag texts (or vectors): the k best labels per input with their scores."""
        guards.check_content_type(request.headers.get("content-type"))
        body = await request.body()
        start = time.perf_counter()
        if len(body) <= PARSE_ON_LOOP_BYTES:
            asked, inputs = _parsed(body, health, limits, max_values)
        else:
            asked, inputs = await run_in_threadpool(_parsed, body, health, limits, max_values)
        if asked.explain:
            tags = await run_in_threadpool(tagger.explain, inputs, k=asked.k)
        else:
            rows = await batcher((asked.k, asked.threshold), inputs)
            tags = [[{"label": name, "score": score} for name, score in row] for row in rows]
        return JSONResponse({"tags": tags, "took_ms": (time.perf_counter() - start) * 1e3})

    @app.get("/labels", response_model=LabelsResponse)
    async def get_labels() -> Response:
        """Every label with its number of training items and its tuned threshold."""
        return Response(labels_json, media_type="application/json")

    @app.get("/health", response_model=Health)
    async def get_health() -> Response:
        """Status, tagger name, label count, versions and the manifest hash."""
        return Response(health_json, media_type="application/json")

    @app.get("/", include_in_schema=False)
    @app.get("/docs", include_in_schema=False)
    @app.get("/redoc", include_in_schema=False)
    async def get_page(request: Request) -> HTMLResponse:
        return HTMLResponse(docs[request.url.path])

    return app


def app_from_env() -> FastAPI:
    """The app described by $METRICLS_SERVE_SETTINGS (uvicorn's factory for --workers > 1)."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    _serving_threads()
    return create_app(settings.pop("tagger"), **settings)


def _serving_threads() -> None:
    """One OpenMP thread in a serving process (torch's and FAISS's: they share torch's runtime,
    `metricls.ann.faiss_lib`): it tags small batches, and `--workers` processes fill the cores."""
    import torch

    torch.set_num_threads(SERVE_TORCH_THREADS)


def serve(tagger: str | Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info", **limits: int) -> None:
    """Serve a tagger folder with uvicorn until SIGINT/SIGTERM.

    With one worker the tagger is loaded here, before the port is bound, so a bad folder fails
    at once; with more, each worker process loads its own copy.
    """
    import uvicorn

    guards.check_address(host, port)
    checked = Limits(**limits)
    check_positive_int(workers, "workers")
    if workers == 1:
        _serving_threads()
        app: FastAPI | str = create_app(tagger, **limits, host=host)
    else:
        check_folder(tagger)
        os.environ[SETTINGS_ENV] = json.dumps({"tagger": str(tagger), "host": host,
                                               **dataclasses.asdict(checked)})
        app = "metricls.serve:app_from_env"
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
    # found before it started: make that one a clean exit (status 0)
    if threading.current_thread() is threading.main_thread():
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, _exit_cleanly)
    uvicorn.run(app, factory=workers > 1, host=host, port=port, workers=workers,
                log_level=log_level)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


# ---- request checks -----------------------------------------------------------------------------
def _vector_dim(tagger: Tagger) -> int | None:
    """The feature dimension of a tagger that reads vectors, None for one that reads texts."""
    return next((b.out_dim for b in tagger.model.backbones if b.needs == "features"), None)


def _parsed(body: bytes, health: Health, limits: Limits,
            max_values: int) -> tuple[TagRequest, list[str] | np.ndarray]:
    """A POST /tag body parsed and checked: the request and its inputs, or HTTPException."""
    data = guards.parse_body(body, _FIELDS, limits.max_batch, max_values)
    guards.check_shape(data, _FIELDS, limits.max_batch)
    try:
        request = TagRequest.model_validate(data)
    except pydantic.ValidationError as exc:
        raise HTTPException(422, _validation_detail(exc.errors())) from None
    inputs = _checked_inputs(request, health, limits)
    if request.explain and request.threshold is not None:
        raise HTTPException(422, "threshold: expected null with explain, which explains the k "
                                 "best tags")
    return request, inputs


def _checked_inputs(request: TagRequest, health: Health, limits: Limits) -> list[str] | np.ndarray:
    """The request's texts or (n, d) float32 vectors, within the limits, else HTTPException."""
    if (request.texts is None) == (request.vectors is None):
        got = "both" if request.texts is not None else "neither"
        raise HTTPException(422, f"body: send either 'texts' (a list of strings) or 'vectors' "
                                 f"(a list of number lists), got {got}")
    if not 1 <= request.k <= limits.max_k:
        raise HTTPException(422, f"k: expected an integer from 1 to {limits.max_k} (max_k), "
                                 f"got {request.k}")
    field = "texts" if request.texts is not None else "vectors"
    values = request.texts if request.texts is not None else request.vectors
    if field != health.inputs:
        raise HTTPException(422, f"{field}: this tagger reads {health.inputs}, send "
                                 f"'{health.inputs}'" + (f" (rows of {health.vector_dim} numbers)"
                                                         if health.vector_dim else ""))
    if not values:
        raise HTTPException(422, f"{field}: expected at least one item, got an empty list")
    if request.vectors is not None:
        return check_features(request.vectors, health.vector_dim, name="vectors")
    texts = check_texts(request.texts, name="texts")
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise HTTPException(413, f"texts[{i}]: {len(text)} characters, more than the limit "
                                     f"of {limits.max_text_chars} (max_text_chars)")
    return texts


# ---- errors -------------------------------------------------------------------------------------
def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def _bad_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server log "
                                       "has the details"}, status_code=500)


def _validation_detail(errors: list[dict]) -> str:
    """One message for pydantic's errors on a TagRequest (a dict of known keys)."""
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    message = f"{where.lstrip('.')}: {message[:1].lower()}{message[1:]}"
    if first["type"] != "value_error":
        message += f", got {guards.short(first.get('input'))}"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return message + more


# ---- documents ----------------------------------------------------------------------------------
def _labels(tagger: Tagger) -> LabelsResponse:
    cuts = tagger.state.scoring.label_thresholds or [None] * len(tagger.labels)
    return LabelsResponse(labels=[LabelInfo(name=name, count=int(count), threshold=cut)
                                  for name, count, cut in zip(tagger.labels,
                                                              tagger.vocab.counts, cuts)],
                          n_train_items=tagger.vocab.n_items)


def _description(health: Health, limits: Limits) -> str:
    return (f"Multi-label tagging with the metricls tagger **{html.escape(health.tagger)}** "
            f"({health.labels} labels, reads {health.inputs}). Limits per request: "
            f"{limits.max_batch} {health.inputs}, {limits.max_text_chars} characters per text, "
            f"{limits.max_body_bytes} body bytes, k up to {limits.max_k}. Errors are "
            '`{"detail": "..."}`: 400 body not JSON, 413 a size limit exceeded, 415 body not '
            "application/json, 422 any other bad value.")


_TAG_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/TagRequest"}}}}}


def _document_tag_request(app: FastAPI) -> None:
    """/tag reads its body itself (off the event loop): add TagRequest to the OpenAPI schemas."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schema["components"]["schemas"].setdefault("TagRequest", TagRequest.model_json_schema(
            ref_template="#/components/schemas/{model}"))
        return schema

    app.openapi = openapi
