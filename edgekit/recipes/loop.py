"""The training loop shared by all recipes: data splits, seeding, fit, and one training run.

TensorFlow / Keras and scikit-learn are imported lazily inside functions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import DataError, require
from edgekit.inputs.datasets import DataSplit, holdout_split
from edgekit.metadata import ModelMetadata
from edgekit.progress import FractionFn, StatusFn, status
from edgekit.recipes.config import TrainConfig, TrainResult
from edgekit.recipes.evaluate import accuracy, check_output, save_model
from edgekit.recipes.recipe import Fitted, Recipe, require_keras

if TYPE_CHECKING:
    import keras

__all__ = ["FitProgress", "seed_everything", "fit", "load_split", "run_training"]


@dataclass(frozen=True)
class FitProgress:
    """Where a fit reports its epochs, by the protocol of :mod:`edgekit.progress`.

    Attributes:
        progress: called with one status line per epoch (``"epoch 2/10: accuracy 0.91, ..."``).
        on_progress: called with the fraction of the epochs done.
    """

    progress: StatusFn | None = None
    on_progress: FractionFn | None = None

    def callbacks(self, epochs: int) -> list[keras.callbacks.Callback]:
        """A Keras callback that reports each of ``epochs`` epochs (none without listeners)."""
        if self.progress is None and self.on_progress is None:
            return []
        callback: Any = require_keras().callbacks.Callback
        report = self

        class EpochProgress(callback):
            def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
                values = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items())
                status(report.progress, f"epoch {epoch + 1}/{epochs}: {values}")
                if report.on_progress is not None:
                    report.on_progress((epoch + 1) / epochs)

        return [EpochProgress()]


# -- helpers -------------------------------------------------------------------------------
def _subset(
    x: np.ndarray, y: np.ndarray, n: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return x[idx], y[idx]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow ops deterministic."""
    keras_module = require_keras()
    tf = require("tensorflow", "export", "tensorflow-cpu")
    keras_module.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass


def _optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    keras_module = require_keras()
    cls = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}[config.optimizer]
    return getattr(keras_module.optimizers, cls)(learning_rate=config.learning_rate)


def fit(
    recipe: Recipe,
    cfg: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    n_classes: int,
    verbose: int,
    report: FitProgress | None = None,
) -> tuple[keras.Model, Fitted, float | None, np.ndarray]:
    """Fit preprocessing + model on one split.

    Returns the model, the fitted preprocessing, the validation accuracy (None without
    validation data) and the transformed training inputs.
    """
    (x_fit, y_fit), (x_val, y_val) = train, val or (None, None)
    seed_everything(cfg.seed)
    fitted = recipe.fit_preprocessing(x_fit, cfg)
    xf = fitted.transform(x_fit)
    xv = fitted.transform(x_val) if x_val is not None and len(x_val) else None
    model = recipe.build_model(cfg, xf.shape[1:], n_classes)
    model.compile(optimizer=_optimizer(cfg), loss=recipe.loss(n_classes), metrics=["accuracy"])
    model.fit(
        xf,
        y_fit,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        validation_data=(xv, y_val) if xv is not None else None,
        shuffle=True,
        verbose=verbose,
        callbacks=report.callbacks(cfg.epochs or 1) if report else [],
    )
    acc = accuracy(model, xv, y_val) if xv is not None and y_val is not None else None
    return model, fitted, acc, xf


def load_split(
    recipe: Recipe,
    cfg: TrainConfig,
    data: DataSplit | None,
    data_path: str | os.PathLike[str] | None,
    options: Mapping[str, object],
) -> DataSplit:
    """The recipe's data (``data``, or loaded from ``data_path``), cut to ``cfg.limit``."""
    split = data if data is not None else recipe.load_split(data_path, cfg, **options)
    x_tr, y_tr = _subset(split.x_train, split.y_train, cfg.limit, cfg.seed)
    x_te, y_te = _subset(split.x_test, split.y_test, cfg.limit, cfg.seed + 1)
    if len(np.unique(y_tr)) < 2:
        raise DataError(f"the training data of {split.source or 'this run'} has a single class")
    return DataSplit(x_tr, y_tr, x_te, y_te, split.labels, split.source)


def _val_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    if fraction <= 0:
        return x, y, x[:0], y[:0]
    s = holdout_split(x, y, [], fraction, seed)
    return s.x_train, s.y_train, s.x_test, s.y_test


# -- public entry point -------------------------------------------------------------------------
def run_training(
    recipe: Recipe,
    config: TrainConfig | None = None,
    *,
    data: DataSplit | None = None,
    data_path: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: StatusFn | None = None,
    on_progress: FractionFn | None = None,
    options: Mapping[str, object] | None = None,
) -> TrainResult:
    """Train ``recipe`` and (when ``output`` is given) save the ``.keras`` model + metadata.

    Args:
        recipe: the recipe object.
        config: hyper-parameters; default :class:`TrainConfig` with the recipe's defaults.
        data: already loaded data; default: load from ``data_path``.
        data_path: file or folder for the recipe's loader; default the recipe's default data.
        output: where to save the trained model (``.keras``); default: not saved.
        force: overwrite an existing ``output``; default False.
        progress: called with a status line per step and per epoch (:mod:`edgekit.progress`).
        on_progress: called with the fraction of the epochs done.
        options: recipe loader options (e.g. ``label="target"`` for CSV files).
    """
    cfg = (config or TrainConfig()).resolved(recipe.defaults)
    out = check_output(output, force)
    t0 = time.perf_counter()
    status(progress, f"{recipe.name}: loading data")
    split = load_split(recipe, cfg, data, data_path, options or {})
    x_fit, y_fit, x_val, y_val = _val_split(
        split.x_train, split.y_train, cfg.validation_split, cfg.seed
    )
    status(progress, f"{recipe.name}: training on {len(y_fit)} examples, {cfg.epochs} epochs")
    model, fitted, val, xf = fit(recipe, cfg, (x_fit, y_fit), (x_val, y_val), len(split.labels),
                                 cfg.verbose, FitProgress(progress, on_progress))
    train_acc = accuracy(model, xf, y_fit)
    test_acc = accuracy(model, fitted.transform(split.x_test), split.y_test)
    if out is not None:
        status(progress, f"{recipe.name}: saving {out}")
        meta = ModelMetadata(
            labels=list(split.labels),
            preprocessing=fitted.preprocessing,
            tokenizer=fitted.tokenizer,
            recipe=recipe.name,
            extra={"train.seed": str(cfg.seed), "train.test_accuracy": f"{test_acc:.6f}"},
        )
        save_model(model, out, meta, force)
    return TrainResult(
        recipe=recipe.name,
        train_accuracy=train_acc,
        val_accuracy=val,
        test_accuracy=test_acc,
        seconds=time.perf_counter() - t0,
        seed=cfg.seed,
        n_train=len(y_fit),
        n_val=len(y_val),
        n_test=len(split.y_test),
        labels=list(split.labels),
        config=cfg.to_dict(),
        output=str(out) if out else None,
        data=split.source,
    )
