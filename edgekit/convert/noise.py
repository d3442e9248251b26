"""Keras' own float noise: whether the elements beyond the strict tolerance are float rounding.

When ONNX and Keras differ beyond ``atol + rtol * |reference|`` somewhere, Keras runs again on
the failing samples only, with its float inputs and weights moved by tiny relative amounts
(:data:`NOISE_RUNS`, seeded): how far its outputs move is how much float rounding alone can
move them there. Moved inputs show how a deep network amplifies a rounding error made early
(near-ties of a saturated softmax flip); moved weights stand for the rounding of each layer's
own sums (a backward error), which inputs moved through a network that damps them miss. An
element within ``atol + rtol * |reference| + NOISE_MULTIPLE * envelope`` is float noise;
beyond it, a mismatch. The envelope is the largest movement, over the runs, of the vector
along the output's last axis that holds the element (a classifier's scores, a pixel's
channels): a near-tie moves the whole vector between classes, in directions a few runs hit
element by element only by chance. Nothing runs when the strict check passes.

The perturbed runs group the failing samples in batches of their own, and the movement is
taken against an unperturbed run of the same batches, so a model whose outputs depend on the
batch is not excused. Integer inputs and float input values that are whole numbers (ids,
masks, 8-bit pixels stored as floats) are not moved: a model may cast them to indices, where
a tiny change is no tiny change. The weights are restored exactly after each run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgekit.inputs.data import run_in_batches
from edgekit.validate import element_errors

__all__ = ["NOISE_MULTIPLE", "NOISE_RECHECK_ROUNDS", "NOISE_RUNS", "Variable",
           "noise_envelope"]

#: the perturbed Keras runs: (relative size on the float inputs, on the float weights), each
#: value times 1 + size * N(0, 1). A weight moved by 1e-7 to 1e-6 is a rounding or a few, the
#: backward error of a sum of a few hundred terms; inputs move 10x more, as a rounding made
#: early in a deep network may grow before it reaches the outputs
NOISE_RUNS = ((1e-6, 1e-7), (1e-6, 1e-7), (1e-5, 1e-6), (1e-5, 1e-6))
#: an element beyond atol + rtol |reference| is float noise within this multiple of Keras' own
#: movement there. Measured, (|error| - allowed) / envelope at the worst element: float noise
#: up to 1.0 (keras.applications at 32x32, weights=None, 256 synthetic samples: EfficientNetB1
#: to B5, V2B1, V2B3, V2S; 1.0 is V2S's softmax flip, which Keras makes too; the deep model of
#: tests/test_noise_envelope.py 0.7) where one convolution's kernel x 1.01 lands 6 to 13
#: beyond (B1 12, B4 6.2, V2S 2e4, the deep model 7.7 and 12.9)
NOISE_MULTIPLE = 3.0
#: a batch of samples with an element beyond the envelope is measured again with this many
#: more rounds of :data:`NOISE_RUNS` (16 runs in all) before it counts as a mismatch: with few
#: runs, all may move little by chance. (For a lone output value whose rounding errors are
#: Gaussian, another engine's error exceeds 3x the largest of 16 runs' movements once in
#: ~60,000; of 4 runs' 2x, once in 30.)
NOISE_RECHECK_ROUNDS = 3

Run = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]


class Variable(Protocol):
    """A weight of the reference (a Keras or TensorFlow variable)."""

    def numpy(self) -> object: ...

    def assign(self, value: np.ndarray) -> object: ...


@dataclass
class _Excess:
    """One output of one comparison: the elements beyond atol + rtol |reference|."""

    output: int
    name: str
    batch1: bool
    ref: np.ndarray
    got: np.ndarray
    diff: np.ndarray
    allowed: np.ndarray
    failing: np.ndarray


def _excess(reference: Sequence[np.ndarray], candidates: Sequence[Sequence[np.ndarray]],
            names: Sequence[str], atol: float, rtol: float) -> list[_Excess]:
    out = []
    for i, cand in enumerate(candidates):
        for k, (name, ref, got) in enumerate(zip(names, reference, cand, strict=True)):
            r, c = np.asarray(ref)[:len(got)], np.asarray(got)
            diff, allowed, failing, _ = element_errors(r, c, atol, rtol)
            out.append(_Excess(k, name, i > 0, r.astype(np.float64), c.astype(np.float64),
                               diff, allowed, failing))
    return out


def _failing_samples(excess: list[_Excess]) -> list[int]:
    """Samples with an element beyond tolerance, the furthest beyond first."""
    worst: dict[int, float] = {}
    for e in excess:
        if e.diff.ndim == 0:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(e.failing, e.diff / e.allowed, 0.0)
        ratio = np.where(np.isnan(ratio), np.inf, ratio).reshape(len(ratio), -1).max(axis=1)
        for s in np.nonzero(ratio > 0)[0]:
            worst[int(s)] = max(worst.get(int(s), 0.0), float(ratio[s]))
    return sorted(worst, key=lambda s: -worst[s])


def _movable_weight(w: Variable) -> bool:
    """A float weight that takes a new value (given its own, so nothing changes)."""
    try:
        value = np.asarray(w.numpy())
        if not (np.issubdtype(value.dtype, np.floating) and value.size):
            return False
        w.assign(value)
    except Exception:  # read-only or not array-like: left alone
        return False
    return True


def _movable(v: np.ndarray) -> np.ndarray | None:
    """The elements of one input a perturbation may move (finite floats, not whole numbers)."""
    if not np.issubdtype(v.dtype, np.floating):
        return None
    a = np.asarray(v, np.float64)
    mask = np.isfinite(a) & (a != np.round(a))
    return mask if mask.any() else None


def _perturbed(feeds: dict[str, np.ndarray], size: float,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for k, v in feeds.items():
        mask = _movable(v)
        if mask is None:
            out[k] = v
            continue
        a = np.asarray(v, np.float64)
        moved = a * (1.0 + size * rng.standard_normal(a.shape))
        out[k] = np.where(mask, moved, a).astype(v.dtype)
    return out


@contextmanager
def _moved_weights(weights: Sequence[Variable], size: float, rng: np.random.Generator,
                   ) -> Iterator[None]:
    """The float ``weights`` (Keras or TensorFlow variables) times ``1 + size * N(0, 1)``
    inside the block; their exact values are restored after it."""
    saved = []
    try:
        for w in weights:
            value = np.asarray(w.numpy())
            saved.append((w, value))
            moved = value.astype(np.float64) * (1.0 + size * rng.standard_normal(value.shape))
            w.assign(moved.astype(value.dtype))
        yield
    finally:
        for w, value in saved:
            w.assign(value)


def _envelope(run: Run, feeds: dict[str, np.ndarray], weights: Sequence[Variable],
              rng: np.random.Generator, rounds: int = 1) -> list[np.ndarray]:
    """Per output, Keras' largest movement over ``rounds`` x :data:`NOISE_RUNS` on ``feeds``
    (one batch), per vector along the last axis, broadcast to the output's shape."""
    n = len(next(iter(feeds.values())))
    base = [np.asarray(b, np.float64) for b in run_in_batches(run, feeds, n)]
    env = [np.zeros_like(b) for b in base]
    for input_size, weight_size in NOISE_RUNS * rounds:
        with _moved_weights(weights, weight_size, rng):
            outs = run_in_batches(run, _perturbed(feeds, input_size, rng), n)
        for i, (b, o) in enumerate(zip(base, outs, strict=True)):
            move = np.abs(np.asarray(o, np.float64) - b)
            move = np.where(np.isfinite(move), move, 0.0)  # a NaN excuses nothing
            if move.ndim > 1:
                move = np.broadcast_to(move.max(axis=-1, keepdims=True), move.shape)
            env[i] = np.maximum(env[i], move)
    return env


