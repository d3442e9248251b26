"""edgekit serve over HTTPS against hostile clients: silent and half-sent TLS handshakes are
closed within the header timeout and cannot exhaust the open files (a real uvicorn server,
raw sockets on 127.0.0.1); a bad certificate/key pair is a clear start-up error."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
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
    self_signed,
    wait_closed,
)

from edgekit.serve import free_port, server_process

pytestmark = [
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl"),
    pytest.mark.file_seconds(10),
    pytest.mark.slow,
]

#: the first 5 bytes of a ClientHello: a TLS handshake record announcing 512 bytes
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_model(tmp_path_factory.mktemp("tls") / "image.onnx")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("certs")
    return {name: self_signed(folder, name) for name in ("a", "b")}


def _tls_args(pair: tuple[Path, Path], *extra: str) -> list[str]:
    return ["--ssl-certfile", str(pair[0]), "--ssl-keyfile", str(pair[1]), *extra]


def _health(url: str, cert: Path) -> float:
    """Seconds for one ``GET /health`` over a fresh HTTPS connection (asserts 200)."""
    t0 = time.monotonic()
    r = httpx.get(url + "/health", verify=ssl.create_default_context(cafile=str(cert)), timeout=5)
    assert r.status_code == 200
    return time.monotonic() - t0


def test_silent_and_partial_tls_handshakes_close_within_the_header_timeout(
    model: Path, pairs: dict[str, tuple[Path, Path]]
) -> None:
    """Before edgekit ran the handshake itself, asyncio gave it 60 s: these stayed open."""
    header_timeout = 2.0
    args = _tls_args(pairs["a"], "--header-timeout", str(header_timeout))
    with server_process(model, args=args) as url:
        port = port_of(url)
        groups = {
            "silent": open_sockets(port, 10, b""),
            "5 bytes of a ClientHello": open_sockets(port, 10, CLIENT_HELLO_START),
        }
        assert _health(url, pairs["a"][0]) < 5.0
        limit = header_timeout + 5.0
        for name, socks in groups.items():
            closed, _ = wait_closed(socks, limit=limit)
            assert len(closed) == len(socks), f"{name}: {len(socks) - len(closed)} still open"
            assert max(closed) < limit, f"{name}: closed after {max(closed):.1f} s"
        # the connection that completed its handshake is served as before
        ca = ssl.create_default_context(cafile=str(pairs["a"][0]))
        with httpx.Client(base_url=url, verify=ca, timeout=10) as c:
            r = c.post("/predict", json={"inputs": [[0] * 28] * 28})
            assert r.status_code == 200, r.text


def test_silent_client_after_the_handshake_is_closed_at_the_header_timeout(
    model: Path, pairs: dict[str, tuple[Path, Path]]
) -> None:
    """A closing TLS connection waits a bounded time for the client's close_notify (asyncio's
    default, 30 s, kept a silent client's socket open that long after the header timeout)."""
    args = _tls_args(pairs["a"], "--header-timeout", "1")
    with server_process(model, args=args) as url:
        context = ssl._create_unverified_context()  # our own test certificate
        raw = socket.create_connection(("127.0.0.1", port_of(url)), timeout=10)
        tls = context.wrap_socket(raw)  # handshake done; then silence, and no close_notify
        sock = socket.socket(fileno=tls.detach())  # read the raw bytes from here on
        closed, _ = wait_closed([sock], limit=10.0)
        assert closed and closed[0] < 1.0 + 5.0, closed


def test_1100_stalled_tls_handshakes_under_ulimit_1024(
    model: Path, pairs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """1,100 handshakes that never finish against a server limited to 1,024 open files:
    /health over HTTPS still answers within 2 s and accept() never runs out of files."""
    log = tmp_path / "server.log"
    with server_process(model, args=_tls_args(pairs["a"]), fd_limit=1024,
                        log_path=log) as url:  # fmt: skip
        payloads = [CLIENT_HELLO_START if i % 2 else b"" for i in range(11)]
        times, size = flood_and_probe(port_of(url), payloads,
                                      lambda: _health(url, pairs["a"][0]), log)
    assert_flood_survived(times, log, size)


@pytest.mark.parametrize("case", ["mismatched pair", "garbage certificate", "garbage key"])
def test_bad_certificate_or_key_is_a_clear_start_up_error(
    case: str, model: Path, pairs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    cert, key = {
        "mismatched pair": (pairs["a"][0], pairs["b"][1]),
        "garbage certificate": (garbage, pairs["a"][1]),
        "garbage key": (pairs["a"][0], garbage),
    }[case]
    cmd = [sys.executable, "-m", "edgekit.cli", "serve", str(model), "--port", str(free_port()),
           "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out and "SSLError" not in out, out
    assert "error:" in out and "hint:" in out, out
    expected = {"mismatched pair": "does not match", "garbage certificate": "no PEM certificate",
                "garbage key": "no usable PEM private key"}[case]  # fmt: skip
    assert expected in out, out
