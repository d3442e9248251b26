"""The backends ``bench``, ``compare`` and ``check`` load, chosen by file suffix
(:func:`load_backend`): ``.onnx``/``.ort`` files and model package folders through
:class:`edgekit.runtime.model.EdgeModel` on a registered engine (:class:`OnnxBackend`);
``.tflite`` through LiteRT (:class:`edgekit.measure.litert.TFLiteBackend`, the one backend that
is not an engine: it runs TFLite files only); ``.keras``, ``.h5`` and SavedModel folders through
TensorFlow (:class:`KerasBackend`: the model's ``tf.function``, i.e. graph mode, not eager).
TensorFlow, onnxruntime and LiteRT are imported when a backend needs them.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import InputError, require
from edgekit.io.onnxgraph import producers as producer_index
from edgekit.measure.backend import Backend, InputInfo
from edgekit.metadata import ModelMetadata

if TYPE_CHECKING:
    from edgekit.runtime.model import EdgeModel

__all__ = ["OnnxBackend", "KerasBackend", "load_backend"]


class OnnxBackend(Backend):
    """An ONNX model through :class:`edgekit.runtime.model.EdgeModel` (checked ``run`` path) on
    ``engine``: a registered engine (default ``"onnxruntime"``; ``"openvino"`` ...) or
    ``"auto"`` (the stored engine); ``precision`` default None (the runtime's: f32 pinned);
    ``path`` may also be a loaded ``EdgeModel``. ``kind`` is ``"onnx"`` on onnxruntime, else
    the engine's name."""

    kind = "onnx"
    _inputs: list[InputInfo] | None = None

    def __init__(self, path: str | os.PathLike[str] | EdgeModel, name: str | None = None, *,
                 provider: str = "cpu", threads: int | None = None,
                 graph_optimization: str | None = None, engine: str = "onnxruntime",
                 precision: str | None = None) -> None:
        from edgekit.runtime.model import EdgeModel

        if isinstance(path, EdgeModel):  # wrap a loaded model (its own settings apply)
            super().__init__(path.path, name)
            self.model = path
        else:
            super().__init__(path, name)
            self.model = _open_edge_model(self.path, provider, threads, graph_optimization,
                                          engine, precision)
        if self.model.package is not None:  # the variant file that runs
            self.path = self.model.path
        self.engine = self.model.engine_name
        if self.engine != "onnxruntime":
            self.kind = self.engine
        self.metadata = self.model.metadata

    @property
    def inputs(self) -> list[InputInfo]:
        """The model's inputs, made on first use: after the load, whose time (``load_backend``)
        leaves out the second read of the file that integer ids' ranges may need."""
        if self._inputs is None:
            self._inputs = _input_infos(self.model, self.metadata, self.path)
        return self._inputs

    @inputs.setter
    def inputs(self, value: list[InputInfo]) -> None:
        self._inputs = value or None  # Backend's empty list: not made yet

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.run(dict(zip(self.model.input_names, arrays, strict=True)))[0]

    def bind(self, arrays: Sequence[np.ndarray]) -> Callable[[], object]:
        feeds = dict(zip(self.model.input_names, arrays, strict=True))
        run = self.model.run
        return lambda: run(feeds)

    def close(self) -> None:
        self.model.close()


def _open_edge_model(path: Path, provider: str, threads: int | None,
                     graph_optimization: str | None, engine: str,
                     precision: str | None) -> EdgeModel:
    """``EdgeModel`` on ``engine`` (``"auto"``: the engine stored by ``edgekit tune``, else
    onnxruntime); engines that do not use onnxruntime's providers get ``"cpu"``."""
    from edgekit.runtime.engine_registry import engine_class
    from edgekit.runtime.model import EdgeModel
    from edgekit.runtime.session import SessionOptionsConfig

    if engine != "auto" and not engine_class(engine).uses_providers:
        provider = "cpu"
    return EdgeModel(path, provider, engine=engine, threads=threads,
                     graph_optimization=graph_optimization,
                     session=SessionOptionsConfig(precision=precision))


def _input_infos(model: EdgeModel, meta: ModelMetadata | None, path: Path) -> list[InputInfo]:
    """``model``'s inputs with their dtype and, for integer ones, the range of synthetic ids
    (:func:`_int_high`; the graph is read only when an integer input needs it)."""
    specs = [(s.name, s.shape, s.dtype or np.dtype("float32")) for s in model.inputs]
    needs = not _vocab_size(meta) and any(np.issubdtype(d, np.integer) for _, _, d in specs)
    tables = _id_tables(path) if needs else {}
    return [InputInfo(n, shape, d.name, _int_high(meta, n, tables)) for n, shape, d in specs]


def _int_high(meta: ModelMetadata | None, name: str, tables: dict[str, int]) -> int:
    """Exclusive upper bound of the synthetic ids of integer input ``name``: the tokenizer's
    vocabulary, else the rows of the embedding tables it indexes (``tables``), else 2."""
    vocab = _vocab_size(meta)
    return max(2, vocab) if vocab else max(2, tables.get(name, 2))


def _vocab_size(meta: ModelMetadata | None) -> int:
    """The tokenizer vocabulary's size in ``meta``, 0 without one."""
    tok = (meta.tokenizer if meta is not None else None) or {}
    vocab = tok.get("vocabulary") if isinstance(tok, dict) else None
    return len(vocab) if vocab else 0


def _id_tables(path: Path) -> dict[str, int]:
    """For each graph input that a Gather reads as indices (directly or through Casts), the
    rows of the smallest constant table it indexes on axis 0 (an Embedding; its weights may be
    behind a DequantizeLinear). Timed with ids 0 and 1 only, a lookup always hits the cache."""
    import onnx

    if path.suffix.lower() != ".onnx" or not path.is_file():
        return {}
    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    rows = {t.name: int(t.dims[0]) for t in graph.initializer if t.dims}
    producer = producer_index(graph)
    inputs = {i.name for i in graph.input} - set(rows)
    out: dict[str, int] = {}
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type != "Gather" or len(node.input) < 2 or axis != 0:
            continue
        table, ids = node.input[0], node.input[1]
        dq = producer.get(table)
        if dq is not None and dq.op_type == "DequantizeLinear":
            table = dq.input[0]
        while ids in producer and producer[ids].op_type == "Cast":
            ids = producer[ids].input[0]
        if ids in inputs and table in rows:
            out[ids] = min(out.get(ids, rows[table]), rows[table])
    return out


def _set_tf_threads(threads: int | None) -> bool:
    """Apply ``threads`` to TensorFlow; False when TF was already initialised differently."""
    if threads is None:
        return True
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1 if threads == 1 else threads)
        return True
    except RuntimeError:
        return tf.config.threading.get_intra_op_parallelism_threads() == threads


