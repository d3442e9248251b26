"""The Open Inference Protocol (KServe V2) of edgekit serve: tritonclient's own HTTP client on
the shipped CNN through a real server, plus the protocol's error cases in-process."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _runtime_models import make_image_model, make_text_model

from edgekit.runtime.model import EdgeModel
from edgekit.serve import create_app, server_process
from edgekit.serve.v2 import HEADER_LENGTH as HEADER

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RNG = np.random.default_rng(14)


def test_tritonclient_infers_the_shipped_cnn(shipped_cnn: Path) -> None:
    """tritonclient.http against `edgekit serve`: liveness, metadata and inference with binary
    and JSON tensors give exactly EdgeModel.run's outputs."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    model = EdgeModel(shipped_cnn)
    (inp,), (out,) = model.inputs, model.outputs
    x = RNG.random((5, 28, 28, 1), dtype=np.float32)
    expected = model.run(x)[0]
    with server_process(shipped_cnn, args=["--batching"]) as url:
        client = triton.InferenceServerClient(url.split("//", 1)[1])
        try:
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("fashion_cnn")
            meta = client.get_model_metadata("fashion_cnn")
            want_in = {"name": inp.name, "datatype": "FP32", "shape": [-1, 28, 28, 1]}
            assert meta["inputs"] == [want_in]
            assert meta["outputs"][0]["name"] == out.name
            for binary in (True, False):
                t = triton.InferInput(inp.name, list(x.shape), "FP32")
                t.set_data_from_numpy(x, binary_data=binary)
                want = [triton.InferRequestedOutput(out.name, binary_data=binary)]
                res = client.infer("fashion_cnn", [t], outputs=want, request_id="r1")
                np.testing.assert_array_equal(res.as_numpy(out.name), expected)
                assert res.get_response()["id"] == "r1"
            res = client.infer("fashion_cnn", [t])  # no outputs named: all, binary
            np.testing.assert_array_equal(res.as_numpy(out.name), expected)
            t = triton.InferInput(inp.name, [1, 28, 28, 1], "FP64")
            t.set_data_from_numpy(x[:1].astype(np.float64))
            with pytest.raises(InferenceServerException, match="needs datatype FP32"):
                client.infer("fashion_cnn", [t])
            with pytest.raises(InferenceServerException, match="unknown model"):
                client.get_model_metadata("resnet")
        finally:
            client.close()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = make_image_model(tmp_path_factory.mktemp("v2") / "image.onnx")
    with TestClient(create_app(path, model_name="fashion", max_batch=8)) as c:
        yield c


def _infer(client: Any, body: Any, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v2/models/fashion/infer", content=content, headers=headers)


def _tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "image") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_v2_routes_and_json_inference(client: Any) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/models/fashion/ready").status_code == 200
    assert client.get("/v2/models/fashion/versions/1").json()["platform"] == "onnxruntime_onnx"
    assert client.get("/v2/models/fashion/versions/2").status_code == 404
    assert client.get("/v2/models/other").status_code == 404
    x = RNG.random((2, 28, 28, 1), dtype=np.float32)
    nested = _infer(client, {"inputs": [_tensor(x.tolist(), [2, 28, 28, 1])]})
    flat = _infer(client, {"inputs": [_tensor(x.ravel().tolist(), [2, 28, 28, 1])]})
    assert nested.status_code == flat.status_code == 200, nested.text
    out = nested.json()["outputs"][0]
    assert out["name"] == "probs" and out["datatype"] == "FP32" and out["shape"] == [2, 10]
    expected = EdgeModel(client.app.state.model.path).run(x)[0]
    np.testing.assert_allclose(np.reshape(out["data"], (2, 10)), expected, rtol=1e-6)
    assert flat.json() == nested.json()


def _binary_body(x: np.ndarray, size: int | None = None) -> tuple[bytes, int]:
    head = {
        "inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": size or x.nbytes}}],
        "outputs": [{"name": "probs", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    h = json.dumps(head).encode()
    return h + x.tobytes(), len(h)


def test_v2_binary_inference(client: Any) -> None:
    x = RNG.random((3, 28, 28, 1), dtype=np.float32)
    body, n = _binary_body(x)
    r = _infer(client, body, **{"Inference-Header-Content-Length": str(n)})
    assert r.status_code == 200, r.text
    json_len = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:json_len])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 3 * 10 * 4
    got = np.frombuffer(r.content[json_len:], "<f4").reshape(3, 10)
    np.testing.assert_allclose(got, EdgeModel(client.app.state.model.path).run(x)[0], rtol=1e-6)


