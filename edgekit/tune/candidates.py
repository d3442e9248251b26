"""The tune's int8 candidates: the quantization space (the fields each candidate varies in
the tune's base :class:`QuantizationConfig`), float regions (stem, depthwise convs) and
latency-aware mixed precision (per-node profiles of fp32 and int8)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgekit.measure.profile import attribute_fp32, attribute_int8, node_profile
from edgekit.quantize.config import QuantizationConfig, resolve_mode
from edgekit.quantize.options import PRESETS, CalibrationMethod, QuantMode, QuantType
from edgekit.quantize.regions import float_region, stem_and_depthwise, stem_float_region
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.tune.core import Candidate, _check_accuracy, _Context, _measure

if TYPE_CHECKING:
    import onnx

__all__ = ["QuantCandidate"]


@dataclass(frozen=True)
class QuantCandidate:
    """One quantized candidate of the tune: its name, description, mode and the fields it
    varies, by group of :class:`~edgekit.quantize.QuantizationConfig` (``{"scheme":
    {"per_channel": False}}``). Its config is the tune's base config
    (:attr:`TuneConfig.quantization`) with those fields replaced: every other field is
    carried over, so an option added to the config cannot be dropped here."""

    name: str
    description: str
    mode: QuantMode = QuantMode.INT8
    changes: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def config(self, base: QuantizationConfig) -> QuantizationConfig:
        """``base`` with this candidate's mode and changes."""
        groups = {g: dataclasses.replace(getattr(base, g), **ch) for g, ch in self.changes.items()}
        return dataclasses.replace(base, mode=self.mode, **groups)

    def varies(self) -> set[str]:
        """The fields this candidate sets: ``"mode"`` and ``"group.field"`` names."""
        return {"mode"} | {f"{g}.{k}" for g, ch in self.changes.items() for k in ch}


def _preset(name: str, **more: object) -> dict[str, object]:
    """The :class:`~edgekit.quantize.QuantScheme` fields of preset ``name``, then ``more``."""
    return {"preset": name, **PRESETS[name], **more}


#: the quantization stage's plain static candidates (the stem is a float-region candidate of
#: its own, so these quantize it)
_PLAIN: tuple[QuantCandidate, ...] = (
    QuantCandidate("int8-u8s8-pc", "QDQ, u8 activations, s8 per-channel weights (avx512_vnni "
                   "preset)", changes={"scheme": _preset("avx512_vnni", stem_in_float=False)}),
    QuantCandidate("int8-u8s8-pc-rr", "as above with 7-bit weights (avx2 preset, reduce_range)",
                   changes={"scheme": _preset("avx2", stem_in_float=False)}),
    QuantCandidate("int8-u8s8-pt", "QDQ, u8 activations, s8 per-tensor weights",
                   changes={"scheme": _preset("avx512_vnni", per_channel=False,
                                              stem_in_float=False)}),
    QuantCandidate("int8-s8s8-pc", "QDQ, s8 symmetric activations, s8 per-channel weights",
                   changes={"scheme": _preset("avx512_vnni", activation_type=QuantType.QINT8,
                                              activation_symmetric=True, stem_in_float=False)}),
    QuantCandidate("int8-u8s8-pc-rr-minmax", "avx2 preset with minmax calibration",
                   changes={"scheme": _preset("avx2", stem_in_float=False),
                            "calibration": {"method": CalibrationMethod.MINMAX}}),
)


def _quant_space(model: onnx.ModelProto) -> list[QuantCandidate]:
    """The quantization stage's candidates, the likeliest winners first: the export's default
    variant first (static int8 with the base config's settings, the small stem kept in float;
    for models where ``auto`` picks dynamic int8 -- recurrent or Dense-heavy ones, see
    :func:`resolve_mode` -- dynamic int8 first), then the other settings."""
    default = QuantCandidate(
        "int8-default", "the export's default static int8 (QuantizationConfig defaults: 7-bit "
        "per-channel weights, u8 activations, percentile calibration, a stem conv on few "
        "channels kept in float)")
    mode, why = resolve_mode(model, QuantMode.AUTO)
    if mode is not QuantMode.DYNAMIC:
        return [default, *_PLAIN]
    dynamic = [
        QuantCandidate("int8-dynamic", f"dynamic int8, the export's default for this model "
                       f"({why})", QuantMode.DYNAMIC),
        QuantCandidate("int8-dynamic-full", "dynamic int8 with full-range 8-bit weights",
                       QuantMode.DYNAMIC, {"scheme": {"reduce_range": False}}),
    ]
    return [*dynamic, default, *_PLAIN]


