"""The validation tolerance: ``|onnx - keras| <= atol + rtol * |keras|`` per element.

Unit tests of the comparison on arrays, then the acceptance case of issue 23: a deep model
whose outputs are large (hundreds) differs from Keras by float noise alone by more than the
absolute tolerance, and passes; the same model with one weight changed fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from edgekit.validate import DEFAULT_ATOL, DEFAULT_RTOL, compare_outputs, output_errors

pytestmark = pytest.mark.file_seconds(15)


def _pair() -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([[0.0, 1.0, 100.0], [1000.0, -1000.0, 0.5]])
    return ref, ref.copy()


def test_atol_only() -> None:
    ref, got = _pair()
    got[0, 0] += 0.9e-4  # within atol 1e-4
    assert output_errors(ref, got, 1e-4)["failing"] == 0
    got[1, 0] += 1.1e-4  # on a large value, but rtol is 0
    e = output_errors(ref, got, 1e-4)
    assert e["failing"] == 1 and e["worst"]["index"] == [1, 0]
    assert e["worst"]["allowed"] == pytest.approx(1e-4)


def test_rtol_scales_with_the_reference() -> None:
    ref, got = _pair()
    got[1, 1] -= 0.9  # |error| 0.9 on -1000: within 1e-3 * 1000
    got[0, 2] += 0.09  # 0.09 on 100: within 0.1
    assert output_errors(ref, got, 1e-12, 1e-3)["failing"] == 0
    got[0, 1] += 0.0011  # 0.0011 on 1: over 1e-3
    e = output_errors(ref, got, 1e-12, 1e-3)
    assert e["failing"] == 1 and e["worst"]["index"] == [0, 1]
    assert e["failing_share"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integer_outputs_must_match_exactly(dtype: type) -> None:
    """Ids and indices: no tolerance, and no float64 rounding (2**60 + 1 is not 2**60)."""
    ref: np.ndarray = np.array([[2**60, 7, 0]], dtype)
    got = ref.copy()
    assert compare_outputs([ref], [got], ["ids"], DEFAULT_ATOL, DEFAULT_RTOL).passed
    got[0, 0] += 1  # float64 holds both as 1152921504606846976.0
    res = compare_outputs([ref], [got], ["ids"], DEFAULT_ATOL, DEFAULT_RTOL)
    e = res.per_output["ids"]
    assert not res.passed and e["exact"] and e["failing"] == 1
    assert e["max_abs_error"] == 1.0 and e["worst"]["candidate"] == 2**60 + 1
    assert "1152921504606846977 (an integer output must match exactly)" in res.failures()
    got = ref.copy()
    got[0, 1] = 8  # within atol + rtol x 7 for floats, not for ids
    assert compare_outputs([ref], [got], ["ids"], 1.0, 0.5).per_output["ids"]["failing"] == 1


def test_boolean_outputs_must_match_exactly() -> None:
    ref = np.array([[True, False, True]])
    res = compare_outputs([ref], [~ref], ["mask"], DEFAULT_ATOL, DEFAULT_RTOL)
    assert not res.passed and res.per_output["mask"]["failing"] == 3
    assert "reference True, got False" in res.failures()


def test_float_candidate_of_an_integer_output_keeps_the_tolerance() -> None:
    """Only integers on both sides are exact: a float model output keeps atol + rtol."""
    ref = np.array([[3, 1000]], np.int64)
    got = np.array([[3.00005, 1000.9]], np.float32)
    assert compare_outputs([ref], [got], ["y"], DEFAULT_ATOL, DEFAULT_RTOL).passed


def test_mixed_tolerance_and_the_worst_element() -> None:
    ref, got = _pair()
    got[0, 0] += 5e-5  # zero reference: only atol 1e-4 applies
    got[1, 0] += 1.05  # allowed 1e-4 + 1e-3 * 1000 = 1.0001: fails by 5%
    got[0, 1] += 0.0033  # allowed 1e-4 + 1e-3 = 0.0011: fails 3x over, the worst
    e = output_errors(ref, got, 1e-4, 1e-3)
    assert e["failing"] == 2
    w = e["worst"]
    assert w["index"] == [0, 1] and w["reference"] == 1.0
    assert w["candidate"] == pytest.approx(1.0033) and w["ratio"] == pytest.approx(3.0, 1e-3)
    assert e["max_abs_error"] == pytest.approx(1.05)
    assert e["p50_abs_error"] <= e["p99_abs_error"] <= e["max_abs_error"]


@pytest.mark.parametrize("side", ["reference", "candidate", "both"])
def test_nan_on_either_side_fails(side: str) -> None:
    ref, got = _pair()
    if side in ("reference", "both"):
        ref[1, 2] = np.nan
    if side in ("candidate", "both"):
        got[1, 2] = np.nan
    e = output_errors(ref, got, 1.0, 1.0)
    assert e["failing"] == 1 and e["worst"]["index"] == [1, 2]
    assert e["max_abs_error"] == np.inf


def test_compare_outputs_per_output_and_message() -> None:
    ref, got = _pair()
    bad = got.copy()
    bad[1, 2] = 0.6
    res = compare_outputs([ref, ref], [got, bad], ["clean", "head"], DEFAULT_ATOL, DEFAULT_RTOL)
    assert not res.passed and res.atol == DEFAULT_ATOL and res.rtol == DEFAULT_RTOL
    assert res.per_output["clean"]["failing"] == 0
    assert res.per_output["head"]["worst"]["index"] == [1, 2]
    text = res.failures()
    assert "'clean'" not in text
    assert "output 'head': 1 of 6 elements (17%) fail, worst at [1, 2]" in text
    assert "p50" in text and "p99" in text
    assert res.tolerance() == f"atol {DEFAULT_ATOL:g} + rtol {DEFAULT_RTOL:g} x |reference|"
    # without a tolerance nothing is checked
    unchecked = compare_outputs([ref], [bad])
    assert unchecked.passed and unchecked.tolerance() == "no tolerance"


def test_a_second_run_at_batch_1_is_folded_in() -> None:
    ref, got = _pair()
    res = compare_outputs([ref], [got], ["y"], 1e-4)
    bad = got[:1].copy()
    bad[0, 2] += 1.0
    res.include(compare_outputs([ref[:1]], [bad], ["y"], 1e-4))
    e = res.per_output["y"]
    assert not res.passed and e["failing"] == 1 and e["worst"]["batch1"]
    assert e["elements"] == 6 + 3 and e["failing_share"] == pytest.approx(1 / 9)
    assert res.max_abs_error == pytest.approx(1.0)
    assert "(batch 1)" in res.failures()


def test_export_config_takes_the_defaults_and_refuses_negative_rtol() -> None:
    from edgekit.convert import ExportConfig
    from edgekit.errors import InputError

    config = ExportConfig()
    assert (config.atol, config.rtol) == (DEFAULT_ATOL, DEFAULT_RTOL)
    assert ExportConfig(rtol=0).rtol == 0
    with pytest.raises(InputError, match="rtol >= 0"):
        ExportConfig(rtol=-1e-3)


def test_cli_help_states_the_defaults() -> None:
    from click.testing import CliRunner

    from edgekit.cli.main import cli

    out = CliRunner().invoke(cli, ["export", "--help"]).output
    stated = {float(v) for v in re.findall(r"\(default (\d[\d.e-]*)\)", out)}
    assert {DEFAULT_ATOL, DEFAULT_RTOL} <= stated


# -- the acceptance case: a deep model with large outputs ---------------------------------------
def _deep_model() -> Any:
    """12 x (Conv 3x3, 32 channels, BatchNorm, ReLU) on 16x16x3, outputs in the hundreds.

    BatchNorm statistics come from one batch (momentum 0, one step at learning rate 0), so
    activations neither vanish nor explode. onnxruntime and TensorFlow sum the convolutions
    in different orders: the outputs differ by float noise only, a relative ~1e-5 at most,
    which on values in the hundreds is more than atol 1e-4.
    """
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = inp
    for _ in range(12):
        h = keras.layers.Conv2D(32, 3, padding="same")(h)
        h = keras.layers.BatchNormalization(momentum=0.0)(h)
        h = keras.layers.ReLU()(h)
    out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    m = keras.Model(inp, keras.layers.Rescaling(1000.0, name="scores")(out))
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 16, 16, 3)).astype(np.float32)
    m.fit(x, np.zeros((64, 10)), epochs=1, batch_size=64, verbose=0)
    return m


@pytest.mark.slow
def test_deep_model_with_float_noise_passes_and_a_changed_weight_fails(tmp_path: Path) -> None:
    from edgekit.convert import (
        ExportConfig,
        export_model,
        load_source,
        synthetic_inputs,
        validate_source,
    )

    m = _deep_model()
    # atol alone: float noise goes beyond it (Keras' own float-noise envelope then excuses it,
    # see tests/test_noise_envelope.py)
    alone = export_model(m, tmp_path / "abs", ExportConfig(rtol=0.0)).validation
    assert alone.per_output["scores"]["failing"] > 0
    assert alone.noise is not None and alone.noise["passed"]
    res = export_model(m, tmp_path / "out", ExportConfig())
    v = res.validation
    assert v.passed and v.max_abs_error > DEFAULT_ATOL  # float noise over atol alone
    assert v.noise is None  # within atol + rtol: no extra Keras run
    stats = cast(dict[str, Any], res.report)["validation"]
    assert stats["atol"] == DEFAULT_ATOL and stats["rtol"] == DEFAULT_RTOL
    assert stats["per_output"]["scores"]["failing"] == 0
    assert stats["per_output"]["scores"]["p99_abs_error"] > 0

    conv = next(layer for layer in m.layers if "conv" in layer.name)
    kernel = conv.get_weights()
    kernel[0][1, 1, 0, 0] *= 1.5  # one weight of the first convolution
    conv.set_weights(kernel)
    source = load_source(m)
    bad = validate_source(source, res.onnx_path, synthetic_inputs(source, 64), DEFAULT_ATOL,
                          rtol=DEFAULT_RTOL)
    assert not bad.passed and bad.noise is not None and bad.noise["beyond"] > 0
    e = bad.per_output["scores"]
    assert e["failing"] > 0 and e["worst"]["ratio"] > 1
    assert f"output 'scores': {e['failing']} of {e['elements']} elements" in bad.failures()


@pytest.mark.parametrize("chunk", [7, 64, 1 << 22])
def test_chunked_comparison_gives_the_whole_array_figures(
        chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs are compared a chunk of elements at a time (memory stays bounded for large
    outputs); every figure is the one of the whole array, the worst element's index too."""
    import edgekit.validate as v

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(5, 4, 6)) * 100
    got = ref * (1 + rng.normal(size=ref.shape) * 4e-4)  # some beyond rtol 1e-3
    got[3, 2, 5] += 2.0  # the worst: beyond 1e-4 + 1e-3 x |ref| by the most
    got[1, 0, 0] = np.nan
    monkeypatch.setattr(v, "CHUNK_ELEMENTS", chunk)
    e = v.output_errors(ref, got, 1e-4, 1e-3)
    diff = np.abs(ref - got)
    diff[np.isnan(diff)] = np.inf
    allowed = 1e-4 + 1e-3 * np.abs(ref)
    assert e["elements"] == ref.size and e["max_abs_error"] == np.inf
    assert e["failing"] == int(np.sum(~(diff <= allowed)))
    assert e["worst"]["index"] == [1, 0, 0]  # NaN: infinitely worse
    finite = np.where(np.isinf(diff), 0, diff)
    assert e["p50_abs_error"] == pytest.approx(
        np.quantile(diff, 0.5, method="nearest"), rel=1e-6)
    assert e["p99_abs_error"] == pytest.approx(  # kept in float32 for the percentiles
        np.quantile(diff, 0.99, method="nearest"), rel=1e-6)
    got[1, 0, 0] = ref[1, 0, 0]
    e = v.output_errors(ref, got, 1e-4, 1e-3)
    assert e["worst"]["index"] == [3, 2, 5] and e["max_abs_error"] == pytest.approx(
        finite.max())
    assert e["mean_abs_error"] == pytest.approx(np.abs(ref - got).mean())
    sat = v.output_saturation([np.tile(ref[:1], (5, 1, 1))], ["y"])
    assert sat["y"]["constant_share"] == 1.0
