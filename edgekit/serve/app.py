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

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError, require
from edgekit.runtime.model import EdgeModel
from edgekit.serve.config import ServeConfig
from edgekit.serve.guard import Guard
from edgekit.serve.info_routes import InfoRoutes
from edgekit.serve.predict_routes import PredictRoutes
from edgekit.serve.responses import RawHandler, starlette_error
from edgekit.serve.service import Service
from edgekit.serve.v2_routes import V2Routes

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["create_app", "resolve_config"]


def create_app(
    model: str | os.PathLike[str] | EdgeModel, config: ServeConfig | None = None,
    **settings: object,
) -> Starlette:
    """The ASGI app serving ``model`` (a path, loaded with the config's provider settings, or
    an :class:`EdgeModel`).

    Args:
        model: ``.onnx``/``.ort`` path or an :class:`EdgeModel`.
        config: serving settings; default :class:`ServeConfig` ().
        settings: :class:`ServeConfig` fields overriding ``config`` (e.g. ``max_batch=8``).
    """
    require("uvicorn", "serve")
    applications: Any = require("starlette.applications", "serve")
    routing: Any = require("starlette.routing", "serve")
    cfg = resolve_config(config, settings)
    em = model if isinstance(model, EdgeModel) else EdgeModel(
        model, cfg.provider, fallback=cfg.fallback, threads=cfg.threads)
    service = Service(em, cfg)
    predict, v2, info = PredictRoutes(service), V2Routes(service), InfoRoutes(service)
    on_error = starlette_error(service.JSONResponse)
    app: Starlette = applications.Starlette(
        routes=[*predict.routes(routing.Route), *info.routes(routing.Route),
                *v2.routes(routing.Route)],
        lifespan=service.lifespan,
        exception_handlers={404: on_error, 405: on_error},
    )
    app.state.model = em
    app.state.config = cfg
    app.state.metrics = service.metrics
    fast: dict[str, RawHandler] = {"/predict": predict.predict, **v2.fast_paths()}
    app.add_middleware(Guard, cfg=cfg, metrics=service.metrics, fast=fast)
    return app


def resolve_config(config: ServeConfig | None, settings: Mapping[str, object]) -> ServeConfig:
    """``config`` (default :class:`ServeConfig` ()) with ``settings`` overriding its fields."""
    changes: dict[str, Any] = dict(settings)
    try:
        return dataclasses.replace(config or ServeConfig(), **changes)
    except TypeError as exc:
        raise InputError(f"unknown serve setting: {exc}") from None
