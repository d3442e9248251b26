"""The conversion matrix harness (benchmarks/conversion_matrix.py, issue #23) on tiny cases.

Two cases run in this process through every stage (edgekit export, Keras' own export, LiteRT,
int8); one more in a child process with a timeout it cannot meet, so the subprocess path and
the timeout record are covered too. The LiteRT column alone on a model whose inputs LiteRT's
file reorders and on an LSTM that only TensorFlow's ops convert. The case list itself is
checked against its sources.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("keras")
pytest.importorskip("tf2onnx")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import conversion_matrix as cm  # noqa: E402
import matrix_litert  # noqa: E402
import matrix_report  # noqa: E402
from matrix_cases import CASES, NOT_PORTED, TF2ONNX_TESTS, build, samples  # noqa: E402

#: every test converts with tf2onnx or LiteRT's converter (2-4 s each): the quick loop skips
#: them, CI runs them
pytestmark = [pytest.mark.slow, pytest.mark.file_seconds(25)]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    work = tmp_path_factory.mktemp("matrix")
    names = ["test_flatten", "standard_model_export[subclass]", "model_with_multiple_inputs",
             "test_tf_expand_dims[dim=0]"]
    return {n: cm.run_case(CASES[n], work / cm._slug(n), timeout=120) for n in names}


@pytest.mark.parametrize("name", ["test_flatten", "standard_model_export[subclass]",
                                  "model_with_multiple_inputs"])
def test_a_case_runs_every_stage(records: dict[str, dict[str, Any]], name: str) -> None:
    r = records[name]
    assert r["status"] == "done" and r["edgekit_ok"], r
    assert r["max_abs_error"] <= 1e-4
    assert r["edgekit_recheck_runs"] and r["edgekit_recheck_matches"]
    assert r["engines"]["onnxruntime"] == {"loads": True, "passed": True}
    assert "openvino" in r["engines"]  # installed here: edgekit proves the file on it too
    assert r["int8_mode"] == "int8" and r["int8_written"]
    assert 0.5 <= r["int8_top1_agreement"] <= 1.0
    assert set(r["int8_engines"]) == set(r["engines"])
    assert matrix_report.keras_handles(r) and r["keras_max_abs_error"] <= 1e-4
    assert r["litert_ok"] and r["litert_converted"] and r["litert_runs"]
    assert r["litert_max_abs_error"] <= 1e-4 and "litert_error" not in r
    row = matrix_report.row(r)
    assert row[1] == "ok" and row[matrix_report.HEADER.index("LiteRT")] == "ok"


def test_a_batch_mixing_lambda_exports(records: dict[str, dict[str, Any]]) -> None:
    """A Lambda whose output depends on the batch (expand_dims at axis 0): Keras' export took
    it and edgekit refused it until it validated such models on identical whole batches."""
    r = records["test_tf_expand_dims[dim=0]"]
    assert r["status"] == "done" and r["edgekit_ok"], r
    assert r["max_abs_error"] <= 1e-4 and r["edgekit_recheck_matches"]
    assert matrix_report.keras_handles(r)
    c = matrix_report.counts(list(records.values()))
    assert (c["cases"], c["edgekit_ok"], c["keras_export_ok"], c["keras_only"]) == (4, 4, 4, 0)
    assert c["litert_or_keras_only"] == 0


def test_a_refused_case_is_a_listed_gap(records: dict[str, dict[str, Any]]) -> None:
    """The report lists a case that Keras' export takes and edgekit does not, with the error's
    class and first line (the record of a passing case with edgekit's result turned into the
    refusal it gave before batch-mixing models were validated on whole batches)."""
    refused = dict(records["test_tf_expand_dims[dim=0]"], edgekit_ok=False, edgekit_error={
        "class": "ConversionError", "message": "the converted graph's outputs differ in shape"})
    rows = [*(r for n, r in records.items() if n != "test_tf_expand_dims[dim=0]"), refused]
    c = matrix_report.counts(rows)
    assert (c["edgekit_ok"], c["keras_only"], c["litert_or_keras_only"]) == (3, 1, 1)
    result = {"machine": {"cpu": "cpu", "instruction_set": "isa", "logical_cores": 2,
                          "versions": {"keras": "3"}}, "wall_s": 6.0, "options": "test",
              "counts": {"all": c}, "records": rows}
    md = matrix_report.markdown(result)
    table = [ln.strip("| ").split(" | ") for ln in md.split("## Counts")[1].split("##")[0]
             .splitlines() if ln.startswith("| ")]
    counted = dict(zip(table[0], table[1], strict=True))
    assert (counted["suite"], counted["litert_or_keras_only"]) == ("all", "1")
    gaps = md.split("## edgekit fails, Keras' export or LiteRT works")[1].split("##")[0]
    assert "`test_tf_expand_dims[dim=0]` (Keras' export" in gaps
    assert "ConversionError: the converted graph's outputs differ in shape" in gaps
    assert "test_flatten" not in gaps and "model_with_multiple_inputs" not in gaps


def _litert(name: str, tmp_path: Path) -> dict[str, Any]:
    case = CASES[name]
    model = build(case)
    inputs = samples(case, model)
    refs = [cm._reference(model, case, s) for s in inputs]
    return matrix_litert.stage(case, model, inputs, refs, tmp_path, atol=cm.ATOL, rtol=cm.RTOL,
                               error=cm._error)


def test_litert_feeds_the_inputs_in_the_models_order(tmp_path: Path) -> None:
    """Three inputs of widths 4, 5, 3: LiteRT's file lists them in reverse, and neither its
    input order nor its sorted signature names are the model's."""
    r = _litert("test_dense_add", tmp_path)
    assert r["litert_ok"] and r["litert_max_abs_error"] <= 1e-4, r
    assert matrix_litert.cell(r) == "ok"


