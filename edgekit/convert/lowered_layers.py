"""Keras preprocessing layers rewritten with plain tensor ops that tf2onnx maps to standard ONNX.

Each layer here reproduces one Keras 3 preprocessing layer's ``call`` exactly (same values,
same dtype) for the configurations :mod:`edgekit.convert.lowering` accepts, and reports the
original layer's symbolic output (``compute_output_spec``), so a model rebuilt with them is
the same function as the original:

* :class:`LoweredDiscretization`: ``Bucketize`` becomes ``sum(not(x < b))`` (``Less``, ``Not``,
  ``ReduceSum``; a NaN lands in the last bin, as TensorFlow's ``upper_bound`` puts it).
* :class:`LoweredLookup` (``IntegerLookup``, ``StringLookup``, ``invert`` included): the hash
  table becomes the position of each input among the table's keys, then a ``Gather`` from
  the table's values. Integer keys are found by equality against the key list (``Equal`` +
  ``ReduceSum``); string keys, and more than :data:`EQUALITY_MAX_KEYS` integer keys, by
  ``Unique`` over the keys followed by the inputs (ONNX ``Equal`` reads strings only from
  opset 19, ``Unique`` reads them from opset 11).
* :class:`LoweredHashing` (no salt, integer or float inputs) and the ``farmhash``
  out-of-vocabulary buckets of ``IntegerLookup``: FarmHash ``Fingerprint64`` of each value's
  decimal text in uint64 arithmetic (:mod:`edgekit.convert.farmhash`).
* :class:`LoweredCategoryEncoding`, and the ``one_hot``/``multi_hot``/``count``/``tf_idf``
  outputs of the others: equality against ``arange(depth)`` and a ``ReduceMax``/``ReduceSum``
  (no ``OneHot``: ONNX wraps negative indices where TensorFlow gives zeros; no
  ``Bincount``: tf2onnx has none).

Imports Keras and TensorFlow at the top: :mod:`edgekit.convert.lowering` imports this module
only when a model has a layer to lower.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from edgekit.convert.farmhash import hash_bucket

__all__ = ["EQUALITY_MAX_KEYS", "encode_categories", "LoweredDiscretization", "LoweredLookup",
           "LoweredHashing", "LoweredCategoryEncoding"]

def encode_categories(indices: Any, mode: str, depth: int, dtype: str,
                      count_weights: Any = None) -> Any:
    """Keras' ``encode_categorical_inputs`` for dense tensors, by equality with ``arange``.

    Indices outside ``[0, depth)`` encode as zeros (Keras' bincount drops those above and
    refuses negative ones; its ``one_hot`` gives zeros).
    """
    if mode == "int":
        return ops.cast(indices, dtype)
    if len(indices.shape) == 0:
        indices = ops.expand_dims(indices, -1)
    if mode == "one_hot" and len(indices.shape) > 1 and indices.shape[-1] == 1:
        indices = ops.squeeze(indices, -1)
    indices = ops.cast(indices, "int64")
    if count_weights is not None:
        dtype = str(count_weights.dtype.name)
    hot = ops.cast(ops.equal(ops.expand_dims(indices, -1),
                             ops.arange(depth, dtype="int64")), dtype)
    if mode == "one_hot":
        return hot
    axis = 1 if len(indices.shape) > 1 else 0
    if count_weights is not None:
        hot = hot * ops.expand_dims(count_weights, -1)
    return ops.max(hot, axis=axis) if mode == "multi_hot" else ops.sum(hot, axis=axis)


class _Lowered(keras.layers.Layer):
    """A layer standing in for ``source``: same name, same symbolic output, same input
    conversion; ``call`` is the subclass's."""

    def __init__(self, source: keras.layers.Layer) -> None:
        super().__init__(name=source.name, dtype=source.dtype_policy,
                         autocast=source.autocast)
        object.__setattr__(self, "_source", source)  # not tracked: no tables, no weights
        self._convert_input_args = source._convert_input_args
        self._allow_non_tensor_positional_args = True
        self._source_input_dtype = source.input_dtype

    @property
    def input_dtype(self) -> str:
        return str(self._source_input_dtype)

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        return self._source.compute_output_spec(*args, **kwargs)


