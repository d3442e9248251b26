"""edgekit serve features: micro-batching, Prometheus metrics, multi-worker latency, the named
input form, and the runtime's refusal of non-finite numbers and wrong feature counts."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _runtime_models import TAB_MEAN, make_image_model, make_tabular_model
from prometheus_client.parser import text_string_to_metric_families

from edgekit.errors import InputError
from edgekit.runtime.model import EdgeModel
from edgekit.serve import create_app, server_process
from edgekit.serve.batching import MicroBatcher

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_model(tmp_path_factory.mktemp("features") / "image.onnx")


# -- runtime input checks ------------------------------------------------------------------
def test_runtime_refuses_non_finite_inputs(image: Path) -> None:
    model = EdgeModel(image, check_nan=True)  # run scans values only when asked
    x = np.zeros((2, 28, 28, 1), np.float32)
    for bad, msg in ((np.inf, "infinite"), (-np.inf, "infinite"), (np.nan, "NaN")):
        y = x.copy()
        y[1, 3, 4, 0] = bad
        with pytest.raises(InputError, match=msg):
            model.run(y)
    big = np.full((1, 28, 28, 1), 1e39)  # float64, finite, overflows float32
    with pytest.raises(InputError, match="too large for float32"):
        model.run(big)
    large = np.full((1, 28, 28, 1), 3e19, np.float32)  # finite, but its squares overflow
    assert model.run(large)[0].shape == (1, 10)  # accepted: no false alarm
    y = x.copy()
    y[0, 0, 0, 0] = np.inf
    allowed = EdgeModel(image, check_nan=False).run(y)[0]  # the option lets them through
    assert allowed.shape == (2, 10)


def test_runtime_wrong_feature_count_is_an_input_error(tmp_path: Path) -> None:
    model = EdgeModel(make_tabular_model(tmp_path / "tab.onnx"))
    assert model.predict(TAB_MEAN).shape == (1, 3)
    for n in (3, 5):
        with pytest.raises(InputError, match="needs size 4 on axis 1"):
            model.predict([1.0] * n)
    with pytest.raises(InputError, match="needs size 4 on axis 1"):
        model.predict([[1.0] * 5, [1.0] * 5])
    with pytest.raises(InputError, match="rectangular"):
        model.prepare({"features": [[1.0, 2.0], [1.0]]})


@pytest.mark.slow
def test_shipped_mlp_over_http_4xx_for_bad_numbers(shipped_mlp: Path) -> None:
    """The issue's 500s: Infinity, 1e999 and 29/31 features instead of 30 now get 422."""
    model = EdgeModel(shipped_mlp)
    row = [1.0] * 30
    with TestClient(create_app(model)) as c:
        ok = c.post("/predict", json={"inputs": row})
        assert ok.status_code == 200
        np.testing.assert_allclose(ok.json()["predictions"], model.predict(row), rtol=1e-6)
        bodies = {
            "Infinity": b'{"inputs": [' + b"Infinity, " + b"1.0, " * 28 + b"1.0]}",
            "1e999": b'{"inputs": [' + b"1e999, " + b"1.0, " * 28 + b"1.0]}",
            "-Infinity": b'{"inputs": [' + b"-Infinity, " + b"1.0, " * 28 + b"1.0]}",
            "NaN": b'{"inputs": [' + b"NaN, " + b"1.0, " * 28 + b"1.0]}",
            "29": json.dumps({"inputs": [1.0] * 29}).encode(),
            "31": json.dumps({"inputs": [1.0] * 31}).encode(),
        }
        for name, body in bodies.items():
            r = c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, (name, r.text)
            assert (
                "axis 1" in r.json()["error"]
                or "NaN" in r.json()["error"]
                or ("infinite" in r.json()["error"])
            ), (name, r.text)


def test_named_inputs_accept_raw_pixels_like_the_flat_form(image: Path) -> None:
    img = RNG.integers(0, 256, (28, 28)).tolist()
    with TestClient(create_app(image)) as c:
        flat = c.post("/predict", json={"inputs": img})
        named = c.post("/predict", json={"inputs": {"image": img}})
        assert flat.status_code == named.status_code == 200, named.text
        assert flat.json() == named.json()
        assert c.post("/predict", json={"inputs": {"image": []}}).status_code == 422


# -- micro-batching ---------------------------------------------------------------------------
def test_micro_batcher_merges_concurrent_requests(image: Path) -> None:
    model = EdgeModel(image, check_nan=True)  # so the NaN request fails in model.run
    sizes: list[int] = []
    xs = [RNG.random((1 + i % 3, 28, 28, 1), dtype=np.float32) for i in range(24)]
    bad = np.full((1, 28, 28, 1), np.nan, np.float32)

    async def main() -> list[Any]:
        batcher = MicroBatcher(model.run, max_batch=16, max_delay=0.05, on_batch=sizes.append)
        try:
            with batcher.arrival():  # one more request "on its way": the batch waits for it
                tasks = [asyncio.ensure_future(batcher.submit({"image": x})) for x in xs]
                tasks.append(asyncio.ensure_future(batcher.submit({"image": bad})))
                await asyncio.sleep(0.01)
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            batcher.close()

    results = asyncio.run(main())
    for x, out in zip(xs, results[:-1], strict=True):
        np.testing.assert_allclose(out[0], model.run(x)[0], rtol=1e-5, atol=1e-7)
    assert isinstance(results[-1], InputError)  # one bad request fails alone
    assert max(sizes) > 3 and max(sizes) <= 16
    assert sum(sizes) >= sum(len(x) for x in xs)


