"""Data for a model: read, check and bring to the model's inputs (every stage uses this).

:func:`load_model_data` is the one entry point for calibration, validation and evaluation data:
an ``.npz``/``.npy`` file, a data folder (IDX gz files, ONNX ``test_data_set_N`` folders or
images: :mod:`edgekit.inputs.folders`), a label/text table (models with tokenizer metadata)
or an in-memory :class:`~edgekit.inputs.data.Dataset`. :func:`prepare_inputs` checks
shapes and applies the model's preprocessing metadata to integer data. A :class:`DataFile`
(:func:`open_data`) is a path that stages share, read once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract import scores_classes
from edgekit.errors import DataError, InputError
from edgekit.inputs.data import (
    Dataset,
    TensorSpecInfo,
    as_text,
    format_shape,
    is_string_dtype,
    load_dataset,
)
from edgekit.inputs.folders import FolderLayout, folder_layout, read_folder, subset_index
from edgekit.metadata import ModelMetadata, Preprocessing

__all__ = ["load_model_data", "read_data", "prepare_dataset", "prepare_inputs", "onnx_input_specs",
           "onnx_words", "DataFile", "open_data"]

_TEXT_SUFFIXES = (".tsv", ".csv", ".txt")


def onnx_input_specs(model_proto: Any) -> list[TensorSpecInfo]:
    """Inputs of an ONNX graph (initializers excluded) as :class:`TensorSpecInfo`."""
    from onnx import helper

    inits = {i.name for i in model_proto.graph.initializer}
    specs = []
    for vi in model_proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        specs.append(TensorSpecInfo(vi.name, (None, *dims[1:]) if dims else dims, dt))
    return specs


def onnx_words(model_proto: Any) -> tuple[str, ...]:
    """The string constants of an ONNX graph (initializers and ``Constant`` nodes), in order:
    a lowered ``StringLookup``'s vocabulary, which synthetic string inputs draw from."""
    from onnx import TensorProto, numpy_helper

    tensors = [*model_proto.graph.initializer,
               *(a.t for n in model_proto.graph.node if n.op_type == "Constant"
                 for a in n.attribute if a.name == "value")]
    words = (w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w)
             for t in tensors if t.data_type == TensorProto.STRING
             for w in numpy_helper.to_array(t).reshape(-1))
    return tuple(dict.fromkeys(words))


def _text_split(path: Path, meta: ModelMetadata, split: str) -> Dataset:
    if meta.tokenizer is None:
        raise InputError(f"{path} is a text table but the model has no tokenizer metadata",
                         hint="pass an .npz of token ids instead")
    from edgekit.inputs.datasets import split_text_table
    from edgekit.inputs.text import TextTokenizer

    x, y = split_text_table(path, split, test_split=0.2, seed=0)
    return Dataset({"": TextTokenizer.from_dict(meta.tokenizer).encode(list(x))}, y,
                   f"{path} ({split} split, 20% test, seed 0)")


def load_model_data(
    data: str | os.PathLike[str] | Dataset,
    specs: Sequence[TensorSpecInfo],
    meta: ModelMetadata,
    what: str,
    split: str = "train",
    limit: int = 0,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], np.ndarray | None, list[str], str]:
    """Load and check data for a model: ``(feeds, labels, notes, description)``.

    ``data`` is an ``.npz``/``.npy`` file, a data folder (:mod:`edgekit.inputs.folders`: IDX gz
    files, of which ``split`` is read: ``train`` for calibration, ``test`` for evaluation; ONNX
    ``test_data_set_N`` folders; images, in class folders for labels), a label/text table for
    models with tokenizer metadata (the text recipe's 80/20 split), or a :class:`Dataset`.
    ``limit`` (0 = all) keeps a seeded random subset; integer images for float inputs are
    scaled by the model's preprocessing metadata, with a note.
    """
    ds = read_data(data, specs, meta, what, split, limit, seed)
    notes = _scaling_notes(ds, specs, meta, what)
    feeds, more = prepare_dataset(ds, specs, meta, what)
    return feeds, ds.labels, notes + more, ds.source or "in-memory dataset"


