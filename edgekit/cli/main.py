"""The ``edgekit`` command line. It only parses options and calls the stage functions.

User errors (:class:`edgekit.errors.EdgekitError`) print ``error: ...`` and ``hint: ...`` and
exit 1; usage errors exit 2 (click's convention); bugs keep their traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EdgekitError

__all__ = ["main", "cli"]


class _Group(click.Group):
    """A click group that turns EdgekitError into ``error: ...`` + exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: Keras model -> fast, small, validated ONNX for edge devices.

    \b
    Typical flow:
      edgekit train image_cnn -o model.keras --data ../shared/data/fashion-mnist
      edgekit export model.keras -o out/ --quantize int8 --calibration calib.npz
      edgekit run out/model.int8.onnx image.png
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before any TensorFlow import
    cli.main(args=argv, prog_name="edgekit")


def _echo_json(obj: Any) -> None:
    from edgekit.io.artifacts import to_json

    click.echo(to_json(obj))




# ---------------------------------------------------------------------------------------------
# export / inspect  (edgekit.convert.export, edgekit.io.onnxfile)
# ---------------------------------------------------------------------------------------------
# >>> export section
from edgekit.cli.quantize_options import (  # noqa: E402
    config_from_options,
    echo_variant,
    quantization_options,
    status,
)


@cli.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", "outdir", type=click.Path(path_type=Path), required=True,
              help="Output folder; gets <stem>.onnx and <stem>.report.json.")
@click.option("--opset", type=int, default=17, show_default=True,
              help="ONNX opset (13..18; tf2onnx 1.17 stops at 18).")
@click.option("--validation-data", type=click.Path(path_type=Path), default=None,
              help="NPZ/NPY inputs to validate on (arrays named after the model inputs, or x; "
              "optional y). Default: seeded synthetic inputs.")
@click.option("--validation-samples", type=int, default=256, show_default=True,
              help="Synthetic samples, or cap on samples read from --validation-data (0 = all).")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Largest max-abs difference from Keras that passes validation.")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="Class labels: a text file with one label per line, or a JSON list.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of synthetic inputs.")
@click.option("--output-kind", "output_kinds", multiple=True,
              type=click.Choice(["probabilities", "logits", "regression", "other"]),
              help="What each output holds (repeat once per output). Default: read from the "
              "final Keras activation (softmax/sigmoid = probabilities; a linear end = logits "
              "when labels or an edgekit recipe say it classifies, else other).")
@click.option("--custom-objects", "custom_objects", multiple=True, metavar="MODULE.py",
              help="Python file (or module name) defining the model's custom layers; "
              "imported before loading (repeatable).")
@click.option("--strict", is_flag=True,
              help="Fail when validation ran on degenerate outputs (same class or saturated "
              "for most samples) instead of warning.")
