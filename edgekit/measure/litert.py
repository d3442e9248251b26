"""``.tflite`` files in ``bench``, ``compare`` and ``check``: LiteRT's ``CompiledModel`` API by
default, its ``Interpreter`` (in maintenance mode upstream) as the documented fallback.

:class:`TFLiteBackend` compiles the model for the CPU (XNNPACK, ``num_threads=threads``) and
makes its tensor buffers once per input shape: a call writes the inputs into LiteRT's input
buffers, runs, and copies the first output out of its buffer. Another batch size resizes the
inputs and makes new buffers once. The Interpreter takes over, for the rest of the backend's
life, where ``CompiledModel`` cannot run the model: ``ai-edge-litert`` missing or without the
API, a model it cannot load, a tensor type its buffers do not take, inputs it cannot resize to
the asked shapes (static dimensions), or an output whose shape at the new input shapes is not
known before running. ``backend.runtime`` says which API runs and why; ``bench`` and
``compare`` print it under their tables and store it in their JSON.

The output buffers are host memory bound with ``TensorBuffer.create_from_host_memory``, made
for the output shapes the model's shape signatures give (and checked after the first run), not
``CompiledModel.create_output_buffers``: in ai-edge-litert 2.3 the buffers that makes after
``resize_input_tensor`` keep the old size until a run has propagated the new shapes, and
running into them writes past their end. Reading a bound host array is also cheaper per call
than ``TensorBuffer.read``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import InputError, ModelLoadError, exception_reason, require
from edgekit.logs import library_logs_silenced
from edgekit.measure.backend import Backend, InputInfo

__all__ = ["API_COMPILED", "API_INTERPRETER", "TFLiteBackend", "import_litert",
           "tflite_interpreter_class"]

API_COMPILED = "CompiledModel"
API_INTERPRETER = "Interpreter"
#: tensor types LiteRT's ``TensorBuffer`` writes and reads (ai-edge-litert 2.3, bf16/fp8 aside)
_BUFFER_DTYPES = frozenset({"float32", "float16", "int32", "int8", "uint8", "bool"})


class _NoCompiledModel(Exception):
    """Why ``CompiledModel`` cannot run this model (or these shapes): the Interpreter takes
    over. Internal, never leaves this module."""


def tflite_interpreter_class() -> tuple[Any, str]:
    """The TFLite interpreter class and its name: LiteRT's standalone
    ``ai_edge_litert.interpreter.Interpreter`` (XNNPACK default delegate), else the deprecated
    ``tf.lite.Interpreter`` when ``ai-edge-litert`` is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "litert"
    except ImportError:
        tf: Any = require("tensorflow", "export", "tensorflow-cpu")
        return tf.lite.Interpreter, "tf.lite"


def import_litert() -> None:
    """Import what :class:`TFLiteBackend` runs on and make LiteRT's environment (once per
    process), so that load times leave both out."""
    try:
        import ai_edge_litert.compiled_model  # noqa: F401
    except ImportError:
        tflite_interpreter_class()
        return
    with contextlib.suppress(RuntimeError):  # LiteRT's C++ status: the backend falls back then
        _environment()


@functools.cache
def _environment() -> Any:
    """One LiteRT environment per process, for the CPU only: the compiler-plugin and dispatch
    paths name a folder that cannot exist, because the default environment loads every vendor
    NPU plugin shipped in the wheel (to compile the model for an NPU) at each model load."""
    from ai_edge_litert.environment import Environment

    nowhere = os.path.join(os.devnull, "no-plugins")
    with library_logs_silenced():
        env = Environment.create(compiler_plugin_path=nowhere, dispatch_library_path=nowhere)
    atexit.register(_release_environment)
    return env


def _release_environment() -> None:
    """Free the environment (and the models no one holds) at exit, without the page of
    ``DestroyAccelerator`` lines LiteRT logs then."""
    with library_logs_silenced():
        _environment.cache_clear()
        gc.collect()


def _reason(exc: BaseException) -> str:
    """LiteRT's error on one line, without its source locations."""
    text = re.sub(r"(CompiledModel error: code=\d+, message=)|(ERROR: \[[^\]]*\])|└", " ",
                  exception_reason(exc, 1000))
    return exception_reason(Exception(text), 200)


