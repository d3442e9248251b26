"""The composed configs: QuantizationConfig of its five groups, TuneConfig and CheckConfig
holding a RatioConfig (and the tune's base QuantizationConfig). Old flat dicts read back, the
nested shape is written, wrong values are clear errors, and no tune candidate drops a field."""

from __future__ import annotations

import dataclasses
import json
import typing
from enum import Enum
from types import SimpleNamespace

import pytest

from edgekit.check import CHECK_RATIO, CheckConfig
from edgekit.errors import InputError
from edgekit.quantize import (
    CalibrationConfig,
    CalibrationMethod,
    GateConfig,
    OutputConfig,
    OutputFormat,
    QuantizationConfig,
    QuantMode,
    QuantScheme,
    QuantType,
    SpeedCheckConfig,
)
from edgekit.speed.ratio import RatioConfig
from edgekit.tune import TUNE_RATIO, Candidate, TuneConfig

if typing.TYPE_CHECKING:
    from onnx import ModelProto

#: what edgekit wrote as ``edgekit.quantization`` / ``<stem>.int8.quant.json`` before the groups
OLD_FLAT = {
    "mode": "int8", "preset": "avx2", "per_channel": False, "activation_type": "QInt8",
    "weight_type": "QInt8", "activation_symmetric": True, "weight_symmetric": False,
    "reduce_range": False, "calibration_method": "minmax", "calibration_samples": 32,
    "calibration_batch_size": 8, "op_types_to_quantize": ["Conv"], "nodes_to_exclude": ["a"],
    "stem_in_float": False, "extra_options": {"CalibMovingAverage": True},
    "output_format": "ort", "mobile_batch": 0, "max_accuracy_drop": 0.5, "eval_samples": 100,
    "gate_group_size": 2, "gate_max_steps": 3, "seed": 7, "explain": True,
}

#: the ``config`` section of a tune report written before TuneConfig held a RatioConfig
OLD_TUNE = {
    "max_accuracy_drop": 1.0, "threads": 2, "batch": 4, "budget_minutes": 2.0,
    "calibration_samples": 64, "eval_samples": 500, "min_pairs": 20, "max_pairs": 60,
    "min_seconds": 0.0, "max_seconds": 10.0, "rel_tol": 0.05, "seed": 3, "force": True,
    "engines": None,
}


def test_an_old_flat_quantization_dict_reads_back_into_its_groups() -> None:
    cfg = QuantizationConfig.from_dict(OLD_FLAT)
    assert cfg == QuantizationConfig(
        mode=QuantMode.INT8,
        scheme=QuantScheme(preset="avx2", per_channel=False, activation_type=QuantType.QINT8,
                           weight_type=QuantType.QINT8, activation_symmetric=True,
                           weight_symmetric=False, reduce_range=False,
                           op_types_to_quantize=("Conv",), nodes_to_exclude=("a",),
                           stem_in_float=False, extra_options={"CalibMovingAverage": True}),
        calibration=CalibrationConfig(method=CalibrationMethod.MINMAX, samples=32, batch_size=8,
                                      seed=7),
        gate=GateConfig(max_accuracy_drop=0.5, eval_samples=100, group_size=2, max_steps=3,
                        explain=True),
        output=OutputConfig(format=OutputFormat.ORT, mobile_batch=0))
    # every old key has a place: nothing of an old file is dropped (the speed check and
    # slice_strided_pointwise, float_outputs, offset_weight_convs and channels_last_flatten
    # came later: an old file gets their defaults)
    later = ("speed.", "scheme.slice_strided_pointwise", "scheme.float_outputs",
             "scheme.offset_weight_convs", "scheme.channels_last_flatten")
    old = [leaf for leaf in _leaves(cfg.to_dict()) if not leaf.startswith(later)]
    groups = typing.cast(dict[str, typing.Any], cfg.to_dict())
    assert old == sorted(
        {"mode", *(f"{g}.{k}" for g in ("scheme", "calibration", "gate", "output")
                   for k in groups[g] if not f"{g}.{k}".startswith(later))})
    assert len(old) == len(OLD_FLAT) and cfg.speed == SpeedCheckConfig()
    assert cfg.scheme.slice_strided_pointwise is False and cfg.scheme.offset_weight_convs == ()


