"""Model inputs and outputs (:class:`InputSpec`) and the metadata read straight from the file.

:func:`read_onnx_props` parses an ONNX file's ``metadata_props`` without the onnx package (or
any session), so the runtime can read a tuned model's stored settings before choosing an
engine. :class:`InputSpec` describes one input or output and does the checks of
:meth:`~edgekit.runtime.model.EdgeModel.run`.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgekit.errors import InputError, PredictionError

__all__ = ["InputSpec", "read_onnx_props", "ORT_DTYPES", "STRING_TYPE", "type_string",
           "NUMERIC_KINDS", "check_outputs_finite"]

#: onnxruntime type strings -> numpy dtypes.
ORT_DTYPES: dict[str, np.dtype[Any]] = {
    f"tensor({name})": np.dtype(np_name)
    for name, np_name in [
        ("float", "float32"), ("double", "float64"), ("float16", "float16"),
        ("int8", "int8"), ("int16", "int16"), ("int32", "int32"), ("int64", "int64"),
        ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"),
        ("bool", "bool"),
    ]
}  # fmt: skip
_TYPE_STRINGS = {dt: name for name, dt in ORT_DTYPES.items()}
#: onnxruntime's type string of string tensors: numpy arrays of Python ``str`` (dtype object)
#: or ``str`` arrays, which :meth:`InputSpec.check` passes as they are (``bytes`` decoded as
#: UTF-8; anything but text refused).
STRING_TYPE = "tensor(string)"
#: numpy dtype kinds accepted as model inputs (bool, int, uint, float).
NUMERIC_KINDS = frozenset("biuf")
_vdot = getattr(np.vdot, "_implementation", np.vdot)  # without the __array_function__ hop
_isfinite = math.isfinite


def check_outputs_finite(outputs: np.ndarray) -> None:
    """Raise :class:`PredictionError` when float ``outputs`` hold NaN or +-Inf: a result that
    is not a number must never be reported as one (``edgekit run`` exits 1, ``serve`` 422)."""
    if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
        bad = int((~np.isfinite(outputs)).sum())
        raise PredictionError(
            f"the model produced NaN or infinite outputs for these inputs ({bad} of "
            f"{outputs.size} values)",
            hint="check that the inputs are in the range the model was trained on "
            "(edgekit inspect shows its preprocessing); a float16 file can overflow where "
            "the fp32 or int8 file does not")


def type_string(dtype: Any) -> str:
    """The onnxruntime type string of a numpy dtype (``float32`` -> ``"tensor(float)"``)."""
    dt = np.dtype(dtype)
    return _TYPE_STRINGS.get(dt, f"tensor({dt.name})")


# ---------------------------------------------------------------------------------------------
# metadata without a session (ONNX protobuf, top-level fields only)
# ---------------------------------------------------------------------------------------------
def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def read_onnx_props(path: Path) -> dict[str, str] | None:
    """``metadata_props`` of an ONNX file, parsed without the onnx package (None on failure)."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            props: dict[str, str] = {}
            pos, end = 0, len(buf)
            while pos < end:
                tag, pos = _varint(buf, pos)
                wire = tag & 7
                if wire == 0:
                    _, pos = _varint(buf, pos)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                elif wire == 2:
                    n, pos = _varint(buf, pos)
                    if tag >> 3 == 14:  # ModelProto.metadata_props
                        k, v = _read_entry(buf[pos : pos + n])
                        props[k] = v
                    pos += n
                else:
                    return None
            return props if pos == end else None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _read_entry(b: bytes) -> tuple[str, str]:
    key = value = ""
    pos = 0
    while pos < len(b):
        tag, pos = _varint(b, pos)
        if tag & 7 != 2:
            raise ValueError("unexpected wire type")
        n, pos = _varint(b, pos)
        s = bytes(b[pos : pos + n]).decode()
        pos += n
        if tag >> 3 == 1:
            key = s
        elif tag >> 3 == 2:
            value = s
    return key, value


