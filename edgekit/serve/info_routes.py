"""``GET /health``, ``/metadata`` (without local paths or the environment) and ``/metrics``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.runtime.model import EdgeModel
from edgekit.serve.config import ServeConfig
from edgekit.serve.service import Service

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

__all__ = ["InfoRoutes", "public_metadata"]


def _scrub(obj: Any) -> Any:
    """Drop string values that are absolute paths (they reveal the server's file layout)."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if not _is_abs(v)}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj if not _is_abs(v)]
    return obj


def _is_abs(v: object) -> bool:
    return isinstance(v, str) and (os.path.isabs(v) or v.startswith("~") or ":\\" in v)


def public_metadata(model: EdgeModel, cfg: ServeConfig, name: str) -> dict[str, object]:
    """``/metadata``: the model's description, its V2 name and the serving limits."""
    meta: dict[str, object] = _scrub(model.describe())
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


class InfoRoutes:
    """Health, metadata and metrics of one served model."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def routes(self, route: type[Route]) -> list[Route]:
        return [
            route("/health", self.health, methods=["GET"]),
            route("/metadata", self.metadata, methods=["GET"]),
            route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]

    async def health(self, request: Request) -> Response:
        em = self.service.em
        return self.service.JSONResponse({"status": "ok", "model": em.path.name,
                                          "providers": em.providers})

    async def metadata(self, request: Request) -> Response:
        s = self.service
        return s.JSONResponse(public_metadata(s.em, s.cfg, s.name))

    async def metrics_endpoint(self, request: Request) -> Response:
        body, ctype = self.service.metrics.render()
        return self.service.Response(body, media_type=ctype)
