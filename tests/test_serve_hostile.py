"""edgekit serve against hostile clients: slow headers/bodies, silent and stalled connections,
a connection flood under ``ulimit -n 1024``, overload, bounded error logs (raw sockets on
127.0.0.1 against a real uvicorn server)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
from _runtime_models import make_image_model
from _serve_sockets import (
    assert_flood_survived,
    flood_and_probe,
    open_sockets,
    port_of,
    wait_closed,
)

from edgekit.serve import server_process
from edgekit.serve.connections import accept_backlog, auto_max_connections
from edgekit.serve.protocol import RateLimitFilter

pytestmark = pytest.mark.file_seconds(10)

PARTIAL_HEADERS = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-"
PARTIAL_BODY = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n0123456789"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_model(tmp_path_factory.mktemp("hostile") / "image.onnx")


@pytest.mark.slow
def test_slow_and_silent_clients_are_closed_within_the_timeouts(model: Path) -> None:
    """The issue's battery, scaled: partial headers, a 100 kB body announced and 10 bytes
    sent, and silent connections are all closed within the (1 s) timeouts, with a 408 for the
    clients that started a request; the server keeps answering meanwhile."""
    args = ["--header-timeout", "1", "--body-timeout", "1", "--keep-alive-timeout", "1"]
    with server_process(model, args=args) as url:
        port = port_of(url)
        groups = {
            "partial headers": open_sockets(port, 50, PARTIAL_HEADERS),
            "partial body": open_sockets(port, 20, PARTIAL_BODY),
            "silent": open_sockets(port, 10, b""),
        }
        health = httpx.get(url + "/health", timeout=5)
        assert health.status_code == 200
        for name, socks in groups.items():
            closed, replies = wait_closed(socks, limit=6)
            assert len(closed) == len(socks), f"{name}: {len(socks) - len(closed)} still open"
            assert max(closed) < 3.0, f"{name}: closed after {max(closed):.1f} s"
            if name != "silent":
                assert len(replies) == len(socks)
                assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies), replies[0]
                assert b"did not arrive in time" in replies[0]
        # an idle keep-alive connection is closed after --keep-alive-timeout too
        s = open_sockets(port, 1, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, replies = wait_closed(s, limit=6)
        assert closed and replies[0].startswith(b"HTTP/1.1 200 ")


def test_default_timeouts_are_at_most_30_s() -> None:
    from edgekit.serve import ServeConfig

    cfg = ServeConfig()
    assert 0 < cfg.header_timeout <= 30 and 0 < cfg.body_timeout <= 30
    assert 0 < cfg.keep_alive_timeout <= 30


@pytest.mark.slow
def test_1100_stalled_connections_under_ulimit_1024(model: Path, tmp_path: Path) -> None:
    """1,100 stalled connections against a server limited to 1,024 open files: /health still
    answers within 2 s, accept() never hits "Too many open files", the log stays small."""
    log = tmp_path / "server.log"

    def health() -> float:
        t0 = time.monotonic()
        assert httpx.get(url + "/health", timeout=5).status_code == 200
        return time.monotonic() - t0

    with server_process(model, fd_limit=1024, log_path=log) as url:
        times, size = flood_and_probe(port_of(url), [b"GET /health HTTP/1.1\r\nHo"] * 11,
                                      health, log)
    assert_flood_survived(times, log, size)
    assert auto_max_connections(None, 1024) + 3 * accept_backlog(1024) < 1024


def test_in_flight_limit_answers_503_with_retry_after(model: Path) -> None:
    """A request whose body is still arriving holds the only in-flight slot: the next request
    gets 503 + Retry-After, probes (/health) still answer, and after it the slot is free."""
    with server_process(model, args=["--max-in-flight", "1"]) as url:
        (slow,) = open_sockets(port_of(url), 1, PARTIAL_BODY)
        time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.get("/metadata")
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1" and "limit of 1" in r.json()["error"]
            assert c.get("/health").status_code == 200
            slow.close()
            deadline = time.monotonic() + 5
            while c.get("/metadata").status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert c.get("/metadata").status_code == 200


def test_connection_cap_evicts_stalled_connections(model: Path) -> None:
    """Over --max-connections, the longest-waiting connection without a request in progress
    is closed, so a new client is served."""
    with server_process(model, args=["--max-connections", "20"]) as url:
        stalled = open_sockets(port_of(url), 40, b"GET /health HTTP/1.1\r\nHo")
        r = httpx.get(url + "/health", timeout=5)
        assert r.status_code == 200
        closed, _ = wait_closed(stalled, limit=1.0)
        assert len(closed) >= 20  # the oldest ones were evicted


def test_malformed_http_gets_400_and_huge_headers_are_refused(model: Path) -> None:
    with server_process(model) as url:
        (s,) = open_sockets(port_of(url), 1, b"NOT HTTP AT ALL\r\n\r\n")
        _, replies = wait_closed([s], limit=5)
        assert replies and replies[0].startswith(b"HTTP/1.1 400 ")
        huge = b"GET /health HTTP/1.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n"
        (s,) = open_sockets(port_of(url), 1, huge)
        closed, replies = wait_closed([s], limit=5)
        assert closed  # refused, not buffered forever
        assert replies[0][:12] in (b"HTTP/1.1 431", b"HTTP/1.1 400"), replies[0][:100]


def test_rate_limit_filter_bounds_repeated_records() -> None:
    """A flood of identical errors logs ``burst`` records per period, then one summary."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    lg = logging.getLogger("edgekit.test.ratelimit")
    lg.propagate = False
    handler = Keep()
    lg.addHandler(handler)
    now = [0.0]
    flt = RateLimitFilter(burst=5, period=10.0, clock=lambda: now[0])
    lg.addFilter(flt)
    try:
        for _ in range(10_000):
            lg.error("socket.accept() out of system resource\nsocket: %s", "fd=9")
        lg.error("another message")
        assert len(records) == 6
        now[0] = 10.5
        lg.error("socket.accept() out of system resource\nsocket: %s", "fd=9")
        assert "9995 similar messages suppressed" in records[-1].getMessage()
    finally:
        lg.removeHandler(handler)
        lg.removeFilter(flt)