V2_ERRORS: list[tuple[Any, dict[str, str], int, str]] = [
    (b"{", {}, 400, "malformed JSON"),
    ({"inputs": []}, {}, 400, "non-empty list"),
    ({"inputs": [_tensor([0.0] * 784, [1, 28, 28, 1], "UINT8")]}, {}, 400, "needs datatype FP32"),
    ({"inputs": [_tensor([0.0] * 783, [1, 28, 28, 1])]}, {}, 400, "do not fit shape"),
    ({"inputs": [_tensor([0.0] * 28, [1, 28, 1, 1])]}, {}, 400, "axis 2"),
    ({"inputs": [_tensor(["a"] * 784, [1, 28, 28, 1])]}, {}, 400, "must be numbers"),
    ({"inputs": [_tensor([0.0] * 784, [1, 28, 28, 1], name="x")]}, {}, 400, "unknown input"),
    ({"inputs": [_tensor([0.0] * 784, [1, 28, 28, -1])]}, {}, 400, "non-negative"),
    ({"inputs": [_tensor([0.0] * 784, [1, 28, 28, 1])] * 2}, {}, 400, "given twice"),
    ({"inputs": [_tensor([0.0] * 784, [1, 28, 28, 1])], "outputs": [{"name": "z"}]}, {}, 400,
     "unknown output"),
    (json.dumps({"inputs": [_tensor([float("inf")] * 784, [1, 28, 28, 1])]}).encode(), {}, 400,
     "infinite"),
    (json.dumps({"inputs": [_tensor([float("nan")] * 784, [1, 28, 28, 1])]}).encode(), {}, 400,
     "NaN"),
    (b'{"inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": ['
     + b",".join([b"1e999"] * 784) + b"]}]}", {}, 400, "infinite"),
    ({"inputs": [_tensor([0.0] * 784 * 9, [9, 28, 28, 1])]}, {}, 413, "over the limit of 8"),
    (b"{}", {"Inference-Header-Content-Length": "x"}, 400, "invalid"),
    (b"{}", {"Inference-Header-Content-Length": "99"}, 400, "outside the body"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "status", "message"), V2_ERRORS)
def test_v2_errors_are_4xx(
    client: Any, body: Any, headers: dict, status: int, message: str
) -> None:
    r = _infer(client, body, **headers)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_v2_binary_errors(client: Any) -> None:
    x = RNG.random((1, 28, 28, 1), dtype=np.float32)
    body, n = _binary_body(x, size=x.nbytes - 4)
    r = _infer(client, body, **{"Inference-Header-Content-Length": str(n)})
    assert r.status_code == 400 and "do not hold shape" in r.json()["error"]
    body, n = _binary_body(x)
    r = _infer(client, body[:-8], **{"Inference-Header-Content-Length": str(n)})
    assert r.status_code == 400 and "ends inside" in r.json()["error"]
    r = _infer(client, body + b"xx", **{"Inference-Header-Content-Length": str(n)})
    assert r.status_code == 400 and "belong to no input" in r.json()["error"]


def test_v2_integer_inputs(tmp_path: Path) -> None:
    """A text model's INT32 token ids; out-of-range and float data are refused with 400."""
    path = make_text_model(tmp_path / "text.onnx")
    with TestClient(create_app(path)) as c:
        ids = [[3, 4, 2, 0, 0, 0, 0, 0]]
        body = {"inputs": [_tensor(ids, [1, 8], "INT32", "tokens")]}
        r = c.post("/v2/models/text/infer", json=body)
        assert r.status_code == 200, r.text
        expected = EdgeModel(path).run(np.asarray(ids, np.int32))[0]
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], expected.ravel(), rtol=1e-6)
        for bad, msg in (([[2**40] + [0] * 7], "do not fit INT32"), ([[0.5] * 8], "integers")):
            bad_body = {"inputs": [_tensor(bad, [1, 8], "INT32", "tokens")]}
            r = c.post("/v2/models/text/infer", json=bad_body)
            assert r.status_code == 400 and msg in r.json()["error"], r.text



@pytest.fixture(scope="module")
def strings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """KServe's FP16InputModel (FP16 [2, 4] + BYTES [2, 4] inputs) in-process."""
    from _kserve_models import make_kserve_models

    path = make_kserve_models(tmp_path_factory.mktemp("kserve"))["FP16InputModel"]
    with TestClient(create_app(path)) as c:
        yield c


