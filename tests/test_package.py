"""edgekit package: a Triton model repository checked with Triton's own model-config protobuf
(shipped in tritonclient) and a KServe InferenceService manifest."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tritonclient
import yaml
from _runtime_models import FASHION_LABELS, make_image_model, make_text_model, make_two_input_model
from click.testing import CliRunner
from google.protobuf import text_format
from onnx import TensorProto, helper

from edgekit.cli.main import cli
from edgekit.errors import InputError, OutputExistsError
from edgekit.runtime.model import EdgeModel
from edgekit.serve.package import PackageConfig, package_triton

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


def _triton_model_config() -> Any:
    """tritonclient's ``grpc/model_config_pb2`` alone: importing it through the
    ``tritonclient.grpc`` package also registers Triton's gRPC service protos, whose
    ``inference.*`` names clash with kserve's in protobuf's default pool, and pytest imports
    kserve in the same process (tests/test_serve_kserve.py)."""
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mc = _triton_model_config()

_NP_TO_TRITON = {
    np.dtype("float32"): mc.TYPE_FP32,
    np.dtype("int32"): mc.TYPE_INT32,
    np.dtype("int64"): mc.TYPE_INT64,
    np.dtype("uint8"): mc.TYPE_UINT8,
}


def _parse(path: Path) -> ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _check_tensors(cfg: ModelConfig, model: EdgeModel) -> None:
    """Names, dtypes and dims (batch axis dropped when max_batch_size > 0) match the model."""
    for got, specs in ((cfg.input, model.inputs), (cfg.output, model.outputs)):
        assert [t.name for t in got] == [s.name for s in specs]
        for t, s in zip(got, specs, strict=True):
            assert t.data_type == _NP_TO_TRITON[s.dtype]
            shape = [-1 if d is None else d for d in s.shape]
            assert list(t.dims) == (shape[1:] if cfg.max_batch_size else shape)


def test_package_shipped_cnn_for_triton_and_kserve(shipped_cnn: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    res = package_triton(shipped_cnn, repo, PackageConfig(max_batch=64, max_delay_us=500))
    model = EdgeModel(shipped_cnn)
    cfg = _parse(repo / "fashion_cnn" / "config.pbtxt")
    assert cfg.name == "fashion_cnn" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 64 == res.max_batch_size
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert cfg.instance_group[0].count == 1
    _check_tensors(cfg, model)
    assert list(cfg.input[0].dims) == [28, 28, 1] and list(cfg.output[0].dims) == [10]
    assert cfg.output[0].label_filename == "labels.txt"
    labels = (repo / "fashion_cnn" / "labels.txt").read_text().splitlines()
    assert labels == model.labels and len(labels) == 10
    assert (repo / "fashion_cnn" / "1" / "model.onnx").read_bytes() == shipped_cnn.read_bytes()
    manifest = yaml.safe_load((repo / "fashion_cnn.kserve.yaml").read_text())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"] == "fashion-cnn"
    m = manifest["spec"]["predictor"]["model"]
    assert m["protocolVersion"] == "v2" and m["runtime"] == "kserve-tritonserver"
    assert m["modelFormat"]["name"] == "triton" and m["storageUri"].startswith("pvc://")
    assert any("placeholder" in n for n in res.notes)
    assert not list(repo.glob(".edgekit-tmp-*"))


def test_existing_outputs_need_force(tmp_path: Path) -> None:
    path = make_image_model(tmp_path / "image.onnx")
    repo = tmp_path / "repo"
    package_triton(path, repo)
    (repo / "image" / "stale.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--force"):
        package_triton(path, repo, PackageConfig(max_batch=8))
    assert _parse(repo / "image" / "config.pbtxt").max_batch_size == 32  # untouched
    res = package_triton(path, repo, PackageConfig(max_batch=8, storage_uri="s3://b/m"), force=True)
    assert _parse(res.config).max_batch_size == 8
    assert not (repo / "image" / "stale.txt").exists()
    assert yaml.safe_load(res.manifest.read_text())["spec"]["predictor"]["model"]["storageUri"] == (
        "s3://b/m"
    )
    assert not res.notes


def test_multi_input_integer_and_fixed_batch_models(tmp_path: Path) -> None:
    two = make_two_input_model(tmp_path / "two.onnx")
    text = make_text_model(tmp_path / "text.onnx")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )  # fmt: skip
    fixed = tmp_path / "fixed.onnx"
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fixed))
    repo = tmp_path / "repo"
    for path in (two, text, fixed):
        res = package_triton(path, repo, PackageConfig(gpu=True, instances=2))
        cfg = _parse(res.config)
        _check_tensors(cfg, EdgeModel(path))
        assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert cfg.instance_group[0].count == 2
        assert "nvidia.com/gpu" in res.manifest.read_text()
    assert _parse(repo / "fixed" / "config.pbtxt").max_batch_size == 0
    assert not _parse(repo / "fixed" / "config.pbtxt").HasField("dynamic_batching")
    assert any("no dynamic batch axis" in n for n in res.notes)
    assert _parse(repo / "text" / "config.pbtxt").input[0].data_type == mc.TYPE_INT32
    assert (repo / "text" / "labels.txt").read_text() == "ham\nspam\n"


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    path = make_image_model(tmp_path / "image.onnx")
    ort = tmp_path / "image.ort"
    ort.write_bytes(b"x")
    with pytest.raises(InputError, match="not an .onnx file"):
        package_triton(ort, tmp_path / "repo")
    with pytest.raises(InputError, match="does not exist"):
        package_triton(tmp_path / "missing.onnx", tmp_path / "repo")
    with pytest.raises(InputError, match="model name"):
        PackageConfig(name="a/b")
    with pytest.raises(InputError, match="instances"):
        PackageConfig(instances=0)
    assert not (tmp_path / "repo").exists()
    assert package_triton(path, tmp_path / "repo", PackageConfig(name="fashion.v2")).name == (
        "fashion.v2"
    )


def test_package_cli(tmp_path: Path) -> None:
    path = make_image_model(tmp_path / "image.onnx")
    repo = tmp_path / "repo"
    args = ["package", str(path), "--triton", str(repo), "--name", "fashion", "--max-batch", "16"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "Triton model 'fashion'" in r.output and "fashion.kserve.yaml" in r.output
    cfg = _parse(repo / "fashion" / "config.pbtxt")
    assert cfg.max_batch_size == 16 and cfg.output[0].label_filename == "labels.txt"
    assert (repo / "fashion" / "labels.txt").read_text().splitlines() == FASHION_LABELS
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "error:" in r.output and "hint:" in r.output
    r = CliRunner().invoke(cli, [*args, "--force", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["max_batch_size"] == 16
