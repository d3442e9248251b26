"""Coverage suite (issue #12): one model of each common Keras family exports from the CLI.

Each model is built at a small input size, saved as ``.keras`` and exported with
``edgekit export`` in a separate process (``_coverage_worker.py``: the light models share
two processes, the keras.applications networks two others, balanced by conversion cost, so
TensorFlow starts four times, not twelve); two processes run at a time (tf2onnx converts in
single-threaded Python). Every export must validate within 1e-4, and
an independent onnxruntime run (batch 1 and 3, fresh inputs) must match Keras too. The
keras.applications networks are ``slow`` (``-m "not slow"`` skips them); CI runs them all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("keras")
pytest.importorskip("tf2onnx")

from _coverage_models import ZOO  # noqa: E402

pytestmark = [pytest.mark.file_seconds(185), pytest.mark.slow]

WORKER = Path(__file__).resolve().parent / "_coverage_worker.py"
# two groups of about equal build + export time (measured: NASNetMobile ~18%, VGG16 ~3%)
HEAVY_GROUPS = [["nasnet_mobile", "convnext_tiny", "efficientnet_b0", "resnet50", "vgg16"],
                ["densenet121", "efficientnet_v2_b0", "xception", "inception_v3",
                 "resnet50_v2"]]
HEAVY = [name for group in HEAVY_GROUPS for name in group]
LIGHT = [z.name for z in ZOO if z.name not in HEAVY]
ATOL = 1e-4


def _export_all(groups: list[list[str]], outdir: Path) -> dict[str, dict[str, Any]]:
    """Run one worker process per group of names, two at a time; records by name."""

    def one(names: list[str]) -> list[dict[str, Any]]:
        for name in names:
            (outdir / name).mkdir()
        proc = subprocess.run([sys.executable, str(WORKER), str(outdir), *names],
                              capture_output=True, text=True, timeout=1500)
        records = []
        for name in names:
            result = outdir / name / f"{name}.json"
            records.append(dict(json.loads(result.read_text())) if result.exists() else
                           {"name": name, "exit_code": None, "output": proc.stderr[-3000:]})
        return records

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {r["name"]: r for rs in pool.map(one, groups) for r in rs}


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return _export_all([LIGHT[0::2], LIGHT[1::2]], tmp_path_factory.mktemp("coverage_light"))


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return _export_all(HEAVY_GROUPS, tmp_path_factory.mktemp("coverage_heavy"))


def _check(record: dict[str, Any]) -> None:
    assert record["exit_code"] == 0, record["output"]
    assert "Traceback" not in record["output"]
    validation = record["report"]["validation"]
    assert validation["max_abs_error"] <= ATOL
    assert validation["n_samples"] == 8
    check = record["check"]
    signature = [i["name"] for i in record["report"]["inputs"]]
    assert check["onnx_inputs"] == signature  # no stray inputs (captured state)
    assert check["finite"] and check["max_abs_error"] <= ATOL
    ops = record["report"]["graph"]["op_histogram"]
    assert not {"Erfc", "StatefulPartitionedCall", "PartitionedCall"} & set(ops)


@pytest.mark.parametrize("name", LIGHT)
def test_light_family_exports(light: dict[str, dict[str, Any]], name: str) -> None:
    _check(light[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
def test_application_family_exports(heavy: dict[str, dict[str, Any]], name: str) -> None:
    _check(heavy[name])


def test_zoo_lists_every_family_of_the_issue() -> None:
    families = {z.family for z in ZOO}
    for needed in ("MobileNet", "MobileNetV2", "MobileNetV3Small", "EfficientNetB0",
                   "EfficientNetV2B0", "ResNet50", "ResNet50V2", "DenseNet121", "NASNetMobile",
                   "Xception", "InceptionV3", "ConvNeXtTiny", "VGG16", "Transformer encoder",
                   "LSTM", "GRU", "Bidirectional LSTM", "stacked LSTM/GRU", "Conv1D text",
                   "TimeDistributed(GRU)", "Resizing/Rescaling/Normalization", "multi-input",
                   "multi-output", "registered custom layer"):
        assert needed in families
    assert sorted(HEAVY + LIGHT) == sorted(z.name for z in ZOO)


def test_preprocessing_model_validates_on_pixels(light: dict[str, dict[str, Any]]) -> None:
    """The Rescaling(1/255) model's synthetic inputs are pixels, so its outputs vary."""
    sat = light["preprocessing"]["report"]["validation"]["saturation"]
    only = next(iter(sat.values()))
    assert only["constant_share"] == 0.0


def test_conv1d_text_got_a_length_keras_accepts(light: dict[str, dict[str, Any]]) -> None:
    inputs = light["conv1d_text"]["report"]["inputs"]
    assert inputs[0]["shape"] == [None, None]  # the ONNX model keeps the dynamic length
