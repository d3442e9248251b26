"""What ``bench``, ``compare`` and ``check`` measure: a :class:`Backend` is one loaded model
(ONNX on a registered engine, TFLite, Keras) with its inputs, a bound call for the timing loop,
and the one input pipeline for accuracy (:func:`evaluate`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.inputs.data import Dataset, TensorSpecInfo, batches
from edgekit.inputs.prepare import prepare_dataset, read_data
from edgekit.metadata import ModelMetadata

__all__ = ["InputInfo", "Backend", "evaluate"]


@dataclass(frozen=True)
class InputInfo(TensorSpecInfo):
    """A model input (:class:`~edgekit.inputs.data.TensorSpecInfo`) and, for ids, the exclusive
    upper bound of valid values (default 2)."""

    high: int = 2


class Backend:
    """One loaded model. Subclasses set ``kind``, ``inputs`` and implement ``_infer``.

    ``bind(batch)`` prepares a zero-argument callable that runs one inference on fixed inputs
    (so the timed loop measures only the model); ``infer(arrays)`` runs inputs given in model
    input order and returns the first output.
    """

    kind = "?"

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.inputs: list[InputInfo] = []
        self.metadata: ModelMetadata | None = None  # edgekit ModelMetadata when known
        self.load_time_ms: float | None = None  # set by load_backend

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """First output for inputs in model order."""
        raise NotImplementedError

    def bind(self, arrays: Sequence[np.ndarray]) -> Callable[[], object]:
        """A callable running one inference on ``arrays`` (default: :meth:`infer`)."""
        arrays = list(arrays)
        return lambda: self.infer(arrays)

    @property
    def runtime(self) -> str | None:
        """Which API runs the model, in words, where a backend has a choice (TFLite:
        ``CompiledModel`` or the Interpreter fallback and why); None otherwise."""
        return None

    def close(self) -> None:
        """Free the session / interpreter."""

    def prepare(self, data: Dataset) -> list[np.ndarray]:
        """Model-ready inputs (model order) from raw data, by the one input pipeline
        (:func:`edgekit.inputs.prepare.prepare_dataset`, the rule ``EdgeModel.predict``
        follows); arrays are matched by name, else by position."""
        meta = self.metadata or ModelMetadata()
        ds = read_data(data, self.inputs, meta, "data")
        feeds, _ = prepare_dataset(ds, self.inputs, meta)
        return [feeds[s.name] for s in self.inputs]

    def load_data(self, data: str | os.PathLike[str] | Dataset, what: str,
                  split: str = "test", limit: int = 0) -> Dataset:
        """Raw data for this model from a file, folder or Dataset
        (:func:`edgekit.inputs.prepare.read_data`: ``.npz``/``.npy``, IDX folders, text tables
        for models with a tokenizer); ``limit`` samples at most (0 = all)."""
        meta = self.metadata or ModelMetadata()
        return read_data(data, self.inputs, meta, what, split, limit)


def evaluate(backend: Backend, data: Dataset, batch_size: int = 256) -> np.ndarray:
    """First-output predictions of ``backend`` on ``data`` (raw data is preprocessed by the
    model's metadata), in batches of ``batch_size`` (default 256)."""
    arrays = backend.prepare(data)
    n = len(arrays[0])
    outs = [backend.infer([a[sl] for a in arrays]) for sl in batches(n, batch_size)]
    return np.concatenate([np.asarray(o, dtype=np.float32) for o in outs])