def test_the_nested_shape_is_written_and_read_back() -> None:
    cfg = QuantizationConfig.from_dict(OLD_FLAT)
    written = json.loads(json.dumps(cfg.to_dict()))
    assert set(written) == {"mode", "scheme", "calibration", "gate", "speed", "output"}
    assert written["speed"] == {"enabled": True, "budget_s": 2.0, "batch": 1, "threads": None,
                                "tolerance": 0.0}
    assert written["calibration"] == {"method": "minmax", "samples": 32, "batch_size": 8,
                                      "seed": 7}
    assert written["scheme"]["nodes_to_exclude"] == ["a"]  # JSON lists, not tuples
    assert written["output"] == {"format": "ort", "mobile_batch": 0}
    assert QuantizationConfig.from_dict(written) == cfg
    assert QuantizationConfig.from_dict({}) == QuantizationConfig()
    # a partial group keeps the defaults of the rest; a nested value wins over an old flat key
    part = QuantizationConfig.from_dict({"calibration": {"samples": 9}, "calibration_samples": 5,
                                         "calibration_method": "entropy", "future_key": 1})
    assert part.calibration == CalibrationConfig(method=CalibrationMethod.ENTROPY, samples=9)
    # a nested config saved before the speed check existed reads back with its defaults
    before = {k: v for k, v in written.items() if k != "speed"}
    assert QuantizationConfig.from_dict(before) == dataclasses.replace(
        cfg, speed=SpeedCheckConfig())
    off = QuantizationConfig.from_dict({**written, "speed": {"enabled": False, "batch": 8}})
    assert off.speed == SpeedCheckConfig(enabled=False, batch=8)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: QuantizationConfig.from_dict({"calibration": 5}),
     "QuantizationConfig.calibration must be an object"),
    (lambda: QuantizationConfig.from_dict({"calibration_samples": 0}),
     "calibration samples must be >= 1"),
    (lambda: QuantizationConfig.from_dict({"calibration": {"method": "median"}}),
     "unknown calibration method 'median'"),
    (lambda: QuantizationConfig.from_dict({"mode": "int4"}), "unknown quantization mode"),
    (lambda: QuantizationConfig(scheme={"per_channel": False}),  # type: ignore[arg-type]
     "QuantizationConfig.scheme must be a QuantScheme, got dict"),
    (lambda: QuantScheme(preset="x86"), "unknown preset 'x86'"),
    (lambda: QuantScheme(nodes_to_exclude="conv1"), "must be lists of names"),
    (lambda: GateConfig(max_accuracy_drop=-1), "max_accuracy_drop must be >= 0"),
    (lambda: GateConfig(group_size=0), "gate group_size >= 1"),
    (lambda: OutputConfig(mobile_batch=-1), "mobile_batch must be >= 0"),
    (lambda: SpeedCheckConfig(budget_s=0), "budget_s > 0"),
    (lambda: SpeedCheckConfig(batch=0), "batch >= 1"),
    (lambda: SpeedCheckConfig(threads=0), "threads >= 1"),
    (lambda: SpeedCheckConfig(tolerance=1.0), "tolerance must be in"),
    (lambda: QuantizationConfig.from_dict({"speed": {"enabled": "no"}}),
     "speed check enabled must be true or false"),
    (lambda: OutputConfig(format="tflite"),  # type: ignore[arg-type]  # a wrong value on purpose
     "unknown format 'tflite'"),
    (lambda: TuneConfig(ratio=RatioConfig(min_seconds=5.0, max_seconds=1.0)), "min_seconds"),
    (lambda: TuneConfig(quantization=QuantizationConfig(gate=GateConfig(max_accuracy_drop=1))),
     "the tune gates every candidate on TuneConfig.max_accuracy_drop"),
    (lambda: TuneConfig.from_dict({"ratio": {"tolerance": 2}}), "tolerance must be in"),
    (lambda: CheckConfig(ratio={"tolerance": 0.1}),  # type: ignore[arg-type]
     "CheckConfig.ratio must be a RatioConfig"),
])
def test_wrong_values_are_clear_errors(build: typing.Callable[[], object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        build()


def test_tune_and_check_hold_a_ratio_config() -> None:
    """One stop rule (edgekit.speed.ratio), with the defaults each command had; the configs
    resolve its settle for their threads (1 by default)."""
    assert TUNE_RATIO == RatioConfig(
        tolerance=0.02, min_rounds=40, max_rounds=20000, min_seconds=1.0, max_seconds=30.0)
    assert TuneConfig().ratio == TUNE_RATIO.for_threads(1)
    assert CHECK_RATIO == RatioConfig(
        tolerance=0.02, min_rounds=5, min_seconds=2.0, max_seconds=20.0, block_seconds=0.5)
    assert CheckConfig().ratio == CHECK_RATIO.for_threads(1)
    assert TuneConfig().quantization == QuantizationConfig()
    for name in ("rel_tol", "min_pairs", "max_pairs", "min_seconds", "max_seconds",
                 "calibration_samples", "seed"):
        assert name not in {f.name for f in dataclasses.fields(TuneConfig)}
    for name in ("tolerance", "min_time", "max_time", "block_time"):
        assert name not in {f.name for f in dataclasses.fields(CheckConfig)}


def test_an_old_flat_tune_config_reads_back_and_the_nested_one_is_written() -> None:
    cfg = TuneConfig.from_dict(OLD_TUNE)
    # a 2-thread tune: the ratio read back is settled (RatioConfig.for_threads)
    assert cfg.ratio == RatioConfig(tolerance=0.05, min_rounds=20, max_rounds=60,
                                    min_seconds=0.0, max_seconds=10.0).for_threads(2)
    assert cfg.quantization.calibration == CalibrationConfig(samples=64, seed=3)
    assert (cfg.threads, cfg.batch, cfg.eval_samples, cfg.force) == (2, 4, 500, True)
    written = json.loads(json.dumps(cfg.to_dict()))
    assert written["ratio"]["tolerance"] == 0.05 and "rel_tol" not in written
    assert written["quantization"]["calibration"]["samples"] == 64
    assert TuneConfig.from_dict(written) == cfg
    # a partial ratio keeps the tune's defaults, not RatioConfig's
    assert TuneConfig.from_dict({"ratio": {"tolerance": 0.1}}).ratio == dataclasses.replace(
        TUNE_RATIO, tolerance=0.1).for_threads(1)
    assert TuneConfig.from_dict({"engines": ["openvino"]}).engines == ("onnxruntime",
                                                                       "openvino")


# -- the tune's candidate space: every field varied or carried over ---------------------------
def _leaves(d: dict[str, object], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in d.items():
        if isinstance(v, dict) and k in ("scheme", "calibration", "gate", "speed", "output"):
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append(prefix + k)
    return sorted(out)


def _other(f: dataclasses.Field[object], hint: object) -> object:
    """A value of field ``f`` other than its default (a new field type must be taught here)."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, Enum):
        return next(m for m in type(default) if m is not default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, float) and 0 <= default < 1:  # a fraction (a tolerance)
        return default / 2 or 0.5
    if isinstance(default, int | float):
        return default + 3
    if isinstance(default, tuple):
        return ("n1",)
    if isinstance(default, dict):
        return {"K": 1}
    text = str(hint)
    for kind, value in (("bool", True), ("float", 1.5), ("Sequence", ("Conv",)),
                        ("str", "arm64"), ("int", 2)):
        if default is None and kind in text:
            return value
    pytest.fail(f"no non-default value for {f.name} ({hint}): teach _other its type")


def _unusual() -> QuantizationConfig:
    """A QuantizationConfig with every field of every group set to a non-default value."""
    groups = {}
    for group in dataclasses.fields(QuantizationConfig)[1:]:
        cls = type(getattr(QuantizationConfig(), group.name))
        hints = typing.get_type_hints(cls)
        groups[group.name] = cls(**{f.name: _other(f, hints[f.name])
                                    for f in dataclasses.fields(cls)})
    base = QuantizationConfig(mode=QuantMode.FP16, **groups)
    assert all(getattr(base, g) != getattr(QuantizationConfig(), g) for g in groups)
    return base


def _fields(cfg: QuantizationConfig) -> dict[str, object]:
    return {f"{g}.{f.name}": getattr(getattr(cfg, g), f.name)
            for g in ("scheme", "calibration", "gate", "speed", "output")
            for f in dataclasses.fields(getattr(cfg, g))} | {"mode": cfg.mode}


def _models() -> list[ModelProto]:
    """A convolutional and a recurrent graph (what the quantization space depends on)."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    out = []
    for op in ("Conv", "LSTM"):
        graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], op, [], [])
        out.append(helper.make_model(graph))
    assert all(isinstance(m, onnx.ModelProto) for m in out)
    return out


def test_every_tune_candidate_carries_each_field_it_does_not_vary() -> None:
    from edgekit.tune.candidates import _float_config, _quant_space

    base = _unusual()
    want = _fields(base)
    specs = [spec for model in _models() for spec in _quant_space(model)]
    assert {s.name for s in specs} >= {"int8-default", "int8-dynamic", "int8-u8s8-pt"}
    for spec in specs:
        cfg = spec.config(base)
        got = _fields(cfg)
        assert spec.varies() <= set(got), spec.name  # it varies real fields only
        dropped = {k for k in got if k not in spec.varies() and got[k] != want[k]}
        assert not dropped, f"{spec.name} dropped {dropped}"
        # a float region on top of it changes the excluded nodes only
        region = _fields(_float_config(Candidate(spec.name, "quantization", "",
                                                 quantization=cfg), ["extra"]))
        assert {k for k in got if region[k] != got[k]} == {"scheme.nodes_to_exclude"}


def test_the_search_builds_candidates_from_the_tune_base_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.tune import search
    from edgekit.tune.candidates import _quant_space

    base = dataclasses.replace(_unusual(), gate=GateConfig())
    tried: list[QuantizationConfig] = []

    def try_quant(ctx: object, name: str, desc: str, qcfg: QuantizationConfig) -> Candidate:
        tried.append(qcfg)
        return Candidate(name, "quantization", desc, quantization=qcfg)

    monkeypatch.setattr(search, "_try_quant", try_quant)
    space = _quant_space(_models()[0])
    fake = SimpleNamespace(space=space, cands=[], advance=lambda: None, ctx=SimpleNamespace(
        config=TuneConfig(quantization=base), progress=lambda message: None))
    for i in range(len(space)):
        search._Search._quant(fake, i)  # type: ignore[arg-type]
    assert tried == [spec.config(base) for spec in space]
    assert all(c.calibration == base.calibration or c.calibration.method is
               CalibrationMethod.MINMAX for c in tried)
