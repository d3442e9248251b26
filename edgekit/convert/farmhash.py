"""FarmHash ``Fingerprint64`` of the decimal text of integers, as integer tensor ops that
tf2onnx maps to standard ONNX at every opset edgekit targets (13..18).

Keras' ``Hashing`` (and ``IntegerLookup(oov_method="farmhash")``) hashes an integer as
``tf.strings.to_hash_bucket_fast(tf.as_string(x), n)``: FarmHash ``Fingerprint64``
(``farmhashna::Hash64``) of the value's decimal text, modulo ``n``. The text of an int64
has 1..20 bytes, so only FarmHash's ``HashLen0to16`` and ``HashLen17to32`` branches occur;
:func:`fingerprint64` computes all of them for every element and selects by length:

* **Bytes without strings.** The character at position ``p`` is ``'-'`` for ``p == 0`` of a
  negative value, else digit ``ndigits - 1 - (p - negative)`` of ``|x|``: ``|x| // 10**r % 10``
  with ``10**r`` gathered from a table. A little-endian word is the sum of its bytes times
  ``256**k``: ASCII digits are below ``0x40``, so every word is exact in int64.
* **Arithmetic on uint64** (``Mul``, ``Add``, ``Sub``, ``Div``, ``BitShift``,
  ``GreaterOrEqual``; onnxruntime's CPU kernels take uint64 for all of them): products wrap
  modulo 2**64 as FarmHash's do. A rotate is the sum of two shifts (their bits do not
  overlap).
* **No bitwise ops.** ONNX has ``BitwiseXor`` only from opset 18 (edgekit's default is 17),
  so ``a ^ b`` is summed bit by bit: bit ``s`` of ``a ^ b`` is the lowest bit of
  ``(a >> s) + (b >> s)``. ``ShiftMix`` (``a ^ (a >> 47)``) changes only the low 17 bits,
  so it xors 17 bits, not 64.
* **Comparisons by ``>=``.** tf2onnx 1.17 converts TF's ``Less`` and ``Greater`` through
  float32 casts at every opset (exact only below 2**24); ``GreaterEqual`` becomes ONNX
  ``GreaterOrEqual`` on the integers themselves.
* **Selections in int64.** onnxruntime has no uint64 ``Where``; a uint64 is selected through
  a cast to int64 and back (a bit-preserving round trip).
* **Small sums.** onnxruntime 1.32's int64 ``ReduceSum`` goes through doubles (2**60 + 1
  sums to 2**60), so every sum here stays below 2**32: a 64-bit word is summed as two
  32-bit halves, then joined by a shift and an ``Add``.

Checked bit for bit against TensorFlow on every decimal length, the int64 extremes and random
values, at opsets 13, 17 and 18 (``tests/test_lowering.py``). Imports TensorFlow at the top:
only the lowered layers import this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["fingerprint64", "hash_bucket"]

K0 = 0xC3A5C85C97CB3127
K1 = 0xB492B66FBE98F273
K2 = 0x9AE16A3B2F90404F

#: 10**r for the digit r places from the right of a uint64 (at most 20 digits)
_POW10 = np.array([10**r for r in range(20)], dtype=np.uint64)
#: _POW10 at index r + _PAD, padded with ones for the r of positions outside the text (-40..39:
#: an offset is cheaper than clipping each index)
_PAD = 40
_POW10_PADDED = np.concatenate([np.ones(_PAD, np.uint64), _POW10, np.ones(_PAD - 20, np.uint64)])


def _u64(value: int) -> Any:
    return tf.constant(value, dtype=tf.uint64)


def _shr(x: Any, n: int) -> Any:
    return tf.bitwise.right_shift(x, _u64(n))


def _shl(x: Any, n: int) -> Any:
    return tf.bitwise.left_shift(x, _u64(n))


def _rotate(x: Any, n: int) -> Any:
    """FarmHash's ``Rotate``: right by ``n`` (0 < n < 64)."""
    return _shr(x, n) + _shl(x, 64 - n)


def _lowest_bit(x: Any) -> Any:
    return x - _shl(_shr(x, 1), 1)


def _halves(parts: Any) -> Any:
    """``parts[..., 0] + (parts[..., 1] << 32)`` (one part: ``parts[..., 0]``), as uint64."""
    parts = tf.cast(parts, tf.uint64)
    if parts.shape[-1] == 1:
        return parts[..., 0]
    return parts[..., 0] + _shl(parts[..., 1], 32)


def _xor(a: Any, b: Any, width: int = 64) -> Any:
    """``a ^ b`` for uint64 ``a`` and ``b`` below ``2**width``, one bit position at a time."""
    # two rows of 32 bit positions, each summed below 2**32 (see "Small sums" above)
    lanes = np.arange(width, dtype=np.uint64).reshape(-1 if width > 32 else 1, min(width, 32))
    bits = _lowest_bit(tf.bitwise.right_shift(a[..., None, None], lanes)
                       + tf.bitwise.right_shift(b[..., None, None], lanes))
    rows = tf.cast(tf.bitwise.left_shift(bits, lanes % 32), tf.int64)
    return _halves(tf.reduce_sum(rows, axis=-1))


