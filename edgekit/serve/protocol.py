"""HTTP/1.1 protocols that survive hostile clients: uvicorn's h11 / httptools protocols plus

- a **header timeout**: a request's headers must arrive within ``header_timeout`` seconds of the
  connection opening or of the request's first byte (slowloris), else ``408`` and close;
- a **body timeout**: the whole body must arrive within ``body_timeout`` seconds of the headers,
  else ``408`` and close (a client announcing 100 kB and sending 10 bytes);
- a **connection cap**: beyond ``max_connections`` open connections the oldest connection that
  has no request in progress is closed (idle keep-alive or stalled headers), so a flood of
  stalled sockets cannot starve ``/health``; when every connection is busy the new one gets
  ``503``. The cap stays below the process's file-descriptor limit (raised to the hard limit at
  start-up by :func:`raise_fd_limit`), so ``accept()`` never fails with "Too many open files";
- ``TCP_NODELAY`` on every accepted socket (uvicorn's ``--workers`` sockets lack it, which
  costs a 40 ms delayed ACK per response);
- a **graceful shutdown** (:mod:`edgekit.serve.shutdown`): once the server is closing, a
  connection accepted meanwhile is closed at once and the response in flight on each
  connection says ``Connection: close``.

With HTTPS, each connection is a :class:`edgekit.serve.tls.TLSAcceptor` until its handshake
completes (under the header timeout and the connection cap), then one of these protocols.

Settings come from :class:`ProtocolLimits` on the uvicorn config (:class:`EdgekitUvicornConfig`).
:class:`RateLimitFilter` bounds repeated log records (one flood of errors cannot fill a disk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn import Config
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "ProtocolLimits",
    "EdgekitUvicornConfig",
    "GuardedH11Protocol",
    "guarded_protocol_class",
    "RateLimitFilter",
    "install_log_rate_limit",
    "raise_fd_limit",
    "auto_max_connections",
    "accept_backlog",
    "limits_of",
    "evict_oldest",
    "is_closing",
    "WAITING",
]

logger = logging.getLogger("edgekit.serve")

_FD_RESERVE = 64  # descriptors kept free for model files, logs, pipes, the listening socket
_IDLE, _HEADERS, _BODY, _DONE = 0, 1, 2, 3
#: the phase of a connection waiting for the client (a TLS handshake, a request's headers): no
#: request in progress, so the connection cap may evict it
WAITING = _HEADERS


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


class EdgekitUvicornConfig(Config):
    """A uvicorn :class:`~uvicorn.Config` that carries :class:`ProtocolLimits` to the protocols
    (it is pickled to each ``--workers`` process along with the rest of the config).

    ``tls``: (certificate, key) PEM paths: edgekit runs the TLS itself
    (:mod:`edgekit.serve.tls`; uvicorn's own listener stays plain TCP). ``edgekit_closing``
    turns True when the server begins to shut down (:mod:`edgekit.serve.shutdown`).
    """

    def __init__(
        self,
        *args: Any,
        limits: ProtocolLimits | None = None,
        tls: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.edgekit_limits = limits or ProtocolLimits()
        self.edgekit_tls = tls
        self.edgekit_closing = False

    def load(self) -> None:
        super().load()
        if self.edgekit_tls is not None:
            from edgekit.serve.tls import server_context, tls_protocol_factory

            context = server_context(*self.edgekit_tls)
            factory = tls_protocol_factory(self.http_protocol_class, context)
            self.http_protocol_class = factory  # type: ignore[assignment]  # called like a class


def limits_of(config: Any) -> ProtocolLimits:
    """The :class:`ProtocolLimits` of a uvicorn config (defaults for a plain uvicorn one)."""
    return getattr(config, "edgekit_limits", None) or _DEFAULT_LIMITS


def is_closing(config: Any) -> bool:
    """True once the server of ``config`` has begun to shut down."""
    return bool(getattr(config, "edgekit_closing", False))


def evict_oldest(connections: set[Any], keep: Any) -> bool:
    """Close the longest-waiting connection (other than ``keep``) with no request in progress
    (phase :data:`WAITING`); False if there is none."""
    victim, oldest = None, float("inf")
    for conn in connections:
        if conn is keep or getattr(conn, "_ek_phase", _DONE) != WAITING:
            continue
        if conn._ek_since < oldest and not conn.transport.is_closing():
            victim, oldest = conn, conn._ek_since
    if victim is None:
        return False
    victim._ek_cancel()
    victim.transport.close()
    connections.discard(victim)
    return True


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message, "hint": None}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class _CoalescingTransport:
    """Joins the writes of one response (uvicorn writes the head and the body separately: with
    ``TCP_NODELAY`` that is two syscalls and two packets) into one, flushed when the response
    completes or, at the latest, on the next event-loop iteration."""

    __slots__ = ("_transport", "_loop", "_buf", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._buf: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buf.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._buf:
            data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
            self._buf.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _GuardMixin:
    """Timers, TCP_NODELAY and the connection cap, shared by the h11 and httptools protocols."""

    config: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    shutdown: Callable[[], None]  # uvicorn's: close if idle, else after the response in flight

    _ek_phase: int = _IDLE
    _ek_since: float = 0.0
    _ek_timer: asyncio.TimerHandle | None = None
    _ek_deadline: float | None = None
    _ek_got_bytes: bool = False
    _ek_header_bytes: int = 0

    def _ek_limits(self) -> ProtocolLimits:
        return limits_of(self.config)

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if is_closing(self.config):  # accepted as the server began to shut down: refuse it
            self.shutdown()
            return
        self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - a socket closed meanwhile
                pass
        limits = self._ek_limits()
        over = len(self.connections) > limits.max_connections
        if over and not evict_oldest(self.connections, self):
            _log_limited("connection cap of %d reached: refusing one", limits.max_connections)
            transport.write(_raw_response(503, "Service Unavailable", "too many connections"))
            transport.close()
            return
        self._ek_enter(_HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ek_cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    # -- phases -------------------------------------------------------------------------
    def _ek_enter(self, phase: int) -> None:
        """Switch to ``phase``: set the header/body deadline, or stop timing.

        One timer per connection is re-armed lazily (it fires, sees a later deadline, and
        waits again), so a busy keep-alive connection does not create timers per request.
        """
        if phase == self._ek_phase and self._ek_deadline is not None:
            return  # trickling bytes do not extend the deadline
        if phase != self._ek_phase:
            self._ek_header_bytes = 0
        self._ek_phase = phase
        now = self._ek_since = self.loop.time()
        limits = self._ek_limits()
        timeout = (
            limits.header_timeout
            if phase == _HEADERS
            else limits.body_timeout
            if phase == _BODY
            else None
        )
        if timeout is None:
            self._ek_deadline = None
            return
        deadline = self._ek_deadline = now + timeout
        timer = self._ek_timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._ek_timer = self.loop.call_at(deadline, self._ek_fire)

    def _ek_fire(self) -> None:
        self._ek_timer = None
        deadline = self._ek_deadline
        if deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < deadline:
            self._ek_timer = self.loop.call_at(deadline, self._ek_fire)
            return
        self._ek_expired(self._ek_phase)

    def _ek_cancel(self) -> None:
        self._ek_deadline = None
        if self._ek_timer is not None:
            self._ek_timer.cancel()
            self._ek_timer = None

    def _ek_expired(self, phase: int) -> None:
        self._ek_deadline = None
        what = "headers" if phase == _HEADERS else "body"
        _log_limited("closing a connection whose request %s did not arrive in time", what)
        started = self.cycle is not None and getattr(self.cycle, "response_started", False)
        if not started and (phase == _BODY or self._ek_has_bytes()):
            msg = f"the request {what} did not arrive in time"
            self.transport.write(_raw_response(408, "Request Timeout", msg))
        self.transport.close()

    def _ek_has_bytes(self) -> bool:
        return self._ek_phase == _HEADERS and self._ek_got_bytes

    def _ek_count(self, n: int) -> None:
        """Count bytes that arrived while the headers are incomplete (after the parser ran)."""
        if self._ek_phase != _HEADERS:
            return
        self._ek_header_bytes += n
        limit = self._ek_limits().max_header_bytes
        if self._ek_header_bytes > limit and not self.transport.is_closing():
            _log_limited("closing a connection whose request headers exceed %d bytes", limit)
            msg = f"the request headers are over the limit of {limit} bytes"
            self.transport.write(_raw_response(431, "Request Header Fields Too Large", msg))
            self.transport.close()

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()  # type: ignore[misc]
        # waiting for the next request: uvicorn's keep-alive timer guards the idle time; the
        # connection may be evicted meanwhile
        self._ek_phase, self._ek_since, self._ek_got_bytes = _HEADERS, self.loop.time(), False
        self._ek_deadline = None
        self._ek_header_bytes = 0


class GuardedH11Protocol(_GuardMixin, H11Protocol):  # type: ignore[misc]
    """uvicorn's h11 protocol with the guards of :class:`_GuardMixin`."""

    def data_received(self, data: bytes) -> None:
        self._ek_got_bytes = True
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._ek_enter(_HEADERS)
            self._ek_count(len(data))
        elif state is h11.SEND_BODY:
            self._ek_enter(_BODY)
        else:
            self._ek_enter(_DONE)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a pipelined request may already be complete; else wait for the next one's headers
        if self.conn.their_state is not h11.IDLE:
            self._ek_phase = _DONE

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown (close if idle, else after the response in flight), and
        that response says ``Connection: close``: uvicorn's h11 cycle adds the header only when
        the request carried it, so it is added to the request's headers."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            headers = cycle.scope["headers"]
            if CLOSE_HEADER not in headers:
                headers.append(CLOSE_HEADER)
        super().shutdown()


def _httptools_class() -> type[Any] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is optional
        return None

    class GuardedHttpToolsProtocol(_GuardMixin, HttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol with the guards of :class:`_GuardMixin`."""

        def data_received(self, data: bytes) -> None:
            self._ek_got_bytes = True
            super().data_received(data)
            self._ek_count(len(data))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._ek_enter(_HEADERS)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._ek_enter(_BODY)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._ek_enter(_DONE)

    GuardedHttpToolsProtocol.__module__ = __name__
    GuardedHttpToolsProtocol.__qualname__ = "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


GuardedHttpToolsProtocol = _httptools_class()
_DEFAULT_LIMITS = ProtocolLimits()


def guarded_protocol_class(http: str = "auto") -> type[Any]:
    """The guarded protocol for ``http`` (``"auto"``: httptools when installed, else h11)."""
    if http == "h11" or (http == "auto" and GuardedHttpToolsProtocol is None):
        return GuardedH11Protocol
    if GuardedHttpToolsProtocol is None:
        from edgekit.errors import MissingDependencyError

        raise MissingDependencyError("httptools is not installed", hint="pip install httptools")
    return GuardedHttpToolsProtocol


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


# ---------------------------------------------------------------------------------------------
# rate-limited logging
# ---------------------------------------------------------------------------------------------
class RateLimitFilter(logging.Filter):
    """Let at most ``burst`` records of one message template through per ``period`` seconds
    (defaults 10 per 10 s); the first record after a quiet spell says how many were dropped.
    ``clock`` (default :func:`time.monotonic`) gives the time in seconds."""

    def __init__(
        self, burst: int = 10, period: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst, self.period, self.clock = burst, period, clock
        self._seen: dict[tuple[str, Any], list[float | int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg).split("\n", 1)[0][:200])
        now = self.clock()
        with self._lock:
            slot = self._seen.get(key)
            if slot is None or now - slot[0] >= self.period:
                dropped = int(slot[2]) if slot else 0
                if len(self._seen) > 1000:  # bound the table itself
                    self._seen.clear()
                self._seen[key] = [now, 1, 0]
                if dropped:
                    record.msg = f"{record.msg} [{dropped} similar messages suppressed]"
                return True
            if slot[1] < self.burst:
                slot[1] += 1
                return True
            slot[2] += 1
            return False


_RATE_LIMITED = ("uvicorn.error", "asyncio", "edgekit.serve")


def install_log_rate_limit(burst: int = 10, period: float = 10.0) -> RateLimitFilter:
    """Attach one :class:`RateLimitFilter` to uvicorn's, asyncio's and edgekit's loggers (and to
    their handlers, so records propagated from child loggers are bounded too)."""
    flt = RateLimitFilter(burst, period)
    for name in _RATE_LIMITED:
        lg = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in lg.filters):
            lg.addFilter(flt)
    return flt


def _log_limited(msg: str, *args: Any) -> None:
    logger.warning(msg, *args)