class LoweredDiscretization(_Lowered):
    """``keras.layers.Discretization`` (dense, ``sparse=False``) as ``Less``, ``Not`` and
    ``ReduceSum``."""

    def __init__(self, source: keras.layers.Layer) -> None:
        super().__init__(source)
        self.boundaries = np.asarray(source.bin_boundaries, dtype=np.float32)
        self.output_mode = str(source.output_mode)
        self.out_dtype = str(source.output_dtype)

    def call(self, inputs: Any) -> Any:
        x = ops.convert_to_tensor(inputs)
        # Bucketize compares in the input's type against float32 boundaries
        kind = keras.backend.standardize_dtype(x.dtype)
        bounds = self.boundaries.astype(np.float64 if kind == "float64" else np.float32)
        if kind != "float64":
            x = ops.cast(x, "float32")
        # the boundaries not above x (a NaN is below none: the last bin, as TF's upper_bound);
        # not len(b) - sum(x < b), which OpenVINO 2026.4 miscomputes when Equal follows
        not_above = ops.logical_not(ops.less(ops.expand_dims(x, -1), bounds))
        bins = ops.sum(ops.cast(not_above, "int32"), axis=-1)
        return encode_categories(bins, self.output_mode, len(bounds) + 1, self.out_dtype)


#: above this many keys, a lookup finds integers by ``Unique`` too: equality builds an
#: inputs x keys matrix (a 20,000-term vocabulary on 32 x 128 tokens: 330 MB of int32)
EQUALITY_MAX_KEYS = 1024


def _unique_positions(x: Any, keys: np.ndarray) -> Any:
    """Position of each element of ``x`` in ``keys`` (``len(keys)`` when absent), by ``Unique``
    over the keys followed by the inputs: a unique index is its first occurrence's."""
    flat = tf.reshape(x, [-1])
    _, index = tf.unique(tf.concat([tf.constant(keys, dtype=flat.dtype), flat], 0),
                         out_idx=tf.int64)
    found = tf.minimum(index[len(keys):], len(keys))
    out = tf.reshape(found, tf.shape(x))
    out.set_shape(x.shape)
    return out


def _equal_positions(x: Any, keys: np.ndarray) -> Any:
    """Position of each integer of ``x`` in ``keys`` (unique; ``len(keys)`` when absent)."""
    hits = ops.cast(ops.equal(ops.expand_dims(x, -1), keys), "int32")
    found = ops.sum(hits, axis=-1)
    where = ops.sum(hits * np.arange(len(keys), dtype=np.int32), axis=-1)
    return ops.cast(where + (1 - found) * len(keys), "int64")


