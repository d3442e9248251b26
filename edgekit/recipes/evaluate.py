"""The trained model's accuracy, and its export: a ``.keras`` file with edgekit metadata."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.contract import top1
from edgekit.errors import InputError, OutputExistsError
from edgekit.metadata import ModelMetadata

if TYPE_CHECKING:
    import keras

__all__ = ["accuracy", "check_output", "save_model"]


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy; a single sigmoid output counts as P(class 1)."""
    if len(y) == 0:
        return float("nan")
    p = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    return float((top1(p) == y).mean())


def check_output(output: str | os.PathLike[str] | None, force: bool) -> Path | None:
    """The ``.keras`` path to save to, checked before any training (None: not saved)."""
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


def save_model(model: keras.Model, out: Path, meta: ModelMetadata, force: bool) -> None:
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
