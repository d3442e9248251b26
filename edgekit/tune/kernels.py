"""The tune's kernel stage: the best static int8 file with each conv on whichever of
onnxruntime's int8 conv kernels profiles faster for it on this machine (symmetric-conv or
im2col + GEMM, chosen by the weights' zero point: :mod:`edgekit.quantize.kernels`)."""

from __future__ import annotations

import dataclasses

from edgekit.errors import exception_reason
from edgekit.measure.profile import attribute_int8, node_profile
from edgekit.quantize.kernels import offset_candidates, offset_conv_weights
from edgekit.tune.candidates import _try_quant
from edgekit.tune.core import Candidate, _Context

__all__ = ["GAIN", "gemm_conv_candidate"]

#: a conv is offset when its profiled kernel time drops below this fraction (profiles of
#: single nodes are noisy; the whole file is then timed like every candidate)
GAIN = 0.9


def _faster_convs(ctx: _Context, best: Candidate) -> tuple[list[str], int]:
    """The convs of ``best``'s file whose kernel time with offset weights is below
    :data:`GAIN` times their time as they are (both files profiled per node at the tune's
    batch), and how many convs could be offset."""
    import onnx

    assert best.path is not None
    model = onnx.load(best.path)
    names = offset_candidates(model)
    if not names:
        return [], 0
    offset_conv_weights(model, names)
    probe = ctx.tmp / "gemm-convs-probe.onnx"
    onnx.save(model, str(probe))
    wanted = set(names)
    feeds, session = ctx.bench_feeds, ctx.base_session
    now = attribute_int8(node_profile(best.path, feeds, session), wanted)
    gemm = attribute_int8(node_profile(probe, feeds, session), wanted)
    probe.unlink()
    return [n for n in names if n in now and n in gemm and gemm[n] < GAIN * now[n]], len(names)


def gemm_conv_candidate(ctx: _Context, best: Candidate) -> Candidate | None:
    """``best`` (a static int8 candidate on onnxruntime) requantized with the convs that profile
    faster on onnxruntime's GEMM kernels offset (``<best>+gemm-convs``), or None (logged)
    when none does."""
    assert best.quantization is not None
    say = ctx.progress
    say(f"kernels: profiling {best.name}'s int8 convs on onnxruntime's symmetric-conv and "
        "GEMM kernels")
    try:
        faster, total = _faster_convs(ctx, best)
    except Exception as exc:  # a profile that fails loses this stage, not the tune
        say(f"    profiling failed ({exception_reason(exc, 160)}): no kernel candidate")
        return None
    if not faster:
        say(f"    none of {total} conv(s) with symmetric int8 weights profiled faster on the "
            "GEMM kernels: no kernel candidate" if total else
            "    no conv with symmetric int8 weights: no kernel candidate")
        return None
    scheme = best.quantization.scheme
    chosen = tuple(dict.fromkeys([*scheme.offset_weight_convs, *faster]))
    cfg = dataclasses.replace(best.quantization,
                              scheme=dataclasses.replace(scheme, offset_weight_convs=chosen))
    cand = _try_quant(ctx, f"{best.name}+gemm-convs",
                      f"{best.name} with {len(faster)} of {total} conv(s) on onnxruntime's "
                      f"GEMM kernels (weights offset by one, the same values: faster by "
                      f"{100 * (1 - GAIN):.0f} % or more in per-node profiles here)",
                      cfg, stage="kernels")
    say(f"    ratio {cand.latency_ratio or float('nan'):.3f}, {cand.reason}")
    return cand
