"""The baseline of ``serve_load.py``: a minimal multi-process starlette + onnxruntime app.

What a user might write in 20 lines: JSON in, ``session.run`` in the thread pool, JSON out; N
processes sharing one port with ``SO_REUSEPORT``; ``cores // N`` onnxruntime threads each.

    python benchmarks/_minimal_serve_app.py MODEL.onnx PORT WORKERS
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route


def make_app(model: str, threads: int) -> Starlette:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    async def predict(request):  # type: ignore[no-untyped-def]
        x = np.asarray(json.loads(await request.body())["inputs"], np.float32) / 255.0
        y = await run_in_threadpool(sess.run, None, {name: x.reshape(-1, 28, 28, 1)})
        return JSONResponse({"predictions": y[0].tolist()})

    async def health(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"status": "ok"})

    routes = [Route("/predict", predict, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes)


def worker(model: str, port: int, threads: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(make_app(model, threads), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    model, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [
        multiprocessing.Process(target=worker, args=(model, port, threads)) for _ in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
