"""Batch streams (edgekit.runtime.streams): a call's batch split into parts that run at once,
on onnxruntime and OpenVINO, with the same values as the whole batch; the settings each engine
gets; models whose batch cannot be split are refused with the reason."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import InputError
from edgekit.runtime import EdgeModel, SessionOptionsConfig
from edgekit.runtime.specs import InputSpec
from edgekit.runtime.streams import BATCH_KEY, BatchStreams, split_problem

RNG = np.random.default_rng(0)
ENGINES = ("onnxruntime", "openvino")


def _two_in_two_out(path: Path, batch: str | int = "N", **props: str) -> Path:
    """rows = a @ W + b (per row) and a softmax of each row of a: two inputs, two outputs."""
    w = RNG.standard_normal((6, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["aw"]),
         helper.make_node("Add", ["aw", "b"], ["rows"]),
         helper.make_node("Softmax", ["a"], ["soft"], axis=-1)],
        "streams",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [batch, 6]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("soft", TensorProto.FLOAT, [batch, 6])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _two_in_two_out(tmp_path_factory.mktemp("streams") / "streams.onnx")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("streams", [2, 3])
def test_split_batches_give_the_whole_batch_values(model: Path, engine: str,
                                                   streams: int) -> None:
    """Every batch size from one row to more than the streams, odd and even: the outputs of
    the split call equal the whole call's, in order, on both outputs."""
    whole = EdgeModel(model, engine=engine, threads=streams)
    split = EdgeModel(model, engine=engine, threads=streams,
                      session={"batch_streams": streams})
    assert split.session_config.batch_streams == streams
    for n in (1, 2, 3, 5, 8, 1):
        feeds = {"a": RNG.standard_normal((n, 6)).astype(np.float32),
                 "b": RNG.standard_normal((n, 4)).astype(np.float32)}
        got, want = split.run(feeds), whole.run(feeds)
        assert [g.shape for g in got] == [(n, 4), (n, 6)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got[0], feeds["a"] @ _weights(model) + feeds["b"],
                                   rtol=1e-5, atol=1e-5)
    split.close()
    whole.close()
    with pytest.raises(InputError, match="closed"):
        split.run({"a": np.zeros((4, 6), np.float32), "b": np.zeros((4, 4), np.float32)})


def _weights(path: Path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0])


def test_each_engine_gets_its_share_of_the_threads(model: Path) -> None:
    """onnxruntime runs each part on threads // streams intra-op threads, OpenVINO compiles
    NUM_STREAMS streams over all the threads; unset, neither changes."""
    cfg = SessionOptionsConfig(threads=4, batch_streams=2)
    assert cfg.streams == 2 and cfg.stream_threads() == 2
    assert cfg.to_ort().intra_op_num_threads == 2
    assert cfg.to_openvino()["NUM_STREAMS"] == "2"
    assert cfg.to_openvino()["INFERENCE_NUM_THREADS"] == "4"
    plain = SessionOptionsConfig(threads=4)
    assert plain.streams == 1 and "NUM_STREAMS" not in plain.to_openvino()
    assert plain.to_ort().intra_op_num_threads == 4
    assert SessionOptionsConfig(threads=3, batch_streams=2).stream_threads() == 1
    ort_model = EdgeModel(model, engine="onnxruntime", threads=2, session={"batch_streams": 2})
    assert ort_model.session.get_session_options().intra_op_num_threads == 1
    ov_model = EdgeModel(model, engine="openvino", threads=2, session={"batch_streams": 2})
    compiled = ov_model.engine.compiled  # type: ignore[attr-defined]
    assert int(compiled.get_property("NUM_STREAMS")) == 2
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert ov_model.describe()["session"] == {"intra_op_num_threads": 2, "engine": "openvino",
                                              "batch_streams": 2}


