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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .artifacts import ArtifactSet, sha256_file
from .data import Dataset, TensorSpecInfo, format_shape, load_dataset, run_in_batches
from .errors import ConversionError, InputError, ModelLoadError, ValidationError, require
from .metadata import PREFIX, ModelMetadata, load_keras_metadata
from .validate import ValidationResult, compare_outputs, run_onnx

__all__ = [
    "MAX_OPSET",
    "ExportConfig",
    "ExportResult",
    "KerasSource",
    "load_source",
    "convert",
    "export_model",
    "library_versions",
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
        atol: largest max-abs difference from Keras that passes validation (default 1e-4).
        validation_samples: synthetic samples when no validation data is given (default 256);
            also the cap on samples read from validation data (0 = all).
        labels: class names stored in the model (default: the Keras model's own metadata).
        seed: seed of the synthetic inputs (default 0).
        simplify: static Flatten shapes, conversion Transposes folded into weights (default
            True; see :mod:`edgekit.graph`). Validation covers the simplified graph.
        force: overwrite existing outputs (default False).
    """

    opset: int = 17
    atol: float = 1e-4
    validation_samples: int = 256
    labels: list[str] | None = None
    seed: int = 0
    simplify: bool = True
    force: bool = False

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
        if not self.atol > 0:
            raise InputError(f"atol must be positive, got {self.atol}")
        if self.validation_samples < 0:
            raise InputError("validation_samples must be >= 0")


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


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
    )


def _from_saved_model(path: Path) -> KerasSource:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load SavedModel {path}: {_first_line(exc)}",
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


def load_source(model: str | os.PathLike[str] | Any) -> KerasSource:
    """Load a ``.keras`` / ``.h5`` file, a SavedModel folder, or wrap an in-memory Keras model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    require("tensorflow", "export", "tensorflow-cpu")
    _quiet_tf()
    if not isinstance(model, str | os.PathLike):
        return _from_keras_model(model, getattr(model, "name", "model"), None, "keras-object")
    path = Path(model)
    fmt = _check_model_path(path)
    if fmt == "savedmodel":
        return _from_saved_model(path)
    import keras

    try:
        km = keras.models.load_model(path, compile=False)
    except Exception as exc:
        text = _first_line(exc)
        if "Unknown layer" in text or "Could not locate" in text:
            raise ModelLoadError(
                f"{path} uses a custom layer Keras cannot rebuild: {text}",
                hint="register it with @keras.saving.register_keras_serializable() "
                "and export from Python with edgekit.export.export_model(model_object, ...)",
            ) from exc
        raise ModelLoadError(
            f"cannot load {path} as a Keras model (truncated or corrupt?): {text}",
            hint="save the model again with model.save('model.keras')",
        ) from exc
    return _from_keras_model(km, path.stem, path, fmt)


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
    import onnx

    return [
        (n.op_type, n.name)
        for n in model_proto.graph.node
        if not onnx.defs.has(n.op_type, n.domain or "")
    ]


def convert(source: KerasSource, opset: int = 17) -> Any:
    """Convert ``source`` to an ``onnx.ModelProto`` and check the graph.

    Raises :class:`ConversionError` when tf2onnx fails, leaves TensorFlow ops unconverted, or
    the onnx checker rejects the result.
    """
    onnx = require("onnx", "export")
    tf2onnx = require("tf2onnx", "export")
    import logging

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    import tensorflow as tf

    signature = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in source.inputs]
    try:
        model_proto, _ = tf2onnx.convert.from_function(  # type: ignore[attr-defined]
            source.function, input_signature=signature, opset=opset
        )
    except Exception as exc:
        raise ConversionError(
            f"tf2onnx could not convert {source.name}: {_first_line(exc)}",
            hint="a layer may use a TensorFlow op without an ONNX equivalent; "
            "try another --opset or replace that layer",
        ) from exc
    bad = _unsupported_nodes(model_proto)
    if bad:
        ops = Counter(op for op, _ in bad)
        where = sorted({n.split("/")[-2] if n.count("/") else n for _, n in bad})[:5]
        raise ConversionError(
            f"unsupported layer: TensorFlow op(s) {', '.join(sorted(ops))} have no ONNX "
            f"conversion (in {', '.join(where)})",
            hint="replace that layer with ONNX-convertible ops, or apply it outside the model",
        )
    _rename_outputs(model_proto, [o.name for o in source.outputs])
    try:
        onnx.checker.check_model(model_proto)  # type: ignore[attr-defined]
    except Exception as exc:
        raise ConversionError(
            f"the converted graph of {source.name} is not valid ONNX: {_first_line(exc)}",
            hint="report this with the model attached; meanwhile try another --opset",
        ) from exc
    return model_proto


# ---------------------------------------------------------------------------------------------
# Validation inputs
# ---------------------------------------------------------------------------------------------
def synthetic_inputs(source: KerasSource, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs matching each input's shape and dtype (ids in the Embedding range).

    Float inputs are uniform in [0, 1) for image models (the preprocessed range) and standard
    normal otherwise; dynamic non-batch dimensions get length 8.
    """
    rng = np.random.default_rng(seed)
    pre = source.metadata.preprocessing
    feeds: dict[str, np.ndarray] = {}
    for s in source.inputs:
        shape = (n, *[8 if d is None else d for d in s.shape[1:]])
        dt = np.dtype(s.dtype)
        if np.issubdtype(dt, np.integer):
            feeds[s.name] = rng.integers(0, source.int_ranges.get(s.name, 2), shape).astype(dt)
        elif dt == np.bool_:
            feeds[s.name] = rng.integers(0, 2, shape).astype(bool)
        elif pre is not None and pre.kind == "image":
            feeds[s.name] = rng.random(shape, dtype=np.float32).astype(dt)
        else:
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
    return feeds


def prepare_inputs(
    source_inputs: list[TensorSpecInfo], data: Dataset, meta: ModelMetadata
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Check ``data`` against the model's inputs and bring it to the model's dtypes.

    Integer image data (e.g. uint8) for a float input is scaled by the model's preprocessing
    metadata; the notes returned say so. Wrong rank or fixed dimensions raise DataError.
    """
    from .errors import DataError

    notes: list[str] = []
    feeds: dict[str, np.ndarray] = {}
    pre = meta.preprocessing
    for s in source_inputs:
        a = data.inputs[s.name]
        want = np.dtype(s.dtype)
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
        if np.issubdtype(want, np.floating) and np.issubdtype(a.dtype, np.integer):
            if pre is not None and not pre.is_identity:
                a = pre.apply(a, want)
                notes.append(
                    f"{s.name}: {a.dtype} data preprocessed with the model's metadata "
                    f"(scale {pre.scale:g}{', standardised' if pre.mean else ''})"
                )
            else:
                a = a.astype(want)
        elif np.issubdtype(want, np.integer) and np.issubdtype(a.dtype, np.floating):
            if not np.all(a == np.round(a)):
                raise DataError(f"{data.source}: input {s.name!r} needs integer ids, got floats")
            a = a.astype(want)
        else:
            a = a.astype(want, copy=False)
        feeds[s.name] = a
    return feeds, notes


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
        try:
            labels = [str(x) for x in json.loads(text)]
        except ValueError as exc:
            raise InputError(f"labels file {p} is not a valid JSON list: {exc}") from exc
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


def set_metadata_props(model_proto: Any, props: dict[str, str]) -> None:
    """Replace ``model_proto.metadata_props`` entries with ``props`` (others are kept)."""
    existing = {p.key: p for p in model_proto.metadata_props}
    for k, v in props.items():
        if k in existing:
            existing[k].value = v
        else:
            entry = model_proto.metadata_props.add()
            entry.key, entry.value = k, v


def validate_source(
    source: KerasSource,
    onnx_model: bytes | str | os.PathLike[str],
    feeds: dict[str, np.ndarray],
    atol: float | None,
    batch_size: int = 64,
) -> ValidationResult:
    """Compare Keras (reference) and onnxruntime on ``feeds`` at ``batch_size`` and batch 1."""
    n = len(next(iter(feeds.values())))
    ref = run_in_batches(source.call, feeds, 256)
    got = run_onnx(onnx_model, feeds, batch_size=batch_size)
    result = compare_outputs(ref, got, [o.name for o in source.outputs], atol)
    # The same file at batch 1: proves the batch dimension is really dynamic.
    k = min(n, 8)
    one = run_onnx(onnx_model, {name: v[:k] for name, v in feeds.items()}, batch_size=1)
    single = compare_outputs([r[:k] for r in ref], one, None, atol)
    if single.max_abs_error > result.max_abs_error:
        result.max_abs_error = single.max_abs_error
        result.passed = atol is None or result.max_abs_error <= atol
    return result


def export_model(
    model: str | os.PathLike[str] | Any,
    outdir: str | os.PathLike[str],
    config: ExportConfig | None = None,
    validation_data: str | os.PathLike[str] | Dataset | None = None,
    extra_outputs: Callable[[ArtifactSet, KerasSource, Any, dict[str, Any]], None] | None = None,
) -> ExportResult:
    """Export a Keras model to ``OUTDIR/<stem>.onnx`` + ``<stem>.report.json``.

    Args:
        model: a ``.keras`` / ``.h5`` path, a SavedModel folder, or an in-memory Keras model.
        outdir: output folder (created if missing).
        config: options (default :class:`ExportConfig()`).
        validation_data: ``.npz``/``.npy`` file or :class:`Dataset` to validate on (default:
            seeded synthetic inputs).
        extra_outputs: hook for later stages (quantization) that stage more files into the
            same atomic output set: ``f(artifacts, source, model_proto, report)``.

    Raises:
        EdgekitError subclasses for every user error; nothing is written then.
    """
    config = config or ExportConfig()
    timer = _Timer()
    if isinstance(model, str | os.PathLike):
        stem = Path(model).name if Path(model).is_dir() else Path(model).stem
    else:
        stem = getattr(model, "name", "model")
    onnx_name, report_name = f"{stem}.onnx", f"{stem}.report.json"
    artifacts = ArtifactSet(outdir, [onnx_name, report_name], force=config.force)
    artifacts.check()  # fail before any slow work
    if isinstance(validation_data, str | os.PathLike) and not Path(validation_data).exists():
        raise InputError(f"validation data file {validation_data} does not exist")

    with timer.step("load"):
        source = load_source(model)
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

    with timer.step("validation_inputs"):
        notes: list[str] = []
        if validation_data is None:
            feeds = synthetic_inputs(source, config.validation_samples or 256, config.seed)
            data_desc = f"synthetic (seed {config.seed})"
        else:
            ds = (
                validation_data
                if isinstance(validation_data, Dataset)
                else load_dataset(validation_data, [s.name for s in source.inputs],
                                  "validation data")
            )
            if config.validation_samples:
                ds = ds.take(config.validation_samples)
            feeds, notes = prepare_inputs(source.inputs, ds, meta)
            data_desc = ds.source or "in-memory dataset"

    with timer.step("convert"):
        model_proto = convert(source, config.opset)
    simplified: list[str] = []
    if config.simplify:
        from .graph import simplify

        with timer.step("simplify"):
            simplified = simplify(model_proto)
    set_metadata_props(model_proto, onnx_metadata_props(source, config.opset, meta, config))
    onnx_bytes = model_proto.SerializeToString()

    with timer.step("validate"):
        try:
            result = validate_source(source, onnx_bytes, feeds, config.atol)
        except Exception as exc:  # onnxruntime refusing the graph is a conversion problem
            raise ConversionError(
                f"onnxruntime cannot run the converted model: {_first_line(exc)}",
                hint="try another --opset",
            ) from exc
    if not result.passed:
        raise ValidationError(
            f"ONNX outputs differ from Keras by up to {result.max_abs_error:.3g} "
            f"(> atol {config.atol:g}; {result.summary()}); no model was written",
            hint="check the model for non-deterministic layers, or raise --atol if this "
            "difference is acceptable",
        )

    report: dict[str, Any] = {
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
        "metadata": meta.to_dict(),
        "graph": {
            "opset": config.opset,
            "nodes": len(model_proto.graph.node),
            "op_histogram": _op_histogram(model_proto),
            "simplified": simplified,
        },
        "validation": {"data": data_desc, "notes": notes, **asdict(result)},
        "files": {"onnx": {"path": onnx_name, "size_bytes": len(onnx_bytes)}},
        "timings_s": timer.steps,
    }
    with artifacts.open():
        artifacts.write_bytes(onnx_name, onnx_bytes)
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


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
