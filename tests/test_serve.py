"""edgekit.serve: the HTTP service, in-process (TestClient) and as a real uvicorn server."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _runtime_models import FASHION_LABELS, make_image_model, make_text_model

from edgekit.runtime.model import EdgeModel
from edgekit.serve import create_app, server_process

with warnings.catch_warnings():  # starlette 1.x: "use httpx2 with the TestClient"
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve_models")
    return {"image": make_image_model(d / "image.onnx"), "text": make_text_model(d / "text.onnx")}


@pytest.fixture(scope="module")
def client(paths: dict[str, Path]) -> Any:
    with TestClient(create_app(paths["image"], max_body_bytes=64 * 1024, max_batch=8)) as c:
        yield c


def test_predict_health_metadata(client: Any, paths: dict[str, Path]) -> None:
    img = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    r = client.post("/predict", json={"inputs": img.tolist(), "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = EdgeModel(paths["image"]).predict(img)
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-6)
    assert body["labels"] == [FASHION_LABELS[int(expected.argmax())]]
    assert [p["label"] for p in body["top_k"][0]][0] == body["labels"][0]
    assert len(body["top_k"][0]) == 3
    assert client.get("/health").json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["labels"] == FASHION_LABELS and meta["inputs"][0]["name"] == "image"


def test_text_model_over_http(paths: dict[str, Path]) -> None:
    with TestClient(create_app(paths["text"])) as c:
        r = c.post("/predict", json={"text": ["win a free prize now", "see you later"]})
        assert r.status_code == 200, r.text
        assert r.json()["labels"] == ["spam", "ham"]
        assert c.post("/predict", json={"text": 5}).status_code == 422
    with TestClient(create_app(paths["image"])) as c:
        r = c.post("/predict", json={"text": "hello"})
        assert r.status_code == 422 and "does not take text" in r.json()["error"]


MALFORMED: list[tuple[bytes, int, str]] = [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2, 3]", 400, "JSON object"),
    (b'{"data": [1]}', 400, "either 'inputs' or 'text'"),
    (b'{"inputs": [1], "text": "a"}', 400, "either 'inputs' or 'text'"),
    (b'{"inputs": [1, 2, 3]}', 422, "needs rank 4"),
    (json.dumps({"inputs": np.zeros((1, 27, 28)).tolist()}).encode(), 422, "axis 1"),
    (b'{"inputs": [["a", "b"]]}', 422, "must be numeric"),
    (b'{"inputs": [[1, 2], [3]]}', 422, "rectangular"),
    (json.dumps({"inputs": [[float("nan")] * 28] * 28}).encode(), 422, "NaN"),
    (b'{"inputs": {"nope": [1]}}', 422, "unknown input name"),
    (b'{"inputs": []}', 422, "non-empty"),
    (json.dumps({"inputs": [[0] * 28] * 28, "top_k": 0}).encode(), 400, "top_k"),
    (b"[" * 50000, 400, "malformed JSON"),
    (b'{"inputs": [' + b"0," * 40000 + b"0]}", 413, "over the limit"),
]


@pytest.mark.parametrize(("body", "status", "message"), MALFORMED)
def test_malformed_requests_get_4xx(client: Any, body: bytes, status: int, message: str) -> None:
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_batch_limit_and_methods(client: Any) -> None:
    r = client.post("/predict", json={"inputs": np.zeros((9, 28, 28), np.uint8).tolist()})
    assert r.status_code == 413 and "batch of 9" in r.json()["error"]
    assert client.get("/predict").status_code == 405
    assert client.get("/nope").status_code == 404
    assert client.get("/health").status_code == 200


def _load(url: str, jobs: list[tuple[bytes, Any]], clients: int) -> list[str]:
    """Send ``jobs`` (body, check) from ``clients`` threads; return failure messages."""
    failures: list[str] = []
    lock = threading.Lock()
    chunks = [jobs[i::clients] for i in range(clients)]

    def worker(chunk: list[tuple[bytes, Any]]) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for body, check in chunk:
                r = c.post("/predict", content=body, headers={"content-type": "application/json"})
                msg = check(r)
                if msg:
                    with lock:
                        failures.append(msg)

    threads = [threading.Thread(target=worker, args=(ch,)) for ch in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


@pytest.mark.slow
def test_real_server_under_load(paths: dict[str, Path]) -> None:
    """500 valid requests from 8 concurrent clients + 50 malformed ones on a real uvicorn."""
    model = EdgeModel(paths["image"])
    images = RNG.integers(0, 256, (500, 28, 28), dtype=np.uint8)
    expected = model.predict(images)

    def valid(i: int) -> tuple[bytes, Any]:
        def check(r: httpx.Response) -> str | None:
            if r.status_code != 200:
                return f"valid request {i}: {r.status_code} {r.text[:200]}"
            body = r.json()
            if not np.allclose(body["predictions"][0], expected[i], rtol=1e-5, atol=1e-7):
                return f"valid request {i}: wrong probabilities"
            if body["labels"] != [FASHION_LABELS[int(expected[i].argmax())]]:
                return f"valid request {i}: wrong label {body['labels']}"
            return None

        return json.dumps({"inputs": images[i].tolist()}).encode(), check

    def malformed(j: int) -> tuple[bytes, Any]:
        body, status, _ = MALFORMED[j % len(MALFORMED)]

        def check(r: httpx.Response) -> str | None:
            ok = 400 <= r.status_code < 500 and r.status_code == status
            return None if ok else f"malformed request {j}: {r.status_code} {r.text[:200]}"

        return body, check

    jobs = [valid(i) for i in range(500)]
    for j in range(50):  # interleave the malformed requests with the valid ones
        jobs.insert(j * 11, malformed(j))
    with server_process(paths["image"], args=["--max-body-mb", str(64 / 1024)]) as url:
        failures = _load(url, jobs, clients=8)
        health = httpx.get(url + "/health", timeout=10)
    assert not failures, failures[:5]
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_real_server_with_two_workers(paths: dict[str, Path]) -> None:
    text = EdgeModel(paths["text"])
    with server_process(paths["text"], args=["--workers", "2"]) as url:
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(10):
                r = c.post("/predict", json={"text": "see you later"})
                assert r.status_code == 200, r.text
                assert r.json()["labels"] == text.predict_labels("see you later")
            assert c.post("/predict", content=b"{").status_code == 400
            assert c.get("/metadata").json()["text"] is True


def test_oversized_body_closes_the_connection(paths: dict[str, Path]) -> None:
    """A 413 answered before the body was read closes the connection: the unread body must
    not be parsed as the next request on a keep-alive connection (it was, as 431)."""
    import socket
    from urllib.parse import urlparse

    body = b'{"inputs": [' + b"0," * 40000 + b"0]}"
    ok = json.dumps({"inputs": np.zeros((28, 28), np.uint8).tolist()}).encode()
    with server_process(paths["image"], args=["--max-body-mb", str(64 / 1024)]) as url:
        u = urlparse(url)
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            data = b""
            while chunk := s.recv(65536):  # the server closes after its answer
                data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 413") and b"connection: close" in head
        with httpx.Client(base_url=url, timeout=10) as c:  # keep-alive client: both answered
            assert c.post("/predict", content=body).status_code == 413
            assert c.post("/predict", content=ok).status_code == 200


def test_outputs_that_are_not_numbers_get_422(paths: dict[str, Path], tmp_path: Path) -> None:
    """The same rule as `edgekit run` (one check, runtime.specs.check_outputs_finite)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(paths["image"]))
    bias = next(t for t in model.graph.initializer if t.name == "B")
    bias.CopyFrom(numpy_helper.from_array(np.full(10, np.nan, np.float32), "B"))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    with TestClient(create_app(tmp_path / "nan.onnx")) as c:
        img = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
        r = c.post("/predict", json={"inputs": img.tolist()})
        assert r.status_code == 422, r.text
        assert "NaN or infinite outputs" in r.json()["error"]
        assert "preprocessing" in r.json()["hint"]
