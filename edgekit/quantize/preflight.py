"""What a quantization job checks before it reads data or builds anything: options that
contradict each other or the model (a gate without labels, a gate on outputs that mix the
batch, ``--explain`` without static int8)."""

from __future__ import annotations

import os
from typing import Any

from edgekit.errors import InputError
from edgekit.inputs.data import Dataset
from edgekit.quantize.config import QuantizationConfig
from edgekit.quantize.options import QuantMode

__all__ = ["check_calibration", "check_explain", "check_gate_data", "check_options",
           "check_whole"]


def check_options(mode: QuantMode, cfg: QuantizationConfig, calibration: Any,
                  eval_data: Any, classes: bool = True) -> None:
    """The options' contradictions; ``classes``: the first output scores classes (a
    regression output's gate compares with fp32 and needs no labels)."""
    if mode is QuantMode.NONE and cfg.mode is not QuantMode.AUTO:
        raise InputError("quantization mode 'none' builds no variant")
    check_gate_data(cfg, eval_data, classes)
    check_calibration(mode, calibration)
    check_explain(cfg)


def check_gate_data(cfg: QuantizationConfig,
                    eval_data: str | os.PathLike[str] | Dataset | None,
                    classes: bool = True) -> None:
    """An accuracy gate on class scores needs labelled evaluation data; a regression output's
    (``classes`` False) compares with fp32 on held-out samples and needs none."""
    if cfg.gate.max_accuracy_drop is not None and eval_data is None and classes:
        raise InputError("--max-accuracy-drop needs labelled --eval-data",
                         hint="pass --eval-data FILE (npz with x and y, or an IDX folder)")


def check_calibration(mode: QuantMode, calibration: Any) -> None:
    """Static int8 needs calibration data."""
    if mode is QuantMode.INT8 and calibration is None:
        raise InputError("static int8 quantization needs calibration data",
                         hint="pass --calibration FILE (npz/npy or an IDX folder), or use "
                         "--quantize dynamic")


def check_whole(whole: bool, cfg: QuantizationConfig) -> None:
    """An accuracy gate needs per-sample outputs: a model that mixes the batch has none."""
    if whole and cfg.gate.max_accuracy_drop is not None:
        raise InputError("--max-accuracy-drop needs per-sample outputs, and this model's "
                         "outputs mix the batch (its export marked it edgekit.batch_dependent)",
                         hint="quantize without --max-accuracy-drop: the variant is still "
                         "compared with fp32 on the same whole batches")


def check_explain(cfg: QuantizationConfig) -> None:
    """``--explain`` with ``dynamic`` or ``fp16`` is an error (``auto`` gets a note when it
    chooses one of them): only static QDQ models have quantized activations to compare."""
    if cfg.gate.explain and cfg.mode in (QuantMode.DYNAMIC, QuantMode.FP16):
        raise InputError(f"--explain needs static int8 (QDQ): {cfg.mode.value} models have no "
                         "quantized activations to compare with fp32",
                         hint="use --quantize int8 --calibration FILE --explain")
