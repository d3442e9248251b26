"""tf2onnx 1.17 around Keras 3: the rewrites and checks that make real models convert.

tf2onnx is unmaintained and does not raise on ops it cannot convert, so the export path
fixes the known gaps itself (each one a regression test in ``tests/test_export_fixes.py``):

* **Captured constants.** Keras 3 keeps some layer state as plain tensors (an adapted
  ``Normalization``'s mean and variance); a ``tf.function`` captures them as extra
  placeholders and tf2onnx turns those into graph *inputs*. :func:`bind_captured_constants`
  turns them into initializers and checks that the ONNX inputs are exactly the signature's.
* **Nested XLA functions.** Keras runs grouped convolutions (ConvNeXt's depthwise
  ``Conv2D(groups=C)``) through ``tf.function(jit_compile=True)`` on CPU; grappler does not
  inline XLA functions, so tf2onnx sees an opaque ``StatefulPartitionedCall``. While tracing
  for conversion, :func:`tracing_for_conversion` makes Keras emit the plain ``Conv2D`` op
  (tf2onnx converts grouped convolutions to ``Conv(group=...)``); the Keras reference used for
  validation is left untouched.
* **Erfc** (exact GELU): converted as ``1 - Erf(x)``.
* **Integer comparisons.** tf2onnx converts ``Less``/``Greater`` through float32 casts at
  every opset, so 32- and 64-bit integers above 2**24 compared rounded (``99999999 < 10**8``
  came out False); :func:`_exact_less_greater` compares them as 64-bit integers.
  (``LessEqual``, ``GreaterEqual``, ``Equal``, ``Minimum`` and ``Maximum`` on integers are
  exact from opset 12; edgekit's lowest is 13.) ``TopKV2`` went through float32 the same way
  (values rounded, near-equal ones tied, int32 ``2**31 - 1`` came back as ``-2**31``):
  :func:`_exact_top_k` ranks 32- and 64-bit integers and doubles as they are.
* **Speed.** tf2onnx deep-copies the whole graph, weights included, before each of its ~12
  optimizer passes so that it can roll a failing pass back; on ResNet50 that is a third of
  the conversion time. :func:`from_function` converts without the copies first
  (``TF2ONNX_CATCH_ERRORS=FALSE``) and only redoes the conversion tf2onnx's default way when
  a pass fails. Two more costs are cut while it converts: the garbage collections after
  each pass (kept for memory, below) scan only the objects conversion creates
  (``gc.freeze``), and the transpose optimizer folds constant ``Reshape``s with one
  topological sort instead of one per fold (:func:`_fold_constant_reshapes`); together they
  took NASNetMobile's export from 60 to 37 s with a bit-identical model.
* **Memory.** tf2onnx freezes the function with ``convert_variables_to_constants_v2``, which
  builds a whole new concrete function around the frozen graph only for tf2onnx to read its
  graph back, then imports that graph into a session only to drop resource inputs.
  :func:`_lean_freeze` replaces the variables by constants and reads the shapes from one plain
  import: the same graph for grappler, without the function and the session (ResNet50 at 224:
  the conversion's peak 2.9 -> 2.1 GB, the same ONNX graph and weights).

TensorFlow, Keras and tf2onnx are imported inside the functions (the ``export`` extra).
"""

from __future__ import annotations

import gc
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgekit.errors import ConversionError
from edgekit.io.memory import release_memory

if TYPE_CHECKING:
    import onnx

__all__ = ["MAX_OPSET", "tracing_for_conversion", "custom_op_handlers", "captured_constants",
           "bind_captured_constants", "from_function", "higher_opset_for"]

MAX_OPSET = 18  # tf2onnx 1.17


def _plain_conv(inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid",
                data_format: str | None = None, dilation_rate: Any = 1) -> Any:
    """Keras' TensorFlow ``conv`` without its XLA detour (same op, traceable by tf2onnx)."""
    import tensorflow as tf
    from keras.src import backend
    from keras.src.backend.tensorflow.nn import _convert_data_format

    data_format = backend.standardize_data_format(data_format)
    return tf.nn.convolution(inputs, kernel, strides, padding.upper(),
                             data_format=_convert_data_format(data_format, len(inputs.shape)),
                             dilations=dilation_rate)


