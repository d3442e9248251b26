"""Input signatures of Keras models: the inputs edgekit traces, converts and validates a model
with, and the structure Keras expects them in.

A functional model's inputs are its ``keras.Input`` tensors, passed back in the structure they
were declared in (a dict of mixed dtypes keyed by input names, a list, a nesting of both, or a
single tensor). A subclassed model has no inputs of its own: its signature is the user's
explicit :class:`InputSpec` list (``--input-spec``), else the shapes Keras recorded when the
model was built by its first call, else one sample of the validation/calibration data; each
leaf becomes one ONNX input named like the Keras input (or the dict key, or the array).

A subclassed model whose ``call`` takes several tensors (``call(self, x, y)``) is called with
them as separate positional arguments, in the call's order: Keras records one build shape per
argument (``build(self, x_shape, y_shape)``, in whatever order ``build`` names them), and
specs or data arrays named after the arguments select this call too. Each argument becomes
one ONNX input named after it. String inputs (``dtype="string"``) have the numpy dtype
``object`` (:data:`~edgekit.inputs.data.STRING_DTYPE`), as onnxruntime takes them.

Keras and TensorFlow are imported inside the functions (the ``export`` extra).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import numpy as np

from edgekit.errors import InputError
from edgekit.inputs.data import (
    LABELS,
    STRING_DTYPE,
    Dataset,
    TensorSpecInfo,
    format_shape,
    is_string_dtype,
    read_arrays,
)

__all__ = ["InputSpec", "InputTree", "KerasInputs", "SignatureData", "call_arguments",
           "framework_dtype", "keras_inputs", "leaf_names", "pack"]

#: where each input goes in the model's call: an input name, or a dict / list of such trees
InputTree: TypeAlias = str | dict[str, "InputTree"] | list["InputTree"]

#: the data a subclassed model's signature may be read from (one sample of it)
SignatureData = str | os.PathLike[str] | Dataset

T = TypeVar("T")

_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
           "uint16", "uint32", "uint64", "bool", "string")
_DYNAMIC = ("none", "?", "-1", "n")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class InputSpec:
    """One model input given explicitly (``--input-spec NAME:SHAPE:DTYPE``).

    Attributes:
        name: the input's name (the ONNX input name; a dict key where the model takes a dict).
        shape: the full shape, batch first; None = dynamic. The batch is always dynamic.
        dtype: a numpy dtype name (default ``float32``), or ``string`` for text.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise InputError(f"input spec name {self.name!r} is not a valid input name",
                             hint="use letters, digits, '_', '.' or '-', e.g. x:None,28,28,1")
        if not self.shape or self.shape[0] is not None:
            raise InputError(
                f"input spec {self.name!r}: shape {self.shape} must start with the batch "
                "dimension, which is dynamic (None)", hint="e.g. x:None,28,28,1:float32")
        if any(d is not None and (not isinstance(d, int) or d < 1) for d in self.shape):
            raise InputError(f"input spec {self.name!r}: dimensions must be positive "
                             f"integers or None, got {self.shape}")
        if self.dtype not in _DTYPES:
            raise InputError(f"input spec {self.name!r}: dtype {self.dtype!r} is not one of "
                             f"{', '.join(_DTYPES)}")

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """``NAME:SHAPE[:DTYPE]``, SHAPE comma-separated with ``None`` for dynamic dimensions,
        batch first: ``x:None,28,28,1:float32``, ``ids:None,16:int32``."""
        parts = text.strip().split(":")
        if len(parts) not in (2, 3) or not parts[1].strip():
            raise InputError(f"input spec {text!r} is not NAME:SHAPE[:DTYPE]",
                             hint="e.g. --input-spec x:None,28,28,1:float32")
        return cls(parts[0].strip(), tuple(_dim(d, text) for d in parts[1].split(",")),
                   parts[2].strip() if len(parts) == 3 else "float32")

    def info(self) -> TensorSpecInfo:
        """The spec as the :class:`TensorSpecInfo` of a model input."""
        return TensorSpecInfo(self.name, self.shape,
                              STRING_DTYPE if self.dtype == "string" else self.dtype)


