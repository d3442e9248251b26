"""Data folders in the layouts people already have, told apart by what they hold.

- **IDX**: MNIST-format IDX gz files (``train-images-idx3-ubyte.gz`` ...): a train and a test
  split (:func:`edgekit.inputs.datasets.load_image_data`).
- **ONNX test data**: the ONNX model zoo's ``test_data_set_N/input_M.pb`` folders (what
  onnxruntime's ``static_quantize_runner`` reads): one ``test_data_set_N`` folder, or a folder
  holding several. Each ``input_M.pb`` is an ``onnx.TensorProto`` for the model's M-th input
  (by its name when every tensor names a model input), read with ``onnx.load_tensor`` and
  ``onnx.numpy_helper``; the sets are concatenated along the batch axis (a set without a batch
  axis is one sample). Optional ``output_M.pb`` files are read as reference outputs
  (:attr:`~edgekit.inputs.data.Dataset.outputs`).
- **Images**: image files, either in class sub-folders (Keras' ``image_dataset_from_directory``
  convention: the sorted names of the non-hidden sub-folders are the label ids 0, 1, ...; files
  are found recursively) or all at the top level (no labels). Each image is read by
  :func:`edgekit.inputs.images.load_image`, as ``edgekit run`` reads it: resized and greyscaled
  per the model's preprocessing metadata, else to the model input's fixed height, width and
  channels.

Neither the ONNX nor the image layout has splits: every split is the whole folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np

from edgekit.errors import DataError, InputError
from edgekit.inputs.data import Dataset, TensorSpecInfo, check_finite, format_shape
from edgekit.inputs.images import IMAGE_SUFFIXES, load_image
from edgekit.metadata import ModelMetadata, Preprocessing

__all__ = ["FolderLayout", "LAYOUTS_HINT", "folder_layout", "has_splits", "read_folder",
           "read_onnx_test_data", "read_image_folder", "subset_index"]

#: what a data folder may hold (the hint of every folder error)
LAYOUTS_HINT = ("a data folder holds MNIST-format IDX gz files, test_data_set_N folders of "
                "input_M.pb tensors (the ONNX model-zoo layout), or image files (in class "
                "sub-folders for labels)")
_TEST_SET = re.compile(r"test_data_set_(\d+)")
_TENSOR_FILE = re.compile(r"(input|output)_(\d+)\.pb")


class FolderLayout(StrEnum):
    """The layouts a data folder may have (see the module doc)."""

    IDX = "idx"
    ONNX_TEST_DATA = "onnx-test-data"
    IMAGES = "images"


def _visible(entries: Sequence[Path]) -> list[Path]:
    return sorted(e for e in entries if not e.name.startswith("."))


def _test_sets(folder: Path) -> list[Path]:
    """The ``test_data_set_N`` folders of ``folder`` (itself when it is one), by N."""
    if _TEST_SET.fullmatch(folder.name):
        return [folder]
    sets = [d for d in folder.iterdir() if d.is_dir() and _TEST_SET.fullmatch(d.name)]
    return sorted(sets, key=lambda d: int(d.name.rsplit("_", 1)[1]))


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def folder_layout(folder: Path, what: str = "data") -> FolderLayout:
    """The layout of ``folder``; :class:`DataError` (with :data:`LAYOUTS_HINT`) for an empty
    folder or one that holds none of them."""
    entries = _visible(list(folder.iterdir()))
    if not any(e.is_file() or any(f.is_file() for f in e.rglob("*")) for e in entries):
        raise DataError(f"{what} folder {folder} is empty (no samples)", hint=LAYOUTS_HINT)
    if any(re.search(r"idx\d-ubyte", e.name) for e in entries if e.is_file()):
        return FolderLayout.IDX
    if _test_sets(folder):
        return FolderLayout.ONNX_TEST_DATA
    if any(_is_image(e) for e in entries) or any(
            _is_image(f) for d in entries if d.is_dir() for f in d.rglob("*")):
        return FolderLayout.IMAGES
    names = ", ".join(e.name for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise DataError(f"{what} folder {folder} holds no data edgekit reads ({names})",
                    hint=LAYOUTS_HINT)


def has_splits(data: object) -> bool:
    """True when ``data`` is a folder with a train and a test split (IDX files)."""
    if not isinstance(data, str | os.PathLike) or not Path(data).is_dir():
        return False
    try:
        return folder_layout(Path(data)) is FolderLayout.IDX
    except DataError:
        return False


def subset_index(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``limit`` of ``n`` samples (all when
    ``limit`` is 0 or not below ``n``): the one sampling rule of the input pipeline."""
    if not limit or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def read_folder(folder: Path, specs: Sequence[TensorSpecInfo], meta: ModelMetadata, what: str,
                split: str = "train", limit: int = 0, seed: int = 0) -> Dataset:
    """The data of a folder in any layout of the module doc (IDX: its ``split``); ``limit``
    and ``seed`` select images before they are decoded (:func:`subset_index`)."""
    layout = folder_layout(folder, what)
    if layout is FolderLayout.ONNX_TEST_DATA:
        return read_onnx_test_data(folder, specs, what)
    if layout is FolderLayout.IMAGES:
        return read_image_folder(folder, specs, meta, what, limit, seed)
    from edgekit.inputs.datasets import load_image_data

    img = load_image_data(folder)
    x, y = (img.x_train, img.y_train) if split == "train" else (img.x_test, img.y_test)
    return Dataset({specs[0].name: x}, y, f"{folder} ({split} split)")