@contextmanager
def tracing_for_conversion() -> Iterator[None]:
    """Within the block, Keras convolutions trace as plain TF ops (no nested XLA function)."""
    try:
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # another Keras layout: nothing to patch
        yield
        return
    original = tf_nn.conv
    tf_nn.conv = _plain_conv
    try:
        yield
    finally:
        tf_nn.conv = original


def _erfc(ctx: Any, node: Any, name: str, args: Sequence[Any]) -> None:
    """tf2onnx handler: ``Erfc(x)`` -> ``Sub(1, Erf(x))``."""
    from tf2onnx import utils

    x = node.input[0]
    np_type = utils.map_onnx_to_numpy_type(ctx.get_dtype(x))
    erf = ctx.make_node("Erf", [x], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=np_type))
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"


def _exact_less_greater(ctx: Any, node: Any, name: str, args: Sequence[Any]) -> None:
    """tf2onnx handler for ``Less``/``Greater``: 32- and 64-bit integers compare as integers.

    tf2onnx 1.17's handler (its opset-7 one, used at every opset) casts both inputs to
    float32 unless they are floats, which rounds integers above 2**24. ONNX ``Less`` and
    ``Greater`` take every integer type from opset 9 (onnxruntime and OpenVINO run them): 64-bit
    integers are compared as they are, 32-bit ones as int64 (exact). The widening is needed:
    tf2onnx's ``While`` conversion, which comes later, makes the loop's ``maximum_iterations``
    int64 under a condition that compares it with the int32 counter (its float casts hid the
    mismatch), so an int32 comparison can end up with one int64 input. Everything else keeps
    tf2onnx's handling: floats, and 8- and 16-bit integers, which float32 holds exactly.
    """
    from onnx import TensorProto
    from tf2onnx.onnx_opset.logical import GreaterLess

    compare_as = {TensorProto.INT64: None, TensorProto.UINT64: None,
                  TensorProto.INT32: TensorProto.INT64, TensorProto.UINT32: TensorProto.INT64}
    dtypes = {ctx.get_dtype(x) for x in node.input}
    if ctx.opset >= 9 and len(dtypes) == 1 and dtypes <= compare_as.keys():
        to = compare_as[dtypes.pop()]
        for i, x in enumerate(list(node.input) if to is not None else []):
            cast = ctx.insert_new_node_on_input(node, "Cast", x, input_index=i, to=to)
            ctx.copy_shape(x, cast.output[0])
            ctx.set_dtype(cast.output[0], to)
        return  # the node is already ONNX Less/Greater
    if ctx.opset >= 7:
        GreaterLess.version_7(ctx, node)
    else:
        GreaterLess.version_1(ctx, node)


def _exact_top_k(ctx: Any, node: Any, name: str, args: Sequence[Any]) -> None:
    """tf2onnx handler for ``TopKV2`` (the node is already ONNX ``TopK``): 32- and 64-bit
    integers and doubles are ranked as they are.

    tf2onnx 1.17's handler (opset 10 and up) casts every input but float32 to float32 and the
    values back, which rounds integers above 2**24 and doubles: values come out changed
    (int32 ``2**31 - 1`` as ``-2**31``) and near-equal ones tie, so the indices are wrong too.
    ONNX ``TopK`` takes integers from opset 11 and onnxruntime's CPU kernel runs int32, int64,
    float and double: those run as they are; uint32, which it lacks, runs as int64 (exact).
    ``k`` becomes the 1-D int64 ONNX wants and the indices TF's type, as tf2onnx does;
    ``sorted`` passes through as with tf2onnx. Everything else keeps tf2onnx's handling:
    8/16-bit integers and half floats, which float32 holds exactly, and uint64 (no exact type
    to run it as; rounded above 2**24 as before).
    """
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.graph_builder import GraphBuilder
    from tf2onnx.onnx_opset.tensor import TopKV2

    int64 = TensorProto.INT64
    run_as = {int64: None, TensorProto.INT32: None, TensorProto.DOUBLE: None,
              TensorProto.UINT32: int64}
    values, indices = node.output_dtypes
    if ctx.opset < 11 or values not in run_as:
        if ctx.opset >= 10:
            TopKV2.any_version_after10(ctx.opset, ctx, node)
        else:
            TopKV2.version_1(ctx, node)
        return
    k = ctx.make_node("Cast", [node.input[1]], attr={"to": int64})  # TF: 0-D int32
    k_1d = GraphBuilder(ctx).make_unsqueeze({"data": k.output[0], "axes": [0]},
                                            return_node=True)
    ctx.replace_input(node, node.input[1], k_1d.output[0], 1)

    def cast_back(port: int, ranked: int, dtype: int) -> None:  # output ``port`` as TF's dtype
        back = ctx.insert_new_node_on_output("Cast", node.output[port],
                                             name=utils.make_name(node.name), to=dtype)
        ctx.set_dtype(back.output[0], dtype)
        ctx.copy_shape(node.output[port], back.output[0])
        ctx.set_dtype(node.output[port], ranked)

    to = run_as[values]
    if to is not None:  # ranked widened, the values cast back
        wide = ctx.insert_new_node_on_input(node, "Cast", node.input[0], input_index=0, to=to)
        ctx.set_dtype(wide.output[0], to)
        ctx.copy_shape(wide.input[0], wide.output[0])
        cast_back(0, to, values)
    cast_back(1, int64, indices)


