"""Click options shared by ``edgekit export`` and ``edgekit quantize`` (no heavy imports)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["quantization_options", "config_from_options", "echo_variant", "status"]

_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--quantize", "quantize", type=click.Choice(["none", "int8", "dynamic", "fp16",
                                                                 "auto"]),
                 default=None, help="Variant to build beside the fp32 model: int8 (static QDQ, "
                 "needs --calibration), dynamic (int8 weights; LSTM/GRU and Dense-heavy models), "
                 "fp16 (float32 inputs/outputs kept), auto (int8 for conv nets, dynamic for "
                 "recurrent ones)."),
    click.option("--calibration", type=click.Path(path_type=Path), default=None,
                 help="Calibration data: NPZ/NPY (x, optional y), a folder of IDX gz files "
                 "(train split), or a label/text TSV for text models."),
    click.option("--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]),
                 default=None, help="Activation range estimation (default minmax)."),
    click.option("--calibration-samples", type=int, default=None,
                 help="Calibration samples (default 256; all when the data has fewer, noted)."),
    click.option("--per-channel/--per-tensor", "per_channel", default=None,
                 help="Per-channel or per-tensor weight scales (default per-channel)."),
    click.option("--preset", type=click.Choice(["avx512_vnni", "avx2", "arm64"]), default=None,
                 help="Target preset of quantization options (default: avx512_vnni values)."),
    click.option("--optimize", "optimize", type=click.Choice(["disable", "basic", "extended",
                                                              "all"]),
                 default="extended", show_default=True,
                 help="onnxruntime graph optimization saved into the variant. 'extended' is "
                 "portable; 'all' adds layout changes specific to the CPU of the machine that "
                 "ran it."),
    click.option("--max-accuracy-drop", type=float, default=None, metavar="PT",
                 help="Accuracy budget in points: nodes that lose most are kept in float until "
                 "it holds, else the command fails and writes no variant (needs --eval-data)."),
    click.option("--eval-data", type=click.Path(path_type=Path), default=None,
                 help="Labelled data for accuracy figures: NPZ with x and y, an IDX folder "
                 "(test split) or a label/text TSV (the text recipe's 20% test split)."),
    click.option("--format", "output_format", type=click.Choice(["onnx", "ort"]), default="onnx",
                 show_default=True, help="ort: also the ORT-format model, its "
                 "required_operators.config and an NNAPI/CoreML usability report."),
]


def quantization_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the quantization options to a click command."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def config_from_options(quantize: str | None, calibration_method: str | None,
                        calibration_samples: int | None, per_channel: bool | None,
                        preset: str | None, optimize: str, max_accuracy_drop: float | None,
                        output_format: str, default_mode: str = "none", **_: Any) -> Any:
    """A :class:`edgekit.quantize.QuantizationConfig` from parsed options (None when no
    variant is asked for)."""
    mode = quantize or default_mode
    if mode == "none":
        if output_format == "ort" or max_accuracy_drop is not None:
            raise click.UsageError("--format ort and --max-accuracy-drop need --quantize")
        return None
    from .quantize import QuantizationConfig

    return QuantizationConfig.from_preset(
        preset, mode=mode, calibration_method=calibration_method,
        calibration_samples=calibration_samples, per_channel=per_channel, optimize=optimize,
        max_accuracy_drop=max_accuracy_drop, output_format=output_format,
    )


def status(msg: str) -> None:
    """A short status line on stderr."""
    click.echo(f"... {msg}", err=True)


def echo_variant(variant: dict[str, Any], outdir: Path) -> None:
    """Print a report's variant section for people."""
    from .quantize import variant_lines

    click.echo("\n".join(variant_lines(variant, outdir)))
