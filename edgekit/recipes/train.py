"""What ``edgekit train`` does: train a recipe by name, or grid-search it, and save the model.

The steps live in :mod:`edgekit.recipes.loop` (one training run), :mod:`edgekit.recipes.grid`
(the grid search) and :mod:`edgekit.recipes.evaluate` (accuracy and the saved model).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgekit.errors import InputError, OutputExistsError
from edgekit.progress import FractionFn, StatusFn
from edgekit.recipes.config import GridResult, ParamValue, TrainConfig, TrainResult
from edgekit.recipes.grid import default_grid_json, grid_search, parse_grid
from edgekit.recipes.loop import run_training
from edgekit.recipes.recipe import Recipe
from edgekit.recipes.registry import get_recipe

__all__ = ["train_recipe"]


def train_recipe(
    name: str,
    config: TrainConfig | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    label: str | None = None,
    grid: Sequence[str] | Mapping[str, Sequence[ParamValue]] | None = None,
    cv: int | None = None,
    grid_json: str | os.PathLike[str] | None = None,
    progress: StatusFn | None = None,
    on_progress: FractionFn | None = None,
) -> TrainResult | GridResult:
    """What ``edgekit train`` does: train recipe ``name`` (or grid-search it) and save.

    Args:
        name: recipe name (``image_cnn``, ``tabular_mlp``, ``text_lstm``).
        config: hyper-parameters (default: the recipe's defaults).
        data: data path for the recipe's loader (default: the recipe's default data).
        output: ``.keras`` path for the trained model (default: not saved).
        force: overwrite existing outputs; default False.
        label: class column of a CSV (``tabular_mlp``).
        grid: ``NAME=V1,V2`` strings or a dict of lists; runs :func:`grid_search`.
        cv: folds for the grid search (default: one validation hold-out).
        grid_json: where the grid table is written (default ``OUT.grid.json``).
        progress: called with short status lines (:mod:`edgekit.progress`).
        on_progress: called with the fraction done: of the epochs, or of all grid-search fits.
    """
    recipe: Recipe = get_recipe(name).RECIPE
    options: dict[str, object] = {"label": label} if label is not None else {}
    if not grid:
        if cv is not None:
            raise InputError("--cv needs at least one --grid")
        return run_training(recipe, config, data_path=data, output=output, force=force,
                            progress=progress, on_progress=on_progress, options=options)
    table = grid if isinstance(grid, Mapping) else parse_grid(grid)
    json_path = Path(grid_json) if grid_json else default_grid_json(output)
    if json_path.exists() and not force:
        raise OutputExistsError(f"{json_path} already exists", hint="pass --force to overwrite it")
    result = grid_search(recipe, table, config, cv=cv, data_path=data, output=output, force=force,
                         progress=progress, on_progress=on_progress, options=options)
    from edgekit.io.artifacts import atomic_write_json

    atomic_write_json(json_path, {"recipe": name, **result.to_dict()}, force=force)
    result.json_path = str(json_path)
    return result