def custom_op_handlers() -> dict[str, tuple[Callable[..., None], list[object]]]:
    """``custom_op_handlers`` for ``tf2onnx.convert.from_function``: TF ops tf2onnx lacks
    or converts inexactly."""
    return {"Erfc": (_erfc, []), "Less": (_exact_less_greater, []),
            "Greater": (_exact_less_greater, []), "TopKV2": (_exact_top_k, ["TopK"])}


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class _Collecting:
    """A tf2onnx optimizer that collects garbage after its pass: each pass re-serializes
    every node (weights included) into protobuf objects held in reference cycles, which
    Python's collector, counting objects rather than bytes, leaves for gigabytes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def graph_been_opt(self) -> bool:
        return bool(self.inner.graph_been_opt)

    def optimize(self, graph: Any, iteration: int) -> Any:
        out = self.inner.optimize(graph, iteration)
        gc.collect()
        return out


def _fresh_update_proto(original: Any) -> Any:
    """tf2onnx's ``Node.update_proto`` into a new NodeProto: rewriting the attributes of the
    same message (as tf2onnx does on every optimizer pass) keeps each old copy of the
    node's weights in that message's protobuf arena until the node dies."""
    import onnx

    def update_proto(self: Any, external_tensor_storage: Any = None) -> Any:
        old = self._op
        self._op = onnx.NodeProto(name=old.name, op_type=old.op_type, domain=old.domain,
                                  doc_string=old.doc_string)
        return original(self, external_tensor_storage)

    return update_proto


def _fold_constant_reshapes(self: Any) -> None:
    """tf2onnx's ``TransposeOptimizer.pre_optimize_action`` with one topological sort: the
    original sorts the whole graph (and scans every node) once per folded ``Reshape``, which
    on NASNetMobile was a sixth of the conversion time. Same folds, same graph."""
    graph = self._g
    self._output_names = [graph.get_node_by_output(out).name for out in graph.outputs]
    reshapes = [n for n in graph.get_nodes() if n.type == "Reshape"
                and n.inputs[0].is_const() and n.inputs[1].is_const()]
    for reshape in reshapes:
        data = reshape.inputs[0].get_tensor_value(as_list=False)
        shape = reshape.inputs[1].get_tensor_value(as_list=True)
        shape = [data.shape[i] if dim == 0 else dim for i, dim in enumerate(shape)]
        graph.remove_node(reshape.name)
        graph.make_const(reshape.output[0], np.reshape(data, shape))  # same output name
    if reshapes:
        graph.topological_sort(graph.get_nodes())


@contextmanager
def _faster_tf2onnx() -> Iterator[None]:
    """tf2onnx with garbage collected after each optimizer pass, fresh node protos,
    :func:`_fold_constant_reshapes` and :func:`_lean_freeze` (all restored on exit)."""
    from tf2onnx import graph, optimizer, tf_loader
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    original = optimizer._optimizers
    update = graph.Node.update_proto
    fold = TransposeOptimizer.pre_optimize_action
    freeze = tf_loader.from_function
    tf_loader.from_function = _lean_freeze(freeze)
    optimizer._optimizers = OrderedDict(
        (name, (lambda f=factory: _Collecting(f()))) for name, factory in original.items())
    graph.Node.update_proto = _fresh_update_proto(update)
    TransposeOptimizer.pre_optimize_action = _fold_constant_reshapes
    try:
        yield
    finally:
        optimizer._optimizers = original
        graph.Node.update_proto = update
        TransposeOptimizer.pre_optimize_action = fold
        tf_loader.from_function = freeze


def _lean_freeze(original: Callable[..., Any]) -> Callable[..., Any]:
    """``tf2onnx.tf_loader.from_function`` (freeze, then grappler) without its two extra
    copies of the graph: the variables become constants in a ``GraphDef``
    (TensorFlow's ``_replace_variables_by_constants``, as ``convert_variables_to_constants_v2``
    does), one import into a plain graph adds the shapes tf2onnx reads, and grappler runs on
    that. Where TensorFlow's private API is missing or the freeze fails, tf2onnx's own way."""

    def freeze(func: Any, input_names: list[str], output_names: list[str],
               large_model: bool = False) -> Any:
        import tensorflow as tf
        from tf2onnx import tf_loader

        if large_model:
            return original(func, input_names, output_names, large_model)
        try:
            from tensorflow.python.framework import convert_to_constants as cc
            data = cc._FunctionConverterDataInEager(
                func=func, lower_control_flow=False, aggressive_inlining=True)
            frozen, _ = cc._replace_variables_by_constants(converter_data=data)
        except Exception:  # tf2onnx's own fallback for freezing errors takes over
            return original(func, input_names, output_names, large_model)
        del data
        with tf.Graph().as_default() as plain:
            tf.import_graph_def(frozen, name="")
            del frozen
            inputs = [n for n in input_names
                      if plain.get_tensor_by_name(n).dtype != tf.dtypes.resource]
            graph_def = plain.as_graph_def(add_shapes=True)
        del plain
        gc.collect()
        graph_def = tf_loader.fix_freezing_errors_part2(graph_def)
        with tf.Graph().as_default():  # grappler exports a meta graph: not in eager mode
            return tf_loader.tf_optimize(inputs, output_names, graph_def)

    return freeze


def from_function(function: object, signature: Sequence[object], opset: int) -> onnx.ModelProto:
    """``tf2onnx.convert.from_function`` with :func:`custom_op_handlers`, fast path first,
    garbage collected after each optimizer pass (ResNet50 at 224: peak 4.7 -> about 3 GB).

    Returns the ONNX ``ModelProto``; tf2onnx's own exceptions propagate.
    """
    from tf2onnx import convert

    def run() -> onnx.ModelProto:
        gc.collect()
        gc.freeze()  # the collections after each pass scan only what conversion creates
        try:
            with _faster_tf2onnx():
                model_proto, _ = convert.from_function(
                    function, input_signature=list(signature), opset=opset,
                    custom_op_handlers=custom_op_handlers())
        finally:
            gc.unfreeze()
        return model_proto

    try:
        with _env("TF2ONNX_CATCH_ERRORS", "FALSE"):
            return run()
    except Exception:  # an optimizer pass failed without its safety copy: the default way
        return run()
    finally:
        release_memory()


def captured_constants(concrete: object) -> dict[str, np.ndarray]:
    """Values of a concrete function's non-variable captures, by placeholder tensor name."""
    import tensorflow as tf

    out: dict[str, np.ndarray] = {}
    for external, internal in cast(Any, concrete).graph.captures:  # TensorFlow is untyped
        if internal.dtype == tf.resource or not hasattr(external, "numpy"):
            continue
        out[internal.name] = np.asarray(external.numpy())
    return out


def bind_captured_constants(model_proto: onnx.ModelProto, constants: dict[str, np.ndarray],
                            signature: Sequence[str]) -> list[str]:
    """Turn graph inputs that are captured constants into initializers.

    Returns the names bound. Raises :class:`ConversionError` when the remaining inputs are
    not exactly ``signature`` (same names, same order).
    """
    from onnx import numpy_helper

    graph = model_proto.graph
    bound = [vi.name for vi in graph.input if vi.name in constants and vi.name not in signature]
    for name in bound:
        graph.initializer.append(numpy_helper.from_array(constants[name], name))
    keep = [vi for vi in graph.input if vi.name not in bound]
    del graph.input[:]
    graph.input.extend(keep)
    names = [vi.name for vi in graph.input]
    if names != list(signature):
        extra = [n for n in names if n not in signature]
        raise ConversionError(
            f"the converted graph's inputs {names} are not the model's inputs {list(signature)}"
            + (f": {extra} come from state the converter left outside the graph" if extra else ""),
            hint="this is a converter limitation with this layer's state; report it with the "
            "model attached, or make that state a non-trainable weight of the layer",
        )
    return bound


def higher_opset_for(ops: set[str], opset: int) -> int | None:
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