# -- ONNX test data ------------------------------------------------------------------------------
def _load_tensor(path: Path, what: str) -> tuple[str, np.ndarray]:
    """One ``onnx.TensorProto`` file: its name and its values (onnx's own reader)."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        tensor = onnx.load_tensor(str(path))
        if tensor.data_type == onnx.TensorProto.UNDEFINED:
            raise ValueError("no tensor type")
        a = numpy_helper.to_array(tensor, base_dir=str(path.parent))
    except (DecodeError, ValueError, TypeError, KeyError, OSError) as exc:
        raise DataError(f"{what}: {path} is not a readable ONNX TensorProto ({exc})",
                        hint="write each tensor with onnx.numpy_helper.from_array(a)"
                        ".SerializeToString()") from exc
    if a.dtype.kind not in "biuf":
        kind = onnx.helper.tensor_dtype_to_string(tensor.data_type).removeprefix("TensorProto.")
        raise DataError(f"{what}: {path} holds {kind} values, not numbers",
                        hint="input_M.pb files hold the model's M-th input as numbers")
    return tensor.name, np.asarray(a)


def _tensor_files(folder: Path, kind: str) -> dict[int, Path]:
    found = {}
    for f in folder.iterdir():
        m = _TENSOR_FILE.fullmatch(f.name)
        if m and m.group(1) == kind:
            found[int(m.group(2))] = f
    return found


def _set_inputs(folder: Path, specs: Sequence[TensorSpecInfo],
                what: str) -> dict[str, tuple[Path, np.ndarray]]:
    """The input files of one test set and their values, by model input name (by tensor name
    when every tensor names a model input, else input_M.pb is the M-th input)."""
    files = _tensor_files(folder, "input")
    names = [s.name for s in specs]
    missing = [f"input_{i}.pb" for i in range(len(specs)) if i not in files]
    if missing or len(files) != len(specs):
        have = ", ".join(f.name for _, f in sorted(files.items())) or "no input_M.pb file"
        raise DataError(
            f"{what}: {folder} has {have} but the model has {len(specs)} input(s) {names}"
            + (f" (missing {', '.join(missing)})" if missing else ""),
            hint="a test_data_set_N folder holds input_0.pb .. input_K.pb, one ONNX "
            "TensorProto per model input, in the model's input order")
    loaded = [(files[i], *_load_tensor(files[i], what)) for i in range(len(specs))]
    by_name = sorted(t for _, t, _ in loaded) == sorted(names)
    return {t if by_name else n: (f, a) for n, (f, t, a) in zip(names, loaded, strict=True)}


def _batched(a: np.ndarray, spec: TensorSpecInfo, path: str, what: str) -> np.ndarray:
    """``a`` with a batch axis (a tensor one rank short of the input is one sample)."""
    if a.ndim == len(spec.shape):
        return a
    if a.ndim == len(spec.shape) - 1:
        return a[None]
    raise DataError(f"{what}: {path} has shape {a.shape}; the model's input {spec.name!r} "
                    f"expects {format_shape(spec.shape)}",
                    hint="each input_M.pb holds a batch (or one sample) of the M-th input")


def _check_kind(a: np.ndarray, spec: TensorSpecInfo, path: str, what: str) -> None:
    want = np.dtype(spec.dtype)
    if want.kind in "biu" and a.dtype.kind == "f":
        raise DataError(f"{what}: {path} holds {a.dtype} values but the model's input "
                        f"{spec.name!r} is {want}",
                        hint=f"write the tensor as {want} (the model's input type)")


def read_onnx_test_data(folder: Path, specs: Sequence[TensorSpecInfo],
                        what: str = "data") -> Dataset:
    """The ``test_data_set_N`` folder(s) at ``folder`` (see the module doc) as one dataset."""
    sets = _test_sets(folder)
    per_name: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    outputs: dict[str, list[np.ndarray]] = {}
    counts = []
    for d in sets:
        arrays = _set_inputs(d, specs, what)
        sizes = set()
        for s in specs:
            f, a = arrays[s.name]
            a = _batched(a, s, str(f), what)
            _check_kind(a, s, str(f), what)
            check_finite(s.name, a, f"{what} {d}")
            per_name[s.name].append(a)
            sizes.add(len(a))
        if len(sizes) != 1:
            raise DataError(f"{what}: the inputs of {d} have different batch sizes {sorted(sizes)}")
        counts.append(sizes.pop())
        for i, f in sorted(_tensor_files(d, "output").items()):
            outputs.setdefault(f"output_{i}", []).append(_load_tensor(f, what)[1])
    inputs = {}
    for s in specs:
        shapes = {a.shape[1:] for a in per_name[s.name]}
        if len(shapes) > 1:
            raise DataError(f"{what}: input {s.name!r} has different shapes across "
                            f"{folder}'s test sets {sorted(shapes)}",
                            hint="every test set of one data set needs the same input shapes")
        inputs[s.name] = np.concatenate(per_name[s.name])
    refs = _reference_outputs(outputs, len(sets), sum(counts))
    desc = f"{folder} ({len(sets)} ONNX test set{'s' if len(sets) != 1 else ''})"
    return Dataset(inputs, None, desc, refs)


def _reference_outputs(outputs: dict[str, list[np.ndarray]], n_sets: int,
                       n: int) -> dict[str, np.ndarray] | None:
    """The sets' output_M.pb tensors, concatenated, when every set has them and they line up
    with the samples (else None: they are optional)."""
    try:
        refs = {k: np.concatenate(v) for k, v in outputs.items() if len(v) == n_sets}
    except ValueError:  # different shapes across sets: not usable as one reference
        return None
    return {k: v for k, v in refs.items() if v.ndim and len(v) == n} or None


# -- images --------------------------------------------------------------------------------------
def _image_files(folder: Path, what: str) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """Image paths, their labels (None without class folders) and the class names."""
    classes = [d for d in _visible(list(folder.iterdir())) if d.is_dir()]
    top = [f for f in _visible(list(folder.iterdir())) if _is_image(f)]
    if classes and top:
        raise DataError(f"{what} folder {folder} holds images both at its top level "
                        f"({top[0].name} ...) and in sub-folders ({classes[0].name} ...)",
                        hint="put every image in a class folder (labels from the sorted folder "
                        "names) or all at the top level (no labels)")
    if not classes:
        return top, None, []
    files: list[Path] = []
    labels: list[int] = []
    for i, d in enumerate(classes):
        found = sorted(f for f in d.rglob("*") if _is_image(f)
                       and not any(p.startswith(".") for p in f.relative_to(d).parts))
        files += found
        labels += [i] * len(found)
    return files, np.asarray(labels, np.int64), [d.name for d in classes]


def _image_preprocessing(spec: TensorSpecInfo, meta: ModelMetadata, what: str) -> Preprocessing:
    """The model's preprocessing, its size and colour filled in from the input's shape."""
    pre = meta.preprocessing or Preprocessing(kind="image")
    shape = spec.shape
    if len(shape) not in (3, 4):
        raise DataError(f"{what}: an image folder needs an image input, but {spec.name!r} has "
                        f"shape {format_shape(shape)}",
                        hint="pass arrays (.npz) or ONNX test data for this model")
    nchw = pre.layout.upper() == "NCHW" and len(shape) == 4
    h, w = shape[2:4] if nchw else shape[1:3]
    channels = (shape[1] if nchw else shape[3]) if len(shape) == 4 else 1
    size = pre.image_size or ([h, w] if h and w else None)
    color = pre.color or {1: "grayscale", 3: "rgb"}.get(channels or 0)
    return dataclasses.replace(pre, image_size=size, color=color)


def read_image_folder(folder: Path, specs: Sequence[TensorSpecInfo], meta: ModelMetadata,
                      what: str = "data", limit: int = 0, seed: int = 0) -> Dataset:
    """The images under ``folder`` (see the module doc) as uint8 arrays for a single-input
    image model; ``limit`` of them at most (:func:`subset_index`, before decoding)."""
    if len(specs) != 1:
        raise DataError(f"{what}: an image folder fits a model with one input; this one has "
                        f"{[s.name for s in specs]}",
                        hint="pass an .npz with an array per input, or ONNX test data")
    files, labels, classes = _image_files(folder, what)
    if not files:
        raise DataError(f"{what} folder {folder} is empty (no images in "
                        f"{', '.join(classes) or 'it'})", hint=LAYOUTS_HINT)
    idx = subset_index(len(files), limit, seed)
    pre = _image_preprocessing(specs[0], meta, what)
    images = []
    for i in idx:
        try:
            images.append(load_image(files[i], pre))
        except InputError as exc:
            raise DataError(f"{what}: {exc.message}", hint=exc.hint or "remove or replace that "
                            "file: every file with an image suffix in the folder is read") from exc
    shapes = sorted({a.shape for a in images})
    if len(shapes) > 1:
        raise DataError(f"{what}: the images in {folder} have different sizes {shapes[:3]} and "
                        "the model's input has no fixed size",
                        hint="resize the images to one size, or store image_size in the "
                        "model's preprocessing metadata")
    desc = (f"{folder} ({len(files)} images in {len(classes)} class folders)" if classes
            else f"{folder} ({len(files)} images, no labels)")
    return Dataset({specs[0].name: np.stack(images)},
                   None if labels is None else labels[idx], desc)