FP16_2x4 = np.arange(8, dtype=np.float16).reshape(2, 4)


def _packed(*items: bytes) -> bytes:
    """BYTES elements as binary tensor data: a 4-byte little-endian length before each."""
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def _post_strings(c: Any, elements: bytes | list[Any], count: int = 8, outputs: Any = None,
                  **fp16: Any) -> Any:  # fmt: skip
    """POST to FP16InputModel: FP16 as binary data, then BYTES as JSON ``elements`` (a list)
    or as binary data (bytes, said to hold ``count`` elements of shape [2, 4])."""
    f16 = {"name": "fp16_input", "shape": [2, 4], "datatype": "FP16",
           "parameters": {"binary_data_size": 16}, **fp16}  # fmt: skip
    words: dict[str, Any] = {"name": "str_input", "shape": [2, 4], "datatype": "BYTES"}
    tail = FP16_2x4.tobytes()
    if isinstance(elements, list):
        words["data"] = elements
    else:
        words["shape"] = [count // 4, 4] if count % 4 == 0 else [2, count]
        words["parameters"] = {"binary_data_size": len(elements)}
        tail += elements
    req: dict[str, Any] = {"inputs": [f16, words]}
    if outputs is not None:
        req["outputs"] = outputs
    head = json.dumps(req).encode()
    return c.post("/v2/models/FP16InputModel/infer", content=head + tail,
                  headers={HEADER: str(len(head))})  # fmt: skip


WORDS = ["é", "", "a\x00b", "🙂", "x" * 300, "b", "c", "d"]


def test_v2_bytes_tensors_in_json_and_binary(strings: Any) -> None:
    """BYTES inputs as flat or nested JSON strings and as binary data; BYTES outputs as JSON
    strings and as binary data (length-prefixed UTF-8), all the same strings."""
    packed = _packed(*(w.encode() for w in WORDS))
    for elements in (WORDS, [WORDS[:4], WORDS[4:]], packed):
        r = _post_strings(strings, elements)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0] == {"name": "str_output", "datatype": "BYTES",
                                          "shape": [8], "data": WORDS}  # fmt: skip
    r = _post_strings(strings, WORDS, outputs=[{"name": "str_output",
                                                "parameters": {"binary_data": True}}])
    assert r.status_code == 200, r.text
    json_len = int(r.headers[HEADER])
    assert json.loads(r.content[:json_len])["outputs"][0]["parameters"] == {
        "binary_data_size": len(packed)}  # fmt: skip
    assert r.content[json_len:] == packed


BYTES_ERRORS: list[tuple[Any, int, str]] = [
    (["a"] * 7, 8, "do not fit shape"),
    ([1] * 8, 8, "BYTES data must be strings"),
    (["\ud800"] * 8, 8, "unpaired surrogates"),
    (_packed(b"a") * 7, 8, "runs past"),
    (_packed(b"a") * 8 + b"\x00", 8, "follow its 8"),
    (_packed(b"a") * 7 + b"\x05\x00\x00\x00ab", 8, "runs past"),
    (_packed(b"\xff\xfe") * 8, 8, "not UTF-8"),
    (b"", 8, "cannot hold 8 elements"),
    (b"\x00" * 16, 4 * (2**30 - 1), "cannot hold"),  # refused before allocating
]  # fmt: skip


@pytest.mark.parametrize(("elements", "count", "message"), BYTES_ERRORS)
def test_v2_bytes_errors(strings: Any, elements: Any, count: int, message: str) -> None:
    r = _post_strings(strings, elements, count)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_v2_fp16_only_as_binary_and_data_xor_binary(strings: Any) -> None:
    """FP16 data in JSON is refused (as KServe and Triton do); so is an input carrying both
    'data' and 'binary_data_size'."""
    r = _post_strings(strings, ["a"] * 8, data=FP16_2x4.tolist())
    assert r.status_code == 400 and "both 'data' and binary data" in r.json()["error"]
    r = _post_strings(strings, ["a"] * 8, data=FP16_2x4.tolist(), parameters={})
    assert r.status_code == 400 and "travels only as binary data" in r.json()["error"]
    assert "binary_data_size" in r.json()["hint"]
    assert strings.get("/v2/models").json() == {"models": ["FP16InputModel"]}
    assert strings.get("/v2/health/ready").json() == {"ready": True}
