"""edgekit.measure.bench: interleaved measurement, table, JSON and plot (structure, no timings)."""

from __future__ import annotations

import collections
import json
from typing import Any, cast

import numpy as np
import pytest
from _bench_models import BenchModels
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import InputError
from edgekit.measure.bench import BenchConfig, bench_models
from edgekit.measure.plots import plot_latencies
from edgekit.speed.machine import peak_rss_mb
from edgekit.speed.timing import balanced_orders, latency_stats, measure

pytestmark = pytest.mark.file_seconds(10)


def test_measure_interleaves_and_counts() -> None:
    order: list[str] = []
    calls = [lambda: order.append("a"), lambda: order.append("b"), lambda: order.append("c")]
    times = measure(calls, runs=4, warmup=0)
    assert [len(t) for t in times] == [4, 4, 4]
    # rounds follow balanced_orders(3); each starts with its first call made once untimed, so
    # that no call is preceded by the previous round's last one more often than by the others
    assert order[:8] == ["a", "a", "b", "c", "b", "b", "c", "a"]
    assert len(order) == 4 * 4
    assert all(v >= 0 for t in times for v in t)
    two: list[str] = []  # two calls: the Williams rows already end where the next begins
    measure([lambda: two.append("a"), lambda: two.append("b")], runs=4, warmup=0)
    assert two == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_the_call_before_a_timed_call_is_balanced_across_rounds() -> None:
    """Over a cycle of rounds, each of four calls is preceded by each other call equally often
    and by itself (the untimed call that opens a round) once: the previous round's last call
    never precedes a timed call."""
    seq: list[int] = []
    calls = [lambda i=i: seq.append(i) for i in range(4)]
    measure(calls, runs=8, warmup=0)
    # every fifth call opens a round untimed; the timed ones are the other four
    timed = [k % 5 != 0 for k in range(len(seq))]
    before = collections.Counter((seq[k - 1], seq[k]) for k in range(1, len(seq)) if timed[k])
    for i in range(4):
        got = {p: before[(p, i)] for p in range(4)}
        assert got == dict.fromkeys(range(4), 2), (i, got)  # 2 cycles: each once a cycle


@pytest.mark.parametrize("n", range(1, 9))
def test_balanced_orders_give_every_call_every_predecessor_equally(n: int) -> None:
    """A plain rotation (A B C D, B C D A ...) keeps each call's predecessor almost always the
    same, and a call pays for its predecessor's cache footprint; the Williams design does not."""
    rows = balanced_orders(n)
    assert all(sorted(r) == list(range(n)) for r in rows)  # each round calls everything once
    assert len(rows) == (2 * n if n % 2 and n > 1 else n)
    pairs = collections.Counter((r[i], r[i + 1]) for r in rows for i in range(n - 1))
    assert len(pairs) == n * (n - 1)  # every ordered pair (a after b) occurs ...
    assert len(set(pairs.values())) <= 1  # ... equally often
    rotation = [[(r + k) % n for k in range(n)] for r in range(n)]
    if n >= 3:  # the rotation misses pairs: 0 never directly follows 1 within a round
        assert len({(r[i], r[i + 1]) for r in rotation for i in range(n - 1)}) < n * (n - 1)


def test_measure_duration_has_min_runs() -> None:
    times = measure([lambda: None], runs=None, duration=0.01, min_runs=7, warmup=1)
    assert len(times[0]) >= 7


def test_latency_stats_order() -> None:
    s = latency_stats([1_000_000, 2_000_000, 3_000_000, 10_000_000], batch=4)
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
    assert s.runs == 4 and s.throughput == pytest.approx(4 * 1000 / s.mean_ms)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(InputError):
        BenchConfig(batches=(0,))
    with pytest.raises(InputError):
        BenchConfig(duration=0)


@pytest.mark.slow
def test_bench_onnx_models(bench_models_dir: BenchModels, tmp_path) -> None:
    m = bench_models_dir
    res = bench_models([m.onnx, m.big_onnx], BenchConfig(batches=(1, 4), runs=15, warmup=2,
                                                         threads=1))
    assert [r.name for r in res.models] == ["small.onnx", "big.onnx"]
    for r in res.models:
        assert set(r.latency) == {1, 4}
        assert r.size_bytes > 0 and r.load_time_ms > 0 and r.peak_rss_mb > 0
        for s in r.latency.values():
            assert s.runs == 15 and s.ratio > 0 and s.p50_ms > 0
    assert all(s.ratio == 1.0 for s in res.models[0].latency.values())
    table = res.table()
    assert table.count("\n") == 2 + 4 - 1  # header, separator, 2 models x 2 batch sizes
    assert "vs small.onnx" in table and "p99" in table
    d = cast(dict[str, Any], res.to_dict(samples=True))
    assert d["machine"]["cpu"] and "onnxruntime" in d["machine"]["versions"]
    assert len(d["models"][1]["latency"]["4"]["samples_ms"]) == 15
    png = plot_latencies(res.models, tmp_path / "lat.png")
    assert png.stat().st_size > 5000