def test_the_parts_run_at_once_on_the_pool() -> None:
    """The first part runs on the calling thread and the others on the pool's threads, at
    the same time (each part waits until all have started); closing stops the pool."""
    started = threading.Barrier(3, timeout=10)
    names: list[str] = []

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names.append(threading.current_thread().name)
        if len(feeds["x"]) > 1:
            started.wait()  # raises BrokenBarrierError if the parts ran one after another
        return [feeds["x"] * 2]

    streams = BatchStreams(run, 3)
    x = np.arange(7, dtype=np.float32)[:, None]
    (y,) = streams({"x": x})
    np.testing.assert_array_equal(y, x * 2)
    assert names.count(threading.current_thread().name) == 1
    assert sum(n.startswith("edgekit-stream") for n in names) == 2
    streams.close()
    names.clear()
    (y,) = streams({"x": x[:1]})  # one row: whole, on the caller, no pool
    assert names == [threading.current_thread().name]


def test_rows_that_disagree_run_whole() -> None:
    calls: list[int] = []

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        calls.append(len(feeds["a"]))
        return [feeds["a"]]

    BatchStreams(run, 2)({"a": np.zeros((4, 1)), "b": np.zeros((3, 1))})
    assert calls == [4]


def test_a_model_that_mixes_the_batch_is_refused(tmp_path: Path) -> None:
    """A file marked batch-dependent by its export, or one with a fixed batch axis, cannot be
    split: loading it with batch_streams says why, and without it the model runs."""
    mixed = _two_in_two_out(tmp_path / "mixed.onnx", **{BATCH_KEY: "true"})
    fixed = _two_in_two_out(tmp_path / "fixed.onnx", batch=8)
    for engine in ENGINES:
        with pytest.raises(InputError, match="cannot split the batch of mixed.onnx: its "
                           "outputs mix the rows") as exc:
            EdgeModel(mixed, engine=engine, threads=2, session={"batch_streams": 2})
        assert exc.value.hint == "leave batch_streams unset"
        with pytest.raises(InputError, match="'a', 'b', 'rows' have no dynamic batch axis"):
            EdgeModel(fixed, engine=engine, threads=2, session={"batch_streams": 2})
        ok = EdgeModel(mixed, engine=engine, threads=2)
        assert ok.run({"a": np.ones((3, 6), np.float32), "b": np.ones((3, 4), np.float32)})
    assert split_problem([InputSpec("x", "tensor(float)", [])], [], {}) == \
        "'x' has no dynamic batch axis"


@pytest.mark.parametrize("bad, match", [
    ({"batch_streams": 0}, "batch_streams"),
    ({"batch_streams": "2"}, "batch_streams"),
    ({"batch_streams": 3, "threads": 2}, "batch_streams=3 needs as many threads"),
])
def test_bad_batch_streams_are_refused(bad: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        SessionOptionsConfig.from_dict(bad)


def test_batch_streams_round_trip_through_stored_settings() -> None:
    cfg = SessionOptionsConfig(threads=2, engine="openvino", batch_streams=2)
    assert SessionOptionsConfig.from_dict(cfg.to_dict()) == cfg
    assert SessionOptionsConfig(threads=2).merged(
        SessionOptionsConfig(batch_streams=2)).to_dict() == {"intra_op_num_threads": 2,
                                                             "batch_streams": 2}


def test_stored_streams_follow_explicit_threads(tmp_path: Path) -> None:
    """A tuned file's stored split applies on load; explicit threads fewer than its streams
    cap them (none on one thread), more keep them; another engine than the stored one drops
    the split (it was timed on that engine only)."""
    import json

    path = _two_in_two_out(tmp_path / "tuned.onnx", **{"edgekit.session": json.dumps(
        {"intra_op_num_threads": 2, "batch_streams": 2, "engine": "openvino"})})
    cases = [({}, 2, "openvino"), ({"threads": 1}, None, "openvino"),
             ({"threads": 4}, 2, "openvino"), ({"engine": "onnxruntime"}, None, "onnxruntime")]
    for kwargs, streams, engine in cases:
        m = EdgeModel(path, **kwargs)  # type: ignore[arg-type]
        assert (m.session_config.batch_streams, m.engine_name) == (streams, engine), kwargs
        (rows, _) = m.run({"a": np.ones((4, 6), np.float32), "b": np.zeros((4, 4), np.float32)})
        np.testing.assert_allclose(rows, np.ones((4, 6)) @ _weights(path), rtol=1e-5)
        m.close()
