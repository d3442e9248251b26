"""edgekit tune and the graph clean-ups it builds on (real TF, tf2onnx, onnxruntime)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from click.testing import CliRunner

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

from edgekit.cli.main import cli  # noqa: E402
from edgekit.convert import ExportConfig, export_model  # noqa: E402
from edgekit.errors import InputError  # noqa: E402
from edgekit.metadata import ModelMetadata, Preprocessing, save_keras_metadata  # noqa: E402
from edgekit.quantize import (  # noqa: E402
    CalibrationConfig,
    CalibrationMethod,
    QuantizationConfig,
)
from edgekit.quantize.regions import float_region, stem_and_depthwise  # noqa: E402
from edgekit.runtime.model import EdgeModel  # noqa: E402
from edgekit.speed.ratio import RatioConfig, measure_ratio  # noqa: E402
from edgekit.tune import TUNE_RATIO, TuneConfig, tune_model  # noqa: E402

pytestmark = pytest.mark.file_seconds(140)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small CNN trained on scikit-learn's digits (8x8), with calibration and eval files."""
    d = tmp_path_factory.mktemp("digits")
    data = sklearn_datasets.load_digits()
    x = (data.images * (255 / 16)).astype(np.uint8)[..., None]
    y = data.target.astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400] / 255.0, y[:1400], epochs=8, batch_size=32, verbose=0)
    path = d / "digits.keras"
    model.save(path)
    save_keras_metadata(path, ModelMetadata(
        labels=[str(i) for i in range(10)],
        preprocessing=Preprocessing(kind="image", scale=1 / 255, raw_dtype="uint8"),
    ))
    np.savez(d / "calib.npz", x=x[:200], y=y[:200])
    np.savez(d / "eval.npz", x=x[1400:], y=y[1400:])
    return {"model": path, "calib": d / "calib.npz", "eval": d / "eval.npz"}


#: few timing rounds; a budget no run reaches, so that every stage runs however busy the
#: machine is (the tests of the budget set their own)
_FAST: dict[str, Any] = dict(
    ratio=dataclasses.replace(TUNE_RATIO, min_rounds=20, max_rounds=60, min_seconds=0.0),
    budget_minutes=60.0,
    quantization=QuantizationConfig(calibration=CalibrationConfig(samples=64)))


