"""Settings and results of a training run: :class:`TrainConfig`, :class:`TrainResult` and the
grid search's :class:`GridResult`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from edgekit.errors import InputError

__all__ = [
    "OPTIMIZERS",
    "ACTIVATIONS",
    "GRID_KEYS",
    "ParamValue",
    "GridRow",
    "TrainConfig",
    "TrainResult",
    "GridResult",
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

    def resolved(self, defaults: Mapping[str, object]) -> TrainConfig:
        """A copy with every None field replaced by ``defaults`` (the recipe's)."""
        values: dict[str, Any] = {
            k: defaults[k]
            for k, v in dataclasses.asdict(self).items()
            if v is None and k in defaults
        }
        return dataclasses.replace(self, **values)

    def with_params(self, params: Mapping[str, ParamValue]) -> TrainConfig:
        """A copy with the fields ``params`` names (a grid-search combination) replaced."""
        changes: dict[str, Any] = dict(params)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


#: one value of a grid-searched :class:`TrainConfig` field
ParamValue = str | int | float


class GridRow(TypedDict):
    """One grid-search combination: its parameters and validation accuracies."""

    params: dict[str, ParamValue]
    mean: float
    std: float
    scores: list[float]


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
    config: dict[str, object]
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

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass
class GridResult:
    """Grid-search table (one row per combination) and the final model's result."""

    rows: list[GridRow]
    best: dict[str, ParamValue]
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

    def to_dict(self) -> dict[str, object]:
        return {
            "cv": self.cv,
            "rows": self.rows,
            "best": self.best,
            "final": self.final.to_dict() if self.final else None,
        }
