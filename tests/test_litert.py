"""edgekit.measure.litert: .tflite files through LiteRT's CompiledModel, the Interpreter as the
fallback; both on real Keras-made files, against each other and against Keras."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from _bench_models import BenchModels

from edgekit.errors import ModelLoadError
from edgekit.measure.backends import load_backend
from edgekit.measure.bench import BenchConfig, bench_models
from edgekit.measure.compare_variants import tflite_bytes
from edgekit.measure.litert import API_COMPILED, API_INTERPRETER, TFLiteBackend
from edgekit.speed.timing import make_inputs

#: the int8 step of a softmax output (TFLite fixes its scale at 1/256)
SOFTMAX_INT8_STEP = 1 / 256


@pytest.fixture(scope="module")
def small_tflite(bench_models_dir: BenchModels) -> dict[str, object]:
    """The trained toy CNN as Keras, fp32 TFLite and int8 TFLite (calibrated on its data)."""
    import keras

    km = keras.models.load_model(bench_models_dir.keras, compile=False)
    cal = np.load(bench_models_dir.data)["x"][:64].astype(np.float32) / 255.0
    return {"keras": km, "fp32": tflite_bytes(km), "int8": tflite_bytes(km, [cal])}


def _tflite(tmp_path: Path, name: str, inputs: list[object], outputs: object) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(tflite_bytes(keras.Model(inputs, outputs)))
    return path


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_compiled_model_matches_interpreter_and_keras(small_tflite: dict[str, object],
                                                      precision: str) -> None:
    """Same file, same inputs, batch 1 -> 5 -> 32 -> 1 (resized both ways): CompiledModel gives
    the Interpreter's outputs (within one int8 step) and, for fp32, Keras' outputs."""
    content = small_tflite[precision]
    assert isinstance(content, bytes)
    cm = TFLiteBackend("m.tflite", content=content, threads=1)
    it = TFLiteBackend("m.tflite", content=content, threads=1, api="interpreter")
    assert (cm.api, cm.fallback, it.api, it.fallback) == (API_COMPILED, None, API_INTERPRETER,
                                                          None)
    assert cm.runtime == "LiteRT CompiledModel (CPU, XNNPACK, 1 thread)"
    assert it.runtime == "LiteRT Interpreter (XNNPACK, 1 thread)"
    assert cm.inputs == it.inputs and cm.inputs[0].shape == (None, 28, 28, 1)
    for batch in (1, 5, 32, 1):
        x = make_inputs(cm.inputs, batch, seed=batch)
        got, ref = cm.infer(x), it.infer(x)
        assert got.shape == ref.shape == (batch, 10) and got.dtype == ref.dtype == np.float32
        if precision == "int8":
            assert np.abs(got - ref).max() <= SOFTMAX_INT8_STEP + 1e-6
        else:
            np.testing.assert_allclose(got, ref, atol=1e-6)
            keras_out = small_tflite["keras"](x[0], training=False)  # type: ignore[operator]
            np.testing.assert_allclose(got, np.asarray(keras_out), atol=1e-5)
        assert np.allclose(got.sum(1), 1.0, atol=0.02)
    assert cm.api == API_COMPILED  # never fell back
    call = cm.bind(make_inputs(cm.inputs, 3))
    assert np.array_equal(call(), call()) and call().shape == (3, 10)


def test_compiled_model_gives_tf_lite_values(small_tflite: dict[str, object]) -> None:
    """LiteRT (CompiledModel, XNNPACK) gives the deprecated tf.lite.Interpreter's values."""
    import tensorflow as tf

    x = [np.random.default_rng(3).random((5, 28, 28, 1), dtype=np.float32)]
    for precision in ("fp32", "int8"):
        content = small_tflite[precision]
        b = TFLiteBackend("m.tflite", content=content, threads=1)  # type: ignore[arg-type]
        assert b.api == API_COMPILED and b.library == "litert"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = tf.lite.Interpreter(model_content=content, num_threads=1)
        ref.resize_tensor_input(ref.get_input_details()[0]["index"], list(x[0].shape))
        ref.allocate_tensors()
        ref.set_tensor(ref.get_input_details()[0]["index"], x[0])
        ref.invoke()
        want = ref.get_tensor(ref.get_output_details()[0]["index"])
        np.testing.assert_allclose(b.infer(x), want, atol=1e-5)


