"""The training loop shared by all recipes: config, data splits, fit, evaluate, save, grid search.

TensorFlow / Keras and scikit-learn are imported lazily inside functions.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import DataError, InputError, OutputExistsError, require
from edgekit.inputs.datasets import DataSplit, holdout_split
from edgekit.metadata import ModelMetadata, Preprocessing

__all__ = [
    "OPTIMIZERS",
    "ACTIVATIONS",
    "GRID_KEYS",
    "TrainConfig",
    "TrainResult",
    "GridResult",
    "DataSplit",
    "Fitted",
    "Recipe",
    "run_training",
    "grid_search",
    "parse_grid",
    "accuracy",
    "train_recipe",
    "default_grid_json",
    "n_fits",
]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
#: TrainConfig fields that ``--grid`` may vary.
GRID_KEYS = ("optimizer", "activation", "learning_rate", "batch_size", "epochs", "hidden")


@dataclass
class TrainConfig:
    """Training hyper-parameters; None means "the recipe's default".

    Attributes:
        epochs: passes over the training data (recipe default: image 10, tabular 60, text 5).
        batch_size: examples per step (recipe default: image 64, tabular 32, text 32).
        optimizer: ``"adam"`` (default), ``"rmsprop"`` or ``"sgd"``.
        learning_rate: optimizer step size; default 0.001.
        activation: hidden activation ``"relu"``, ``"tanh"`` or ``"sigmoid"``; recipe
            default (relu for image/tabular, tanh for the text LSTM).
        validation_split: fraction of the training data held out for validation; default 0.1.
        test_split: fraction held out as the test set when the data has no test set of its
            own (CSV, text); default 0.2.
        seed: seeds splits, weight init and shuffling; default 0.
        hidden: hidden units of the tabular MLP; default 32.
        limit: use at most this many training and test examples (quick runs); default all.
        verbose: Keras fit verbosity (0 silent, 1 progress bar, 2 one line per epoch);
            default 0.
    """

    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str = "adam"
    learning_rate: float = 0.001
    activation: str | None = None
    validation_split: float = 0.1
    test_split: float = 0.2
    seed: int = 0
    hidden: int = 32
    limit: int | None = None
    verbose: int = 0

    def __post_init__(self) -> None:
        self.optimizer = str(self.optimizer).lower()
        if self.optimizer not in OPTIMIZERS:
            raise InputError(
                f"unknown optimizer {self.optimizer!r}", hint=f"use one of {', '.join(OPTIMIZERS)}"
            )
        if self.activation is not None:
            self.activation = str(self.activation).lower()
            if self.activation not in ACTIVATIONS:
                raise InputError(
                    f"unknown activation {self.activation!r}",
                    hint=f"use one of {', '.join(ACTIVATIONS)}",
                )
        checks = [
            (self.epochs is None or self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size is None or self.batch_size >= 1, "batch size must be >= 1"),
            (
                math.isfinite(self.learning_rate) and self.learning_rate > 0,
                "learning rate must be > 0",
            ),
            (0.0 <= self.validation_split < 1.0, "validation split must be in [0, 1)"),
            (0.0 < self.test_split < 1.0, "test split must be in (0, 1)"),
            (self.hidden >= 1, "hidden units must be >= 1"),
            (self.limit is None or self.limit >= 10, "limit must be >= 10"),
            (self.seed >= 0, "seed must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)

    def resolved(self, defaults: dict[str, Any]) -> TrainConfig:
        """A copy with every None field replaced by ``defaults`` (the recipe's)."""
        values = {
            k: defaults[k]
            for k, v in dataclasses.asdict(self).items()
            if v is None and k in defaults
        }
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What one training run produced (accuracies are fractions in [0, 1])."""

    recipe: str
    train_accuracy: float
    val_accuracy: float | None
    test_accuracy: float
    seconds: float
    seed: int
    n_train: int
    n_val: int
    n_test: int
    labels: list[str]
    config: dict[str, Any]
    output: str | None = None
    data: str = ""

    def summary(self) -> str:
        """A small text table for the CLI."""

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        rows = [
            ("recipe", self.recipe),
            ("data", self.data),
            ("examples", f"train {self.n_train}, val {self.n_val}, test {self.n_test}"),
            ("train accuracy", pct(self.train_accuracy)),
            ("val accuracy", pct(self.val_accuracy)),
            ("test accuracy", pct(self.test_accuracy)),
            ("epochs", str(self.config.get("epochs"))),
            ("seed", str(self.seed)),
            ("time", f"{self.seconds:.1f} s"),
        ]
        if self.output:
            rows.append(("model", self.output))
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GridResult:
    """Grid-search table (one row per combination) and the final model's result."""

    rows: list[dict[str, Any]]
    best: dict[str, Any]
    cv: int | None
    final: TrainResult | None = None
    json_path: str | None = None

    def table(self) -> str:
        """Mean +- std validation accuracy per combination, best marked with ``*``."""
        keys = list(self.rows[0]["params"]) if self.rows else []
        head = [*keys, "val accuracy (mean +- std)"]
        body = []
        for r in self.rows:
            mark = " *" if r["params"] == self.best else ""
            body.append(
                [
                    *(str(r["params"][k]) for k in keys),
                    f"{100 * r['mean']:.2f} +- {100 * r['std']:.2f}%{mark}",
                ]
            )
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *body]
        ]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "cv": self.cv,
            "rows": self.rows,
            "best": self.best,
            "final": self.final.to_dict() if self.final else None,
        }


