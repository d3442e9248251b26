"""Keras -> ONNX export with graph checks and numerical validation.

Conversion goes through ``tf2onnx.convert.from_function`` with an explicit input signature
built from the model's inputs (dynamic batch dimension; several inputs; integer inputs for
Embedding layers) because ``from_keras`` does not work with Keras 3. After conversion the graph
is checked (no TensorFlow op left unconverted, onnx checker) and validated against Keras on the
user's data or on seeded synthetic inputs. Nothing is written unless every step passed.

TensorFlow, tf2onnx and onnx are imported inside the functions (the ``export`` extra).
"""

from __future__ import annotations

import json
import os
import platform
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.contract import keras_output_activations, output_kind, parse_output_kinds
from edgekit.errors import ConversionError, InputError, ModelLoadError, ValidationError, require
from edgekit.errors import exception_reason as _reason
from edgekit.inputs.data import Dataset, TensorSpecInfo, format_shape, run_in_batches
from edgekit.inputs.prepare import load_model_data
from edgekit.inputs.synthetic import InputRange, draw_inputs, keras_input_ranges, probe_length
from edgekit.io.artifacts import ArtifactSet, file_entry, sha256_file
from edgekit.metadata import PREFIX, ModelMetadata, load_keras_metadata, set_props
from edgekit.schema import parse_json
from edgekit.validate import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ValidationResult,
    compare_outputs,
    degenerate_warnings,
    onnx_session,
    output_saturation,
)

__all__ = [
    "MAX_OPSET",
    "ExportConfig",
    "ExportResult",
    "KerasSource",
    "load_source",
    "load_custom_objects",
    "convert",
    "export_model",
    "library_versions",
    "output_contract",
    "read_labels",
    "synthetic_inputs",
]

MAX_OPSET = 18  # tf2onnx 1.17
MIN_OPSET = 13


@dataclass
class ExportConfig:
    """Options of :func:`export_model`.

    Attributes:
        opset: ONNX opset to target, 13..18 (default 17).
        atol / rtol: validation fails when any output element differs from Keras by more
            than ``atol + rtol * |keras|`` (defaults 1e-4 and 1e-3, see :mod:`edgekit.validate`).
        validation_samples: synthetic samples when no validation data is given (default 256);
            also the cap on samples read from validation data (0 = all).
        labels: class names stored in the model (default: the Keras model's own metadata).
        seed: seed of the synthetic inputs (default 0).
        simplify: static Flatten shapes, conversion Transposes folded into weights (default
            True; see :mod:`edgekit.convert.graph`). Validation covers the simplified graph.
        force: overwrite existing outputs (default False).
        strict: fail when validation ran on degenerate reference outputs (default False: warn).
        batch_size: batch size of Keras and onnxruntime during validation (default 8); peak
            memory grows with it and the model, not with the sample count.
        output_kinds: the output contract, one of ``probabilities``, ``independent``,
            ``logits``, ``regression``, ``other`` per output (default None: read from each
            output's final Keras activation, see :mod:`edgekit.contract`).
    """

    opset: int = 17
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    validation_samples: int = 256
    labels: list[str] | None = None
    seed: int = 0
    simplify: bool = True
    force: bool = False
    output_kinds: list[str] | None = None
    strict: bool = False
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.opset, int) or self.opset > MAX_OPSET:
            raise InputError(
                f"opset {self.opset} is not supported: tf2onnx 1.17 converts to opset "
                f"{MAX_OPSET} at most",
                hint=f"use --opset {MAX_OPSET} or lower (default 17)",
            )
        if self.opset < MIN_OPSET:
            raise InputError(
                f"opset {self.opset} is too old for edgekit (needs {MIN_OPSET}..{MAX_OPSET})",
                hint="use the default --opset 17",
            )
        if not (self.atol > 0 and self.rtol >= 0):
            raise InputError(f"atol must be > 0 and rtol >= 0, got {self.atol} and {self.rtol}")
        if self.validation_samples < 0:
            raise InputError("validation_samples must be >= 0")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        kinds = parse_output_kinds(self.output_kinds)
        self.output_kinds = None if kinds is None else [k.value for k in kinds]


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    onnx_path: Path
    report_path: Path
    validation: ValidationResult
    report: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Sources: a Keras model (.keras / .h5 / in memory) or a SavedModel folder