def test_inputs_and_first_output_follow_the_interpreter(tmp_path: Path) -> None:
    """Two inputs, two outputs: the signature order (zeta, alpha; outputs by name) is mapped
    to the model's order, as the Interpreter lists them."""
    import keras

    a, b = keras.Input((5,), name="zeta"), keras.Input((3,), name="alpha")
    h = keras.layers.Concatenate()([a, b])
    path = _tflite(tmp_path, "multi", [a, b], [keras.layers.Dense(2, name="yy")(h),
                                               keras.layers.Dense(4, name="aa")(h)])
    cm = load_backend(path, threads=1)
    it = TFLiteBackend(path, threads=1, api="interpreter")
    assert isinstance(cm, TFLiteBackend) and cm.api == API_COMPILED
    assert cm.inputs == it.inputs
    assert [(s.name, s.shape) for s in cm.inputs] == [("serving_default_zeta:0", (None, 5)),
                                                      ("serving_default_alpha:0", (None, 3))]
    for batch in (1, 4):
        x = make_inputs(cm.inputs, batch, seed=batch)
        got, ref = cm.infer(x), it.infer(x)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-6)


def test_interpreter_takes_over_a_batch_compiled_model_cannot_resize_to(tmp_path: Path) -> None:
    """A model with a static batch of 1: CompiledModel runs batch 1, cannot resize to 3; the
    Interpreter then runs it (and every later call), and the backend says why."""
    import keras

    inp = keras.Input(batch_shape=(1, 6), name="feat")
    hidden = keras.layers.Dense(8, activation="relu")(inp)
    path = _tflite(tmp_path, "fixed", [inp], keras.layers.Dense(3)(hidden))
    b = TFLiteBackend(path, threads=1)
    x = np.random.default_rng(0).random((3, 6), dtype=np.float32)
    first = b.infer([x[:1]])
    assert b.api == API_COMPILED
    got = b.infer([x])
    assert b.api == API_INTERPRETER and b.fallback is not None
    assert "cannot resize the inputs to [(3, 6)]" in b.fallback
    assert b.runtime.startswith("LiteRT Interpreter (XNNPACK, 1 thread); fallback: ")
    it = TFLiteBackend(path, threads=1, api="interpreter")
    np.testing.assert_allclose(got, it.infer([x]), atol=1e-6)
    np.testing.assert_allclose(first, got[:1], atol=1e-6)
    res = bench_models([b], BenchConfig(batches=(1, 2), runs=3, warmup=1, threads=1))
    assert "fallback: CompiledModel cannot resize" in res.models[0].runtime  # type: ignore[operator]
    assert f"{b.name}: LiteRT Interpreter" in res.table()


def test_interpreter_without_the_compiled_model_api(small_tflite: dict[str, object],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An ai-edge-litert without ``compiled_model`` (older releases): the Interpreter runs."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert.compiled_model", None)
    b = TFLiteBackend("m.tflite", content=small_tflite["fp32"], threads=1)  # type: ignore[arg-type]
    assert b.api == API_INTERPRETER and "no CompiledModel API" in (b.fallback or "")
    assert b.infer(make_inputs(b.inputs, 2)).shape == (2, 10)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_threads_are_honoured(small_tflite: dict[str, object]) -> None:
    """threads=N gives XNNPACK N-1 worker threads (the caller's thread is the N-th)."""
    def threads_added(n: int) -> int:
        before = len(os.listdir("/proc/self/task"))
        b = TFLiteBackend("m.tflite", content=small_tflite["fp32"], threads=n)  # type: ignore[arg-type]
        b.infer(make_inputs(b.inputs, 1))
        added = len(os.listdir("/proc/self/task")) - before
        assert b.api == API_COMPILED and f"{n} thread" in b.runtime
        b.close()
        return added

    assert threads_added(1) == 0
    assert threads_added(3) == 2


def test_bench_reports_the_api(small_tflite: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(small_tflite["int8"])  # type: ignore[arg-type]
    res = bench_models([path], BenchConfig(batches=(1, 4), runs=3, warmup=1, threads=1))
    runtime = "LiteRT CompiledModel (CPU, XNNPACK, 1 thread)"
    assert res.models[0].runtime == runtime
    assert cast(dict[str, Any], res.to_dict())["models"][0]["runtime"] == runtime
    assert res.table().endswith(f"\nm.tflite: {runtime}")


def test_a_corrupt_file_is_a_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ModelLoadError, match="CompiledModel cannot load it"):
        load_backend(bad)
