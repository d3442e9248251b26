"""edgekit check: exit codes of the regression gate, and the pytest plugin helpers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _bench_models import BenchModels
from click.testing import CliRunner

from edgekit.check.pytest_plugin import assert_accuracy, assert_latency_ratio
from edgekit.check.regression import CHECK_RATIO, CheckConfig, check_model, reference_model
from edgekit.cli import cli
from edgekit.errors import InputError
from edgekit.speed.timing import SETTLE_ONE_THREAD_S, SETTLE_S

pytestmark = pytest.mark.file_seconds(15)

FAST = ["--max-time", "4"]


@pytest.fixture(scope="module")
def baseline(bench_models_dir: BenchModels, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("check") / "baseline.json"
    r = CliRunner().invoke(cli, ["check", str(bench_models_dir.onnx), "--baseline", str(path),
                                 "--eval-data", str(bench_models_dir.data), "--update-baseline",
                                 *FAST])
    assert r.exit_code == 0, r.output
    assert "written" in r.output
    return str(path)


@pytest.mark.slow
def test_baseline_contents(baseline: str, bench_models_dir: BenchModels) -> None:
    b = json.loads(Path(baseline).read_text())
    assert b["accuracy"] == pytest.approx(bench_models_dir.accuracy, abs=0.5)
    assert b["latency"]["ratio"] > 0 and b["latency"]["reference"]["kind"] == "matmul"
    assert b["latency"]["threads"] == 1 and b["machine"]["cpu"]
    assert b["latency"]["settle_s"] == SETTLE_ONE_THREAD_S  # one thread: warm caches


def test_a_check_times_as_its_baseline_did() -> None:
    """The baseline's threads and settle win over the check's options (0, one call per round,
    as 1-thread baselines recorded it before they settled, included); a baseline written
    before it recorded ``settle_s`` settles as its thread count does."""
    from edgekit.check.regression import _baseline_settings

    def settings(cfg: CheckConfig, **latency: Any) -> CheckConfig:
        notes: list[str] = []
        got = _baseline_settings(cfg, {"latency": {"ratio": 1.0, **latency}}, notes)
        assert bool(notes) == (got.threads != cfg.threads or got.batch != cfg.batch)
        return got

    two = settings(CheckConfig(), threads=2, batch=1, settle_s=SETTLE_S)
    assert (two.threads, two.ratio.settle) == (2, SETTLE_S)
    one = settings(CheckConfig(threads=2), threads=1, batch=1, settle_s=0.0)
    assert (one.threads, one.ratio.settle) == (1, 0.0)
    assert settings(CheckConfig(threads=2), threads=1, batch=1).ratio.settle == \
        SETTLE_ONE_THREAD_S
    assert settings(CheckConfig(), threads=1, settle_s=0.0).ratio.settle == 0.0
    assert settings(CheckConfig(), threads=4, batch=8).ratio.settle == SETTLE_S
    assert settings(CheckConfig(), threads=2, settle_s=0.2).ratio.settle == 0.2


def test_a_check_times_the_model_before_it_evaluates_it(
        bench_models_dir: BenchModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timed session has run nothing at other batch sizes (an onnxruntime session that ran
    the evaluation's batches first times batch 1 slower afterwards), so a baseline made with
    --eval-data and a check without it time the same thing."""
    import edgekit.check.regression as regression

    order: list[str] = []

    def recorded(name: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            order.append(name)
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(regression, "latency_ratio",
                        recorded("latency", regression.latency_ratio))
    monkeypatch.setattr(regression, "model_accuracy",
                        recorded("accuracy", regression.model_accuracy))
    cfg = CheckConfig(ratio=dataclasses.replace(CHECK_RATIO, min_seconds=0.1, max_seconds=1.0))
    result = check_model(bench_models_dir.onnx, tmp_path / "b.json", bench_models_dir.data,
                         cfg, update_baseline=True)
    assert order == ["latency", "accuracy"]
    assert result.current["accuracy"] == pytest.approx(bench_models_dir.accuracy, abs=0.5)


def test_unchanged_model_passes(baseline: str, bench_models_dir: BenchModels) -> None:
    r = CliRunner().invoke(cli, ["check", str(bench_models_dir.onnx), "--baseline", baseline,
                                 "--eval-data", str(bench_models_dir.data), *FAST])
    assert r.exit_code == 0, r.output
    assert "passed" in r.output and "accuracy" in r.output and "latency" in r.output


def test_accuracy_drop_fails(baseline: str, bench_models_dir: BenchModels, tmp_path) -> None:
    """The same model on data where a third of the labels were moved to another class: its
    accuracy falls by ~33 points below the baseline's (whatever the toy model scores)."""
    with np.load(bench_models_dir.data) as d:
        x, y = d["x"], d["y"].copy()
    y[::3] = (y[::3] + 1) % 10
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, x=x, y=y)
    r = CliRunner().invoke(cli, ["check", str(bench_models_dir.onnx), "--baseline", baseline,
                                 "--eval-data", str(shifted), *FAST])
    assert r.exit_code == 1, r.output
    assert "FAIL  accuracy" in r.output and "FAILED" in r.output


