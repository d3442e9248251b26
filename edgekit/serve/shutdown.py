"""Graceful shutdown of one ``edgekit serve`` process (a uvicorn :class:`~uvicorn.Server`).

uvicorn's shutdown stops accepting, closes idle connections and lets the requests in flight
finish within ``timeout_graceful_shutdown`` (:data:`GRACEFUL_TIMEOUT`), then cancels them. A
connection accepted just before (its protocol not yet running) escaped all of that: a
keep-alive client kept posting on it for the whole 10 s, and its request in flight at the end
was cancelled unanswered.

:class:`EdgekitServer` closes the listeners, marks the config closing (a connection accepted
from then on is closed at once: :mod:`edgekit.serve.protocol`), lets requests already in the
sockets' buffers be read (they are in flight, so they are answered), then runs uvicorn's
shutdown; each response in flight says ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any

from uvicorn import Server

from edgekit.serve.protocol import EdgekitUvicornConfig

__all__ = ["GRACEFUL_TIMEOUT", "EdgekitServer"]

logger = logging.getLogger("uvicorn.error")

#: seconds requests in flight get to finish after SIGTERM/SIGINT before they are cancelled
GRACEFUL_TIMEOUT = 10.0


class EdgekitServer(Server):
    """uvicorn's server with the graceful shutdown above (and ``https`` in its start-up line
    when edgekit runs the TLS)."""

    def __init__(self, config: EdgekitUvicornConfig) -> None:
        super().__init__(config)
        self.edgekit_config = config

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in getattr(self, "servers", ()):
            server.close()  # no new connections
        self.edgekit_config.edgekit_closing = True
        for _ in range(2):  # the reads polled in the first loop turn run before the second
            await asyncio.sleep(0)
        await super().shutdown(sockets)

    def _log_started_message(self, listeners: Sequence[Any]) -> None:
        if self.edgekit_config.edgekit_tls is None:
            super()._log_started_message(listeners)
            return
        host, port = listeners[0].getsockname()[:2]
        url = "https://[%s]:%d" if ":" in host else "https://%s:%d"
        logger.info(f"Uvicorn running on {url} (Press CTRL+C to quit)", host, port)
