"""Memory: what a model's activations weigh, the batch that keeps them within a budget, and
handing freed heap back to the operating system.

Validation, the engine checks and calibration run many samples through a model; each bounds
its batch by the activations one sample produces (:func:`activation_bytes`), so a ResNet50 or
a ConvNeXt at 224x224 is checked a few samples at a time while a small model keeps its large
batches. Both TensorFlow's oneDNN allocator and onnxruntime's arena keep the peak of the
largest batch they have run, so the batch, not the sample count, sets the memory a step holds.
"""

from __future__ import annotations

import ctypes
import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["BATCH_MEMORY_BYTES", "activation_bytes", "batch_for", "batch_within",
           "current_rss_bytes", "release_memory"]

#: activations one batch of validation or of an engine check may produce (the sum over the
#: graph's float tensors, an upper bound on what an engine holds at once): ResNet50 at 224
#: (181 MiB a sample) is checked 2 at a time, the Fashion-MNIST CNN 64 at a time
BATCH_MEMORY_BYTES = 512 << 20
_FLOATS = {1: 4, 10: 2, 11: 8, 16: 2}  # float32, float16, double, bfloat16
_KEPT_ELEMENTS = 64  # float initializers up to this size keep their values (shape inference
#                      may read them); larger ones (the weights) are declared by shape only


def activation_bytes(model: onnx.ModelProto | str | Path) -> int:
    """Bytes of the float activations one sample produces (inferred shapes, batch 1; a
    dimension shape inference leaves unknown counts as 1). The weights are not copied."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) \
        else model
    graph = onnx.GraphProto()
    graph.node.extend(proto.graph.node)
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    for init in proto.graph.initializer:  # the weights by shape; shapes and axes by value
        if init.data_type in _FLOATS and int(np.prod(init.dims)) > _KEPT_ELEMENTS:
            graph.input.append(onnx.helper.make_tensor_value_info(
                init.name, init.data_type, list(init.dims)))
        else:
            graph.initializer.append(init)
    light = onnx.helper.make_model(graph, opset_imports=proto.opset_import)
    light.ir_version = proto.ir_version
    inferred = onnx.shape_inference.infer_shapes(light)
    total = 0
    for v in inferred.graph.value_info:
        t = v.type.tensor_type
        if t.elem_type in _FLOATS:
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
            total += int(np.prod(dims[1:] if len(dims) > 1 else dims)) * _FLOATS[t.elem_type]
    return total


def batch_within(per_sample: int, most: int, budget: int = BATCH_MEMORY_BYTES) -> int:
    """The largest batch, at most ``most`` and at least 1, whose ``per_sample`` bytes of
    activations fit in ``budget``."""
    return max(1, min(most, budget // max(per_sample, 1)))


def batch_for(model: str | Path, most: int) -> int:
    """:func:`batch_within` for the file ``model``: ``most``, or fewer where its activations
    would pass :data:`BATCH_MEMORY_BYTES` (``most`` without the ``onnx`` package to read the
    graph). Used for every batched run of a whole data set (validation, the engine checks, a
    quantized variant's check samples): ConvNeXtTiny's 32 check samples in one batch took a
    tune at batch 32 to 3.2 GB."""
    try:
        return batch_within(activation_bytes(model), most)
    except ImportError:
        return most


def current_rss_bytes() -> int:
    """This process's resident memory now, in bytes (0 where ``/proc`` does not say: Linux
    only)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so later steps start low."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
