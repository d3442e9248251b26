"""Client of ``edgekit serve`` using only the standard library.

    edgekit serve out/fashion_cnn.onnx --port 8000 &
    python examples/serve_client.py --npy samples.npy --top-k 3
    python examples/serve_client.py --text "see you later" --url http://127.0.0.1:8001

Sends ``{"inputs": ...}`` (raw samples; the server applies the model's preprocessing) or
``{"text": ...}`` to ``POST /predict`` and prints the answer; errors come back as
``{"error": ..., "hint": ...}`` with a 4xx status.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any


def call(url: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET (no body) or POST JSON to ``url + path``; returns (status, decoded JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url + path, data=data, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:  # 4xx/5xx still carry a JSON body
        return e.code, json.loads(e.read() or b"null")


def main() -> None:
    ap = argparse.ArgumentParser(description="query an edgekit prediction server")
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--npy", help=".npy file of raw samples")
    ap.add_argument("--text", action="append", help="text to classify (repeatable)")
    ap.add_argument("--top-k", type=int, default=3)
    args = ap.parse_args()

    status, health = call(args.url, "/health")
    print("health:", status, health)
    if args.text:
        body: dict[str, Any] = {"text": args.text}
    elif args.npy:
        import numpy as np

        body = {"inputs": np.load(args.npy).tolist()}
    else:
        _, meta = call(args.url, "/metadata")
        print(json.dumps({k: meta[k] for k in ("inputs", "labels", "preprocessing")}, indent=2))
        return
    status, answer = call(args.url, "/predict", {**body, "top_k": args.top_k})
    if status != 200:
        print(f"error {status}: {answer}")
        return
    for i, row in enumerate(answer["top_k"]):
        print(f"sample {i}: " + ", ".join(f"{p['label']} {p['probability']:.3f}" for p in row))


if __name__ == "__main__":
    main()
