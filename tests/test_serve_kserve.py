"""KServe V2 / Open Inference Protocol conformance of `edgekit serve`, checked with the
ecosystem's own cases and clients.

``CASES`` restates, as data, the request/response cases of KServe's V2 server tests (kserve
``python/kserve/test/test_server.py``, class ``TestV2Endpoints``; each case names its KServe
test) against KServe's three dummy models rebuilt in ONNX (``_kserve_models``). They are sent
with raw HTTP (``http.client``) to real ``edgekit serve`` processes; JSON answers are compared
semantically (keys whose value is null dropped, ``model_version`` ignored: KServe's dummy models
have none, edgekit answers "1"), binary tails byte for byte. Where edgekit answers differently
on purpose the case says so (README, "Differences from KServe"). Skipped: KServe's
``test_datetime_output`` (a model that returns numpy datetimes; ONNX has no such type).

Then ``tritonclient.http`` and ``kserve``'s ``InferenceRESTClient`` each run metadata and
inference in binary and JSON mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _kserve_models import KSERVE_MODELS, make_kserve_models

from edgekit.serve import server_process
from edgekit.serve.v2 import HEADER_LENGTH

ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]
#: ROWS as FP16 (little-endian): the binary data of KServe's FP16 cases
FP16_ROWS = b"\xcdF\x9aA\xcdD\x9a=\x00F\xcdB\x80Df>"
#: ROWS as FP32, flattened: KServe's expected binary fp32_output
FP32_ROWS = (
    b"\x9a\x99\xd9@333@\x9a\x99\x99@33\xb3?\x00\x00\xc0@\x9a\x99Y@\x00\x00\x90@\xcd\xcc\xcc?"
)
#: ROWS through FP16 and back to FP32 (KServe's expected fp32_output of FP16InputModel)
ROWS_VIA_FP16 = [6.80078125, 2.80078125, 4.80078125, 1.400390625, 6.0, 3.400390625, 4.5,
                 1.599609375]  # fmt: skip
#: ROWS as FP32 numbers in JSON (KServe's expected fp32_output of FP16OutputModel)
ROWS_FP32 = [6.800000190734863, 2.799999952316284, 4.800000190734863, 1.399999976158142, 6.0,
             3.4000000953674316, 4.5, 1.600000023841858]  # fmt: skip
WORDS = ["cat", "dog"] * 4
PARAMS = {"test-str": "dummy", "test-bool": True, "test-int": 100, "test-float": 1.3}


@dataclass
class Case:
    """One request of a KServe test and KServe's answer to it."""

    kserve_test: str
    model: str  # the served model (one `edgekit serve` per model)
    request: dict[str, Any] | None  # the JSON part (None: a GET)
    binary: bytes = b""  # binary tensor data after the JSON part
    status: int = 200
    response: dict[str, Any] | None = None  # KServe's JSON part
    tail: bytes = b""  # KServe's binary tail
    path: str = ""  # default: the model's infer route
    #: (path in KServe's answer, why edgekit leaves it out): deliberate differences
    differs: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)


def _fp16_input(**tensor: Any) -> dict[str, Any]:
    return {"name": "fp16_input", "shape": [2, 4], "datatype": "FP16", **tensor}


