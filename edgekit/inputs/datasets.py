"""Data loaders for the training recipes: IDX gz (MNIST / Fashion-MNIST), ``mnist.npz``, CSV, text.

Pure Python + numpy. Every user mistake (missing path, truncated or foreign file, missing
label column, empty file) raises :class:`~edgekit.errors.InputError` or
:class:`~edgekit.errors.DataError` with a hint, never a bare traceback.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import DataError, InputError

__all__ = [
    "FASHION_MNIST_LABELS",
    "MNIST_LABELS",
    "BREAST_CANCER_LABELS",
    "DATA_HINT_IMAGES",
    "DataSplit",
    "holdout_split",
    "split_text_table",
    "ImageData",
    "TabularData",
    "TextData",
    "read_idx",
    "load_image_data",
    "load_csv",
    "load_breast_cancer",
    "load_text_table",
]

FASHION_MNIST_LABELS: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_LABELS: list[str] = [str(i) for i in range(10)]
BREAST_CANCER_LABELS: list[str] = ["malignant", "benign"]  # scikit-learn's target order

DATA_HINT_IMAGES = (
    "pass --data ../shared/data/fashion-mnist (a folder of MNIST-format IDX gz files), "
    "install Debian's dataset-fashion-mnist package and pass "
    "--data /usr/share/datasets/fashion-mnist, or pass a Keras-style mnist.npz"
)

_IDX_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_FILES = {
    "train_x": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_y": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_x": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_y": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


@dataclass
class DataSplit:
    """Raw training and test data with class names (numpy arrays; texts as object arrays of
    str). Image loaders return uint8 ``(N, 28, 28, 1)`` images (alias :data:`ImageData`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    source: str = ""


ImageData = DataSplit


@dataclass
class TabularData:
    """Raw float32 features ``(N, F)`` and int class ids ``(N,)`` (indices into ``labels``)."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    feature_names: list[str] = field(default_factory=list)
    source: str = ""


@dataclass
class TextData:
    """Raw texts and int class ids (indices into ``labels``, sorted label names)."""

    texts: list[str]
    y: np.ndarray
    labels: list[str]
    source: str = ""


def _require_file(path: str | os.PathLike[str], what: str = "data file") -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist", hint="check the --data path")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"{what} {p} is empty", hint="pass a non-empty file")
    return p


# -- IDX ---------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array."""
    p = _require_file(path, "IDX file")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an IDX file")
    bad = DataError(
        f"{p} is truncated or not an IDX file",
        hint="download the file again (MNIST-format IDX, e.g. train-images-idx3-ubyte.gz)",
    )
    try:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise bad from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise bad
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise bad
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def _find_idx(folder: Path, key: str) -> Path:
    for stem in _IDX_FILES[key]:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise InputError(
        f"{folder} has no {_IDX_FILES[key][0]}.gz",
        hint="the folder needs the four MNIST-format files (train/t10k images and labels)",
    )


def _guess_labels(path: Path, n_classes: int) -> list[str]:
    if "fashion" in str(path).lower() and n_classes <= 10:
        return list(FASHION_MNIST_LABELS)
    return [str(i) for i in range(max(n_classes, 10))]


def _as_images(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] != 1:
        raise DataError(f"{what} has shape {x.shape}, expected (N, H, W) grey images")
    if x.shape[0] == 0:
        raise DataError(f"{what} holds no images")
    return np.ascontiguousarray(x.astype(np.uint8, copy=False))


def _check_pair(x: np.ndarray, y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(y) != len(x):
        raise DataError(f"{what}: {len(x)} images but {len(y)} labels")
    return y


def _load_npz_images(p: Path, labels: list[str] | None) -> ImageData:
    from edgekit.inputs.data import read_arrays

    arrays = read_arrays(p, "image data")
    need = ["x_train", "y_train", "x_test", "y_test"]
    missing = [k for k in need if k not in arrays]
    if missing:
        raise DataError(
            f"{p} lacks {', '.join(missing)} (has {', '.join(sorted(arrays)) or 'nothing'})",
            hint="a Keras-style mnist.npz has x_train, y_train, x_test, y_test",
        )
    x_tr = _as_images(arrays["x_train"], f"{p}:x_train")
    x_te = _as_images(arrays["x_test"], f"{p}:x_test")
    y_tr = _check_pair(x_tr, arrays["y_train"], str(p))
    y_te = _check_pair(x_te, arrays["y_test"], str(p))
    n = int(max(y_tr.max(), y_te.max())) + 1
    return ImageData(x_tr, y_tr, x_te, y_te, labels or _guess_labels(p, n), str(p))


def _load_keras_dataset(labels: list[str] | None) -> ImageData:
    from edgekit.errors import require

    keras = require("keras", "export", "tensorflow-cpu")
    try:
        (x_tr, y_tr), (x_te, y_te) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"no --data given and Fashion-MNIST could not be downloaded ({type(exc).__name__})",
            hint=DATA_HINT_IMAGES,
        ) from exc
    x_tr, x_te = _as_images(x_tr, "x_train"), _as_images(x_te, "x_test")
    return ImageData(
        x_tr,
        _check_pair(x_tr, y_tr, "train"),
        x_te,
        _check_pair(x_te, y_te, "test"),
        labels or list(FASHION_MNIST_LABELS),
        "keras.datasets.fashion_mnist",
    )


def load_image_data(
    path: str | os.PathLike[str] | None = None, labels: list[str] | None = None
) -> ImageData:
    """Load MNIST-format images.

    Args:
        path: a folder of IDX (gz) files, a Keras-style ``mnist.npz``, or None (default) to
            download Fashion-MNIST through ``keras.datasets`` (needs internet).
        labels: class names; default Fashion-MNIST names when the path mentions "fashion",
            else the digits "0".."9".
    """
    if path is None:
        return _load_keras_dataset(labels)
    p = _require_file(path, "image data")
    if p.is_file():
        if p.suffix != ".npz":
            raise InputError(
                f"{p} is neither a folder of IDX files nor a .npz file", hint=DATA_HINT_IMAGES
            )
        return _load_npz_images(p, labels)
    arrays = {k: read_idx(_find_idx(p, k)) for k in _IDX_FILES}
    x_tr = _as_images(arrays["train_x"], "training images")
    x_te = _as_images(arrays["test_x"], "test images")
    y_tr = _check_pair(x_tr, arrays["train_y"], "training set")
    y_te = _check_pair(x_te, arrays["test_y"], "test set")
    n = int(max(y_tr.max(), y_te.max())) + 1
    return ImageData(x_tr, y_tr, x_te, y_te, labels or _guess_labels(p, n), str(p))


# -- CSV -----------------------------------------------------------------------------------------
def _read_text(p: Path) -> str:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p} is not UTF-8 text ({exc.reason})") from exc
    if not text.strip():
        raise DataError(f"{p} is empty", hint="pass a file with a header line and data rows")
    return text


