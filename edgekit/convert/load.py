"""Loading the Keras source of an export: a ``.keras`` / ``.h5`` file, a SavedModel folder or
an in-memory model, with the user's custom objects, as a :class:`KerasSource` (input and output
specs, a traced ``tf.function`` for tf2onnx and a callable Keras reference for validation, both
calling the model with its inputs in the structure Keras expects: see
:mod:`edgekit.convert.signature`).

TensorFlow and Keras are imported inside the functions (the ``export`` extra).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from edgekit.contract import keras_output_activations
from edgekit.convert.lowering import lower_preprocessing
from edgekit.convert.noise import Variable
from edgekit.convert.signature import (
    InputSpec,
    KerasInputs,
    SignatureData,
    call_arguments,
    framework_dtype,
    keras_inputs,
)
from edgekit.errors import ConversionError, InputError, ModelLoadError, require
from edgekit.errors import exception_reason as _reason
from edgekit.inputs.data import TensorSpecInfo, format_shape
from edgekit.inputs.synthetic import InputRange, keras_input_ranges, keras_string_values
from edgekit.metadata import ModelMetadata, load_keras_metadata

__all__ = ["CustomObjects", "EagerTensor", "KerasSource", "ModelSource", "TracedFunction",
           "keras_call_error", "load_custom_objects", "load_source", "source_stem"]

#: a model to export: a ``.keras`` / ``.h5`` path, a SavedModel folder or an in-memory
#: ``keras.Model`` (Keras is untyped, so the model itself is an ``object`` here)
ModelSource = str | os.PathLike[str] | object

#: the user's custom Keras objects: ``.py`` file(s) or module name(s), or ``{name: object}``
CustomObjects = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Mapping[str, object]


class EagerTensor(Protocol):
    """A TensorFlow eager tensor, as a :class:`TracedFunction` returns them."""

    def numpy(self) -> np.ndarray:
        """The tensor's values."""


class TracedFunction(Protocol):
    """A ``tf.function`` with an explicit input signature (what tf2onnx converts)."""

    def __call__(self, *args: object) -> Sequence[EagerTensor]:
        """The model's outputs on ``args`` (arrays or tensors, in input order)."""

    def get_concrete_function(self, *args: object) -> object:
        """The concrete function for ``args`` (``tf.TensorSpec`` values)."""


@dataclass
class KerasSource:
    """A loaded model, ready to convert and to serve as the validation reference.

    Attributes:
        name: file stem used for output names.
        path: where it came from (None for an in-memory model).
        inputs / outputs: names, shapes (None = dynamic) and dtypes.
        call: runs the reference on a batch, returning outputs in ``outputs`` order.
        function: a ``tf.function`` with an explicit input signature, for tf2onnx.
        int_ranges: for integer inputs, the exclusive upper bound of valid ids (Embedding).
        metadata: edgekit metadata stored with the model (labels, preprocessing ...).
        input_ranges: value ranges implied by preprocessing layers (see inputs.synthetic).
        synthetic_lengths: lengths of the dynamic dimensions in synthetic inputs, one per
            dimension (None: not probed).
        lowered: the Keras preprocessing layers rewritten with standard ops for the export
            (:func:`~edgekit.convert.lowering.lower_preprocessing`); ``call`` runs the original.
        string_values: for string inputs, the words synthetic inputs draw from (the lookup
            vocabularies plus OOV words, see :func:`~edgekit.inputs.synthetic.keras_string_values`).
    """

    name: str
    path: Path | None
    inputs: list[TensorSpecInfo]
    outputs: list[TensorSpecInfo]
    call: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    function: TracedFunction
    int_ranges: dict[str, int]
    metadata: ModelMetadata
    format: str
    keepalive: object = None  # objects whose variables ``function`` uses (a loaded SavedModel)
    output_activations: list[str] = field(default_factory=list)  # final activation per output
    input_ranges: dict[str, InputRange] = field(default_factory=dict)  # from preprocessing layers
    synthetic_lengths: tuple[int, ...] | None = None  # dynamic lengths that run (probed)
    lowered: list[str] = field(default_factory=list)  # preprocessing layers lowered to ONNX ops
    string_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # words to draw
    weights: tuple[Variable, ...] = ()  # what edgekit.convert.noise perturbs, restored after


