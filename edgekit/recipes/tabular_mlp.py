"""``tabular_mlp``: Dense(hidden, act) - Dense(1, sigmoid) for binary tables (softmax for more).

Features are standardised with the mean/std of the training split; that standardisation is
stored as the model's preprocessing (``Preprocessing(kind="tabular", mean=..., std=...)``),
so the model itself takes standardised float32 features.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import InputError
from edgekit.inputs.datasets import DataSplit, holdout_split, load_breast_cancer, load_csv
from edgekit.metadata import Preprocessing
from edgekit.recipes.config import TrainConfig, TrainResult
from edgekit.recipes.loop import run_training
from edgekit.recipes.recipe import Fitted, Recipe, require_keras

if TYPE_CHECKING:
    import keras

__all__ = ["RECIPE", "TabularMLP", "build_model", "load_data", "train"]


class TabularMLP(Recipe):
    """One-hidden-layer MLP; defaults: 60 epochs, batch 32, relu, 32 hidden units."""

    name = "tabular_mlp"
    defaults = {"epochs": 60, "batch_size": 32, "activation": "relu"}

    def load_split(
        self, path: str | os.PathLike[str] | None, config: TrainConfig, **options: object
    ) -> DataSplit:
        label = options.get("label")
        label = label if isinstance(label, str) else None
        if path is None:
            d = load_breast_cancer()
        elif not label:
            raise InputError("a CSV needs --label COLUMN (the class column)")
        else:
            d = load_csv(path, label)
        return holdout_split(d.x, d.y, d.labels, config.test_split, config.seed, d.source)

    def fit_preprocessing(self, x_train: np.ndarray, config: TrainConfig) -> Fitted:
        x = np.asarray(x_train, dtype=np.float64)
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        pre = Preprocessing(
            kind="tabular",
            mean=[float(v) for v in mean],
            std=[float(v) for v in std],
        )  # no raw_dtype: the runtime then standardises float inputs too
        return Fitted(pre, pre.apply)

    def build_model(
        self, config: TrainConfig, input_shape: Sequence[int], n_classes: int
    ) -> keras.Model:
        keras = require_keras()
        L = keras.layers
        binary = n_classes == 2
        return keras.Sequential(
            [
                keras.Input(tuple(input_shape), name="features"),
                L.Dense(config.hidden, activation=config.activation or "relu"),
                L.Dense(1 if binary else n_classes, activation="sigmoid" if binary else "softmax"),
            ],
            name="tabular_mlp",
        )

    def loss(self, n_classes: int) -> str:
        return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


RECIPE = TabularMLP()


def build_model(
    config: TrainConfig | None = None, input_shape: Sequence[int] = (30,), n_classes: int = 2
) -> keras.Model:
    """The uncompiled MLP (default 30 features, 2 classes -> one sigmoid output)."""
    return RECIPE.build_model(
        (config or TrainConfig()).resolved(RECIPE.defaults), input_shape, n_classes
    )


def load_data(
    path: str | os.PathLike[str] | None = None,
    label: str | None = None,
    test_split: float = 0.2,
    seed: int = 0,
) -> DataSplit:
    """Raw features split 80/20 (default); default data: scikit-learn's breast cancer."""
    return RECIPE.load_split(path, TrainConfig(test_split=test_split, seed=seed), label=label)


def train(
    config: TrainConfig | None = None,
    data: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    label: str | None = None,
) -> TrainResult:
    """Train on a CSV (``label`` = class column) or breast cancer; save to ``output``."""
    return run_training(RECIPE, config, data_path=data, output=output, force=force,
                        options={"label": label})