@click.option("--no-simplify", "no_simplify", is_flag=True,
              help="Keep the graph exactly as tf2onnx made it (no edgekit clean-ups).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@quantization_options
def export_cmd(model: Path, outdir: Path, opset: int, validation_data: Path | None,
               validation_samples: int, atol: float, labels_file: Path | None, seed: int,
               output_kinds: tuple[str, ...], custom_objects: tuple[str, ...], strict: bool,
               no_simplify: bool, force: bool, **qopts: Any) -> None:
    """Export a Keras MODEL (.keras, .h5 or SavedModel folder) to validated ONNX.

    Validation runs on --validation-data, else on --calibration data, else on seeded
    synthetic inputs drawn in the range the model's preprocessing layers expect.
    """
    from edgekit.convert.export import ExportConfig, export_model, read_labels

    labels = read_labels(labels_file) if labels_file else None
    config = ExportConfig(opset=opset, atol=atol, validation_samples=validation_samples,
                          labels=labels, seed=seed, force=force,
                          output_kinds=list(output_kinds) or None, strict=strict,
                          simplify=not no_simplify)
    if validation_data is None and qopts.get("calibration") is not None:
        validation_data = qopts["calibration"]
    qconfig = config_from_options(**qopts)
    hook = None
    if qconfig is not None:
        from edgekit.quantize.core import export_hook

        hook = export_hook(qconfig, qopts["calibration"], qopts["eval_data"], status)
    result = export_model(model, outdir, config, validation_data=validation_data,
                          extra_outputs=hook, custom_objects=list(custom_objects) or None)
    click.echo(f"wrote {result.onnx_path} ({result.onnx_path.stat().st_size / 1024:.1f} KiB)")
    click.echo(f"validation: {result.validation.summary()} (atol {atol:g}) - passed")
    for warning in result.validation.warnings:
        click.echo(f"warning: {warning}; agreement on such inputs proves little "
                   "(validate on real data with --validation-data; --strict fails here)", err=True)
    for variant in result.report.get("variants", {}).values():
        echo_variant(variant, outdir)
    click.echo(f"report: {result.report_path}")


@cli.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def inspect_cmd(model: Path, as_json: bool) -> None:
    """Show an ONNX MODEL's inputs, outputs, opset, ops, parameters, size and metadata."""
    from edgekit.io.onnxfile import format_info, inspect_model

    info = inspect_model(model)
    if as_json:
        _echo_json(info.to_dict())
    else:
        click.echo(format_info(info))
# <<< export section


# ---------------------------------------------------------------------------------------------
# train  (edgekit.recipes)
# ---------------------------------------------------------------------------------------------
# >>> train section
@cli.command("train")
@click.argument("recipe", type=click.Choice(["image_cnn", "tabular_mlp", "text_lstm"]))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Where to save the trained model (.keras, with its edgekit metadata).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="image_cnn: folder of IDX gz files or mnist.npz; tabular_mlp: CSV (default: "
              "breast cancer); text_lstm: TSV/CSV of label and text.")
@click.option("--label", default=None, help="Class column of a CSV (tabular_mlp).")
@click.option("--epochs", type=int, default=None, help="Epochs (recipe default: 10/60/5).")
@click.option("--batch-size", type=int, default=None, help="Batch size (recipe default).")
@click.option("--optimizer", type=click.Choice(["adam", "rmsprop", "sgd"]), default="adam",
              show_default=True)
@click.option("--learning-rate", type=float, default=0.001, show_default=True)
@click.option("--activation", type=click.Choice(["relu", "tanh", "sigmoid"]), default=None,
              help="Hidden activation (default: relu; tanh for the text LSTM).")
@click.option("--hidden", type=int, default=32, show_default=True,
              help="Hidden units (tabular_mlp).")
@click.option("--validation-split", type=float, default=0.1, show_default=True)
@click.option("--test-split", type=float, default=0.2, show_default=True,
              help="Held-out test fraction for data without a test set (CSV, text).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Use at most N train and N test examples.")
@click.option("--grid", multiple=True, metavar="NAME=V1,V2",
              help="Grid-search a hyper-parameter (repeatable), e.g. optimizer=adam,rmsprop.")
@click.option("--cv", type=int, default=None, help="Cross-validation folds for --grid.")
@click.option("--grid-json", type=click.Path(path_type=Path), default=None,
              help="Where the grid table goes (default: OUT.grid.json).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_cmd(recipe: str, output: Path, data: Path | None, label: str | None,
              epochs: int | None, batch_size: int | None, optimizer: str, learning_rate: float,
              activation: str | None, hidden: int, validation_split: float, test_split: float,
              seed: int, limit: int | None, grid: tuple[str, ...], cv: int | None,
              grid_json: Path | None, force: bool, quiet: bool) -> None:
    """Train a RECIPE (image_cnn, tabular_mlp, text_lstm) and save OUT.keras."""
    import sys

    from edgekit.recipes import GridResult, TrainConfig, train_recipe

    verbose = 0 if quiet else (1 if sys.stdout.isatty() else 2)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                         learning_rate=learning_rate, activation=activation, hidden=hidden,
                         validation_split=validation_split, test_split=test_split, seed=seed,
                         limit=limit, verbose=verbose)
    if not grid:
        result = train_recipe(recipe, config, data=data, output=output, force=force, label=label)
        click.echo(result.summary())
        return
    from edgekit.recipes import parse_grid
    from edgekit.recipes.train import n_fits

    table = parse_grid(grid)
    with click.progressbar(length=n_fits(table, cv), label="grid search", hidden=quiet,
                           show_pos=True, file=sys.stderr) as bar:
        res = train_recipe(recipe, config, data=data, output=output, force=force, label=label,
                           grid=table, cv=cv, grid_json=grid_json,
                           on_step=lambda _p: bar.update(1))
    assert isinstance(res, GridResult) and res.final is not None
    click.echo(res.table())
    click.echo(f"best: {res.best}  (table: {res.json_path})")
    click.echo(res.final.summary())
