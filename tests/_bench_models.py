"""Small models shared by the bench / compare / check tests (built once per session)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = ["BenchModels", "build_bench_models"]


@dataclass
class BenchModels:
    """A tiny CNN (Keras + ONNX), a much bigger ONNX model and labelled uint8 data."""

    keras: Path
    onnx: Path
    big_onnx: Path
    data: Path
    accuracy: float


def _cnn(filters: int, dense: int) -> keras.Model:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(filters, 3, activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dense, activation="relu")(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out)


def build_bench_models(d: Path) -> BenchModels:
    """Build the models in folder ``d``: the small one is trained a little so accuracy means
    something (the ``bench_models_dir`` fixture of ``conftest.py`` builds them once a session)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgekit.convert import ExportConfig, export_model
    from edgekit.metadata import ModelMetadata, Preprocessing, save_keras_metadata

    rng = np.random.default_rng(0)
    # a learnable toy task: the class is the image row (of 10 bands) that is brightest
    y = rng.integers(0, 10, 600)
    x = (rng.random((600, 28, 28, 1)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c + 4 : 2 * c + 7] += 150
    np.savez(d / "data.npz", x=x[:300], y=y[:300])
    small = _cnn(4, 16)
    small.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    small.fit(x[300:].astype(np.float32) / 255.0, y[300:], epochs=8, verbose=0)
    keras_path = d / "small.keras"
    small.save(keras_path)
    pre = Preprocessing(kind="image", scale=1 / 255.0, raw_dtype="uint8")
    meta = ModelMetadata(preprocessing=pre)
    save_keras_metadata(keras_path, meta)
    onnx_path = export_model(keras_path, d, ExportConfig()).onnx_path
    big = _cnn(64, 512)
    big_path = d / "big.keras"
    big.save(big_path)
    big_onnx = export_model(big_path, d, ExportConfig()).onnx_path
    probs = small.predict(x[:300].astype(np.float32) / 255.0, verbose=0)
    acc = 100.0 * float(np.mean(probs.argmax(1) == y[:300]))
    return BenchModels(keras_path, Path(onnx_path), Path(big_onnx), d / "data.npz", acc)
