"""``edgekit serve``: an HTTP prediction service on uvicorn (a production ASGI server).

Our ``POST /predict`` (raw data, the model's preprocessing applied) beside the Open Inference
Protocol (KServe V2 / Triton HTTP, typed tensors), ``/health``, ``/metadata`` and Prometheus
``/metrics``; optional bearer-token authentication and HTTPS; dynamic micro-batching; several
worker processes; timeouts and caps against slow or flooding clients. See
:mod:`edgekit.serve.app` for the routes and error codes, :class:`ServeConfig` for the settings.
Needs ``edgekit[serve]`` (uvicorn, starlette, prometheus-client).
"""

from __future__ import annotations

from edgekit.serve.app import create_app
from edgekit.serve.config import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, ServeConfig
from edgekit.serve.server import ENV_CONFIG, app_factory, free_port, serve, server_process

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_BATCH",
    "ENV_CONFIG",
    "ServeConfig",
    "create_app",
    "app_factory",
    "serve",
    "free_port",
    "server_process",
]