# ---------------------------------------------------------------------------------------------
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
        synthetic_length: length of dynamic dimensions in synthetic inputs (None: not probed).
    """

    name: str
    path: Path | None
    inputs: list[TensorSpecInfo]
    outputs: list[TensorSpecInfo]
    call: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    function: Any
    int_ranges: dict[str, int]
    metadata: ModelMetadata
    format: str
    keepalive: Any = None  # objects whose variables ``function`` uses (a loaded SavedModel)
    output_activations: list[str] = field(default_factory=list)  # final activation per output
    input_ranges: dict[str, InputRange] = field(default_factory=dict)  # from preprocessing layers
    synthetic_length: int | None = None  # length for dynamic dimensions Keras accepts (probed)


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


def _from_keras_model(model: Any, name: str, path: Path | None, fmt: str) -> KerasSource:
    import tensorflow as tf

    if not getattr(model, "inputs", None):
        raise ConversionError(
            f"model {name} has no defined inputs (a subclassed or unbuilt model)",
            hint="build it with keras.Input(...) (functional or Sequential API) before saving",
        )
    names: list[str] = []
    specs: list[TensorSpecInfo] = []
    for i, t in enumerate(model.inputs):
        n = str(getattr(t, "name", "") or f"input_{i}").replace(":", "_").replace("/", "_")
        if n in names:
            n = f"{n}_{i}"
        names.append(n)
        shape = tuple(None if d is None else int(d) for d in t.shape)
        dtype = np.dtype(tf.as_dtype(t.dtype).as_numpy_dtype).name
        specs.append(TensorSpecInfo(n, (None, *shape[1:]), dtype))
    used: set[str] = set()
    out_specs = []
    for i, t in enumerate(model.outputs):
        shape = tuple(None if d is None else int(d) for d in t.shape)
        out_specs.append(
            TensorSpecInfo(_output_name(t, i, used), (None, *shape[1:]), np.dtype("float32").name)
        )
    signature = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs]
    multi = len(specs) > 1

    def _flat(y: Any) -> list[Any]:
        if isinstance(y, dict):
            return list(y.values())
        if isinstance(y, list | tuple):
            return list(y)
        return [y]

    @tf.function(input_signature=signature, autograph=False)
    def function(*xs: Any) -> Any:
        y = model(list(xs) if multi else xs[0], training=False)
        return _flat(y)

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        xs = [feeds[s.name] for s in specs]
        y = model(xs if multi else xs[0], training=False)
        return [np.asarray(o) for o in _flat(y)]

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
    signature = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in specs]

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


def load_custom_objects(spec: Any) -> dict[str, Any]:
    """Custom Keras objects from ``.py`` files / module names, or a mapping (given as is).

    Importing a module runs its ``@keras.saving.register_keras_serializable`` decorators; its
    classes and functions are also returned by name (for unregistered ones).
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    out: dict[str, Any] = {}
    for item in specs:
        module = _import_module_file(item)
        for name, obj in vars(module).items():
            if not name.startswith("_") and (isinstance(obj, type) or callable(obj)):
                if getattr(obj, "__module__", None) == module.__name__:
                    out[name] = obj
    return out


def _load_keras_file(path: Path, custom_objects: dict[str, Any]) -> Any:
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


