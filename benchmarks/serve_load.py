"""Load test of ``edgekit serve``: single-sample ``POST /predict`` requests/s and latency.

Measures, in one run and on the same model (default: ``models/fashion_cnn.keras`` exported to
ONNX), ``edgekit serve`` with 1 and 2 workers, with and without micro-batching, next to a
minimal starlette + onnxruntime app (``_minimal_serve_app.py``) with 1 and 2 processes, at
1, 8 and 32 concurrent keep-alive connections. Load comes from ``wrk`` when installed, else
from a bounded asyncio client (raw sockets, pre-encoded requests) in this process. Every
server runs in a subprocess on a free 127.0.0.1 port, all at once; each cell gets
``--duration`` seconds split into ``--rounds`` rounds that interleave the servers (the
starting one rotating), so drifting load from other processes hits them all alike.

    python benchmarks/serve_load.py                        # the full table
    python benchmarks/serve_load.py --model out/fashion_cnn.onnx --duration 3 --json out.json
    python benchmarks/serve_load.py --only edgekit-1w --connections 8

Targets checked at the end (issue #14): one worker >= 90% of the minimal app (1 process);
2 workers >= 1.4x one worker (32 connections); micro-batching >= 1.5x without (32 conns).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from _runtime_common import add_model_args, model_path

from edgekit.serve import free_port, server_process

HERE = Path(__file__).resolve().parent
SERVERS: dict[str, tuple[str, list[str]]] = {
    "minimal-1p": ("minimal", ["1"]),
    "minimal-2p": ("minimal", ["2"]),
    "edgekit-1w": ("edgekit", []),
    "edgekit-1w-batching": ("edgekit", ["--batching"]),
    "edgekit-2w": ("edgekit", ["--workers", "2"]),
    "edgekit-2w-batching": ("edgekit", ["--workers", "2", "--batching"]),
}


def _body(seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (28, 28)).tolist()
    return json.dumps({"inputs": img}).encode()


@contextlib.contextmanager
def _minimal_server(model: Path, workers: int) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = HERE / "_minimal_serve_app.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(model), str(port), str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the minimal app did not start") from None
                time.sleep(0.1)
        time.sleep(1.0 if workers > 1 else 0.2)  # let every process bind
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@contextlib.contextmanager
def _server(kind: str, args: list[str], model: Path) -> Iterator[str]:
    if kind == "minimal":
        with _minimal_server(model, int(args[0])) as url:
            yield url
    else:
        with server_process(model, args=args) as url:
            if "--workers" in args:
                time.sleep(1.0)  # /health answered by one worker; let the others finish loading
            yield url


# ---------------------------------------------------------------------------------------------
# load generators
# ---------------------------------------------------------------------------------------------
def _wrk(url: str, body: bytes, connections: int, duration: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
        script = f.name
    try:
        seconds = max(1, round(duration))  # wrk takes whole seconds
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script]
        out = subprocess.run(
            [*cmd, url + "/predict"], capture_output=True, text=True, timeout=duration + 60
        ).stdout
    finally:
        os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock_err = re.search(r"Socket errors:.*", out)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return {
        "requests_per_s": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": sock_err.group(0) if sock_err else None,  # type: ignore[dict-item]
    }


async def _client(
    host: str, port: int, request: bytes, stop: float, lat: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(m.group(1)) if m else 0)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    finally:
        writer.close()


def _own_client(url: str, body: bytes, connections: int, duration: float) -> dict[str, float]:
    host, port = url.split("//")[1].split(":")
    request = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    lat: list[float] = []
    errors: list[int] = []

    async def main() -> float:
        t0 = time.perf_counter()
        stop = t0 + duration
        await asyncio.gather(
            *(_client(host, int(port), request, stop, lat, errors) for _ in range(connections))
        )
        return time.perf_counter() - t0

    wall = asyncio.run(main())
    ms = np.asarray(lat) * 1000
    return {
        "requests_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errors),
        "socket_errors": None,
    }


def measure(
    url: str, body: bytes, connections: int, duration: float, tool: str, warmup: bool = True
) -> dict:
    """One cell: ``connections`` keep-alive connections for ``duration`` seconds."""
    fn = _wrk if tool == "wrk" else _own_client
    if warmup:
        fn(url, body, connections, 1.0)
    return fn(url, body, connections, duration)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _table(results: dict[str, dict[int, dict]], conns: list[int]) -> str:
    head = "| server | " + " | ".join(f"{c} conn: req/s (p50 ms)" for c in conns) + " |"
    lines = [head, "|" + "---|" * (len(conns) + 1)]
    for name, row in results.items():
        cells = []
        for c in conns:
            r = row.get(c)
            cells.append(
                "-"
                if r is None
                else f"{r['requests_per_s']:,.0f} ({r['p50_ms']:.2f})"
                + (f" {r['errors']} err" if r["errors"] else "")
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _targets(results: dict[str, dict[int, dict]], conns: list[int]) -> list[str]:
    def rps(name: str, c: int) -> float | None:
        r = results.get(name, {}).get(c)
        return r["requests_per_s"] if r else None

    checks = []
    for c in conns:
        a, b = rps("edgekit-1w", c), rps("minimal-1p", c)
        if a and b:
            checks.append(f"1 worker vs minimal app, {c} conn: {a / b:.0%} (target >= 90%)")
    top = max(conns)
    a, b = rps("edgekit-2w", top), rps("edgekit-1w", top)
    if a and b:
        checks.append(f"2 workers vs 1, {top} conn: {a / b:.2f}x (target >= 1.4x)")
    a, b = rps("edgekit-1w-batching", top), rps("edgekit-1w", top)
    if a and b:
        checks.append(
            f"micro-batching vs none, 1 worker, {top} conn: {a / b:.2f}x (target >= 1.5x)"
        )
    a, b = rps("edgekit-2w-batching", top), rps("edgekit-2w", top)
    if a and b:
        checks.append(f"micro-batching vs none, 2 workers, {top} conn: {a / b:.2f}x")
    a, b = rps("edgekit-1w-batching", 1), rps("edgekit-1w", 1)
    if a and b and 1 in conns:
        checks.append(f"micro-batching latency cost, 1 conn: {a / b:.2f}x requests/s")
    return checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--connections", default="1,8,32", help="comma list (default 1,8,32)")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per cell (default 6)")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    ap.add_argument("--only", default=None, help=f"comma list of {', '.join(SERVERS)}")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator (default: wrk when installed)")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    conns = [int(c) for c in args.connections.split(",")]
    names = args.only.split(",") if args.only else list(SERVERS)
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        ap.error(f"unknown server(s) {unknown}")
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    tool = "wrk" if use_wrk else "python"
    body = _body()
    results: dict[str, dict[int, dict]] = {name: {} for name in names}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        path = model_path(args.model, args.keras, Path(tmp))
        urls = {name: stack.enter_context(_server(*SERVERS[name], path)) for name in names}
        for c in conns:
            # interleaved rounds, the starting server rotating: drift in the machine's load
            # (other processes) hits every server alike
            runs: dict[str, list[dict]] = {name: [] for name in names}
            for rnd in range(args.rounds):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for name in order:
                    seconds = args.duration / args.rounds
                    runs[name].append(measure(urls[name], body, c, seconds, tool, rnd == 0))
            for name in names:
                rs = runs[name]
                results[name][c] = r = {
                    "requests_per_s": float(np.mean([x["requests_per_s"] for x in rs])),
                    "p50_ms": float(np.median([x["p50_ms"] for x in rs])),
                    "p99_ms": float(np.median([x["p99_ms"] for x in rs])),
                    "errors": sum(x["errors"] for x in rs),
                }
                print(f"{name:22s} {c:3d} conn: {r['requests_per_s']:8.0f} req/s, "
                      f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                      f"{r['errors']} errors", file=sys.stderr)  # fmt: skip
    cpu = f"{_cpu()}, {os.cpu_count()} vCPUs"
    print(f"\nsingle-sample /predict on {Path(path).name}, {cpu}, load from {tool}, "
          f"{args.duration:g} s per cell in {args.rounds} interleaved rounds\n")  # fmt: skip
    print(_table(results, conns))
    checks = _targets(results, conns)
    if checks:
        print("\n" + "\n".join(f"- {c}" for c in checks))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "client": tool, "results": results,
                                         "targets": checks}, indent=2))  # fmt: skip
    errors = sum(r["errors"] for row in results.values() for r in row.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
