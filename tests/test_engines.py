"""edgekit.runtime engines: onnxruntime and OpenVINO behind the same EdgeModel API.

Models: the shipped Fashion-MNIST CNN (fp32, and int8 built here from the shipped calibration
data) and the small onnx.helper models of the runtime tests.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import openvino as ov
import pytest
from _runtime_models import make_image_model, make_two_input_model
from _serve_models import shipped_onnx

from edgekit.errors import EdgekitError, InputError
from edgekit.runtime import (
    MAX_STATIC_SHAPES,
    EdgeModel,
    SessionOptionsConfig,
    engine_names,
    predict_input,
)

ROOT = Path(__file__).resolve().parents[1]
CNN_CAL = ROOT / "calibration_data" / "fashion_mnist.npz"
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
ONE_THREAD = SessionOptionsConfig(threads=1)

pytestmark = pytest.mark.file_seconds(5)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped CNN as fp32 ONNX and as static int8 QDQ ONNX."""
    from edgekit.quantize import QuantizationConfig, QuantMode, quantize_file

    fp32 = shipped_onnx("fashion_cnn", tmp_path_factory)
    out = tmp_path_factory.mktemp("cnn_int8")
    cfg = QuantizationConfig(mode=QuantMode.INT8)
    result, _ = quantize_file(fp32, out, cfg, calibration=CNN_CAL)
    assert result.path is not None
    return {"fp32": fp32, "int8": Path(result.path)}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("engine_models")
    return {
        "image": make_image_model(d / "image.onnx"),
        "two": make_two_input_model(d / "two.onnx"),
        "ov_tuned": make_image_model(
            d / "ov_tuned.onnx", session={"engine": "openvino", "intra_op_num_threads": 1}
        ),
        "future": make_image_model(
            d / "future.onnx",
            session={"engine": "warpdrive", "intra_op_num_threads": 1, "precision": "bf16"},
        ),
    }


def _ort_file(src: Path, dst: Path) -> Path:
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(dst)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return dst


# -- same answers --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_both_engines_give_the_same_values(cnn: dict[str, Path], variant: str) -> None:
    a = EdgeModel(cnn[variant], engine="onnxruntime", session=ONE_THREAD)
    b = EdgeModel(cnn[variant], engine="openvino", session=ONE_THREAD)
    assert (a.engine_name, b.engine_name) == ("onnxruntime", "openvino")
    assert a.input_names == b.input_names and a.output_names == b.output_names
    assert [s.to_dict() for s in a.inputs] == [s.to_dict() for s in b.inputs]
    pa, pb = a.predict(IMAGES), b.predict(IMAGES)
    assert pb.dtype == np.float32 and pb.shape == (7, 10)
    assert float(np.abs(pa - pb).max()) < (1e-5 if variant == "fp32" else 0.02)
    assert a.predict_labels(IMAGES) == b.predict_labels(IMAGES)
    x = (IMAGES[..., None] / 255.0).astype(np.float32)
    (ra,), (rb,) = a.run(x), b.run({"image": x})
    np.testing.assert_allclose(ra, rb, atol=1e-5 if variant == "fp32" else 0.02)
    assert b.labels == a.labels and b.metadata == a.metadata
    assert b.describe()["engine"] == "openvino" and b.providers == ["openvino:CPU"]


def test_openvino_dynamic_batch_1_and_7(cnn: dict[str, Path]) -> None:
    m = EdgeModel(cnn["fp32"], engine="openvino", session=ONE_THREAD)
    ref = EdgeModel(cnn["fp32"], engine="onnxruntime", session=ONE_THREAD)
    for n in (1, 7, 1, 7):
        x = (IMAGES[:n, ..., None] / 255.0).astype(np.float32)
        (y,) = m.run(x)
        assert y.shape == (n, 10) and y.dtype == np.float32
        np.testing.assert_allclose(y, ref.run(x)[0], atol=1e-5)
    assert set(m.engine._by_shape) >= {(1, 28, 28, 1), (7, 28, 28, 1)}  # type: ignore[attr-defined]


def test_openvino_many_shapes_and_outputs_stay_valid(small: dict[str, Path]) -> None:
    m = EdgeModel(small["image"], engine="openvino")
    ref = EdgeModel(small["image"], engine="onnxruntime")
    outs = []
    for n in range(1, MAX_STATIC_SHAPES + 4):  # past the static cache: dynamic compilation
        x = RNG.random((n, 28, 28, 1), dtype=np.float32)
        (y,) = m.run(x)
        np.testing.assert_allclose(y, ref.run(x)[0], atol=1e-5)
        outs.append((x, y))
    x0, y0 = outs[0]
    np.testing.assert_allclose(y0, ref.run(x0)[0], atol=1e-5)  # not overwritten by later runs
    xs = RNG.random((3, 28, 56, 1), dtype=np.float32)[:, :, ::2]  # not C-contiguous
    xs.setflags(write=False)
    np.testing.assert_allclose(m.run(xs)[0], ref.run(xs)[0], atol=1e-5)