@pytest.fixture(scope="module")
def lstm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny LSTM classifier on random sequences (auto quantization picks dynamic int8)."""
    d = tmp_path_factory.mktemp("lstm")
    rng = np.random.default_rng(0)
    x = rng.random((300, 12, 4), dtype=np.float32)
    y = (x[:, :, 0].mean(1) > 0.5).astype(np.int64) + (x[:, :, 1].mean(1) > 0.5)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 4), name="seq"), keras.layers.LSTM(16),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(d / "lstm.keras")
    np.savez(d / "calib.npz", x=x[:200], y=y[:200])
    np.savez(d / "eval.npz", x=x[200:], y=y[200:])
    onnx_path = export_model(d / "lstm.keras", d / "export").onnx_path
    return {"model": d / "lstm.keras", "onnx": onnx_path, "calib": d / "calib.npz",
            "eval": d / "eval.npz"}


@pytest.mark.slow
def test_simplify_removes_dynamic_flatten_and_keeps_outputs(digits: dict[str, Path],
                                                            tmp_path: Path) -> None:
    plain = export_model(digits["model"], tmp_path / "plain", ExportConfig(simplify=False))
    simple = export_model(digits["model"], tmp_path / "simple")
    ops_plain = [n.op_type for n in onnx.load(str(plain.onnx_path)).graph.node]
    ops_simple = [n.op_type for n in onnx.load(str(simple.onnx_path)).graph.node]
    assert "Shape" in ops_plain and "Transpose" in ops_plain
    assert "Shape" not in ops_simple and "Transpose" not in ops_simple
    assert len(ops_simple) < len(ops_plain)
    assert cast(dict[str, Any], simple.report)["graph"]["simplified"]
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    a = EdgeModel(plain.onnx_path, "cpu").run({"image": x})[0]
    b = EdgeModel(simple.onnx_path, "cpu").run({"image": x})[0]
    assert np.abs(a - b).max() <= 1e-6
    for batch in (1, 7):  # the constant shape keeps the batch dimension dynamic
        assert EdgeModel(simple.onnx_path, "cpu").run({"image": x[:batch]})[0].shape == (batch, 10)


@pytest.mark.slow
def test_float_region_extends_through_activation_and_pooling(digits: dict[str, Path],
                                                             tmp_path: Path) -> None:
    result = export_model(digits["model"], tmp_path)
    graph = onnx.load(str(result.onnx_path)).graph
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    region = float_region(graph, [first_conv.name])
    kinds = [next(n.op_type for n in graph.node if n.name == r) for r in region]
    assert kinds == ["Conv", "Relu", "MaxPool"]


@pytest.mark.slow
def test_measure_ratio_of_a_model_against_itself_is_near_one(digits: dict[str, Path],
                                                            tmp_path: Path) -> None:
    result = export_model(digits["model"], tmp_path)
    model = EdgeModel(result.onnx_path, "cpu", threads=1)
    feeds = {"image": np.zeros((1, 8, 8, 1), np.float32)}
    lr = measure_ratio(lambda: model.run(feeds), lambda: model.run(feeds),
                       RatioConfig(min_rounds=40))
    assert 0.5 < lr.ratio < 2.0 and lr.candidate_ms > 0 and lr.reference_ms > 0
    assert lr.rounds >= 40 and len(lr.history) >= 1 and lr.history[-1] == lr.ratio
    # min_seconds keeps timing after the ratio is stable; max_seconds ends an unstable one
    # (a tolerance no estimate meets), long before max_rounds
    t0 = time.perf_counter()
    lr = measure_ratio(lambda: model.run(feeds), lambda: model.run(feeds),
                       RatioConfig(min_rounds=20, tolerance=0.99, min_seconds=0.3))
    assert time.perf_counter() - t0 >= 0.3 and lr.rounds > 20
    t0 = time.perf_counter()
    lr = measure_ratio(lambda: model.run(feeds), lambda: model.run(feeds),
                       RatioConfig(min_rounds=10**6, max_rounds=10**9, max_seconds=0.2))
    assert time.perf_counter() - t0 < 10 and lr.seconds >= 0.2  # without max_seconds, hours
    with pytest.raises(InputError, match="tolerance"):
        RatioConfig(tolerance=0.0)
    with pytest.raises(Exception, match="min_seconds"):
        TuneConfig(ratio=RatioConfig(min_seconds=5.0, max_seconds=1.0))


@pytest.mark.slow
def test_tune_writes_the_winner_with_session_settings(digits: dict[str, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    messages: list[str] = []
    fractions: list[float] = []
    result = tune_model(digits["model"], out, digits["calib"], digits["eval"],
                        TuneConfig(max_accuracy_drop=1.0, batch=3, **_FAST),
                        progress=messages.append,
                        on_progress=fractions.append)
    assert result.model_path == out / "digits.tuned.onnx"
    assert result.report_path == out / "digits.tune.json"
    assert sorted(p.name for p in out.iterdir()) == ["digits.tune.json", "digits.tuned.onnx"]
    report = json.loads(result.report_path.read_text())
    names = [c["name"] for c in report["candidates"]]
    assert names[0] == "fp32" and "int8-u8s8-pc" in names and "int8-u8s8-pc-rr" in names
    assert any(c["stage"] == "session" for c in report["candidates"])
    assert report["pareto_front"] and report["why"]
    winner = report["winner"]
    assert winner["accepted"] and winner["latency_ratio"] > 0
    assert winner["accuracy_drop"] is None or winner["accuracy_drop"] <= 1.0
    # the gate's verdict and its statistic are in every candidate's reason
    for c in report["candidates"]:
        if c["stage"] in ("quantization", "mixed precision") and c["latency_ratio"] is not None:
            assert ("within the 1 pt budget" in c["reason"]) == c["accepted"], c
            assert "lower bound" in c["reason"], c
    assert any("[1/" in m for m in messages)
    finalists = [c for c in report["candidates"] if c["finalist"]]
    engines = report["machine"]["engines"]
    assert 2 <= len(finalists) <= 2 + len(engines) and winner["finalist"]
    assert all(c["first_ratio"] is not None for c in finalists)
    assert report["log"] == messages
    # the progress bar's fraction climbs monotonically to 1
    assert fractions[-1] == 1.0 and 0 < fractions[0] < 1
    assert all(a <= b for a, b in zip(fractions, fractions[1:], strict=False))
    # the runtime applies the stored session settings
    props = {p.key: p.value for p in onnx.load(str(result.model_path)).metadata_props}
    stored = json.loads(props["edgekit.session"])
    assert stored["intra_op_num_threads"] == 1
    model = EdgeModel(result.model_path, "cpu")
    assert model.session_config.intra_op_num_threads == 1
    assert model.session_config.disabled_optimizers == stored.get("disabled_optimizers", [])
    mixed = [c for c in report["candidates"] if c["stage"] == "mixed precision"]
    for c in mixed:  # the file itself keeps its float region float: no session setting needed
        assert "disabled_optimizers" not in c["session"]
        assert c["quantization"]["scheme"]["nodes_to_exclude"]
    data = np.load(digits["eval"])
    acc = float(np.mean(model.predict(data["x"]).argmax(1) == data["y"]))
    assert acc > 0.8
    _check_engines(report, messages, result.model_path, stored)
    _check_plan(report)
    _check_kernels(report, messages, result.model_path)


def _engine_twins(result: Any, suffix: str, on_threads: int | None = None
                  ) -> list[tuple[Any, Any]]:
    """The candidates named ``<base><suffix>`` with their bases: one per engine, each on the
    fastest accepted candidate of its engine before that stage (of those on ``on_threads``
    intra-op threads when given), with its file and engine."""
    cands = {c.name: c for c in result.candidates}
    twins = [c for c in result.candidates if c.name.endswith(suffix)]
    before = [c for c in result.candidates if c.accepted and c not in twins and (
        on_threads is None or c.session.get("intra_op_num_threads") == on_threads)]
    assert {c.engine for c in twins} == {c.engine for c in before} >= {"onnxruntime", "openvino"}
    out = []
    for c in twins:
        base = cands[c.name.removesuffix(suffix)]
        assert base is min((b for b in before if b.engine == c.engine),
                           key=lambda b: float((b.first_ratio if b.finalist
                                                else b.latency_ratio) or 0.0))
        assert c.stage == "session" and c.engine == base.engine and c.path == base.path
        out.append((c, base))
    return out


def _leader_twins(result: Any, suffix: str, files: int) -> list[tuple[Any, Any]]:
    """The candidates named ``<base><suffix>`` with their bases: on every engine, the bases are
    the fastest accepted candidate of each of its ``files`` fastest files before that stage
    and of the export's default file (the first quantization candidate's), and each twin has
    its base's file and engine."""
    cands = {c.name: c for c in result.candidates}
    default = next(c for c in result.candidates if c.stage == "quantization").path
    twins = [c for c in result.candidates if c.name.endswith(suffix)]
    ranked = sorted((c for c in result.candidates if c.accepted and c not in twins),
                    key=lambda b: float((b.first_ratio if b.finalist else b.latency_ratio)
                                        or 0.0))
    assert {c.engine for c in twins} == {c.engine for c in ranked} >= {"onnxruntime", "openvino"}
    for engine in {c.engine for c in ranked}:
        leaders: dict[str, Any] = {}
        for b in ranked:
            key = b.path or b.name
            if b.engine == engine and (len(leaders) < files or key == default):
                leaders.setdefault(key, b)
        assert sorted(c.name for c in twins if c.engine == engine) == sorted(
            b.name + suffix for b in leaders.values())
    out = []
    for c in twins:
        base = cands[c.name.removesuffix(suffix)]
        assert c.stage == "session" and c.engine == base.engine and c.path == base.path
        out.append((c, base))
    return out


