"""Per-engine proof of a file (edgekit.runtime.proof): an engine that gives other answers than
onnxruntime, or cannot read the file, is detected, recorded in the file, and refused by
EdgeModel; the QDQ pattern OpenVINO computes wrongly is written so that both engines agree."""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any, cast

import keras
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import EngineCheckError, ModelLoadError
from edgekit.metadata import PREFIX, set_props
from edgekit.quantize.qdq import float_means
from edgekit.runtime import EdgeModel
from edgekit.runtime.engine_record import EngineCheck, engines_prop, read_engine_checks
from edgekit.runtime.proof import check_engines
from edgekit.runtime.specs import read_onnx_props

pytest.importorskip("openvino")

pytestmark = pytest.mark.file_seconds(20)


def _qdq_mean_model(axis: int, rank4: bool = False) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> ReduceMean(axis) (or a 4-D
    GlobalAveragePool): the pattern OpenVINO 2026.4 computes wrongly over a middle axis."""
    shape: list[int | str] = ["N", 8, 4, 4] if rank4 else ["N", 16, 32]
    last = (helper.make_node("GlobalAveragePool", ["dq"], ["y"]) if rank4 else
            helper.make_node("ReduceMean", ["dq"], ["y"], axes=[axis], keepdims=0))
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]), last],
        "qdq_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
         numpy_helper.from_array(np.array(3, np.uint8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _det_model() -> onnx.ModelProto:
    """y = det(x) for 3x3 matrices: standard ONNX that onnxruntime runs and OpenVINO 2026.4's
    ONNX reader has no rule for (as it has none for the Loop of a Keras GRU)."""
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"])], "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _float_mean_model() -> onnx.ModelProto:
    model = _qdq_mean_model(axis=1)
    float_means(model)
    return model


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _feeds(shape: tuple[int, ...], n: int = 64) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).uniform(-3, 3, (n, *shape)).astype(np.float32)}


def test_an_engine_that_disagrees_with_onnxruntime_fails_its_check(tmp_path: Path) -> None:
    path = _save(_qdq_mean_model(axis=1), tmp_path / "m.onnx")
    checks = check_engines(path, _feeds((16, 32)), engines=["onnxruntime", "openvino"])
    assert list(checks) == ["onnxruntime", "openvino"]
    ort_check, ov = checks["onnxruntime"], checks["openvino"]
    assert ort_check.passed and ort_check.loads and ort_check.mean_abs_diff == 0.0
    assert ov.loads and not ov.passed
    assert ov.top1_agreement is not None and ov.top1_agreement < 0.5
    assert "onnxruntime" in ov.reason
    assert "FAILED" in ov.summary()


def test_an_engine_that_agrees_passes_with_its_figures(tmp_path: Path) -> None:
    path = _save(_float_mean_model(), tmp_path / "m.onnx")
    checks = check_engines(path, _feeds((16, 32)), engines=["openvino"])
    ov = checks["openvino"]
    assert ov.passed and ov.reason == "" and ov.samples == 64
    assert ov.top1_agreement == 1.0
    assert ov.max_abs_diff is not None and ov.max_abs_diff < 1e-5
    assert ov.summary().endswith("passed")


def test_mean_reductions_read_float_and_then_both_engines_agree(tmp_path: Path) -> None:
    model = _qdq_mean_model(axis=1)
    assert float_means(model) == [model.graph.node[-1].name]
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["ReduceMean"]  # the Q/DQ pair had no other reader: removed
    assert model.graph.node[0].input[0] == "x"
    assert not model.graph.initializer  # its scale and zero point went with it
    path = _save(model, tmp_path / "m.onnx")
    feeds = _feeds((16, 32))
    checks = check_engines(path, feeds, engines=["openvino"])
    assert checks["openvino"].passed, checks["openvino"].reason
    got = EdgeModel(path).run(feeds)[0]
    np.testing.assert_allclose(got, feeds["x"].mean(axis=1), rtol=1e-5, atol=1e-6)


def test_a_cnn_head_pool_keeps_its_int8_input() -> None:
    model = _qdq_mean_model(axis=1, rank4=True)
    assert float_means(model) == []
    assert [n.op_type for n in model.graph.node] == [
        "QuantizeLinear", "DequantizeLinear", "GlobalAveragePool"]


def test_an_engine_that_cannot_read_the_file_is_a_failed_check(tmp_path: Path) -> None:
    path = _save(_det_model(), tmp_path / "det.onnx")
    feeds = _feeds((3, 3))
    np.testing.assert_allclose(EdgeModel(path).run(feeds)[0], np.linalg.det(feeds["x"]),
                               rtol=1e-4, atol=1e-4)
    checks = check_engines(path, feeds, engines=["openvino"])
    assert checks["onnxruntime"].passed
    ov = checks["openvino"]
    assert not ov.loads and not ov.passed and ov.samples == 0
    assert "OpenVINO cannot read Det-17" in ov.reason


def test_the_load_error_names_the_missing_op_not_a_truncated_file(tmp_path: Path) -> None:
    path = _save(_det_model(), tmp_path / "det.onnx")
    with pytest.raises(ModelLoadError) as info:
        EdgeModel(path, engine="openvino")
    assert "OpenVINO cannot read Det-17" in info.value.message
    assert "truncated" not in (info.value.hint or "")
    assert "onnxruntime" in (info.value.hint or "")


def _recorded(folder: Path, openvino_passed: bool, stored_engine: str | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    model = _float_mean_model()
    record = {"onnxruntime": EngineCheck("onnxruntime", True, True, samples=8).to_dict(),
              "openvino": EngineCheck("openvino", True, openvino_passed, samples=8,
                                      reason="" if openvino_passed else "it differs").to_dict()}
    props = engines_prop(record)
    if stored_engine:
        props[PREFIX + "session"] = json.dumps({"engine": stored_engine})
    set_props(model, props)
    return _save(model, folder / "rec.onnx")


def test_the_record_reads_back() -> None:
    record = {"openvino": EngineCheck("openvino", False, False, reason="no Loop").to_dict()}
    back = read_engine_checks(engines_prop(record))
    assert back == {"openvino": EngineCheck("openvino", False, False, reason="no Loop")}
    assert read_engine_checks({}) == {}
    with pytest.raises(ValueError, match="boolean"):
        read_engine_checks({PREFIX + "engines": json.dumps({"openvino": {"passed": "yes"}})})


def test_edge_model_refuses_an_engine_the_file_failed_on(tmp_path: Path) -> None:
    path = _recorded(tmp_path, openvino_passed=False)
    with pytest.raises(EngineCheckError, match="wrong answers on openvino: it differs") as info:
        EdgeModel(path, engine="openvino")
    assert "check_engine=False" in (info.value.hint or "")
    with EdgeModel(path, engine="openvino", check_engine=False) as model:
        assert model.engine_name == "openvino"
    with EdgeModel(path, engine="openvino", check_engine=False) as model:
        feeds = _feeds((16, 32), 2)
        np.testing.assert_allclose(model.run(feeds)[0], feeds["x"].mean(axis=1), rtol=1e-5)


def test_auto_never_picks_an_engine_the_file_failed_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    failed = _recorded(tmp_path / "a", openvino_passed=False, stored_engine="openvino")
    with caplog.at_level(logging.WARNING), EdgeModel(failed) as model:
        assert model.engine_name == "onnxruntime"
    assert "failed the engine check" in caplog.text
    passed = _recorded(tmp_path / "b", openvino_passed=True, stored_engine="openvino")
    with EdgeModel(passed) as model:
        assert model.engine_name == "openvino"


def test_an_engine_never_checked_runs_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _float_mean_model()
    set_props(model, engines_prop(
        {"onnxruntime": EngineCheck("onnxruntime", True, True, samples=8).to_dict()}))
    path = _save(model, tmp_path / "m.onnx")
    with caplog.at_level(logging.WARNING), EdgeModel(path, engine="openvino") as edge:
        assert edge.engine_name == "openvino"
    assert "never checked on openvino (only on onnxruntime)" in caplog.text
    caplog.clear()
    plain = _save(_float_mean_model(), tmp_path / "plain.onnx")  # no proof ever ran on it
    with caplog.at_level(logging.WARNING), EdgeModel(plain, engine="openvino") as edge:
        assert edge.engine_name == "openvino"
    assert "never checked" not in caplog.text


def test_nan_where_onnxruntime_has_nan_too_is_agreement() -> None:
    from edgekit.runtime.proof import _compare

    ref = [np.array([[0.2, np.nan], [0.7, 0.3]])]
    assert _compare("onnxruntime", ref, ref, None, None).passed
    other = [np.array([[0.2, 0.1], [0.7, 0.3]])]
    check = _compare("openvino", ref, other, None, None)
    assert not check.passed and "NaN or infinite" in check.reason


def test_a_malformed_record_is_a_load_error(tmp_path: Path) -> None:
    model = _float_mean_model()
    set_props(model, {PREFIX + "engines": "[1, 2]"})
    path = _save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="edgekit.engines metadata"):
        EdgeModel(path, engine="openvino")


def _vit_like() -> keras.Model:
    """Patch conv + one Transformer block + GlobalAveragePooling1D + softmax: the shape of
    model whose int8 file OpenVINO computed wrongly."""
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(16, 4, strides=4)(inp)
    x = keras.layers.Reshape((16, 16))(x)
    h = keras.layers.LayerNormalization()(x)
    h = keras.layers.MultiHeadAttention(2, 8)(h, h)
    x = keras.layers.Add()([x, h])
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))


@pytest.mark.slow
def test_export_records_every_engine_for_fp32_and_int8(tmp_path: Path) -> None:
    from edgekit.convert import ExportConfig, export_model
    from edgekit.quantize import QuantizationConfig
    from edgekit.quantize.core import export_hook

    keras.utils.set_random_seed(0)
    model = _vit_like()
    x = np.random.default_rng(0).uniform(0, 1, (300, 16, 16, 1)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    hook = export_hook(QuantizationConfig(), calibration=tmp_path / "cal.npz")
    model.save(tmp_path / "vit.keras")
    result = export_model(tmp_path / "vit.keras", tmp_path / "out", ExportConfig(),
                          validation_data=tmp_path / "cal.npz", extra_outputs=hook)
    report = cast(dict[str, Any], result.report)
    assert set(report["engines"]) == {"onnxruntime", "openvino"}
    assert all(r["passed"] for r in report["engines"].values()), report["engines"]
    variant = report["variants"]["int8"]
    assert variant["engines"]["openvino"]["passed"], variant["engines"]
    assert variant["engines"]["openvino"]["fp32_top1_agreement"] is not None
    for name in ("vit.onnx", "vit.int8.onnx"):
        props = read_onnx_props(tmp_path / "out" / name)
        assert props is not None
        assert read_engine_checks(props)["openvino"].passed
    int8 = onnx.load(str(tmp_path / "out" / "vit.int8.onnx"))
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    means = [n for n in int8.graph.node if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    assert means and all(producers.get(n.input[0]) != "DequantizeLinear" for n in means)
    with EdgeModel(tmp_path / "out" / "vit.int8.onnx", engine="openvino") as ov, \
            EdgeModel(tmp_path / "out" / "vit.int8.onnx") as ort_model:
        a, b = ort_model.run(x[:64])[0], ov.run(x[:64])[0]
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95


@pytest.mark.slow
def test_a_recurrent_export_is_marked_unreadable_for_openvino(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgekit.cli.main import cli

    inp = keras.Input((12, 4))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GRU(8)(inp))
    model = keras.Model(inp, out)
    model(np.zeros((1, 12, 4), np.float32))
    model.save(tmp_path / "gru.keras")
    run = CliRunner().invoke(cli, ["export", str(tmp_path / "gru.keras"), "-o",
                                   str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    assert "openvino FAILED (OpenVINO cannot read Loop" in run.output
    path = tmp_path / "out" / "gru.onnx"
    props = read_onnx_props(path)
    assert props is not None
    record = read_engine_checks(props)
    assert record["onnxruntime"].passed
    assert not record["openvino"].loads and "Loop" in record["openvino"].reason
    with pytest.raises(EngineCheckError, match="does not load in openvino"):
        EdgeModel(path, engine="openvino")
    with EdgeModel(path) as model_run:  # auto: onnxruntime, the engine it passed on
        assert model_run.engine_name == "onnxruntime"


def _segfault() -> EngineCheck:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_an_engine_that_crashes_its_process_is_a_failed_check() -> None:
    """OpenVINO 2026.4 segfaults compiling some int8 LSTMs: the check runs it in a child
    process, and a dead child is a failed check, not a dead export."""
    from edgekit.runtime.proof import in_child

    check = in_child(_segfault, (), "openvino")
    assert not check.loads and not check.passed
    assert "crashed the process" in check.reason and "-11" in check.reason


_NO_GUARD_SCRIPT = """
import numpy as np
import onnx
from onnx import TensorProto, helper

