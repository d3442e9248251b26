"""HTTP/1.1 protocols that survive hostile clients: uvicorn's h11 / httptools protocols plus

- a **header timeout**: a request's headers must arrive within ``header_timeout`` seconds of the
  connection opening or of the request's first byte (slowloris), else ``408`` and close;
- a **body timeout**: the whole body must arrive within ``body_timeout`` seconds of the headers,
  else ``408`` and close (a client announcing 100 kB and sending 10 bytes);
- a **connection cap**: beyond ``max_connections`` open connections the oldest connection that
  has no request in progress is closed (idle keep-alive or stalled headers), so a flood of
  stalled sockets cannot starve ``/health``; when every connection is busy the new one gets
  ``503``. The cap stays below the process's file-descriptor limit (raised to the hard limit at
  start-up by :func:`edgekit.serve.connections.raise_fd_limit`), so ``accept()`` never fails
  with "Too many open files";
- ``TCP_NODELAY`` on every accepted socket (uvicorn's ``--workers`` sockets lack it, which
  costs a 40 ms delayed ACK per response);
- a **graceful shutdown** (:mod:`edgekit.serve.shutdown`): once the server is closing, a
  connection accepted meanwhile is closed at once and the response in flight on each
  connection says ``Connection: close``.

With HTTPS, each connection is a :class:`edgekit.serve.tls.TLSAcceptor` until its handshake
completes (under the header timeout and the connection cap), then one of these protocols.

Settings come from :class:`~edgekit.serve.connections.ProtocolLimits` on the uvicorn config
(:class:`EdgekitUvicornConfig`); the connection cap and file-descriptor limits live in
:mod:`edgekit.serve.connections`.
:class:`RateLimitFilter` bounds repeated log records (one flood of errors cannot fill a disk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn import Config
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol

from edgekit.serve.connections import (
    BODY,
    DONE,
    HEADERS,
    IDLE,
    ProtocolLimits,
    evict_oldest,
    is_closing,
    limits_of,
)
from edgekit.serve.tls import server_context, tls_protocol_factory

__all__ = [
    "EdgekitUvicornConfig",
    "GuardedH11Protocol",
    "guarded_protocol_class",
    "RateLimitFilter",
    "install_log_rate_limit",
]

logger = logging.getLogger("edgekit.serve")


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
            context = server_context(*self.edgekit_tls)
            factory = tls_protocol_factory(self.http_protocol_class, context)
            self.http_protocol_class = factory  # type: ignore[assignment]  # called like a class


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message, "hint": None}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class _CoalescingTransport(asyncio.Transport):
    """Joins the writes of one response (uvicorn writes the head and the body separately: with
    ``TCP_NODELAY`` that is two syscalls and two packets) into one, flushed when the response
    completes or, at the latest, on the next event-loop iteration. The other calls uvicorn
    makes go to the socket's transport."""

    __slots__ = ("_transport", "_loop", "_buf", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport, self._loop = transport, loop
        self._buf: list[bytes | bytearray | memoryview] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
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

    def abort(self) -> None:
        self._buf.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()


class _GuardMixin:
    """Timers, TCP_NODELAY and the connection cap, shared by the h11 and httptools protocols."""

    config: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    shutdown: Callable[[], None]  # uvicorn's: close if idle, else after the response in flight

    _ek_phase: int = IDLE
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
        self.transport = _CoalescingTransport(transport, self.loop)
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
        self._ek_enter(HEADERS)

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
            if phase == HEADERS
            else limits.body_timeout
            if phase == BODY
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
        what = "headers" if phase == HEADERS else "body"
        _log_limited("closing a connection whose request %s did not arrive in time", what)
        started = self.cycle is not None and getattr(self.cycle, "response_started", False)
        if not started and (phase == BODY or self._ek_has_bytes()):
            msg = f"the request {what} did not arrive in time"
            self.transport.write(_raw_response(408, "Request Timeout", msg))
        self.transport.close()

    def _ek_has_bytes(self) -> bool:
        return self._ek_phase == HEADERS and self._ek_got_bytes

    def _ek_count(self, n: int) -> None:
        """Count bytes that arrived while the headers are incomplete (after the parser ran)."""
        if self._ek_phase != HEADERS:
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
        self._ek_phase, self._ek_since, self._ek_got_bytes = HEADERS, self.loop.time(), False
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
            self._ek_enter(HEADERS)
            self._ek_count(len(data))
        elif state is h11.SEND_BODY:
            self._ek_enter(BODY)
        else:
            self._ek_enter(DONE)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a pipelined request may already be complete; else wait for the next one's headers
        if self.conn.their_state is not h11.IDLE:
            self._ek_phase = DONE

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
            self._ek_enter(HEADERS)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._ek_enter(BODY)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._ek_enter(DONE)

    GuardedHttpToolsProtocol.__module__ = __name__
    GuardedHttpToolsProtocol.__qualname__ = "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


GuardedHttpToolsProtocol = _httptools_class()


def guarded_protocol_class(http: str = "auto") -> type[Any]:
    """The guarded protocol for ``http`` (``"auto"``: httptools when installed, else h11)."""
    if http == "h11" or (http == "auto" and GuardedHttpToolsProtocol is None):
        return GuardedH11Protocol
    if GuardedHttpToolsProtocol is None:
        from edgekit.errors import MissingDependencyError

        raise MissingDependencyError("httptools is not installed", hint="pip install httptools")
    return GuardedHttpToolsProtocol


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
