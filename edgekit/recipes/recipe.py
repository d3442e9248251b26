"""What a recipe is: the :class:`Recipe` base class, the :class:`Fitted` preprocessing it
learns, and the lazy Keras import the recipes share."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edgekit.errors import require
from edgekit.inputs.datasets import DataSplit
from edgekit.metadata import Preprocessing
from edgekit.recipes.config import TrainConfig

if TYPE_CHECKING:
    import keras

__all__ = ["Fitted", "Recipe", "require_keras"]


@dataclass
class Fitted:
    """Preprocessing learned on a training split: metadata + the function applying it."""

    preprocessing: Preprocessing
    transform: Callable[[np.ndarray], np.ndarray]
    tokenizer: dict[str, object] | None = None


class Recipe:
    """Base class of a training recipe; subclasses fill in data, preprocessing and model."""

    name: str = ""
    defaults: ClassVar[Mapping[str, object]] = {}

    def load_split(
        self, path: str | os.PathLike[str] | None, config: TrainConfig, **options: object
    ) -> DataSplit:
        """Raw train/test data (recipes without a test set hold out ``config.test_split``)."""
        raise NotImplementedError

    def fit_preprocessing(self, x_train: np.ndarray, config: TrainConfig) -> Fitted:
        """Learn preprocessing on the training split only."""
        raise NotImplementedError

    def build_model(
        self, config: TrainConfig, input_shape: Sequence[int], n_classes: int
    ) -> keras.Model:
        """An uncompiled Keras model."""
        raise NotImplementedError

    def loss(self, n_classes: int) -> str:
        """Loss matching :meth:`output_units`."""
        return "sparse_categorical_crossentropy"


def require_keras() -> ModuleType:
    """The ``keras`` module (lazy, with a clear error when TensorFlow is missing)."""
    keras_module: ModuleType = require("keras", "export", "tensorflow-cpu")
    return keras_module