# ---------------------------------------------------------------------------------------------
# inputs and outputs
# ---------------------------------------------------------------------------------------------
class InputSpec:
    """One model input: name, numpy dtype, shape (None for dynamic dims), precomputed checks."""

    __slots__ = (
        "name", "type", "dtype", "shape", "ndim", "fixed", "is_float", "is_string", "tail_start",
        "tail", "head",
    )  # fmt: skip

    def __init__(self, name: str, type_str: str, shape: Sequence[object]) -> None:
        self.name = name
        self.type = type_str
        self.dtype: np.dtype[Any] | None = ORT_DTYPES.get(type_str)
        self.shape: tuple[int | None, ...] = tuple(
            d if isinstance(d, int) and d >= 0 else None for d in shape
        )
        self.ndim = len(self.shape)
        self.fixed: tuple[tuple[int, int], ...] = tuple(
            (i, d) for i, d in enumerate(self.shape) if d is not None
        )
        self.is_float = self.dtype is not None and self.dtype.kind == "f"
        self.is_string = type_str == STRING_TYPE
        # fast shape check: the fixed trailing dims compare as one tuple; fixed dims before
        # the last dynamic one ("head") take the slow path
        dyn = [i for i, d in enumerate(self.shape) if d is None]
        self.tail_start = dyn[-1] + 1 if dyn else 0
        self.tail: tuple[int | None, ...] = self.shape[self.tail_start :]
        self.head = any(d is not None for d in self.shape[: self.tail_start])

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "shape": list(self.shape)}

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name!r} ({self.type}, shape [{dims}])"

    def check(self, x: npt.ArrayLike) -> np.ndarray:
        """Return ``x`` as an array this input accepts (numeric, castable dtype, rank, fixed
        dims; text for a string input), or raise :class:`InputError`. Finiteness is
        :meth:`check_finite`'s job."""
        if type(x) is not np.ndarray or self.is_string:
            x = self._as_array(x)
        if x.dtype is not self.dtype and self.dtype is not None and x.dtype != self.dtype:
            x = self._cast(x)
        shape = x.shape
        if len(shape) != self.ndim or shape[self.tail_start :] != self.tail or self.head:
            self._check_dims(shape)
        return x

    def check_finite(self, x: np.ndarray) -> None:
        """Raise :class:`InputError` when float ``x`` holds NaN or +-Inf."""
        # x.x is NaN exactly when x holds a NaN (squares are >= 0, so no inf - inf) and +inf
        # when x holds an infinity (or squares overflow); one BLAS dot is several times cheaper
        # than np.isfinite(x).all() at these sizes, and only a non-finite dot looks closer.
        if not _isfinite(_vdot(x, x)):
            self._check_finite(x)

    def _check_finite(self, x: np.ndarray) -> None:
        hint = "send finite numbers, or load the model with check_nan=False to allow them"
        if np.isnan(x).any():
            raise InputError(f"input {self.name!r} contains NaN values", hint=hint)
        if np.isinf(x).any():
            raise InputError(
                f"input {self.name!r} contains infinite values (Infinity, or numbers too large "
                f"for {self.dtype})",
                hint=hint,
            )

    def _check_dims(self, shape: tuple[int, ...]) -> None:
        if len(shape) != self.ndim:
            raise InputError(
                f"input {self.name!r} needs rank {self.ndim} (shape {self._shape_str()}), "
                f"got rank {len(shape)} (shape {list(shape)})"
            )
        for axis, size in self.fixed:
            if shape[axis] != size:
                raise InputError(
                    f"input {self.name!r} needs size {size} on axis {axis} "
                    f"(shape {self._shape_str()}), got shape {list(shape)}"
                )

    def _shape_str(self) -> str:
        return "[" + ", ".join("N" if d is None else str(d) for d in self.shape) + "]"

    def _as_array(self, x: Any) -> np.ndarray:
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise InputError(f"input {self.name!r} is not a rectangular array: {exc}") from exc
        if self.is_string:
            return self._as_text(x)
        if x.dtype.kind not in NUMERIC_KINDS:
            raise InputError(
                f"input {self.name!r} must be numeric, got {x.dtype} data",
                hint="pass numbers (text goes to predict() of a text model)",
            )
        return x

    def _as_text(self, x: np.ndarray) -> np.ndarray:
        """``x`` for a string input: a ``str`` array as it is, ``bytes`` decoded as UTF-8,
        an object array whose every element is text; anything else refused."""
        hint = "pass text: str values, e.g. np.asarray(['a', 'b'], dtype=str)"
        if x.dtype.kind == "U":
            return x
        if x.dtype.kind not in "SO":
            raise InputError(f"input {self.name!r} takes text (a string tensor), got "
                             f"{x.dtype} data", hint=hint)
        out = np.empty(x.shape, object)
        flat = out.reshape(-1)
        for i, v in enumerate(x.reshape(-1)):
            if isinstance(v, bytes):  # np.bytes_ too
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"input {self.name!r}: element {i} is not UTF-8 text "
                                     f"({exc})", hint=hint) from exc
            if not isinstance(v, str):
                raise InputError(f"input {self.name!r} takes text (a string tensor), element "
                                 f"{i} is {type(v).__name__}", hint=hint)
            flat[i] = v
        return out

    def _cast(self, x: np.ndarray) -> np.ndarray:
        want = self.dtype
        assert want is not None
        kind, wkind = x.dtype.kind, want.kind
        if kind not in NUMERIC_KINDS:
            raise InputError(f"input {self.name!r} must be numeric, got {x.dtype} data")
        if kind == "f" and wkind == "f":
            with np.errstate(over="ignore"):  # overflow -> inf, refused by the finite check
                return x.astype(want)
        if kind in "iu" and wkind in "iu":
            info = np.iinfo(want)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise InputError(
                    f"input {self.name!r} has values outside the {want} range "
                    f"[{info.min}, {info.max}]"
                )
            return x.astype(want)
        hint = "use predict() to apply the model's preprocessing" if kind in "iub" else None
        raise InputError(
            f"input {self.name!r} needs {want} data, got {x.dtype} (no safe automatic cast)",
            hint=hint or f"convert the data to {want} first",
        )

