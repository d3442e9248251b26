"""The command line as a whole: -q/-v everywhere, exit codes, --json, --force, quiet libraries,
the plots' contents and serve on a busy port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_models import make_image_model
from click.testing import CliRunner

from edgekit.cli.app import max_threads
from edgekit.cli.main import cli

pytestmark = pytest.mark.file_seconds(20)

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(cli.commands)


def invoke(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    np.save(d / "batch.npy", np.random.default_rng(0).integers(0, 256, (2, 28, 28), np.uint8))
    return {"a": make_image_model(d / "a.onnx"), "b": make_image_model(d / "b.onnx"),
            "npy": d / "batch.npy", "dir": d}


# -- one option set on every command -----------------------------------------------------------
def test_every_command_is_listed() -> None:
    assert set(COMMANDS) >= {"export", "quantize", "tune", "inspect", "run", "serve", "package",
                             "bench", "compare", "check", "train", "doctor"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_quiet_and_verbose(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    assert "-q, --quiet" in out and "-v, --verbose" in out


def test_quiet_and_verbose_together_is_a_usage_error(models: dict[str, Path]) -> None:
    code, _, err = invoke("inspect", models["a"], "-q", "-v")
    assert code == 2 and err.startswith("error: ") and "not both" in err


def test_one_name_per_concept_in_help() -> None:
    _, compare_help, _ = invoke("compare", "--help")
    assert "--max-accuracy-drop" in compare_help and "--accuracy-budget" not in compare_help
    assert "--report" in compare_help and "--json" in compare_help
    _, tune_help, _ = invoke("tune", "--help")
    calibration = tune_help[tune_help.index("--calibration "):tune_help.index("--eval-data")]
    assert "[required]" in calibration


# -- exit codes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "{a}", "--batch", "1,x"], "comma-separated integers"),
        (["bench", "{a}", "--batch", "0"], "batch sizes must be 1.."),
        (["bench", "{a}", "--threads", "-3"], "not in the range 1<=x<="),
        (["bench", "{a}", "--threads", "100000"], "not in the range 1<=x<="),
        (["bench", "{a}", "--threads", "1e9"], "not a valid integer"),
        (["serve", "{a}", "--threads", "100000"], "not in the range 0<=x<="),
        (["compare", "{a}", "--threads", "-1"], "not in the range 1<=x<="),
        (["tune", "{a}", "-o", "{dir}/t", "--calibration", "{npy}", "--threads", "0"], "range"),
        (["check", "{a}", "--baseline", "{dir}/none.json"], "make it with --update-baseline"),
        (["bench", "{dir}/missing.onnx"], "does not exist"),
        (["run", "{dir}/missing.onnx", "{npy}"], "does not exist"),
        (["tune", "{a}", "-o", "{dir}/t"], "Missing option '--calibration'"),
    ],
)
def test_usage_errors_exit_2(models: dict[str, Path], args: list[str], message: str) -> None:
    code, out, err = invoke(*(a.format(**models) for a in args))
    assert code == 2, out + err
    assert err.startswith("error: ") and message in err and "hint: see 'edgekit " in err
    assert "Traceback" not in err


def test_threads_range_follows_the_cores() -> None:
    assert max_threads() == min(1024, 4 * (os.cpu_count() or 1))
    _, out, _ = invoke("bench", "--help")
    assert f"1<=x<={max_threads()}" in out


# -- --json, --report, --plot, --force ---------------------------------------------------------
def test_bench_json_report_plot_and_force(models: dict[str, Path]) -> None:
    d = models["dir"] / "bench"
    d.mkdir()
    report, plot = d / "b.json", d / "b.png"
    args = ["bench", models["a"], models["b"], "--runs", "5", "--warmup", "1", "--threads", "1",
            "--batch", "1,2"]
    code, out, err = invoke(*args, "--json", "--report", report, "--plot", plot, "-q")
    assert code == 0, err
    data = json.loads(out)  # stdout is JSON only; the file lines went to stderr
    assert [m["name"] for m in data["models"]] == ["a.onnx", "b.onnx"]
    assert data["config"]["batches"] == [1, 2]
    assert f"report: {report}" in err and f"plot: {plot}" in err
    assert "samples_ms" in json.loads(report.read_text())["models"][0]["latency"]["1"]
    assert plot.stat().st_size > 5000
    before = report.read_bytes(), plot.read_bytes()
    for existing in ("--report", "--plot"):
        target = report if existing == "--report" else plot
        code, _, err = invoke(*args, existing, target)
        assert code == 1 and err.startswith("error: ") and "--force" in err
    assert (report.read_bytes(), plot.read_bytes()) == before
    code, out, err = invoke(*args, "--report", report, "--force")
    assert code == 0 and "| a.onnx" in out and f"report: {report}" in out
    assert report.read_bytes() != before[0]


def test_compare_refuses_existing_outputs_before_work(models: dict[str, Path]) -> None:
    report = models["dir"] / "compare.json"
    report.write_text("{}")
    code, _, err = invoke("compare", models["a"], "--accuracy-budget", "0.5", "--report", report)
    assert code == 1 and "exists" in err and "--force" in err
    assert "--accuracy-budget is deprecated; use --max-accuracy-drop" in err
    assert report.read_text() == "{}"


@pytest.mark.parametrize("command", ["inspect", "run"])
def test_json_is_parseable(models: dict[str, Path], command: str) -> None:
    args = [command, models["a"]] + ([models["npy"]] if command == "run" else [])
    code, out, _ = invoke(*args, "--json")
    assert code == 0
    data = json.loads(out)
    assert isinstance(data, dict) and data


def test_bench_quiet_prints_no_progress(models: dict[str, Path]) -> None:
    code, out, err = invoke("bench", models["a"], "--runs", "3", "--warmup", "0", "-q")
    assert code == 0 and "| a.onnx" in out
    assert err == ""


# -- plots: units, median labels above the boxes, ratio, recommendation and budget ------------
def _texts(fig: object) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def bench_result(models: dict[str, Path]) -> object:
    from edgekit.measure.bench import BenchConfig, bench_models

    return bench_models([models["a"], models["b"]], BenchConfig(runs=20, warmup=2, threads=1),
                        names=["keras", "onnx-int8"])


def test_latency_figure_contents(bench_result: object, tmp_path: Path) -> None:
    from edgekit.measure.plots import latency_figure, plot_latencies

    models = bench_result.models  # type: ignore[attr-defined]
    fig = latency_figure(models)
    ax = fig.axes[0]
    assert ax.get_ylabel().startswith("latency per call (ms)")
    assert "ratio = p50 / p50 of keras" in ax.get_title()
    notes = list(ax.texts)
    assert len(notes) == 2
    ratio = models[1].latency[1].ratio
    assert notes[0].get_text().endswith("reference")
    assert f"{ratio:.2f}x the reference" in notes[1].get_text()
    for k, (note, m) in enumerate(zip(notes, models, strict=True)):
        samples = np.asarray(m.latency[1].samples_ms)
        assert f"p50 {np.median(samples):.3g} ms" in note.get_text()
        x, y = note.xy
        assert x == k + 1 and y >= np.percentile(samples, 75)  # above the box, not on it
        assert note.get_va() == "bottom"
    out = plot_latencies(models, tmp_path / "lat.png")
    assert out.stat().st_size > 5000


def test_compare_figure_marks_recommendation_and_budget(bench_result: object) -> None:
    from edgekit.measure.compare_report import CompareResult, VariantRow
    from edgekit.measure.plots import compare_figure

    rows = [VariantRow("keras", "keras", "fp32", size_bytes=4096, accuracy=90.0,
                       agreement=100.0, within_budget=True),
            VariantRow("onnx-int8", "onnx", "int8", size_bytes=2048, accuracy=89.5,
                       agreement=99.0, within_budget=True)]
    result = CompareResult("m.keras", rows, recommended="onnx-int8", smallest="onnx-int8",
                           budget=1.0, labelled=True, n_eval=200,
                           bench=bench_result)  # type: ignore[arg-type]
    fig = compare_figure(result)
    texts = _texts(fig)
    assert any("recommended: onnx-int8" in t for t in texts)
    assert any("budget: Keras - 1 pt" in t for t in texts)
    lat, acc = fig.axes
    ticks = [t.get_text() for t in lat.get_xticklabels()]
    assert "(recommended)" in ticks[1] and "(recommended)" not in ticks[0]
    assert lat.get_ylabel().startswith("latency per call (ms)")
    assert acc.get_ylabel() == "accuracy (%)"
    budget_line = [ln for ln in acc.get_lines() if ln.get_linestyle() == "--"]
    assert budget_line and budget_line[0].get_ydata()[0] == pytest.approx(89.0)
    bars = acc.patches
    assert bars[1].get_facecolor() != bars[0].get_facecolor()  # the recommended bar stands out
    assert any(t.get_text() == "89.5 %\nrecommended" for t in acc.texts)


# -- serve on a busy port ----------------------------------------------------------------------
def test_serve_busy_port_is_an_error_line(models: dict[str, Path]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = invoke("serve", models["a"], "--port", port)
    assert code == 1
    assert err.startswith(f"error: cannot bind 127.0.0.1:{port}") and "hint: " in err
    assert "--port" in err


# -- third-party log lines: silenced by default, shown with -v ---------------------------------
_OWN_PREFIXES = ("wrote ", "validation: ", "engines: ", "report: ", "... ", "note: ",
                 "warning: ")
_FOREIGN = ("tensorflow", "onednn", "absl", "warning: all log messages", "cuda", "tf2onnx",
            "i0000", "e0000", "w0000", "cpu_feature_guard", "traceback")


def _export(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> list[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "export",
                        str(ROOT / "models" / "fashion_cnn.keras"), "-o", str(tmp_path / "out"),
                        "--force", *extra], env={**environ, **(env or {})}, cwd=tmp_path,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert r.returncode == 0, r.stdout
    return [line for line in r.stdout.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("env", [{}, {"TF_CPP_MIN_LOG_LEVEL": "0"}], ids=["default", "tf-log-0"])
def test_export_prints_only_edgekit_lines(tmp_path: Path, env: dict[str, str]) -> None:
    lines = _export(tmp_path, env=env)
    assert lines[0].startswith("wrote ") and lines[-1].startswith("report: ")
    for line in lines:
        assert line.startswith(_OWN_PREFIXES), line
        assert not any(word in line.lower() for word in _FOREIGN), line


@pytest.mark.slow
def test_export_verbose_shows_library_lines(tmp_path: Path) -> None:
    lines = _export(tmp_path, "-v", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    foreign = [ln for ln in lines if not ln.startswith(_OWN_PREFIXES)]
    assert foreign, lines
    assert any("report: " in ln for ln in lines)
