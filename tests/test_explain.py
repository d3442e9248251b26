"""``edgekit quantize --explain``: per-node int8 vs fp32 evidence ranks a deliberately damaged
node first, shows what the gate kept in float, and says which modes it supports."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sympy")

from edgekit.cli.quantize_options import config_from_options  # noqa: E402
from edgekit.errors import InputError  # noqa: E402
from edgekit.quantize import (  # noqa: E402
    GateConfig,
    QuantizationConfig,
    QuantMode,
    SpeedCheckConfig,
    quantize_model,
)
from edgekit.quantize.explain import explain_lines, explain_samples  # noqa: E402

pytestmark = pytest.mark.file_seconds(5)


def _mlp(weights: list[np.ndarray], path: Path) -> Path:
    """x -> (MatMul -> Relu) * n -> MatMul -> Softmax, nodes named dense1.., relu1.."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, cur = [], [], "x"
    for i, w in enumerate(weights, 1):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"h{i}"], name=f"dense{i}"))
        cur = f"h{i}"
        if i < len(weights):
            nodes.append(helper.make_node("Relu", [cur], [f"a{i}"], name=f"relu{i}"))
            cur = f"a{i}"
    nodes.append(helper.make_node("Softmax", [cur], ["probs"], name="softmax"))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                     ["N", weights[0].shape[0]])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT,
                                       ["N", weights[-1].shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three Dense layers; the second is damaged for int8 without changing fp32: hidden unit 0
    of the first layer is always 0 (its weights are 0), so the second layer's weights from it
    can be 1000 (the others are ~0.3): with one scale per tensor every other weight of dense2
    rounds to 0. Labels are the fp32 predictions."""
    d = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    w1[:, 0] = 0
    w2 = rng.normal(0, 0.3, (32, 32)).astype(np.float32)
    w2[0] = 1000
    w3 = rng.normal(0, 0.3, (32, 10)).astype(np.float32)
    path = _mlp([w1, w2, w3], d / "damaged.onnx")
    np.savez(d / "calib.npz", x=rng.random((200, 16)).astype(np.float32))
    x = rng.random((300, 16)).astype(np.float32)
    y = ort.InferenceSession(str(path)).run(None, {"x": x})[0].argmax(1)
    np.savez(d / "eval.npz", x=x, y=y)
    return {"onnx": path, "calib": d / "calib.npz", "eval": d / "eval.npz"}


def _quantize(damaged: dict[str, Path], out: Path, *extra: str) -> tuple[str, dict]:
    r = CliRunner().invoke(cli, ["quantize", str(damaged["onnx"]), "-o", str(out),
                                 "--calibration", str(damaged["calib"]), *extra])
    assert r.exit_code == 0, r.output
    return r.output, json.loads((out / "damaged.report.json").read_text())["variants"]["int8"]


def test_explain_ranks_the_damaged_node_first(damaged: dict[str, Path], tmp_path: Path) -> None:
    output, v = _quantize(damaged, tmp_path, "--quantize", "int8", "--per-tensor", "--explain")
    ex = v["explain"]
    assert isinstance(ex, list) and len(ex) >= 3
    assert set(ex[0]) == {"node", "op_type", "tensor", "region", "region_ops", "sqnr_db",
                          "loss_db", "kept_in_float", "gate"}
    worst = ex[0]
    assert "dense2" in worst["region"] and "dense1" not in worst["region"]
    assert worst["loss_db"] > ex[1]["loss_db"] + 10  # by far the worst
    assert worst["sqnr_db"] < 5 and not worst["kept_in_float"] and worst["gate"] is None
    assert [e["loss_db"] for e in ex] == sorted((e["loss_db"] for e in ex), reverse=True)
    # dense3 inherits dense2's error but loses little itself
    d3 = next(e for e in ex if e["node"] == "dense3")
    assert d3["sqnr_db"] < 5 and d3["loss_db"] < 5
    lines = output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("explain: int8 vs fp32"))
    assert lines[head + 1].split()[:4] == ["node", "ops", "SQNR", "dB"]
    assert lines[head + 2].split()[:3] == ["dense2", "(+1)", "MatMul+Relu"]
    assert worst["region"] == ["relu2", "dense2"] and worst["region_ops"] == ["Relu", "MatMul"]
    assert any("explain: SQNR of int8 vs fp32 activations on 64 samples" in n
               for n in v["notes"])


def test_explain_shows_what_the_gate_kept(damaged: dict[str, Path], tmp_path: Path) -> None:
    output, v = _quantize(damaged, tmp_path, "--quantize", "int8", "--per-tensor", "--explain",
                          "--eval-data", str(damaged["eval"]), "--max-accuracy-drop", "1")
    worst = v["explain"][0]
    assert "dense2" in worst["region"] and worst["kept_in_float"]
    assert "dense2" in v["gate"]["kept_in_float"]
    step = worst["gate"]
    assert step["step"] == 1 and step["accuracy_gain_pt"] > 10  # keeping it float saved it
    assert step["accuracy_after"] == pytest.approx(step["accuracy_before"]
                                                   + step["accuracy_gain_pt"], abs=1e-3)
    x = next(e for e in v["explain"] if e["tensor"] == "x")
    assert x["node"] is None and not x["kept_in_float"]  # the graph input stays int8
    assert "step 1: +" in output and "held-out samples" in " ".join(v["notes"])


def test_explain_needs_static_int8(damaged: dict[str, Path], tmp_path: Path) -> None:
    for mode in ("dynamic", "fp16"):
        r = CliRunner().invoke(cli, ["quantize", str(damaged["onnx"]), "-o", str(tmp_path),
                                     "--quantize", mode, "--explain"])
        assert r.exit_code == InputError.exit_code, r.output
        assert "--explain needs static int8 (QDQ)" in r.output
    assert not list(tmp_path.iterdir())
    with pytest.raises(click.UsageError, match="--explain need --quantize"):
        config_from_options(None, None, None, None, None, None, "onnx", explain=True)
    # auto choosing dynamic (a Dense-only model with enough weights) notes it instead
    rng = np.random.default_rng(0)
    big = _mlp([rng.normal(0, 0.1, (256, 256)).astype(np.float32),
                rng.normal(0, 0.1, (256, 10)).astype(np.float32)], tmp_path / "big.onnx")
    cfg = QuantizationConfig(mode=QuantMode.AUTO, gate=GateConfig(explain=True),
                             speed=SpeedCheckConfig(enabled=False))  # not timing-dependent
    res = quantize_model(big, tmp_path, config=cfg)
    assert res.mode == "dynamic" and res.explain is None
    assert any(n.startswith("explain: no per-node report for dynamic") for n in res.notes)


def test_explain_table_shows_the_top_ten() -> None:
    entries = [{"node": f"n{i}", "op_type": "Conv", "tensor": f"t{i}", "region": [f"n{i}"],
                "region_ops": ["Conv"], "sqnr_db": 30.0 - i, "loss_db": 15.0 - i,
                "kept_in_float": i == 0,
                "gate": {"step": 1, "accuracy_gain_pt": 2.5} if i == 0 else None}
               for i in range(15)]
    lines = explain_lines(entries)
    assert len(lines) == 12 and "top 10 of 15" in lines[0]
    assert lines[2].split() == ["n0", "Conv", "30.0", "15.0", "yes", "step", "1:", "+2.50", "pt"]
    assert explain_lines([]) == ["explain: no quantized activation was measured"]
    long = {**entries[1], "region": ["b/" * 40 + "relu", "a/" * 40 + "conv"]}
    cell = explain_lines([long])[2].split()[0]
    assert cell.startswith("...") and cell.endswith("a/conv") and len(cell) == 56


def test_explain_samples_shrink_with_activation_memory() -> None:
    assert explain_samples(4096) == 64  # a small model: the default
    assert explain_samples(30 << 20) == 11  # 30 MiB a sample: within 1 GiB, x3
    assert explain_samples(1 << 30) == 4  # never fewer than 4
