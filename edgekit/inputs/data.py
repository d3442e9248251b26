"""Loading arrays for validation, calibration and evaluation (numpy only).

File format (the same for ``--validation-data``, ``--calibration``, ``--eval-data`` and the
arrays ``edgekit run`` reads), the one array-name rule of :func:`read_inputs`: an ``.npz`` whose
arrays are named after the model's inputs; or, for a single-input model, the array named ``x``
(or ``inputs``, ``input``, ``images``, in that order), or the file's only array besides the
labels; or a plain ``.npy``. An optional array ``y`` (unless a model input has that name) holds
integer class labels (or one-hot rows) for accuracy figures. Text for string inputs is a
``str`` (or UTF-8 ``bytes``) array: ``np.asarray(texts, dtype=str)``; object arrays would need
pickles, which edgekit never loads.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.contract import top1
from edgekit.errors import DataError, EdgekitError, InputError

__all__ = ["TensorSpecInfo", "Dataset", "INPUT_ALIASES", "LABELS", "read_arrays", "pick_inputs",
           "read_inputs", "load_dataset", "check_finite", "batches", "run_in_batches",
           "whole_batches", "run_whole_batches", "format_shape", "STRING_DTYPE",
           "is_string_dtype", "as_text"]

#: the names a single-input model's array may have besides its input's name, preferred first
INPUT_ALIASES = ("x", "inputs", "input", "images")
#: the name of the labels array
LABELS = "y"
#: the dtype name of a string input: numpy arrays of Python ``str`` (dtype object), as
#: onnxruntime takes and gives ONNX string tensors
STRING_DTYPE = "object"


def is_string_dtype(dtype: object) -> bool:
    """Whether ``dtype`` (a numpy dtype or its name) holds text: ``str``, ``bytes`` or object."""
    return np.dtype(dtype).kind in "OUS"  # type: ignore[call-overload]


def as_text(name: str, a: np.ndarray, where: str = "data") -> np.ndarray:
    """``a`` as string-input data: an object array of Python ``str`` (UTF-8 ``bytes`` decoded).

    Raises:
        DataError: ``a`` holds something else than text (numbers, None, invalid UTF-8).
    """
    if a.dtype.kind == "U":
        return a.astype(object)
    if a.dtype.kind not in "SO":
        raise DataError(f"{where}: input {name!r} takes text, got {a.dtype} data",
                        hint="pass the strings themselves: np.asarray(texts, dtype=str)")
    out = np.empty(a.shape, object)
    flat, src = out.reshape(-1), a.reshape(-1)
    try:
        for i, v in enumerate(src):
            if isinstance(v, bytes | np.bytes_):
                v = bytes(v).decode("utf-8")
            if not isinstance(v, str):
                raise TypeError(f"element {i} is {type(v).__name__}, not a string")
            flat[i] = str(v)
    except (UnicodeDecodeError, TypeError) as exc:
        raise DataError(f"{where}: input {name!r} takes text: {exc}",
                        hint="pass the strings themselves: np.asarray(texts, dtype=str)") from exc
    return out


def format_shape(shape: object) -> str:
    """``(N, 28, 28, 1)``: dynamic dimensions (None, 0, symbolic names) shown as N."""
    dims = list(shape)  # type: ignore[call-overload]
    return "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims) + ")"


@dataclass(frozen=True)
class TensorSpecInfo:
    """Name, shape (None for dynamic dimensions) and numpy dtype name of a model input/output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class Dataset:
    """Model inputs by name (equal first dimensions), optional integer labels and optional
    reference outputs (``output_M`` -> array, e.g. from ONNX test data sets)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""
    outputs: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int) -> Dataset:
        """The first ``n`` samples."""
        return self.select(slice(0, n))

    def select(self, index: slice | np.ndarray) -> Dataset:
        """The samples at ``index`` (a slice or an index array), labels and outputs too."""
        return Dataset(
            {k: v[index] for k, v in self.inputs.items()},
            None if self.labels is None else self.labels[index],
            self.source,
            None if self.outputs is None else {k: v[index] for k, v in self.outputs.items()},
        )


def check_finite(name: str, x: np.ndarray, where: str = "") -> None:
    """Raise :class:`DataError` when a float array holds NaN or inf."""
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise DataError(
            f"{where or 'data'}: array {name!r} holds {bad} NaN/inf value(s)",
            hint="clean the data (np.nan_to_num or drop those samples) and try again",
        )


def read_arrays(path: Path, what: str = "data",
                error: type[EdgekitError] = DataError) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (a ``.npy`` file gives ``{"x": array}``); no pickles.

    Raises ``error`` (default :class:`DataError`) naming ``what`` and the path when the file is
    truncated or not numpy's, or holds a complex array.
    """
    try:
        if path.suffix == ".npy":
            arrays = {"x": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if str(exc).startswith("Object arrays cannot be loaded"):
            raise error(
                f"{what} file {path} holds an object array, which numpy stores as a pickle; "
                "edgekit does not load pickles (they can run code)",
                hint="save text as a str array: numpy.savez(path, x=np.asarray(texts, "
                "dtype=str)); numbers as numeric arrays") from exc
        raise error(
            f"cannot read {what} file {path}: not a readable .npz/.npy file ({exc})",
            hint="save arrays with numpy.savez(path, x=inputs, y=labels)",
        ) from exc
    for name, a in arrays.items():  # a cast would silently drop the imaginary part
        if np.iscomplexobj(a):
            raise error(f"{what} file {path}: array {name!r} is complex ({a.dtype})",
                            hint="models take real inputs: pass np.real(x), np.abs(x) or "
                            "both parts as separate channels")
    return arrays


def pick_inputs(arrays: Mapping[str, np.ndarray],
                input_names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The model inputs among a file's arrays (labels removed), by the module's array-name rule.

    Args:
        arrays: the file's arrays by name, without the labels.
        input_names: the model's input names, in order (empty when not known).

    Returns:
        ``{input name: array}`` (``{file's name: array}`` when ``input_names`` is empty), or
        None when no array fits.
    """
    names = list(input_names)
    if names and all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(names) > 1:
        return None
    key = next((k for k in INPUT_ALIASES if k in arrays), None)
    if key is None and len(arrays) == 1:
        key = next(iter(arrays))
    if key is None:
        return None
    return {names[0] if names else key: arrays[key]}


def read_inputs(path: Path, input_names: Sequence[str], what: str = "data",
                error: type[EdgekitError] = DataError,
                ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The one ``.npz``/``.npy`` reader: ``(inputs, labels)`` of a data file.

    Args:
        path: the file.
        input_names: the model's input names, in order (empty when not known).
        what: how the data is called in error messages.
        error: the error class raised (default :class:`DataError`).

    Returns:
        The inputs by :func:`pick_inputs`, and the raw ``y`` array (None without one).
    """
    arrays = read_arrays(path, what, error)
    names = list(input_names)
    labels = None if LABELS in names else arrays.pop(LABELS, None)
    inputs = pick_inputs(arrays, names)
    if inputs is None:
        keys = sorted(arrays)
        held = (f"several arrays ({', '.join(keys)})" if len(keys) > 1
                else f"only the array {keys[0]!r}" if keys else "no input array")
        raise error(
            f"{what} file {path} holds {held}, not one array per model input {names}",
            hint="name the arrays after the model's inputs (a single-input model's may be "
            "named 'x' or be the only one)",
        )
    return inputs, labels


def load_dataset(
    path: str | os.PathLike[str], input_names: Sequence[str], what: str = "data",
    read_labels: bool = True,
) -> Dataset:
    """Read a ``.npz``/``.npy`` file laid out as this module describes.

    Args:
        path: the file.
        input_names: the model's input names, in order.
        what: how the data is called in error messages (e.g. ``"calibration data"``).
        read_labels: read 'y' as class ids (False: left out: a regression model's targets).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file {p} does not exist", hint="check the path")
    if p.is_dir():
        raise InputError(f"{what} path {p} is a folder, expected a .npz or .npy file")
    inputs, labels = read_inputs(p, input_names, what)
    labels = labels if read_labels else None
    lengths = {n: (len(a) if a.ndim else 0) for n, a in inputs.items()}
    if any(n == 0 for n in lengths.values()):
        raise DataError(f"{what} file {p} is empty (no samples)", hint="add samples")
    if len(set(lengths.values())) != 1:
        raise DataError(f"{what} file {p}: inputs have different sample counts {lengths}")
    n = next(iter(lengths.values()))
    for name, a in inputs.items():
        if a.dtype.kind in "US":  # text for a string input (prepare_inputs checks which)
            inputs[name] = as_text(name, a, what)
        elif not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise DataError(f"{what}: array {name!r} has non-numeric dtype {a.dtype}")
        check_finite(name, a, what)
    if labels is not None:
        if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot rows
            labels = top1(labels)
        labels = labels.reshape(-1)
        if len(labels) != n:
            raise DataError(f"{what} file {p}: {len(labels)} labels for {n} samples")
        if not np.issubdtype(labels.dtype, np.integer):
            if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)
            else:
                raise _label_error(what, p, labels)
    return Dataset(inputs, labels, str(p))


def _label_error(what: str, path: Path, labels: np.ndarray) -> DataError:
    """Labels that are no class ids: real values (a regression's targets) or anything else."""
    flat = labels.reshape(-1)
    if flat.dtype.kind == "f":
        odd = flat[~np.isclose(flat, np.round(flat))]
        return DataError(
            f"{what} file {path}: labels 'y' must be integer class ids; it holds real values "
            f"such as {float(odd[0] if odd.size else flat[0]):g} (regression targets?)",
            hint="labels serve top-1 accuracy; for a regression model, export it with "
            "--output-kind regression ('y' is then left out and variants are compared by "
            "their relative error) or save the file without 'y' (numpy.savez(path, x=inputs))")
    kind = "text" if flat.dtype.kind in "USO" else str(flat.dtype)
    return DataError(f"{what} file {path}: labels 'y' must be integer class ids, not {kind} "
                     f"values such as {flat[0].item()!r}",
                     hint="save each label as its index in the model's class list")


def batches(n: int, batch_size: int) -> list[slice]:
    """Slices covering ``range(n)`` in steps of ``batch_size``."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, max(1, batch_size))]


def run_in_batches(
    fn: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
    feeds: Mapping[str, np.ndarray],
    batch_size: int,
) -> list[np.ndarray]:
    """``fn`` on ``feeds`` in slices of ``batch_size`` rows; each of its outputs concatenated."""
    n = len(next(iter(feeds.values())))
    chunks = [fn({k: v[sl] for k, v in feeds.items()}) for sl in batches(n, batch_size)]
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def whole_batches(n: int, batch_size: int) -> list[slice]:
    """Slices of ``range(n)`` that all hold ``min(n, batch_size)`` rows: steps of
    ``batch_size``, the last one ending at row ``n`` (overlapping the one before when
    ``batch_size`` does not divide ``n``)."""
    size = max(1, min(n, batch_size))
    starts = list(range(0, n - size + 1, size))
    if starts and starts[-1] + size < n:
        starts.append(n - size)
    return [slice(i, i + size) for i in starts]


def run_whole_batches(
    fn: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
    feeds: Mapping[str, np.ndarray],
    batch_size: int,
) -> list[np.ndarray]:
    """``fn`` on each of the :func:`whole_batches` of ``feeds``; each output's runs stacked on a
    new first axis (one entry per batch). For models whose outputs mix the batch (a softmax
    over it, an output without a batch axis): two such models can only be compared on the
    same whole batches, never on slices concatenated."""
    n = len(next(iter(feeds.values())))
    runs = [fn({k: v[sl] for k, v in feeds.items()}) for sl in whole_batches(n, batch_size)]
    return [np.stack([np.asarray(r[i]) for r in runs]) for i in range(len(runs[0]))]