@pytest.mark.slow
def test_a_multithreaded_tune_tries_the_best_of_every_engine_on_fewer_threads(
        digits: dict[str, Path], tmp_path: Path) -> None:
    """``threads=2`` on a model whose call takes microseconds: the fastest accepted candidate
    of each of every engine's three fastest files and of the export's default file is also
    timed on one thread (its file, engine and other settings; its accuracy carried over).
    Whichever count wins (it depends on the CPU and the load) is the one the tuned file
    stores, the runtime applies and the report names."""
    from edgekit.tune.sessions import FEWER_THREADS_FILES, fewer_threads

    assert fewer_threads(1) == [] and fewer_threads(2) == [1] and fewer_threads(3) == [1]
    assert fewer_threads(4) == [1, 2] and fewer_threads(8) == [1, 4]
    # a short settle and few rounds: what is checked is the plan, not which count wins
    ratio = dataclasses.replace(_FAST["ratio"], min_rounds=6, max_rounds=12, settle=0.01)
    result = tune_model(digits["model"], tmp_path / "out", digits["calib"], digits["eval"],
                        TuneConfig(max_accuracy_drop=1.0, threads=2,
                                   **{**_FAST, "ratio": ratio}))
    for c, base in _leader_twins(result, "+1-thread", FEWER_THREADS_FILES):
        assert base.session["intra_op_num_threads"] == 2
        assert c.session == {**base.session, "intra_op_num_threads": 1}
        assert c.accepted and (c.accuracy_drop, c.agreement) == (base.accuracy_drop,
                                                                  base.agreement)
        assert c.latency_ratio is not None and c.batch == 1
    props = {p.key: p.value for p in onnx.load(str(result.model_path)).metadata_props}
    stored = json.loads(props["edgekit.session"])
    assert stored == result.winner.session and stored["intra_op_num_threads"] in (1, 2)
    model = EdgeModel(result.model_path)
    assert model.session_config.intra_op_num_threads == stored["intra_op_num_threads"]
    model.close()
    why = json.loads(result.report_path.read_text())["why"]
    assert ("runs on 1 of the 2 threads" in why or "1 of 2 threads" in why) == (
        stored["intra_op_num_threads"] == 1), why


@pytest.mark.slow
def test_a_batched_multithreaded_tune_splits_the_batch_of_every_engines_best(
        digits: dict[str, Path], tmp_path: Path) -> None:
    """``threads=2, batch=8``: the fastest accepted candidate of every engine on both threads
    is also timed with its batch split into 2 streams (its file, engine and settings plus
    ``batch_streams``), gated on accuracy. Whichever wins (it depends on the CPU and the load)
    is what the file stores, EdgeModel applies and the report names."""
    from edgekit.tune.sessions import stream_counts

    assert stream_counts(1, 8) == [] and stream_counts(2, 1) == [] and stream_counts(4, 32) == [4]
    ratio = dataclasses.replace(_FAST["ratio"], min_rounds=6, max_rounds=12, settle=0.01)
    result = tune_model(digits["model"], tmp_path / "out", digits["calib"], digits["eval"],
                        TuneConfig(max_accuracy_drop=1.0, threads=2, batch=8,
                                   **{**_FAST, "ratio": ratio}))
    for c, base in _engine_twins(result, "+2-streams", on_threads=2):
        assert c.session == {**base.session, "batch_streams": 2}
        assert c.agreement is not None and c.batch == 8 and c.latency_ratio is not None
        assert "split into 2 parts run at once, on 1 thread each" in c.description
    assert not any("batch_streams" in c.session for c in result.candidates
                   if c.name.endswith("-thread"))
    stored = json.loads({p.key: p.value for p in onnx.load(str(result.model_path))
                         .metadata_props}["edgekit.session"])
    assert stored == result.winner.session
    model = EdgeModel(result.model_path)
    assert model.session_config.batch_streams == stored.get("batch_streams")
    x = np.zeros((8, 8, 8, 1), np.float32)
    assert model.run(x)[0].shape == (8, 10)
    model.close()
    why = json.loads(result.report_path.read_text())["why"]
    assert ("2 streams of 1 thread(s)" in why) == (stored.get("batch_streams") == 2), why


def _check_kernels(report: dict, messages: list[str], path: Path) -> None:
    """The kernel stage ran on the best static int8 file: either no conv profiled faster on
    onnxruntime's GEMM kernels here (logged), or a candidate names the convs it offsets, and
    a tuned file from it carries their offset weights. Which of the two happens depends on
    the CPU (AMX or not) and the machine's load; both are checked."""
    starts = [i for i, m in enumerate(messages) if m.startswith("kernels: profiling")]
    cands = {c["name"]: c for c in report["candidates"] if c["stage"] == "kernels"}
    assert 1 <= len(starts) <= 2 and len(cands) <= len(starts)
    for i in starts:
        base = messages[i].split("profiling ")[1].split("'s int8 convs")[0]
        cand = cands.get(f"{base}+gemm-convs")
        if cand is None:
            assert "no kernel candidate" in messages[i + 1], messages[i:i + 2]
            continue
        assert cand["latency_ratio"] is not None
        offset = cand["quantization"]["scheme"]["offset_weight_convs"]
        assert offset and f"{len(offset)} of " in cand["description"]
    quant = report["winner"]["quantization"]
    offset = quant["scheme"]["offset_weight_convs"] if quant else []
    if offset:  # the winner's file is (or was timed from) a kernel candidate
        model = onnx.load(str(path))
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        producers = {o: n for n in model.graph.node for o in n.output}
        for node in model.graph.node:
            if node.name in offset:
                assert abs(int(inits[producers[node.input[1]].input[2]].ravel()[0])) == 1


