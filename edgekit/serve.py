"""``edgekit serve``: an HTTP prediction service on uvicorn (a production ASGI server).

Endpoints:

- ``POST /predict`` with ``{"inputs": [...]}`` (one sample or a batch, raw data: the model's
  preprocessing applies, see :mod:`edgekit.runtime`), ``{"inputs": {"name": [...], ...}}`` for
  multi-input models, or ``{"text": "..." | [...]}`` for text models. Optional ``"top_k": k``.
  Answers ``{"predictions": [[...]], "labels": [...], "top_k": [...]}``.
- ``GET /health``: ``{"status": "ok", ...}``.
- ``GET /metadata``: inputs, outputs, labels, preprocessing, providers.

Errors are answered with ``{"error": message, "hint": hint}``: 400 for malformed JSON or a body
of the wrong form, 413 for a body over ``max_body_bytes`` (default 10 MB) or a batch over
``max_batch``, 422 for inputs the model rejects (shape, dtype, NaN ...). Inference runs in a
thread pool, off the event loop. Needs ``edgekit[serve]`` (uvicorn, starlette).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import EdgekitError, InputError, require
from .runtime import EdgeModel

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_BATCH",
    "ENV_CONFIG",
    "create_app",
    "app_factory",
    "serve",
    "free_port",
    "server_process",
]

logger = logging.getLogger("edgekit.serve")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_BATCH = 1024
#: Environment variable carrying the JSON config to each ``--workers`` process.
ENV_CONFIG = "EDGEKIT_SERVE_CONFIG"


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def _predict_body(model: EdgeModel, body: bytes, max_batch: int) -> dict[str, Any]:
    """Parse a /predict body and run the model (runs in a worker thread)."""
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
    else:
        x = req["inputs"]
        if not isinstance(x, (list, dict)) or not x:
            raise _HTTPError(422, "'inputs' must be a non-empty (nested) list of numbers")
    feeds = model.prepare(x, preprocess=preprocess)
    n = max((len(v) for v in feeds.values() if v.ndim), default=1)
    if n > max_batch:
        raise _HTTPError(413, f"batch of {n} samples is over the limit of {max_batch}")
    probs = model.predict(feeds, preprocess=False)
    out: dict[str, Any] = {"predictions": probs.tolist()}
    if model.metadata.task == "classification":
        rows = model.top_k(probs, top_k or 1)
        out["labels"] = [row[0][0] for row in rows]
        if top_k is not None:
            out["top_k"] = [[{"label": lab, "probability": p} for lab, p in row] for row in rows]
    return out


def create_app(
    model: str | os.PathLike[str] | EdgeModel,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    warmup: bool = True,
    **model_kwargs: Any,
) -> Any:
    """The Starlette app serving ``model`` (a path, loaded with ``model_kwargs``, or a model).

    Args:
        model: ``.onnx``/``.ort`` path or an :class:`EdgeModel`.
        max_body_bytes: larger request bodies get 413; default 10 MB.
        max_batch: larger batches get 413; default 1024.
        warmup: run a few inferences at startup; default True.
        model_kwargs: passed to :class:`EdgeModel` (``provider``, ``fallback``, ``threads`` ...).
    """
    require("uvicorn", "serve")
    applications: Any = require("starlette.applications", "serve")
    concurrency: Any = require("starlette.concurrency", "serve")
    responses: Any = require("starlette.responses", "serve")
    routing: Any = require("starlette.routing", "serve")
    em = model if isinstance(model, EdgeModel) else EdgeModel(model, **model_kwargs)
    JSONResponse = responses.JSONResponse

    def error(status: int, message: str, hint: str | None = None) -> Any:
        return JSONResponse({"error": message, "hint": hint}, status_code=status)

    async def read_body(request: Any) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _HTTPError(400, "invalid Content-Length header")
            if int(length) > max_body_bytes:
                raise _HTTPError(413, f"request body is over the limit of {max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _HTTPError(413, f"request body is over the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request: Any) -> Any:
        try:
            body = await read_body(request)
            result = await concurrency.run_in_threadpool(_predict_body, em, body, max_batch)
        except _HTTPError as exc:
            return error(exc.status, exc.message, exc.hint)
        except EdgekitError as exc:
            return error(422, exc.message, exc.hint)
        return JSONResponse(result)

    async def health(request: Any) -> Any:
        return JSONResponse({"status": "ok", "model": em.path.name, "providers": em.providers})

    async def metadata(request: Any) -> Any:
        return JSONResponse(em.describe())

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if warmup:
            await concurrency.run_in_threadpool(em.warmup)
        yield

    app = applications.Starlette(
        routes=[
            routing.Route("/predict", predict, methods=["POST"]),
            routing.Route("/health", health, methods=["GET"]),
            routing.Route("/metadata", metadata, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.model = em
    return app


def app_factory() -> Any:
    """App of one ``--workers`` process: the config comes from ``$EDGEKIT_SERVE_CONFIG``."""
    raw = os.environ.get(ENV_CONFIG)
    if not raw:
        raise InputError(f"${ENV_CONFIG} is not set", hint="start the server with edgekit serve")
    cfg = json.loads(raw)
    model = cfg.pop("model")
    return create_app(model, **cfg)


def serve(
    model_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    provider: str = "auto",
    fallback: bool = False,
    threads: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve ``model_path`` with uvicorn until interrupted (defaults 127.0.0.1:8000, 1 worker).

    With ``workers > 1`` uvicorn starts that many processes, each loading the model through
    :func:`app_factory`; ``threads`` is the intra-op thread count per process (default: the
    model's stored setting, else onnxruntime's).
    """
    uvicorn: Any = require("uvicorn", "serve")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    model_kwargs = {"provider": provider, "fallback": fallback, "threads": threads}
    limits = {"max_body_bytes": max_body_bytes, "max_batch": max_batch}
    common = {"host": host, "port": port, "log_level": log_level, "access_log": access_log}
    if workers == 1:
        app = create_app(model_path, **limits, **model_kwargs)
        uvicorn.run(app, **common)
        return
    EdgeModel(model_path, **model_kwargs).close()  # fail early, in the parent, on a bad model
    cfg = {"model": str(Path(model_path).resolve()), **limits, **model_kwargs}
    os.environ[ENV_CONFIG] = json.dumps(cfg)
    uvicorn.run("edgekit.serve:app_factory", factory=True, workers=workers, **common)


# ---------------------------------------------------------------------------------------------
# a server in a subprocess, for tests and benchmarks
# ---------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server_process(
    model_path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
    timeout: float = 60.0,
) -> Iterator[str]:
    """Run ``edgekit serve MODEL`` in a subprocess on a free port; yields its base URL.

    Waits until ``GET /health`` answers (up to ``timeout`` seconds, default 60) and stops the
    server on exit. ``args`` are extra ``edgekit serve`` options (e.g. ``["--workers", "2"]``).
    """
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    cmd = [sys.executable, "-m", "edgekit.cli", "serve", str(model_path)]
    cmd += ["--host", host, "--port", str(port), "--log-level", "warning", *args]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited ({proc.returncode}): {log.read().decode()}")
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not answer /health within {timeout} s")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