@pytest.mark.slow
def test_slower_model_fails(baseline: str, bench_models_dir: BenchModels) -> None:
    # a much bigger model checked against the small model's baseline: a latency regression
    timing = dataclasses.replace(CHECK_RATIO, max_seconds=4)
    res = check_model(bench_models_dir.big_onnx, baseline, config=CheckConfig(ratio=timing))
    assert res.exit_code == 1
    lat = next(f for f in res.findings if f.metric == "latency")
    assert not lat.passed and lat.change is not None and lat.change > 25
    assert "FAIL  latency" in res.report()


def test_missing_baseline_is_a_user_error(bench_models_dir: BenchModels, tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_model(bench_models_dir.onnx, tmp_path / "none.json")
    r = CliRunner().invoke(cli, ["check", str(bench_models_dir.onnx), "--baseline",
                                 str(tmp_path / "none.json")])
    assert r.exit_code == 2, r.output  # a missing input, not a regression
    assert r.stderr.startswith("error: ") and "--update-baseline" in r.stderr


@pytest.mark.slow
def test_check_json_on_stdout(baseline: str, bench_models_dir: BenchModels) -> None:
    r = CliRunner().invoke(cli, ["check", str(bench_models_dir.onnx), "--baseline", baseline,
                                 "--json", "-q", *FAST])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["passed"] is True and data["updated"] is False
    assert [f["metric"] for f in data["findings"]] == ["latency"]
    assert data["current"]["latency"]["ratio"] > 0


def test_update_baseline_needs_force_to_overwrite(baseline: str,
                                                  bench_models_dir: BenchModels) -> None:
    before = Path(baseline).read_text()
    r = CliRunner().invoke(cli, ["check", str(bench_models_dir.onnx), "--baseline", baseline,
                                 "--update-baseline", *FAST])
    assert r.exit_code == 1 and "error: " in r.stderr and "--force" in r.stderr
    assert Path(baseline).read_text() == before


def test_reference_model_is_deterministic(tmp_path) -> None:
    a = reference_model(3, tmp_path / "a.onnx").read_bytes()
    b = reference_model(3, tmp_path / "b.onnx").read_bytes()
    assert a == b


# -- the pytest plugin (the project's own tests use it) ----------------------------------------
def test_plugin_assert_accuracy(bench_models_dir: BenchModels, edge_model_factory) -> None:
    model = edge_model_factory(bench_models_dir.onnx)
    acc = assert_accuracy(model, bench_models_dir.data, min_accuracy=bench_models_dir.accuracy - 1)
    with pytest.raises(AssertionError, match="below the baseline"):
        assert_accuracy(model, bench_models_dir.data, baseline=acc + 5, max_drop=1)


@pytest.mark.slow
def test_plugin_assert_latency_ratio(bench_models_dir: BenchModels, edge_model_factory) -> None:
    small = edge_model_factory(bench_models_dir.onnx, threads=1)
    ratio = assert_latency_ratio(small, bench_models_dir.big_onnx, max_ratio=1.0, max_time=3)
    assert 0 < ratio < 1.0
    with pytest.raises(AssertionError, match="as long as"):
        assert_latency_ratio(bench_models_dir.big_onnx, small, max_ratio=1.0, max_time=3)


@pytest.mark.slow
def test_plugin_edge_model_marker(bench_models_dir: BenchModels, tmp_path) -> None:
    """The entry-point plugin in a fresh pytest run: marker, option and skip without a model."""
    import subprocess
    import sys

    test = tmp_path / "test_user.py"
    test.write_text(f"""
import numpy as np
import pytest

@pytest.mark.edge_model({str(bench_models_dir.onnx)!r}, threads=1)
def test_marker(edge_model):
    assert edge_model.predict(np.zeros((1, 28, 28, 1), "uint8")).shape == (1, 10)

def test_option(edge_model):
    assert edge_model.path.name == "big.onnx"
""")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
           "--rootdir", str(tmp_path)]
    r = subprocess.run([*cmd, "--edge-model", str(bench_models_dir.big_onnx)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "1 passed, 1 skipped" in r.stdout, r.stdout + r.stderr


def _idx_linear_model(path, fashion_dir) -> tuple[str, Any]:  # noqa: ANN001
    """A Flatten -> MatMul -> Softmax classifier of 28x28x1 images, fitted by least squares on
    2,000 Fashion-MNIST training images, with uint8 preprocessing metadata (scale 1/255)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.inputs.datasets import load_image_data
    from edgekit.metadata import ModelMetadata, Preprocessing

    d = load_image_data(fashion_dir)
    x = d.x_train[:2000].reshape(2000, -1).astype(np.float32) / 255.0
    w = np.linalg.lstsq(x, np.eye(10, dtype=np.float32)[d.y_train[:2000]], rcond=None)[0]
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        "linear", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = ModelMetadata(task="classification", labels=d.labels,
                         preprocessing=Preprocessing(kind="image", scale=1 / 255,
                                                     raw_dtype="uint8"))
    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return str(path), d


@pytest.mark.slow
def test_check_and_plugin_read_an_idx_folder(fashion_dir, tmp_path) -> None:  # noqa: ANN001
    """check and the pytest plugin take the IDX folder export/quantize/tune take (its test
    split), preprocess it like every other stage, and give the same accuracy as predict."""
    import numpy as np

    from edgekit.check.regression import model_accuracy
    from edgekit.measure.backends import load_backend
    from edgekit.runtime import EdgeModel

    path, d = _idx_linear_model(tmp_path / "linear.onnx", fashion_dir)
    expected = 100.0 * float(np.mean(EdgeModel(path).predict(d.x_test).argmax(1) == d.y_test))
    assert 60.0 < expected < 95.0  # a real classifier, not chance
    assert model_accuracy(load_backend(path), fashion_dir) == pytest.approx(expected, abs=1e-9)
    assert assert_accuracy(path, fashion_dir, min_accuracy=50.0) == pytest.approx(expected)
    r = CliRunner().invoke(cli, ["check", path, "--baseline", str(tmp_path / "b.json"),
                                 "--eval-data", str(fashion_dir), "--update-baseline", *FAST])
    assert r.exit_code == 0, r.output
    stored = json.loads((tmp_path / "b.json").read_text())
    assert stored["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_a_regression_model_is_checked_on_latency_only(tmp_path: Path) -> None:
    """A first output declared regression has no top-1 accuracy: --eval-data is refused by
    name before anything is timed or written (its 'y' holds targets, not labels); without it
    the baseline is written."""
    from _runtime_models import make_regression_model

    model, data = make_regression_model(tmp_path)
    baseline = tmp_path / "baseline.json"
    r = CliRunner().invoke(cli, ["check", str(model), "--baseline", str(baseline),
                                 "--eval-data", str(data), "--update-baseline", *FAST])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert ("error: reg.onnx's first output is a regression output: it has no top-1 accuracy "
            "to check\nhint: check its latency without --eval-data") in r.output
    assert not baseline.exists()
    r = CliRunner().invoke(cli, ["check", str(model), "--baseline", str(baseline),
                                 "--update-baseline", *FAST])
    assert r.exit_code == 0, r.output
    assert json.loads(baseline.read_text())["accuracy"] is None
