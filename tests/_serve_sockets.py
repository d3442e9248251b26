"""Raw-socket helpers for the hostile-client tests of ``edgekit serve`` (127.0.0.1 only)."""

from __future__ import annotations

import select
import socket
import time

__all__ = ["port_of", "open_sockets", "wait_closed"]


def port_of(url: str) -> int:
    """The port of a server URL such as ``http://127.0.0.1:8123``."""
    return int(url.rsplit(":", 1)[1])


def open_sockets(port: int, n: int, payload: bytes) -> list[socket.socket]:
    """``n`` connections to ``127.0.0.1:port``, each sent ``payload`` (if any)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if payload:
            s.sendall(payload)
        socks.append(s)
    return socks


def wait_closed(socks: list[socket.socket], limit: float) -> tuple[list[float], list[bytes]]:
    """Seconds until the server closed each socket (bounded by ``limit``) and what it sent."""
    t0 = time.monotonic()
    pending = {s.fileno(): s for s in socks}
    closed: list[float] = []
    replies: dict[int, bytes] = {}
    while pending and time.monotonic() - t0 < limit:
        ready, _, _ = select.select(list(pending), [], [], 0.2)
        for fd in ready:
            try:
                data = pending[fd].recv(65536)
            except OSError:
                data = b""
            if data:
                replies[fd] = replies.get(fd, b"") + data
                continue
            closed.append(time.monotonic() - t0)
            pending.pop(fd).close()
    for s in pending.values():
        s.close()
    return closed, list(replies.values())