def _dim(text: str, spec: str) -> int | None:
    d = text.strip()
    if d.lower() in _DYNAMIC:
        return None
    try:
        return int(d)
    except ValueError:
        raise InputError(f"input spec {spec!r}: dimension {d!r} is not an integer or None",
                         hint="e.g. --input-spec x:None,28,28,1:float32") from None


@dataclass
class KerasInputs:
    """A model's inputs (flat, in ONNX order) and the ``tree`` they are called in.

    ``arguments``: empty when the model takes ``tree`` as its one call argument; else the
    names of its call's separate arguments, in order, and ``tree`` is ``{argument: subtree}``.
    """

    specs: list[TensorSpecInfo]
    tree: InputTree
    arguments: tuple[str, ...] = ()


def framework_dtype(dtype: str) -> str:
    """A :class:`TensorSpecInfo` dtype as TensorFlow and Keras name it (``string`` for text)."""
    return "string" if is_string_dtype(dtype) else dtype


def call_arguments(inputs: KerasInputs, values: Mapping[str, T]) -> list[object]:
    """The model's positional call arguments for ``values`` (by input name)."""
    tree = inputs.tree
    if not inputs.arguments:
        return [pack(tree, values)]
    assert isinstance(tree, dict)
    return [pack(tree[a], values) for a in inputs.arguments]


def pack(tree: InputTree, values: Mapping[str, T]) -> T | dict[str, object] | list[object]:
    """``tree`` with each input name replaced by ``values[name]``: the model's call argument."""
    if isinstance(tree, str):
        return values[tree]
    if isinstance(tree, dict):
        return {k: pack(v, values) for k, v in tree.items()}
    return [pack(v, values) for v in tree]


def leaf_names(tree: InputTree) -> list[str]:
    """The input names of ``tree`` in order (depth first; dict keys as inserted)."""
    if isinstance(tree, str):
        return [tree]
    items = tree.values() if isinstance(tree, dict) else tree
    return [n for sub in items for n in leaf_names(sub)]


def keras_inputs(model: Any, name: str, explicit: Sequence[InputSpec] | None,
                 data: SignatureData | None) -> KerasInputs:
    """The inputs of Keras ``model`` (called ``name`` in messages), as this module says.

    Raises:
        InputError: the explicit specs do not fit a functional model's inputs, or a subclassed
            model has no signature from any source.
    """
    declared = _declared_inputs(model)
    if declared is not None:
        return declared if not explicit else _overridden(declared, explicit, name)
    params = _call_parameters(model)
    if explicit:
        by_name = {s.name: s.info() for s in explicit}
        order = _as_arguments(params, list(by_name))
        if order:
            return KerasInputs([by_name[n] for n in order], {n: n for n in order}, tuple(order))
        return KerasInputs(list(by_name.values()), _tree_like(_recorded(model), list(by_name)))
    found = (_from_argument_shapes(model, name, data, params) or _from_build_shapes(model, data)
             or _from_data(data, params))
    if found is None:
        raise InputError(
            f"model {name} has no defined inputs (a subclassed model) and its input "
            "signature cannot be derived: Keras recorded no build shapes"
            + ("" if data is None else " and the data gives no sample"),
            hint="pass --input-spec NAME:SHAPE:DTYPE per input (e.g. x:None,28,28,1:float32; "
            "Python: ExportConfig(input_specs=[InputSpec(...)])), or --validation-data")
    return found


def _safe_name(raw: str, i: int, used: list[str]) -> str:
    n = raw.replace(":", "_").replace("/", "_") or f"input_{i}"
    return f"{n}_{i}" if n in used else n


def _declared_inputs(model: Any) -> KerasInputs | None:
    """A functional / Sequential model's inputs, in the structure it declared (None: none)."""
    import keras
    import tensorflow as tf

    flat = list(getattr(model, "inputs", None) or [])
    if not flat:
        return None
    names: list[str] = []
    specs: list[TensorSpecInfo] = []
    for i, t in enumerate(flat):
        names.append(_safe_name(str(getattr(t, "name", "") or ""), i, names))
        shape = tuple(None if d is None else int(d) for d in t.shape)
        dtype = np.dtype(tf.as_dtype(t.dtype).as_numpy_dtype).name
        specs.append(TensorSpecInfo(names[-1], (None, *shape[1:]), dtype))
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, Mapping) or _nested(struct):
        return KerasInputs(specs, _plain(keras.tree.pack_sequence_as(struct, names)))
    return KerasInputs(specs, _single_or_list(names))


