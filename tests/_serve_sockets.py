"""Raw-socket helpers for the hostile-client tests of ``edgekit serve`` (127.0.0.1 only)."""

from __future__ import annotations

import resource
import select
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["port_of", "open_sockets", "wait_closed", "self_signed", "fd_headroom",
           "flood_and_probe", "assert_flood_survived"]


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key for 127.0.0.1 (the openssl command)."""
    cert, key = folder / f"{name}.cert.pem", folder / f"{name}.key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def fd_headroom(needed: int = 1400) -> None:
    """Raise this process's open-file limit so that it can hold ``needed`` sockets itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))


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


def flood_and_probe(port: int, payloads: Sequence[bytes], probe: Callable[[], float],
                    log: Path) -> tuple[list[float], int]:
    """Open 100 stalled connections per payload, time 5 probes meanwhile, let the server log
    settle; returns the probe times (s) and the log's size. The connections are closed after."""
    fd_headroom(len(payloads) * 100 + 300)  # this process holds every connection itself
    socks: list[socket.socket] = []
    try:
        for payload in payloads:
            socks += open_sockets(port, 100, payload)
        times = [probe() for _ in range(5)]
        time.sleep(1.0)
        return times, log.stat().st_size
    finally:
        for s in socks:
            s.close()


def assert_flood_survived(times: list[float], log: Path, size: int) -> None:
    """Probes answered within 2 s, accept() never ran out of files, the log stayed small."""
    assert max(times) < 2.0, times
    assert "Too many open files" not in log.read_text()
    assert size < 64 * 1024, f"log grew to {size} bytes"
