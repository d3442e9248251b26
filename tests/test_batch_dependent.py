"""Models whose outputs are not per-sample (issue #23): a softmax over the batch axis, a
reduction over all axes, ``expand_dims(x, 0)``, an einsum between samples, an output without a
batch axis. Their files must compute what Keras computes on any batch, be validated on the
same whole batches as Keras, say so in the report and the file, and be proven on every engine
and quantized without comparing different batches. Real TensorFlow, tf2onnx, onnxruntime and
OpenVINO on small models built here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    import keras
else:
    keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgekit.convert import export_model, load_source, validate_source  # noqa: E402
from edgekit.errors import InputError  # noqa: E402
from edgekit.inputs.data import Dataset, run_whole_batches, whole_batches  # noqa: E402
from edgekit.runtime.proof import BATCH_KEY, check_engines, installed_engines  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.file_seconds(20),
              # Keras warns about a softmax over an axis of size 1 (the batch-1 check)
              pytest.mark.filterwarnings("ignore:You are using a softmax over axis 0")]

L = keras.layers


def _dense(x: Any, units: int, seed: int = 0) -> Any:
    """A Dense layer with non-zero weights (so the graph computes something)."""
    layer = L.Dense(units)
    y = layer(x)
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype("float32"))
    return y


def _softmax_over_batch() -> keras.Model:
    x = keras.Input((3, 4), name="x")
    return keras.Model(x, L.Softmax(axis=0, name="probs")(_dense(x, 5)), name="softmax_batch")


def _max_over_all() -> keras.Model:
    x = keras.Input((2, 3), name="x")
    y = L.Lambda(lambda t: keras.ops.max(t, axis=None, keepdims=True), name="peak")(_dense(x, 3))
    return keras.Model(x, y, name="max_all")


def _expand_dims_0() -> keras.Model:
    x = keras.Input((2, 3), name="x")
    y = L.Lambda(lambda t: keras.ops.expand_dims(t, 0), name="lifted")(_dense(x, 3))
    return keras.Model(x, y, name="expand0")


def _einsum_between_samples() -> keras.Model:
    a, b = keras.Input((3, 4), name="a"), keras.Input((3, 4), name="b")
    y = L.Lambda(lambda t: keras.ops.einsum("ibn,jbn->ijb", t[0], t[1]), name="pairs")(
        [_dense(a, 4, 1), _dense(b, 4, 2)])
    return keras.Model([a, b], y, name="einsum_pairs")


def _sum_over_all() -> keras.Model:
    x = keras.Input((2, 3), name="x")
    return keras.Model(x, L.Lambda(lambda t: keras.ops.sum(t), name="total")(_dense(x, 3)),
                       name="sum_all")


MODELS: dict[str, Callable[[], keras.Model]] = {
    "softmax_axis0": _softmax_over_batch, "max_all_keepdims": _max_over_all,
    "expand_dims_0": _expand_dims_0, "einsum_mixing": _einsum_between_samples,
    "sum_no_batch_axis": _sum_over_all}


def _inputs(model: keras.Model, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, *t.shape[1:])).astype("float32") for t in model.inputs]


def _keras(model: keras.Model, xs: list[np.ndarray]) -> np.ndarray:
    return np.asarray(model(xs if len(xs) > 1 else xs[0], training=False))


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_keras_at_other_batches_and_records_it(tmp_path: Path, name: str) -> None:
    model = MODELS[name]()
    res = export_model(model, tmp_path / "out")  # validation: 256 synthetic samples, batch 8
    report: dict[str, Any] = res.report
    v = report["validation"]
    assert v["passed"] and v["batch_dependent"] is True and v["n_samples"] == 256
    assert report["graph"]["batch_dependent"] is True
    assert "batch" in v["batch_evidence"]
    assert _props(res.onnx_path)[BATCH_KEY] == "true"
    assert report["engines"] and all(e["passed"] for e in report["engines"].values())

    sess = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for batch in (3, 5):  # neither the validation batch (8) nor batch 1
        xs = _inputs(model, batch, seed=batch)
        want = _keras(model, xs)
        (got,) = sess.run(None, dict(zip(names, xs, strict=True)))
        assert got.shape == want.shape, (batch, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_model_that_runs_at_one_batch_size_only(tmp_path: Path) -> None:
    """The batch is the contracted axis of an einsum: Keras runs batch 2 only. Validated on
    2 samples in one batch (no batch-1 check: Keras refuses it), and OpenVINO, which cannot
    compile it for batch 1, compiles it dynamically and passes."""
    a, b = keras.Input((3, 2), name="a"), keras.Input((4, 5), name="b")
    y = L.Lambda(lambda t: keras.ops.einsum("ibh,hnd->ibnd", t[0], t[1]), name="mix")([a, b])
    model = keras.Model([a, b], y, name="batch_two")
    xs = _inputs(model, 2, seed=0)
    res = export_model(model, tmp_path / "out",
                       validation_data=Dataset(dict(zip(["a", "b"], xs, strict=True))))
    report: dict[str, Any] = res.report
    assert report["validation"]["batch_dependent"] is True
    assert "not 1 of them" in report["validation"]["batch_evidence"]
    assert all(e["passed"] for e in report["engines"].values()), report["engines"]
    sess = ort.InferenceSession(str(res.onnx_path), providers=["CPUExecutionProvider"])
    xs = _inputs(model, 2, seed=7)
    (got,) = sess.run(None, {"a": xs[0], "b": xs[1]})
    np.testing.assert_allclose(got, _keras(model, xs), rtol=1e-5, atol=1e-5)


def test_per_sample_model_is_not_marked(tmp_path: Path) -> None:
    x = keras.Input((3, 4), name="x")
    model = keras.Model(x, L.Softmax(axis=-1)(_dense(x, 5)), name="per_sample")
    res = export_model(model, tmp_path / "out")
    report: dict[str, Any] = res.report
    assert report["validation"]["batch_dependent"] is False
    assert report["validation"]["batch_evidence"] == ""
    assert report["graph"]["batch_dependent"] is False
    assert BATCH_KEY not in _props(res.onnx_path)


def test_a_real_mismatch_still_fails_on_whole_batches(tmp_path: Path) -> None:
    """The file of one softmax-over-the-batch model validated against another (one weight
    changed): compared on the same whole batches, the difference is found."""
    model = _softmax_over_batch()
    res = export_model(model, tmp_path / "out")
    other = _softmax_over_batch()
    dense = next(layer for layer in other.layers if isinstance(layer, L.Dense))
    kernel, bias = dense.get_weights()
    kernel[0, 0] += 1.0
    dense.set_weights([kernel, bias])
    source = load_source(other)
    feeds = {"x": np.random.default_rng(0).normal(size=(20, 3, 4)).astype("float32")}
    result = validate_source(source, res.onnx_path, feeds, atol=1e-4)
    assert result.batch_dependent and not result.passed
    worst = result.per_output["probs"]["worst"]
    assert worst["abs_error"] > 1e-3
    same = validate_source(load_source(model), res.onnx_path, feeds, atol=1e-4)
    assert same.batch_dependent and same.passed and same.n_samples == 20


def test_engine_proof_compares_identical_batches_only(tmp_path: Path) -> None:
    if "openvino" not in installed_engines():
        pytest.skip("OpenVINO is not installed")
    res = export_model(_softmax_over_batch(), tmp_path / "out")
    feeds = {"x": np.random.default_rng(1).normal(size=(100, 3, 4)).astype("float32")}
    checks = check_engines(res.onnx_path, feeds, engines=["openvino"])  # the file says it
    ov = checks["openvino"]
    assert ov.passed and ov.samples == 100 and ov.batches == [1, 8, 64], ov.reason
    assert ov.max_abs_diff is not None and ov.max_abs_diff < 1e-4
    # the per-sample rule (small batches against the engine's own batch 64) fails it falsely
    wrong = check_engines(res.onnx_path, feeds, engines=["openvino"], batch_dependent=False)
    assert not wrong["openvino"].passed
    assert "at batch 1, its answers differ from its own at batch 64" in wrong["openvino"].reason


def test_quantized_variant_is_compared_on_whole_batches(tmp_path: Path) -> None:
    from edgekit.quantize import GateConfig, QuantizationConfig, QuantMode, quantize_model

    res = export_model(_sum_over_all(), tmp_path / "out")  # its output has no batch axis
    data = Dataset({"x": np.random.default_rng(2).normal(size=(40, 2, 3)).astype("float32")},
                   labels=np.zeros(40, np.int64))
    variant = quantize_model(res.onnx_path, tmp_path / "q", "sum_all",
                             QuantizationConfig(mode=QuantMode.DYNAMIC), eval_data=data)
    assert variant.written
    ev: dict[str, Any] = variant.evaluation or {}
    assert ev["accuracy"] is None and 0 < ev["max_abs_error"] < 0.5
    assert any("labels not used" in n for n in variant.notes)
    assert _props(variant.path)[BATCH_KEY] == "true"
    assert variant.engines and all(e["passed"] for e in variant.engines.values())
    gated = QuantizationConfig(mode=QuantMode.DYNAMIC, gate=GateConfig(max_accuracy_drop=1.0))
    with pytest.raises(InputError, match="mix the batch"):
        quantize_model(res.onnx_path, tmp_path / "g", "sum_all", gated, eval_data=data)


def test_serving_never_merges_requests_of_a_batch_dependent_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("starlette")
    from edgekit.runtime.model import EdgeModel
    from edgekit.serve import ServeConfig
    from edgekit.serve.service import Service

    mixed = export_model(_softmax_over_batch(), tmp_path / "mixed").onnx_path
    x = keras.Input((3, 4), name="x")
    plain = export_model(keras.Model(x, L.Softmax()(_dense(x, 5)), name="plain"),
                         tmp_path / "plain").onnx_path
    cfg = ServeConfig(batching=True)
    with EdgeModel(plain) as em:
        batcher = Service(em, cfg).batcher(em.run)
        assert batcher is not None
        batcher.close()
    with EdgeModel(mixed) as em, caplog.at_level("WARNING", logger="edgekit.serve"):
        service = Service(em, cfg)
        assert service.batcher(em.run) is None and service.batcher(em.run) is None
        assert service.unbatched and not service.batchers
    said = [r.getMessage() for r in caplog.records if "not merged" in r.getMessage()]
    assert len(said) == 1 and "mix the batch" in said[0]


def test_whole_batches_cover_every_sample_in_equal_batches() -> None:
    assert [(s.start, s.stop) for s in whole_batches(10, 4)] == [(0, 4), (4, 8), (6, 10)]
    assert [(s.start, s.stop) for s in whole_batches(3, 8)] == [(0, 3)]
    x = np.arange(10, dtype=np.float32)
    (sums,) = run_whole_batches(lambda f: [f["x"].sum()], {"x": x}, 4)
    np.testing.assert_array_equal(sums, [6.0, 22.0, 30.0])


def test_the_keras_reference_traces_once_for_every_batch_size() -> None:
    """The Keras reference (``load_source(model).call``) is traced once with any batch size,
    as ``model.predict`` traces: validation's batches, one sample shorter, and its batch-1 run
    reuse that trace (a trace of NASNetMobile takes 2.4 s) and give predict's values."""
    traced: list[int | None] = []

    def doubled(t: Any) -> Any:
        traced.append(t.shape[0])  # Python runs only while Keras builds or TensorFlow traces
        return t * 2.0

    x = keras.Input((3,), name="x")
    model = keras.Model(x, _dense(L.Lambda(doubled)(x), 2), name="doubled")
    source = load_source(model)
    before = len(traced)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 3)).astype("float32") for n in (8, 7, 7, 1, 5)]
    outs = [source.call({"x": xs})[0] for xs in batches]
    assert traced[before:] == [None]
    for xs, got in zip(batches, outs, strict=True):
        np.testing.assert_allclose(got, model.predict(xs, verbose=0), rtol=1e-6, atol=1e-6)


def test_a_batch_difference_within_float_noise_is_not_mixing() -> None:
    """batch_mixing on given functions: a change with the batch size that Keras' own float
    noise covers (a function that amplifies a rounding of its inputs 1e5-fold, as a deep
    network can) is not mixing with ``noise``; a softmax over the batch is, with or without."""
    from edgekit.convert.batching import batch_mixing

    x = {"x": np.random.default_rng(0).uniform(0.5, 1.5, (8, 4)).astype(np.float32)}

    def amplifying(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        v = feeds["x"].astype(np.float64)
        return [np.sin(1e5 * v) + 1e-3 * (len(v) % 2)]  # the batch size moves it by 1e-3

    def over_batch(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        e = np.exp(feeds["x"].astype(np.float64))
        return [e / e.sum(axis=0, keepdims=True)]

    assert batch_mixing(amplifying, x, 8, ["y"], 1e-4, 1e-3) is not None  # strict: it differs
    assert batch_mixing(amplifying, x, 8, ["y"], 1e-4, 1e-3, noise=True) is None
    for noise in (False, True):
        why = batch_mixing(over_batch, x, 8, ["y"], 1e-4, 1e-3, noise=noise)
        assert why is not None and "depend on the other samples" in why