def load_source(model: str | os.PathLike[str] | Any, custom_objects: Any = None) -> KerasSource:
    """Load a ``.keras`` / ``.h5`` file, a SavedModel folder, or wrap an in-memory Keras model.

    ``custom_objects``: see :func:`load_custom_objects` (default: none).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    require("tensorflow", "export", "tensorflow-cpu")
    _quiet_tf()
    objects = load_custom_objects(custom_objects)
    if not isinstance(model, str | os.PathLike):
        return _from_keras_model(model, getattr(model, "name", "model"), None, "keras-object")
    path = Path(model)
    fmt = _check_model_path(path)
    if fmt == "savedmodel":
        return _from_saved_model(path)
    return _from_keras_model(_load_keras_file(path, objects), path.stem, path, fmt)


# ---------------------------------------------------------------------------------------------
# Conversion and checks
# ---------------------------------------------------------------------------------------------
def _rename_outputs(model_proto: Any, names: list[str]) -> None:
    graph = model_proto.graph
    mapping = {o.name: n for o, n in zip(graph.output, names, strict=False) if o.name != n}
    if not mapping:
        return
    for node in graph.node:
        for i, o in enumerate(node.output):
            if o in mapping:
                node.output[i] = mapping[o]
        for i, x in enumerate(node.input):
            if x in mapping:
                node.input[i] = mapping[x]
    for o in graph.output:
        if o.name in mapping:
            o.name = mapping[o.name]


def _unsupported_nodes(model_proto: Any) -> list[tuple[str, str]]:
    """(op type, node name) of nodes no ONNX domain defines, Loop/If bodies included."""
    import onnx

    from edgekit.convert.graph import walk_nodes

    return [(n.op_type, n.name) for n in walk_nodes(model_proto.graph)
            if not onnx.defs.has(n.op_type, n.domain or "")]


def _higher_opset_for(ops: set[str], opset: int) -> int | None:
    """The lowest opset above ``opset`` (up to MAX_OPSET) where tf2onnx converts all ``ops``."""
    import tf2onnx.onnx_opset  # noqa: F401  (registers the handlers)
    from tf2onnx import handler

    try:  # table[v]: the ops whose handler starts at opset v
        table = handler.tf_op.get_opsets()[""]
    except (AttributeError, KeyError, TypeError):
        return None
    known: set[str] = set().union(*table[: opset + 1])
    if not ops - known:
        return None  # convertible at this opset: the opset is not the cause
    for v in range(opset + 1, min(MAX_OPSET, len(table) - 1) + 1):
        known |= set(table[v])
        if ops <= known:
            return v
    return None


def _opset_hint(reason: str, opset: int) -> str | None:
    """A hint to change --opset, only when the opset is what a message names as the cause."""
    if "opset" not in reason.lower():
        return None
    other = MAX_OPSET if opset < MAX_OPSET else MIN_OPSET
    return f"the message names the opset as the cause: try --opset {other}"


def _run_tf2onnx(source: KerasSource, signature: list[Any], opset: int) -> tuple[Any, Any]:
    """tf2onnx on ``source.function`` traced for conversion; returns (model, concrete fn)."""
    import logging

    require("tf2onnx", "export")
    from edgekit.convert.tfconvert import from_function, tracing_for_conversion

    log = logging.getLogger("tf2onnx")
    level = log.level
    log.setLevel(logging.CRITICAL)  # unsupported ops are reported by _check_converted
    try:
        with tracing_for_conversion():
            concrete = source.function.get_concrete_function(*signature)
            model_proto = from_function(source.function, signature, opset)
    except Exception as exc:
        reason = _reason(exc)
        raise ConversionError(
            f"tf2onnx failed converting {source.name}: {type(exc).__name__}: {reason}",
            hint=_opset_hint(reason, opset) or "a layer uses a TensorFlow construct tf2onnx "
            "cannot convert; replace that layer or apply it outside the model",
        ) from exc
    finally:
        log.setLevel(level)
    return model_proto, concrete


def _check_converted(model_proto: Any, opset: int) -> None:
    """Raise when TensorFlow ops were left unconverted (tf2onnx does not raise itself)."""
    bad = _unsupported_nodes(model_proto)
    if not bad:
        return
    ops = Counter(op for op, _ in bad)
    where = sorted({n.split("/")[-2] if n.count("/") else n for _, n in bad})[:5]
    higher = _higher_opset_for(set(ops), opset)
    if higher is not None:
        hint = f"tf2onnx converts these ops from opset {higher}: use --opset {higher}"
    elif "StatefulPartitionedCall" in ops or "PartitionedCall" in ops:
        hint = ("a layer calls a nested tf.function (e.g. jit_compile=True) that tf2onnx "
                "cannot inline; call its ops directly in the layer")
    else:
        hint = "replace that layer with ONNX-convertible ops, or apply it outside the model"
    raise ConversionError(
        f"unsupported layer: TensorFlow op(s) {', '.join(sorted(ops))} have no ONNX "
        f"conversion in tf2onnx (in {', '.join(where)})", hint=hint)


def convert(source: KerasSource, opset: int = 17) -> Any:
    """Convert ``source`` to an ``onnx.ModelProto`` and check the graph.

    Captured constants become initializers and the graph's inputs must be exactly the
    signature's. Raises :class:`ConversionError` when tf2onnx fails, leaves TensorFlow ops
    unconverted, or the onnx checker rejects the result; the hint names the cause.
    """
    onnx = require("onnx", "export")
    import tensorflow as tf

    from edgekit.convert.graph import drop_unused_opsets
    from edgekit.convert.tfconvert import bind_captured_constants, captured_constants

    signature = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in source.inputs]
    model_proto, concrete = _run_tf2onnx(source, signature, opset)
    _check_converted(model_proto, opset)
    bind_captured_constants(model_proto, captured_constants(concrete),
                            [s.name for s in source.inputs])
    _rename_outputs(model_proto, [o.name for o in source.outputs])
    drop_unused_opsets(model_proto)
    try:
        onnx.checker.check_model(model_proto)
    except Exception as exc:
        reason = _reason(exc)
        raise ConversionError(
            f"the onnx checker rejects the graph tf2onnx made of {source.name}: {reason}",
            hint=_opset_hint(reason, opset) or "a converter bug: report it with the model "
            "attached (tf2onnx and edgekit versions are in --version and the report)",
        ) from exc
    return model_proto


# ---------------------------------------------------------------------------------------------
# Validation inputs
# ---------------------------------------------------------------------------------------------
def synthetic_inputs(source: KerasSource, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs matching each input's shape, dtype and preprocessing range.

    Integer inputs get ids in the Embedding range; float inputs the range a leading
    ``Rescaling`` / ``Normalization`` layer implies, else [0, 1) for image models and N(0, 1)
    otherwise. Dynamic non-batch dimensions get the first length Keras accepts (probed once,
    see :func:`edgekit.inputs.synthetic.probe_length`).
    """
    pre = source.metadata.preprocessing
    image = pre is not None and pre.kind == "image"

    def make(length: int, count: int = n) -> dict[str, np.ndarray]:
        return draw_inputs(source.inputs, count, np.random.default_rng(seed), length,
                           source.input_ranges, source.int_ranges, image)

    dynamic = any(d is None for s in source.inputs for d in s.shape[1:])
    if dynamic and source.synthetic_length is None:
        source.synthetic_length = probe_length(source.call, lambda k: make(k, 1), source.name)
    return make(source.synthetic_length or 8)


