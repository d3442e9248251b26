"""The OpenVINO engine: an ONNX file run by the ``openvino`` runtime on CPU (``pip install
"edgekit[openvino]"``, imported when a model is loaded).

``Core().read_model`` then ``compile_model`` on CPU with the session's threads, precision
(``INFERENCE_PRECISION_HINT`` pinned to f32 unless bf16 is chosen) and performance hint.
Dynamic dimensions are compiled static per input shape (up to :data:`MAX_STATIC_SHAPES`, then
one dynamic compilation serves the rest), since static shapes run faster; each compilation
keeps one infer request per thread. Inputs are passed without copying, except small ones
(:data:`COPY_INPUT_BYTES`) to a static compilation, which are copied into the request's own
input buffer. Outputs are copied out of OpenVINO's buffers, so they stay valid. With
``batch_streams`` the model is compiled with that many ``NUM_STREAMS``, and each part of a split
batch (:mod:`edgekit.runtime.streams`) runs on its own thread's request, on its own stream.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from edgekit.errors import InputError, ModelLoadError, require
from edgekit.runtime.engine_base import Engine, Placement
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.runtime.specs import InputSpec, read_onnx_props, type_string

__all__ = ["OpenVinoEngine", "MAX_STATIC_SHAPES", "COPY_INPUT_BYTES", "load_openvino",
           "openvino_available"]

#: Input shapes an :class:`OpenVinoEngine` compiles statically before it compiles dynamically.
MAX_STATIC_SHAPES = 8
#: an input of at most this many bytes to a static compilation is copied into the infer
#: request's own buffer; a larger one is wrapped without copying. Wrapping costs a new
#: ``ov.Tensor`` every call, more than a memcpy of a few KiB: a Relu of 16 floats, AMX Xeon,
#: 9.8 us per call wrapped, 6.2 us copied into views of the request's input and output
#: buffers made once (``infer()`` alone 5.5 us, onnxruntime's whole call 3.9 us)
COPY_INPUT_BYTES = 16 * 1024


def load_openvino() -> Any:
    """The ``openvino`` module, or :class:`~edgekit.errors.MissingDependencyError` naming
    ``pip install "edgekit[openvino]"``."""
    return require("openvino", "openvino")


def openvino_available() -> bool:
    """True when ``import openvino`` works here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _cpu_capabilities() -> tuple[str, ...]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (asked once a process: a Core each time
    costs a plugin load); raises where OpenVINO or its CPU plugin is missing (not cached)."""
    return tuple(load_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class _Lane:
    """One thread's infer request and, for a static compilation, numpy views of its input and
    output buffers (allocated once with the request, and kept across calls while no input
    tensor replaces them; a dynamic one may reallocate them per shape: None)."""

    __slots__ = ("req", "inputs", "outputs")

    def __init__(self, compiled: Any, static: bool) -> None:
        self.req = compiled.create_infer_request()
        self.inputs: list[np.ndarray] | None = None
        self.outputs: list[np.ndarray] | None = None
        if static:
            self.inputs = [self.req.get_input_tensor(i).data for i in range(len(compiled.inputs))]
            self.outputs = [self.req.get_output_tensor(i).data
                            for i in range(len(compiled.outputs))]


class _Compiled:
    """One compiled model and one :class:`_Lane` per thread."""

    __slots__ = ("compiled", "local", "static")

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.local = threading.local()
        self.static = not any(p.get_partial_shape().is_dynamic
                              for p in [*compiled.inputs, *compiled.outputs])

    def new_lane(self) -> _Lane:
        lane = self.local.lane = _Lane(self.compiled, self.static)
        return lane


class OpenVinoEngine(Engine):
    """An ONNX file run by the ``openvino`` runtime on CPU (see the module doc).

    Args:
        path / config: the ``.onnx`` file and its settings (threads, precision, performance
            hint, ``openvino_config``; onnxruntime-only settings are ignored).
    """

    name = "openvino"
    aliases = ("ov",)
    label = "OpenVINO"
    settings = frozenset({"intra_op_num_threads", "precision", "performance_hint",
                          "openvino_config", "batch_streams"})
    precisions = ("f32", "bf16")
    package_providers = ("openvino", "cpu")
    #: Q/DQ on the inputs of the compute ops only, as OpenVINO's NNCF places them: its
    #: low-precision passes fuse each pair into an int8 (AMX/VNNI) kernel, while the extra
    #: pairs of a full QDQ file around Transpose, Squeeze, pooling ... run as separate
    #: FakeQuantize ops (conv1d_text of the zoo, AMX Xeon, batch 32, 1 thread: 0.15x fp32
    #: against 0.39x with the full QDQ file, and onnxruntime's best 0.27x)
    qdq_ops = ("Conv", "MatMul", "Gemm")
    #: its int8 kernels skip strided 1x1 convs (ResNet50's downsampling convs stay f32: 5 of
    #: 14 ms at batch 1, AMX Xeon); after a strided Slice they run in int8 (15.3 -> 9.2 ms,
    #: ahead of bf16's 10.5 ms). The stem conv is quantized, as NNCF does: onnxruntime's
    #: stem-in-float rule costs OpenVINO time (ResNet50 b1: 11.3 ms with it, 10.4 without)
    #: The ``channels_last_flatten`` rewrite is onnxruntime's: OpenVINO's plugin picks its own
    #: layouts, and the added Transpose would be one more op there
    qdq_scheme = MappingProxyType({"slice_strided_pointwise": True, "stem_in_float": False,
                                   "channels_last_flatten": False})
    #: with bf16 for the float parts, the compute ops' outputs stay float too (Q/DQ on their
    #: inputs only): each activation and the next quantization fuse into the int8 kernel
    #: (AMX Xeon, 1 thread, batch 1 / 32, ms: EfficientNetB0 7.1 / 199 against 9.1 / 293 for
    #: the f32 layout and 7.2 / 204 for bf16 alone; ResNet50 6.8 / 216 against 8.2 / 260;
    #: ConvNeXtTiny 23.4 / 685 against 23.8 / 768, bf16 alone 25.4 / 668). In f32 the float
    #: outputs cost memory traffic at batch 32 (ResNet50 277 -> 319 ms), so the f32 layout
    #: keeps them quantized. The tune measures it against bf16 alone, which still wins
    #: EfficientNet in its interleaved timing
    qdq_bf16_scheme = MappingProxyType({"float_outputs": True})
    check_in_child = True

    def __init__(self, path: Path, config: SessionOptionsConfig, placement: Placement) -> None:
        super().__init__(path, config, placement)
        why = self.file_problem(path)
        if why is not None:
            raise InputError(
                why, hint='use the .onnx file with engine="openvino", or engine="onnxruntime"')
        self._ov = load_openvino()
        self._tensor = self._ov.Tensor
        self._core = self._ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:
            raise openvino_read_error(path, exc) from exc
        self.props = read_onnx_props(path) or {}
        text = [p.get_any_name() for p in self._model.inputs
                if p.get_element_type() == self._ov.Type.string]
        if text:  # its compiler's own words name oneDNN, not the input
            raise ModelLoadError(
                "openvino cannot run this model: its CPU plugin has no string tensors, and "
                f"input(s) {', '.join(map(repr, text))} take text",
                hint='run it on onnxruntime (engine="onnxruntime"), which runs string tensors')
        self.inputs = tuple(_spec(p) for p in self._model.inputs)
        self.outputs = tuple(_spec(p) for p in self._model.outputs)
        self._in_names = tuple(s.name for s in self.inputs)
        self._single = self._in_names[0] if len(self._in_names) == 1 else None
        self._n_out = range(len(self.outputs))
        self._one_output = len(self.outputs) == 1
        self._lock = threading.Lock()
        self._by_shape: dict[Any, _Compiled] = {}
        self._static = 0
        self._dynamic: _Compiled | None = None
        self._compile_default()

    def _compile(self, model: Any) -> _Compiled:
        try:
            return _Compiled(self._core.compile_model(model, "CPU", self.config.to_openvino()))
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            raise ModelLoadError(
                f"openvino cannot compile {self.path.name}: {msg[-1] if msg else exc}",
                hint='check the session settings, or use engine="onnxruntime"',
            ) from exc

    def _compile_default(self) -> None:
        """Compile now for the default shape (dynamic dims 1), so load errors show at load."""
        key = tuple(tuple(1 if d is None else d for d in s.shape) for s in self.inputs)
        if all(d is not None for s in self.inputs for d in s.shape):
            self._store(self._key(key), self._compile(self._model))
            return
        try:
            self._compile_for(key)
        except (ModelLoadError, InputError):  # a dynamic length or batch that cannot be 1 (a
            self._dynamic = self._compile(self._model)  # model that mixes the batch): dynamic

    def _key(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        return shapes[0] if self._single is not None else shapes

    def _store(self, key: Any, c: _Compiled) -> _Compiled:
        if len(self._by_shape) < 4 * MAX_STATIC_SHAPES:
            self._by_shape[key] = c
        return c

    def _compile_for(self, shapes: tuple[tuple[int, ...], ...]) -> _Compiled:
        """The compilation for ``shapes`` (static while fewer than MAX_STATIC_SHAPES)."""
        with self._lock:
            if self.closed:
                raise self._closed_error()
            key = self._key(shapes)
            if key in self._by_shape:
                return self._by_shape[key]
            if self._static >= MAX_STATIC_SHAPES:
                if self._dynamic is None:
                    self._dynamic = self._compile(self._model)
                return self._store(key, self._dynamic)
            model = self._model.clone()
            try:
                model.reshape({i: list(s) for i, s in enumerate(shapes)})
            except Exception as exc:
                raise InputError(
                    f"openvino cannot run {self.path.name} on input shapes "
                    f"{[list(s) for s in shapes]}: {str(exc).strip().splitlines()[-1]}"
                ) from exc
            self._static += 1
            return self._store(key, self._compile(model))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # single input / single output: no loops or comprehensions (each costs ~1 us per call
        # on a 70-100 us CNN call; see benchmarks/runtime_overhead.py)
        if self._single is not None:
            a = feeds[self._single]
            c = self._by_shape.get(a.shape) or self._compile_for((a.shape,))
        else:
            arrays = [feeds[n] for n in self._in_names]
            shapes = tuple([x.shape for x in arrays])
            c = self._by_shape.get(shapes) or self._compile_for(shapes)
        try:
            lane = c.local.lane
        except AttributeError:
            lane = c.new_lane()
        req, views = lane.req, lane.inputs
        if self._single is not None:
            self._feed(lane, views, 0, a)
        else:
            for i, x in enumerate(arrays):
                self._feed(lane, views, i, x)
        try:
            req.infer()
        except RuntimeError as exc:
            raise InputError(f"openvino could not run {self.path.name}: {exc}") from exc
        outs = lane.outputs
        if outs is not None:
            return [outs[0].copy()] if self._one_output else [o.copy() for o in outs]
        if self._one_output:
            return [req.get_output_tensor().data.copy()]
        return [req.get_output_tensor(i).data.copy() for i in self._n_out]

    def _feed(self, lane: _Lane, views: list[np.ndarray] | None, i: int, x: np.ndarray
              ) -> None:
        """Input ``i`` of ``lane``: copied into ``views[i]`` (the request's own buffer, as the
        call began) when it is small enough, else shared (:meth:`_share`)."""
        if views is not None and x.nbytes <= COPY_INPUT_BYTES:
            np.copyto(views[i], x)
        else:
            self._share(lane, i, x)

    def _share(self, lane: _Lane, i: int, x: np.ndarray) -> None:
        """Hand ``x`` to input ``i`` of ``lane`` without copying (a copy when it is read-only
        or not C-contiguous); the request's own input buffers are then no longer its inputs."""
        lane.inputs = None
        try:
            lane.req.set_input_tensor(i, self._tensor(x, shared_memory=True))
        except (ValueError, RuntimeError):  # read-only or not C-contiguous: copy it
            lane.req.set_input_tensor(i, self._tensor(np.array(x, order="C")))

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if openvino_available():
            return None
        return 'is not installed (pip install "edgekit[openvino]")'

    @classmethod
    def require(cls) -> None:
        load_openvino()

    @classmethod
    def version(cls) -> str | None:
        if not openvino_available():
            return None
        import openvino as ov

        return str(ov.get_version()).split("-")[0]

    @classmethod
    def precision_problem(cls, precision: str) -> str | None:
        """bf16 needs ``BF16`` in the CPU plugin's optimization capabilities (the
        avx512_bf16 / amx_bf16 flags)."""
        why = super().precision_problem(precision)
        if why is not None or precision != "bf16":
            return why
        try:
            caps = _cpu_capabilities()
        except Exception as exc:  # no openvino, or no CPU plugin
            return f"OpenVINO's CPU plugin is unavailable ({exc})"
        if "BF16" in caps:
            return None
        return ("this CPU has no bf16 instructions (no avx512_bf16/amx_bf16; "
                f"OpenVINO capabilities {', '.join(caps)})")

    @property
    def compiled(self) -> object:
        """The ``openvino.CompiledModel`` of the default shape (properties: ``get_property``)."""
        if self.closed:
            raise self._closed_error()
        key = tuple(tuple(1 if d is None else d for d in s.shape) for s in self.inputs)
        c = self._by_shape.get(self._key(key)) or self._dynamic
        assert c is not None
        return c.compiled

    @property
    def providers(self) -> list[str]:
        if self.closed:
            raise self._closed_error()
        return ["openvino:CPU"]

    @property
    def device(self) -> str:
        return f"openvino CPU ({self._core.get_property('CPU', 'FULL_DEVICE_NAME')})"

    def close(self) -> None:
        with self._lock:
            super().close()
            self._by_shape = {}
            self._dynamic = None