# <<< train section


# ---------------------------------------------------------------------------------------------
# run / serve  (edgekit.runtime.model, edgekit.serve)
# ---------------------------------------------------------------------------------------------
# >>> runtime section
@cli.command("run")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option("--text", help="Raw text to classify (text models), instead of INPUT.")
@click.option(
    "--provider", default="auto", show_default=True, help="cpu, cuda, coreml, ... or auto."
)
@click.option("--fallback", is_flag=True, help="Fall back to the next provider if unavailable.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def _run_command(
    model: Path,
    input_path: Path | None,
    text: str | None,
    provider: str,
    fallback: bool,
    top_k: int,
    as_json: bool,
) -> None:
    """Predict with MODEL (.onnx/.ort) on INPUT: a .npy/.npz array or an image file.

    Images are resized and greyscaled as the model's metadata says; the stored
    preprocessing is applied. Prints the top-k labels and probabilities.
    """
    from edgekit.runtime.model import format_predictions, predict_input

    report = predict_input(
        model, input_path, text=text, provider=provider, fallback=fallback, top_k=top_k
    )
    if as_json:
        _echo_json(report)
    else:
        click.echo(format_predictions(report))


@cli.command("serve")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; a non-loopback one without --api-key prints a warning.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--provider", default="auto", show_default=True)
@click.option("--fallback", is_flag=True, help="Fall back to the next provider if unavailable.")
@click.option("--threads", type=click.IntRange(min=0),
              help="Intra-op threads per worker [default: cores/workers with --workers or "
                   "--batching (one less with batching), else the model's stored setting].")
@click.option(
    "--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True
)
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most samples per request and per merged micro-batch.")
@click.option("--batching/--no-batching", default=False, show_default=True,
              help="Merge concurrent requests into one model call (dynamic micro-batching).")
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long a micro-batch waits for requests still arriving.")
@click.option("--header-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds for a request's headers to arrive (0: no limit).")
@click.option("--body-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds for a request's body to arrive (0: no limit).")
@click.option("--keep-alive-timeout", type=click.FloatRange(min=0), default=5.0,
              show_default=True, help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-connections", type=click.IntRange(min=1), default=None,
              help="Open connections per worker [default: 1000, below the open-file limit].")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests handled at once per worker; more get 503 + Retry-After.")
@click.option("--api-key", envvar="EDGEKIT_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' (or set EDGEKIT_API_KEY).")
@click.option("--ssl-certfile", type=click.Path(path_type=Path), default=None,
              help="PEM certificate: serve HTTPS.")
@click.option("--ssl-keyfile", type=click.Path(path_type=Path), default=None,
              help="PEM private key of --ssl-certfile.")
@click.option("--name", "model_name", default=None,
              help="Model name under /v2/models/ [default: the file's stem].")
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def _serve_command(
    model: Path,
    max_body_mb: float,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    **settings: Any,
) -> None:
    """Serve MODEL over HTTP with uvicorn.

    \b
    POST /predict, GET /health, GET /metadata, GET /metrics (Prometheus), and the
    Open Inference Protocol (KServe V2): GET /v2/health/ready, GET /v2/models/NAME,
    POST /v2/models/NAME/infer (e.g. with tritonclient).
    """
    from edgekit.serve import ServeConfig, serve

    config = ServeConfig(
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        **settings,
    )
    serve(model, config)


