"""HTTPS for ``edgekit serve``: the certificate and key checked at start-up, and TLS handshakes
under the same guards as plain HTTP.

Handed an SSL context, asyncio runs each connection's TLS handshake before any protocol sees
the connection, for up to 60 s and uncounted: silent or half-sent handshakes escaped the header
timeout and the connection cap, and 1,100 of them under ``ulimit -n 1024`` locked ``/health``
out. So edgekit's listener stays plain TCP and every connection starts as a
:class:`TLSAcceptor`, which

- counts in the connection cap, and can be evicted like a connection waiting for its request
  headers (which it is, one step earlier);
- runs the handshake with :meth:`asyncio.loop.start_tls`, within the header timeout;
- hands the TLS transport to the guarded HTTP protocol (:mod:`edgekit.serve.protocol`).

A closing TLS connection waits at most :data:`SHUTDOWN_TIMEOUT` seconds for the client's
``close_notify`` (asyncio's default is 30 s, with the socket open all along).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from typing import Any

from edgekit.errors import InputError
from edgekit.serve.connections import WAITING, evict_oldest, is_closing, limits_of

__all__ = ["SHUTDOWN_TIMEOUT", "server_context", "TLSAcceptor", "tls_protocol_factory"]

#: seconds a closing TLS connection waits for the client's close_notify
SHUTDOWN_TIMEOUT = 2.0


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The server's SSL context for a PEM certificate and its private key; a file that is not
    PEM, or a key that does not match the certificate, is an :class:`InputError`."""
    def encrypted() -> str:  # called for an encrypted key: a server cannot prompt for it
        raise InputError(
            f"the private key {keyfile} is encrypted",
            hint="decrypt it for the server: openssl pkey -in KEY.pem -out PLAIN.pem",
        )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=encrypted)
    except ssl.SSLError as exc:
        raise _pair_error(certfile, keyfile, exc) from None
    except OSError as exc:
        raise InputError(f"cannot read {certfile} or {keyfile}: {exc.strerror or exc}") from None
    return context


def _pair_error(certfile: str, keyfile: str, exc: ssl.SSLError) -> InputError:
    """The user's mistake behind ``exc`` from :meth:`ssl.SSLContext.load_cert_chain`."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return InputError(
            f"the private key {keyfile} does not match the certificate {certfile}",
            hint="pass the key the certificate was issued for (--ssl-keyfile)",
        )
    try:
        ssl.create_default_context(cafile=certfile)
    except ssl.SSLError:
        return InputError(
            f"{certfile} holds no PEM certificate",
            hint="--ssl-certfile takes a PEM file (-----BEGIN CERTIFICATE-----)",
        )
    return InputError(
        f"{keyfile} holds no usable PEM private key",
        hint="--ssl-keyfile takes an unencrypted PEM key (-----BEGIN PRIVATE KEY-----)",
    )


class TLSAcceptor(asyncio.Protocol):
    """A connection while its TLS handshake runs; then ``inner`` (a guarded HTTP protocol,
    not yet connected) gets the TLS transport.

    Until the hand-over it is also the TLS transport's protocol: bytes that arrive with the
    end of the handshake are kept and passed on.
    """

    _ek_phase = WAITING  # no request in progress: the connection cap may evict it

    def __init__(self, inner: Any, context: ssl.SSLContext) -> None:
        self.inner, self.context = inner, context
        self.loop: asyncio.AbstractEventLoop = inner.loop
        self.connections: set[Any] = inner.connections
        self.transport: Any = None
        self._ek_since = 0.0
        self._task: asyncio.Task[None] | None = None
        self._early: list[bytes] = []
        self._eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.pause_reading()  # start_tls reads first
        self._ek_since = self.loop.time()
        self.connections.add(self)
        limits = limits_of(self.inner.config)
        over = len(self.connections) > limits.max_connections
        if is_closing(self.inner.config) or (over and not evict_oldest(self.connections, self)):
            self.connections.discard(self)
            transport.abort()
            return
        self._task = self.loop.create_task(self._handshake(limits.header_timeout))

    async def _handshake(self, timeout: float | None) -> None:
        try:
            tls = await self.loop.start_tls(
                self.transport, self, self.context, server_side=True,
                ssl_handshake_timeout=timeout, ssl_shutdown_timeout=SHUTDOWN_TIMEOUT,
            )  # fmt: skip
        except OSError:  # failed, timed out, evicted or aborted (ssl.SSLError is an OSError)
            self.transport.abort()
            return
        finally:
            self.connections.discard(self)
        if tls is None or tls.is_closing():  # the client left during the hand-over
            return
        tls.set_protocol(self.inner)
        self.inner.connection_made(tls)
        if self._early:
            self.inner.data_received(b"".join(self._early))
        if self._eof:
            self.inner.eof_received()

    def _ek_cancel(self) -> None:
        """Evicted by the connection cap: drop the handshake (abort: a client that does not
        read must not keep the socket open with the server's reply unsent)."""
        self.transport.abort()

    def shutdown(self) -> None:
        """The server is shutting down: drop the handshake."""
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return True  # keep the transport open: the HTTP protocol decides

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)


def tls_protocol_factory(http_class: Any, context: ssl.SSLContext) -> Callable[..., Any]:
    """A protocol factory for uvicorn (its ``http_protocol_class``) whose connections run the
    TLS handshake of ``context`` (:class:`TLSAcceptor`) before ``http_class`` takes over."""
    return functools.partial(_accept, http_class, context)


def _accept(http_class: Any, context: ssl.SSLContext, **kwargs: Any) -> TLSAcceptor:
    return TLSAcceptor(http_class(**kwargs), context)