def test_openvino_small_inputs_are_copied_in_and_large_ones_shared(tmp_path: Path) -> None:
    """Small inputs of a static compilation go into the request's own buffers (a new
    ov.Tensor per call costs more), large ones are wrapped without copying, and once one is
    wrapped the request's buffers are not written again: values right on every call, with
    each input's size crossing COPY_INPUT_BYTES, and no output overwritten by a later call."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.runtime.engine_openvino import COPY_INPUT_BYTES

    wide = COPY_INPUT_BYTES // 4 // 2  # float32 columns: batch 1 and 2 copied, 4 wrapped
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "two"], ["twice"]),
         helper.make_node("Add", ["b", "one"], ["plus"])],
        "copy_or_share",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", wide])],
        [helper.make_tensor_value_info("twice", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("plus", TensorProto.FLOAT, ["N", wide])],
        initializer=[onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                     onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    path = tmp_path / "copy_or_share.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    m = EdgeModel(path, engine="openvino", session=ONE_THREAD)
    seen = []
    for n in (1, 1, 4, 4, 1, 2, 4, 1):
        a, b = RNG.random((n, 3), dtype=np.float32), RNG.random((n, wide), dtype=np.float32)
        twice, plus = m.run({"a": a, "b": b})
        np.testing.assert_array_equal(twice, a * 2)
        np.testing.assert_array_equal(plus, b + 1)
        seen.append((a, b, twice, plus))
    for a, b, twice, plus in seen:  # every result still its own call's
        np.testing.assert_array_equal(twice, a * 2)
        np.testing.assert_array_equal(plus, b + 1)
    lanes = {key[1][0]: c.local.lane
             for key, c in m.engine._by_shape.items()}  # type: ignore[attr-defined]
    assert lanes[1].inputs is not None and lanes[2].inputs is not None  # copied in
    assert lanes[4].inputs is None  # b wrapped (4 rows are over the limit): shared since


def test_openvino_multi_input(small: dict[str, Path]) -> None:
    m = EdgeModel(small["two"], engine="openvino")
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    (s,) = m.run({"b": b, "a": a})
    np.testing.assert_array_equal(s, a + b)
    with pytest.raises(InputError, match=r"missing input\(s\) 'b'"):
        m.run({"a": a})


# -- settings reach OpenVINO ---------------------------------------------------------------
def test_threads_precision_and_hint_reach_openvino(small: dict[str, Path]) -> None:
    m = EdgeModel(small["image"], engine="openvino", session=SessionOptionsConfig(threads=1))
    c = m.engine.compiled  # type: ignore[attr-defined]
    assert c.get_property("INFERENCE_NUM_THREADS") == 1
    assert c.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32  # pinned by default
    assert str(c.get_property("PERFORMANCE_HINT")) == "LATENCY"
    cfg = SessionOptionsConfig(threads=2, precision="bf16", performance_hint="throughput")
    m2 = EdgeModel(small["image"], engine="openvino", session=cfg)
    c2 = m2.engine.compiled  # type: ignore[attr-defined]
    assert c2.get_property("INFERENCE_NUM_THREADS") == 2
    assert str(c2.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert c2.get_property("INFERENCE_PRECISION_HINT") == (
        ov.Type.bf16 if has_bf16 else ov.Type.f32
    )
    assert m2.session_config.precision == "bf16"


def test_session_config_new_fields_validate_and_roundtrip() -> None:
    cfg = SessionOptionsConfig(threads=3, engine="OV", precision="FP32", performance_hint="Latency")
    assert (cfg.intra_op_num_threads, cfg.engine, cfg.precision) == (3, "openvino", "f32")
    assert SessionOptionsConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_openvino() == {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": "3",
    }
    assert SessionOptionsConfig(engine="auto").engine is None
    for bad in (
        {"precision": "int4"},
        {"performance_hint": "fast"},
        {"threads": -2},
        {"threads": 2, "intra_op_num_threads": 3},
    ):
        with pytest.raises(InputError):
            SessionOptionsConfig.from_dict(bad)


def test_onnxruntime_refuses_bf16(small: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="bf16 is OpenVINO's"):
        EdgeModel(small["image"], engine="onnxruntime", session={"precision": "bf16"})


# -- choosing the engine -------------------------------------------------------------------
def test_auto_uses_the_stored_engine(small: dict[str, Path]) -> None:
    m = EdgeModel(small["ov_tuned"])
    assert m.engine_name == "openvino" and m.session_config.engine == "openvino"
    assert m.engine.compiled.get_property("INFERENCE_NUM_THREADS") == 1  # type: ignore[attr-defined]
    assert EdgeModel(small["ov_tuned"], engine="onnxruntime").engine_name == "onnxruntime"
    assert EdgeModel(small["ov_tuned"], use_stored_session=False).engine_name == "onnxruntime"
    assert EdgeModel(small["image"]).engine_name == "onnxruntime"
    with pytest.raises(InputError, match="no onnxruntime session"):
        _ = m.session


def test_unknown_stored_engine_falls_back_with_a_warning(
    small: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edgekit.runtime"):
        m = EdgeModel(small["future"])
    assert m.engine_name == "onnxruntime"
    msgs = [r.getMessage() for r in caplog.records]
    assert any("'warpdrive'" in t and "falling back to onnxruntime" in t for t in msgs), msgs
    # the portable settings stay, the engine-specific ones (bf16) are dropped
    assert m.session_config.intra_op_num_threads == 1 and m.session_config.precision is None
    assert m.session.get_session_options().intra_op_num_threads == 1
    assert m.predict(IMAGES).shape == (7, 10)


def test_missing_openvino_falls_back_or_names_the_extra(small: dict[str, Path]) -> None:
    code = f"""
