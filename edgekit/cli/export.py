"""``edgekit export``, ``inspect`` and ``quantize`` (edgekit.convert, edgekit.quantize)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgekit.cli.app import (
    command,
    echo_json,
    echo_package,
    existing_path,
    force_option,
    json_option,
    package_option,
    status,
)
from edgekit.cli.quantize_options import config_from_options, echo_variant, quantization_options
from edgekit.contract import scores_classes
from edgekit.runtime.engine_record import engines_line

if TYPE_CHECKING:
    from edgekit.exported import ExportHook, ExportOutcome
    from edgekit.inputs.prepare import DataFile

__all__ = ["export_cmd", "inspect_cmd", "quantize_cmd"]


@command("export")
@click.argument("model", type=existing_path())
@click.option("-o", "--output", "outdir", type=click.Path(path_type=Path), required=True,
              help="Output folder; gets <stem>.onnx and <stem>.report.json.")
@click.option("--opset", type=click.IntRange(1), default=17, show_default=True,
              help="ONNX opset (13..18; tf2onnx 1.17 stops at 18).")
@click.option("--validation-data", type=existing_path(), default=None,
              help="Inputs to validate on: NPZ/NPY (arrays named after the model inputs, or "
              "x; optional y), an IDX folder (test split), ONNX test_data_set_N folders or an "
              "image folder. Default: --calibration, else seeded synthetic inputs.")
@click.option("--validation-samples", type=click.IntRange(0), default=256, show_default=True,
              help="Synthetic samples, or cap on samples read from --validation-data (0 = all).")
@click.option("--atol", type=float, default=None,
              help="Absolute tolerance (default 1e-4): validation fails when an output element "
              "differs from Keras by more than atol + rtol x |keras value|.")
@click.option("--rtol", type=float, default=None,
              help="Relative tolerance (default 1e-3), see --atol; 0 = absolute only.")
@click.option("--labels", "labels_file", type=existing_path(), default=None,
              help="Class labels: a text file with one label per line, or a JSON list.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of synthetic inputs.")
@click.option("--output-kind", "output_kinds", multiple=True,
              type=click.Choice(  # edgekit.contract.OutputKind (the CLI imports no numpy)
                  ["probabilities", "independent", "logits", "regression", "other"]),
              help="What each output holds (repeat once per output). Default: read from the "
              "final Keras activation (softmax over the last axis = probabilities; sigmoid = "
              "independent; a linear end = logits when labels or an edgekit recipe say it "
              "classifies, else other).")
@click.option("--custom-objects", "custom_objects", multiple=True, metavar="MODULE.py",
              help="Python file (or module name) defining the model's custom layers; "
              "imported before loading (repeatable).")
@click.option("--input-spec", "input_specs", multiple=True, metavar="NAME:SHAPE[:DTYPE]",
              help="An input of the model's signature (repeat once per input): NAME, the "
              "SHAPE batch first with None for dynamic dimensions, and a numpy DTYPE (default "
              "float32; string for text), e.g. x:None,28,28,1:float32 or ids:None,16:int32. "
              "Needed for a subclassed model when Keras recorded no build shapes and no .npz "
              "data gives a sample; several inputs are passed to the model as a dict keyed by "
              "NAME, or as separate arguments where the NAMEs are its call's (call(x, y)). For "
              "a model with declared inputs it fixes their shapes/dtypes (same names and "
              "ranks).")
@click.option("--strict", is_flag=True,
              help="Fail when validation ran on degenerate outputs (same class or saturated "
              "for most samples) instead of warning.")
@click.option("--no-noise-envelope", "no_noise_envelope", is_flag=True,
              help="Fail on every element beyond atol + rtol, also those within Keras' own "
              "float noise (by default these pass; measured only when elements fail).")
@click.option("--no-simplify", "no_simplify", is_flag=True,
              help="Keep the graph exactly as tf2onnx made it (no edgekit clean-ups).")
@package_option("export")
@force_option()
@quantization_options
def export_cmd(model: Path, outdir: Path, opset: int, validation_data: Path | None,
               validation_samples: int, atol: float | None, rtol: float | None,
               labels_file: Path | None, seed: int, output_kinds: tuple[str, ...],
               custom_objects: tuple[str, ...], input_specs: tuple[str, ...], strict: bool,
               no_noise_envelope: bool, no_simplify: bool, package: Path | None, force: bool,
               **qopts: Any) -> None:
    """Export a Keras MODEL (.keras, .h5 or SavedModel folder) to validated ONNX.

    Validation runs on --validation-data, else on --calibration data, else on seeded
    synthetic inputs drawn in the range the model's preprocessing layers expect.
    """
    from edgekit.convert import ExportConfig, InputSpec, export_model, read_labels

    labels = read_labels(labels_file) if labels_file else None
    config = ExportConfig(opset=opset, validation_samples=validation_samples,
                          labels=labels, seed=seed, force=force,
                          output_kinds=list(output_kinds) or None, strict=strict,
                          noise_envelope=not no_noise_envelope, simplify=not no_simplify,
                          input_specs=[InputSpec.parse(s) for s in input_specs] or None)
    if atol is not None or rtol is not None:  # unset options keep ExportConfig's defaults
        config = replace(config, atol=config.atol if atol is None else atol,
                         rtol=config.rtol if rtol is None else rtol)
    classes = scores_classes(config.output_kinds)  # --output-kind regression: gate vs fp32
    hooks, calibration = _export_hooks(qopts, package, force, outdir, classes)
    # --calibration validates when no --validation-data: the same DataFile, read once
    data = validation_data if validation_data is not None else calibration
    result = export_model(model, outdir, config, validation_data=data,
                          extra_outputs=_chain(hooks) if hooks else None,
                          custom_objects=list(custom_objects) or None)
    _echo_export(result, outdir)


def _export_hooks(qopts: dict[str, Any], package: Path | None, force: bool,
                  outdir: Path, classes: bool = True,
                  ) -> tuple[list[ExportHook], DataFile | None]:
    """The ``--quantize`` and ``--package`` hooks of ``edgekit export`` and the calibration
    data they share (a :class:`~edgekit.inputs.prepare.DataFile`, read once; None: none);
    ``classes``: False for a first output declared regression."""
    calibration: DataFile | None = None
    if qopts.get("calibration") is not None:
        from edgekit.inputs.prepare import DataFile

        calibration = DataFile(qopts["calibration"], "calibration data")
    qconfig = config_from_options(**qopts)
    hooks: list[ExportHook] = []
    if qconfig is not None:
        from edgekit.quantize.core import export_hook

        hooks.append(export_hook(qconfig, calibration, qopts["eval_data"], status, classes))
    if package is not None:
        from edgekit.packaging import PackageTarget, export_package_hook

        target = PackageTarget(package, force, outdir)  # checked before the slow export
        hooks.append(export_package_hook(
            target, config_from_options(**{**qopts, "quantize": "int8"}),
            calibration, qopts["eval_data"], status, classes))
    return hooks, calibration


def _chain(hooks: list[ExportHook]) -> ExportHook:
    """One ``extra_outputs`` hook running ``hooks`` in order."""
    def hook(outcome: ExportOutcome) -> None:
        for h in hooks:
            h(outcome)

    return hook


def _echo_export(result: Any, outdir: Path) -> None:
    click.echo(f"wrote {result.onnx_path} ({result.onnx_path.stat().st_size / 1024:.1f} KiB)")
    v = result.validation
    within = v.tolerance() + (" or Keras' own float noise" if v.noise else "")
    click.echo(f"validation: {v.summary()} (within {within}) - passed")
    if v.noise:
        click.echo(f"note: {v.noise_summary()}")
    if result.report.get("engines"):
        click.echo(engines_line(result.report["engines"]))
    for note in result.report["graph"].get("lowered") or []:
        click.echo(f"note: {note}")
    for warning in result.validation.warnings:
        click.echo(f"warning: {warning}; agreement on such inputs proves little "
                   "(validate on real data with --validation-data; --strict fails here)", err=True)
    for variant in result.report.get("variants", {}).values():
        echo_variant(variant, outdir)
    if "package" in result.report:
        echo_package(result.report["package"])
    click.echo(f"report: {result.report_path}")


@command("inspect")
@click.argument("model", type=existing_path())
@json_option()
def inspect_cmd(model: Path, as_json: bool) -> None:
    """Show an ONNX MODEL's inputs, outputs, opset, ops, parameters, size and metadata."""
    from edgekit.io.onnxfile import format_info, inspect_model

    info = inspect_model(model)
    if as_json:
        echo_json(info.to_dict())
    else:
        click.echo(format_info(info))


@command("quantize")
@click.argument("model", type=existing_path())
@click.option("-o", "--output", "outdir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the model's folder, beside the fp32 model).")
@force_option()
@quantization_options
def quantize_cmd(model: Path, outdir: Path | None, force: bool, **qopts: Any) -> None:
    """Build an int8/dynamic/fp16 variant of an fp32 ONNX MODEL made elsewhere (default
    --quantize auto) and add its section to <stem>.report.json.

    int8 and dynamic variants are timed against fp32 on this machine first: auto writes none
    that is slower (and says why), an explicit mode warns (--no-speed-check skips it).
    """
    from edgekit.quantize.core import quantize_file

    if qopts["quantize"] == "none":
        raise click.UsageError("--quantize none builds nothing")
    config = config_from_options(**qopts, default_mode="auto")
    result, report_path = quantize_file(model, outdir, config, qopts["calibration"],
                                        qopts["eval_data"], force=force, progress=status)
    echo_variant(result.to_dict(), result.path.parent)
    click.echo(f"report: {report_path}")