def noise_envelope(run: Run, feeds: dict[str, np.ndarray], reference: Sequence[np.ndarray],
                   candidates: Sequence[Sequence[np.ndarray]], names: Sequence[str],
                   atol: float, rtol: float, batch_size: int, weights: Sequence[Variable] = (),
                   seed: int = 0) -> dict[str, Any]:
    """Whether the elements of ``candidates`` beyond ``atol + rtol * |reference|`` lie within
    Keras' own float noise (see the module).

    ``run``: Keras on a batch of ``feeds`` (outputs in ``names`` order); ``candidates``: lists
    of outputs for the first samples of ``feeds`` (the batched run, then the batch-1 run).
    Failing samples are measured in batches of ``batch_size``, the furthest beyond first; a
    batch holding an element beyond the envelope is measured again with
    :data:`NOISE_RECHECK_ROUNDS` x more runs (a few runs may all move little by chance), and
    when one stays beyond, the rest are left unmeasured.

    Returns the record (see :meth:`edgekit.validate.ValidationResult.noise_summary`):
    ``passed``, the counts ``exceeded`` (beyond atol + rtol |reference|), ``within``,
    ``beyond`` and ``unmeasured``, the samples ``failing`` and ``measured``, the method's
    settings and per output the counts, ``envelope_max`` and the ``worst`` element.
    """
    excess = _excess(reference, candidates, names, atol, rtol)
    order = _failing_samples(excess)
    movable = [k for k, v in feeds.items() if _movable(v) is not None]
    floats = [w for w in weights if _movable_weight(w)]
    rng = np.random.default_rng(seed)
    env: list[np.ndarray] = [np.full(np.shape(r), np.nan) for r in reference]
    measured = rechecked = 0
    error = None
    while (movable or floats) and measured < len(order) and error is None:
        idx = np.array(order[measured:measured + max(1, batch_size)])
        batch = {k: v[idx] for k, v in feeds.items()}
        try:
            first = _envelope(run, batch, floats, rng)
            beyond = _count(excess, _with(env, idx, first))["beyond"]
            more = _envelope(run, batch, floats, rng, NOISE_RECHECK_ROUNDS) if beyond else first
        except Exception as exc:  # Keras refuses the moved values: nothing is excused
            error = f"{type(exc).__name__}: {exc}"
            break
        env = _with(env, idx, [np.maximum(a, b) for a, b in zip(first, more, strict=True)])
        measured += len(idx)
        rechecked += len(idx) if beyond else 0
        if beyond and _count(excess, env)["beyond"]:
            break
    record: dict[str, Any] = {
        "method": "Keras re-run on the failing samples with its float inputs and weights "
                  "x (1 + s N(0, 1))",
        "runs": [list(r) for r in NOISE_RUNS], "recheck_rounds": NOISE_RECHECK_ROUNDS,
        "multiple": NOISE_MULTIPLE, "seed": seed,
        "perturbed_inputs": movable, "perturbed_weights": len(floats),
        "failing": len(order), "measured": measured, "rechecked": rechecked, "error": error,
        **_count(excess, env),
        "per_output": {name: _output_record([e for e in excess if e.output == i], env)
                       for i, name in enumerate(names)},
    }
    record["passed"] = record["within"] == record["exceeded"]
    return record


