"""The output contract for every activation (issue 23): softmax over the class axis is a
distribution, sigmoid outputs are independent probabilities (never renormalised; multi-label
labels and top-k by threshold), per-pixel / per-step outputs are not classification rows.

Real Keras models exported with edgekit (module fixtures), run with onnxruntime.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.contract import OutputKind, predicted_classes
from edgekit.errors import InputError
from edgekit.runtime.model import EdgeModel
from edgekit.serve import create_app

pytestmark = [pytest.mark.file_seconds(5), pytest.mark.slow]

keras = pytest.importorskip("keras")
with warnings.catch_warnings():  # starlette 1.x: "use httpx2 with the TestClient"
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

LABELS = [f"tag{i}" for i in range(8)]
RNG = np.random.default_rng(0)
X_ML = RNG.normal(size=(16, 6)).astype(np.float32)
X_AE = RNG.uniform(size=(4, 8, 8, 3)).astype(np.float32)
X_SM = RNG.normal(size=(5, 4, 5)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three exported models: ``ml`` (Dense(8, sigmoid), labels), ``ae`` (conv autoencoder,
    sigmoid Conv2D), ``sm`` (Softmax(axis=1) on [N, 4, 5]); their Keras models under
    ``keras_*``."""
    from edgekit.convert import ExportConfig, export_model

    keras.utils.set_random_seed(0)
    ml = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="sigmoid")],
                          name="multilabel")
    ae = keras.Sequential([keras.Input((8, 8, 3)),
                           keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                           keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")],
                          name="autoencoder")
    sm = keras.Sequential([keras.Input((4, 5)), keras.layers.Dense(5),
                           keras.layers.Softmax(axis=1)], name="stepsoftmax")
    out: dict[str, Any] = {}
    for key, model, labels in (("ml", ml, LABELS), ("ae", ae, None), ("sm", sm, None)):
        d = tmp_path_factory.mktemp(key)
        out[key] = export_model(model, d, ExportConfig(labels=labels)).onnx_path
        out["keras_" + key] = model
    return out


def _old_style(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose contract says ``probabilities``, as before ``independent``."""
    proto = onnx.load(str(src))
    for p in proto.metadata_props:
        if p.key == "edgekit.output_kinds":
            p.value = json.dumps(["probabilities"])
    onnx.save(proto, str(dst))
    return dst


def _expected_rows(p: np.ndarray, threshold: float) -> list[list[tuple[str, float]]]:
    return [[(LABELS[j], float(row[j])) for j in np.argsort(-row, kind="stable")
             if row[j] >= threshold] for row in p.astype(np.float64)]


def test_multi_label_predict_returns_the_sigmoid_outputs(models: dict[str, Any]) -> None:
    em = EdgeModel(models["ml"], "cpu")
    p = em.predict(X_ML)
    np.testing.assert_array_equal(p, em.run(X_ML)[0])  # not renormalised
    assert em.output_kind is OutputKind.INDEPENDENT
    np.testing.assert_allclose(p, models["keras_ml"](X_ML).numpy(), atol=1e-5)
    assert np.abs(p.sum(axis=1) - 1.0).min() > 0.1  # independent: rows do not sum to 1


def test_multi_label_top_k_and_labels_by_threshold(models: dict[str, Any]) -> None:
    em = EdgeModel(models["ml"], "cpu")
    p = em.run(X_ML)[0]
    over = (p >= 0.5).sum(axis=1)
    assert over.min() < over.max() and over.max() > 1  # some rows with several labels
    assert em.multi_label(p)
    assert em.top_k(p) == _expected_rows(p, 0.5)
    assert em.predict_top_k(X_ML) == _expected_rows(p, 0.5)
    assert em.predict_top_k(X_ML, threshold=0.3) == _expected_rows(p, 0.3)
    assert em.predict_top_k(X_ML, 1) == [row[:1] for row in _expected_rows(p, 0.5)]
    assert em.predict_labels(X_ML) == [[lab for lab, _ in row] for row in _expected_rows(p, 0.5)]
    np.testing.assert_array_equal(predicted_classes(p, multi_label=True), p >= 0.5)


def test_per_pixel_sigmoid_is_unchanged_and_has_no_rows(models: dict[str, Any]) -> None:
    em = EdgeModel(models["ae"], "cpu")
    p = em.predict(X_AE)
    assert p.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(p, em.run(X_AE)[0])  # each pixel as the sigmoid gave it
    assert em.output_kind is OutputKind.INDEPENDENT
    np.testing.assert_allclose(p, models["keras_ae"](X_AE).numpy(), atol=1e-5)
    with pytest.raises(InputError, match="one value per pixel or step"):
        em.top_k(p)
    with pytest.raises(InputError, match="one value per pixel or step"):
        em.predict_labels(X_AE)


def test_softmax_over_a_non_last_axis_is_not_renormalised_over_the_last(
        models: dict[str, Any]) -> None:
    em = EdgeModel(models["sm"], "cpu")
    p = em.predict(X_SM)
    np.testing.assert_array_equal(p, em.run(X_SM)[0])
    assert em.output_kind is OutputKind.OTHER
    np.testing.assert_allclose(p, models["keras_sm"](X_SM).numpy(), atol=1e-5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)  # its own axis
    assert np.abs(p.sum(axis=-1) - 1.0).max() > 0.1
    with pytest.raises(InputError):
        em.top_k(p)


@pytest.mark.parametrize(("key", "kind", "x"), [
    ("ml", OutputKind.INDEPENDENT, X_ML),
    ("ae", OutputKind.INDEPENDENT, X_AE),
    ("sm", OutputKind.OTHER, X_SM),
])
def test_old_probabilities_contract_is_read_from_the_graph(
        models: dict[str, Any], tmp_path: Path, key: str, kind: OutputKind, x: np.ndarray) -> None:
    em = EdgeModel(_old_style(models[key], tmp_path / f"{key}.onnx"), "cpu")
    assert em.metadata.output_kinds == ["probabilities"]
    np.testing.assert_array_equal(em.predict(x), em.run(x)[0])
    assert em.output_kind is kind


def test_edgekit_run_on_the_multi_label_model(models: dict[str, Any], tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X_ML[:3])
    p = EdgeModel(models["ml"], "cpu").run(X_ML[:3])[0]
    r = CliRunner().invoke(cli, ["run", str(models["ml"]), str(tmp_path / "x.npy"), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["multi_label"] is True and report["threshold"] == 0.5
    got = [[(e["label"], e["probability"]) for e in row] for row in report["predictions"]]
    assert got == _expected_rows(p, 0.5)
    r = CliRunner().invoke(cli, ["run", str(models["ml"]), str(tmp_path / "x.npy"),
                                 "--threshold", "0.3"])
    assert r.exit_code == 0, r.output
    assert all(lab in r.output for row in _expected_rows(p, 0.3) for lab, _ in row)
    np.save(tmp_path / "img.npy", X_AE[:1])
    r = CliRunner().invoke(cli, ["run", str(models["ae"]), str(tmp_path / "img.npy"), "--json"])
    assert r.exit_code == 0, r.output
    assert np.asarray(json.loads(r.output)["outputs"]).shape == (1, 8, 8, 3)


def test_serve_predict_on_the_multi_label_model(models: dict[str, Any]) -> None:
    p = EdgeModel(models["ml"], "cpu").run(X_ML[:4])[0]
    rows = _expected_rows(p, 0.5)
    with TestClient(create_app(models["ml"])) as c:
        body = c.post("/predict", json={"inputs": X_ML[:4].tolist()}).json()
        np.testing.assert_allclose(body["predictions"], p, rtol=1e-6)
        assert body["labels"] == [[lab for lab, _ in row] for row in rows]
        body = c.post("/predict", json={"inputs": X_ML[:4].tolist(), "top_k": 1}).json()
        assert body["labels"] == [[lab for lab, _ in row] for row in rows]
        assert [[(e["label"], e["probability"]) for e in row] for row in body["top_k"]] == [
            [(lab, pytest.approx(v, rel=1e-6)) for lab, v in row[:1]] for row in rows]
    with TestClient(create_app(models["ae"])) as c:
        body = c.post("/predict", json={"inputs": X_AE[:1].tolist()}).json()
        assert "labels" not in body and np.asarray(body["predictions"]).shape == (1, 8, 8, 3)
        r = c.post("/predict", json={"inputs": X_AE[:1].tolist(), "top_k": 2})
        assert r.status_code == 422 and "pixel" in r.json()["error"]


