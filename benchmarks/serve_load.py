"""Load test of ``edgekit serve``: requests/s and p50/p99 latency of ``POST /predict``.

Starts the real uvicorn server (``edgekit serve``) in a subprocess on a free localhost port and
sends ``--requests`` single-sample requests from ``--clients`` concurrent clients (threads with
keep-alive httpx clients). Inputs are random raw samples shaped like the model's input (text
for text models).

    python benchmarks/serve_load.py                      # exports models/fashion_cnn.keras
    python benchmarks/serve_load.py --model out/fashion_cnn.onnx --clients 8 --requests 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from _runtime_common import add_model_args, model_path

from edgekit.runtime import EdgeModel
from edgekit.serve import server_process


def _bodies(model: EdgeModel, n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    if model.is_text:
        words = [w for w in model.tokenizer.vocabulary[2:200]] or ["hello"]
        return [
            json.dumps({"text": " ".join(rng.choice(words, 12).tolist())}).encode()
            for _ in range(n)
        ]
    spec = model.inputs[0]
    shape = [d for d in spec.shape[1:]]
    if any(d is None for d in shape):
        sys.exit(f"error: input {spec.name} has dynamic dims {spec.shape}; cannot make samples")
    if model.preprocessing is not None and model.preprocessing.raw_dtype == "uint8":
        xs = rng.integers(0, 256, (n, *shape)).tolist()
    else:
        xs = rng.random((n, *shape)).tolist()
    return [json.dumps({"inputs": x}).encode() for x in xs]


def run_load(url: str, bodies: list[bytes], clients: int) -> dict:
    """Send every body once from ``clients`` threads; latency stats and throughput."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(chunk: list[bytes]) -> None:
        local: list[float] = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for body in chunk:
                t0 = time.perf_counter()
                r = c.post("/predict", content=body, headers={"content-type": "application/json"})
                local.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    with lock:
                        errors.append(f"{r.status_code} {r.text[:200]}")
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(bodies[i::clients],)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000.0
    return {
        "requests": len(bodies),
        "clients": clients,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": wall,
        "requests_per_s": len(bodies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--requests", type=int, default=2000, help="timed requests (default 2000)")
    ap.add_argument("--warmup", type=int, default=100, help="untimed requests (default 100)")
    ap.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    ap.add_argument("--threads", type=int, help="intra-op threads per worker (default: ort's)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, args.keras, Path(tmp))
        bodies = _bodies(EdgeModel(path, "cpu"), args.requests + args.warmup)
        extra = ["--workers", str(args.workers)]
        if args.threads is not None:
            extra += ["--threads", str(args.threads)]
        with server_process(path, args=extra) as url:
            run_load(url, bodies[: args.warmup], args.clients)
            r = run_load(url, bodies[args.warmup :], args.clients)
    r.update(model=str(path), workers=args.workers, threads=args.threads)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            f"{r['model']}: {r['requests']} requests, {r['clients']} clients, "
            f"{r['workers']} worker(s): {r['requests_per_s']:.0f} req/s, "
            f"p50 {r['p50_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"{r['errors']} errors"
        )
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
