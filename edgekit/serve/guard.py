"""The middleware in front of every route of ``edgekit serve``: API key, in-flight limit,
metrics, a JSON 500 for bugs, and the hot POST routes served without routing."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edgekit.serve.config import ServeConfig
from edgekit.serve.metrics import Metrics, endpoint_of
from edgekit.serve.responses import RawHandler, send_json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PUBLIC_PATHS", "Guard"]

logger = logging.getLogger("edgekit.serve")

#: Paths answered without an API key and outside the in-flight limit (health probes).
PUBLIC_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready"})


class Guard:
    """Pure ASGI middleware: API key, in-flight limit (503 + Retry-After), metrics, a JSON 500
    (logged at a bounded rate) for bugs, and the hot POST routes served directly."""

    def __init__(
        self, app: ASGIApp, cfg: ServeConfig, metrics: Metrics,
        fast: Mapping[str, RawHandler] | None = None,
    ) -> None:  # fmt: skip
        self.app, self.metrics, self.max_in_flight = app, metrics, cfg.max_in_flight
        self.fast = fast or {}  # POST path -> raw ASGI handler, bypassing Starlette's routing
        self.key = cfg.api_key.encode() if cfg.api_key else None
        self.in_flight = 0

    async def _reply(self, send: Send, status: int, message: str, hint: str | None,
                     headers: list[tuple[bytes, bytes]]) -> None:  # fmt: skip
        await send_json(send, status, {"error": message, "hint": hint}, headers)

    def _authorized(self, scope: Scope) -> bool:
        assert self.key is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

        async def send_status(message: Message) -> None:
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