# ---------------------------------------------------------------------------------------------
# The export stage
# ---------------------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    """Versions of the libraries in the export path (those importable)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "edgekit": __version__}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class labels from a text file (one per line) or a JSON list."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {p} does not exist", hint="check the --labels path")
    text = p.read_text().strip()
    if text.startswith("["):
        labels = [str(x) for x in parse_json(text, f"labels file {p}")]
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise InputError(f"labels file {p} is empty")
    return labels


class _Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = round(time.perf_counter() - t0, 4)


def _op_histogram(model_proto: Any) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model_proto.graph.node).most_common())


def onnx_metadata_props(
    source: KerasSource, opset: int, meta: ModelMetadata, config: Any
) -> dict[str, str]:
    """The ``metadata_props`` an exported model carries (see :mod:`edgekit.metadata`)."""
    props = meta.to_props()
    props.update(
        {
            PREFIX + "version": __version__,
            PREFIX + "source": source.path.name if source.path else source.name,
            PREFIX + "source_sha256": sha256_file(source.path) if source.path else "",
            PREFIX + "opset": str(opset),
            PREFIX + "inputs": json.dumps([s.to_dict() for s in source.inputs]),
            PREFIX + "outputs": json.dumps([s.to_dict() for s in source.outputs]),
            PREFIX + "export_config": json.dumps(asdict(config)),
        }
    )
    return props


#: kept for callers of the old name; see :func:`edgekit.metadata.set_props`
set_metadata_props = set_props