@dataclass(frozen=True)
class _Tensor:
    """An input or output of the model's main subgraph (``signature``: None = dynamic)."""

    index: int
    name: str
    signature: tuple[int | None, ...]


def _io_tensors(content: bytes) -> tuple[list[_Tensor], list[_Tensor]]:
    """Inputs and outputs of subgraph 0 in the Interpreter's order, from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as fb

    graph = fb.Model.GetRootAs(content, 0).Subgraphs(0)

    def tensor(i: int) -> _Tensor:
        t = graph.Tensors(i)
        dims = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
        sig = tuple(None if int(d) < 0 else int(d) for d in np.atleast_1d(dims)) \
            if t.ShapeLength() else ()
        return _Tensor(i, t.Name().decode(), sig)

    return ([tensor(int(i)) for i in graph.InputsAsNumpy()],
            [tensor(int(i)) for i in graph.OutputsAsNumpy()])


def _aligned_empty(shape: Sequence[int], dtype: str, alignment: int = 64) -> np.ndarray:
    """An uninitialised array starting on an ``alignment``-byte boundary: LiteRT binds such
    host memory without a copy (an unaligned array is copied, and the copy would not outlive
    the call that binds it)."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes].view(dt).reshape(tuple(shape))


class TFLiteBackend(Backend):
    """A ``.tflite`` file (or its bytes, ``content``) through LiteRT's ``CompiledModel`` on the
    CPU (XNNPACK, ``num_threads=threads``; default None: LiteRT's default, one thread), else
    through the Interpreter (see the module doc): ``api="interpreter"`` asks for it outright.
    ``self.api`` is the API that runs now, ``self.fallback`` why it is the Interpreter
    (None when asked for or when ``CompiledModel`` runs), ``self.runtime`` both in words."""

    kind = "tflite"

    def __init__(self, path: str | os.PathLike[str], name: str | None = None, *,
                 threads: int | None = None, content: bytes | None = None,
                 metadata: Any = None, api: str = "auto") -> None:
        super().__init__(path, name)
        if api not in ("auto", "interpreter"):
            raise InputError(f"unknown TFLite API {api!r}", hint="use auto or interpreter")
        self.metadata = metadata
        self.threads = threads
        self._content = content
        self.api = API_COMPILED
        self.fallback: str | None = None
        self.library = "litert"
        self._interp: Any = None
        self._cm: Any = None
        self._shape: list[tuple[int, ...]] = []
        if api == "interpreter":
            self._use_interpreter(None)
            return
        try:
            self._open_compiled()
        except _NoCompiledModel as exc:
            self._use_interpreter(str(exc))

    @property
    def runtime(self) -> str:
        threads = (f"{self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads
                   else "default threads")
        if self.api == API_COMPILED:
            return f"LiteRT CompiledModel (CPU, XNNPACK, {threads})"
        lib = "LiteRT" if self.library == "litert" else "tf.lite"
        why = f"; fallback: {self.fallback}" if self.fallback else ""
        return f"{lib} Interpreter (XNNPACK, {threads}){why}"

    # -- CompiledModel ----------------------------------------------------------------------
    def _open_compiled(self) -> None:
        """Compile for the CPU, map the signature to the model's input/output order, make the
        buffers; :class:`_NoCompiledModel` when that cannot be done."""
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.hardware_accelerator import HardwareAccelerator
            from ai_edge_litert.options import CpuOptions, Options
        except ImportError as exc:  # no ai-edge-litert, or one older than the CompiledModel API
            raise _NoCompiledModel(f"no CompiledModel API here ({exc})") from exc
        options = Options(HardwareAccelerator.CPU,
                          cpu_options=CpuOptions(num_threads=self.threads or 0))
        try:
            with library_logs_silenced():
                if self._content is not None:
                    cm = CompiledModel.from_buffer(self._content, environment=_environment(),
                                                   options=options)
                else:
                    cm = CompiledModel.from_file(str(self.path), environment=_environment(),
                                                 options=options)
        except RuntimeError as exc:  # LiteRT's C++ status (bad file, an op it cannot run ...)
            raise _NoCompiledModel(f"CompiledModel cannot load it: {_reason(exc)}") from exc
        try:
            self._map_signature(cm, self._content if self._content is not None
                                else self.path.read_bytes())
        except RuntimeError as exc:  # buffers it cannot make
            raise _NoCompiledModel(f"CompiledModel cannot run it: {_reason(exc)}") from exc
        self._cm = cm

    def _map_signature(self, cm: Any, content: bytes) -> None:
        """Signature 0 of ``cm`` against subgraph 0 of the file (the Interpreter's order)."""
        signatures = cm.get_signature_list()
        if not signatures:
            raise _NoCompiledModel("it has no signature")
        key = next(iter(signatures))
        sig = signatures[key]
        ins, outs = cm.get_input_tensor_details(key), cm.get_output_tensor_details(key)
        model_in, model_out = _io_tensors(content)
        sig_in = {ins[n]["index"]: (i, ins[n]) for i, n in enumerate(sig["inputs"])}
        sig_out = {outs[n]["index"]: (i, outs[n]) for i, n in enumerate(sig["outputs"])}
        if (sorted(sig_in) != sorted(t.index for t in model_in)
                or sorted(sig_out) != sorted(t.index for t in model_out)):
            raise _NoCompiledModel(f"its signature {key!r} is not the model's main subgraph")
        for _, d in (*sig_in.values(), *sig_out.values()):
            if d["dtype"] not in _BUFFER_DTYPES:
                raise _NoCompiledModel(f"LiteRT tensor buffers do not take {d['dtype']} "
                                       f"({d['name']})")
        self._key = key
        self._in_pos = [sig_in[t.index][0] for t in model_in]  # signature position, model order
        self._in_dtypes = [np.dtype(sig_in[t.index][1]["dtype"]) for t in model_in]
        self._out_first = sig_out[model_out[0].index][0]  # the Interpreter's first output
        self._out_names = list(sig["outputs"])
        self._out_sigs = {sig_out[t.index][0]: t.signature for t in model_out}
        self._out_dtypes = [np.dtype(outs[n]["dtype"]) for n in sig["outputs"]]
        self.inputs = [InputInfo(t.name, t.signature, self._in_dtypes[k].name)
                       for k, t in enumerate(model_in)]
        self._shape = [tuple(int(s) for s in sig_in[t.index][1]["shape"]) for t in model_in]
        self._bufs(cm.create_input_buffers(0),
                   [tuple(int(s) for s in outs[n]["shape"]) for n in sig["outputs"]])

    def _bufs(self, in_bufs: list[Any], out_shapes: list[tuple[int, ...]]) -> None:
        """Keep ``in_bufs`` (LiteRT's, signature order) and bind host memory of ``out_shapes``
        as the output buffers (see the module doc)."""
        from ai_edge_litert.tensor_buffer import TensorBuffer

        self._in_bufs = in_bufs  # what run_by_index takes
        self._in_model = [in_bufs[p] for p in self._in_pos]  # the same, in model input order
        self._out_host = [_aligned_empty(s, dt.name)
                          for s, dt in zip(out_shapes, self._out_dtypes, strict=True)]
        self._out_bufs = [TensorBuffer.create_from_host_memory(h) for h in self._out_host]
        self._out_first_host = self._out_host[self._out_first]

    def _infer_compiled(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if [a.shape for a in arrays] != self._shape:
            return self._reshape(arrays)
        for buf, a in zip(self._in_model, arrays, strict=True):
            buf.write(a)
        self._cm.run_by_index(0, self._in_bufs, self._out_bufs)
        return self._out_first_host.copy()

    def _out_shapes(self, shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Output shapes (signature order) at input ``shapes``: dynamic dimensions of an
        output are known only for the batch dimension, when every input has that batch."""
        batches = {s[0] for s in shapes if s}
        out = []
        for pos, name in enumerate(self._out_names):
            sig = self._out_sigs[pos]
            if any(d is None for d in sig[1:]) or (sig and sig[0] is None and len(batches) != 1):
                raise _NoCompiledModel(f"the shape of output {name!r} at inputs {shapes} is "
                                       "known only after running")
            out.append(tuple(next(iter(batches)) if d is None else d for d in sig))
        return out

    def _reshape(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Resize the inputs, make buffers for the new shapes, run, and check that the
        outputs have the shapes their buffers were made for (see the module doc)."""
        cm, shapes = self._cm, [tuple(a.shape) for a in arrays]
        with library_logs_silenced():
            try:
                for k, s in enumerate(shapes):
                    cm.resize_input_tensor(self._in_pos[k], list(s))
            except RuntimeError as exc:  # static dimensions, or a rank it does not take
                raise _NoCompiledModel(f"CompiledModel cannot resize the inputs to {shapes}: "
                                       f"{_reason(exc)}") from exc
            want = self._out_shapes(shapes)
            try:
                self._bufs(cm.create_input_buffers(0), want)
                for buf, a in zip(self._in_model, arrays, strict=True):
                    buf.write(a)
                cm.run_by_index(0, self._in_bufs, self._out_bufs)
                details = cm.get_output_tensor_details(self._key)
            except RuntimeError as exc:
                raise _NoCompiledModel(f"CompiledModel failed at inputs {shapes}: "
                                       f"{_reason(exc)}") from exc
        got = [tuple(details[n]["shape"]) for n in self._out_names]
        if got != want:
            raise _NoCompiledModel(f"its outputs at inputs {shapes} are {got}, not {want}")
        self._shape = shapes
        return self._out_first_host.copy()

    # -- Interpreter ------------------------------------------------------------------------
    def _use_interpreter(self, reason: str | None) -> None:
        """Switch to the Interpreter for good (``reason``: why, None when asked for)."""
        cls, self.library = tflite_interpreter_class()
        if reason is not None and self.library != "litert":
            reason = "ai-edge-litert is not installed"
        threads = self.threads or None  # the Interpreter takes >= 1 or None (its default)
        try:
            with warnings.catch_warnings(), library_logs_silenced():
                warnings.simplefilter("ignore")
                if self._content is None:
                    interp = cls(model_path=str(self.path), num_threads=threads)
                else:
                    interp = cls(model_content=self._content, num_threads=threads)
        except ValueError as exc:  # the Interpreter's word for a file it cannot load
            raise ModelLoadError(f"{self.path}: not a TFLite model LiteRT can load: "
                                 f"{exception_reason(exc, 300)}"
                                 + (f" (CompiledModel: {reason})" if reason else "")) from exc
        self._cm = None
        self._interp, self.api, self.fallback = interp, API_INTERPRETER, reason
        self._in = interp.get_input_details()
        self._out = interp.get_output_details()[0]["index"]
        self._shape = [tuple(d["shape"]) for d in self._in]
        interp.allocate_tensors()
        if not self.inputs:
            self.inputs = [
                InputInfo(d["name"], tuple(None if int(s) < 0 else int(s)
                                           for s in d["shape_signature"]),
                          np.dtype(d["dtype"]).name)
                for d in self._in
            ]

    def _infer_interpreter(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        shapes = [tuple(a.shape) for a in arrays]
        if shapes != self._shape:
            for d, s in zip(self._in, shapes, strict=True):
                self._interp.resize_tensor_input(d["index"], list(s))
            self._interp.allocate_tensors()
            self._shape = shapes
        for d, a in zip(self._in, arrays, strict=True):
            self._interp.set_tensor(d["index"], a)
        self._interp.invoke()
        return self._interp.get_tensor(self._out)

    # -- Backend ----------------------------------------------------------------------------
    def _model_arrays(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``arrays`` contiguous, in the dtypes of the model's inputs."""
        dtypes = (self._in_dtypes if self._cm is not None
                  else [np.dtype(d["dtype"]) for d in self._in])
        return [np.ascontiguousarray(a, dtype=dt) for a, dt in zip(arrays, dtypes, strict=True)]

    def _call(self, arrays: list[np.ndarray]) -> np.ndarray:
        if self._cm is not None:
            try:
                return self._infer_compiled(arrays)
            except _NoCompiledModel as exc:
                self._use_interpreter(str(exc))
        return self._infer_interpreter(arrays)

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return self._call(self._model_arrays(arrays))

    def bind(self, arrays: Sequence[np.ndarray]) -> Callable[[], Any]:
        arrays = self._model_arrays(arrays)
        call = self._call
        return lambda: call(arrays)

    def close(self) -> None:
        self._cm = self._interp = None
        self._in_bufs, self._in_model, self._out_bufs, self._out_host = [], [], [], []