def _check_plan(report: dict) -> None:
    """The measurement plan, whichever candidate wins: the export's default int8 is the first
    candidate; every candidate is timed at the requested batch; every other engine runs fp32,
    the default int8 and the best int8 file of every stage; the run-off holds the fastest
    accepted candidate of every engine."""
    batch, cands = report["config"]["batch"], report["candidates"]
    assert batch == 3
    assert all(c["batch"] == batch for c in cands if c["latency_ratio"] is not None), cands
    assert [c["name"] for c in cands if c["stage"] == "quantization"][0] == "int8-default"
    names = {c["name"] for c in cands}

    def first(c: dict) -> float:  # the ratio the search saw before the run-off
        return c["first_ratio"] if c["finalist"] else c["latency_ratio"]

    timed = [c for c in cands if c["accepted"] and c["latency_ratio"] is not None]
    ort = [c for c in timed if c["engine"] == "onnxruntime"]
    for engine in set(report["machine"]["engines"]) - {"onnxruntime"}:
        assert f"fp32@{engine}" in names
        for stage in ("quantization", "mixed precision", "kernels"):
            pool = [c for c in ort if c["stage"] == stage]
            if pool:
                assert f"{min(pool, key=first)['name']}@{engine}" in names, stage
        if any(c["name"] == "int8-default" for c in ort):
            assert f"int8-default@{engine}" in names
    for engine in {c["engine"] for c in timed}:
        assert min((c for c in timed if c["engine"] == engine), key=first)["finalist"], engine


def _check_engines(report: dict, messages: list[str], path: Path, stored: dict) -> None:
    """Candidates ran on both engines; the stored session names the winner's engine, and
    EdgeModel (engine auto) runs the tuned file on it."""
    cands = {c["name"]: c for c in report["candidates"]}
    assert {"onnxruntime", "openvino"} <= {c["engine"] for c in cands.values()}
    ov = [c for c in cands.values() if c["engine"] == "openvino"]
    assert "fp32@openvino" in cands and all(c["stage"] == "engine" for c in ov)
    assert cands["fp32@openvino"]["session"]["precision"] == "f32"
    assert any(c["quantization"] for c in ov)  # a QDQ file run by OpenVINO
    # and the file with OpenVINO's own Q/DQ layout, built for it, whatever the budget: with
    # its float parts in bf16 on a bf16 CPU (the f32 layout only when that one is rejected)
    bf16 = "bf16@openvino" in cands
    own = cands["int8-bf16-openvino" if bf16 else "int8-openvino"]
    assert own["engine"] == "openvino" and own["session"]["precision"] == ("bf16" if bf16
                                                                           else "f32")
    assert own["quantization"]["scheme"]["op_types_to_quantize"] == ["Conv", "MatMul", "Gemm"]
    assert own["quantization"]["scheme"]["float_outputs"] is bf16
    assert ("int8-openvino" in cands) is (not bf16 or not own["accepted"])
    for c in ov:  # gated on accuracy like every candidate
        assert c["latency_ratio"] is not None and "lower bound" in c["reason"], c
    # stem conv kept in float (the digits CNN has no depthwise conv: that one is skipped)
    # (unless the best int8 file, e.g. the default, keeps the 1-channel stem in float already)
    stem = cands.get("int8-stem-float")
    if stem is None:
        assert any("keeps the stem conv in float already" in m for m in messages)
    else:
        assert stem["stage"] == "mixed precision"
        assert len(stem["quantization"]["scheme"]["nodes_to_exclude"]) >= 3  # conv, relu, max pool
    assert any("no depthwise Conv" in m for m in messages)
    # a bf16 candidate exactly on CPUs with avx512_bf16/amx_bf16, else the reason is logged
    assert ("bf16@openvino" in cands) != any("no bf16 candidate" in m for m in messages)
    winner = report["winner"]
    assert stored["engine"] == winner["engine"] in ("onnxruntime", "openvino")
    model = EdgeModel(path)
    assert model.engine_name == stored["engine"]
    assert model.session_config.precision in (None, "f32", "bf16")
    table = format_candidates_table(report)
    header = [h.strip() for h in table.splitlines()[0].split("|")]
    assert header[1:4] == ["candidate", "stage", "engine"]
    assert any(row.split("|")[3].strip() == "openvino" for row in table.splitlines()[2:])


def format_candidates_table(report: dict) -> str:
    from edgekit.tune.search import Candidate, format_candidates

    return format_candidates([Candidate(**c) for c in report["candidates"]])


