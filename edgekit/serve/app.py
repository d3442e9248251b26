"""The Starlette app of ``edgekit serve``: routes, authentication, overload protection, metrics.

Routes (``{name}`` is :attr:`ServeConfig.model_name`, default the model file's stem):

- ``POST /predict``: ``{"inputs": [...]}`` (one sample or a batch of raw data: the model's
  preprocessing applies), ``{"inputs": {"name": [...]}}`` (the same, by input name),
  ``{"text": ...}`` for text models; optional ``"top_k": k``. Answers
  ``{"predictions": [[...]], "labels": [...], "top_k": [...]}`` (``predictions`` by the output
  contract: :meth:`~edgekit.runtime.model.EdgeModel.predict`). A multi-label model's ``labels``
  are one list per sample: every label at or over 0.5, most likely first (``top_k``: at most k
  of them); per-pixel or per-step outputs get no ``labels`` (``top_k`` is refused, 422).
- ``GET /health``, ``GET /metadata``, ``GET /metrics`` (Prometheus text format).
- Open Inference Protocol (KServe V2): ``GET /v2``, ``GET /v2/health/live``,
  ``GET /v2/health/ready``, ``GET /v2/models`` (KServe's listing: ``{"models": [name]}``),
  ``GET /v2/models/{name}[/versions/1]``, ``GET .../ready``,
  ``POST /v2/models/{name}[/versions/1]/infer`` (typed tensors, JSON or binary data).

Errors are ``{"error": message, "hint": hint}``: 400 malformed request (and every V2 input
error), 401 missing/wrong API key, 404/405 unknown route/method, 408 request too slow (see
:mod:`edgekit.serve.protocol`), 413 body or batch too large, 422 inputs the model rejects
(shape, dtype, NaN/Inf ...), 431 headers too large, 503 overloaded (with ``Retry-After``);
``POST /predict`` and V2 infer are served directly by the middleware (no routing). ``/health`` and
``/v2/health/*`` need no key (probes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.contract import has_class_rows
from edgekit.errors import EdgekitError, InputError, require
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.specs import check_outputs_finite
from edgekit.serve.batching import MicroBatcher
from edgekit.serve.config import ServeConfig
from edgekit.serve.metrics import Metrics, endpoint_of
from edgekit.serve.v2 import (
    HEADER_LENGTH,
    default_model_name,
    encode_infer_response,
    parse_infer_request,
    tensor_metadata,
)

__all__ = ["create_app", "public_metadata", "resolve_config", "PUBLIC_PATHS"]

logger = logging.getLogger("edgekit.serve")

#: Paths answered without an API key and outside the in-flight limit (health probes).
PUBLIC_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready"})
_INLINE_BYTES = 64 * 1024  # bodies up to this size are decoded on the event loop


class _HTTPError(Exception):
    """A user error with its status; ``close`` ends the connection after the answer (the
    request body was not read, so its bytes must not be parsed as the next request)."""

    def __init__(self, status: int, message: str, hint: str | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.hint, self.close = status, message, hint, close


# ---------------------------------------------------------------------------------------------
# /predict
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _PredictRequest:
    x: Any
    top_k: int | None
    preprocess: bool | None
    feeds: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _parse_predict(model: EdgeModel, body: bytes) -> _PredictRequest:
    """Validate a /predict body (shape of the JSON, not the data)."""
    try:
        req = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _HTTPError(400, f"malformed JSON: {exc}") from None
    if not isinstance(req, dict) or ("inputs" in req) == ("text" in req):
        raise _HTTPError(
            400,
            "the body must be a JSON object with either 'inputs' or 'text'",
            hint='send {"inputs": [...]} (or {"text": "..."} for text models)',
        )
    top_k = req.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise _HTTPError(400, f"'top_k' must be a positive integer, got {top_k!r}")
    preprocess = req.get("preprocess")
    if preprocess is not None and not isinstance(preprocess, bool):
        raise _HTTPError(400, "'preprocess' must be true, false or null")
    if "text" in req:
        x = req["text"]
        if not model.is_text:
            raise _HTTPError(422, "this model does not take text", hint="send 'inputs'")
        if not (isinstance(x, str) or (isinstance(x, list) and all(isinstance(t, str) for t in x))):
            raise _HTTPError(422, "'text' must be a string or a list of strings")
        return _PredictRequest(x, top_k, preprocess)
    x = req["inputs"]
    if not isinstance(x, (list, dict)) or not x:
        raise _HTTPError(422, "'inputs' must be a non-empty (nested) list of numbers")
    if isinstance(x, dict) and len(model.inputs) == 1 and x.keys() == {model.input_names[0]}:
        x = x[model.input_names[0]]  # the named form of a single-input model: same rules
        if not isinstance(x, list) or not x:
            raise _HTTPError(422, "'inputs' must be a non-empty (nested) list of numbers")
    return _PredictRequest(x, top_k, preprocess)


def _prepare(model: EdgeModel, req: _PredictRequest, max_batch: int) -> dict[str, np.ndarray]:
    feeds = model.prepare(req.x, preprocess=req.preprocess)
    n = max((len(v) for v in feeds.values() if v.ndim), default=1)
    if n > max_batch:
        raise _HTTPError(413, f"batch of {n} samples is over the limit of {max_batch}")
    return feeds


def _answer(model: EdgeModel, probs: np.ndarray, top_k: int | None) -> dict[str, Any]:
    check_outputs_finite(probs)  # a PredictionError: 422 with its hint, like every user error
    out: dict[str, Any] = {"predictions": probs.tolist()}
    if model.metadata.task != "classification":
        return out
    labels = model.labels
    multi = model.multi_label(probs)
    if top_k is None and labels and probs.ndim == 2 and probs.shape[1] == len(labels) > 1 \
            and not multi:
        # the common case, top_k(probs, 1) without its per-row sorting: the first maximum
        out["labels"] = [labels[i] for i in probs.argmax(axis=1).tolist()]
        return out
    if top_k is None and not has_class_rows(probs):
        return out  # per pixel or per step: no classification rows, so no labels
    rows = model.top_k(probs, None if multi else top_k or 1)  # multi-label: by threshold
    if multi:
        out["labels"] = [[lab for lab, _ in row] for row in rows]
        rows = rows if top_k is None else [row[:top_k] for row in rows]
    else:
        out["labels"] = [row[0][0] for row in rows]
    if top_k is not None:
        out["top_k"] = [[{"label": lab, "probability": p} for lab, p in row] for row in rows]
    return out


# ---------------------------------------------------------------------------------------------
# metadata without local paths or the environment
# ---------------------------------------------------------------------------------------------
def _scrub(obj: Any) -> Any:
    """Drop string values that are absolute paths (they reveal the server's file layout)."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if not _is_abs(v)}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj if not _is_abs(v)]
    return obj


def _is_abs(v: Any) -> bool:
    return isinstance(v, str) and (os.path.isabs(v) or v.startswith("~") or ":\\" in v)


def public_metadata(model: EdgeModel, cfg: ServeConfig, name: str) -> dict[str, Any]:
    """``/metadata``: the model's description, its V2 name and the serving limits."""
    meta = _scrub(model.describe())
    meta["model"] = Path(model.path).name
    meta["name"] = name
    meta["serving"] = {
        "max_batch": cfg.max_batch,
        "max_body_bytes": cfg.max_body_bytes,
        "batching": cfg.batching,
        "max_delay_ms": cfg.max_delay_ms if cfg.batching else None,
        "authentication": cfg.api_key is not None,
    }
    return meta


def _messages(
    status: int, body: bytes, content_type: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a complete response."""
    head = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": head},
        {"type": "http.response.body", "body": body},
    )


async def _send_error(send: Any, exc: Exception, status: int) -> None:
    """Answer a user error: ``_HTTPError`` with its status, an EdgekitError with ``status``."""
    status = exc.status if isinstance(exc, _HTTPError) else status
    hint = getattr(exc, "hint", None)
    close = [(b"connection", b"close")] if getattr(exc, "close", False) else []
    await _send_json(send, status, {"error": getattr(exc, "message", str(exc)), "hint": hint},
                     close)


async def _send_json(
    send: Any, status: int, obj: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    start, end = _messages(status, body, b"application/json", headers)
    await send(start)
    await send(end)


class _Guard:
    """Pure ASGI middleware: API key, in-flight limit (503 + Retry-After), metrics, a JSON 500
    (logged at a bounded rate) for bugs, and the hot POST routes served directly."""

    def __init__(
        self, app: Any, cfg: ServeConfig, metrics: Metrics, fast: dict[str, Any] | None = None
    ) -> None:
        self.app, self.metrics, self.max_in_flight = app, metrics, cfg.max_in_flight
        self.fast = fast or {}  # POST path -> raw ASGI handler, bypassing Starlette's routing
        self.key = cfg.api_key.encode() if cfg.api_key else None
        self.in_flight = 0

    async def _reply(self, send: Any, status: int, message: str, hint: str | None,
                     headers: list[tuple[bytes, bytes]]) -> None:  # fmt: skip
        await _send_json(send, status, {"error": message, "hint": hint}, headers)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        assert self.key is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_of(scope["path"])
        if self.key is not None and not self._authorized(scope):
            self.metrics.rejected.labels("unauthorized").inc()
            await self._reply(
                send, 401, "missing or wrong API key", "send 'Authorization: Bearer <key>'",
                [(b"www-authenticate", b'Bearer realm="edgekit"')],
            )  # fmt: skip
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.rejected.labels("overloaded").inc()
            await self._reply(
                send, 503, f"the server is at its limit of {self.max_in_flight} requests",
                "retry later", [(b"retry-after", b"1")],
            )  # fmt: skip
            return
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                status.append(0)  # response started
            await send(message)

        self.in_flight += 1
        self.metrics.in_flight.inc()
        t0 = time.perf_counter()
        app = self.fast.get(scope["path"], self.app) if scope["method"] == "POST" else self.app
        try:
            await app(scope, receive, send_status)
        except Exception:
            logger.exception("internal error on %s %s", scope["method"], scope["path"])
            if len(status) == 1:
                await self._reply(send, 500, "internal server error", None, [])
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            self.metrics.observe(endpoint, status[0], time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------
def create_app(
    model: str | os.PathLike[str] | EdgeModel, config: ServeConfig | None = None, **settings: Any
) -> Any:
    """The ASGI app serving ``model`` (a path, loaded with the config's provider settings, or
    an :class:`EdgeModel`).

    Args:
        model: ``.onnx``/``.ort`` path or an :class:`EdgeModel`.
        config: serving settings; default :class:`ServeConfig` ().
        settings: :class:`ServeConfig` fields overriding ``config`` (e.g. ``max_batch=8``).
    """
    require("uvicorn", "serve")
    applications: Any = require("starlette.applications", "serve")
    cfg = resolve_config(config, settings)
    em = model if isinstance(model, EdgeModel) else EdgeModel(
        model, cfg.provider, fallback=cfg.fallback, threads=cfg.threads)
    service = _Service(em, cfg)
    app = applications.Starlette(
        routes=service.routes(),
        lifespan=service.lifespan,
        exception_handlers={
            404: _starlette_error(service.JSONResponse),
            405: _starlette_error(service.JSONResponse),
        },
    )
    app.state.model = em
    app.state.config = cfg
    app.state.metrics = service.metrics
    app.add_middleware(_Guard, cfg=cfg, metrics=service.metrics, fast=service.fast_paths())
    return app


def resolve_config(config: ServeConfig | None, settings: dict[str, Any]) -> ServeConfig:
    """``config`` (default :class:`ServeConfig` ()) with ``settings`` overriding its fields."""
    try:
        return dataclasses.replace(config or ServeConfig(), **settings)
    except TypeError as exc:
        raise InputError(f"unknown serve setting: {exc}") from None


class _Service:
    """The handlers of one served model: the state they share (model, settings, metrics,
    micro-batchers) and one method per route."""

    def __init__(self, em: EdgeModel, cfg: ServeConfig) -> None:
        concurrency: Any = require("starlette.concurrency", "serve")
        responses: Any = require("starlette.responses", "serve")
        self.em, self.cfg = em, cfg
        # a package is served under its folder's name, whichever variant this machine runs
        self.name = cfg.model_name or default_model_name(
            em.package.package.root if em.package else em.path)
        self.metrics = Metrics()
        self.JSONResponse, self.Response = responses.JSONResponse, responses.Response
        self.run_in_threadpool = concurrency.run_in_threadpool
        self.max_body, self.max_batch = cfg.max_body_bytes, cfg.max_batch
        self.predict_batcher: MicroBatcher | None = None
        self.v2_batcher: MicroBatcher | None = None
        if cfg.batching:
            delay = cfg.max_delay_ms / 1000.0
            on_batch = self.metrics.batch.observe
            self.predict_batcher = MicroBatcher(self.predict_outputs, cfg.max_batch, delay,
                                                on_batch)
            self.v2_batcher = MicroBatcher(em.run, cfg.max_batch, delay, on_batch)

    # -- routing -----------------------------------------------------------------------------
    def routes(self) -> list[Any]:
        """Starlette routes (``/predict`` and V2 infer are also served by the middleware)."""
        Route = _route_class()
        routes = [
            Route("/predict", _RawASGI(self.predict), methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metadata", self.metadata, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/v2", self.v2_server, methods=["GET"]),
            Route("/v2/health/live", self.v2_live, methods=["GET"]),
            Route("/v2/health/ready", self.v2_ready, methods=["GET"]),
            Route("/v2/models", self.v2_models, methods=["GET"]),
        ]
        for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            routes += [
                Route(base, self.v2_model, methods=["GET"]),
                Route(base + "/ready", self.v2_model_ready, methods=["GET"]),
                Route(base + "/infer", self.v2_infer_elsewhere, methods=["POST"]),
            ]
        return routes

    def fast_paths(self) -> dict[str, Callable[..., Awaitable[None]]]:
        """The raw ASGI handlers the middleware serves without routing."""
        fast: dict[str, Callable[..., Awaitable[None]]] = {"/predict": self.predict}
        for path in (f"/v2/models/{self.name}/infer", f"/v2/models/{self.name}/versions/1/infer"):
            fast[path] = self.v2_infer
        return fast

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Warm the model up (``cfg.warmup``) before serving; stop the batchers after."""
        if self.cfg.warmup:
            await self.run_in_threadpool(self.em.warmup)
        try:
            yield
        finally:
            for b in (self.predict_batcher, self.v2_batcher):
                if b is not None:
                    b.close()

    # -- request bodies ------------------------------------------------------------------------
    def error(self, status: int, message: str, hint: str | None = None, **headers: str) -> Any:
        return self.JSONResponse({"error": message, "hint": hint}, status_code=status,
                                 headers=headers)

    async def read_body(self, scope: dict[str, Any], receive: Any) -> bytes:
        """The request body, refused (413) past ``max_body_bytes`` before it is all read."""
        max_body = self.max_body
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                raise _HTTPError(400, "invalid Content-Length header")
            if int(length) > max_body:
                raise _HTTPError(413, f"request body is over the limit of {max_body} bytes",
                                 close=True)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _HTTPError(400, "the client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise _HTTPError(413, f"request body is over the limit of {max_body} bytes",
                                 close=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def parse(
        self, scope: dict[str, Any], receive: Any, decode: Callable[..., Any], *args: Any
    ) -> Any:
        """Read and decode a body: small ones on the event loop (no thread hand-off, no GIL
        contention with the loop), large ones in the thread pool."""
        body = await self.read_body(scope, receive)
        if len(body) <= _INLINE_BYTES:
            return decode(body, *args)
        return await self.run_in_threadpool(decode, body, *args)

    async def decode_and_run(
        self,
        scope: dict[str, Any],
        receive: Any,
        decode: Callable[..., Any],
        fn: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
        batcher: MicroBatcher | None,
        *args: Any,
    ) -> tuple[Any, Sequence[np.ndarray]]:
        """Decode the body into a request with ``feeds``, then run ``fn`` on them: in the
        thread pool, or merged with other requests by ``batcher``."""
        if batcher is None:
            req = await self.parse(scope, receive, decode, *args)
            return req, await self.run_in_threadpool(fn, req.feeds)
        with batcher.arrival():
            req = await self.parse(scope, receive, decode, *args)
        return req, await batcher.submit(req.feeds)

    # -- edgekit routes ------------------------------------------------------------------------
    def predict_outputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.em.predict(feeds, preprocess=False)]

    def decode_predict(self, body: bytes) -> _PredictRequest:
        req = _parse_predict(self.em, body)
        req.feeds = _prepare(self.em, req, self.max_batch)
        return req

    async def predict(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """POST /predict, as a raw ASGI app (the hot path skips Starlette's routing)."""
        try:
            req, outs = await self.decode_and_run(
                scope, receive, self.decode_predict, self.predict_outputs, self.predict_batcher
            )
            result = _answer(self.em, outs[0], req.top_k)
        except (_HTTPError, EdgekitError) as exc:
            await _send_error(send, exc, 422)
            return
        await _send_json(send, 200, result)

    async def health(self, request: Any) -> Any:
        em = self.em
        return self.JSONResponse({"status": "ok", "model": em.path.name,
                                  "providers": em.providers})

    async def metadata(self, request: Any) -> Any:
        return self.JSONResponse(public_metadata(self.em, self.cfg, self.name))

    async def metrics_endpoint(self, request: Any) -> Any:
        body, ctype = self.metrics.render()
        return self.Response(body, media_type=ctype)

    # -- Open Inference Protocol ---------------------------------------------------------------
    def v2_model_error(self, request: Any) -> Any | None:
        p, name = request.path_params, self.name
        if p["name"] != name:
            return self.error(404, f"unknown model {p['name']!r}", f"this server serves {name!r}")
        if p.get("version", "1") != "1":
            return self.error(404, f"unknown version {p['version']!r} of {name!r}",
                              "use version 1")
        return None

    async def v2_server(self, request: Any) -> Any:
        return self.JSONResponse(
            {"name": "edgekit", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def v2_live(self, request: Any) -> Any:
        return self.JSONResponse({"live": True})

    async def v2_ready(self, request: Any) -> Any:
        return self.JSONResponse({"ready": True})

    async def v2_models(self, request: Any) -> Any:
        return self.JSONResponse({"models": [self.name]})

    async def v2_model(self, request: Any) -> Any:
        return self.v2_model_error(request) or self.JSONResponse(
            {
                "name": self.name,
                "versions": ["1"],
                "platform": "onnxruntime_onnx",
                "inputs": tensor_metadata(self.em.inputs),
                "outputs": tensor_metadata(self.em.outputs),
            }
        )

    async def v2_model_ready(self, request: Any) -> Any:
        return self.v2_model_error(request) or self.JSONResponse(
            {"name": self.name, "ready": True})

    def v2_decode(self, body: bytes, header_length: int | None) -> Any:
        req = parse_infer_request(body, header_length, self.em.inputs, self.em.outputs)
        self.em.check_values(req.feeds)  # NaN/Inf: refused here, before any batching
        n = max((len(v) for v in req.feeds.values() if v.ndim), default=1)
        if n > self.max_batch:
            raise _HTTPError(413, f"batch of {n} samples is over the limit of {self.max_batch}")
        return req

    async def v2_infer(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """POST /v2/models/{name}[/versions/1]/infer, as a raw ASGI app."""
        raw_len = _header(scope, HEADER_LENGTH.encode())
        try:
            if raw_len is not None and not raw_len.isdigit():
                raise _HTTPError(400, f"invalid {HEADER_LENGTH} header")
            header_length = int(raw_len) if raw_len is not None else None
            req, values = await self.decode_and_run(
                scope, receive, self.v2_decode, self.em.run, self.v2_batcher, header_length
            )
            body, json_len = encode_infer_response(self.name, req, self.em.output_names, values)
        except (_HTTPError, EdgekitError) as exc:
            await _send_error(send, exc, 400)
            return
        if json_len is None:
            start, end = _messages(200, body, b"application/json")
        else:
            extra = [(HEADER_LENGTH.encode(), str(json_len).encode())]
            start, end = _messages(200, body, b"application/octet-stream", extra)
        await send(start)
        await send(end)

    async def v2_infer_elsewhere(self, request: Any) -> Any:
        """Infer on another model name or version: the right one is served by ``v2_infer``."""
        return self.v2_model_error(request) or self.error(404, "not found")


def _route_class() -> Any:
    """Starlette's ``Route`` class (the ``serve`` extra)."""
    routing: Any = require("starlette.routing", "serve")
    return routing.Route


class _RawASGI:
    """A raw ASGI handler as a Starlette route endpoint (a function would be wrapped as a
    request -> response endpoint)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _starlette_error(JSONResponse: Any) -> Callable[[Any, Exception], Awaitable[Any]]:
    async def handler(request: Any, exc: Exception) -> Any:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "error")
        return JSONResponse(
            {"error": str(detail), "hint": None}, status_code=status,
            headers=getattr(exc, "headers", None),
        )  # fmt: skip

    return handler