class LoweredLookup(_Lowered):
    """``keras.layers.IntegerLookup`` / ``StringLookup`` (dense, ``sparse=False``; integer
    out-of-vocabulary buckets by ``floormod`` or unsalted ``farmhash``) as a search in the
    table's keys."""

    def __init__(self, source: keras.layers.Layer) -> None:
        super().__init__(source)
        self.strings = tf.as_dtype(source._key_dtype) == tf.string
        self.keys, self.values = _lookup_table(source)
        self.num_oov = int(source.num_oov_indices)
        self.oov_start = int(source._oov_start_index())
        self.buckets = not source.invert and self.num_oov > 1
        self.farmhash = source.oov_method == "farmhash"
        self.output_mode = str(source.output_mode)
        self.depth = int(source.max_tokens if source.pad_to_max_tokens
                         else source._frozen_vocab_size or 0)
        self.idf = (np.asarray(source.idf_weights_const, dtype=np.float32)
                    if self.output_mode == "tf_idf" else None)

    def call(self, inputs: Any) -> Any:
        x = tf.convert_to_tensor(inputs)
        if not self.strings:
            x = ops.cast(x, "int64")
        by_unique = self.strings or len(self.keys) > EQUALITY_MAX_KEYS
        where = (_unique_positions if by_unique else _equal_positions)(x, self.keys)
        if self.values.dtype == object:  # invert StringLookup: strings out
            return tf.gather(tf.constant(self.values, dtype=tf.string), where)
        lookups = ops.take(self.values, where)
        if self.buckets:
            if self.farmhash:  # FarmHash64 of the decimal text (IntegerLookup only)
                oov = hash_bucket(x, self.num_oov)
            else:
                # floormod twice: tf2onnx 1.17 converts an integer FloorMod as
                # x - trunc(x/n)*n, negative for negative x; adding n first keeps it right
                oov = ops.mod(ops.mod(x, self.num_oov) + self.num_oov, self.num_oov)
            oov = oov + self.oov_start
            lookups = ops.where(ops.equal(lookups, -1), oov, lookups)
        if self.output_mode == "int":
            return lookups
        mode = "count" if self.output_mode == "tf_idf" else self.output_mode
        out = encode_categories(lookups, mode, self.depth, "int64")
        if self.idf is not None:
            out = ops.cast(out, "float32") * self.idf
        return out


def _lookup_table(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
    """(keys, values) of an index lookup's table with its mask and default folded in: a key's
    position in ``keys`` indexes ``values``; ``values[-1]`` answers keys not in the table."""
    keys, values = (np.asarray(t.numpy()) for t in layer.lookup_table.export())
    if layer.mask_token is not None:
        mask_key = np.asarray(layer._mask_key.numpy())
        keep = keys != mask_key
        keys = np.concatenate([[mask_key], keys[keep]])
        values = np.concatenate([[np.asarray(layer._mask_value.numpy())], values[keep]])
    default = layer._default_value
    if isinstance(default, str):
        default = default.encode()
    values = np.concatenate([values, np.asarray([default], dtype=values.dtype)])
    if keys.dtype != object:
        keys = keys.astype(np.int64)
    return keys, (values if values.dtype == object else values.astype(np.int64))


class LoweredHashing(_Lowered):
    """``keras.layers.Hashing`` without a salt on integer or float inputs (dense,
    ``sparse=False``): FarmHash64 of each value's decimal text, modulo the bins."""

    def __init__(self, source: keras.layers.Layer) -> None:
        super().__init__(source)
        self.num_bins = int(source.num_bins)
        self.mask_value = source.mask_value
        self.output_mode = str(source.output_mode)
        self.out_dtype = str(source.dtype)

    def call(self, inputs: Any) -> Any:
        # the steps of Hashing.call and _hash_values_to_bins, the hash replaced
        x = tf.convert_to_tensor(inputs)
        if self.output_mode == "one_hot" and x.shape[-1] == 1:
            x = tf.squeeze(x, -1)
        bins, mask = self.num_bins, None
        if self.mask_value is not None and bins > 1:
            bins -= 1
            mask = tf.equal(x, self.mask_value)
        if x.dtype.is_floating:  # Keras hashes floats as int64 (a cast: truncation)
            x = tf.cast(x, tf.int64)
        values = hash_bucket(x, bins)
        if mask is not None:
            values = tf.where(mask, tf.zeros_like(values), values + 1)
        return encode_categories(values, self.output_mode, self.num_bins, self.out_dtype)


class LoweredCategoryEncoding(_Lowered):
    """``keras.layers.CategoryEncoding`` (``sparse=False``) by equality with ``arange``."""

    def __init__(self, source: keras.layers.Layer) -> None:
        super().__init__(source)
        self.num_tokens = int(source.num_tokens)
        self.output_mode = str(source.output_mode)

    def call(self, inputs: Any, count_weights: Any = None) -> Any:
        if count_weights is not None:
            count_weights = ops.cast(count_weights, self.compute_dtype)
        return encode_categories(ops.convert_to_tensor(inputs), self.output_mode,
                                 self.num_tokens, self.dtype, count_weights)