def _quiet_tf() -> None:
    """Silence TensorFlow's C++ logging (before its first import) and hide GPUs.

    With a GPU visible Keras switches LSTM/GRU to cuDNN kernels that tf2onnx cannot convert;
    export needs none, so GPUs are hidden from TensorFlow.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # devices already initialised
        pass


def _check_model_path(path: Path) -> str:
    """Return the model format or raise a clear error for paths that cannot be models."""
    if not path.exists():
        raise InputError(f"model path {path} does not exist", hint="check the path")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise ModelLoadError(
            f"{path} is a folder but not a SavedModel (no saved_model.pb)",
            hint="pass a .keras file, a legacy .h5 file or a SavedModel folder",
        )
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty", hint="the file is truncated; save the model again")
    suffix = path.suffix.lower()
    head = path.read_bytes()[:8]
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(
                f"{path} is not a valid .keras file (not a zip archive: truncated or corrupt)",
                hint="save the model again with model.save('model.keras')",
            )
        return "keras"
    if suffix in (".h5", ".hdf5"):
        if head != b"\x89HDF\r\n\x1a\n":
            raise ModelLoadError(
                f"{path} is not a valid HDF5 file (truncated or corrupt)",
                hint="save the model again, preferably as .keras",
            )
        return "h5"
    raise ModelLoadError(
        f"{path} is not a model edgekit can export (expected .keras, .h5 or a SavedModel folder)",
        hint="save your model with model.save('model.keras')",
    )


def _output_name(t: Any, i: int, used: set[str]) -> str:
    hist = getattr(t, "_keras_history", None)
    op = getattr(hist, "operation", None) if hist is not None else None
    name = getattr(op, "name", None) or f"output_{i}"
    while name in used:
        name = f"{name}_{i}"
    used.add(name)
    return name


def _embedding_ranges(model: Any, inputs: list[TensorSpecInfo]) -> dict[str, int]:
    """Upper bound of valid ids for each integer input: the smallest Embedding ``input_dim``."""
    import keras

    dims: list[int] = []

    def walk(layer: Any) -> None:
        if isinstance(layer, keras.layers.Embedding):
            dims.append(int(layer.input_dim))
        for sub in getattr(layer, "layers", []) or []:
            walk(sub)

    walk(model)
    bound = min(dims) if dims else 2
    return {s.name: bound for s in inputs if np.issubdtype(np.dtype(s.dtype), np.integer)}


def _output_specs(model: Any, name: str, inputs: KerasInputs) -> list[TensorSpecInfo]:
    """The model's outputs: its declared ones, or (a subclassed model) the ones Keras infers
    symbolically from the input signature. A model never built is built by that symbolic
    call, through its own ``build`` (``compute_output_spec`` alone would build its layers
    but not the model, whose ``build`` then runs again at the traced call)."""
    import keras

    outs = list(getattr(model, "outputs", None) or [])
    if not outs:
        tensors = {s.name: keras.KerasTensor(s.shape, framework_dtype(s.dtype))
                   for s in inputs.specs}
        infer = model.compute_output_spec if model.built else model
        try:
            outs = keras.tree.flatten(infer(*call_arguments(inputs, tensors)))
        except Exception as exc:
            raise keras_call_error(name, inputs.specs, exc) from exc
    used: set[str] = set()
    return [TensorSpecInfo(_output_name(t, i, used),  # a scalar output (a sum over all) stays one
                           (None, *(None if d is None else int(d) for d in t.shape[1:]))
                           if len(t.shape) else (),
                           np.dtype("float32").name)
            for i, t in enumerate(outs)]


def keras_call_error(name: str, specs: Sequence[TensorSpecInfo],
                     exc: BaseException) -> ConversionError:
    """The error of a Keras call that edgekit made (tracing or inferring the model's outputs):
    Keras' own message, which names the layer that raised."""
    shapes = ", ".join(f"{s.name} {format_shape(s.shape)} {s.dtype}" for s in specs)
    reason = re.sub(r"\x1b\[[0-9;]*m", "", _reason(exc))  # Keras' bold text
    return ConversionError(
        f"Keras fails calling {name} on its input signature ({shapes}), before any "
        f"conversion: {type(exc).__name__}: {reason}",
        hint="the model's call raises for these inputs: check that model(inputs) runs on "
        "them in Keras; for a subclassed model pass the right --input-spec")


def _reference_call(model: Any, inputs: KerasInputs) -> Callable[[dict[str, np.ndarray]],
                                                                    list[np.ndarray]]:
    """The Keras reference: ``model(inputs, training=False)`` run as a graph, as
    ``model.predict`` runs it. Run eagerly, each call keeps every activation of the batch in
    TensorFlow's oneDNN allocator, which keeps that memory afterwards (ResNet50 at 224, batch 8:
    +1.2 GB eager, +0.1 GB as a graph); a model that does not trace runs eagerly. The graph
    is traced once for any batch size (:func:`_trace_any_batch`)."""
    import keras
    import tensorflow as tf

    graph = tf.function(lambda *args: model(*args, training=False), autograph=False,
                        reduce_retracing=True)
    traces = [True]
    untraced = [True]

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = call_arguments(inputs, feeds)
        y = None
        if untraced[0]:
            untraced[0] = False
            _trace_any_batch(graph, args)
        if traces[0]:
            try:
                y = graph(*args)
            except Exception:  # Python the graph cannot hold: Keras' eager call decides
                traces[0] = False
        if y is None:
            y = model(*args, training=False)
        return [np.asarray(o) for o in keras.tree.flatten(y)]

    return call


def _trace_any_batch(graph: Any, args: list[object]) -> None:
    """Trace ``graph`` once for ``args``' shapes with any batch size, as ``model.predict``
    does: validation's batches and the batch-1 run then reuse it (each new batch size would
    retrace, 2.4 s for NASNetMobile). Where that trace fails (a model that runs at one batch
    size only, string inputs) the first call traces its own shapes, as before."""
    import tensorflow as tf

    def spec(a: object) -> object:
        arr = np.asarray(a)
        if arr.ndim == 0:
            raise ValueError("a scalar input has no batch axis")
        return tf.TensorSpec([None, *arr.shape[1:]], tf.as_dtype(arr.dtype))

    try:
        graph.get_concrete_function(*tf.nest.map_structure(spec, args))
    except Exception:  # any failure: the calls trace their own shapes
        pass


def _from_keras_model(model: Any, name: str, path: Path | None, fmt: str,
                      inputs: KerasInputs) -> KerasSource:
    import keras
    import tensorflow as tf

    specs = inputs.specs
    out_specs = _output_specs(model, name, inputs)
    signature = [tf.TensorSpec(s.shape, framework_dtype(s.dtype), name=s.name) for s in specs]
    names = [s.name for s in specs]
    exported, lowered = lower_preprocessing(model)  # validation compares it with the original

    @tf.function(input_signature=signature, autograph=False)
    def function(*xs: Any) -> Any:
        y = exported(*call_arguments(inputs, dict(zip(names, xs, strict=True))),
                     training=False)
        return keras.tree.flatten(y)

    call = _reference_call(model, inputs)

    meta = (load_keras_metadata(path) if path is not None else None) or ModelMetadata()
    return KerasSource(
        name=name,
        path=path,
        inputs=specs,
        outputs=out_specs,
        call=call,
        function=function,
        int_ranges=_embedding_ranges(model, specs),
        metadata=meta,
        format=fmt,
        output_activations=keras_output_activations(model),
        input_ranges=keras_input_ranges(model, specs),
        lowered=lowered,
        string_values=keras_string_values(model, specs),
        weights=tuple(model.weights),
    )


def _from_saved_model(path: Path) -> KerasSource:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load SavedModel {path}: {_reason(exc)}",
            hint="the folder may be incomplete or corrupt; export it again",
        ) from exc
    sig = getattr(loaded, "signatures", {}).get("serving_default")
    if sig is None:
        raise ModelLoadError(
            f"SavedModel {path} has no 'serving_default' signature",
            hint="export it with keras model.export(path) or tf.saved_model.save(..., signatures=)",
        )
    _, kw = sig.structured_input_signature
    in_names = sorted(kw)
    specs = [
        TensorSpecInfo(n, tuple(kw[n].shape.as_list()), np.dtype(kw[n].dtype.as_numpy_dtype).name)
        for n in in_names
    ]
    specs = [TensorSpecInfo(s.name, (None, *s.shape[1:]), s.dtype) for s in specs]
    out_keys = sorted(sig.structured_outputs)
    outs = [
        TensorSpecInfo(k, (None, *sig.structured_outputs[k].shape.as_list()[1:]), "float32")
        for k in out_keys
    ]
    signature = [tf.TensorSpec(s.shape, framework_dtype(s.dtype), name=s.name) for s in specs]

    @tf.function(input_signature=signature, autograph=False)
    def function(*xs: Any) -> Any:
        y = sig(**dict(zip(in_names, xs, strict=True)))
        return [y[k] for k in out_keys]

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        y = sig(**{n: tf.constant(feeds[n]) for n in in_names})
        return [y[k].numpy() for k in out_keys]

    int_specs = [s for s in specs if np.issubdtype(np.dtype(s.dtype), np.integer)]
    return KerasSource(
        name=path.name,
        path=path,
        inputs=specs,
        outputs=outs,
        call=call,
        function=function,
        int_ranges={s.name: 2 for s in int_specs},
        metadata=load_keras_metadata(path) or ModelMetadata(),
        format="savedmodel",
        keepalive=loaded,
        weights=tuple(getattr(loaded, "variables", None) or ()),
    )


