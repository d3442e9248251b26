"""Keras preprocessing layers lowered to standard ONNX ops, so a tabular model exports with
its preprocessing inside.

``Discretization``, ``IntegerLookup``, ``StringLookup``, ``Hashing`` and ``CategoryEncoding``
run as TensorFlow ops (``Bucketize``, ``LookupTableFindV2``, ``StringToHashBucketFast``,
``DenseBincount``) that no Keras -> ONNX converter exports (not tf2onnx, which leaves them in
the graph without raising, not Keras' own ``model.export(format="onnx")``, not LiteRT).
:func:`lower_preprocessing` rebuilds a functional or Sequential model with each of them
replaced by a layer of :mod:`edgekit.convert.lowered_layers` that computes the same
values with comparisons, sums, gathers and integer arithmetic (see there for the op
mapping). Layers of other models are reused as they are (same weights).

Supported: every configuration with a dense output (``sparse=False``), integer and string
inputs (strings through ``Unique``, ``Gather`` and ``Where``, standard ONNX that onnxruntime
runs; OpenVINO's CPU plugin has no string tensors), ``invert``, masks, any number of OOV
indices for integer keys (OpenVINO computes int64 as int32: keys beyond 2**31 differ there),
and the ``int``/``one_hot``/``multi_hot``/``count``/``tf_idf`` outputs. ``Hashing`` without a
salt on integer (or float) inputs, and ``IntegerLookup(oov_method="farmhash")`` without a
salt, compute FarmHash64 of the decimal text in uint64 arithmetic
(:mod:`edgekit.convert.farmhash`; onnxruntime runs it, OpenVINO's CPU plugin computes 64-bit
integers in 32 bits and gets other values); floats are cast to int64 first, as Keras does (a
NaN or a value beyond int64 converts as each runtime's CPU converts it). Refused with a
:class:`~edgekit.errors.ConversionError` naming the layer and a workaround: ``Hashing`` of
strings or with a salt, ``HashedCrossing``, ``TextVectorization``, lookups that hash strings
or hash with a salt (``StringLookup`` with ``num_oov_indices > 1``, ``salt=``), sparse
outputs, layers never adapted, and such layers inside a subclassed model or layer (which
cannot be rebuilt).

Where Keras raises at run time, the lowered layer cannot: an out-of-vocabulary input with
``num_oov_indices=0`` looks up as ``-1`` (zeros once encoded), and a negative index into
``CategoryEncoding``'s bincount encodes as zeros; every input Keras accepts gives Keras'
value.

Keras is imported inside the functions (the ``export`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from edgekit.errors import ConversionError

if TYPE_CHECKING:
    import keras

__all__ = ["LOWERED_LAYERS", "lower_preprocessing"]

#: the Keras preprocessing layers :func:`lower_preprocessing` replaces
LOWERED_LAYERS = ("Discretization", "IntegerLookup", "StringLookup", "Hashing",
                  "CategoryEncoding")

_MOVE_OUT = ("apply it to the data before the model (in the input pipeline, e.g. "
             "dataset.map(layer)) and export the model that takes its output")

#: layers that cannot be lowered at all, with the reason
_REFUSED = {
    "HashedCrossing": "it hashes feature crosses with FarmHash64; no standard ONNX op "
                      "computes that hash",
    "TextVectorization": "its standardization and splitting are string ops (regex replace, "
                         "split) that ONNX has only from opset 20, beyond tf2onnx",
}


def _keras_classes() -> dict[str, type]:
    import keras

    names = (*LOWERED_LAYERS, *_REFUSED)
    return {name: getattr(keras.layers, name) for name in names if hasattr(keras.layers, name)}


def _preprocessing(layer: keras.layers.Layer, classes: dict[str, type]) -> str | None:
    """The layer's class name when it is exactly one of ``classes`` (a subclass may have its
    own ``call``: it is left alone), else None."""
    name = type(layer).__name__
    return name if classes.get(name) is type(layer) else None


def _rebuildable(layer: keras.layers.Layer) -> bool:
    """Whether ``clone_model`` rebuilds ``layer`` from its graph (functional or Sequential)."""
    import keras
    from keras.src.models.functional import Functional

    return isinstance(layer, keras.Sequential | Functional)


def _reachable(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """The layers ``clone_model(recursive=True)`` hands to its clone function."""
    for layer in getattr(model, "layers", []):
        yield layer
        if _rebuildable(layer):
            yield from _reachable(layer)


def _found(model: keras.Model) -> list[keras.layers.Layer]:
    """The preprocessing layers of ``model`` to lower, each checked (raises when one cannot
    be lowered or the model cannot be rebuilt around it)."""
    classes = _keras_classes()
    every = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if _preprocessing(layer, classes)]
    refused = [layer for layer in every if type(layer).__name__ in _REFUSED]
    if refused:
        _refuse(refused[0], _REFUSED[type(refused[0]).__name__])
    reachable = {id(layer) for layer in _reachable(model)} if _rebuildable(model) else set()
    for layer in every:
        _check_config(layer)
        if id(layer) not in reachable:
            _refuse(layer, f"it sits inside {type(model).__name__} '{model.name}', a subclassed "
                    "model or layer that edgekit cannot rebuild around a replacement",
                    hint="build the model with the functional API (keras.Input(...)), or "
                    + _MOVE_OUT)
    return every


def _refuse(layer: keras.layers.Layer, reason: str, hint: str = _MOVE_OUT) -> None:
    raise ConversionError(
        f"the {type(layer).__name__} layer '{layer.name}' cannot be exported to ONNX: {reason}",
        hint=hint)


def _check_config(layer: keras.layers.Layer) -> None:
    """Raise for a configuration of a lowerable layer that has no standard-ONNX form."""
    kind = type(layer).__name__
    if getattr(layer, "sparse", False):
        _refuse(layer, "it returns a sparse tensor, which ONNX models cannot output",
                hint="construct it with sparse=False (the same values, dense)")
    if kind == "Discretization" and layer.bin_boundaries is None:
        _refuse(layer, "it has no bin boundaries", hint="adapt() it or pass bin_boundaries=")
    if kind in ("IntegerLookup", "StringLookup"):
        _check_lookup(layer)
    if kind == "Hashing":
        _check_hashing(layer)


#: what to do instead of hashing inside the model
_HASH_BEFORE = ("hash before the model (dataset.map(layer)) and export the model that takes "
                "the bins, or map the values with IntegerLookup/StringLookup and a vocabulary")


def _check_hashing(layer: keras.layers.Layer) -> None:
    if layer.salt is not None:
        _refuse(layer, "its salt makes it hash with SipHash64, which edgekit does not lower "
                "(only FarmHash64, the unsalted hash, of integers)", hint=_HASH_BEFORE)
    for dtype in _input_dtypes(layer):
        if dtype == "string":
            _refuse(layer, "it hashes the bytes of strings with FarmHash64; no standard ONNX "
                    "op reads a string's bytes (edgekit lowers the hash of integers)",
                    hint=_HASH_BEFORE)
        if dtype not in _HASHABLE:
            _refuse(layer, f"it hashes {dtype} inputs; edgekit lowers the hash of integers "
                    "(and of floats, which Keras casts to int64)", hint=_HASH_BEFORE)


#: input dtypes whose decimal text :mod:`edgekit.convert.farmhash` hashes (through int64)
_HASHABLE = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float16",
             "bfloat16", "float32", "float64")


def _input_dtypes(layer: keras.layers.Layer) -> set[str]:
    """The dtypes of the tensors ``layer`` is called on in its model."""
    import keras

    return {keras.backend.standardize_dtype(t.dtype)
            for node in getattr(layer, "_inbound_nodes", [])
            for t in node.input_tensors}


def _check_lookup(layer: keras.layers.Layer) -> None:
    if layer.lookup_table.size().numpy() == 0:
        _refuse(layer, "it has no vocabulary", hint="adapt() it or pass vocabulary=")
    if layer.num_oov_indices <= 1 or layer.invert:
        return
    if type(layer).__name__ == "StringLookup":
        _refuse(layer, f"it spreads out-of-vocabulary strings over {layer.num_oov_indices} "
                "indices by FarmHash64 of their bytes, which no standard ONNX op reads",
                hint="use num_oov_indices=1, or " + _MOVE_OUT)
    if layer.oov_method == "farmhash" and layer.salt is not None:
        _refuse(layer, f"it spreads out-of-vocabulary values over {layer.num_oov_indices} "
                "indices by SipHash64 (its salt), which edgekit does not lower (only "
                "FarmHash64, without a salt)", hint="drop the salt, use "
                "oov_method='floormod' or num_oov_indices=1, or " + _MOVE_OUT)


def _describe(layer: keras.layers.Layer) -> str:
    kind = type(layer).__name__
    if kind == "Discretization":
        return f"{len(layer.bin_boundaries)} bin boundaries, output_mode={layer.output_mode}"
    if kind == "CategoryEncoding":
        return f"{layer.num_tokens} tokens, output_mode={layer.output_mode}"
    if kind == "Hashing":
        mask = "" if layer.mask_value is None else f", mask_value={layer.mask_value!r}"
        return (f"FarmHash64 of the decimal text into {layer.num_bins} bins{mask}, "
                f"output_mode={layer.output_mode}; 64-bit integer arithmetic that OpenVINO's "
                "CPU plugin does not compute exactly")
    parts = [f"{int(layer.lookup_table.size().numpy())} terms",
             f"num_oov_indices={layer.num_oov_indices}", f"output_mode={layer.output_mode}"]
    if layer.mask_token is not None:
        parts.append(f"mask_token={layer.mask_token!r}")
    if layer.invert:
        parts.append("invert")
    if layer.num_oov_indices == 0 and not layer.invert:
        parts.append("an out-of-vocabulary input, which Keras refuses, gives -1")
    if layer.num_oov_indices > 1 and not layer.invert and layer.oov_method == "farmhash":
        parts.append("out-of-vocabulary buckets by FarmHash64 (64-bit integer arithmetic that "
                     "OpenVINO's CPU plugin does not compute exactly)")
    return ", ".join(parts)


def _replacement(layer: keras.layers.Layer) -> keras.layers.Layer:
    from edgekit.convert import lowered_layers as lowered

    kind = type(layer).__name__
    if kind == "Discretization":
        return lowered.LoweredDiscretization(layer)
    if kind == "CategoryEncoding":
        return lowered.LoweredCategoryEncoding(layer)
    if kind == "Hashing":
        return lowered.LoweredHashing(layer)
    return lowered.LoweredLookup(layer)


def lower_preprocessing(model: keras.Model) -> tuple[keras.Model, list[str]]:
    """``model`` with its Keras preprocessing layers replaced by standard-op equivalents.

    Args:
        model: a Keras model; functional and Sequential models (nested ones included) are
            rebuilt, sharing every other layer (and its weights) with ``model``.

    Returns:
        ``(model, notes)``: the same model object and no notes when it has no
        ``Discretization``, ``IntegerLookup``, ``StringLookup``, ``Hashing`` or
        ``CategoryEncoding`` layer; else a new model computing the same values, and one note
        per layer lowered.

    Raises:
        ConversionError: a layer that cannot be lowered (``Hashing`` of strings or with a
            salt, a lookup hashing strings, a sparse output, ...) or cannot be replaced
            (inside a subclassed model); the message names the layer and the hint a
            workaround.
    """
    found = _found(model)
    if not found:
        return model, []
    import keras

    replacements = {id(layer): _replacement(layer) for layer in found}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        return replacements.get(id(layer), layer)

    lowered = keras.models.clone_model(model, clone_function=clone, recursive=True)
    notes = [f"lowered {type(layer).__name__} '{layer.name}' to standard ONNX ops "
             f"({_describe(layer)})" for layer in found]
    return lowered, notes
