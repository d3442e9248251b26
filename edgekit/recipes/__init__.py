"""Training recipes from the classic Keras examples: ``image_cnn``, ``tabular_mlp``, ``text_lstm``.

``import edgekit.recipes`` is cheap: recipe modules are imported on first use by
:func:`get_recipe`, and TensorFlow only when a model is built or trained.
"""

from __future__ import annotations

from edgekit.recipes.config import (
    ACTIVATIONS,
    OPTIMIZERS,
    GridResult,
    TrainConfig,
    TrainResult,
)
from edgekit.recipes.grid import grid_search, parse_grid
from edgekit.recipes.registry import RECIPES, get_recipe
from edgekit.recipes.train import train_recipe

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
