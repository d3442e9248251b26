"""Training recipes from the classic Keras examples: ``image_cnn``, ``tabular_mlp``, ``text_lstm``.

``import edgekit.recipes`` is cheap: recipe modules are imported on first use by
:func:`get_recipe`, and TensorFlow only when a model is built or trained.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekit.errors import InputError
from edgekit.recipes.train import (
    ACTIVATIONS,
    OPTIMIZERS,
    GridResult,
    TrainConfig,
    TrainResult,
    grid_search,
    parse_grid,
    train_recipe,
)

__all__ = [
    "RECIPES",
    "get_recipe",
    "TrainConfig",
    "TrainResult",
    "GridResult",
    "OPTIMIZERS",
    "ACTIVATIONS",
    "grid_search",
    "parse_grid",
    "train_recipe",
]

#: recipe name -> one-line description
RECIPES: dict[str, str] = {
    "image_cnn": "Conv2D/MaxPool convnet for 28x28 grey images (MNIST, Fashion-MNIST)",
    "tabular_mlp": "one-hidden-layer MLP for CSV tables (default: breast cancer)",
    "text_lstm": "Embedding + LSTM text classifier (label/text TSV or CSV)",
}


def get_recipe(name: str) -> ModuleType:
    """The recipe module ``name`` (with ``build_model``, ``load_data``, ``train``, ``RECIPE``)."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}", hint=f"use one of {', '.join(RECIPES)}")
    return importlib.import_module(f"{__name__}.{name}")
