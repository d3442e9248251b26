"""Property-based: thousands of generated bodies (valid, almost valid and garbage) sent to
/predict and the V2 infer route never get a 5xx; every refusal is a JSON 4xx with a message."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _kserve_models import make_kserve_models
from _runtime_models import make_image_model, make_tabular_model, make_text_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.serve import create_app

pytestmark = [pytest.mark.file_seconds(10), pytest.mark.slow]

SETTINGS = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=0, max_value=255),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def arrays(draw: Any) -> Any:
    """Nested lists of one number in a random (mostly model-like) shape, sometimes with one
    odd leaf (a string, null, a huge int, NaN ...) or one ragged row."""
    shape = draw(st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=4))
    if draw(st.booleans()):
        shape = draw(st.sampled_from([[28, 28], [1, 28, 28, 1], [4], [2, 4], [1, 8], [3, 4]]))
    value = draw(numbers)

    def build(dims: list[int]) -> Any:
        return value if not dims else [build(dims[1:]) for _ in range(dims[0])]

    arr = build(shape)
    if shape and shape[0] and draw(st.booleans()):
        odd = draw(st.one_of(scalars, st.lists(numbers, max_size=3)))
        node = arr
        while isinstance(node[0], list) and node[0]:
            node = node[0]
        node[draw(st.integers(0, len(node) - 1))] = odd
    return arr


inputs = st.one_of(
    json_values,
    arrays(),
    st.dictionaries(st.sampled_from(["image", "features", "tokens", "x"]), arrays(), max_size=2),
)
predict_bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"inputs": inputs},
        optional={"top_k": json_values, "preprocess": json_values, "text": json_values},
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"text": st.one_of(st.text(max_size=30), json_values)}).map(
        lambda v: json.dumps(v).encode()
    ),
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(
            st.sampled_from(["image", "features", "tokens", "str_input", "fp16_input"]),
            json_values,
        ),
        "shape": st.one_of(
            st.lists(st.integers(min_value=-2, max_value=30), max_size=4), json_values
        ),
        "datatype": st.one_of(
            st.sampled_from(["FP32", "FP64", "INT32", "UINT8", "BOOL", "BYTES", "FP16"]),
            json_values,
        ),
        "data": st.one_of(arrays(), json_values),
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": st.integers(-5, 5000)}), json_values
        ),
    },
)
v2_bodies = st.one_of(
    st.binary(max_size=64),
    st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(tensors, max_size=3), json_values)},
        optional={
            "outputs": st.one_of(
                st.lists(st.fixed_dictionaries({"name": json_values}), max_size=2), json_values
            ),
            "parameters": json_values,
            "id": json_values,
        },
    ).map(lambda v: json.dumps(v).encode()),
)


class _Client:
    """Calls the ASGI app directly on one event loop (an HTTP client would dominate the time)."""

    def __init__(self, app: Any, runner: asyncio.Runner) -> None:
        self.app, self.runner = app, runner
        self.name = app.state.config.model_name or Path(app.state.model.path).stem

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": b"", "headers": raw, "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2), "state": {},
        }  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.runner.run(self.app(scope, receive, send))
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        body_parts = [m.get("body", b"") for m in sent if m["type"] == "http.response.body"]
        return status, b"".join(body_parts)


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("props")
    paths = [
        make_image_model(d / "image.onnx"),
        make_tabular_model(d / "tabular.onnx"),
        make_text_model(d / "text.onnx"),
        make_kserve_models(d)["FP16InputModel"],  # BYTES and FP16 inputs
    ]
    with asyncio.Runner() as runner:
        yield [_Client(create_app(p, max_batch=64, warmup=False), runner) for p in paths]


def _check(status: int, body: bytes) -> None:
    assert status < 500, body
    if status >= 400:
        assert json.loads(body)["error"]


@SETTINGS
@given(body=predict_bodies, which=st.integers(0, 3))
def test_predict_never_answers_5xx(clients: Any, body: bytes, which: int) -> None:
    _check(*clients[which].post("/predict", body, {"content-type": "application/json"}))


@SETTINGS
@given(body=v2_bodies, which=st.integers(0, 3), header=st.one_of(st.none(), st.integers(-3, 200)))
def test_v2_infer_never_answers_5xx(clients: Any, body: bytes, which: int, header: Any) -> None:
    c = clients[which]
    headers = {} if header is None else {"inference-header-content-length": str(header)}
    _check(*c.post(f"/v2/models/{c.name}/infer", body, headers))
