"""Issue #23 (3b, 3d): dynamic sequence lengths survive export.

* Graph clean-ups never freeze a shape that depends on a dynamic dimension: attention between
  a query and a value of different lengths runs at any pair of lengths.
* Synthetic validation inputs give each dynamic dimension its own length (unless the model
  needs them equal), so a graph that confuses two lengths fails validation.
* The length probe picks a length both Keras and onnxruntime run; validation data shorter
  than the graph's convolution windows is reported as too short, with the minimum length.

Real Keras models built here, ONNX outputs compared to Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest

if TYPE_CHECKING:
    import keras
else:
    keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgekit.convert import ExportConfig, export_model, load_source, synthetic_inputs  # noqa: E402
from edgekit.convert.graph import simplify  # noqa: E402
from edgekit.errors import InputError  # noqa: E402
from edgekit.inputs.data import Dataset  # noqa: E402

#: every test converts with tf2onnx (2-4 s each): the quick loop skips them, CI runs them
pytestmark = [pytest.mark.slow, pytest.mark.file_seconds(10)]

CFG = ExportConfig(validation_samples=16)


def _attention(kind: str) -> keras.Model:
    """Dot-product attention of a query over a value of another (dynamic) length."""
    keras.utils.set_random_seed(0)
    q = keras.Input((None, 16), name="query")
    v = keras.Input((None, 16), name="value")
    if kind == "mha":
        x = keras.layers.MultiHeadAttention(2, 8)(q, v)
    else:
        x = keras.layers.Attention()([q, v])
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model([q, v], keras.layers.Dense(3)(x), name=f"attention_{kind}")


def _same_length_sum() -> keras.Model:
    """Two sequences added element-wise: their lengths must be equal."""
    keras.utils.set_random_seed(0)
    a = keras.Input((None, 4), name="a")
    b = keras.Input((None, 4), name="b")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Add()([a, b]))
    return keras.Model([a, b], keras.layers.Dense(2)(x), name="same_length")


def _conv1d_classifier() -> keras.Model:
    """Embedding -> Conv1D(5) -> MaxPooling1D(3) -> Conv1D(5) -> GlobalMaxPooling1D -> Dense:
    at 16 tokens the second convolution sees 4 steps; Keras runs it, onnxruntime refuses."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 8)(ids)
    x = keras.layers.Conv1D(8, 5, activation="relu")(x)
    x = keras.layers.MaxPooling1D(3)(x)
    x = keras.layers.Conv1D(8, 5, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    return keras.Model(ids, keras.layers.Dense(2, activation="softmax")(x), name="conv_text")


def _max_error(path: Path | bytes, model: keras.Model, feeds: dict[str, np.ndarray]) -> float:
    sess = ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    args = [feeds[i.name] for i in sess.get_inputs()]
    want = np.asarray(model(args if len(args) > 1 else args[0]))
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


def _attention_feeds(len_q: int, len_v: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(len_q * 100 + len_v)
    return {"query": rng.standard_normal((2, len_q, 16)).astype(np.float32),
            "value": rng.standard_normal((2, len_v, 16)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["mha", "attention"])
def test_attention_over_different_lengths_exports(tmp_path: Path, kind: str) -> None:
    model = _attention(kind)
    res = export_model(model, tmp_path, CFG)
    for len_q, len_v in [(5, 9), (7, 3)]:
        assert _max_error(res.onnx_path, model, _attention_feeds(len_q, len_v)) < 1e-4


def test_simplify_keeps_shapes_that_read_a_dynamic_length(tmp_path: Path) -> None:
    model = _attention("mha")
    res = export_model(model, tmp_path, ExportConfig(validation_samples=16, simplify=False))
    graph = onnx.load(str(res.onnx_path))
    notes = simplify(graph)
    # The shapes that only read the batch and static sizes are still made constant.
    assert any("made constant" in n for n in notes)
    blob = graph.SerializeToString()
    for len_q, len_v in [(5, 9), (7, 3), (1, 2)]:
        assert _max_error(blob, model, _attention_feeds(len_q, len_v)) < 1e-4


def test_synthetic_inputs_give_each_dynamic_dimension_its_own_length() -> None:
    feeds = synthetic_inputs(load_source(_attention("attention")), 4)
    assert (feeds["query"].shape[1], feeds["value"].shape[1]) == (8, 12)


def test_inputs_that_must_share_a_length_get_one(tmp_path: Path) -> None:
    model = _same_length_sum()
    feeds = synthetic_inputs(load_source(model), 4)
    assert feeds["a"].shape == feeds["b"].shape
    res = export_model(model, tmp_path, CFG)
    assert res.validation.max_abs_error < 1e-5


def test_length_probe_picks_a_length_onnxruntime_runs_too(tmp_path: Path) -> None:
    model = _conv1d_classifier()
    res = export_model(model, tmp_path, CFG)  # was "a converter bug" at 16 tokens
    assert res.validation.max_abs_error < 1e-5
    # Validated at 32 tokens, the first candidate both run (16 leaves a 4-step window).
    report = cast(dict[str, Any], res.report)
    assert report["validation"]["data"] == "synthetic (seed 0, dynamic lengths 32)"
    rng = np.random.default_rng(0)
    for length in (19, 40):  # 19: the shortest sequence both convolutions have a window in
        feeds = {"tokens": rng.integers(0, 100, (3, length)).astype(np.int32)}
        assert _max_error(res.onnx_path, model, feeds) < 1e-5


def test_too_short_validation_data_is_reported_with_the_minimum_length(tmp_path: Path) -> None:
    data = Dataset({"tokens": np.ones((4, 16), np.int32)}, None, "short")
    # Keras' oneDNN convolution may run a window longer than the sequence (garbage) or refuse
    # it: either way the message says the inputs are too short and what length runs.
    with pytest.raises(InputError, match="too short") as err:
        export_model(_conv1d_classifier(), tmp_path, CFG, validation_data=data)
    text = str(err.value)
    assert "length 16" in text and "19 or more" in text
    assert "converter bug" not in text