def _fp32_input() -> dict[str, Any]:
    return {"name": "fp32_input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}


def _words(**tensor: Any) -> dict[str, Any]:
    return {"name": "str_input", "shape": [2, 4], "datatype": "BYTES", "data": WORDS, **tensor}


def _out(name: str, datatype: str, data: Any = None, size: int | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "shape": [8], "datatype": datatype}
    if size is None:
        t["data"] = data
    else:
        t["parameters"] = {"binary_data_size": size}
    return t


def _answer(model: str, *outputs: dict[str, Any], rid: str | None = "123") -> dict[str, Any]:
    doc = {"model_name": model, "model_version": None, "outputs": list(outputs)}
    return doc if rid is None else {"id": rid, **doc}


ECHO_IN = {"name": "input-0", "shape": [1, 2], "datatype": "INT32", "data": [[1, 2]]}
ECHO_OUT = {"name": "output-0", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}
FP16_OUT = _out("fp16_output", "FP16", size=16)
FP32_OUT = _out("fp32_output", "FP32", ROWS_FP32)
BINARY, JSON_DATA = {"binary_data": True}, {"binary_data": False}

CASES = [
    Case("test_list_models_v2", "TestModel", None, path="/v2/models",
         response={"models": ["TestModel"]}),
    Case("test_infer_v2", "TestModel", {"inputs": [ECHO_IN]},
         response=_answer("TestModel", ECHO_OUT, rid=None)),
    Case("test_infer_parameters_v2", "TestModel",
         {"id": "123", "parameters": PARAMS, "inputs": [{**ECHO_IN, "parameters": PARAMS}]},
         response={**_answer("TestModel", {**ECHO_OUT, "parameters": PARAMS}),
                   "parameters": PARAMS},
         differs=[(("parameters",), "KServe's dummy model echoes the request parameters"),
                  (("outputs", 0, "parameters"), "... and the input parameters")]),
    Case("test_fp16_input_as_binary_data", "FP16InputModel",
         {"id": "123", "inputs": [_fp16_input(parameters={"binary_data_size": 16}), _words()]},
         binary=FP16_ROWS,
         response=_answer("FP16InputModel", _out("str_output", "BYTES", WORDS),
                          _out("fp32_output", "FP32", ROWS_VIA_FP16))),
    Case("test_fp16_input_not_binary_data", "FP16InputModel",
         {"id": "123", "inputs": [_fp16_input(data=ROWS), _words()]}, status=400),
    Case("test_fp16_output_as_binary_data", "FP16OutputModel",
         {"id": "123", "inputs": [_fp32_input()],
          "outputs": [{"name": "fp16_output", "parameters": BINARY},
                      {"name": "fp32_output", "parameters": JSON_DATA}]},
         response=_answer("FP16OutputModel", FP16_OUT, FP32_OUT), tail=FP16_ROWS),
    Case("test_fp16_output_not_binary_data", "FP16OutputModel",
         {"id": "123", "inputs": [_fp32_input()], "outputs": [{"name": "fp16_output"}]},
         status=400),
    Case("test_requested_output", "FP16OutputModel",
         {"id": "123", "inputs": [_fp32_input()],
          "outputs": [{"name": "fp32_output", "parameters": JSON_DATA}]},
         response=_answer("FP16OutputModel", FP32_OUT)),
    Case("test_all_output_as_binary_data", "FP16OutputModel",
         {"id": "123", "inputs": [_fp32_input()], "parameters": {"binary_data_output": True}},
         response=_answer("FP16OutputModel", FP16_OUT, _out("fp32_output", "FP32", size=32)),
         tail=FP16_ROWS + FP32_ROWS),
    Case("test_binary_data_parameter_precedence", "FP16OutputModel",
         {"id": "123", "inputs": [_fp32_input()], "parameters": {"binary_data_output": True},
          "outputs": [{"name": "fp16_output"}, {"name": "fp32_output", "parameters": JSON_DATA}]},
         response=_answer("FP16OutputModel", FP16_OUT, FP32_OUT), tail=FP16_ROWS),
]  # fmt: skip


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``{model name: base URL}``: one real `edgekit serve` process per KServe dummy model."""
    paths = make_kserve_models(tmp_path_factory.mktemp("kserve"))
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(server_process(paths[name])) for name in KSERVE_MODELS}


def _http(url: str, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 exchange (``http.client``): status, lower-cased headers, body."""
    host = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _semantic(obj: Any) -> Any:
    """``obj`` without keys whose value is null (KServe writes them, edgekit leaves them out)."""
    if isinstance(obj, dict):
        return {k: _semantic(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_semantic(v) for v in obj]
    return obj


def _without(doc: dict[str, Any], path: tuple[Any, ...]) -> None:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def _send(case: Case, url: str) -> tuple[int, dict[str, str], bytes]:
    if case.request is None:
        return _http(url, "GET", case.path)
    head = json.dumps(case.request).encode()
    headers = {"content-type": "application/json"}
    if case.binary:
        headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    path = case.path or f"/v2/models/{case.model}/infer"
    return _http(url, "POST", path, head + case.binary, headers)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kserve_test)
def test_kserve_v2_case(servers: dict[str, str], case: Case) -> None:
    status, headers, body = _send(case, servers[case.model])
    assert status == case.status, body
    if case.status != 200:
        assert json.loads(body)["error"]  # KServe's error body has "error" too (no "hint")
        return
    assert case.response is not None
    json_len = int(headers.get(HEADER_LENGTH, len(body)))
    if case.tail:
        assert headers["content-type"] == "application/octet-stream"
        assert body[json_len:] == case.tail  # byte for byte
    else:
        assert headers["content-type"] == "application/json" and HEADER_LENGTH not in headers
    got = json.loads(body[:json_len])  # the header is the JSON part's real length
    want = json.loads(json.dumps(case.response))
    for path, _why in case.differs:
        _without(want, path)
    for doc in (got, want):
        doc.pop("model_version", None)
        if case.request is not None and "id" not in case.request:
            doc.pop("id", None)  # KServe makes one up; edgekit echoes only the client's
    assert _semantic(got) == _semantic(want)


def test_v2_models_lists_the_served_model(servers: dict[str, str]) -> None:
    """``GET /v2/models`` on each server, checked against KServe's own response models."""
    from kserve.protocol.rest.v2_datamodels import (
        ListModelsResponse,
        ModelMetadataResponse,
        ServerMetadataResponse,
    )

    for name, url in servers.items():
        status, _, body = _http(url, "GET", "/v2/models")
        assert status == 200 and ListModelsResponse.model_validate_json(body).models == [name]
        _, _, body = _http(url, "GET", f"/v2/models/{name}")
        assert ModelMetadataResponse.model_validate_json(body).name == name
        _, _, body = _http(url, "GET", "/v2")
        assert ServerMetadataResponse.model_validate_json(body).name == "edgekit"


def test_tritonclient_binary_and_json(servers: dict[str, str]) -> None:
    """tritonclient.http: metadata, then BYTES + FP16 inference in binary and in JSON mode
    (FP16 stays binary: as JSON the server refuses it, as KServe and Triton do)."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(servers["FP16InputModel"].split("//", 1)[1])
    try:
        assert client.is_server_live() and client.is_model_ready("FP16InputModel")
        meta = client.get_model_metadata("FP16InputModel")
        assert meta["inputs"] == [
            {"name": "fp16_input", "datatype": "FP16", "shape": [2, 4]},
            {"name": "str_input", "datatype": "BYTES", "shape": [2, 4]},
        ]
        assert [o["datatype"] for o in meta["outputs"]] == ["BYTES", "FP32"]
        x16 = np.array(ROWS, np.float16)
        words = np.array(WORDS, dtype=object).reshape(2, 4)
        for binary in (True, False):
            f16 = triton.InferInput("fp16_input", [2, 4], "FP16")
            f16.set_data_from_numpy(x16, binary_data=True)
            s = triton.InferInput("str_input", [2, 4], "BYTES")
            s.set_data_from_numpy(words, binary_data=binary)
            outs = [triton.InferRequestedOutput(n, binary_data=binary)
                    for n in ("str_output", "fp32_output")]  # fmt: skip
            res = client.infer("FP16InputModel", [f16, s], outputs=outs, request_id="t1")
            got = [w.decode() if isinstance(w, bytes) else w for w in res.as_numpy("str_output")]
            assert got == WORDS and res.get_response()["id"] == "t1"
            assert res.as_numpy("fp32_output").tolist() == ROWS_VIA_FP16
        f16.set_data_from_numpy(x16, binary_data=False)
        with pytest.raises(InferenceServerException, match="FP16, which travels only as binary"):
            client.infer("FP16InputModel", [f16, s])
    finally:
        client.close()
    _tritonclient_fp16_outputs(servers["FP16OutputModel"])


def _tritonclient_fp16_outputs(url: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(url.split("//", 1)[1])
    try:
        meta = client.get_model_metadata("FP16OutputModel")
        assert [o["datatype"] for o in meta["outputs"]] == ["FP16", "FP32"]
        x = triton.InferInput("fp32_input", [2, 4], "FP32")
        for binary in (True, False):
            x.set_data_from_numpy(np.array(ROWS, np.float32), binary_data=binary)
            outs = [triton.InferRequestedOutput("fp16_output", binary_data=True),
                    triton.InferRequestedOutput("fp32_output", binary_data=binary)]  # fmt: skip
            res = client.infer("FP16OutputModel", [x], outputs=outs)
            assert res.as_numpy("fp16_output").tobytes() == FP16_ROWS
            assert res.as_numpy("fp32_output").tolist() == ROWS_FP32
        json_fp16 = [triton.InferRequestedOutput("fp16_output", binary_data=False)]
        with pytest.raises(InferenceServerException, match="output 'fp16_output' is FP16"):
            client.infer("FP16OutputModel", [x], outputs=json_fp16)
    finally:
        client.close()


async def _kserve_client(servers: dict[str, str]) -> None:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    url = servers["FP16InputModel"]
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30)) as client:
        assert await client.is_server_live(url) and await client.is_server_ready(url)
        assert await client.is_model_ready(url, "FP16InputModel")
        assert not await client.is_model_ready(url, "resnet")
        for binary in (True, False):
            f16 = InferInput("fp16_input", [2, 4], "FP16")
            f16.set_data_from_numpy(np.array(ROWS, np.float16), binary_data=True)
            s = InferInput("str_input", [2, 4], "BYTES")
            s.set_data_from_numpy(np.array(WORDS, dtype=object).reshape(2, 4), binary_data=binary)
            outs = [RequestedOutput(n, {"binary_data": binary}) for n in ("str_output",
                                                                          "fp32_output")]
            req = InferRequest("FP16InputModel", [f16, s], request_id="k1", request_outputs=outs)
            res = await client.infer(url, req, model_name="FP16InputModel")
            assert res.id == "k1" and res.model_name == "FP16InputModel"
            assert res.get_output_by_name("str_output").as_numpy().tolist() == WORDS
            assert res.get_output_by_name("fp32_output").as_numpy().tolist() == ROWS_VIA_FP16
        url = servers["FP16OutputModel"]
        for binary in (True, False):
            x = InferInput("fp32_input", [2, 4], "FP32")
            x.set_data_from_numpy(np.array(ROWS, np.float32), binary_data=binary)
            req = InferRequest("FP16OutputModel", [x], parameters={"binary_data_output": True},
                               request_outputs=[RequestedOutput("fp16_output"),
                                                RequestedOutput("fp32_output",
                                                                {"binary_data": binary})])
            res = await client.infer(url, req, model_name="FP16OutputModel")
            fp16 = res.get_output_by_name("fp16_output").as_numpy().astype(np.float16)
            assert fp16.tobytes() == FP16_ROWS
            assert res.get_output_by_name("fp32_output").as_numpy().tolist() == ROWS_FP32
        req = InferRequest("FP16OutputModel", [x], request_outputs=[RequestedOutput(
            "fp16_output", {"binary_data": False})])
        with pytest.raises(httpx.HTTPStatusError, match="output 'fp16_output' is FP16"):
            await client.infer(url, req, model_name="FP16OutputModel")


def test_kserve_inference_rest_client(servers: dict[str, str]) -> None:
    """kserve's InferenceRESTClient (protocol v2): readiness (its REST client has no metadata
    call: ``test_v2_models_lists_the_served_model`` checks metadata with KServe's response
    models), then BYTES + FP16 inference in binary and JSON mode, and a 400 it reads."""
    asyncio.run(_kserve_client(servers))


def test_kserve_models_run_in_process(tmp_path: Path) -> None:
    """The dummy models load as edgekit models (string tensors pass EdgeModel.run)."""
    from edgekit.runtime.model import EdgeModel

    paths = make_kserve_models(tmp_path)
    with EdgeModel(paths["FP16InputModel"]) as m:
        m.warmup()
        words, f32 = m.run({"fp16_input": np.array(ROWS, np.float16),
                            "str_input": np.array(WORDS, dtype=object).reshape(2, 4)})
    assert words.tolist() == WORDS and f32.tolist() == ROWS_VIA_FP16