def read_data(data: str | os.PathLike[str] | Dataset, specs: Sequence[TensorSpecInfo],
              meta: ModelMetadata, what: str, split: str = "train", limit: int = 0,
              seed: int = 0) -> Dataset:
    """The raw data for a model (not yet preprocessed), as :func:`load_model_data` reads it:
    arrays named after the model's inputs (by position when the names differ), ``limit``
    samples at most (a seeded random subset; 0 = all)."""
    ds = _read(data, specs, meta, what, split, limit, seed)
    if limit and len(ds) > limit:
        ds = ds.select(subset_index(len(ds), limit, seed))
    return ds


def prepare_dataset(ds: Dataset, specs: Sequence[TensorSpecInfo], meta: ModelMetadata,
                    what: str = "data") -> tuple[dict[str, np.ndarray], list[str]]:
    """Model-ready feeds from raw data and notes (:func:`prepare_inputs`), each note naming
    ``what``."""
    feeds, notes = prepare_inputs(list(specs), ds, meta)
    return feeds, [f"{what}: {n}" for n in notes]


def _read(data: str | os.PathLike[str] | Dataset, specs: Sequence[TensorSpecInfo],
          meta: ModelMetadata, what: str, split: str, limit: int, seed: int) -> Dataset:
    """The data as a non-empty :class:`Dataset` with an array for every input name."""
    names = [s.name for s in specs]
    if isinstance(data, Dataset):
        ds = data
    elif isinstance(data, DataFile):
        ds = data.read(specs, meta, what, split, limit, seed)
    else:
        ds = _read_path(_existing(data, what), specs, meta, what, split, limit, seed)
    if not all(n in ds.inputs for n in names) and len(ds.inputs) == len(names):
        ds = Dataset(dict(zip(names, ds.inputs.values(), strict=True)), ds.labels, ds.source,
                     ds.outputs)
    missing = [n for n in names if n not in ds.inputs]
    if missing:
        raise DataError(f"{what} has no array for input(s) {missing}")
    if len(ds) == 0:
        raise DataError(f"{what} {ds.source} is empty (no samples)", hint="add samples")
    return ds


def _scaling_notes(ds: Dataset, specs: Sequence[TensorSpecInfo], meta: ModelMetadata,
                   what: str) -> list[str]:
    """Warnings for data whose scale does not match the model's preprocessing metadata."""
    notes: list[str] = []
    pre = meta.preprocessing
    for s in specs:
        a = ds.inputs[s.name]
        if np.issubdtype(np.dtype(s.dtype), np.floating) and np.issubdtype(a.dtype, np.integer):
            if pre is None or pre.is_identity:
                notes.append(f"{what}: {s.name} is {a.dtype} and the model has no preprocessing "
                             "metadata; values were used unscaled")
        elif (np.issubdtype(a.dtype, np.floating) and pre is not None and pre.kind == "image"
              and pre.scale < 1 and a.size and float(np.abs(a).max()) > 1.5):
            notes.append(f"{what}: {s.name} holds floats up to {float(np.abs(a).max()):.4g} but "
                         f"the model expects preprocessed inputs (scale {pre.scale:g}); "
                         "check that the data is scaled")
    return notes