@cli.command("package")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--triton", "repo", type=click.Path(path_type=Path), required=True,
              help="Triton model repository folder to write (KServe manifest beside it).")
@click.option("--name", default=None, help="Model name [default: the file's stem].")
@click.option("--max-batch", type=click.IntRange(min=0), default=32, show_default=True,
              help="Triton max_batch_size (0: no batching).")
@click.option("--max-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Dynamic batching: max_queue_delay_microseconds.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances (instance_group count).")
@click.option("--gpu", is_flag=True, help="Instances on GPUs (KIND_GPU) instead of CPUs.")
@click.option("--storage-uri", default=None,
              help="KServe storageUri of the repository [default: a pvc:// placeholder].")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def _package_command(model: Path, repo: Path, force: bool, as_json: bool, **options: Any) -> None:
    """Package MODEL (.onnx) for Triton Inference Server and KServe.

    \b
    Writes REPO/NAME/config.pbtxt (dynamic batch dims, dynamic batching),
    REPO/NAME/1/model.onnx, REPO/NAME/labels.txt (when the model has labels)
    and REPO/NAME.kserve.yaml (an InferenceService with protocolVersion v2).
    """
    from edgekit.serve.package import PackageConfig, package_triton

    result = package_triton(model, repo, PackageConfig(**options), force=force)
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(result.summary())


# <<< runtime section


# ---------------------------------------------------------------------------------------------
# quantize  (edgekit.quantize.core, edgekit.quantize.ort_format)
# ---------------------------------------------------------------------------------------------
# >>> quantize section
@cli.command("quantize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", "outdir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the model's folder, beside the fp32 model).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@quantization_options
def quantize_cmd(model: Path, outdir: Path | None, force: bool, **qopts: Any) -> None:
    """Build an int8/dynamic/fp16 variant of an fp32 ONNX MODEL made elsewhere (default
    --quantize auto) and add its section to <stem>.report.json."""
    from edgekit.quantize.core import quantize_file

    if qopts["quantize"] == "none":
        raise click.UsageError("--quantize none builds nothing")
    config = config_from_options(**qopts, default_mode="auto")
    result, report_path = quantize_file(model, outdir, config, qopts["calibration"],
                                        qopts["eval_data"], force=force, progress=status)
    echo_variant(result.to_dict(), result.path.parent)
    click.echo(f"report: {report_path}")
# <<< quantize section


# ---------------------------------------------------------------------------------------------
# bench / compare / check / tune  (edgekit.measure, edgekit.check, edgekit.tune)
# ---------------------------------------------------------------------------------------------
# >>> bench section
def _progress_bar(label: str, quiet: bool) -> Any:
    import sys

    return click.progressbar(length=1000, label=label, hidden=quiet, file=sys.stderr,
                             show_percent=True)


def _bar_updater(bar: Any) -> Any:
    state = {"done": 0}

    def update(frac: float) -> None:
        n = int(1000 * min(1.0, max(0.0, frac)))
        if n > state["done"]:
            bar.update(n - state["done"])
            state["done"] = n

    return update


@cli.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--provider", default="cpu", show_default=True,
              help="onnxruntime execution provider of .onnx models (auto, cpu, cuda ...).")
@click.option("--threads", type=int, default=None,
              help="Intra-op threads of every runtime (default: each library's default).")
@click.option("--batch", "batch", default="1", show_default=True,
              help="Comma-separated batch sizes, e.g. 1,8,32.")
@click.option("--warmup", type=int, default=10, show_default=True,
              help="Untimed calls per model and batch size.")
@click.option("--runs", type=int, default=None, help="Timed calls per model and batch size "
              "(default 100).")