@dataclass
class Fitted:
    """Preprocessing learned on a training split: metadata + the function applying it."""

    preprocessing: Preprocessing
    transform: Callable[[np.ndarray], np.ndarray]
    tokenizer: dict[str, Any] | None = None


class Recipe:
    """Base class of a training recipe; subclasses fill in data, preprocessing and model."""

    name: str = ""
    defaults: dict[str, Any] = {}

    def load_split(
        self, path: str | os.PathLike[str] | None, config: TrainConfig, **options: Any
    ) -> DataSplit:
        """Raw train/test data (recipes without a test set hold out ``config.test_split``)."""
        raise NotImplementedError

    def fit_preprocessing(self, x_train: np.ndarray, config: TrainConfig) -> Fitted:
        """Learn preprocessing on the training split only."""
        raise NotImplementedError

    def build_model(self, config: TrainConfig, input_shape: Sequence[int], n_classes: int) -> Any:
        """An uncompiled Keras model."""
        raise NotImplementedError

    def loss(self, n_classes: int) -> str:
        """Loss matching :meth:`output_units`."""
        return "sparse_categorical_crossentropy"


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
    keras = require("keras", "export", "tensorflow-cpu")
    tf = require("tensorflow", "export", "tensorflow-cpu")
    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass


def _optimizer(config: TrainConfig) -> Any:
    keras = require("keras", "export", "tensorflow-cpu")
    cls = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}[config.optimizer]
    return getattr(keras.optimizers, cls)(learning_rate=config.learning_rate)


def accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy; a single sigmoid output counts as P(class 1)."""
    if len(y) == 0:
        return float("nan")
    p = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    pred = (p[:, 0] > 0.5).astype(np.int64) if p.shape[-1] == 1 else p.argmax(-1)
    return float((pred == y).mean())


def _fit(
    recipe: Recipe,
    cfg: TrainConfig,
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    n_classes: int,
    verbose: int,
) -> tuple[Any, Fitted, float | None, np.ndarray]:
    """Fit preprocessing + model on one split.

    Returns the model, the fitted preprocessing, the validation accuracy (None without
    validation data) and the transformed training inputs.
    """
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
    )
    val = accuracy(model, xv, y_val) if xv is not None and y_val is not None else None
    return model, fitted, val, xf


def _check_output(output: str | os.PathLike[str] | None, force: bool) -> Path | None:
    if output is None:
        return None
    out = Path(output)
    if out.suffix != ".keras":
        raise InputError(f"output {out} must end in .keras")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists", hint="pass --force to overwrite it")
    if out.exists() and out.is_dir():
        raise OutputExistsError(f"{out} is a folder")
    return out


def _save(model: Any, out: Path, meta: ModelMetadata, force: bool) -> None:
    """Save model + metadata through a temp file in the same folder, then rename."""
    from edgekit.metadata import save_keras_metadata

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".tmp.keras", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        model.save(tmp)
        save_keras_metadata(tmp, meta)
        if out.exists() and not force:
            raise OutputExistsError(f"{out} already exists", hint="pass --force to overwrite it")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _load(
    recipe: Recipe,
    cfg: TrainConfig,
    data: DataSplit | None,
    data_path: str | os.PathLike[str] | None,
    options: dict[str, Any],
) -> DataSplit:
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


# -- public entry points ------------------------------------------------------------------------
def run_training(
    recipe: Recipe,
    config: TrainConfig | None = None,
    *,
    data: DataSplit | None = None,
    data_path: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    **options: Any,
) -> TrainResult:
    """Train ``recipe`` and (when ``output`` is given) save the ``.keras`` model + metadata.

    Args:
        recipe: the recipe object.
        config: hyper-parameters; default :class:`TrainConfig` with the recipe's defaults.
        data: already loaded data; default: load from ``data_path``.
        data_path: file or folder for the recipe's loader; default the recipe's default data.
        output: where to save the trained model (``.keras``); default: not saved.
        force: overwrite an existing ``output``; default False.
        options: recipe loader options (e.g. ``label="target"`` for CSV files).
    """
    cfg = (config or TrainConfig()).resolved(recipe.defaults)
    out = _check_output(output, force)
    t0 = time.perf_counter()
    split = _load(recipe, cfg, data, data_path, options)
    n_classes = len(split.labels)
    x_fit, y_fit, x_val, y_val = _val_split(
        split.x_train, split.y_train, cfg.validation_split, cfg.seed
    )
    model, fitted, val, xf = _fit(recipe, cfg, x_fit, y_fit, x_val, y_val, n_classes, cfg.verbose)
    train_acc = accuracy(model, xf, y_fit)
    test_acc = accuracy(model, fitted.transform(split.x_test), split.y_test)
    if out is not None:
        meta = ModelMetadata(
            labels=list(split.labels),
            preprocessing=fitted.preprocessing,
            tokenizer=fitted.tokenizer,
            recipe=recipe.name,
            extra={"train.seed": str(cfg.seed), "train.test_accuracy": f"{test_acc:.6f}"},
        )
        _save(model, out, meta, force)
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


def _convert(key: str, value: str) -> Any:
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


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``["optimizer=adam,rmsprop", "learning_rate=0.001,0.01"]`` into a grid dict."""
    grid: dict[str, list[Any]] = {}
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


