"""Models for the serve / package tests: the shipped Keras models exported once per session
(the ``shipped_cnn`` / ``shipped_mlp`` fixtures of ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_CACHE: dict[str, Path] = {}

__all__ = ["shipped_onnx"]


def shipped_onnx(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/<name>.keras`` exported with edgekit (TensorFlow, ~10 s), once per session."""
    if name not in _CACHE:
        from edgekit.convert import ExportConfig, export_model

        out = tmp_path_factory.mktemp(f"shipped_{name}")
        result = export_model(ROOT / "models" / f"{name}.keras", out, ExportConfig())
        _CACHE[name] = Path(result.onnx_path)
    return _CACHE[name]