def _with(env: list[np.ndarray], idx: np.ndarray, part: list[np.ndarray]) -> list[np.ndarray]:
    """``env`` (per output, NaN where not measured) with the samples ``idx`` set to ``part``."""
    out = [a.copy() for a in env]
    for full, p in zip(out, part, strict=True):
        full[idx] = p
    return out


def _judged(e: _Excess, env: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(within, beyond, unmeasured) masks of the failing elements of ``e`` (``env``: the
    output's envelope, NaN on samples not measured)."""
    envelope = env[:len(e.ref)]
    measured = e.failing & ~np.isnan(envelope)
    with np.errstate(invalid="ignore"):
        within = measured & (e.diff <= e.allowed + NOISE_MULTIPLE * envelope)
    return within, measured & ~within, e.failing & ~measured


def _count(excess: list[_Excess], env: list[np.ndarray]) -> dict[str, int]:
    out = {"exceeded": 0, "within": 0, "beyond": 0, "unmeasured": 0}
    for e in excess:
        within, beyond, unmeasured = _judged(e, env[e.output])
        out["exceeded"] += int(e.failing.sum())
        out["within"] += int(within.sum())
        out["beyond"] += int(beyond.sum())
        out["unmeasured"] += int(unmeasured.sum())
    return out


def _output_record(mine: list[_Excess], env: list[np.ndarray]) -> dict[str, Any]:
    """One output's counts, its largest envelope where it failed, and the element furthest
    beyond tolerance in units of its envelope (``ratio`` = (|error| - allowed) / envelope)."""
    worst: dict[str, Any] | None = None
    env_max = 0.0
    for e in mine:
        within, beyond, _ = _judged(e, env[e.output])
        judged = within | beyond
        if not judged.any():
            continue
        envelope = env[e.output][:len(e.ref)]
        env_max = max(env_max, float(envelope[judged].max()))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(judged, (e.diff - e.allowed) / envelope, -np.inf)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if worst is None or ratio[i] > worst["ratio"]:
            worst = {"index": [int(k) for k in i], "batch1": e.batch1,
                     "reference": float(e.ref[i]), "candidate": float(e.got[i]),
                     "abs_error": float(e.diff[i]), "allowed": float(e.allowed[i]),
                     "envelope": float(envelope[i]), "ratio": float(ratio[i])}
    return {**_count(mine, env), "envelope_max": env_max, "worst": worst}
