"""Models for the serve / package tests: the shipped Keras models exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_CACHE: dict[str, Path] = {}

__all__ = ["shipped_onnx", "shipped_cnn", "shipped_mlp"]


def shipped_onnx(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/<name>.keras`` exported with edgekit (TensorFlow, ~10 s), once per session."""
    if name not in _CACHE:
        from edgekit.convert import ExportConfig, export_model

        out = tmp_path_factory.mktemp(f"shipped_{name}")
        result = export_model(ROOT / "models" / f"{name}.keras", out, ExportConfig())
        _CACHE[name] = Path(result.onnx_path)
    return _CACHE[name]


@pytest.fixture(scope="session")
def shipped_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped Fashion-MNIST CNN as ONNX ([N, 28, 28, 1] float32 -> 10 classes)."""
    return shipped_onnx("fashion_cnn", tmp_path_factory)


@pytest.fixture(scope="session")
def shipped_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped breast-cancer MLP as ONNX ([N, 30] float32, standardised in the metadata)."""
    return shipped_onnx("breast_cancer_mlp", tmp_path_factory)