def _encode_labels(
    values: list[str], labels: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Map label strings to ids; integer-looking labels sort numerically, others by name."""
    names = labels or sorted(set(values), key=lambda s: (not s.lstrip("-").isdigit(), _num(s), s))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataError(f"unknown labels {unknown[:5]} (known: {names})")
    return np.asarray([index[v] for v in values], dtype=np.int64), list(names)


def _num(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        return 0


def load_csv(path: str | os.PathLike[str], label: str) -> TabularData:
    """Load a CSV with a header line; ``label`` names the class column, the rest are features."""
    p = _require_file(path, "CSV file")
    if p.is_dir():
        raise InputError(f"{p} is a folder, expected a CSV file")
    text = _read_text(p)
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    header, body = [c.strip() for c in rows[0]], rows[1:]
    if label not in header:
        raise DataError(
            f"{p} has no column {label!r}; columns: {', '.join(header)}",
            hint="pass --label with one of the columns above",
        )
    if not body:
        raise DataError(f"{p} has a header but no data rows")
    li = header.index(label)
    feats = [i for i in range(len(header)) if i != li]
    if not feats:
        raise DataError(f"{p} has no feature columns besides {label!r}")
    x = np.empty((len(body), len(feats)), dtype=np.float32)
    ys: list[str] = []
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{p}, line {r}: {len(row)} fields, header has {len(header)}")
        try:
            x[r - 2] = [float(row[i]) for i in feats]
        except ValueError as exc:
            raise DataError(f"{p}, line {r}: non-numeric feature ({exc})") from exc
        ys.append(row[li].strip())
    if not np.isfinite(x).all():
        raise DataError(f"{p} has NaN or infinite feature values")
    y, names = _encode_labels(ys)
    if len(names) < 2:
        raise DataError(f"{p}: column {label!r} has a single class {names}")
    return TabularData(x, y, names, [header[i] for i in feats], str(p))


def load_breast_cancer() -> TabularData:
    """scikit-learn's breast-cancer set (569 rows, 30 features; 0=malignant, 1=benign)."""
    from edgekit.errors import require

    sk = require("sklearn.datasets", "export", "scikit-learn")
    d = sk.load_breast_cancer()
    return TabularData(
        np.asarray(d.data, dtype=np.float32),
        np.asarray(d.target, dtype=np.int64),
        [str(n) for n in d.target_names],
        [str(n) for n in d.feature_names],
        "sklearn.datasets.load_breast_cancer",
    )


# -- text ----------------------------------------------------------------------------------------
_HEADER_NAMES = {"label", "labels", "class", "category", "target", "y", "v1"}


def load_text_table(path: str | os.PathLike[str]) -> TextData:
    """Load ``label<sep>text`` rows from a TSV (tab) or CSV (comma) file.

    The separator is a tab for ``.tsv``/``.txt`` files and when the first line holds a tab,
    else a comma. A first line whose label field is a column name (``label``, ``class`` ...)
    is skipped as a header. Only the first separator splits a line, so texts may hold it.
    """
    p = _require_file(path, "text data")
    if p.is_dir():
        raise InputError(f"{p} is a folder, expected a TSV/CSV file of label and text")
    text = _read_text(p)
    first = text.split("\n", 1)[0]
    sep = "\t" if (p.suffix.lower() in (".tsv", ".txt") or "\t" in first) else ","
    if sep == "\t":
        lines = text.split("\n")
        rows = [ln.rstrip("\r").split("\t", 1) for ln in lines if ln.strip()]
    else:
        rows = [
            r[:1] + [",".join(r[1:])] if len(r) > 2 else r
            for r in csv.reader(io.StringIO(text))
            if r
        ]
    if rows and rows[0][0].strip().lower() in _HEADER_NAMES:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{p} has no data rows")
    bad = [i for i, r in enumerate(rows) if len(r) != 2]
    if bad:
        raise DataError(
            f"{p}: {len(bad)} rows lack a {'tab' if sep == chr(9) else 'comma'} "
            f"between label and text (first at data row {bad[0] + 1})",
            hint="each line must be: label, separator, text",
        )
    y, names = _encode_labels([r[0].strip() for r in rows])
    if len(names) < 2:
        raise DataError(f"{p} has a single class {names}")
    return TextData([r[1] for r in rows], y, names, str(p))


def holdout_split(
    x: np.ndarray, y: np.ndarray, labels: list[str], fraction: float, seed: int, source: str = ""
) -> DataSplit:
    """Stratified train/test split of one table (scikit-learn's ``train_test_split``).

    Falls back to a plain shuffled split when the data is too small to stratify.
    """
    from edgekit.errors import require

    ms = require("sklearn.model_selection", "export", "scikit-learn")
    n_test = int(np.ceil(fraction * len(y)))
    if n_test < 1 or len(y) - n_test < 1:
        raise DataError(f"{len(y)} examples are too few to hold out {fraction:g} of them")
    counts = np.bincount(y)
    stratify = counts[counts > 0].min() >= 2 and n_test >= int((counts > 0).sum())
    x_tr, x_te, y_tr, y_te = ms.train_test_split(
        x, y, test_size=fraction, random_state=seed, stratify=y if stratify else None
    )
    return DataSplit(x_tr, y_tr, x_te, y_te, labels, source)


def split_text_table(path: str | os.PathLike[str], split: str = "train", test_split: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Texts (object array) and labels of one side (``"train"``/``"test"``) of a label/text
    table, split as the text recipe splits it (stratified, ``test_split`` held out, ``seed``)."""
    d = load_text_table(path)
    s = holdout_split(np.asarray(d.texts, dtype=object), d.y, d.labels, test_split, seed, d.source)
    return (s.x_train, s.y_train) if split == "train" else (s.x_test, s.y_test)