def _try_quant(ctx: _Context, name: str, desc: str, qcfg: QuantizationConfig,
               stage: str = "quantization", session: SessionOptionsConfig | None = None,
               ) -> Candidate:
    """Quantize with ``qcfg``, then measure latency (``session``, default the base settings)
    and accuracy. Static files are plain QDQ: onnxruntime optimizes them at load; dynamic ones
    may use onnxruntime's own ops (``cand.nonstandard_ops``)."""
    from edgekit.quantize import quantize_model

    cand = Candidate(name, stage, desc, quantization=qcfg)
    outdir = ctx.tmp / name
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        # the tune times every candidate itself: no speed check of quantize's own
        unchecked = dataclasses.replace(qcfg, speed=dataclasses.replace(qcfg.speed, enabled=False))
        variant = quantize_model(ctx.fp32_path, outdir, stem=ctx.fp32_path.stem,
                                 config=unchecked, calibration=ctx.calibration)
    except Exception as exc:  # a config onnxruntime rejects is a failed candidate, not a crash
        cand.reason = f"quantization failed: {str(exc).splitlines()[0][:160]}"
        return cand
    cand.nonstandard_ops = list(variant.nonstandard_ops)
    model = _measure(ctx, cand, variant.path, session or ctx.base_session)
    try:
        _check_accuracy(ctx, cand, model)
    finally:
        model.close()
    return cand


def _latency_aware(ctx: _Context, best: Candidate) -> tuple[Candidate | None, list[dict[str, Any]]]:
    """Profile fp32 and ``best`` per node; keep in float the nodes where int8 is not faster."""
    assert best.path is not None and best.quantization is not None
    feeds = ctx.bench_feeds
    fp32_prof = attribute_fp32(node_profile(ctx.fp32_path, feeds, ctx.base_session), ctx.graph)
    names = {n.name for n in ctx.graph.node}
    int8_prof = attribute_int8(node_profile(best.path, feeds, ctx.base_session), names)
    rows = []
    slower = []
    for node in ctx.graph.node:
        if node.name in fp32_prof and node.name in int8_prof:
            f, q = fp32_prof[node.name], int8_prof[node.name]
            rows.append({"node": node.name, "op": node.op_type, "fp32_us": round(f, 2),
                         "int8_us": round(q, 2), "speedup": round(f / q, 3) if q else None})
            if q >= 0.95 * f:
                slower.append(node.name)
    rows.sort(key=lambda r: -r["fp32_us"])
    if not slower:
        return None, rows
    region = float_region(ctx.graph, slower)
    cand = _try_quant(
        ctx, "int8-latency-aware",
        f"{best.name} with {len(slower)} node(s) where int8 was not faster kept in float "
        f"({len(region)} with their activations/pooling); the float regions stay float in a "
        "plain onnxruntime session (no session setting needed)",
        _float_config(best, region), stage="mixed precision",
    )
    return cand, rows


def _float_config(best: Candidate, region: Sequence[str]) -> QuantizationConfig:
    """``best``'s quantization config (every field) with the nodes of ``region`` kept in
    float."""
    assert best.quantization is not None
    scheme = best.quantization.scheme
    nodes = sorted(set(scheme.nodes_to_exclude) | set(region))
    return dataclasses.replace(best.quantization,
                               scheme=dataclasses.replace(scheme, nodes_to_exclude=nodes))


def _region_candidates(ctx: _Context, best: Candidate) -> list[tuple[str, str, list[str]]]:
    """(name, description, float region) of the stem / depthwise-in-float candidates; skipped
    ones are logged with their reason."""
    stem, dw = stem_and_depthwise(ctx.graph)
    out: list[tuple[str, str, list[str]]] = []
    assert best.quantization is not None
    auto = best.quantization.scheme.stem_in_float
    kept = stem_float_region(ctx.graph, always=auto is True)[0] if auto is not False else []
    if stem and kept:
        ctx.progress(f"    {best.name} keeps the stem conv in float already: no stem-in-float "
                     "candidate")
    elif stem:
        out.append(("int8-stem-float", f"{best.name} with the stem conv ({stem[0]}) and its "
                    "activation/pooling kept in float", float_region(ctx.graph, stem)))
    else:
        ctx.progress("    no Conv: no stem-in-float candidate")
    if dw:
        out.append(("int8-stem-dw-float", f"{best.name} with the stem conv and the {len(dw)} "
                    "depthwise conv(s) kept in float", float_region(ctx.graph, stem + dw)))
    else:
        ctx.progress("    no depthwise Conv: no depthwise-in-float candidate")
    return out