def test_stem_and_depthwise_convs_are_found() -> None:
    """The first Conv is the stem; a Conv with group == input channels is depthwise."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"w0": rng.random((8, 3, 3, 3)), "w1": rng.random((8, 1, 3, 3)),
         "w2": rng.random((16, 8, 1, 1)), "w3": rng.random((16, 4, 3, 3))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], name="stem", pads=[1] * 4),
             helper.make_node("Conv", ["a", "w1"], ["b"], name="dw", group=8, pads=[1] * 4),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="pw"),
             helper.make_node("Conv", ["c", "w3"], ["y"], name="grouped", group=4, pads=[1] * 4)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    onnx.checker.check_model(helper.make_model(graph))
    assert stem_and_depthwise(graph) == (["stem"], ["dw"])


@pytest.mark.slow
def test_tune_cli_errors_leave_nothing(digits: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["tune", str(digits["model"]), "-o", str(out)])
    assert res.exit_code == 2 and "calibration" in res.output and not out.exists()
    out.mkdir()
    (out / "digits.tuned.onnx").write_bytes(b"keep")
    res = CliRunner().invoke(cli, ["tune", str(digits["model"]), "-o", str(out),
                                   "--calibration", str(digits["calib"])])
    assert res.exit_code == 1 and "already exists" in res.output
    assert (out / "digits.tuned.onnx").read_bytes() == b"keep"
    assert sorted(p.name for p in out.iterdir()) == ["digits.tuned.onnx"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 9, 9, 1), np.uint8))
    res = CliRunner().invoke(cli, ["tune", str(digits["model"]), "-o", str(tmp_path / "o2"),
                                   "--calibration", str(bad)])
    assert res.exit_code == 1 and "expects (N, 8, 8, 1)" in res.output
    assert not (tmp_path / "o2").exists()
    with pytest.raises(Exception, match="max_accuracy_drop"):
        TuneConfig(max_accuracy_drop=-1)


@pytest.mark.slow
def test_tune_cli_writes_the_model_and_prints_the_table(digits: dict[str, Path],
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["tune", str(digits["model"]), "-o", str(out),
                                   "--calibration", str(digits["calib"]),
                                   "--eval-data", str(digits["eval"]), "--budget", "0.02",
                                   "--max-accuracy-drop", "2"])
    assert res.exit_code == 0, res.output
    # not a terminal: the progress is plain status lines; then the table and the reason
    assert "[1/6] int8-default" in res.output and "time budget reached" in res.output
    assert "| candidate" in res.output and "ratio vs fp32" in res.output
    assert f"wrote {out / 'digits.tuned.onnx'}" in res.output
    report = json.loads((out / "digits.tune.json").read_text())
    assert report["config"]["budget_minutes"] == 0.02 and report["why"] in res.output
    # over the budget, every engine still ran fp32 and the default int8 (the first candidate)
    cands = {c["name"]: c for c in report["candidates"]}
    for engine in set(report["machine"]["engines"]) - {"onnxruntime"}:
        assert f"fp32@{engine}" in cands
        assert (f"int8-default@{engine}" in cands) == cands["int8-default"]["accepted"]
    # and the fp32 file in bf16 where OpenVINO computes in it natively (AMX / avx512_bf16: on
    # an AMX Xeon it beat OpenVINO's int8 on ResNet50), else the reason is logged
    if "openvino" in report["machine"]["engines"]:
        from edgekit.runtime.engine_registry import engine_class

        native = engine_class("openvino").precision_problem("bf16") is None
        assert ("bf16@openvino" in cands) == native
        assert ("no bf16 candidate on openvino" in res.output) != native


def test_quant_space_starts_with_the_export_default(digits: dict[str, Path],
                                                    lstm: dict[str, Path], tmp_path: Path) -> None:
    from edgekit.quantize import QuantizationConfig, QuantMode
    from edgekit.tune.candidates import _quant_space

    base = QuantizationConfig()
    cnn = onnx.load(str(export_model(digits["model"], tmp_path).onnx_path))
    space = _quant_space(cnn)
    assert space[0].name == "int8-default" and space[0].config(base) == base
    assert space[0].config(base).scheme.stem_in_float is None  # auto, as the export does
    for spec in space[1:]:  # the stem is a float-region candidate of its own
        cfg = spec.config(base)
        assert cfg.scheme.stem_in_float is False and cfg.mode is QuantMode.INT8
    # auto picks dynamic int8 for recurrent models: dynamic first, then the static ones
    space = _quant_space(onnx.load(str(lstm["onnx"])))
    modes = [(spec.name, spec.config(base).mode.value) for spec in space]
    assert modes[:3] == [("int8-dynamic", "dynamic"), ("int8-dynamic-full", "dynamic"),
                         ("int8-default", "int8")]


def test_openvino_layout_quantizes_the_inputs_of_compute_ops_only(tmp_path: Path) -> None:
    """The int8-openvino candidate's file on a Conv1D text model: Q/DQ pairs only on edges
    that touch a Conv/MatMul/Gemm (the full QDQ file also requantizes around the Gather,
    Transpose, pooling and Squeeze), and both engines give the fp32 file's classes."""
    from edgekit.quantize import quantize_model
    from edgekit.runtime.engine_registry import engine_class

    pytest.importorskip("openvino")
    ops = engine_class("openvino").qdq_ops
    assert ops == ("Conv", "MatMul", "Gemm")
    keras.utils.set_random_seed(0)
    tokens = keras.Input((40,), dtype="int32", name="tokens")
    x = keras.layers.Conv1D(16, 5, activation="relu")(keras.layers.Embedding(50, 8)(tokens))
    x = keras.layers.GlobalMaxPooling1D()(keras.layers.Conv1D(16, 3, activation="relu")(x))
    model = keras.Model(tokens, keras.layers.Dense(3, activation="softmax")(x))
    ids = np.random.default_rng(0).integers(0, 50, (256, 40)).astype(np.int32)
    np.savez(tmp_path / "ids.npz", x=ids)
    fp32 = export_model(model, tmp_path / "fp32").onnx_path
    base = QuantizationConfig(calibration=CalibrationConfig(samples=64))
    own = dataclasses.replace(base, scheme=dataclasses.replace(base.scheme,
                                                               op_types_to_quantize=ops))
    files = {name: quantize_model(fp32, tmp_path / name, config=cfg,
                                  calibration=tmp_path / "ids.npz").path
             for name, cfg in (("full", base), ("openvino", own))}

    def layout(path: Path) -> tuple[int, int]:
        """(activation Q/DQ pairs, those on an edge that touches no compute op)."""
        graph = onnx.load(str(path)).graph
        made = {o: n for n in graph.node for o in n.output}
        pairs = [n for n in graph.node if n.op_type == "DequantizeLinear"
                 and made.get(n.input[0]) is not None]  # activations, not weights
        stray = 0
        for dq in pairs:
            q = made[dq.input[0]]
            producer = made.get(q.input[0])
            readers = {n.op_type for n in graph.node if dq.output[0] in n.input}
            if not (readers <= set(ops) or (producer and producer.op_type in ops)):
                stray += 1
        return len(pairs), stray

    n_full, stray_full = layout(files["full"])
    n_own, stray_own = layout(files["openvino"])
    assert stray_own == 0 and stray_full >= 2 and n_own < n_full
    want = EdgeModel(fp32).predict(ids).argmax(1)
    for engine in ("onnxruntime", "openvino"):
        got = EdgeModel(files["openvino"], engine=engine).predict(ids).argmax(1)
        assert np.mean(got == want) > 0.9, engine


