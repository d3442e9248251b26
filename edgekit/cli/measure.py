"""``edgekit bench``, ``compare`` and ``check`` (edgekit.measure, edgekit.check).

All three print a table, or with ``--json`` the result as JSON on stdout; ``--report FILE``
writes the full result (bench: with every latency sample) to a JSON file and ``--plot FILE``
a PNG; existing files are kept unless ``--force``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from edgekit.cli.app import (
    bar_updater,
    batch_option,
    command,
    deprecated_alias,
    echo_json,
    engine_option,
    eval_data_option,
    existing_path,
    force_option,
    json_option,
    max_accuracy_drop_option,
    parse_batches,
    progress_bar,
    refuse_overwrite,
    status,
    threads_option,
)

__all__ = ["bench_cmd", "compare_cmd", "check_cmd"]

_JSON_HELP = "Print the result as JSON on stdout (instead of the table)."
_REPORT_HELP = "Write the full result to this JSON file."


def _timing_options(f: Any) -> Any:
    f = click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
                     help="Seconds of timing per batch size instead of --runs.")(f)
    return click.option("--runs", type=click.IntRange(1), default=None,
                        help="Timed calls per model and batch size (default 100).")(f)


def _output_options(f: Any) -> Any:
    f = force_option("Overwrite existing --report/--plot files.")(f)
    f = click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
                     help="Write latency box plots to this PNG (needs edgekit[plot]).")(f)
    f = click.option("--report", "report_path", type=click.Path(path_type=Path), default=None,
                     help=_REPORT_HELP)(f)
    return json_option(_JSON_HELP)(f)


def _echo_written(what: str, path: Path, as_json: bool) -> None:
    """``what: path``, on stderr when stdout carries JSON."""
    click.echo(f"{what}: {path}", err=as_json)


@command("bench")
@click.argument("models", nargs=-1, required=True, type=existing_path())
@click.option("--provider", default="cpu", show_default=True,
              help="onnxruntime execution provider of .onnx models (auto, cpu, cuda ...).")
@engine_option("onnxruntime", ("auto", "all"),
               help="Engine of .onnx models: a registered one (onnxruntime, openvino ...); "
               "auto: the one a tuned model stores; all: one row per installed engine.")
@threads_option()
@click.option("--batch", "batches", default="1", show_default=True, callback=parse_batches,
              help="Comma-separated batch sizes, e.g. 1,8,32.")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True,
              help="Untimed calls per model and batch size.")
@_timing_options
@click.option("--profile", is_flag=True,
              help="Then profile each ONNX row at the first batch size: time per op kind "
              "(onnxruntime's profiler, OpenVINO's performance counters), unfused Q/DQ nodes, "
              "and why a variant is or is not faster than its fp32 model (x.int8.onnx vs "
              "x.onnx).")
@_output_options
def bench_cmd(models: tuple[Path, ...], provider: str, engine: str, threads: int | None,
              batches: tuple[int, ...], warmup: int, runs: int | None, duration: float | None,
              profile: bool, as_json: bool, report_path: Path | None, plot_path: Path | None,
              force: bool) -> None:
    """Measure MODELS (.onnx, .ort, .tflite, .keras) interleaved; ratios vs the first one."""
    from edgekit.io.artifacts import atomic_write_json
    from edgekit.measure.bench import BenchConfig, bench_models
    from edgekit.measure.plots import plot_latencies

    if runs is not None and duration is not None:
        raise click.UsageError("give --runs or --duration, not both")
    refuse_overwrite(force, report_path, plot_path)
    config = BenchConfig(batches=batches, warmup=warmup, runs=runs, duration=duration,
                         threads=threads, provider=provider, engine=engine,
                         profile=profile)
    with progress_bar("benchmarking") as bar:
        result = bench_models(list(models), config, on_progress=bar_updater(bar))
    if as_json:
        echo_json(result.to_dict(samples=False))
    else:
        click.echo(result.table())
        click.echo(f"\n{result.machine['cpu']}, {result.machine['logical_cores']} logical "
                   f"cores; ratios are p50 / p50 of {result.models[0].name}, measured "
                   "interleaved")
        if result.profile is not None:
            click.echo(f"\n{result.profile.table()}")
    if report_path:
        atomic_write_json(report_path, result.to_dict(samples=True), force=True)
        _echo_written("report", report_path, as_json)
    if plot_path:
        _echo_written("plot", plot_latencies(result.models, plot_path), as_json)


@command("compare")
@click.argument("model", type=existing_path())
@click.option("--calibration", type=existing_path(), default=None,
              help="Calibration data for the int8 variants: .npz/.npy, an IDX folder (its "
              "train split), ONNX test_data_set_N folders, an image folder or a text table "
              "(default: the evaluation samples).")
@eval_data_option()
@max_accuracy_drop_option(1.0, help="Largest accepted accuracy drop vs Keras, in points.")
@deprecated_alias("--accuracy-budget", "max_accuracy_drop", type=click.FloatRange(0))
@threads_option()
@batch_option(help="Batch size of the latency measurement.")
@_timing_options
@click.option("--eval-samples", type=click.IntRange(0), default=2000, show_default=True,
              help="Cap on evaluation samples (0 = all).")
@click.option("--keep", type=click.Path(path_type=Path), default=None,
              help="Keep the variant files in this folder.")
@_output_options
def compare_cmd(model: Path, calibration: Path | None, eval_data: Path | None,
                max_accuracy_drop: float, threads: int | None, batch: int, runs: int | None,
                duration: float | None, eval_samples: int, keep: Path | None, as_json: bool,
                report_path: Path | None, plot_path: Path | None, force: bool) -> None:
    """Keras vs TFLite fp32/int8 vs ONNX fp32/int8/fp16 of MODEL, side by side."""
    from edgekit.io.artifacts import atomic_write_json
    from edgekit.measure.compare import CompareConfig, compare_model

    if runs is not None and duration is not None:
        raise click.UsageError("give --runs or --duration, not both")
    keep_used = keep is not None and keep.is_dir() and any(keep.iterdir())
    refuse_overwrite(force, report_path, plot_path, keep if keep_used else None)
    config = CompareConfig(accuracy_budget=max_accuracy_drop, threads=threads, batch=batch,
                           runs=runs, duration=duration, eval_samples=eval_samples,
                           workdir=keep)

    with progress_bar("timing", hidden=not sys.stderr.isatty()) as bar:
        result = compare_model(model, calibration, eval_data, config, progress=status,
                               on_progress=bar_updater(bar))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.table())
    if report_path:
        atomic_write_json(report_path, result.to_dict(), force=True)
        _echo_written("report", report_path, as_json)
    if plot_path:
        _echo_written("plot", result.plot(plot_path), as_json)


@command("check")
@click.argument("model", type=existing_path())
@click.option("--baseline", type=click.Path(path_type=Path), required=True,
              help="Baseline JSON (written by --update-baseline).")
@eval_data_option()
@max_accuracy_drop_option(1.0)
@click.option("--max-latency-increase", type=click.FloatRange(0), default=25.0,
              show_default=True, metavar="PCT",
              help="Largest accepted growth of the latency ratio to the reference, in percent.")
@click.option("--reference", type=existing_path(), default=None,
              help="ONNX model to time against (default: a built-in MatMul graph).")
@batch_option(help="Batch size (baseline creation; checks reuse the baseline's).")
@threads_option(default=1, help="Threads (baseline creation; checks reuse the baseline's).")
@click.option("--max-time", type=click.FloatRange(0, min_open=True), default=20.0,
              show_default=True, help="Most seconds of latency timing.")
@click.option("--update-baseline", is_flag=True,
              help="Measure and write the baseline (an existing one needs --force).")
@json_option(_JSON_HELP)
@force_option("Overwrite an existing baseline (--update-baseline).")
def check_cmd(model: Path, baseline: Path, eval_data: Path | None, max_accuracy_drop: float,
              max_latency_increase: float, reference: Path | None, batch: int, threads: int,
              max_time: float, update_baseline: bool, as_json: bool, force: bool) -> None:
    """Exit 1 when MODEL's accuracy or latency regressed against the BASELINE (exit 2 when the
    baseline or another input is missing)."""
    from edgekit.check.regression import CHECK_RATIO, CheckConfig, check_model

    if update_baseline:
        refuse_overwrite(force, baseline)
    elif not baseline.is_file():
        raise click.BadParameter(f"{baseline} does not exist; make it with --update-baseline "
                                 "(and commit it)", param_hint="'--baseline'")
    config = CheckConfig(max_accuracy_drop=max_accuracy_drop,
                         max_latency_increase=max_latency_increase, batch=batch,
                         threads=threads, reference=reference,
                         ratio=dataclasses.replace(CHECK_RATIO, max_seconds=max_time))
    with progress_bar("timing", hidden=not sys.stderr.isatty()) as bar:
        result = check_model(model, baseline, eval_data, config,
                             update_baseline=update_baseline, on_progress=bar_updater(bar))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.report())
    if result.exit_code:
        raise SystemExit(result.exit_code)
