"""Click options shared by ``edgekit export`` and ``edgekit quantize`` (no heavy imports)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgekit.cli.app import status

if TYPE_CHECKING:
    from edgekit.quantize import QuantizationConfig

__all__ = ["quantization_options", "config_from_options", "echo_variant", "status"]

_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--quantize", "quantize", type=click.Choice(["none", "int8", "dynamic", "fp16",
                                                                 "auto"]),
                 default=None, help="Variant to build beside the fp32 model: int8 (static QDQ, "
                 "needs --calibration), dynamic (int8 weights; LSTM/GRU and Dense-heavy models), "
                 "fp16 (float32 inputs/outputs kept), auto (int8 for conv nets, dynamic for "
                 "recurrent and large Dense models, none for small ones; the reason is "
                 "printed). Files are standard ONNX (QDQ, ai.onnx ops). An int8/dynamic variant "
                 "is timed against fp32 on this machine before it is written (onnxruntime, CPU, "
                 "batch 1, default threads; see --no-speed-check): when it is slower beyond the "
                 "noise, auto writes no variant and says why, and an explicit mode writes it "
                 "with a warning."),
    click.option("--calibration", type=click.Path(exists=True, path_type=Path), default=None,
                 help="Calibration data: NPZ/NPY (x, optional y), a folder of IDX gz files "
                 "(train split), ONNX test_data_set_N folders, an image folder (class "
                 "sub-folders), or a label/text TSV for text models."),
    click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]),
                 default=None, help="Activation range estimation (default percentile)."),
    click.option("--calibration-samples", type=click.IntRange(1), default=None,
                 help="Calibration samples (default 256; all when the data has fewer, noted)."),
    click.option("--per-channel/--per-tensor", "per_channel", default=None,
                 help="Per-channel or per-tensor weight scales (default per-channel)."),
    click.option("--stem-in-float/--no-stem-in-float", "stem_in_float", default=None,
                 help="int8: keep the stem conv (the first Conv) and its activation/pooling in "
                 "float (default: when it reads at most 4 channels, where int8 is slower than "
                 "fp32 on every CPU measured; the report says so)."),
    click.option("--preset", type=click.Choice(["avx512_vnni", "avx2", "arm64"]), default=None,
                 help="Target preset of quantization options (default: portable values, 7-bit "
                 "weights that do not saturate on AVX2-only CPUs)."),
    click.option("--max-accuracy-drop", type=float, default=None, metavar="PT",
                 help="Accuracy budget in points: nodes that lose most are kept in float until "
                 "it holds, else the command fails and writes no variant (needs --eval-data; "
                 "a regression output: its relative error against fp32, in percent)."),
    click.option("--explain", is_flag=True, default=False,
                 help="int8: rank the nodes by the accuracy int8 costs them (SQNR of int8 vs "
                 "fp32 activations on held-out samples, onnxruntime's qdq_loss_debug), with "
                 "what the gate kept in float; the top 10 are printed, all go in the report."),
    click.option("--eval-data", type=click.Path(exists=True, path_type=Path), default=None,
                 help="Labelled data for accuracy figures: NPZ with x and y, an IDX folder "
                 "(test split), an image folder (labels from its sorted class sub-folders), "
                 "ONNX test_data_set_N folders (agreement only) or a label/text TSV (the text "
                 "recipe's 20% test split)."),
    click.option("--speed-check/--no-speed-check", "speed_check", default=True,
                 help="Time each int8/dynamic variant against fp32 on this machine (about 1-2 s; "
                 "default on) and record it in the report's variants.<mode>.speed. "
                 "--no-speed-check: what is written does not depend on timing (reproducible "
                 "builds); auto then writes its variant without knowing whether it is faster."),
    click.option("--speed-batch", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Batch size the speed check times at: the batch your app calls the model "
                 "with (an int8 file faster at batch 1 can be slower at 32: the keras-io LSTM's "
                 "dynamic int8 on an AVX2 EPYC, 0.93x fp32's latency at 1, 1.02-1.04x at 32)."),
    click.option("--format", "output_format", type=click.Choice(["onnx", "ort"]), default="onnx",
                 show_default=True, help="ort: also the ORT-format model (onnxruntime's "
                 "converter, Runtime optimization style), its required_operators.config and a "
                 "per-EP usability report (NNAPI, CoreML: nodes and share of compute)."),
    click.option("--mobile-batch", type=click.IntRange(min=0), default=1, show_default=True,
                 help="Batch size fixed in the ORT-format model (NNAPI and CoreML need static "
                 "shapes); 0 keeps it dynamic."),
]


def quantization_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the quantization options to a click command."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def config_from_options(quantize: str | None, calibration_method: str | None,
                        calibration_samples: int | None, per_channel: bool | None,
                        preset: str | None, max_accuracy_drop: float | None,
                        output_format: str, mobile_batch: int = 1, default_mode: str = "none",
                        stem_in_float: bool | None = None, explain: bool = False,
                        speed_check: bool = True, speed_batch: int = 1,
                        **_: Any) -> QuantizationConfig | None:
    """A :class:`edgekit.quantize.QuantizationConfig` from parsed options (None when no
    variant is asked for)."""
    mode = quantize or default_mode
    if mode == "none":
        if output_format == "ort" or max_accuracy_drop is not None or explain:
            raise click.UsageError("--format ort, --max-accuracy-drop and --explain need "
                                   "--quantize")
        return None
    from edgekit import quantize as q

    return q.QuantizationConfig(
        mode=q.QuantMode(mode),
        scheme=q.QuantScheme.from_preset(preset, per_channel=per_channel,
                                         stem_in_float=stem_in_float),
        calibration=q.CalibrationConfig(**_given(method=calibration_method,
                                                 samples=calibration_samples)),
        gate=q.GateConfig(max_accuracy_drop=max_accuracy_drop, explain=explain),
        speed=q.SpeedCheckConfig(enabled=speed_check, batch=speed_batch),
        output=q.OutputConfig(format=q.OutputFormat(output_format), mobile_batch=mobile_batch),
    )


def _given(**options: Any) -> dict[str, Any]:
    """The options the command line set (None: left to the config's default)."""
    return {k: v for k, v in options.items() if v is not None}


def echo_variant(variant: dict[str, Any], outdir: Path) -> None:
    """Print a report's variant section for people (``warning:`` lines on stderr)."""
    from edgekit.quantize import variant_lines

    for line in variant_lines(variant, outdir):
        click.echo(line, err=line.startswith("warning:"))
