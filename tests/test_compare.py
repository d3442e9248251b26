"""edgekit compare: every variant in one table, a recommendation, JSON and plot."""

from __future__ import annotations

import json

import pytest
from _bench_models import BenchModels
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.measure.compare import CompareConfig, compare_model
from edgekit.measure.compare_variants import variant_table

pytestmark = [pytest.mark.file_seconds(15), pytest.mark.slow]


def test_compare_cli(bench_models_dir: BenchModels, tmp_path) -> None:
    out_json, out_png = tmp_path / "c.json", tmp_path / "c.png"
    r = CliRunner().invoke(cli, ["compare", str(bench_models_dir.keras), "--eval-data",
                                 str(bench_models_dir.data), "--runs", "10", "--threads", "1",
                                 "--report", str(out_json), "--plot", str(out_png), "-q"])
    assert r.exit_code == 0, r.output
    variants = variant_table()
    for v in variants:
        assert f"| {v}" in r.output
    assert "recommended:" in r.output
    data = json.loads(out_json.read_text())
    rows = {row["name"]: row for row in data["variants"]}
    assert set(rows) == set(variants)
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        assert row["size_bytes"] > 0 and row["p50_ms"] > 0 and row["ratio"] > 0
        assert 0 <= row["accuracy"] <= 100 and 0 <= row["agreement"] <= 100
    assert rows["keras"]["agreement"] == 100.0
    for v in ("tflite-fp32", "tflite-int8"):  # which LiteRT API ran the row: table and JSON
        assert rows[v]["runtime"] == "LiteRT CompiledModel (CPU, XNNPACK, 1 thread)"
        assert f"{v}: LiteRT CompiledModel (CPU, XNNPACK, 1 thread)" in r.output
    assert rows["onnx-fp32"]["runtime"] is None
    assert rows["onnx-fp32"]["agreement"] == 100.0
    assert rows["onnx-int8"]["size_bytes"] < rows["onnx-fp32"]["size_bytes"]
    assert data["recommended"] in variants and data["recommended"] != "keras"
    assert out_png.stat().st_size > 5000


def test_compare_budget_zero_without_labels(bench_models_dir: BenchModels, tmp_path) -> None:
    res = compare_model(bench_models_dir.keras, config=CompareConfig(
        variants=("onnx-fp32", "onnx-fp16"), runs=5, accuracy_budget=0.0, workdir=tmp_path))
    assert [r.name for r in res.rows] == ["keras", "onnx-fp32", "onnx-fp16"]
    assert not res.labelled and res.row("onnx-fp32").within_budget
    assert (tmp_path / "small.onnx").exists()
    assert res.recommended in ("onnx-fp32", "onnx-fp16")
    assert "agreement" in res.table() or "top-1 = Keras" in res.table()