def test_litert_names_the_tensorflow_ops_an_lstm_needs(tmp_path: Path) -> None:
    """A dynamic-batch LSTM keeps TensorList ops that builtin-only conversion refuses; Keras'
    default export (SELECT_TF_OPS) converts it: the record names the Flex ops."""
    r = _litert("test_LSTM_rev", tmp_path)
    assert not r["litert_ok"] and not r["litert_converted"]
    assert r["litert_error"]["class"] == "ConverterError"
    assert "loc(" not in r["litert_error"]["message"]
    assert "TensorListReserve" in r["litert_needs_tf_ops"]
    assert matrix_litert.cell(r).startswith("needs TF ops: TensorList")
    c = matrix_litert.counts([r], matrix_report.edgekit_handles, matrix_report.keras_handles)
    assert c == {"litert_ok": 0, "litert_needs_tf_ops": 1, "litert_or_keras_only": 0}


def test_a_case_past_its_timeout_is_recorded_as_such(tmp_path: Path) -> None:
    recs = cm.run_group(["test_dense[use_bias=False]"], tmp_path, {"light": 1, "app": 1})
    assert len(recs) == 1 and recs[0]["status"] == "timeout", recs
    assert recs[0]["timeout_s"] == 1 and recs[0]["stage"]


def test_case_list_covers_the_sources() -> None:
    suites = {c.suite for c in CASES.values()}
    assert suites == {"applications", "keras_onnx_test", "tf2onnx_layers"}
    assert sum(c.suite == "applications" for c in CASES.values()) == 40  # Keras' MODEL_LIST
    assert sum(c.suite == "keras_onnx_test" for c in CASES.values()) == 16
    ported = {c.source.split("::")[1] for c in CASES.values() if c.suite == "tf2onnx_layers"}
    assert not ported & set(NOT_PORTED)
    assert len(ported) + len(NOT_PORTED) == TF2ONNX_TESTS
    quick = cm.select(None, True, ["applications", "keras_onnx_test", "tf2onnx_layers"])
    assert 3 <= len(quick) <= 8
    assert [c.name for c in cm.select("test_conv2d,test_conv3d*", False,
                                      ["tf2onnx_layers"])] == ["test_conv2d", "test_conv3d",
                                                               "test_conv3d_transpose"]
