"""The one input pipeline: tensor specs, datasets, text, synthetic data."""

from __future__ import annotations

from edgekit.inputs.data import (
    Dataset,
    TensorSpecInfo,
    batches,
    check_finite,
    format_shape,
    load_dataset,
    run_in_batches,
)
from edgekit.inputs.datasets import (
    BREAST_CANCER_LABELS,
    DATA_HINT_IMAGES,
    FASHION_MNIST_LABELS,
    MNIST_LABELS,
    DataSplit,
    ImageData,
    TabularData,
    TextData,
    load_breast_cancer,
    load_csv,
    load_image_data,
    load_text_table,
    read_idx,
)
from edgekit.inputs.synthetic import (
    CANDIDATE_LENGTHS,
    InputRange,
    draw_inputs,
    keras_input_ranges,
    probe_length,
    smooth_images,
)

__all__ = [
    "TensorSpecInfo",
    "Dataset",
    "load_dataset",
    "check_finite",
    "batches",
    "run_in_batches",
    "format_shape",
    "FASHION_MNIST_LABELS",
    "MNIST_LABELS",
    "BREAST_CANCER_LABELS",
    "DATA_HINT_IMAGES",
    "DataSplit",
    "ImageData",
    "TabularData",
    "TextData",
    "read_idx",
    "load_image_data",
    "load_csv",
    "load_breast_cancer",
    "load_text_table",
    "InputRange",
    "CANDIDATE_LENGTHS",
    "keras_input_ranges",
    "draw_inputs",
    "probe_length",
    "smooth_images",
]