import logging, sys
sys.modules["openvino"] = None  # this interpreter has no openvino
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from edgekit.errors import MissingDependencyError
from edgekit.runtime import EdgeModel
print("ENGINE", EdgeModel({str(small["ov_tuned"])!r}).engine_name, flush=True)
try:
    EdgeModel({str(small["image"])!r}, engine="openvino")
except MissingDependencyError as e:
    print("HINT", e.hint, flush=True)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    assert "ENGINE onnxruntime" in out.stdout, out.stdout + out.stderr
    assert 'HINT pip install "edgekit[openvino]"' in out.stdout, out.stdout + out.stderr
    assert "'openvino' is not installed" in out.stderr and "falling back" in out.stderr


def test_bad_engine_name_lists_the_valid_ones(small: dict[str, Path]) -> None:
    with pytest.raises(EdgekitError, match="unknown engine 'tflite'") as e:
        EdgeModel(small["image"], engine="tflite")
    assert all(n in (e.value.hint or "") for n in engine_names())


def test_ort_file_is_onnxruntime_only(small: dict[str, Path], tmp_path: Path) -> None:
    path = _ort_file(small["image"], tmp_path / "image.ort")
    with pytest.raises(InputError, match="ORT format"):
        EdgeModel(path, engine="openvino")
    assert EdgeModel(path).engine_name == "onnxruntime"


# -- checks --------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_nan_rejected_by_predict_and_run(small: dict[str, Path], engine: str) -> None:
    m = EdgeModel(small["image"], engine=engine)
    with pytest.raises(InputError, match="contains NaN"):
        m.predict(np.full((28, 28), np.nan, np.float32))
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[1, 2, 3, 0] = np.inf
    assert m.run(x)[0].shape == (2, 10)  # the hot path leaves values to the engine
    strict = EdgeModel(small["image"], engine=engine, check_nan=True)
    strict.run(np.zeros_like(x))  # the signature is now checked and cached
    with pytest.raises(InputError, match="infinite"):
        strict.run(x)  # the data check still runs
    lax = EdgeModel(small["image"], engine=engine, check_nan=False)
    assert lax.run(x)[0].shape == (2, 10)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_cached_signature_still_rejects_a_wrong_one(small: dict[str, Path], engine: str) -> None:
    m = EdgeModel(small["image"], engine=engine)
    good = np.zeros((1, 28, 28, 1), np.float32)
    for _ in range(2):
        assert m.run({"image": good})[0].shape == (1, 10)
    with pytest.raises(InputError, match="size 28 on axis 2"):
        m.run({"image": np.zeros((1, 28, 27, 1), np.float32)})
    with pytest.raises(InputError, match="unknown input name"):
        m.run({"img": good})
    with pytest.raises(InputError, match="needs float32 data, got int32|no safe automatic cast"):
        m.run({"image": np.zeros((1, 28, 28, 1), np.int32)})
    (y,) = m.run({"image": good.astype(np.float64)})  # cast, not cached, still right
    np.testing.assert_allclose(y, m.run({"image": good})[0], atol=1e-6)
    assert m.run({"image": good})[0].shape == (1, 10)
    x = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
    (ref,) = m.run(x)
    # float32 by value but not the native dtype object (big-endian): checked and cast, same values
    np.testing.assert_array_equal(m.run({"image": x.astype(">f4")})[0], ref)
    with pytest.raises(InputError, match="unknown input name"):  # cached entry plus a stray one
        m.run({"image": x, "extra": x})


def test_predict_input_reports_the_engine(small: dict[str, Path], tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", IMAGES[:2])
    rep = cast(dict[str, Any], predict_input(small["image"], tmp_path / "x.npy", engine="openvino"))
    ref = cast(dict[str, Any], predict_input(small["image"], tmp_path / "x.npy"))
    assert (rep["engine"], ref["engine"]) == ("openvino", "onnxruntime")
    assert [[p["label"] for p in row] for row in rep["predictions"]] == [
        [p["label"] for p in row] for row in ref["predictions"]
    ]
    json.dumps(rep)


def test_close_under_both_engines(small: dict[str, Path]) -> None:
    for engine in ("onnxruntime", "openvino"):
        m = EdgeModel(small["image"], engine=engine)
        m.close()
        with pytest.raises(InputError, match="closed"):
            m.run(np.zeros((1, 28, 28, 1), np.float32))
        assert "closed" in repr(m)