#: how OpenVINO's ONNX reader names the ops it has no rule for
_UNREAD = re.compile(r"(?:No conversion rule found for operations|Conversion is failed for):?"
                     r"\s*([^\n]+)")


def openvino_read_error(path: Path, exc: BaseException) -> ModelLoadError:
    """The error for a file OpenVINO's reader refused: the ops it cannot read when it names
    them (a valid file, an engine gap), else its last message line."""
    text = str(exc)
    found = _UNREAD.search(text)
    if found:
        ops = found.group(1).strip().rstrip(".")
        return ModelLoadError(
            f"OpenVINO cannot read {ops} in {path.name} (its ONNX reader has no rule for it)",
            hint='run it on onnxruntime (engine="onnxruntime"), which reads every standard op')
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    return ModelLoadError(f"cannot load {path} with openvino: {last}",
                          hint="the file may be truncated or not a model; re-export it")


def _spec(port: Any) -> InputSpec:
    """An :class:`InputSpec` from an OpenVINO model input/output port."""
    pshape = port.get_partial_shape()
    if pshape.rank.is_dynamic:
        shape: list[int | None] = []
    else:
        shape = [d.get_length() if d.is_static else None for d in pshape]
    return InputSpec(port.get_any_name(), type_string(port.get_element_type().to_dtype()), shape)