def test_bench_keras_and_onnx_same_inputs(bench_models_dir: BenchModels) -> None:
    res = bench_models([bench_models_dir.onnx, bench_models_dir.keras],
                       BenchConfig(runs=5, warmup=1), names=["onnx", "keras"])
    assert [r.kind for r in res.models] == ["onnx", "keras"]
    assert res.models[1].latency[1].ratio > 0


def test_bench_cli_writes_table_json_png(bench_models_dir: BenchModels, tmp_path) -> None:
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    m = bench_models_dir
    args = ["bench", str(m.onnx), str(m.big_onnx), "--batch", "1,2", "--runs", "10",
            "--warmup", "1", "--threads", "1", "--report", str(out_json), "--plot", str(out_png),
            "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "| small.onnx" in r.output and "| big.onnx" in r.output
    data = json.loads(out_json.read_text())
    assert [m["name"] for m in data["models"]] == ["small.onnx", "big.onnx"]
    assert data["config"]["batches"] == [1, 2]
    assert out_png.stat().st_size > 5000


def test_bench_cli_errors(tmp_path) -> None:
    # usage errors (click's convention): exit 2 with ``error: ...`` and a hint
    r = CliRunner().invoke(cli, ["bench", str(tmp_path / "missing.onnx")])
    assert r.exit_code == 2 and "does not exist" in r.output
    (tmp_path / "x.onnx").write_bytes(b"")
    r = CliRunner().invoke(cli, ["bench", str(tmp_path / "x.onnx"), "--batch", "a"])
    assert r.exit_code == 2 and "--batch" in r.output


def test_peak_rss_positive() -> None:
    assert peak_rss_mb() > 0
    assert np.isfinite(peak_rss_mb())


def test_bench_engine_all_gives_a_row_per_engine(bench_models_dir: BenchModels,
                                                 tmp_path) -> None:
    """--engine all: each ONNX file once per installed engine; OpenVINO (f32 pinned) computes
    what onnxruntime computes."""
    from edgekit.measure.backends import OnnxBackend, load_backend
    from edgekit.runtime.engine_registry import installed_engines

    assert installed_engines() == ["onnxruntime", "openvino"]
    out_json = tmp_path / "b.json"
    r = CliRunner().invoke(cli, ["bench", str(bench_models_dir.onnx), "--engine", "all",
                                 "--runs", "5", "--warmup", "1", "--threads", "1",
                                 "--report", str(out_json), "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads(out_json.read_text())["models"]
    assert [(m["name"], m["kind"]) for m in rows] == [
        ("small.onnx@onnxruntime", "onnx"), ("small.onnx@openvino", "openvino")]
    assert "| small.onnx@openvino" in r.output
    ov = OnnxBackend(bench_models_dir.onnx, threads=1, engine="openvino")
    ort_b = load_backend(bench_models_dir.onnx, engine="onnxruntime", threads=1)
    assert ov.kind == "openvino" and ov.engine == "openvino" and ort_b.kind == "onnx"
    assert ov.model.session_config.precision in (None, "f32")
    x = [np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)]
    np.testing.assert_allclose(ov.infer(x), ort_b.infer(x), atol=1e-5)
    with pytest.raises(InputError, match="unknown engine"):
        BenchConfig(engine="tvm")


@pytest.mark.parametrize("quantized", [False, True])
def test_synthetic_ids_span_the_embedding_table(tmp_path: Any, quantized: bool) -> None:
    """A model with integer ids and no tokenizer metadata is timed on ids across its embedding
    table (50 rows; int8 weights behind a DequantizeLinear too, the ids through a Cast), not on
    ids 0 and 1 only, whose lookups would always hit the cache."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.measure.backends import OnnxBackend, load_backend
    from edgekit.speed.timing import make_inputs

    table = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "ids64"], ["emb"], axis=0),
             helper.make_node("ReduceMean", ["emb"], ["y"], axes=[1], keepdims=0)]
    inits = [numpy_helper.from_array(table, "table")]
    if quantized:
        inits = [numpy_helper.from_array(np.round(table * 20).astype(np.int8), "table_q"),
                 numpy_helper.from_array(np.array(0.05, np.float32), "table_s")]
        nodes.insert(0, helper.make_node("DequantizeLinear", ["table_q", "table_s"], ["table"]))
    graph = helper.make_graph(
        nodes, "embed", [helper.make_tensor_value_info("ids", TensorProto.INT32, [None, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], inits)
    path = tmp_path / "embed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    backend = load_backend(path, threads=1)
    assert isinstance(backend, OnnxBackend)
    assert backend._inputs is None  # made on first use: the load time leaves the graph read out
    assert [i.high for i in backend.inputs] == [50]
    ids = make_inputs(backend.inputs, 64)[0]
    assert ids.dtype == np.int32 and 0 <= ids.min() and ids.max() < 50 and len(np.unique(ids)) > 25
    assert backend.infer([ids]).shape == (64, 4)
    backend.close()