def _import_module_file(spec: str | os.PathLike[str]) -> ModuleType:
    """Import a user's module from a ``.py`` path, or by dotted name when no such file exists."""
    import importlib
    import importlib.util
    import sys

    path = Path(spec)
    try:
        if path.suffix != ".py" and not path.exists():
            return importlib.import_module(str(spec))
        if not path.is_file():
            raise InputError(f"custom objects file {path} does not exist", hint="check the path")
        name = f"edgekit_custom_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        sys.path.insert(0, str(path.resolve().parent))  # its own imports of sibling modules
        try:
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot import custom objects from {spec}: {type(exc).__name__}: "
                         f"{_reason(exc)}", hint="fix the module so that it imports") from exc


def load_custom_objects(spec: CustomObjects | None) -> dict[str, object]:
    """Custom Keras objects from ``.py`` files / module names, or a mapping (given as is).

    Importing a module runs its ``@keras.saving.register_keras_serializable`` decorators; its
    classes and functions are also returned by name (for unregistered ones).
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    out: dict[str, object] = {}
    for item in specs:
        module = _import_module_file(item)
        for name, obj in vars(module).items():
            if not name.startswith("_") and (isinstance(obj, type) or callable(obj)):
                if getattr(obj, "__module__", None) == module.__name__:
                    out[name] = obj
    return out


def _load_keras_file(path: Path, custom_objects: dict[str, object]) -> Any:
    import keras

    from edgekit.errors import fs_fault, output_error
    from edgekit.io.tempdirs import private_tempdir

    try:  # what Keras extracts into tempfile's folder goes with private_tempdir's
        with private_tempdir("edgekit-keras-"), keras.saving.custom_object_scope(custom_objects):
            return keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as exc:
        fault = fs_fault(exc)
        if fault is not None and fault.filename != str(path):  # a full TMPDIR is no corrupt model
            import tempfile

            raise output_error(fault, fault.filename or tempfile.gettempdir(),
                               f"extract {path} into", temp=True) from exc
        text = _reason(exc)
        if "Could not locate" in text or "Unknown layer" in text:
            raise ModelLoadError(
                f"{path} uses a custom object Keras cannot find: {text}",
                hint="pass the module that defines it: --custom-objects my_layers.py "
                "(Python: export_model(..., custom_objects=...))",
            ) from exc
        if isinstance(exc, OSError | zipfile.BadZipFile) or any(
                w in text.lower() for w in ("truncated", "unable to open", "bad zip", "eof")):
            raise ModelLoadError(
                f"{path} is truncated or corrupt: Keras cannot read it ({text})",
                hint="save the model again with model.save('model.keras')",
            ) from exc
        raise ModelLoadError(
            f"Keras cannot rebuild the model in {path}: {type(exc).__name__}: {text}",
            hint="if the model uses custom layers, pass --custom-objects my_layers.py; "
            "otherwise save the model again with model.save('model.keras')",
        ) from exc


def load_source(model: ModelSource, custom_objects: CustomObjects | None = None,
                input_specs: Sequence[InputSpec] | None = None,
                data: SignatureData | None = None) -> KerasSource:
    """Load a ``.keras`` / ``.h5`` file, a SavedModel folder, or wrap an in-memory Keras model.

    Args:
        model: the model or where it is.
        custom_objects: see :func:`load_custom_objects` (default: none).
        input_specs: the input signature given explicitly (default None: the model's own; see
            :func:`~edgekit.convert.signature.keras_inputs`).
        data: validation/calibration data, whose first arrays give a subclassed model's
            signature when neither ``input_specs`` nor Keras' build shapes do.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    require("tensorflow", "export", "tensorflow-cpu")
    _quiet_tf()
    objects = load_custom_objects(custom_objects)
    if not isinstance(model, str | os.PathLike):
        name = str(getattr(model, "name", "model"))
        return _from_keras_model(model, name, None, "keras-object",
                                 keras_inputs(model, name, input_specs, data))
    path = Path(model)
    fmt = _check_model_path(path)
    if fmt == "savedmodel":
        return _from_saved_model(path)
    keras_model = _load_keras_file(path, objects)
    return _from_keras_model(keras_model, path.stem, path, fmt,
                             keras_inputs(keras_model, path.stem, input_specs, data))


def source_stem(model: ModelSource) -> str:
    """The stem of the export's file names: the file's stem, the folder's name, or the
    in-memory model's name (default ``model``)."""
    if isinstance(model, str | os.PathLike):
        return Path(model).name if Path(model).is_dir() else Path(model).stem
    return str(getattr(model, "name", "model"))
