"""Calibration data and the held-out samples every variant is compared on; bounds the memory
of histogram calibration."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract import scores_classes
from edgekit.errors import DataError
from edgekit.inputs.data import TensorSpecInfo
from edgekit.inputs.folders import has_splits
from edgekit.inputs.prepare import load_model_data
from edgekit.inputs.synthetic import synthetic_feeds
from edgekit.io.memory import activation_bytes, batch_within
from edgekit.metadata import ModelMetadata
from edgekit.quantize.config import QuantizationConfig
from edgekit.quantize.options import CalibrationConfig, CalibrationMethod, QuantMode

__all__ = [
    "ArrayCalibrationReader",
    "CHECK_SAMPLES",
    "HISTOGRAM_MEMORY_BYTES",
    "calibration_split",
    "CheckData",
    "load_check_data",
    "bound_histogram_memory",
]

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
class ArrayCalibrationReader:
    """An onnxruntime ``CalibrationDataReader`` over prepared arrays, in batches (default 16).

    All batches have the same size (the largest divisor of the sample count not above
    ``batch_size``): onnxruntime's histogram calibrators (entropy, percentile) stack the
    batches' outputs and fail on a shorter last batch. ``len()`` and ``set_range`` (in
    batches) are the protocol of onnxruntime's strided calibration (``CalibStridedMinMax``):
    with ``stride`` set, the calibrator collects ``stride`` batches per pass and merges them
    into its histograms, so it never holds more than one pass's activations.
    """

    def __init__(self, feeds: dict[str, np.ndarray], batch_size: int = 16) -> None:
        self.feeds = feeds
        self.n = len(next(iter(feeds.values())))
        self.batch_size = _divisor(self.n, batch_size)
        #: batches per calibration pass (None: all in one pass)
        self.stride: int | None = None
        self._range = (0, len(self))
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def __len__(self) -> int:
        return self.n // self.batch_size

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        for b in range(*self._range):
            i = b * self.batch_size
            yield {k: v[i:i + self.batch_size] for k, v in self.feeds.items()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None at the end."""
        return next(self._it, None)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Only batches ``start_index`` to ``end_index`` (exclusive), from the first of them."""
        self._range = (start_index, min(end_index, len(self)))
        self._it = self._gen()

    def rewind(self) -> None:
        """Start again from the first batch (every batch)."""
        self._range = (0, len(self))
        self._it = self._gen()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        return self._gen()


def _divisor(n: int, most: int) -> int:
    """The largest divisor of ``n`` not above ``most`` (at least 1)."""
    return next(d for d in range(max(1, min(most, n)), 0, -1) if n % d == 0)


# ---------------------------------------------------------------------------------------------
# Data the variant is built and checked on
# ---------------------------------------------------------------------------------------------
#: held-out samples the agreement check uses at most
CHECK_SAMPLES = 1000


@dataclass
class CheckData:
    """Calibration batches and the held-out samples every variant is compared on."""

    reader: ArrayCalibrationReader | None
    calibration: dict[str, Any] | None
    check_feeds: dict[str, np.ndarray]
    check_labels: np.ndarray | None
    check_desc: str
    held_out: bool
    notes: list[str]

    def drop_labels(self, drop: bool, why: str) -> None:
        """Leave the labels out when ``drop`` (and there are any), with a note saying ``why``."""
        if drop and self.check_labels is not None:
            self.check_labels = None
            self.notes.append(f"labels not used: {why}")


def _subset(feeds: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in feeds.items()}


def calibration_split(calibration: Any, specs: Sequence[TensorSpecInfo], meta: ModelMetadata,
                       cal: CalibrationConfig) -> tuple[dict[str, np.ndarray], dict[str, Any],
                                                         tuple[Any, ...] | None, list[str]]:
    """Calibration feeds, their report section, the held-out part (feeds, labels, desc) when
    the data has one, and notes. IDX folders and text tables hold out their test split; arrays,
    ONNX test data and image folders hold out the samples not drawn for calibration."""
    split_data = has_splits(calibration) or (isinstance(calibration, str | os.PathLike) and
                                             Path(calibration).suffix.lower() in (".tsv", ".csv",
                                                                                   ".txt"))
    if split_data:
        feeds, _, notes, desc = load_model_data(calibration, specs, meta, "calibration data",
                                                "train", cal.samples, cal.seed)
        test = load_model_data(calibration, specs, meta, "calibration data", "test",
                               CHECK_SAMPLES, cal.seed)
        held: tuple[Any, ...] | None = (test[0], test[1], test[3])
    else:  # a folder (images, ONNX test sets) is read only as far as it is used
        folder = isinstance(calibration, str | os.PathLike) and Path(calibration).is_dir()
        read = cal.samples + CHECK_SAMPLES if folder else 0
        all_feeds, labels, notes, desc = load_model_data(calibration, specs, meta,
                                                         "calibration data", "train", read,
                                                         cal.seed)
        n_all = len(next(iter(all_feeds.values())))
        order = np.random.default_rng(cal.seed).permutation(n_all)
        cal_idx = np.sort(order[:cal.samples])
        rest = np.sort(order[cal.samples:cal.samples + CHECK_SAMPLES])
        feeds = _subset(all_feeds, cal_idx)
        held = None
        if len(rest):
            held = (_subset(all_feeds, rest), None if labels is None else labels[rest],
                    f"{desc} ({len(rest)} samples not used for calibration)")
    n = len(next(iter(feeds.values())))
    if n < cal.samples:
        notes.append(f"calibration: {cal.samples} samples asked, {desc} has only "
                     f"{n}; calibrated on all {n}")
    info = {"data": desc, "samples": n, "requested_samples": cal.samples,
            "method": cal.method.value}
    return feeds, info, held, notes


def load_check_data(mode: QuantMode, cfg: QuantizationConfig, specs: Sequence[TensorSpecInfo],
               meta: ModelMetadata, calibration: Any, eval_data: Any,
               words: Sequence[str] = ()) -> CheckData:
    """Calibration (static int8) and the samples the variant is checked on: ``eval_data``
    when given, else data held out from calibration, else seeded synthetic inputs (string
    inputs drawn from ``words``, the graph's string constants)."""
    reader: ArrayCalibrationReader | None = None
    cal_info: dict[str, Any] | None = None
    held: tuple[Any, ...] | None = None
    notes: list[str] = []
    if calibration is not None:
        feeds, cal_info, held, notes = calibration_split(calibration, specs, meta, cfg.calibration)
        if mode is QuantMode.INT8:
            reader = ArrayCalibrationReader(feeds, cfg.calibration.batch_size)
        else:
            cal_info = None
        if held is None and mode is QuantMode.INT8:
            held = (feeds, None, f"{cal_info['data'] if cal_info else 'calibration data'} "
                    "(the calibration samples: none were left to hold out)")
    if eval_data is not None:
        ev_feeds, labels, ev_notes, desc = load_model_data(
            eval_data, specs, meta, "evaluation data", "test", cfg.gate.eval_samples,
            cfg.calibration.seed)
        notes.extend(ev_notes)
        if cfg.gate.max_accuracy_drop is not None and labels is None and \
                scores_classes(meta.output_kinds):  # a regression output: against fp32
            raise DataError(f"evaluation data {desc} has no labels (array 'y')",
                            hint="the accuracy gate needs labelled --eval-data")
        return CheckData(reader, cal_info, ev_feeds, labels, desc, True, notes)
    if held is not None:
        return CheckData(reader, cal_info, held[0], held[1], held[2],
                     "none were left" not in held[2], notes)
    feeds = synthetic_feeds(specs, meta, 256, cfg.calibration.seed, words)
    return CheckData(reader, cal_info, feeds, None,
                     f"synthetic inputs (seed {cfg.calibration.seed}, 256 samples)", False, notes)


#: memory the histogram calibrators (entropy, percentile) may use for one pass's activations:
#: onnxruntime keeps every sample of a pass before building histograms, so a larger set is
#: calibrated in passes (MobileNetV2-224: 75 MiB a sample; all of 256 samples at once: 19 GiB)
HISTOGRAM_MEMORY_BYTES = 512 << 20


def bound_histogram_memory(data: CheckData, pre: Path, cfg: QuantizationConfig,
                            notes: list[str]) -> None:
    """Calibrate in passes when entropy/percentile would hold more than
    :data:`HISTOGRAM_MEMORY_BYTES` of activations at once: every sample is still used
    (minmax keeps only ranges and needs no passes)."""
    reader = data.reader
    if reader is None or cfg.calibration.method is CalibrationMethod.MINMAX:
        return
    per_sample = max(activation_bytes(pre), 1)
    fit = batch_within(per_sample, reader.n, HISTOGRAM_MEMORY_BYTES)  # samples a pass holds
    if fit >= reader.n:
        return
    paced = ArrayCalibrationReader(reader.feeds, min(reader.batch_size, fit))
    paced.stride = _divisor(len(paced), fit // paced.batch_size)
    data.reader = paced
    passes = len(paced) // paced.stride
    notes.append(f"calibration: {cfg.calibration.method.value} calibration holds a pass's "
                 f"activations ({per_sample / 2**20:.1f} MiB a sample), so the {reader.n} "
                 f"samples went in {passes} passes of {paced.stride * paced.batch_size} to stay "
                 f"within {HISTOGRAM_MEMORY_BYTES / 2**20:.0f} MiB")
    if data.calibration is not None:
        data.calibration["passes"] = passes