def _single_or_list(names: list[str]) -> InputTree:
    """One input as itself, several as a list (how Keras takes a functional model's inputs)."""
    return names[0] if len(names) == 1 else [n for n in names]


def _nested(struct: object) -> bool:
    return isinstance(struct, list | tuple) and any(
        isinstance(s, Mapping | list | tuple) for s in struct)


def _plain(struct: object) -> InputTree:
    """Keras' (possibly tracking-wrapped) structure of names as plain dicts and lists."""
    if isinstance(struct, Mapping):
        return {str(k): _plain(v) for k, v in struct.items()}
    if isinstance(struct, list | tuple):
        return [_plain(v) for v in struct]
    return str(struct)


def _overridden(declared: KerasInputs, explicit: Sequence[InputSpec], name: str) -> KerasInputs:
    """The declared inputs with the explicit specs' shapes and dtypes (same names and ranks)."""
    by_name = {s.name: s for s in explicit}
    want = [s.name for s in declared.specs]
    if sorted(by_name) != sorted(want):
        raise InputError(f"--input-spec names {sorted(by_name)} are not the inputs of {name} "
                         f"{want}", hint="give one spec per model input, named like it")
    for s in declared.specs:
        if len(by_name[s.name].shape) != len(s.shape):
            raise InputError(f"--input-spec {s.name}: shape {format_shape(by_name[s.name].shape)}"
                             f" has not the rank of the model's input {format_shape(s.shape)}")
    return KerasInputs([by_name[s.name].info() for s in declared.specs], declared.tree)


def _is_shape(x: object) -> bool:
    return isinstance(x, list | tuple) and all(d is None or isinstance(d, int) for d in x)


def _recorded(model: Any) -> object:
    """The shape structure of the model's first call argument, as Keras recorded it."""
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    return next(iter(shapes.values()), None) if len(shapes) == 1 else None


def _tree_like(recorded: object, names: list[str]) -> InputTree:
    """The call tree of explicit inputs: a dict keyed by their names (or a list) where Keras
    recorded one, else the single input itself, else a dict."""
    if isinstance(recorded, list | tuple) and not _is_shape(recorded):
        return list(names)
    if len(names) == 1 and not isinstance(recorded, Mapping):
        return names[0]
    return {n: n for n in names}


def _from_build_shapes(model: Any, data: SignatureData | None) -> KerasInputs | None:
    """The signature Keras recorded when the model was built; dtypes from the data's arrays of
    the same names when given (ids stay integers), else ``model.input_dtype``."""
    recorded = _recorded(model)
    if recorded is None:
        return None
    default = np.dtype(str(getattr(model, "input_dtype", None) or "float32")).name
    specs: list[TensorSpecInfo] = []
    tree = _walk_shapes(recorded, "input", _sample_arrays(data), default, specs)
    return KerasInputs(specs, tree) if specs and tree is not None else None


def _walk_shapes(recorded: object, name: str, sample: Mapping[str, np.ndarray], default: str,
                 specs: list[TensorSpecInfo]) -> InputTree | None:
    """The input tree of a recorded shape structure (its leaves appended to ``specs``, named
    after ``name``, dict keys or ``name_i``); None when a leaf is no shape (a None shape:
    an argument Keras saw as None)."""

    def walk(x: object, name: str) -> InputTree:
        if isinstance(x, Mapping):
            return {str(k): walk(v, str(k)) for k, v in x.items()}
        if not isinstance(x, list | tuple):
            raise InputError(f"cannot read the build shapes Keras recorded: {recorded}",
                             hint="pass --input-spec NAME:SHAPE:DTYPE per input")
        if _is_shape(x):
            dtype = _dtype_of(sample[name]) if name in sample else default
            specs.append(TensorSpecInfo(name, (None, *x[1:]), dtype))
            return name
        return [walk(v, f"{name}_{i}") for i, v in enumerate(x)]

    return None if recorded is None else walk(recorded, name)


def _dtype_of(a: np.ndarray) -> str:
    """An input dtype for data like ``a``: floats as float32 (Keras' default), text as
    strings, else its own."""
    if is_string_dtype(a.dtype):
        return STRING_DTYPE
    return "float32" if a.dtype.kind == "f" else a.dtype.name