def output_contract(source: KerasSource, meta: ModelMetadata, config: ExportConfig) -> list[str]:
    """The kind of each output: ``config.output_kinds`` when given, else from each output's
    final activation (a linear end counts as logits only for a known classifier: labels or
    an edgekit recipe; pass ``--output-kind logits`` otherwise)."""
    n = len(source.outputs)
    if config.output_kinds is not None:
        if len(config.output_kinds) != n:
            raise InputError(
                f"{len(config.output_kinds)} output kind(s) given but the model has {n} output(s)",
                hint="give one --output-kind per output, in order",
            )
        return list(config.output_kinds)
    classifier = meta.task == "classification" and (
        meta.labels is not None or meta.recipe is not None)
    acts = source.output_activations or ["unknown"] * n
    return [output_kind(a, meta.task, classifier).value for a in acts]


def _shapes_of(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {format_shape(v.shape)} {v.dtype}" for k, v in feeds.items())


def _keras_reference(source: KerasSource, feeds: dict[str, np.ndarray],
                     batch_size: int) -> list[np.ndarray]:
    """The Keras outputs on ``feeds``; Keras' own failure is an input problem, said as such."""
    try:
        return run_in_batches(source.call, feeds, batch_size)
    except Exception as exc:
        raise InputError(
            f"Keras itself cannot run {source.name} on the validation inputs "
            f"({_shapes_of(feeds)}): {type(exc).__name__}: {_reason(exc)}",
            hint="give --validation-data with inputs the model accepts",
        ) from exc


def _onnx_run_error(exc: BaseException, feeds: dict[str, np.ndarray], opset: int | None,
                    ) -> ConversionError:
    reason = _reason(exc)
    return ConversionError(
        f"onnxruntime loads the converted graph but fails running it on "
        f"{_shapes_of(feeds)}: {reason}",
        hint=(_opset_hint(reason, opset) if opset else None) or "a converter bug: report it "
        "with the model attached (try --no-simplify to rule out edgekit's clean-ups)",
    )


def validate_source(
    source: KerasSource,
    onnx_model: bytes | str | os.PathLike[str] | Any,
    feeds: dict[str, np.ndarray],
    atol: float | None,
    batch_size: int = 8,
    opset: int | None = None,
    rtol: float = DEFAULT_RTOL,
) -> ValidationResult:
    """Compare Keras (reference) and onnxruntime on ``feeds`` in batches of ``batch_size``
    (default 8: memory bounded by the batch, not the sample count), then at batch 1.

    ``onnx_model``: a path, bytes or an onnxruntime session; tolerance: see :func:`compare_outputs`.
    The result carries the reference outputs' saturation and warnings when they are degenerate.
    """
    n = len(next(iter(feeds.values())))
    names = [o.name for o in source.outputs]
    ref = _keras_reference(source, feeds, batch_size)
    sess = onnx_model if hasattr(onnx_model, "run") else onnx_session(onnx_model)
    try:
        got = run_in_batches(lambda f: sess.run(None, f), feeds, batch_size)
        k = min(n, 8)  # batch 1 proves the batch dimension is really dynamic
        one = run_in_batches(lambda f: sess.run(None, f), {a: v[:k] for a, v in feeds.items()}, 1)
    except Exception as exc:
        raise _onnx_run_error(exc, feeds, opset) from exc
    result = compare_outputs(ref, got, names, atol, rtol)
    result.include(compare_outputs([r[:k] for r in ref], one, names, atol, rtol))
    result.saturation = output_saturation(ref, names)
    result.warnings = degenerate_warnings(result.saturation, n)
    return result


def _load_session(model_proto: Any, raw: Any | None, opset: int) -> Any:
    """An onnxruntime session of ``model_proto``; a refusal is classified: edgekit's
    clean-ups (``raw``, the unsimplified graph, loads) or the converted graph itself."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False  # memory returns after each validation batch
    try:
        return onnx_session(model_proto.SerializeToString(), session_options=options)
    except Exception as exc:
        reason = _reason(exc)
        if raw is not None:
            try:
                onnx_session(raw.SerializeToString(), session_options=options)
            except Exception:  # the converted graph itself is refused: fall through
                pass
            else:
                raise ConversionError(
                    f"edgekit's graph clean-up produced a graph onnxruntime refuses: {reason}",
                    hint="re-run with --no-simplify, and report this edgekit bug",
                ) from exc
        raise ConversionError(
            f"onnxruntime refuses the graph tf2onnx made: {reason}",
            hint=_opset_hint(reason, opset) or "an op or type onnxruntime does not implement, "
            "or a converter bug: report it with the model attached",
        ) from exc


def _simplified(model_proto: Any, config: ExportConfig) -> tuple[Any, list[str], Any]:
    """(graph, notes, loaded session): the graph simplified when ``config.simplify``."""
    if not config.simplify:
        return model_proto, [], _load_session(model_proto, None, config.opset)
    import onnx

    from edgekit.convert.graph import simplify

    raw = onnx.ModelProto()
    raw.CopyFrom(model_proto)
    notes = simplify(model_proto)
    return model_proto, notes, _load_session(model_proto, raw, config.opset)


def _validation_feeds(source: KerasSource, config: ExportConfig,
                      data: str | os.PathLike[str] | Dataset | None,
                      ) -> tuple[dict[str, np.ndarray], list[str], str]:
    """(feeds, notes, description): the user's data (capped) or seeded synthetic inputs."""
    if data is None:
        feeds = synthetic_inputs(source, config.validation_samples or 256, config.seed)
        return feeds, [], f"synthetic (seed {config.seed})"
    feeds, _, notes, desc = load_model_data(data, source.inputs, source.metadata,
                                            "validation data", "test",
                                            config.validation_samples, config.seed)
    return feeds, notes, desc


def _check_labels(source: KerasSource, config: ExportConfig) -> None:
    meta = source.metadata
    if config.labels is not None:
        meta.labels = list(config.labels)
    n_classes = source.outputs[0].shape[-1] if source.outputs and source.outputs[0].shape else None
    if meta.labels is not None and n_classes not in (None, len(meta.labels)):
        if not (n_classes == 1 and len(meta.labels) == 2):
            raise InputError(
                f"{len(meta.labels)} labels given but the model has {n_classes} output classes",
                hint="give one label per output class",
            )


def _validate(source: KerasSource, session: Any, feeds: dict[str, np.ndarray],
              config: ExportConfig) -> ValidationResult:
    """Validate and enforce the tolerance and ``strict``; raises ValidationError."""
    result = validate_source(source, session, feeds, config.atol, config.batch_size,
                             config.opset, rtol=config.rtol)
    differ = (f"ONNX outputs differ from Keras beyond {result.tolerance()}: "
              f"{result.failures()} ({result.summary()})")
    if not result.passed and result.warnings:
        raise ValidationError(
            f"{differ}, on inputs where {'; '.join(result.warnings)}; no model was written",
            hint="saturated outputs turn float rounding into flipped classes: validate on "
            "real inputs with --validation-data (or --calibration)",
        )
    if not result.passed:
        raise ValidationError(
            f"{differ}; no model was written",
            hint="check the model for non-deterministic layers, or raise --atol/--rtol if "
            "this difference is acceptable",
        )
    if config.strict and result.warnings:
        raise ValidationError(
            f"validation proves little: {'; '.join(result.warnings)} (--strict)",
            hint="validate on real inputs with --validation-data (or --calibration)",
        )
    return result


def _report(source: KerasSource, config: ExportConfig, model_proto: Any, simplified: list[str],
            validation: dict[str, Any], onnx_file: dict[str, Any],
            timings: dict[str, float]) -> dict[str, Any]:
    """The ``<stem>.report.json`` content."""
    return {
        "edgekit_version": __version__,
        "source": {
            "path": str(source.path) if source.path else None,
            "format": source.format,
            "sha256": sha256_file(source.path) if source.path else None,
            "size_bytes": _size(source.path) if source.path else None,
        },
        "versions": library_versions(),
        "config": asdict(config),
        "inputs": [s.to_dict() for s in source.inputs],
        "outputs": [s.to_dict() for s in source.outputs],
        "metadata": source.metadata.to_dict(),
        "graph": {
            "opset": config.opset,
            "nodes": len(model_proto.graph.node),
            "op_histogram": _op_histogram(model_proto),
            "simplified": simplified,
        },
        "validation": validation,
        "files": {"onnx": onnx_file},
        "timings_s": timings,
    }


def _stem(model: Any) -> str:
    if isinstance(model, str | os.PathLike):
        return Path(model).name if Path(model).is_dir() else Path(model).stem
    return str(getattr(model, "name", "model"))


def export_model(
    model: str | os.PathLike[str] | Any,
    outdir: str | os.PathLike[str],
    config: ExportConfig | None = None,
    validation_data: str | os.PathLike[str] | Dataset | None = None,
    extra_outputs: Callable[[ArtifactSet, KerasSource, Any, dict[str, Any]], None] | None = None,
    custom_objects: Any = None,
) -> ExportResult:
    """Export a Keras model to ``OUTDIR/<stem>.onnx`` + ``<stem>.report.json``.

    Args:
        model: a ``.keras`` / ``.h5`` path, a SavedModel folder, or an in-memory Keras model.
        outdir: output folder (created if missing).
        config: options (default :class:`ExportConfig()`).
        validation_data: ``.npz``/``.npy`` file, IDX folder, text table (models with a
            tokenizer) or :class:`Dataset` to validate on (default: seeded synthetic inputs).
        extra_outputs: hook for later stages (quantization) that stage more files into the
            same atomic output set: ``f(artifacts, source, model_proto, report)``.
        custom_objects: the user's custom layers: ``.py`` file(s), module name(s) or a
            ``{name: object}`` mapping (default None); see :func:`load_custom_objects`.

    Raises:
        EdgekitError subclasses for every user error; nothing is written then.
    """
    config = config or ExportConfig()
    timer = _Timer()
    stem = _stem(model)
    onnx_name, report_name = f"{stem}.onnx", f"{stem}.report.json"
    artifacts = ArtifactSet(outdir, [onnx_name, report_name], force=config.force)
    artifacts.check()  # fail before any slow work
    if isinstance(validation_data, str | os.PathLike) and not Path(validation_data).exists():
        raise InputError(f"validation data file {validation_data} does not exist")

    with timer.step("load"):
        source = load_source(model, custom_objects)
    _check_labels(source, config)
    source.metadata.output_kinds = output_contract(source, source.metadata, config)
    model_proto, blob, result, report = _convert_and_validate(source, config, validation_data,
                                                              onnx_name, timer)
    with artifacts.open():
        artifacts.write_bytes(onnx_name, blob)
        if extra_outputs is not None:
            with timer.step("variants"):
                extra_outputs(artifacts, source, model_proto, report)
        report["timings_s"] = timer.steps
        artifacts.write_json(report_name, report)
    return ExportResult(
        onnx_path=artifacts.final(onnx_name),
        report_path=artifacts.final(report_name),
        validation=result,
        report=report,
    )


def _convert_and_validate(source: KerasSource, config: ExportConfig,
                          validation_data: str | os.PathLike[str] | Dataset | None,
                          onnx_name: str, timer: _Timer
                          ) -> tuple[Any, bytes, ValidationResult, dict[str, Any]]:
    """Convert, simplify and validate against Keras: the ONNX model (with its metadata) and
    its bytes as they will be written, the validation result and the report. The user's data
    is checked before the slow steps; synthetic inputs are drawn after conversion, so they are
    not held through its peak."""
    if validation_data is not None:
        with timer.step("validation_inputs"):
            feeds, notes, data_desc = _validation_feeds(source, config, validation_data)
    with timer.step("convert"):
        model_proto = convert(source, config.opset)
    with timer.step("simplify"):
        model_proto, simplified, session = _simplified(model_proto, config)
    if validation_data is None:
        with timer.step("validation_inputs"):
            feeds, notes, data_desc = _validation_feeds(source, config, None)
    with timer.step("validate"):
        result = _validate(source, session, feeds, config)
    del session
    set_metadata_props(model_proto,
                       onnx_metadata_props(source, config.opset, source.metadata, config))
    validation = {"data": data_desc, "notes": notes, **asdict(result)}
    blob = model_proto.SerializeToString()
    report = _report(source, config, model_proto, simplified, validation,
                     file_entry(onnx_name, blob), timer.steps)
    return model_proto, blob, result, report


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
