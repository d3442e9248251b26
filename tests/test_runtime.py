"""edgekit.runtime.model: loading, providers, session settings, predict/run checks, threads."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import pytest
from _runtime_models import (
    FASHION_LABELS,
    SEQ_LEN,
    TAB_MEAN,
    TAB_STD,
    image_reference,
    make_image_model,
    make_tabular_model,
    make_text_model,
    make_two_input_model,
)

from edgekit.errors import InputError, ModelLoadError, ProviderError
from edgekit.metadata import Preprocessing
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.predict import load_array, load_image
from edgekit.runtime.session import (
    AUTO_ORDER,
    PROVIDER_NAMES,
    SessionOptionsConfig,
    available_providers,
    resolve_providers,
)
from edgekit.runtime.specs import read_onnx_props as _read_onnx_props

RNG = np.random.default_rng(0)
IMG_U8 = RNG.integers(0, 256, (28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runtime_models")
    return {
        "image": make_image_model(d / "image.onnx"),
        "tuned": make_image_model(
            d / "tuned.onnx",
            session={"intra_op_num_threads": 1, "graph_optimization_level": "basic"},
        ),
        "text": make_text_model(d / "text.onnx"),
        "two": make_two_input_model(d / "two.onnx"),
        "tabular": make_tabular_model(d / "tabular.onnx"),
    }


@pytest.fixture(scope="module")
def image_model(models: dict[str, Path]) -> EdgeModel:
    return EdgeModel(models["image"])


def unavailable_provider() -> str:
    avail = set(available_providers())
    return next(n for n in PROVIDER_NAMES if n not in avail)


# -- providers -------------------------------------------------------------------------------
def test_auto_picks_cpu_here(image_model: EdgeModel) -> None:
    assert resolve_providers("auto") == ["CPUExecutionProvider"]
    assert image_model.providers == ["CPUExecutionProvider"]
    assert AUTO_ORDER[-1] == "cpu"


def test_provider_names_are_case_insensitive(models: dict[str, Path]) -> None:
    assert resolve_providers("CPU") == ["CPUExecutionProvider"]
    assert resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    assert EdgeModel(models["image"], "Cpu").providers == ["CPUExecutionProvider"]


def test_unknown_provider_name_raises() -> None:
    with pytest.raises(ProviderError, match="unknown execution provider 'gpux'") as e:
        resolve_providers("gpux")
    assert "cuda" in (e.value.hint or "")


def test_unavailable_provider_raises_with_available_list(models: dict[str, Path]) -> None:
    name = unavailable_provider()
    with pytest.raises(ProviderError, match=r"not available.*available: .*cpu"):
        EdgeModel(models["image"], name)


def test_fallback_warns_and_uses_next(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    name = unavailable_provider()
    with caplog.at_level(logging.WARNING, logger="edgekit.runtime"):
        m = EdgeModel(models["image"], [name, "cpu"], fallback=True)
    assert m.providers == ["CPUExecutionProvider"]
    assert any("not available" in r.getMessage() and name in r.getMessage() for r in caplog.records)


# -- session settings ------------------------------------------------------------------------
def test_session_options_config_roundtrip_and_ort() -> None:
    cfg = SessionOptionsConfig.from_dict(
        {
            "intra_op_num_threads": 2,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": "ORT_ENABLE_EXTENDED",
            "allow_spinning": False,
            "session_config": {"session.inter_op.allow_spinning": "0"},
            "unknown_future_key": 1,
        }
    )
    assert cfg.graph_optimization_level == "extended"
    so = cfg.to_ort()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert SessionOptionsConfig.from_dict(cfg.to_dict()) == cfg
    merged = cfg.merged(SessionOptionsConfig(intra_op_num_threads=4))
    assert merged.intra_op_num_threads == 4 and merged.execution_mode == "sequential"
    off = SessionOptionsConfig(disabled_optimizers=["QDQPropagationTransformer"])
    both = cfg.merged(off).merged(SessionOptionsConfig(disabled_optimizers=["ConstantFolding"]))
    assert both.disabled_optimizers == ["QDQPropagationTransformer", "ConstantFolding"]
    assert cfg.merged(SessionOptionsConfig()).disabled_optimizers == []
    assert SessionOptionsConfig.from_dict(off.to_dict()) == off
    assert "disabled_optimizers" not in cfg.to_dict()


@pytest.mark.parametrize(
    "bad",
    [{"intra_op_num_threads": -1}, {"execution_mode": "fast"}, {"graph_optimization_level": "x"}],
)
def test_session_options_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(InputError):
        SessionOptionsConfig.from_dict(bad)


def test_stored_session_settings_are_applied_and_overridable(models: dict[str, Path]) -> None:
    m = EdgeModel(models["tuned"])
    assert m.session_config.intra_op_num_threads == 1
    so = m.session.get_session_options()
    assert so.intra_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    m2 = EdgeModel(models["tuned"], threads=2, graph_optimization="all")
    assert m2.session.get_session_options().intra_op_num_threads == 2
    assert m2.session_config.graph_optimization_level == "all"
    m3 = EdgeModel(models["tuned"], use_stored_session=False)
    assert m3.session_config.intra_op_num_threads is None


def test_metadata_props_reader_matches_onnx(models: dict[str, Path]) -> None:
    import onnx

    proto = onnx.load(str(models["tuned"]))
    expected = {p.key: p.value for p in proto.metadata_props}
    assert _read_onnx_props(models["tuned"]) == expected
    assert "edgekit.session" in expected


def test_ort_format_model_loads_with_metadata(models: dict[str, Path], tmp_path: Path) -> None:
    ort_path = tmp_path / "tuned.ort"
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(ort_path)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(models["tuned"]), so, providers=["CPUExecutionProvider"])
    assert ort_path.exists()
    m = EdgeModel(ort_path)
    assert m.labels == FASHION_LABELS
    assert m.session_config.intra_op_num_threads == 1  # stored settings survive in .ort
    ref = EdgeModel(models["tuned"])
    np.testing.assert_allclose(m.predict(IMG_U8), ref.predict(IMG_U8), rtol=1e-5, atol=1e-6)


# -- loading errors --------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        EdgeModel(tmp_path / "nope.onnx")


def test_corrupt_file(tmp_path: Path, models: dict[str, Path]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        EdgeModel(bad)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(models["image"].read_bytes()[:500])
    with pytest.raises(ModelLoadError):
        EdgeModel(truncated)


def test_wrong_suffix_and_folder(tmp_path: Path) -> None:
    other = tmp_path / "model.keras"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match="not an .onnx or .ort file"):
        EdgeModel(other)
    with pytest.raises(InputError, match="is a folder"):
        EdgeModel(tmp_path)


# -- predict ---------------------------------------------------------------------------------
def test_predict_single_uint8_sample_scales_and_batches(image_model: EdgeModel) -> None:
    probs = image_model.predict(IMG_U8)
    assert probs.shape == (1, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, image_reference(IMG_U8 / 255.0), rtol=1e-5, atol=1e-6)
    label = image_model.predict_labels(IMG_U8)
    assert label == [FASHION_LABELS[int(probs.argmax())]]


def test_predict_float_input_is_not_double_scaled(image_model: EdgeModel) -> None:
    as_float = IMG_U8.astype(np.float64) / 255.0
    np.testing.assert_allclose(
        image_model.predict(as_float), image_model.predict(IMG_U8), rtol=1e-5, atol=1e-6
    )
    forced = image_model.predict(IMG_U8.astype(np.float32), preprocess=True)
    np.testing.assert_allclose(forced, image_model.predict(IMG_U8), rtol=1e-5, atol=1e-6)


def test_predict_batch_shapes(image_model: EdgeModel) -> None:
    batch = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    p1 = image_model.predict(batch)  # channel axis added
    p2 = image_model.predict(batch[..., None])
    p3 = image_model.predict(batch[0][..., None])  # one HWC sample
    assert p1.shape == (5, 10)
    np.testing.assert_allclose(p1, p2)
    np.testing.assert_allclose(p3, p1[:1], rtol=1e-6)
    top = image_model.predict_top_k(batch, 3)
    assert len(top) == 5 and all(len(r) == 3 for r in top)
    assert top[0][0][1] >= top[0][1][1] >= top[0][2][1]


def test_tabular_standardisation_and_logits_softmax(models: dict[str, Path]) -> None:
    m = EdgeModel(models["tabular"])
    x = np.array([[3.0, 4.0, 7.0, 8.0], [1.0, 2.0, 3.0, 4.0]])
    probs = m.predict(x)
    z = ((x - TAB_MEAN) / TAB_STD).astype(np.float32) @ (
        np.arange(12, dtype=np.float32).reshape(4, 3) - 6
    )
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert m.predict_labels(x)[0] == "c"


def test_text_model_predicts_raw_text(models: dict[str, Path]) -> None:
    m = EdgeModel(models["text"])
    assert m.is_text
    probs = m.predict(["WIN a FREE prize, call now!", "see you later"])
    assert probs.shape == (2, 2)
    assert m.predict_labels(["win free prize now", "see you later"]) == ["spam", "ham"]
    assert m.predict_labels("win free prize now") == ["spam"]
    ids = m.tokenizer.encode(["see you later"])
    np.testing.assert_allclose(m.predict(ids.astype(np.int64)), probs[1:], rtol=1e-6)
    assert ids.shape == (1, SEQ_LEN)


def test_text_for_numeric_model_errors(image_model: EdgeModel) -> None:
    with pytest.raises(InputError, match="not a text model"):
        image_model.predict("hello")


# -- run: checks and casts -------------------------------------------------------------------
def test_run_raw_dict_and_single_array(image_model: EdgeModel) -> None:
    x = (RNG.random((2, 28, 28, 1))).astype(np.float32)
    (a,) = image_model.run({"image": x})
    (b,) = image_model.run(x)
    (c,) = image_model.run(x.astype(np.float64))  # safe cast
    ref = image_model.session.run(None, {"image": x})[0]
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_array_equal(b, ref)
    np.testing.assert_allclose(c, ref)
    (d,) = image_model.run({"image": x.tolist()})  # nested lists are accepted
    np.testing.assert_allclose(d, ref, rtol=1e-6)


def test_run_int64_to_int32_and_range_check(models: dict[str, Path]) -> None:
    m = EdgeModel(models["text"])
    ids = np.array([[2, 3, 4, 0, 0, 0, 0, 0]], dtype=np.int64)
    (out,) = m.run({"tokens": ids})
    np.testing.assert_array_equal(out, m.session.run(None, {"tokens": ids.astype(np.int32)})[0])
    with pytest.raises(InputError, match="outside the int32 range"):
        m.run({"tokens": ids * 2**40})


def test_run_integer_data_for_float_model_is_rejected(image_model: EdgeModel) -> None:
    with pytest.raises(InputError, match="needs float32 data, got uint8") as e:
        image_model.run(IMG_U8.reshape(1, 28, 28, 1))
    assert "predict()" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("feeds", "pattern"),
    [
        ({"img": np.zeros((1, 28, 28, 1), np.float32)}, r"unknown input name\(s\) 'img'"),
        ({}, r"missing input\(s\) 'image'"),
        ({"image": np.zeros((28, 28, 1), np.float32)}, "needs rank 4"),
        ({"image": np.zeros((1, 28, 27, 1), np.float32)}, "needs size 27|size 28 on axis 2"),
        ({"image": np.full((1, 28, 28, 1), "a")}, "must be numeric"),
        ({"image": [[1, 2], [3]]}, "not a rectangular array"),
    ],
)
def test_run_rejects_bad_inputs(image_model: EdgeModel, feeds: dict, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        image_model.run(feeds)


def test_nan_refused_by_predict_and_by_run_when_asked(
    image_model: EdgeModel, models: dict[str, Path]
) -> None:
    """Raw inputs (prepare/predict) are scanned by default; run, the hot path, scans only with
    check_nan=True; check_nan=False scans nowhere. A refused call leaves the model usable."""
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[1, 3, 4, 0] = np.nan
    with pytest.raises(InputError, match="contains NaN"):
        image_model.predict(x)
    with pytest.raises(InputError, match="contains NaN"):
        image_model.check_values({"image": x})
    y = image_model.run(x)[0]  # like a bare session: no scan, no exception
    assert y.shape == (2, 10) and np.isfinite(y[0]).all()
    strict = EdgeModel(models["image"], "cpu", check_nan=True)
    with pytest.raises(InputError, match="contains NaN"):
        strict.run(x)
    x[1, 3, 4, 0] = np.inf  # refused too since issue #14
    with pytest.raises(InputError, match="contains infinite values"):
        strict.run(x)
    with pytest.raises(InputError, match="contains NaN"):
        image_model.predict(np.full((28, 28), np.nan))
    lax = EdgeModel(models["image"], "cpu", check_nan=False)
    assert lax.predict(x).shape == (2, 10)
    lax.check_values({"image": x})  # nothing to refuse with check_nan=False
    np.testing.assert_allclose(image_model.run(np.zeros_like(x))[0][0], y[0], atol=1e-6)


def test_huge_finite_and_out_of_range_inputs_warn_nothing(
    image_model: EdgeModel, models: dict[str, Path]
) -> None:
    """x.x of huge finite float32 overflows: the full check runs and lets them through; a
    float64 too large for float32 becomes inf and is refused; neither prints a numpy warning."""
    strict = EdgeModel(models["image"], "cpu", check_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (y,) = strict.run(np.full((1, 28, 28, 1), 1e30, np.float32))
        assert y.shape == (1, 10)
        with pytest.raises(InputError, match="contains infinite values"):
            image_model.predict(np.full((28, 28), 1e300))


def test_multi_input_model(models: dict[str, Path]) -> None:
    m = EdgeModel(models["two"])
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    (s,) = m.run({"a": a, "b": b})
    np.testing.assert_array_equal(s, a + b)
    with pytest.raises(InputError, match="model has 2 inputs"):
        m.run(a)
    with pytest.raises(InputError, match=r"missing input\(s\) 'b'"):
        m.run({"a": a})
    with pytest.raises(InputError, match=r"unknown input name\(s\) 'c'.*missing input\(s\) 'b'"):
        m.run({"a": a, "c": b})
    np.testing.assert_array_equal(m.predict({"a": a[0], "b": b[0]}), (a + b)[:1])


# -- concurrency and lifecycle ---------------------------------------------------------------
def test_thread_safety_same_results(image_model: EdgeModel) -> None:
    batches = [RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8) for _ in range(16)]
    expected = [image_model.predict(b) for b in batches]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(40):
                j = (i + k) % len(batches)
                np.testing.assert_array_equal(image_model.predict(batches[j]), expected[j])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_context_manager_warmup_and_close(models: dict[str, Path]) -> None:
    with EdgeModel(models["image"]) as m:
        m.warmup()
        assert "CPUExecutionProvider" in repr(m)
    assert "closed" in repr(m)
    with pytest.raises(InputError, match="closed"):
        m.run(np.zeros((1, 28, 28, 1), np.float32))
    with pytest.raises(InputError, match="closed"):
        _ = m.providers


def test_describe(image_model: EdgeModel) -> None:
    d = cast(dict[str, Any], image_model.describe())
    assert d["inputs"] == [{"name": "image", "type": "tensor(float)", "shape": [None, 28, 28, 1]}]
    assert d["labels"] == FASHION_LABELS and d["preprocessing"]["raw_dtype"] == "uint8"
    json.dumps(d)


# -- file inputs -----------------------------------------------------------------------------
def test_load_image_greyscale_resize_and_layout(tmp_path: Path) -> None:
    from PIL import Image

    p = tmp_path / "photo.png"
    Image.fromarray(RNG.integers(0, 256, (50, 40, 3), dtype=np.uint8)).save(p)
    pre = Preprocessing(kind="image", image_size=[28, 28], color="grayscale", raw_dtype="uint8")
    a = load_image(p, pre)
    assert a.shape == (28, 28, 1) and a.dtype == np.uint8
    pre.layout, pre.color = "NCHW", "rgb"
    assert load_image(p, pre).shape == (3, 28, 28)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(bad, pre)
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png", pre)


def test_load_array_variants(tmp_path: Path) -> None:
    x = np.arange(6).reshape(2, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "one.npz", anything=x)
    np.savez(tmp_path / "named.npz", a=x, b=x + 1)
    np.savez(tmp_path / "many.npz", p=x, q=x)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), x)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz"), x)
    named = load_array(tmp_path / "named.npz", ["a", "b"])
    assert isinstance(named, dict) and set(named) == {"a", "b"}
    with pytest.raises(InputError, match="holds several arrays"):
        load_array(tmp_path / "many.npz", ["image"])
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read"):
        load_array(tmp_path / "bad.npy")


# -- the device install: no TensorFlow / tf2onnx / onnx --------------------------------------
def test_runtime_imports_only_numpy_and_onnxruntime(models: dict[str, Path]) -> None:
    code = f"""
import sys
import numpy as np
import edgekit.runtime.model
from edgekit.runtime.model import EdgeModel
m = EdgeModel({str(models["text"])!r})
m.predict_labels(["win a free prize"])
m2 = EdgeModel({str(models["image"])!r})
m2.predict(np.zeros((28, 28), np.uint8))
bad = [n for n in ("tensorflow", "tf2onnx", "onnx", "keras", "PIL") if n in sys.modules]
print("LOADED:" + ",".join(bad))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "LOADED:\n" in out.stdout, out.stdout + out.stderr