def _from_data(data: SignatureData | None, params: list[tuple[str, bool]]) -> KerasInputs | None:
    """The signature of one sample of the data: its arrays' shapes (batch dynamic) and dtypes
    (floats as float32, Keras' default); several arrays make a dict call, or separate
    arguments where they are named after the call's."""
    arrays = _sample_arrays(data)
    if not arrays:
        return None
    specs = {k: TensorSpecInfo(k, (None, *a.shape[1:]), _dtype_of(a)) for k, a in arrays.items()}
    order = _as_arguments(params, list(specs))
    if order:
        return KerasInputs([specs[n] for n in order], {n: n for n in order}, tuple(order))
    names = list(specs)
    return KerasInputs(list(specs.values()), names[0] if len(names) == 1 else {n: n for n in names})


def _sample_arrays(data: SignatureData | None) -> dict[str, np.ndarray]:
    """The input arrays of an in-memory dataset or ``.npz``/``.npy`` file ({} otherwise)."""
    if isinstance(data, Dataset):
        return {k: v for k, v in data.inputs.items() if k}
    if data is None or Path(data).suffix.lower() not in (".npz", ".npy"):
        return {}
    arrays = read_arrays(Path(data), "data for the input signature", InputError)
    return {k: v for k, v in arrays.items() if k != LABELS and v.ndim >= 1}


#: call parameters that are no model inputs
_NOT_INPUTS = ("training", "mask")


def _call_parameters(model: Any) -> list[tuple[str, bool]]:
    """(name, required) of each positional parameter of the model's ``call`` that may take a
    tensor, in order."""
    try:
        sig = inspect.signature(model.call)
    except (TypeError, ValueError):  # a builtin or C-level call: nothing to read
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [(n, p.default is inspect.Parameter.empty) for n, p in sig.parameters.items()
            if p.kind in kinds and n not in _NOT_INPUTS]


def _as_arguments(params: list[tuple[str, bool]], names: list[str]) -> list[str] | None:
    """``names`` in the call's order when they are several of its arguments, every required
    one among them (a ``call(self, x, y)`` called with separate tensors); else None."""
    order = [n for n, _ in params if n in names]
    required = {n for n, req in params if req}
    if len(names) > 1 and len(order) == len(names) and required <= set(names):
        return order
    return None


def _from_argument_shapes(model: Any, name: str, data: SignatureData | None,
                          params: list[tuple[str, bool]]) -> KerasInputs | None:
    """The signature of a model called with several arguments, from the build shapes Keras
    recorded per argument (``build(self, y_shape, x_shape)``: keys ``<argument>_shape``, in
    build's order, mapped back to the call's); None for a one-argument call.

    Raises:
        InputError: the call takes several tensors and Keras recorded the shape of one only
            (a ``build(self, input_shape)``, or Keras' default build).
    """
    shapes = dict(getattr(model, "_build_shapes_dict", None) or {})
    required = [n for n, req in params if req]
    if len(shapes) == 1 and len(required) > 1:
        named = _from_data(data, params)
        if named is not None and named.arguments:
            return named
        raise InputError(
            f"model {name} is called with {len(required)} tensors ({', '.join(required)}) "
            "but Keras recorded the build shape of one only (its build takes one shape)",
            hint="pass --input-spec NAME:SHAPE:DTYPE for each call argument (e.g. "
            f"{required[0]}:None,10:float32), or --validation-data with arrays named "
            f"{', '.join(required)}; or give build one <argument>_shape parameter per argument")
    by_argument = {k.removesuffix("_shape"): v for k, v in shapes.items() if k.endswith("_shape")}
    order = _as_arguments(params, list(by_argument)) if len(by_argument) == len(shapes) else None
    if not order:
        return None
    default = np.dtype(str(getattr(model, "input_dtype", None) or "float32")).name
    sample = _sample_arrays(data)
    specs: list[TensorSpecInfo] = []
    tree: dict[str, InputTree] = {}
    for arg in order:
        found = _walk_shapes(by_argument[arg], arg, sample, default, specs)
        if found is None:
            return None
        tree[arg] = found
    return KerasInputs(specs, tree, tuple(order))
