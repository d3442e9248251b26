"""``edgekit tune`` (edgekit.tune)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.cli.app import (
    bar_updater,
    batch_option,
    command,
    echo_json,
    echo_package,
    engines_option,
    eval_data_option,
    existing_path,
    force_option,
    json_option,
    max_accuracy_drop_option,
    package_option,
    progress_bar,
    threads_option,
    verbosity,
)

__all__ = ["tune_cmd"]


@command("tune")
@click.argument("model", type=existing_path())
@click.option("-o", "--output", "outdir", type=click.Path(path_type=Path), required=True,
              help="Output folder; gets <stem>.tuned.onnx and <stem>.tune.json.")
@click.option("--calibration", type=existing_path(), required=True,
              help="Calibration data: .npz/.npy, an IDX folder, ONNX test_data_set_N "
              "folders, an image folder, or a label/text table.")
@eval_data_option(help="Labelled data for the accuracy gate (default: top-1 agreement with "
                  "fp32 on the calibration data).")
@max_accuracy_drop_option(0.5, help="Accuracy budget in points vs fp32.")
@threads_option(default=1, help="Most intra-op threads the model will run with. With more "
                "than one, the best candidates of a small model are also tried on fewer (the "
                "tuned file stores the count that won), with --batch above one the best of "
                "every engine is also tried with its batch split into one stream per thread, "
                "and each timing sample is the median of a short block of calls, so that idle "
                "pool threads of the model timed before do not slow it.")
@batch_option(help="Batch size latency is measured at.")
@click.option("--budget", "budget_minutes", type=click.FloatRange(0, min_open=True),
              default=10.0, show_default=True,
              help="Minutes after which no new candidate is started (the export's default "
              "variant and fp32 on every engine are always measured).")
@click.option("--calibration-samples", type=click.IntRange(1), default=256, show_default=True)
@engines_option("Comma-separated engines the tune measures (onnxruntime is always one) "
                "[default: every installed engine].")
@json_option("Print the tune report as JSON on stdout (instead of the table).")
@package_option("tune")
@force_option()
def tune_cmd(model: Path, outdir: Path, calibration: Path, eval_data: Path | None,
             max_accuracy_drop: float, threads: int, batch: int, budget_minutes: float,
             calibration_samples: int, engines: tuple[str, ...] | None, as_json: bool,
             package: Path | None, force: bool) -> None:
    """Search engine/quantization/graph/session settings for the fastest MODEL within the
    accuracy budget; latency is measured at --batch as a ratio against fp32 in the same run."""
    from edgekit.quantize import CalibrationConfig, QuantizationConfig
    from edgekit.tune.search import TuneConfig, format_candidates, tune_model

    base = QuantizationConfig(calibration=CalibrationConfig(samples=calibration_samples))
    config = TuneConfig(max_accuracy_drop=max_accuracy_drop, threads=threads, batch=batch,
                        budget_minutes=budget_minutes, quantization=base,
                        engines=engines, force=force)
    with progress_bar("tuning") as bar:
        bar.item_show_func = lambda item: item
        interactive = sys.stderr.isatty()

        def say(message: str) -> None:
            if verbosity.quiet:
                return
            if interactive:  # the bar names the current step; the full log is in the report
                if not message.startswith(" "):
                    bar.current_item = message[:60]
                    bar.render_progress()
            else:
                click.echo(message, err=True)

        result = tune_model(model, outdir, calibration, eval_data, config, progress=say,
                            on_progress=bar_updater(bar), package=package)
    if as_json:
        echo_json(result.report)
        return
    click.echo(format_candidates(result.candidates, result.winner))
    click.echo(f"\n{result.report['why']}")
    click.echo(f"wrote {result.model_path} and {result.report_path}")
    package_section = result.report.get("package")
    if isinstance(package_section, dict):
        echo_package(package_section)
