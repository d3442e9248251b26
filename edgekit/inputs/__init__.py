"""The one input pipeline: tensor specs, reading (files, data folders, images), preparation,
datasets, synthetic data."""

from __future__ import annotations

from edgekit.inputs.data import Dataset, TensorSpecInfo, load_dataset, read_inputs
from edgekit.inputs.images import load_image
from edgekit.inputs.prepare import load_model_data, onnx_input_specs, prepare_dataset, read_data
from edgekit.inputs.synthetic import synthetic_feeds

__all__ = [
    "load_model_data",
    "read_data",
    "prepare_dataset",
    "Dataset",
    "TensorSpecInfo",
    "read_inputs",
    "load_dataset",
    "load_image",
    "onnx_input_specs",
    "synthetic_feeds",
]