from edgekit.runtime.proof import check_engines

print("script body ran")
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, "relu.onnx")
feeds = {"x": np.random.default_rng(0).normal(size=(16, 4)).astype("float32")}
checks = check_engines("relu.onnx", feeds, engines=["openvino"], batch=8)
print("openvino", checks["openvino"].loads, checks["openvino"].passed)
"""


@pytest.mark.slow
def test_engine_check_from_a_script_without_a_main_guard(tmp_path: Path) -> None:
    """OpenVINO's check runs in a child process; a user's script with no
    ``if __name__ == "__main__":`` and a piped stdout must neither hang nor run twice (a
    multiprocessing spawn re-imports the script in the child)."""
    import subprocess
    import sys

    (tmp_path / "no_guard.py").write_text(_NO_GUARD_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "no_guard.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": root})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["script body ran", "openvino True True"]


def _wide_relu_model(width: int, depth: int = 1) -> onnx.ModelProto:
    """x -> Relu x (depth + 1) over ``width`` floats a sample: ``depth`` intermediates of
    4 * width bytes each."""
    names = ["x", *(f"h{i}" for i in range(depth)), "y"]
    graph = helper.make_graph(
        [helper.make_node("Relu", [a], [b]) for a, b in itertools.pairwise(names)],
        "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_the_check_batch_is_bounded_by_the_activations(tmp_path: Path) -> None:
    """A file whose activations fill the memory budget at 4 samples is checked 4 at a time
    (its own batch sizes 1 and 4 recorded); a small one keeps the batch of 64."""
    from edgekit.io.memory import BATCH_MEMORY_BYTES, activation_bytes, batch_for, batch_within
    from edgekit.quantize.build import CHECK_RUN_BATCH
    from edgekit.runtime.proof import CHECK_BATCH

    # a quarter of the budget a sample, in 64 intermediates of 2 MiB (the feeds stay small)
    depth = 64
    width = BATCH_MEMORY_BYTES // 4 // 4 // depth
    wide = _save(_wide_relu_model(width, depth), tmp_path / "wide.onnx")
    assert activation_bytes(wide) == depth * 4 * width == BATCH_MEMORY_BYTES // 4
    assert batch_within(activation_bytes(wide), CHECK_BATCH) == 4
    # the one rule for every batched run of a data set: the engine checks, and a quantized
    # variant's check samples (fp32 and each build)
    assert batch_for(wide, CHECK_BATCH) == batch_for(wide, CHECK_RUN_BATCH) == 4
    feeds = {"x": np.random.default_rng(0).standard_normal((6, width), dtype=np.float32)}
    check = check_engines(wide, feeds, engines=["openvino"])["openvino"]
    assert check.passed and check.batches == [1, 4]
    small = _save(_wide_relu_model(16), tmp_path / "small.onnx")
    assert batch_within(activation_bytes(small), CHECK_BATCH) == CHECK_BATCH
    assert batch_for(small, CHECK_RUN_BATCH) == CHECK_RUN_BATCH
    feeds = {"x": np.random.default_rng(0).standard_normal((70, 16), dtype=np.float32)}
    assert check_engines(small, feeds, engines=["openvino"])["openvino"].batches == [1, 8, 64]


def test_a_tune_turns_the_memory_pattern_off_only_for_large_batches(tmp_path: Path) -> None:
    """The tune's base session: onnxruntime's memory pattern (a second block beside the
    arena's first-run chunks) is left on unless a batch's activations pass the memory budget;
    the session built from it has it off then, and gives the same outputs."""
    from edgekit.io.memory import BATCH_MEMORY_BYTES
    from edgekit.runtime.session import SessionOptionsConfig
    from edgekit.tune.setup import _mem_pattern

    width = 1 << 16  # 256 KiB of activations a sample
    path = _save(_wide_relu_model(width), tmp_path / "m.onnx")
    fits = BATCH_MEMORY_BYTES // (4 * width)
    assert _mem_pattern(path, 1) is None and _mem_pattern(path, fits) is None
    assert _mem_pattern(path, fits + 1) is False
    off = SessionOptionsConfig(engine="onnxruntime", enable_mem_pattern=False)
    assert off.to_ort().enable_mem_pattern is False
    x = {"x": np.random.default_rng(2).standard_normal((3, width), dtype=np.float32)}
    np.testing.assert_array_equal(EdgeModel(path, engine="onnxruntime", session=off).run(x)[0],
                                  np.maximum(x["x"], 0))


def test_a_shared_cpu_arena_gives_the_same_answers(tmp_path: Path) -> None:
    """After share_cpu_arena (what a tune turns on), onnxruntime sessions draw from the
    process's arena, give the same outputs, and a session that turns its arena off keeps
    that."""
    from edgekit.runtime.engine_ort import share_cpu_arena
    from edgekit.runtime.session import SessionOptionsConfig

    path = _save(_wide_relu_model(64), tmp_path / "m.onnx")
    x = {"x": np.random.default_rng(1).standard_normal((8, 64), dtype=np.float32)}
    before = EdgeModel(path, engine="onnxruntime").run(x)
    assert share_cpu_arena() and share_cpu_arena()  # once per process; again is a no-op
    shared = EdgeModel(path, engine="onnxruntime")
    opts = shared.engine.session.get_session_options()  # type: ignore[attr-defined]
    assert opts.get_session_config_entry("session.use_env_allocators") == "1"
    np.testing.assert_array_equal(shared.run(x)[0], before[0])
    own = EdgeModel(path, engine="onnxruntime",
                    session=SessionOptionsConfig(enable_cpu_mem_arena=False))
    own_opts = own.engine.session.get_session_options()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="does not have configuration"):
        own_opts.get_session_config_entry("session.use_env_allocators")
    np.testing.assert_array_equal(own.run(x)[0], before[0])