def test_float_region_candidates_keep_every_quantization_setting() -> None:
    import dataclasses

    from edgekit.quantize import CalibrationConfig, QuantizationConfig, QuantScheme
    from edgekit.tune.candidates import _float_config
    from edgekit.tune.search import Candidate

    cfg = QuantizationConfig(
        scheme=QuantScheme.from_preset("avx2", op_types_to_quantize=["Conv"], stem_in_float=False,
                                       extra_options={"CalibMovingAverage": True},
                                       nodes_to_exclude=["a"]),
        calibration=CalibrationConfig(method=CalibrationMethod.MINMAX, samples=7))
    best = Candidate("b", "quantization", "", quantization=cfg)
    want = dataclasses.replace(cfg, scheme=dataclasses.replace(cfg.scheme,
                                                               nodes_to_exclude=["a", "c"]))
    assert _float_config(best, ["c", "a"]) == want


def test_no_stem_candidate_when_the_stem_is_float_already(digits: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """The default int8 keeps a 1-channel stem in float (stem_in_float auto): a stem-in-float
    candidate built on it would repeat it."""
    from types import SimpleNamespace

    from edgekit.quantize import QuantizationConfig, QuantScheme
    from edgekit.tune.candidates import _region_candidates
    from edgekit.tune.search import Candidate

    graph = onnx.load(str(export_model(digits["model"], tmp_path).onnx_path)).graph
    messages: list[str] = []
    ctx = SimpleNamespace(graph=graph, progress=messages.append)
    for stem_in_float, names in ((None, []), (True, []), (False, ["int8-stem-float"])):
        cfg = QuantizationConfig(scheme=QuantScheme(stem_in_float=stem_in_float))
        best = Candidate("b", "quantization", "", quantization=cfg)
        assert [n for n, _, _ in _region_candidates(ctx, best)] == names  # type: ignore[arg-type]
    assert any("keeps the stem conv in float already" in m for m in messages)


def test_runoff_holds_the_fastest_accepted_candidate_of_every_engine() -> None:
    from edgekit.tune.engines import _finalists
    from edgekit.tune.search import Candidate

    def cand(name: str, engine: str, ratio: float, accepted: bool = True) -> Candidate:
        return Candidate(name, "engine", "", path="x", latency_ratio=ratio, accepted=accepted,
                         engine=engine)

    cands = [cand(f"ort{i}", "onnxruntime", 0.5 + 0.01 * i) for i in range(5)]
    cands += [cand("ov-rejected", "openvino", 0.1, False), cand("ov-slow", "openvino", 0.9),
              cand("ov", "openvino", 0.8)]
    names = [c.name for c in _finalists(cands, 1)]
    assert names == ["ort0", "ort1", "ort2", "ov"]


def test_the_runoff_holds_each_engines_fastest_on_fewer_threads_and_takes_it_when_close(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fastest accepted candidate of every engine and thread count is a finalist; a
    finalist on fewer threads within THREAD_MARGIN of the winner wins instead (the fewest
    threads first), one further off, or slower than fp32 on all the threads, does not. The
    numbers are the Fashion CNN's run-off at batch 1 on 2 threads of a Zen 4: 0.685 on 2
    threads, 0.712 on one."""
    from types import SimpleNamespace

    from edgekit.tune import engines
    from edgekit.tune.engines import THREAD_MARGIN, _finalists, _on_fewer_threads
    from edgekit.tune.search import Candidate

    def cand(name: str, ratio: float, threads: int | None, engine: str = "onnxruntime",
             stage: str = "session") -> Candidate:
        session: dict[str, object] = {} if threads is None else {
            "intra_op_num_threads": threads}
        return Candidate(name, stage, "", path="x", latency_ratio=ratio, accepted=True,
                         engine=engine, session=session)

    default = cand("int8-default", 0.685, None, stage="baseline")
    others = [cand("int8-default+no-qdq-propagation", 0.683, 2),
              cand("int8-default+denormal-zero", 0.682, 2)]
    one = cand("int8-default+1-thread", 0.712, 1)
    ov_one = cand("int8-default@openvino+1-thread", 1.10, 1, engine="openvino")
    finalists = _finalists([default, *others, one, ov_one], 2)
    assert [c.name for c in finalists] == [
        "int8-default+denormal-zero", "int8-default+no-qdq-propagation", "int8-default",
        "int8-default+1-thread", "int8-default@openvino+1-thread"]
    assert _on_fewer_threads(default, finalists, 2) is one
    assert _on_fewer_threads(one, finalists, 2) is one  # nothing on fewer than one
    far = cand("int8-default+1-thread", 0.685 * (1 + THREAD_MARGIN) + 0.001, 1)
    assert _on_fewer_threads(default, [default, far], 2) is default
    # on 4 threads: one thread and two both close, the fewest wins; the default (unset) is 4
    two = cand("int8-default+2-thread", 0.70, 2)
    assert _on_fewer_threads(default, [default, two, one], 4) is one
    assert _on_fewer_threads(two, [default, two, one], 4) is one
    # never slower than fp32 on all the threads (ratio 1), unless the winner is
    fp32 = cand("fp32", 1.0, 2, stage="baseline")
    fp32_one = cand("fp32+1-thread", 1.026, 1)
    assert _on_fewer_threads(fp32, [fp32, fp32_one], 2) is fp32
    assert _on_fewer_threads(fp32_one, [fp32_one, fp32], 2) is fp32_one
    fp32_slow = cand("fp32", 1.03, 2, stage="baseline")  # fp32 timed against itself: noise
    assert _on_fewer_threads(fp32_slow, [fp32_slow, fp32_one], 2) is fp32_one
    # the run-off's winner, on the ratios as given (its re-timing left out)
    monkeypatch.setattr(engines, "_time_group", lambda ctx, pending: pending.clear())
    ctx = SimpleNamespace(config=TuneConfig(threads=2))
    assert engines._runoff(cast(Any, ctx), [default, *others, one, ov_one]) is one
    assert engines._runoff(cast(Any, ctx), [default, far]) is default


def test_tune_tries_dynamic_int8_on_a_recurrent_model(lstm: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """The export's default for an LSTM (dynamic int8) is the first candidate, gated like the
    others; a file with onnxruntime-only ops is never given to another engine."""
    messages: list[str] = []
    result = tune_model(lstm["model"], tmp_path / "out", lstm["calib"], lstm["eval"],
                        TuneConfig(**{**_FAST, "budget_minutes": 0.01}),
                        progress=messages.append)
    dyn = result.candidates[1]
    assert dyn.name == "int8-dynamic" and dyn.stage == "quantization"
    assert dyn.quantization is not None and dyn.quantization.mode.value == "dynamic"
    assert dyn.latency_ratio is not None and "lower bound" in dyn.reason  # gated
    assert dyn.batch == 1
    others = [c for c in result.candidates if c.engine != "onnxruntime"]
    if dyn.nonstandard_ops:  # com.microsoft.DynamicQuantizeLSTM: onnxruntime only
        assert not any(c.quantization and c.quantization.mode.value == "dynamic" for c in others)
        if others:
            assert any("(onnxruntime only): not run on" in m for m in messages)


@pytest.mark.slow
def test_tune_never_runs_a_file_on_an_engine_it_failed_on(
        digits: dict[str, Path], tmp_path: Path) -> None:
    """The fp32 file's record says OpenVINO gives wrong answers (planted: it does not): the
    tune's OpenVINO candidate of that file is refused by that record, whatever it measures."""
    import onnx

    from edgekit.convert import ExportConfig, export_model
    from edgekit.metadata import set_props
    from edgekit.runtime.engine_record import EngineCheck, engines_prop

    fp32 = export_model(digits["model"], tmp_path / "fp32", ExportConfig()).onnx_path
    proto = onnx.load(str(fp32))
    set_props(proto, engines_prop({
        "onnxruntime": EngineCheck("onnxruntime", True, True, samples=8).to_dict(),
        "openvino": EngineCheck("openvino", True, False, samples=8,
                                reason="planted by the test").to_dict()}))
    onnx.save(proto, str(fp32))
    result = tune_model(fp32, tmp_path / "out", digits["calib"], digits["eval"],
                        TuneConfig(engines=("onnxruntime", "openvino"),
                                   **{**_FAST, "budget_minutes": 0.05}))
    on_fp32 = [c for c in result.candidates if c.engine == "openvino" and c.quantization is None]
    assert on_fp32, [c.name for c in result.candidates]
    for cand in on_fp32:
        assert not cand.accepted
        assert "wrong answers on openvino: planted by the test" in cand.reason
    assert not (result.winner.engine == "openvino" and result.winner.quantization is None)


def test_the_runoff_opens_finalists_in_groups_that_fit_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finalists that would add more than RUNOFF_GROWTH_BYTES open together are timed in later
    groups, each interleaved with fp32: every one is still re-timed at the requested batch.
    Finalists on different thread counts are never timed in one group."""
    import types

    from onnx import TensorProto, helper

    from edgekit.tune import engines
    from edgekit.tune.core import Candidate

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    feeds = {"x": np.ones((3, 32), np.float32)}
    config = TuneConfig(**_FAST)
    groups: list[int] = []
    measure = engines.measure

    def counting(calls: list[Any], **kwargs: Any) -> Any:
        groups.append(len(calls) - 1)  # the finalists of one group, after fp32
        return measure(calls, **kwargs)

    monkeypatch.setattr(engines, "measure", counting)
    for growth, expected in ((engines.RUNOFF_GROWTH_BYTES, [3]), (-1, [1, 1, 1])):
        monkeypatch.setattr(engines, "RUNOFF_GROWTH_BYTES", growth)
        groups.clear()
        cands = [Candidate(f"c{i}", "quantization", "", path=str(path), accepted=True,
                           latency_ratio=1.0 + i / 10, session={"intra_op_num_threads": 1})
                 for i in range(3)]
        reference = EdgeModel(path, "cpu")
        ctx = types.SimpleNamespace(config=config, bench_feeds=feeds, reference=reference)
        winner = engines._runoff(cast(Any, ctx), cands)
        reference.close()
        assert groups == expected
        assert winner in cands and all(c.finalist and c.batch == 3 for c in cands)
        assert [c.first_ratio for c in cands] == [1.0, 1.1, 1.2]
        assert all(c.latency_ratio is not None and c.latency_ratio > 0 for c in cands)
    # each thread count is timed apart (the most threads first), whatever memory allows
    monkeypatch.setattr(engines, "RUNOFF_GROWTH_BYTES", 1 << 40)
    groups.clear()
    cands = [Candidate(f"c{i}", "quantization", "", path=str(path), accepted=True,
                       latency_ratio=1.0 + i / 10, session={"intra_op_num_threads": n})
             for i, n in enumerate((1, 2, 1))]
    reference = EdgeModel(path, "cpu")
    ctx = types.SimpleNamespace(config=TuneConfig(**{**_FAST, "threads": 2}),
                                bench_feeds=feeds, reference=reference)
    engines._runoff(cast(Any, ctx), cands)
    reference.close()
    assert groups == [1, 2] and all(c.finalist for c in cands)


def test_the_report_names_a_winner_on_fewer_threads_and_its_engine() -> None:
    """The reason for the winner: an fp32 graph that wins on another engine and on fewer
    threads is named as such (not "fp32 is fastest"); one on onnxruntime is the fp32 case; a
    winner with batch streams says how it splits its batch, in either case."""
    from edgekit.quantize.options import QuantMode
    from edgekit.tune.core import Candidate
    from edgekit.tune.report import _why

    cfg = TuneConfig(threads=2)
    fp32 = Candidate("fp32", "baseline", "", accepted=True, latency_ratio=1.0,
                     session={"intra_op_num_threads": 2})
    int8 = Candidate("int8-default", "quantization", "", accepted=True, latency_ratio=0.9,
                     latency_ms=0.33, fp32_latency_ms=0.37, agreement=100.0,
                     quantization=QuantizationConfig(mode=QuantMode.INT8),
                     session={"intra_op_num_threads": 2})
    ov = Candidate("fp32@openvino+1-thread", "session", "", accepted=True, latency_ratio=0.7,
                   latency_ms=0.26, fp32_latency_ms=0.37, agreement=100.0,
                   engine="openvino", session={"intra_op_num_threads": 1})
    why = _why(ov, fp32, [fp32, int8, ov], cfg)
    assert why.startswith("fp32@openvino+1-thread (openvino) is the fastest candidate"), why
    assert "1 of 2 threads (fp32 on 2)" in why
    ort = dataclasses.replace(ov, name="fp32+1-thread", engine="onnxruntime")
    why = _why(ort, fp32, [fp32, int8, ort], cfg)
    assert why.startswith("fp32 (fp32+1-thread) is fastest: the fastest int8 candidate within "
                          "the accuracy budget, int8-default, takes 0.90x the fp32 latency "
                          "here, fp32+1-thread 0.70x (2 thread(s), batch 1)"), why
    assert "here (2 thread(s)" in _why(fp32, fp32, [fp32, int8], cfg)  # fp32 itself: 1.00x
    assert why.endswith("fp32+1-thread runs on 1 of the 2 threads")
    assert "1 of 2" not in _why(int8, fp32, [fp32, int8], cfg)
    split = dataclasses.replace(int8, name="int8-default+2-streams",
                                session={"intra_op_num_threads": 2, "batch_streams": 2})
    assert "(0.330 ms vs 0.370 ms, 2 thread(s), the batch split into 2 streams of 1 thread(s)" \
        in _why(split, fp32, [fp32, split], cfg)
    fp32_split = dataclasses.replace(ort, name="fp32+2-streams", session=split.session)
    assert _why(fp32_split, fp32, [fp32, int8, fp32_split], cfg).endswith(
        "fp32+2-streams splits its batch into 2 streams of 1 thread(s)")
    # a winner on fewer threads within THREAD_MARGIN of a faster finalist on more says so
    fast = dataclasses.replace(int8, latency_ratio=0.66, finalist=True)
    slow = dataclasses.replace(int8, name="int8-default+1-thread", latency_ratio=0.7,
                               finalist=True, session={"intra_op_num_threads": 1})
    why = _why(slow, fp32, [fp32, fast, slow], cfg)
    assert why.startswith("int8-default+1-thread (onnxruntime) is the fastest candidate "
                          "within the accuracy budget on 1 thread(s), within 10% of "
                          "int8-default on more threads: 1.43x faster than fp32"), why
    assert why.endswith("run-off ratio 0.700 vs int8-default 0.660 (a more complex setting "
                        "must win by more than the noise, and more threads by more than "
                        "10%)"), why
    assert "more threads" not in _why(fast, fp32, [fp32, fast, slow], cfg)
    # a stored 0 is onnxruntime's default, the requested threads, not fewer
    default = dataclasses.replace(int8, session={"intra_op_num_threads": 0})
    assert "(0.330 ms vs 0.370 ms, 2 thread(s), batch 1)" in _why(default, fp32,
                                                                  [fp32, default], cfg)


def test_the_fp32_reference_is_timed_fresh(digits: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The fp32 session every candidate is timed against has run nothing when the search
    starts, as each candidate's session has run nothing when it is timed: the fp32 outputs
    for the accuracy gate come from a session of their own. A session that ran the
    evaluation's batches of 16 first times batch 1 slower afterwards (a masked GRU: fp32
    measured 0.81x of itself)."""
    from edgekit.tune.setup import load_tune_data, tune_context

    calls: list[tuple[EdgeModel, int]] = []
    run = EdgeModel.run

    def recorded(self: EdgeModel, feeds: Any) -> list[np.ndarray]:
        calls.append((self, len(next(iter(feeds.values())))))
        return run(self, feeds)

    fp32 = export_model(digits["model"], tmp_path / "export").onnx_path
    proto = onnx.load(fp32)
    config = TuneConfig(**_FAST)
    data = load_tune_data(proto, digits["calib"], digits["eval"], config)
    monkeypatch.setattr(EdgeModel, "run", recorded)
    ctx = tune_context(config, fp32, proto, data, tmp_path, lambda _: None)
    try:
        n_eval = len(next(iter(data.eval_feeds.values())))
        assert sum(n for _, n in calls) == n_eval == len(ctx.fp32_probs)  # scored once
        assert all(m is not ctx.reference for m, _ in calls)
        ctx.reference.run(data.bench_feeds)  # and it is the fp32 file's session
    finally:
        ctx.reference.close()


def test_a_regression_model_is_tuned_against_its_relative_error(tmp_path: Path) -> None:
    """A declared regression output: its targets in 'y' are not read as labels, and every
    candidate's verdict is its relative error against fp32 within the budget in percent."""
    from _runtime_models import make_regression_model

    from edgekit.tune.report import format_candidates

    model, data = make_regression_model(tmp_path)
    config = TuneConfig(**{**_FAST, "budget_minutes": 0.01}, max_accuracy_drop=50.0)
    result = tune_model(model, tmp_path / "out", data, data, config=config)
    report = json.loads(result.report_path.read_text())
    assert report["fp32"]["accuracy"] is None
    measured = [c for c in report["candidates"] if c.get("reason") not in (None, "reference")
                and c.get("latency_ratio") is not None]
    assert measured and all(c["reason"].startswith("relative error ") for c in measured)
    assert all(c["accuracy"] is None for c in report["candidates"])
    int8 = [c for c in measured if c["quantization"] is not None]
    assert int8 and all(c["accepted"] for c in int8)  # within 50 % (0 %: test_agreement's)
    # each candidate's loss is its relative error (not a top-1 agreement of 100 %)
    fp32 = next(c for c in report["candidates"] if c["name"] == "fp32")
    assert fp32["relative_error"] == 0.0 and fp32["agreement"] is None
    for c in measured:
        assert c["agreement"] is None
        assert f"relative error {c['relative_error']:.2f}%" in c["reason"]
    table = format_candidates(result.candidates, result.winner)
    assert "rel err %" in table.splitlines()[0] and "agree %" not in table