def _shift_mix(a: Any) -> Any:
    """``a ^ (a >> 47)``: the high 47 bits stay, the low 17 are xored with the top 17."""
    high = _shl(_shr(a, 17), 17)
    return high + _xor(a - high, _shr(a, 47), width=17)


def _select(condition: Any, a: Any, b: Any) -> Any:
    """``where(condition, a, b)`` for uint64 (through int64: onnxruntime's ``Where`` has no
    uint64 kernel)."""
    return tf.cast(tf.where(condition, tf.cast(a, tf.int64), tf.cast(b, tf.int64)), tf.uint64)


class _Text:
    """The decimal text of int64 values, read byte by byte without building strings."""

    def __init__(self, x: Any) -> None:
        self.negative = tf.logical_not(x >= 0)
        # |x| in uint64 (-x wraps for int64's minimum, whose bits read as 2**63 unsigned)
        self.magnitude = tf.cast(tf.where(self.negative, -x, x), tf.uint64)
        at_least = self.magnitude[..., None] >= _POW10[1:]
        self.digits = 1 + tf.reduce_sum(tf.cast(at_least, tf.int64), axis=-1)
        self.sign = tf.cast(self.negative, tf.int64)
        self.length = self.digits + self.sign

    def chars(self, positions: Any) -> Any:
        """The bytes at ``positions`` (int64, shaped like the values plus trailing axes; 0
        outside the text), as int64."""
        axes = (..., *[None] * (len(positions.shape) - len(self.sign.shape)))
        from_left = positions - self.sign[axes]  # index among the digits
        from_right = self.digits[axes] - 1 - from_left
        power = tf.gather(_POW10_PADDED, from_right + _PAD)
        digit = tf.cast((self.magnitude[axes] // power) % 10, tf.int64)
        is_digit = tf.logical_and(from_left >= 0, from_right >= 0)
        is_sign = tf.logical_and(self.negative[axes], tf.equal(positions, 0))
        chars = tf.where(is_digit, 48 + digit, tf.zeros_like(digit))
        return tf.where(is_sign, tf.fill(tf.shape(chars), tf.constant(45, tf.int64)), chars)

    def fetch64(self, offsets: Any) -> Any:
        """FarmHash's ``Fetch64`` at each of ``offsets`` (int64, the values' shape plus one
        axis): the 8 bytes from there as a little-endian uint64."""
        positions = offsets[..., None, None] + np.arange(8, dtype=np.int64).reshape(2, 4)
        weights = np.array([256**k for k in range(4)], dtype=np.int64)
        return _halves(tf.reduce_sum(self.chars(positions) * weights, axis=-1))


def fingerprint64(x: Any) -> Any:
    """``Fingerprint64(tf.as_string(x))`` (FarmHash, ``farmhashna::Hash64``) of an integer
    tensor (int8..int64, uint8..uint32), as a uint64 tensor of the same shape."""
    text = _Text(tf.cast(x, tf.int64))
    length = text.length
    n = tf.cast(length, tf.uint64)
    mul = K2 + n * 2
    # bytes 0..7, 8..15, the last 8 and the 8 before (zeros outside the text)
    starts = tf.stack([tf.zeros_like(length), tf.fill(tf.shape(length), tf.constant(8, tf.int64)),
                       length - 8, length - 16], axis=-1)
    head, second, tail, before_tail = tf.unstack(text.fetch64(starts), axis=-1)
    # 17..20 bytes: HashLen17to32
    a17 = head * K1
    c17 = tail * mul
    u17 = _rotate(a17 + second, 43) + _rotate(c17, 30) + before_tail * K2
    v17 = a17 + _rotate(second + K2, 18) + c17
    # 8..16 bytes: HashLen0to16
    a8 = head + K2
    u8 = _rotate(tail, 37) * mul + a8
    v8 = (_rotate(a8, 25) + tail) * mul
    # 4..7 bytes: Fetch32 of the first and of the last 4 bytes
    u4 = n + _shl(head % 2**32, 3)
    v4 = _shr(tail, 32)
    # 1..3 bytes: ShiftMix((y * k2) ^ (z * k0)) * k2, the first steps of HashLen16 with
    # (y * k2, z * k0) for (u, v) and 1 for mul: one computation serves both
    middle = tf.cast(text.chars((length // 2)[..., None])[..., 0], tf.uint64)
    y = head % 256 + _shl(middle, 8)
    z = n + _shl(_shr(tail, 56), 2)
    short = tf.logical_not(length >= 4)
    u = _select(length >= 17, u17, _select(length >= 8, u8, _select(short, y * K2, u4)))
    v = _select(length >= 17, v17, _select(length >= 8, v8, _select(short, z * K0, v4)))
    a = _shift_mix(_xor(u, v) * _select(short, tf.ones_like(mul), mul))
    b = _shift_mix(_xor(v, a) * mul) * mul  # HashLen16's end
    return _select(short, a * K2, b)


def hash_bucket(x: Any, num_buckets: int) -> Any:
    """``tf.strings.to_hash_bucket_fast(tf.as_string(x), num_buckets)`` for an integer tensor
    ``x`` (as :func:`fingerprint64`), as int64."""
    return tf.cast(fingerprint64(x) % np.uint64(num_buckets), tf.int64)
