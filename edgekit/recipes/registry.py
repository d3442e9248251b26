"""The recipe registry: names, descriptions and :func:`get_recipe`.

Recipe modules are imported on first use, so reading the registry imports no TensorFlow.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekit.errors import InputError

__all__ = ["RECIPES", "get_recipe"]

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
    return importlib.import_module(f"edgekit.recipes.{name}")