def grid_search(
    recipe: Recipe,
    grid: dict[str, list[Any]],
    config: TrainConfig | None = None,
    *,
    cv: int | None = None,
    data: DataSplit | None = None,
    data_path: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> GridResult:
    """Score every combination of ``grid`` and train the best one on all training data.

    Each combination is scored by its validation accuracy: mean +- std over ``cv``
    stratified folds (scikit-learn ``StratifiedKFold``), or, with ``cv=None`` (default), on a
    single ``config.validation_split`` hold-out. The best combination (highest mean, first on
    ties) is then trained on all training data (no validation split) and saved to ``output``.
    ``on_step`` is called after every fit (for progress bars).
    """
    ms = require("sklearn.model_selection", "export", "scikit-learn")
    base = (config or TrainConfig()).resolved(recipe.defaults)
    if cv is not None and cv < 2:
        raise InputError("--cv must be >= 2")
    if cv is None and base.validation_split <= 0:
        raise InputError("grid search without --cv needs a validation split > 0")
    combos = list(ms.ParameterGrid(grid))
    for c in combos:  # validate every combination before any training
        dataclasses.replace(base, **c)
    out = _check_output(output, force)
    split = _load(recipe, base, data, data_path, options)
    folds = _folds(split.y_train, cv, base)
    rows = [_score(recipe, dataclasses.replace(base, **params), params, split, folds, on_step)
            for params in combos]
    best = max(rows, key=lambda r: r["mean"])["params"]  # max keeps the first on ties
    final_cfg = dataclasses.replace(base, validation_split=0.0, limit=None, **best)
    final = run_training(recipe, final_cfg, data=split, output=out, force=force)
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


def _score(recipe: Recipe, cfg: TrainConfig, params: dict[str, Any], split: DataSplit,
           folds: list[tuple[np.ndarray, np.ndarray]],
           on_step: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """Validation accuracy of one grid combination over ``folds``: mean, std and scores."""
    x, y, n_classes = split.x_train, split.y_train, len(split.labels)
    scores = []
    for tr, va in folds:
        _, _, val, _ = _fit(recipe, cfg, x[tr], y[tr], x[va], y[va], n_classes, 0)
        scores.append(float(val or 0.0))
        if on_step:
            on_step(params)
    return {"params": dict(params), "mean": float(np.mean(scores)),
            "std": float(np.std(scores)), "scores": scores}


def require_keras() -> Any:
    """The ``keras`` module (lazy, with a clear error when TensorFlow is missing)."""
    return require("keras", "export", "tensorflow-cpu")


def default_grid_json(output: str | os.PathLike[str] | None) -> Path:
    """Where the grid table goes by default: ``OUT.grid.json`` beside the model."""
    if output is None:
        return Path("grid_search.json")
    out = Path(output)
    return out.with_name(out.stem + ".grid.json")


def train_recipe(
    name: str,
    config: TrainConfig | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    label: str | None = None,
    grid: Sequence[str] | dict[str, list[Any]] | None = None,
    cv: int | None = None,
    grid_json: str | os.PathLike[str] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
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
        on_step: called after every grid-search fit.
    """
    from edgekit.recipes import get_recipe

    recipe = get_recipe(name).RECIPE
    options: dict[str, Any] = {"label": label} if label is not None else {}
    if not grid:
        if cv is not None:
            raise InputError("--cv needs at least one --grid")
        return run_training(recipe, config, data_path=data, output=output, force=force, **options)
    table = parse_grid(grid) if not isinstance(grid, dict) else grid
    json_path = Path(grid_json) if grid_json else default_grid_json(output)
    if json_path.exists() and not force:
        raise OutputExistsError(f"{json_path} already exists", hint="pass --force to overwrite it")
    result = grid_search(
        recipe,
        table,
        config,
        cv=cv,
        data_path=data,
        output=output,
        force=force,
        on_step=on_step,
        **options,
    )
    from edgekit.io.artifacts import atomic_write_json

    atomic_write_json(json_path, {"recipe": name, **result.to_dict()}, force=force)
    result.json_path = str(json_path)
    return result


def n_fits(grid: dict[str, list[Any]], cv: int | None) -> int:
    """How many fits a grid search makes (combinations x folds), for progress bars."""
    n = 1
    for values in grid.values():
        n *= len(values)
    return n * (cv or 1)
