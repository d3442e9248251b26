"""The connection cap and open-file limits of ``edgekit serve``, shared by the guarded HTTP
protocols (:mod:`edgekit.serve.protocol`) and the TLS handshakes (:mod:`edgekit.serve.tls`).

A connection's phase says what it waits for; one waiting for the client with no request in
progress (:data:`WAITING`) may be evicted by the connection cap.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import MutableSet
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ProtocolLimits",
    "Connection",
    "IDLE",
    "HEADERS",
    "BODY",
    "DONE",
    "WAITING",
    "limits_of",
    "is_closing",
    "evict_oldest",
    "raise_fd_limit",
    "accept_backlog",
    "auto_max_connections",
]

logger = logging.getLogger("edgekit.serve")

_FD_RESERVE = 64  # descriptors kept free for model files, logs, pipes, the listening socket
#: connection phases: no request yet, headers arriving, body arriving, request complete
IDLE, HEADERS, BODY, DONE = 0, 1, 2, 3
#: the phase of a connection waiting for the client (a TLS handshake, a request's headers): no
#: request in progress, so the connection cap may evict it
WAITING = HEADERS


@dataclass(frozen=True)
class ProtocolLimits:
    """Per-connection limits of the guarded protocols (seconds; None disables a timeout).

    Attributes:
        header_timeout: headers must be complete within this; default 10 s.
        body_timeout: the body must be complete within this after the headers; default 30 s.
        max_connections: open connections per process; default 1000.
        max_header_bytes: a request whose headers grow past this gets 431; default 64 KiB.
    """

    header_timeout: float | None = 10.0
    body_timeout: float | None = 30.0
    max_connections: int = 1000
    max_header_bytes: int = 64 * 1024


_DEFAULT_LIMITS = ProtocolLimits()


class Connection(Protocol):
    """What the connection cap needs of a connection (a guarded protocol, a TLS acceptor)."""

    transport: asyncio.BaseTransport
    _ek_since: float

    def _ek_cancel(self) -> None: ...


def limits_of(config: object) -> ProtocolLimits:
    """The :class:`ProtocolLimits` of a uvicorn config (defaults for a plain uvicorn one)."""
    return getattr(config, "edgekit_limits", None) or _DEFAULT_LIMITS


def is_closing(config: object) -> bool:
    """True once the server of ``config`` has begun to shut down."""
    return bool(getattr(config, "edgekit_closing", False))


def evict_oldest(connections: MutableSet[Connection], keep: object) -> bool:
    """Close the longest-waiting connection (other than ``keep``) with no request in progress
    (phase :data:`WAITING`); False if there is none."""
    victim, oldest = None, float("inf")
    for conn in connections:
        if conn is keep or getattr(conn, "_ek_phase", DONE) != WAITING:
            continue
        if conn._ek_since < oldest and not conn.transport.is_closing():
            victim, oldest = conn, conn._ek_since
    if victim is None:
        return False
    victim._ek_cancel()
    victim.transport.close()
    connections.discard(victim)
    return True


# ---------------------------------------------------------------------------------------------
# file descriptors
# ---------------------------------------------------------------------------------------------
def raise_fd_limit(want: int = 65536) -> int:
    """Raise the soft open-file limit towards ``want`` (default 65536, at most the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a sandbox refusing it
            pass
    return soft


def accept_backlog(fd_limit: int) -> int:
    """The listen backlog for ``fd_limit``: asyncio accepts up to this many sockets in one go,
    before any connection is counted, so it must fit below the limit with the cap."""
    return max(16, min(2048, (fd_limit - _FD_RESERVE) // 8))


def auto_max_connections(requested: int | None, fd_limit: int) -> int:
    """``requested`` (default 1000 per process), kept below ``fd_limit`` minus a reserve and
    the sockets asyncio may accept before counting them (a few :func:`accept_backlog`)."""
    ceiling = max(16, fd_limit - _FD_RESERVE - 3 * accept_backlog(fd_limit))
    want = 1000 if requested is None else requested
    if requested is not None and want > ceiling:
        logger.warning(
            "max connections lowered from %d to %d (open-file limit %d)", want, ceiling, fd_limit
        )
    return min(want, ceiling)
