"""Engines are plug-ins: a toy numpy engine, one class and one registration line in this file,
runs in ``EdgeModel``, ``edgekit run``, ``edgekit bench`` and ``edgekit tune --engines`` with no
other edit (everything that lists or validates engines reads the registry)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import cli
from edgekit.errors import InputError
from edgekit.runtime import (
    EdgeModel,
    Engine,
    Placement,
    SessionOptionsConfig,
    engine_names,
    installed_engines,
    register_engine,
    unregister_engine,
)
from edgekit.runtime.specs import InputSpec, type_string

RNG = np.random.default_rng(0)

pytestmark = pytest.mark.file_seconds(10)


class NumpyEngine(Engine):
    """A reference engine: evaluates MatMul / Add / Relu graphs node by node with numpy."""

    name = "numpy"
    aliases = ("np",)
    settings: ClassVar[frozenset[str]] = frozenset()
    _OPS: ClassVar[dict[str, object]] = {
        "MatMul": np.matmul, "Add": np.add, "Relu": lambda x: np.maximum(x, 0)}

    def __init__(self, path: Path, config: SessionOptionsConfig, placement: Placement) -> None:
        super().__init__(path, config, placement)
        model = onnx.load(str(path))
        g = model.graph
        unknown = sorted({n.op_type for n in g.node} - set(self._OPS))
        if unknown:
            raise InputError(f"the numpy engine has no {', '.join(unknown)}")
        self._nodes = [(n.op_type, list(n.input), n.output[0]) for n in g.node]
        self._consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.inputs = tuple(_spec(v) for v in g.input if v.name not in self._consts)
        self.outputs = tuple(_spec(v) for v in g.output)
        self.props = {p.key: p.value for p in model.metadata_props}

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self.closed:
            raise self._closed_error()
        values = {**self._consts, **feeds}
        for op, ins, out in self._nodes:
            values[out] = self._OPS[op](*(values[i] for i in ins))  # type: ignore[operator]
        return [np.asarray(values[s.name]) for s in self.outputs]

    @property
    def providers(self) -> list[str]:
        return ["numpy:CPU"]


def _spec(v: onnx.ValueInfoProto) -> InputSpec:
    t = v.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
    return InputSpec(v.name, type_string(dtype),
                     [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim])


@pytest.fixture
def numpy_engine() -> Iterator[type[Engine]]:
    register_engine(NumpyEngine)  # the one registration line
    yield NumpyEngine
    unregister_engine("numpy")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """y = relu(x @ W + b): a two-node-plus ONNX model (MatMul, Add, Relu), batch dynamic."""
    w = RNG.normal(size=(4, 3)).astype(np.float32)
    b = RNG.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "toy.onnx"
    onnx.save(proto, str(path))
    np.save(tmp_path / "x.npy", RNG.normal(size=(5, 4)).astype(np.float32))
    np.savez(tmp_path / "cal.npz", x=RNG.normal(size=(64, 4)).astype(np.float32))
    return path


def test_registry_lists_and_forgets_the_engine(numpy_engine: type[Engine]) -> None:
    assert "numpy" in engine_names() and "numpy" in installed_engines()
    assert SessionOptionsConfig(engine="NP").engine == "numpy"  # alias, any case
    unregister_engine("numpy")
    assert "numpy" not in engine_names()
    with pytest.raises(InputError, match="unknown engine 'numpy'"):
        SessionOptionsConfig(engine="numpy")
    register_engine(NumpyEngine)


def test_edge_model_runs_on_the_numpy_engine(numpy_engine: type[Engine], model: Path) -> None:
    x = np.load(model.parent / "x.npy")
    with EdgeModel(model, engine="numpy") as m, EdgeModel(model, engine="onnxruntime") as ref:
        assert m.engine_name == "numpy" and m.providers == ["numpy:CPU"]
        (y,) = m.run(x)
        np.testing.assert_allclose(y, ref.run(x)[0], rtol=1e-5, atol=1e-6)
        assert (y >= 0).all() and y.shape == (5, 3)
        with pytest.raises(InputError, match="size 4 on axis 1"):  # EdgeModel's checks apply
            m.run(np.zeros((1, 5), np.float32))


def test_cli_run_with_engine_numpy(numpy_engine: type[Engine], model: Path) -> None:
    x = str(model.parent / "x.npy")
    outs: dict[str, list[list[dict[str, Any]]]] = {}
    for engine in ("numpy", "onnxruntime"):
        res = CliRunner().invoke(cli, ["run", str(model), x, "--engine", engine, "--json"])
        assert res.exit_code == 0, res.output
        report = json.loads(res.stdout)
        assert report["engine"] == engine
        outs[engine] = report["predictions"]  # no metadata: the raw outputs' top 3
    labels = [[p["label"] for p in row] for row in outs["numpy"]]
    assert labels == [[p["label"] for p in row] for row in outs["onnxruntime"]]
    np.testing.assert_allclose([[p["probability"] for p in row] for row in outs["numpy"]],
                               [[p["probability"] for p in row] for row in outs["onnxruntime"]],
                               rtol=1e-5, atol=1e-6)
    res = CliRunner().invoke(cli, ["run", str(model), x, "--engine", "tvm"])
    assert res.exit_code == 2 and "numpy" in res.output  # the choices come from the registry


def test_cli_bench_engine_numpy_and_all(numpy_engine: type[Engine], model: Path,
                                        tmp_path: Path) -> None:
    common = ["--runs", "3", "--warmup", "1", "--threads", "1", "-q"]
    report = tmp_path / "one.json"
    res = CliRunner().invoke(cli, ["bench", str(model), "--engine", "numpy", *common,
                                   "--report", str(report)])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(report.read_text())["models"]
    assert row["kind"] == "numpy" and row["latency"]["1"]["p50_ms"] > 0
    report = tmp_path / "all.json"
    res = CliRunner().invoke(cli, ["bench", str(model), "--engine", "all", *common,
                                   "--report", str(report)])
    assert res.exit_code == 0, res.output
    names = [m["name"] for m in json.loads(report.read_text())["models"]]
    assert names == [f"toy.onnx@{e}" for e in installed_engines()] and "toy.onnx@numpy" in names


@pytest.mark.slow
def test_cli_tune_measures_the_numpy_engine(numpy_engine: type[Engine], model: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    res = CliRunner().invoke(cli, ["tune", str(model), "-o", str(out), "--calibration",
                                   str(model.parent / "cal.npz"), "--engines", "onnxruntime,np",
                                   "--budget", "0.01", "--calibration-samples", "32", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "toy.tune.json").read_text())
    assert report["config"]["engines"] == ["onnxruntime", "numpy"]
    by_name = {c["name"]: c for c in report["candidates"]}
    fp32_np = by_name["fp32@numpy"]
    assert fp32_np["engine"] == "numpy" and fp32_np["accepted"], fp32_np
    assert fp32_np["latency_ratio"] > 0 and fp32_np["agreement"] == 100.0
    assert {c["engine"] for c in report["candidates"]} == {"onnxruntime", "numpy"}
    res = CliRunner().invoke(cli, ["tune", str(model), "-o", str(tmp_path / "o2"),
                                   "--calibration", str(model.parent / "cal.npz"),
                                   "--engines", "onnxruntime,tvm"])
    assert res.exit_code == 2 and "unknown engine 'tvm'" in res.output
