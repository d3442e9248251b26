"""``image_cnn``: the Keras MNIST convnet, for 28x28 grey images (MNIST, Fashion-MNIST).

Conv2D(32, 3x3, act) - MaxPool(2) - Conv2D(64, 3x3, act) - MaxPool(2) - Flatten -
Dense(classes, softmax) on NHWC float inputs scaled to [0, 1] (``x / 255``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgekit.inputs.datasets import DataSplit, load_image_data
from edgekit.metadata import Preprocessing
from edgekit.recipes.config import TrainConfig, TrainResult
from edgekit.recipes.loop import run_training
from edgekit.recipes.recipe import Fitted, Recipe, require_keras

if TYPE_CHECKING:
    import keras

__all__ = ["RECIPE", "ImageCNN", "build_model", "load_data", "train"]


class ImageCNN(Recipe):
    """Small convnet for grey images; defaults: 10 epochs, batch 64, relu."""

    name = "image_cnn"
    defaults = {"epochs": 10, "batch_size": 64, "activation": "relu"}

    def load_split(
        self, path: str | os.PathLike[str] | None, config: TrainConfig, **options: object
    ) -> DataSplit:
        labels = options.get("labels")
        return load_image_data(path, labels=labels if isinstance(labels, list) else None)

    def fit_preprocessing(self, x_train: np.ndarray, config: TrainConfig) -> Fitted:
        h, w = int(x_train.shape[1]), int(x_train.shape[2])
        pre = Preprocessing(
            kind="image",
            scale=1 / 255,
            layout="NHWC",
            image_size=[h, w],
            color="grayscale",
            raw_dtype="uint8",
        )
        return Fitted(pre, pre.apply)

    def build_model(
        self, config: TrainConfig, input_shape: Sequence[int], n_classes: int
    ) -> keras.Model:
        keras = require_keras()
        L = keras.layers
        act = config.activation or "relu"
        return keras.Sequential(
            [
                keras.Input(tuple(input_shape), name="image"),
                L.Conv2D(32, (3, 3), activation=act),
                L.MaxPooling2D((2, 2)),
                L.Conv2D(64, (3, 3), activation=act),
                L.MaxPooling2D((2, 2)),
                L.Flatten(),
                L.Dense(n_classes, activation="softmax"),
            ],
            name="image_cnn",
        )


RECIPE = ImageCNN()


def build_model(
    config: TrainConfig | None = None, input_shape: Sequence[int] = (28, 28, 1), n_classes: int = 10
) -> keras.Model:
    """The uncompiled convnet (default input 28x28x1, 10 classes)."""
    return RECIPE.build_model(
        (config or TrainConfig()).resolved(RECIPE.defaults), input_shape, n_classes
    )


def load_data(
    path: str | os.PathLike[str] | None = None,
    labels: list[str] | None = None,
) -> DataSplit:
    """Raw uint8 images ``(N, 28, 28, 1)`` + labels; default: download Fashion-MNIST."""
    return RECIPE.load_split(path, TrainConfig(), labels=labels)


def train(
    config: TrainConfig | None = None,
    data: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    **options: object,
) -> TrainResult:
    """Train on ``data`` (see :func:`load_data`) and save to ``output`` when given."""
    return run_training(RECIPE, config, data_path=data, output=output, force=force,
                        options=options)