@click.option("--duration", type=float, default=None,
              help="Seconds of timing per batch size instead of --runs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the results (with every latency sample) to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write latency box plots to this PNG (needs edgekit[plot]).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def bench_cmd(models: tuple[Path, ...], provider: str, threads: int | None, batch: str,
              warmup: int, runs: int | None, duration: float | None, json_path: Path | None,
              plot_path: Path | None, quiet: bool) -> None:
    """Measure MODELS (.onnx, .ort, .tflite, .keras) interleaved; ratios vs the first one."""
    from edgekit.errors import InputError
    from edgekit.io.artifacts import atomic_write_json
    from edgekit.measure.bench import BenchConfig, bench_models, plot_latencies

    if runs is not None and duration is not None:
        raise InputError("give --runs or --duration, not both")
    try:
        sizes = tuple(int(b) for b in batch.split(",") if b.strip())
    except ValueError as exc:
        raise InputError(f"--batch must be comma-separated integers, got {batch!r}") from exc
    config = BenchConfig(batches=sizes, warmup=warmup, runs=runs, duration=duration,
                         threads=threads, provider=provider)
    with _progress_bar("benchmarking", quiet) as bar:
        result = bench_models(list(models), config, on_progress=_bar_updater(bar))
    click.echo(result.table())
    click.echo(f"\n{result.machine['cpu']}, {result.machine['logical_cores']} logical cores; "
               f"ratios are p50 / p50 of {result.models[0].name}, measured interleaved")
    if json_path:
        atomic_write_json(json_path, result.to_dict(samples=True), force=True)
        click.echo(f"json: {json_path}")
    if plot_path:
        click.echo(f"plot: {plot_latencies(result.models, plot_path)}")


@cli.command("compare")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="NPZ/NPY calibration samples for the int8 variants (default: the evaluation "
              "samples).")
@click.option("--eval-data", type=click.Path(path_type=Path), default=None,
              help="NPZ/NPY evaluation samples with labels y for accuracy.")
@click.option("--accuracy-budget", type=float, default=1.0, show_default=True,
              help="Largest accepted accuracy drop vs Keras, in points.")
@click.option("--threads", type=int, default=None, help="Intra-op threads of every runtime.")
@click.option("--batch", type=int, default=1, show_default=True,
              help="Batch size of the latency measurement.")
@click.option("--runs", type=int, default=None, help="Timed calls per variant (default 100).")
@click.option("--duration", type=float, default=None,
              help="Seconds of timing instead of --runs.")
@click.option("--eval-samples", type=int, default=2000, show_default=True,
              help="Cap on evaluation samples (0 = all).")
@click.option("--keep", type=click.Path(path_type=Path), default=None,
              help="Keep the variant files in this folder.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the comparison to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write the latency plot to this PNG.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def compare_cmd(model: Path, calibration: Path | None, eval_data: Path | None,
                accuracy_budget: float, threads: int | None, batch: int, runs: int | None,
                duration: float | None, eval_samples: int, keep: Path | None,
                json_path: Path | None, plot_path: Path | None, quiet: bool) -> None:
    """Keras vs TFLite fp32/int8 vs ONNX fp32/int8/fp16 of MODEL, side by side."""
    import sys

    from edgekit.io.artifacts import atomic_write_json
    from edgekit.measure.compare import CompareConfig, compare_model

    config = CompareConfig(accuracy_budget=accuracy_budget, threads=threads, batch=batch,
                           runs=runs, duration=duration, eval_samples=eval_samples,
                           workdir=keep)

    def say(msg: str) -> None:
        if not quiet:
            click.echo(f"... {msg}", err=True)

    with _progress_bar("timing", quiet or not sys.stderr.isatty()) as bar:
        result = compare_model(model, calibration, eval_data, config, on_step=say,
                               on_progress=_bar_updater(bar))
    click.echo(result.table())
    if json_path:
        atomic_write_json(json_path, result.to_dict(), force=True)
        click.echo(f"json: {json_path}")
    if plot_path:
        click.echo(f"plot: {result.plot(plot_path)}")


@cli.command("check")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), required=True,
              help="Baseline JSON (written by --update-baseline).")
