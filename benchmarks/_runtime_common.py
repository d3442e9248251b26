"""Shared by the runtime benchmarks: which model to measure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KERAS = ROOT / "models" / "fashion_cnn.keras"


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """``--model`` and ``--keras``, resolved by :func:`model_path`."""
    ap.add_argument("--model", help=".onnx/.ort model (default: export --keras to a temp dir)")
    ap.add_argument("--keras", default=str(DEFAULT_KERAS), help="Keras model to export")


def model_path(model: str | None, keras: str | Path, tmp: Path) -> Path:
    """``model`` when given, else ``keras`` exported to ONNX in ``tmp`` with edgekit.convert."""
    if model:
        return Path(model)
    keras = Path(keras)
    if not keras.exists():
        sys.exit(f"error: {keras} not found; pass --model MODEL.onnx")
    from edgekit.convert import ExportConfig, export_model

    print(f"exporting {keras} to {tmp} ...", file=sys.stderr)
    return Path(export_model(keras, tmp, ExportConfig()).onnx_path)