def prepare_inputs(
    source_inputs: list[TensorSpecInfo], data: Dataset, meta: ModelMetadata
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Check ``data`` against the model's inputs and bring it to the model's dtypes.

    Data for a float input is preprocessed by the model's metadata where
    :meth:`edgekit.metadata.Preprocessing.applies_to` says so (integer images such as uint8;
    float data too when the metadata names no raw dtype: tabular standardisation), the rule
    :meth:`edgekit.runtime.EdgeModel.predict` follows; the notes returned say so. Data for a
    string input (dtype object) becomes an object array of ``str``. Wrong rank or fixed
    dimensions, text for a numeric input and anything but text for a string one raise
    DataError.
    """
    notes: list[str] = []
    feeds: dict[str, np.ndarray] = {}
    pre = meta.preprocessing
    for s in source_inputs:
        a = data.inputs[s.name]
        want = np.dtype(s.dtype)
        if want.kind != "O" and is_string_dtype(a.dtype):
            raise DataError(f"{data.source}: input {s.name!r} takes {want} numbers, got "
                            f"non-numeric data (text, {a.dtype})", hint="pass the model's "
                            "numeric inputs (text goes to a model whose input is a string, or "
                            "to predict() of a text model)")
        if a.ndim == len(s.shape) - 1 and len(s.shape) >= 3 and s.shape[-1] == 1:
            a = a[..., None]  # (N, H, W) images for an (N, H, W, 1) input
        if a.ndim != len(s.shape) or any(
            d is not None and d != g for d, g in zip(s.shape[1:], a.shape[1:], strict=True)
        ):
            raise DataError(
                f"{data.source}: input {s.name!r} has shape {a.shape}, the model expects "
                f"{format_shape(s.shape)}",
                hint="reshape the data to the model's input shape",
            )
        if want.kind == "O":  # a string input: text only
            a = as_text(s.name, a, data.source or "data")
        elif want.kind == "f" and pre is not None and pre.applies_to(a.dtype):
            notes.append(_preprocessed_note(s.name, a.dtype, pre))
            a = pre.apply(a, want)
        elif want.kind in "iu" and a.dtype.kind == "f":
            if not np.all(a == np.round(a)):
                raise DataError(f"{data.source}: input {s.name!r} needs integer ids, got floats")
            a = a.astype(want)
        else:
            a = a.astype(want, copy=False)
        feeds[s.name] = a
    return feeds, notes


def _preprocessed_note(name: str, raw: np.dtype[np.generic], pre: Preprocessing) -> str:
    if raw.kind == "f":
        return f"{name} standardised with the model's preprocessing metadata"
    return (f"{name}: {raw} data preprocessed with the model's metadata "
            f"(scale {pre.scale:g}{', standardised' if pre.mean else ''})")


def _read_path(p: Path, specs: Sequence[TensorSpecInfo], meta: ModelMetadata, what: str,
               split: str, limit: int, seed: int) -> Dataset:
    """The data of file or folder ``p`` (which exists), as :func:`read_data` describes."""
    if p.is_dir():
        return read_folder(p, specs, meta, what, split, limit, seed)
    if p.suffix.lower() in _TEXT_SUFFIXES:
        return _text_split(p, meta, split)
    # a regression's 'y' holds its targets, not class ids: not read as labels
    return load_dataset(p, [s.name for s in specs], what, scores_classes(meta.output_kinds))


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file {p} does not exist", hint="check the path")
    return p


class DataFile(os.PathLike[str]):
    """A data file or folder checked once and read at most once per split (an image folder:
    per subset, since it is decoded only as far as it is used), so that the stages sharing one
    ``--calibration`` file (export's validation, quantization, packaging) read it once.

    It is a path (``os.fspath``) wherever a path is taken; :func:`read_data` and
    :func:`load_model_data` read it through :meth:`read`. What it read stays in memory as
    long as it does.

    Raises:
        InputError: ``path`` does not exist (``what`` names it).
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "data") -> None:
        self.path = _existing(path, what)
        self.what = what
        self._layout: FolderLayout | None = None
        self._read: dict[tuple[object, ...], Dataset] = {}

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"DataFile({str(self.path)!r})"

    def read(self, specs: Sequence[TensorSpecInfo], meta: ModelMetadata, what: str,
             split: str = "train", limit: int = 0, seed: int = 0) -> Dataset:
        """The raw data as :func:`read_data` reads it before taking its ``limit`` subset:
        read on the first call for its split (image folders: its ``limit`` and ``seed``)."""
        key = self._key(what, split, limit, seed)
        if key not in self._read:
            role = what if what == self.what else f"{self.what} (as {what})"  # errors name both
            self._read[key] = _read_path(self.path, specs, meta, role, split, limit, seed)
        return self._read[key]

    def _key(self, what: str, split: str, limit: int, seed: int) -> tuple[object, ...]:
        """What the data read depends on: the split of IDX folders and text tables, the
        subset of image folders, nothing else (arrays, ONNX test data)."""
        if self.path.is_dir():
            self._layout = self._layout or folder_layout(self.path, what)
            if self._layout is FolderLayout.IMAGES:
                return (limit, seed)
            return (split,) if self._layout is FolderLayout.IDX else ()
        return (split,) if self.path.suffix.lower() in _TEXT_SUFFIXES else ()


def open_data(data: str | os.PathLike[str] | Dataset, what: str = "data") -> DataFile | Dataset:
    """``data`` to share between stages: a path as a :class:`DataFile` (checked now), a
    :class:`DataFile` or :class:`Dataset` as it is."""
    return data if isinstance(data, DataFile | Dataset) else DataFile(data, what)