@click.option("--eval-data", type=click.Path(path_type=Path), default=None,
              help="NPZ/NPY evaluation samples with labels y (accuracy is checked with it).")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True,
              help="Largest accepted accuracy drop, in points.")
@click.option("--max-latency-increase", type=float, default=25.0, show_default=True,
              help="Largest accepted growth of the latency ratio to the reference, in percent.")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="ONNX model to time against (default: a built-in MatMul graph).")
@click.option("--batch", type=int, default=1, show_default=True,
              help="Batch size (baseline creation; checks reuse the baseline's).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="Threads (baseline creation; checks reuse the baseline's).")
@click.option("--max-time", type=float, default=20.0, show_default=True,
              help="Most seconds of latency timing.")
@click.option("--update-baseline", is_flag=True, help="Measure and (over)write the baseline.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check_cmd(model: Path, baseline: Path, eval_data: Path | None, max_accuracy_drop: float,
              max_latency_increase: float, reference: Path | None, batch: int, threads: int,
              max_time: float, update_baseline: bool, as_json: bool) -> None:
    """Exit 1 when MODEL's accuracy or latency regressed against the BASELINE."""
    from edgekit.check.regression import CheckConfig, check_model

    config = CheckConfig(max_accuracy_drop=max_accuracy_drop,
                         max_latency_increase=max_latency_increase, batch=batch,
                         threads=threads, reference=reference, max_time=max_time)
    result = check_model(model, baseline, eval_data, config, update_baseline=update_baseline)
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(result.report())
    if result.exit_code:
        raise SystemExit(result.exit_code)
# <<< bench section


# ---------------------------------------------------------------------------------------------
# tune  (edgekit.tune.search)
# ---------------------------------------------------------------------------------------------
# >>> tune section
@cli.command("tune")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", "outdir", type=click.Path(path_type=Path), required=True,
              help="Output folder; gets <stem>.tuned.onnx and <stem>.tune.json.")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="Calibration data: .npz/.npy, an IDX folder, or a label/text table.")
@click.option("--eval-data", type=click.Path(path_type=Path), default=None,
              help="Labelled data for the accuracy gate (default: top-1 agreement with fp32 "
              "on the calibration data).")
@click.option("--max-accuracy-drop", type=float, default=0.5, show_default=True,
              help="Accuracy budget in points vs fp32.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Intra-op threads the model will run with.")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True,
              help="Batch size latency is measured at.")
@click.option("--budget", "budget_minutes", type=float, default=10.0, show_default=True,
              help="Minutes after which no new candidate is started.")
@click.option("--calibration-samples", type=click.IntRange(1), default=256, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def tune_cmd(model: Path, outdir: Path, calibration: Path | None, eval_data: Path | None,
             max_accuracy_drop: float, threads: int, batch: int, budget_minutes: float,
             calibration_samples: int, force: bool) -> None:
    """Search quantization/graph/session settings for the fastest MODEL within the accuracy
    budget; latency is measured as a ratio against fp32 in the same run."""
    from edgekit.tune.search import TuneConfig, format_candidates, tune_model

    config = TuneConfig(max_accuracy_drop=max_accuracy_drop, threads=threads, batch=batch,
                        budget_minutes=budget_minutes, calibration_samples=calibration_samples,
                        force=force)
    import sys

    with _progress_bar("tuning", quiet=False) as bar:
        bar.item_show_func = lambda item: item
        interactive = sys.stderr.isatty()

        def say(message: str) -> None:
            if interactive:  # the bar names the current step; the full log is in the report
                if not message.startswith(" "):
                    bar.current_item = message[:60]
                    bar.render_progress()
            else:
                click.echo(message, err=True)

        result = tune_model(model, outdir, calibration, eval_data, config, progress=say,
                            on_progress=_bar_updater(bar))
    click.echo(format_candidates(result.candidates, result.winner))
    click.echo(f"\n{result.report['why']}")
    click.echo(f"wrote {result.model_path} and {result.report_path}")
# <<< tune section


if __name__ == "__main__":  # pragma: no cover
    main()
