"""Bound calls (edgekit.runtime.ort_binding): a small model on onnxruntime's CPU provider runs
through buffers bound once per input signature. Every test compares values with the plain
``InferenceSession.run`` of the same file, on real onnxruntime sessions of graphs built here."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _runtime_models import make_image_model, make_regression_model, make_two_input_model
from onnx import TensorProto, helper

from edgekit.errors import InputError
from edgekit.runtime import EdgeModel
from edgekit.runtime.engine_ort import OnnxruntimeEngine
from edgekit.runtime.ort_binding import MAX_BOUND_BYTES, MAX_SIGNATURES, BoundRuns


def _plain(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _bound(model: EdgeModel) -> BoundRuns:
    eng = model.engine
    assert isinstance(eng, OnnxruntimeEngine) and eng.bound is not None
    return eng.bound


def _save(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], path: Path) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_small_model_runs_bound_and_gives_the_plain_values(tmp_path: Path) -> None:
    path, _ = make_regression_model(tmp_path)
    sess, rng = _plain(path), np.random.default_rng(0)
    with EdgeModel(path, threads=1) as model:
        outs = []
        for _ in range(20):
            x = rng.normal(size=(1, 8)).astype(np.float32)
            y = model.run({"x": x})[0]
            np.testing.assert_array_equal(y, sess.run(None, {"x": x})[0])
            outs.append(y)
        assert _bound(model).signatures == [(1, 8)]
    # each call's array is the caller's own: later calls did not overwrite earlier results
    assert len({id(o) for o in outs}) == len(outs)
    assert len({float(o[0, 0]) for o in outs}) == len(outs)


def test_two_inputs_and_several_batch_sizes_each_get_a_binding_up_to_the_limit(
        tmp_path: Path) -> None:
    path = make_two_input_model(tmp_path / "two.onnx")
    sess, rng = _plain(path), np.random.default_rng(1)
    sizes = [1, 2, 3, 4, 5, 6]
    with EdgeModel(path) as model:
        for _ in range(3):
            for n in sizes:
                a, b = (rng.normal(size=(n, 3)).astype(np.float32) for _ in range(2))
                y = model.run({"b": b, "a": a})[0]
                np.testing.assert_array_equal(y, sess.run(None, {"a": a, "b": b})[0])
        bound = _bound(model)
        assert bound.signatures == [((n, 3), (n, 3)) for n in sizes[:MAX_SIGNATURES]]
        assert bound.on


def test_large_tensors_are_not_bound(tmp_path: Path) -> None:
    path = make_image_model(tmp_path / "img.onnx")
    n = MAX_BOUND_BYTES // (28 * 28 * 4) + 1  # a batch whose image alone is over the limit
    sess, rng = _plain(path), np.random.default_rng(2)
    with EdgeModel(path) as model:
        for batch in (1, n, n):
            x = rng.random((batch, 28, 28, 1), dtype=np.float32)
            np.testing.assert_array_equal(model.run(x)[0], sess.run(None, {"image": x})[0])
        assert _bound(model).signatures == [(1, 28, 28, 1)]


def test_an_output_whose_shape_depends_on_the_values_turns_bound_calls_off_quietly(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = _save([helper.make_node("NonZero", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                 [helper.make_tensor_value_info("y", TensorProto.INT64, [1, None])],
                 tmp_path / "nonzero.onnx")
    sess = _plain(path)
    with EdgeModel(path) as model:
        for x in ([1, 0, 2, 0, 0, 0], [1, 0, 2, 0, 0, 0], [1, 1, 1, 0, 3, 0], [0] * 6):
            xs = np.array(x, np.float32)
            np.testing.assert_array_equal(model.run(xs)[0], sess.run(None, {"x": xs})[0])
        bound = _bound(model)
        assert not bound.on and bound.signatures == []
    assert "Non-zero status code" not in capfd.readouterr().err  # the refused run is not logged


def test_a_feed_of_another_dtype_takes_the_plain_run_and_keeps_bound_calls(
        tmp_path: Path) -> None:
    path, _ = make_regression_model(tmp_path)
    with EdgeModel(path) as model:
        x = np.ones((1, 8), np.float32)
        model.run({"x": x})
        engine = model.engine
        with pytest.raises(InputError, match="could not run"):  # the engine takes checked
            engine.run({"x": x.astype(np.float64)})  # feeds; onnxruntime refuses float64
        assert _bound(model).on
        np.testing.assert_array_equal(model.run({"x": x})[0], _plain(path).run(None, {"x": x})[0])


def test_concurrent_callers_get_their_own_results(tmp_path: Path) -> None:
    path, _ = make_regression_model(tmp_path)
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(8, 200, 1, 8)).astype(np.float32)
    expected = [[_plain(path).run(None, {"x": x})[0] for x in per] for per in xs]
    got: list[list[np.ndarray]] = [[] for _ in xs]
    with EdgeModel(path, threads=1) as model:
        model.run({"x": xs[0, 0]})  # the signature's binding exists before the threads start

        def call(i: int) -> None:
            got[i] = [model.run({"x": x})[0] for x in xs[i]]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for g, e in zip(got, expected, strict=True):
        assert len(g) == len(e)
        for a, b in zip(g, e, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_closed_model_refuses_calls_and_drops_its_bindings(tmp_path: Path) -> None:
    path, _ = make_regression_model(tmp_path)
    model = EdgeModel(path)
    x = np.ones((1, 8), np.float32)
    model.run({"x": x})
    model.close()
    assert isinstance(model.engine, OnnxruntimeEngine) and model.engine.bound is None
    with pytest.raises(InputError, match="closed"):
        model.run({"x": x})


def test_only_cpu_sessions_of_numeric_tensors_are_bound(tmp_path: Path) -> None:
    path = _save([helper.make_node("Identity", ["s"], ["t"])],
                 [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
                 [helper.make_tensor_value_info("t", TensorProto.STRING, ["N"])],
                 tmp_path / "strings.onnx")
    with EdgeModel(path) as model:
        assert isinstance(model.engine, OnnxruntimeEngine) and model.engine.bound is None
        assert model.run(np.array(["a", "b"], dtype=object))[0].tolist() == ["a", "b"]


def test_an_input_passed_through_and_a_constant_output_are_bound_right(tmp_path: Path) -> None:
    """Outputs onnxruntime does not compute into a buffer of its own (the graph input itself,
    a constant) are copied into the bound buffers: their values per call are the plain ones."""
    const = helper.make_tensor("c", TensorProto.INT64, [2], [7, 9])
    path = _save([helper.make_node("Identity", ["x"], ["same"]),
                  helper.make_node("Constant", [], ["k"], value=const),
                  helper.make_node("Cast", ["x"], ["flag"], to=TensorProto.BOOL)],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                 [helper.make_tensor_value_info("same", TensorProto.FLOAT, [2, 3]),
                  helper.make_tensor_value_info("k", TensorProto.INT64, [2]),
                  helper.make_tensor_value_info("flag", TensorProto.BOOL, [2, 3])],
                 tmp_path / "pass.onnx")
    rng = np.random.default_rng(5)
    with EdgeModel(path) as model:
        for _ in range(4):
            x = (rng.random((2, 3)) > 0.5).astype(np.float32) * rng.random((2, 3), np.float32)
            same, k, flag = model.run(x)
            np.testing.assert_array_equal(same, x)
            assert k.tolist() == [7, 9] and flag.dtype == np.bool_
            np.testing.assert_array_equal(flag, x != 0)
        assert _bound(model).signatures == [(2, 3)] and _bound(model).on


def test_feeds_that_are_not_arrays_or_miss_an_input_take_the_plain_run(tmp_path: Path) -> None:
    """The engine's BoundRuns called directly (past EdgeModel's own feed checks): a list feed
    (no ``.shape``) gives the plain run's values and no binding; a feed without the model's
    input gets the plain run's error; bound calls stay on for the arrays after both."""
    path, _ = make_regression_model(tmp_path)
    x = np.arange(8, dtype=np.float32).reshape(1, 8) / 8
    want = _plain(path).run(None, {"x": x})[0]
    with EdgeModel(path, threads=1) as model:
        bound = _bound(model)
        got = bound.run({"x": x.tolist()})  # what a careless caller passes
        np.testing.assert_array_equal(got[0], want)
        assert bound.signatures == []
        with pytest.raises(InputError, match="could not run"):
            bound.run({"y": x})
        assert bound.on
        for _ in range(2):
            np.testing.assert_array_equal(bound.run({"x": x})[0], want)
        assert bound.on and bound.signatures == [(1, 8)]