def test_batching_server_under_concurrency(image: Path) -> None:
    model = EdgeModel(image)
    images = RNG.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    expected = model.predict(images)
    failures: list[str] = []

    def client(idx: list[int]) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in idx:
                r = c.post("/predict", json={"inputs": images[i].tolist()})
                if r.status_code != 200 or not np.allclose(
                    r.json()["predictions"][0], expected[i], rtol=1e-5, atol=1e-7
                ):
                    failures.append(f"{i}: {r.status_code} {r.text[:100]}")

    args = ["--batching", "--max-delay-ms", "5", "--max-batch", "16"]
    with server_process(image, args=args) as url:
        chunks = [list(range(k, 64, 16)) for k in range(16)]
        threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = httpx.get(url + "/metrics", timeout=10).text
    assert not failures, failures[:3]
    fams = {f.name: f for f in text_string_to_metric_families(metrics)}
    samples = {s.name: s.value for s in fams["edgekit_batch_size"].samples if not s.labels}
    calls = samples["edgekit_batch_size_count"]
    assert samples["edgekit_batch_size_sum"] >= 64  # warm-up calls are not counted
    assert calls < 64, "no request was merged with another"


# -- metrics and multi-worker ------------------------------------------------------------------
def test_metrics_count_requests_by_endpoint_and_code(image: Path) -> None:
    with TestClient(create_app(image)) as c:
        for _ in range(3):
            c.post("/predict", json={"inputs": [[0] * 28] * 28})
        c.post("/predict", content=b"{")
        c.get("/nope")
        text = c.get("/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    counts = {
        (s.labels["endpoint"], s.labels["code"]): s.value
        for s in fams["edgekit_requests"].samples
        if s.name == "edgekit_requests_total"
    }
    assert counts[("predict", "200")] == 3 and counts[("predict", "400")] == 1
    assert counts[("other", "404")] == 1
    latency = fams["edgekit_request_duration_seconds"].samples
    hist = [s for s in latency if s.name.endswith("_count")]
    assert any(s.labels["endpoint"] == "predict" and s.value == 4 for s in hist)
    assert "edgekit_requests_in_flight" in fams


def test_two_workers_answer_without_delayed_ack_stalls(image: Path) -> None:
    """--workers 2 used to take ~44 ms per keep-alive request (Nagle + delayed ACK); with
    TCP_NODELAY a small request takes about a millisecond."""
    body = {"inputs": RNG.integers(0, 256, (28, 28)).tolist()}
    with server_process(image, args=["--workers", "2"]) as url:
        with httpx.Client(base_url=url, timeout=10) as c:
            for _ in range(5):
                c.post("/predict", json=body)
            times = []
            for _ in range(40):
                t0 = time.perf_counter()
                assert c.post("/predict", json=body).status_code == 200
                times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.025, f"median {statistics.median(times) * 1000:.1f} ms"


def test_worker_threads_stay_within_a_tuned_models_stored_count(tmp_path: Path) -> None:
    """Several workers get ``cores // workers`` threads each, but no more than the count a
    tuned model stores (its tune found fewer faster); an explicit ``threads`` wins, and a file
    without the setting, a malformed one or a missing path leave the split alone."""
    import onnx

    from edgekit.metadata import set_props
    from edgekit.serve.config import ServeConfig
    from edgekit.serve.server import _stored_threads, _worker_threads

    path = make_tabular_model(tmp_path / "tab.onnx")
    assert _stored_threads(path) is None and _stored_threads(tmp_path / "missing.onnx") is None
    proto = onnx.load(str(path))
    set_props(proto, {"edgekit.session": json.dumps({"intra_op_num_threads": 1})})
    onnx.save(proto, str(tmp_path / "tuned.onnx"))
    set_props(proto, {"edgekit.session": json.dumps({"intra_op_num_threads": "many"})})
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    assert _stored_threads(tmp_path / "tuned.onnx") == 1
    assert _stored_threads(tmp_path / "bad.onnx") is None
    plenty = 64  # more cores than any test machine: the split is cores // 2 >= 1
    split = _worker_threads(ServeConfig(workers=2)).threads
    assert split is not None and split >= 1
    assert _worker_threads(ServeConfig(workers=2), 1).threads == 1
    assert _worker_threads(ServeConfig(workers=2), plenty).threads == split
    assert _worker_threads(ServeConfig(workers=2, threads=3), 1).threads == 3
    assert _worker_threads(ServeConfig(), 1).threads is None  # one worker: the model's own