class KerasBackend(Backend):
    """A Keras model run through its ``tf.function`` (graph mode, ``training=False``).

    ``threads`` sets TensorFlow's intra-op pool; TensorFlow fixes it at its first op, so a later
    different value is ignored with a warning (run such cases in separate processes).
    """

    kind = "keras"

    def __init__(self, path: str | os.PathLike[str] | object, name: str | None = None, *,
                 threads: int | None = None) -> None:
        from edgekit.convert import load_source

        if isinstance(path, str | os.PathLike):
            super().__init__(path, name)
            src_arg: Any = self.path
        else:  # an in-memory Keras model
            super().__init__(getattr(path, "name", "model"), name)
            src_arg = path
        if not _set_tf_threads(threads):
            warnings.warn(f"TensorFlow already runs with other thread settings; "
                          f"threads={threads} is ignored for {self.name}", stacklevel=2)
        self.source = load_source(src_arg)
        self.metadata = self.source.metadata
        self.inputs = [
            InputInfo(s.name, s.shape, s.dtype, self.source.int_ranges.get(s.name, 2))
            for s in self.source.inputs
        ]

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.source.function(*arrays)[0])

    def bind(self, arrays: Sequence[np.ndarray]) -> Callable[[], object]:
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        fn = self.source.function
        return lambda: fn(*tensors)[0].numpy()


def load_backend(path: str | os.PathLike[str], name: str | None = None, *,
                 threads: int | None = None, provider: str = "cpu",
                 graph_optimization: str | None = None, engine: str = "auto",
                 precision: str | None = None) -> Backend:
    """A backend for ``path`` chosen by suffix: .onnx/.ort or an ONNX Runtime model package
    folder (on ``engine``, default ``"auto"``: the engine stored by ``edgekit tune``, else
    onnxruntime; ``precision`` see :class:`OnnxBackend`), .tflite, .keras/.h5/SavedModel."""
    from edgekit.measure.litert import TFLiteBackend, import_litert
    from edgekit.runtime.modelpackage import is_model_package

    p = Path(path)
    if not p.exists():
        raise InputError(f"model {p} does not exist", hint="check the path")
    suffix = p.suffix.lower()
    package = is_model_package(p)
    keras = not package and (suffix in (".keras", ".h5") or p.is_dir())
    if keras:  # import TensorFlow (or LiteRT) outside of the load time
        require("tensorflow", "export", "tensorflow-cpu")
    elif suffix == ".tflite":
        import_litert()
    t0 = time.perf_counter()
    b: Backend
    if suffix in (".onnx", ".ort") or package:
        b = OnnxBackend(p, name, provider=provider, threads=threads,
                        graph_optimization=graph_optimization, engine=engine,
                        precision=precision)
    elif suffix == ".tflite":
        b = TFLiteBackend(p, name, threads=threads)
    elif keras:
        b = KerasBackend(p, name, threads=threads)
    else:
        raise InputError(f"{p}: unknown model format {suffix!r}",
                         hint="use .onnx, .ort, .tflite, .keras, .h5 or a SavedModel folder")
    b.load_time_ms = (time.perf_counter() - t0) * 1000.0
    return b

