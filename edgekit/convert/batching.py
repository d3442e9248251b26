"""Whether a Keras model's outputs are per-sample, probed before validation.

Most models compute each sample's outputs from that sample alone, so they can be validated on
slices of the samples with the outputs concatenated, and at another batch size on a subset.
Some do not: a softmax or a reduction over the batch axis, ``tf.size`` of the input, a scatter
into row 0, an einsum or a broadcast between samples, an ``expand_dims(x, 0)`` or a transpose
that moves the batch axis, an output without a batch axis. Their exported graph is right (it
computes what Keras computes on any batch the model accepts), but comparing it with Keras on
different batches, or concatenating outputs that have no batch axis, is not.

:func:`batch_mixing` runs Keras on the first samples in one batch, then on the same samples
in two batches one sample shorter (``[0, m-1)`` and ``[1, m)``: the batch size changes, and
in the second every sample moves up one position), and says why the outputs are not
per-sample: an output whose first axis is not the batch, Keras refusing the shorter batches
(a model that runs at one batch size only), or a sample whose outputs differ beyond the
validation tolerance and beyond Keras' own float noise (:mod:`edgekit.convert.noise`: a deep
network amplifies the rounding of the kernels a backend picks for another batch size). Those
models are then validated on the same whole batches on both sides
(:func:`edgekit.inputs.data.run_whole_batches`), and the file is marked so that later stages
compare it only on identical batches too (:data:`edgekit.runtime.proof.BATCH_KEY`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgekit.convert.noise import Variable, noise_envelope
from edgekit.errors import exception_reason
from edgekit.inputs.data import whole_batches

__all__ = ["batch_mixing"]


def _differ(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> bool:
    """Whether ``a`` is not ``b`` (the reference) within ``atol + rtol * |b|`` (NaN = NaN)."""
    if a.shape != b.shape:
        return True
    if a.dtype.kind not in "fc" and b.dtype.kind not in "fc":
        return not np.array_equal(a, b)
    return not np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol,
                           atol=atol, equal_nan=True)


def batch_mixing(call: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
                 feeds: dict[str, np.ndarray], batch_size: int, names: Sequence[str],
                 atol: float, rtol: float, weights: Sequence[Variable] = (),
                 noise: bool = False) -> str | None:
    """Why ``call`` (the Keras reference) does not compute per-sample outputs on the first
    ``batch_size`` samples of ``feeds`` (2 at least); None when it does, or when Keras fails
    on those samples (the validation that follows reports that failure). ``names``: the
    outputs'. Tolerance: ``atol + rtol * |reference|``, as validation's; with ``noise``, a
    difference within Keras' own float noise (:func:`~edgekit.convert.noise.noise_envelope`,
    ``weights`` the model's) is not mixing: a deep network amplifies the rounding of the
    kernels its backend picks for another batch size (on an AMD EPYC with AVX2, 31 residual
    convs moved a probability by 3e-3 between batches of 8 and 7)."""
    n = len(next(iter(feeds.values())))
    m = min(n, max(2, batch_size))
    head = {k: v[:m] for k, v in feeds.items()}
    try:
        whole = [np.asarray(o) for o in call(head)]
    except Exception:  # Keras' own failure on the validation inputs: said by the validation
        return None
    for name, out in zip(names, whole, strict=False):
        if out.ndim == 0 or out.shape[0] != m:
            return (f"output {name!r} has shape {tuple(out.shape)} on a batch of {m} samples: "
                    "its first axis is not the batch")
    if m < 2:
        return None
    for part in whole_batches(m, m - 1):
        try:
            outs = call({k: v[part] for k, v in head.items()})
        except Exception as exc:
            return (f"Keras runs a batch of {m} samples but not {m - 1} of them "
                    f"({type(exc).__name__}: {exception_reason(exc)[:200]})")
        differing = [name for name, out, ref in zip(names, outs, whole, strict=False)
                     if _differ(np.asarray(out), ref[part], atol, rtol)]
        if differing and not (noise and _float_noise(call, head, part, whole, outs, names,
                                                     atol, rtol, weights)):
            return (f"output {differing[0]!r} of samples {part.start}..{part.stop - 1} differs "
                    f"between a batch of {m} samples and one of {m - 1}: a sample's "
                    "outputs depend on the other samples in its batch")
    return None


def _float_noise(call: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]],
                 head: dict[str, np.ndarray], part: slice, whole: Sequence[np.ndarray],
                 outs: Sequence[np.ndarray], names: Sequence[str], atol: float, rtol: float,
                 weights: Sequence[Variable]) -> bool:
    """Whether the outputs of the samples ``part`` run as their own batch (``outs``) are
    within Keras' float noise of the same samples in the whole batch (``whole``)."""
    sub = {k: v[part] for k, v in head.items()}
    ref = [np.asarray(r)[part] for r in whole]
    if any(np.shape(o) != r.shape for o, r in zip(outs, ref, strict=False)):
        return False  # another shape at another batch size: no rounding does that
    record = noise_envelope(call, sub, ref, [[np.asarray(o) for o in outs]], names, atol, rtol,
                            len(ref[0]), weights)
    return bool(record["passed"])
