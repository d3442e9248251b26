"""Example regression tests for your own model, with edgekit's pytest plugin.

The plugin is active as soon as edgekit is installed (``pytest11`` entry point). Copy this file
into your project's tests, point it at your model and data, and run ``pytest``:

    pytest examples/test_model_regression.py --edge-model out/fashion_cnn.onnx

What it guards:
- accuracy on labelled data (a floor, or a drop limit against a recorded baseline);
- latency as a *ratio* against a reference timed in the same process, interleaved (here the
  fp32 model guards its int8 variant), so the test does not flap on a busy CI runner.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.check.pytest_plugin import assert_accuracy, assert_latency_ratio

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "calibration_data" / "fashion_mnist.npz"  # uint8 images x + labels y
OUT = ROOT / "out"  # edgekit export models/fashion_cnn.keras -o out --quantize int8 ...
FP32 = OUT / "fashion_cnn.onnx"
INT8 = OUT / "fashion_cnn.int8.onnx"

needs_models = pytest.mark.skipif(not (FP32.exists() and EVAL.exists()),
                                  reason="export models/fashion_cnn.keras to out/ first")


@needs_models
@pytest.mark.edge_model(str(FP32), threads=1)
def test_fp32_accuracy_floor(edge_model) -> None:
    # predict() applies the preprocessing stored in the model (uint8 -> [0, 1])
    assert_accuracy(edge_model, EVAL, min_accuracy=85.0)


@needs_models
def test_int8_close_to_fp32(edge_model_factory) -> None:
    if not INT8.exists():
        pytest.skip("no int8 variant: export with --quantize int8")
    fp32_acc = assert_accuracy(edge_model_factory(FP32), EVAL, min_accuracy=0.0)
    assert_accuracy(edge_model_factory(INT8), EVAL, baseline=fp32_acc, max_drop=1.0)


@needs_models
def test_int8_not_slower_than_fp32(edge_model_factory) -> None:
    if not INT8.exists():
        pytest.skip("no int8 variant: export with --quantize int8")
    # int8 must not take more than 1.2x the fp32 time, measured interleaved at batch 1
    assert_latency_ratio(edge_model_factory(INT8, threads=1), edge_model_factory(FP32, threads=1),
                         max_ratio=1.2)


def test_any_model_from_the_command_line(edge_model) -> None:
    # `pytest --edge-model path/to/model.onnx` (or the ini option `edge_model`); skipped if unset
    import numpy as np

    x = {s.name: np.zeros([d or 1 for d in s.shape], s.dtype or "float32")
         for s in edge_model.inputs}
    outputs = edge_model.run(x)
    assert all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f")
