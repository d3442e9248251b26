"""Grid search over :class:`TrainConfig` fields: ``--grid`` parsing, cross-validated scoring of
every combination, and the final model trained with the best one."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import DataError, InputError, require
from edgekit.inputs.datasets import DataSplit, holdout_split
from edgekit.progress import FractionFn, StatusFn, status
from edgekit.recipes.config import GRID_KEYS, GridResult, GridRow, ParamValue, TrainConfig
from edgekit.recipes.evaluate import check_output
from edgekit.recipes.loop import FitProgress, fit, load_split, run_training
from edgekit.recipes.recipe import Recipe

__all__ = ["parse_grid", "grid_search", "default_grid_json", "n_fits"]

#: a grid: TrainConfig field -> the values to try
Grid = Mapping[str, Sequence[ParamValue]]


def _convert(key: str, value: str) -> ParamValue:
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    t = str(types[key])
    try:
        if "float" in t:
            return float(value)
        if "int" in t:
            return int(value)
    except ValueError as exc:
        raise InputError(f"--grid {key}: {value!r} is not a number") from exc
    return value


def parse_grid(specs: Sequence[str]) -> dict[str, list[ParamValue]]:
    """Parse ``["optimizer=adam,rmsprop", "learning_rate=0.001,0.01"]`` into a grid dict."""
    grid: dict[str, list[ParamValue]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise InputError(f"--grid {spec!r} must look like NAME=V1,V2")
        if key not in GRID_KEYS:
            raise InputError(
                f"--grid cannot vary {key!r}", hint=f"use one of {', '.join(GRID_KEYS)}"
            )
        vals = [_convert(key, v.strip()) for v in values.split(",") if v.strip()]
        grid.setdefault(key, []).extend(vals)
    if not grid:
        raise InputError("empty --grid")
    return grid


def n_fits(grid: Grid, cv: int | None) -> int:
    """How many fits a grid search scores (combinations x folds), the final fit not counted."""
    n = 1
    for values in grid.values():
        n *= len(values)
    return n * (cv or 1)


class _Steps:
    """Progress over the fits of a grid search (:mod:`edgekit.progress`): a status line per
    fit and the fraction done, each fit's epochs counted as parts of it."""

    def __init__(self, total: int, progress: StatusFn | None,
                 on_progress: FractionFn | None) -> None:
        self.total, self.done = total, 0
        self.progress, self.on_progress = progress, on_progress

    def next_fit(self, what: str) -> FitProgress:
        """Listeners for the next fit (``what`` describes it)."""
        status(self.progress, f"[{self.done + 1}/{self.total}] {what}")
        done, report = self.done, self.on_progress
        self.done += 1
        if report is None:
            return FitProgress()
        return FitProgress(on_progress=lambda f: report((done + f) / self.total))


def grid_search(
    recipe: Recipe,
    grid: Grid,
    config: TrainConfig | None = None,
    *,
    data: DataSplit | None = None,
    data_path: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    cv: int | None = None,
    progress: StatusFn | None = None,
    on_progress: FractionFn | None = None,
    options: Mapping[str, object] | None = None,
) -> GridResult:
    """Score every combination of ``grid`` and train the best one on all training data.

    Each combination is scored by its validation accuracy: mean +- std over ``cv``
    stratified folds (scikit-learn ``StratifiedKFold``), or, with ``cv=None`` (default), on a
    single ``config.validation_split`` hold-out. The best combination (highest mean, first on
    ties) is then trained on all training data (no validation split) and saved to ``output``.
    ``progress`` gets a status line per fit, ``on_progress`` the fraction of all fits done
    (:mod:`edgekit.progress`).
    """
    ms = require("sklearn.model_selection", "export", "scikit-learn")
    base = (config or TrainConfig()).resolved(recipe.defaults)
    if cv is not None and cv < 2:
        raise InputError("--cv must be >= 2")
    if cv is None and base.validation_split <= 0:
        raise InputError("grid search without --cv needs a validation split > 0")
    combos: list[dict[str, ParamValue]] = list(ms.ParameterGrid(grid))
    for c in combos:  # validate every combination before any training
        base.with_params(c)
    out = check_output(output, force)
    split = load_split(recipe, base, data, data_path, options or {})
    folds = _folds(split.y_train, cv, base)
    steps = _Steps(n_fits(grid, cv) + 1, progress, on_progress)
    rows = [_score(recipe, base.with_params(params), params, split, folds, steps)
            for params in combos]
    best = max(rows, key=lambda r: r["mean"])["params"]  # max keeps the first on ties
    final_cfg = dataclasses.replace(base.with_params(best), validation_split=0.0, limit=None)
    last = steps.next_fit(f"final model: {best}")
    final = run_training(recipe, final_cfg, data=split, output=out, force=force,
                         on_progress=last.on_progress)
    final.config["limit"] = base.limit
    return GridResult(rows=rows, best=dict(best), cv=cv, final=final)


def _folds(y: np.ndarray, cv: int | None, base: TrainConfig
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs: ``cv`` stratified folds, else one hold-out split."""
    if cv is None:
        s = holdout_split(np.arange(len(y)), y, [], base.validation_split, base.seed)
        return [(s.x_train, s.x_test)]
    ms = require("sklearn.model_selection", "export", "scikit-learn")
    if np.bincount(y).min() < cv:
        raise DataError(f"--cv {cv} needs at least {cv} examples of every class")
    kfold = ms.StratifiedKFold(cv, shuffle=True, random_state=base.seed)
    return list(kfold.split(np.zeros(len(y)), y))


def _score(recipe: Recipe, cfg: TrainConfig, params: dict[str, ParamValue], split: DataSplit,
           folds: list[tuple[np.ndarray, np.ndarray]], steps: _Steps) -> GridRow:
    """Validation accuracy of one grid combination over ``folds``: mean, std and scores."""
    x, y, n_classes = split.x_train, split.y_train, len(split.labels)
    scores = []
    for k, (tr, va) in enumerate(folds):
        report = steps.next_fit(f"{params}: fold {k + 1}/{len(folds)}")
        _, _, val, _ = fit(recipe, cfg, (x[tr], y[tr]), (x[va], y[va]), n_classes, 0, report)
        scores.append(float(val or 0.0))
    return {"params": dict(params), "mean": float(np.mean(scores)),
            "std": float(np.std(scores)), "scores": scores}


def default_grid_json(output: str | os.PathLike[str] | None) -> Path:
    """Where the grid table goes by default: ``OUT.grid.json`` beside the model."""
    if output is None:
        return Path("grid_search.json")
    out = Path(output)
    return out.with_name(out.stem + ".grid.json")
