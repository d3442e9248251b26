"""Quantization of an fp32 ONNX model: static int8 (QDQ), dynamic int8, fp16, with an accuracy gate.

- ``int8``: static post-training quantization in QDQ format (``quant_pre_process`` first, then
  ``quantize_static`` with a calibration reader over the user's data).
- ``dynamic``: dynamic int8 (weights int8, activations quantized at run time): the right choice
  for LSTM/GRU and Dense-heavy models (static QDQ leaves LSTM in float).
- ``fp16``: float16 weights and compute, float32 inputs/outputs kept
  (``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``).
- ``auto``: ``int8`` for convolutional models, ``dynamic`` for recurrent and Dense-only ones.

- ``auto``: dynamic for recurrent models, static int8 for convolutional ones, dynamic for
  Dense-only models with enough weights to matter, and no variant for small ones (the reason
  is reported).

The artifact is standard ONNX: QDQ int8 and fp16 files use ai.onnx ops only (onnxruntime, every
execution provider, OpenVINO and other QDQ consumers load them); onnxruntime applies its
host-specific optimizations at load on the device, never into the file. Float regions of
mixed-precision files stay float under onnxruntime's default optimizations (see
:mod:`edgekit.quantize.qdq`). Each variant is compared with fp32 on held-out samples, labelled or
not (:mod:`edgekit.agreement`). With labelled evaluation data and ``max_accuracy_drop`` the nodes
that lose the most (``onnxruntime.quantization.qdq_loss_debug`` on calibration data) are kept in
float, one group at a time, until the gate holds, or :class:`AccuracyGateError` is raised and
nothing is written. An int8 or dynamic variant that passed is then timed against fp32 on this
machine (:mod:`edgekit.quantize.speed`): ``auto`` writes none that is slower, an explicit mode
writes it with a warning.

:func:`quantize_model` is the reusable entry point (``edgekit quantize``, the export hook,
``edgekit tune``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgekit.contract import scores_classes
from edgekit.errors import InputError, SchemaError, require
from edgekit.exported import ExportOutcome
from edgekit.inputs.data import Dataset, TensorSpecInfo
from edgekit.inputs.prepare import onnx_input_specs, onnx_words, open_data
from edgekit.io.artifacts import file_entry, to_json
from edgekit.io.memory import activation_bytes, batch_for
from edgekit.io.tempdirs import temp_dir
from edgekit.metadata import PREFIX, ModelMetadata, set_props
from edgekit.progress import StatusFn
from edgekit.progress import status as report_progress
from edgekit.quantize.build import (
    CHECK_RUN_BATCH,
    Build,
    Builder,
    check_gate,
    prepare_float,
    working_dir,
)
from edgekit.quantize.calibration import (
    ArrayCalibrationReader,
    CheckData,
    bound_histogram_memory,
    load_check_data,
)
from edgekit.quantize.config import (
    METADATA_KEY,
    QuantizationConfig,
    VariantResult,
    resolve_mode,
    variant_names,
)
from edgekit.quantize.explain import explain_nodes, explain_samples
from edgekit.quantize.layout import channels_last_flatten_file, slice_strided_pointwise_file
from edgekit.quantize.options import OutputFormat, QuantMode
from edgekit.quantize.ort_format import convert_to_ort
from edgekit.quantize.preflight import (
    check_calibration,
    check_explain,
    check_gate_data,
    check_options,
    check_whole,
)
from edgekit.quantize.qdq import output_activation_nodes
from edgekit.quantize.regions import stem_float_region
from edgekit.quantize.speed import check_speed
from edgekit.runtime.engine_record import engines_prop
from edgekit.runtime.proof import batch_prop, check_engines, mixes_batch
from edgekit.schema import Fields, read_json
from edgekit.validate import accuracy, run_onnx

if TYPE_CHECKING:
    import onnx

__all__ = [
    "quantize_model",
    "quantize_file",
    "export_hook",
]


def _load_proto(model: Any, stem: str | None) -> tuple[Any, str]:
    if isinstance(model, str | os.PathLike):
        from edgekit.io.onnxfile import load_onnx

        return load_onnx(model), stem or Path(model).name.removesuffix(".onnx")
    return model, stem or "model"


def quantize_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    outdir: str | os.PathLike[str],
    stem: str | None = None,
    config: QuantizationConfig | None = None,
    calibration: str | os.PathLike[str] | Dataset | None = None,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    progress: StatusFn | None = None,
    known: tuple[Sequence[TensorSpecInfo], ModelMetadata] | None = None,
) -> VariantResult:
    """Build one variant of an fp32 ONNX model into ``outdir`` (files of :func:`variant_names`).

    The artifact is standard ONNX (QDQ int8 and fp16 use ai.onnx ops only; onnxruntime
    optimizes it at load on the device). The output activation (softmax/sigmoid) stays float,
    so probabilities stay exact. Every variant is compared with fp32 on held-out samples
    (``eval_data``, else calibration samples not used for calibration, else synthetic inputs).

    Args:
        model: fp32 ``.onnx`` path or ``onnx.ModelProto``.
        outdir: where the variant files go (must exist; nothing is written on failure).
        stem: file stem (default: the model file's stem, or ``"model"``).
        config: options (default ``QuantizationConfig()``: static int8, per-channel 7-bit
            weights, u8 activations).
        calibration: calibration data (needed by ``int8``); see :func:`load_model_data`.
        eval_data: labelled data for the accuracy figures and the gate (test split of folders).
        progress: called with short status lines for the slow steps.
        known: the model's input specs and metadata when the caller has them (the export
            hook), else read from ``model``.

    Returns:
        The result; ``result.written`` is False when ``auto`` found no variant worth writing:
        none for the model, or one not smaller or slower than fp32 here (``result.notes`` says
        why; ``result.speed`` is the speed check).

    Raises:
        InputError / DataError for bad options or data, AccuracyGateError when the gate
        cannot be met (with the best figures reached), ConversionError when onnxruntime fails.
    """
    require("onnxruntime", "runtime")
    cfg = config or QuantizationConfig()
    proto, stem = _load_proto(model, stem)
    mode, auto_note = resolve_mode(proto, cfg.mode)
    props = {p.key: p.value for p in proto.metadata_props}
    specs, meta = known or (onnx_input_specs(proto), ModelMetadata.from_props(props))
    classes = scores_classes(meta.output_kinds)
    check_options(mode, cfg, calibration, eval_data, classes)
    if mode is QuantMode.NONE:
        return VariantResult.skipped(cfg, Path(outdir) / f"{stem}.onnx", [auto_note or ""])
    whole = mixes_batch(props)
    check_whole(whole, cfg)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_check_data(mode, cfg, specs, meta, calibration, eval_data, onnx_words(proto))
    timings["data"] = round(time.perf_counter() - t0, 3)
    data.drop_labels(whole, "the model's outputs are not per-sample (they mix the batch), so "
                     "fp32 and the variant are compared on the same whole batches, without "
                     "accuracy")
    data.drop_labels(not classes, "the first output is a regression output, so the variant is "
                     "compared with fp32 by its relative error")
    job = _Job(proto, Path(outdir).absolute(), stem, mode, cfg, data,
               ([auto_note] if auto_note else []) + data.notes, timings, progress, whole,
               classes=classes)
    with temp_dir("edgekit-quant-") as tmp, working_dir(tmp):  # no stray files in the cwd
        return job.run(tmp)


@dataclass
class _Job:
    """One variant being built: what :func:`quantize_model` resolved, and its steps."""

    proto: Any
    outdir: Path
    stem: str
    mode: QuantMode
    cfg: QuantizationConfig
    data: CheckData
    notes: list[str]
    timings: dict[str, float]
    progress: StatusFn | None
    whole: bool = False  # outputs not per-sample: compared on the same whole batches only
    check_batch: int = CHECK_RUN_BATCH  # fp32 and every build run the check samples in these
    classes: bool = True  # the first output scores classes (False: a regression output)

    def run(self, tmp: Path) -> VariantResult:
        """fp32 reference -> float graph -> quantized (+ gate) -> result and files."""
        fp32_path = tmp / "fp32.onnx"
        fp32_path.write_bytes(self.proto.SerializeToString())  # as the fp32 file is written
        self.check_batch = batch_for(fp32_path, CHECK_RUN_BATCH)  # the same for every build
        fp32_out, fp32_acc = self._fp32_outputs(fp32_path)
        with self._timed("preprocess"):
            pre = prepare_float(fp32_path, tmp, self.mode, self.notes)
            pre = self._layout(pre, tmp)
            bound_histogram_memory(self.data, pre, self.cfg, self.notes)
        with self._timed("quantize"):
            first, final, gate_info, exclude = self._quantize(pre, tmp, fp32_out)
        explained = self._explain(pre, first, tmp, exclude, gate_info)
        fp32_size, size = fp32_path.stat().st_size, final.path.stat().st_size
        self.notes.extend(_size_notes(size, fp32_size, final.nonstandard, self.mode))
        used = dataclasses.replace(self.cfg, mode=self.mode, scheme=dataclasses.replace(
            self.cfg.scheme, nodes_to_exclude=exclude))
        speed, skipped = self._worth_writing(used, fp32_path, final.path, size, fp32_size)
        if skipped is not None:
            return skipped
        name = variant_names(self.stem, self.mode, self.cfg.output.format)["model"]
        result = VariantResult(
            mode=self.mode.value, requested_mode=self.cfg.mode.value, path=self.outdir / name,
            size_bytes=size, fp32_size_bytes=fp32_size, config=used,
            calibration=self.data.calibration, evaluation=final.evaluation(self.data, fp32_acc),
            gate=gate_info, explain=explained, notes=self.notes, timings_s=self.timings,
            portable=not final.nonstandard, nonstandard_ops=final.nonstandard, speed=speed)
        with self._timed("engines"):
            report_progress(self.progress, f"{self.mode.value}: checking it on every engine")
            checks = check_engines(final.path, self.data.check_feeds, self.data.check_labels,
                                   fp32=fp32_out, batch_dependent=self.whole)
        result.engines = {name: c.to_dict() for name, c in checks.items()}
        _write_variant(result, final.path, tmp, self.stem, self.progress, self.whole)
        return result

    def _worth_writing(self, used: QuantizationConfig, fp32_path: Path, built: Path, size: int,
                       fp32_size: int) -> tuple[dict[str, Any] | None, VariantResult | None]:
        """The speed check's record, and the result of writing nothing when ``auto`` chose a
        variant that is not smaller than fp32 or is slower than it here (else None)."""
        unwritten = self.outdir / f"{self.stem}.onnx"
        if self.cfg.mode is QuantMode.AUTO and size >= fp32_size:
            self.notes.append(f"auto: the {self.mode.value} model ({size / 1024:.1f} KiB) is not "
                              f"smaller than fp32 ({fp32_size / 1024:.1f} KiB), so no variant "
                              "was written")
            return None, VariantResult.skipped(used, unwritten, self.notes)
        with self._timed("speed"):
            speed = check_speed(fp32_path, built, self.data.check_feeds, self.mode,
                                self.cfg.mode, self.cfg.speed, self.progress)
        if speed.keeps(self.cfg.mode):
            return speed.to_dict(), None
        self.notes.append(speed.reason or "auto: slower than fp32 here")
        skipped = VariantResult.skipped(used, unwritten, self.notes)
        skipped.speed = speed.to_dict()
        return skipped.speed, skipped

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[step] = round(time.perf_counter() - t0, 3)

    def _fp32_outputs(self, fp32_path: Path) -> tuple[np.ndarray, float | None]:
        """The fp32 file's outputs on the check samples and its accuracy (with labels)."""
        fp32_out = run_onnx(fp32_path, self.data.check_feeds, whole=self.whole,
                            batch_size=self.check_batch)[0]
        labels = self.data.check_labels
        return fp32_out, accuracy(fp32_out, labels) if labels is not None else None

    def _layout(self, pre: Path, tmp: Path) -> Path:
        """The float graph with the changes the scheme's int8 layout asks for
        (:mod:`edgekit.quantize.layout`); static int8 only."""
        scheme = self.cfg.scheme
        if self.mode is not QuantMode.INT8:
            return pre
        if scheme.slice_strided_pointwise:
            pre = slice_strided_pointwise_file(pre, tmp, self.notes)
        convs_in_int8 = scheme.op_types_to_quantize is None or "Conv" in scheme.op_types_to_quantize
        if scheme.channels_last_flatten and convs_in_int8:
            float_convs = frozenset([*scheme.nodes_to_exclude, *self._stem_region()[0]])
            pre = channels_last_flatten_file(pre, tmp, self.notes, float_convs)
        return pre

    def _stem_region(self) -> tuple[list[str], str | None]:
        """The stem conv's float region when :attr:`QuantizationConfig.stem_in_float` says so,
        and the note that says why."""
        stem_in_float = self.cfg.scheme.stem_in_float
        if self.mode is not QuantMode.INT8 or stem_in_float is False:
            return [], None
        return stem_float_region(self.proto.graph, always=bool(stem_in_float))

    def _stem(self) -> list[str]:
        """The stem conv's float region (:meth:`_stem_region`), noted in the report."""
        region, note = self._stem_region()
        self.notes.extend([note] if note else [])
        return region

    def _quantize(self, pre: Path, tmp: Path, fp32_out: np.ndarray
                  ) -> tuple[Build, Build, dict[str, Any] | None, list[str]]:
        """The first quantized build, the one that meets the gate, the gate report and the
        float nodes.

        int8 keeps the output softmax/sigmoid float, so probabilities stay exact (fp16 keeps
        them in fp16: blocking the output node breaks the converter's float32 outputs)."""
        keep = output_activation_nodes(self.proto) if self.mode is QuantMode.INT8 else []
        exclude = list(dict.fromkeys([*self.cfg.scheme.nodes_to_exclude, *keep, *self._stem()]))
        builder = Builder(self.mode, self.cfg, pre, tmp, self.data, fp32_out, self.progress,
                          notes=self.notes, whole=self.whole, check_batch=self.check_batch,
                          classes=self.classes)
        first = builder.build(exclude)
        final, gate_info = check_gate(builder, first, exclude)
        self.cfg = builder.cfg  # as calibrated (a histogram that failed falls back to minmax)
        return first, final, gate_info, exclude

    def _explain(self, pre: Path, first: Build, tmp: Path, exclude: list[str],
                 gate_info: dict[str, Any] | None) -> list[dict[str, Any]] | None:
        """The ``explain`` section (:mod:`edgekit.quantize.explain`) of the first int8 build,
        before the gate kept any node in float, on at most
        :data:`~edgekit.quantize.explain.EXPLAIN_SAMPLES` check samples (fewer for large
        activations); None when not asked for (a note when ``auto`` chose another mode)."""
        if not self.cfg.gate.explain:
            return None
        if self.mode is not QuantMode.INT8:
            self.notes.append(f"explain: no per-node report for {self.mode.value} (it needs "
                              "static int8 QDQ: pass --quantize int8)")
            return None
        report_progress(self.progress, "explain: per-node int8 vs fp32 (qdq_loss_debug)")
        n = explain_samples(activation_bytes(pre))
        feeds = {k: v[:n] for k, v in self.data.check_feeds.items()}
        reader = ArrayCalibrationReader(feeds, self.cfg.calibration.batch_size)
        with self._timed("explain"):
            entries = explain_nodes(pre, first.path, reader, tmp, exclude, gate_info)
        self.notes.append(f"explain: SQNR of int8 vs fp32 activations on {reader.n} "
                          f"{'held-out ' if self.data.held_out else ''}samples, of the int8 "
                          "model before any gate step; nodes ranked by the dB they lose")
        return entries


def _size_notes(size: int, fp32_size: int, odd: list[str], mode: QuantMode) -> list[str]:
    notes = []
    if size >= fp32_size:
        notes.append(f"warning: the {mode.value} model is {100 * size / fp32_size:.0f}% of the "
                     "fp32 file (Q/DQ nodes and scales outweigh the weights it shrinks)")
    if odd:
        notes.append(f"uses {', '.join(odd)} (ops outside ai.onnx: the mobile execution "
                     "providers cannot load it; the engines line says which engines run it)")
    return notes


def _write_variant(result: VariantResult, built: Path, tmp: Path, stem: str,
                   progress: StatusFn | None, whole: bool = False) -> None:
    """Metadata, the ORT-format files when asked, the config JSON; then write them all."""
    import onnx

    cfg, mode = result.config, result.config.mode
    names = variant_names(stem, mode, cfg.output.format)
    qmodel = onnx.load(str(built))
    set_props(qmodel, {METADATA_KEY: json.dumps(cfg.to_dict()), PREFIX + "variant": mode.value,
                       **engines_prop(result.engines), **batch_prop(whole)})
    data = qmodel.SerializeToString()
    result.size_bytes = len(data)  # the file as written, its metadata included
    outdir = result.path.parent
    staged: list[tuple[Path, bytes]] = [(result.path, data)]
    result.files = {"model": names["model"], "config": names["config"]}
    result.op_histogram = dict(Counter(n.op_type for n in qmodel.graph.node).most_common())
    if cfg.output.format is OutputFormat.ORT:
        t0 = time.perf_counter()
        report_progress(progress, f"{mode.value}: converting to ORT format")
        src = tmp / names["model"]
        src.write_bytes(data)
        ort_p, conf_p, reports = convert_to_ort(src, tmp / names["ort"], tmp / names["ort_config"])
        staged += [(outdir / names["ort"], ort_p.read_bytes()),
                   (outdir / names["ort_config"], conf_p.read_bytes())]
        result.files.update(ort=names["ort"], ort_config=names["ort_config"])
        result.mobile = [r.to_dict() for r in reports]
        result.timings_s["ort"] = round(time.perf_counter() - t0, 3)
    staged.append((outdir / names["config"], (to_json(cfg.to_dict()) + "\n").encode()))
    result.artifacts = [file_entry(path.name, blob) for path, blob in staged]
    outdir.mkdir(parents=True, exist_ok=True)
    for path, blob in staged:  # all checks passed: write
        path.write_bytes(blob)


# ---------------------------------------------------------------------------------------------
# The export hook
# ---------------------------------------------------------------------------------------------
def export_hook(
    config: QuantizationConfig,
    calibration: str | os.PathLike[str] | Dataset | None = None,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    progress: StatusFn | None = None,
    classes: bool = True,
) -> Callable[[ExportOutcome], None]:
    """An ``extra_outputs`` hook for :func:`edgekit.convert.export_model` that stages the variant
    of ``config.mode`` next to the fp32 model and adds ``report["variants"][mode]``.

    Paths are checked now, before the slow export starts, and read once (a
    :class:`~edgekit.inputs.prepare.DataFile` given here and as the export's validation data
    is read once for both). ``classes``: False when the export declares its first output a
    regression (``--output-kind regression``): a gate then needs no labelled ``eval_data``."""
    calibration = None if calibration is None else open_data(calibration, "calibration data")
    eval_data = None if eval_data is None else open_data(eval_data, "evaluation data")
    check_explain(config)
    check_calibration(config.mode, calibration)
    check_gate_data(config, eval_data, classes)

    def hook(outcome: ExportOutcome) -> None:
        mode, _ = resolve_mode(outcome.model_proto, config.mode)
        stage = outcome.artifacts.path(outcome.onnx_name).parent
        if mode is not QuantMode.NONE:
            names = variant_names(outcome.stem, mode, config.output.format).values()
            stage = [outcome.artifacts.add(n) for n in names][0].parent
        result = quantize_model(outcome.model_proto, stage, outcome.stem, config, calibration,
                                eval_data, progress, known=(outcome.inputs, outcome.metadata))
        variants = cast(dict[str, object], outcome.report.setdefault("variants", {}))
        variants[result.mode] = result.to_dict()

    return hook


def quantize_file(
    model: str | os.PathLike[str],
    outdir: str | os.PathLike[str] | None = None,
    config: QuantizationConfig | None = None,
    calibration: str | os.PathLike[str] | Dataset | None = None,
    eval_data: str | os.PathLike[str] | Dataset | None = None,
    force: bool = False,
    progress: StatusFn | None = None,
) -> tuple[VariantResult, Path]:
    """``edgekit quantize``: one variant of an fp32 ``.onnx`` file into ``outdir`` (default: the
    model's folder), atomically, and its section in ``<stem>.report.json`` (created or updated).
    Returns the result and the report path."""
    from edgekit.io.artifacts import ArtifactSet
    from edgekit.io.onnxfile import load_onnx

    cfg = config or QuantizationConfig(mode=QuantMode.AUTO)
    _check_paths(calibration, eval_data)
    proto = load_onnx(model)
    path = Path(model)
    stem = path.name.removesuffix(".onnx")
    out = Path(outdir) if outdir is not None else path.parent
    mode, _ = resolve_mode(proto, cfg.mode)
    names = variant_names(stem, mode, cfg.output.format) if mode is not QuantMode.NONE else {}
    report_name = f"{stem}.report.json"  # committed with the variant: never one without the other
    artifacts = ArtifactSet(out, [*names.values(), report_name], force=force,
                            updates=[report_name])
    with artifacts.open():  # checks what exists first
        result = quantize_model(proto, artifacts.stage_dir, stem, cfg, calibration, eval_data,
                                progress)
        report = _previous_report(out / report_name, force)
        report.setdefault("source", {"path": str(path)})
        report.setdefault("variants", {})[result.mode] = result.to_dict()
        artifacts.write_json(report_name, report)
    if result.written:
        result.path = artifacts.final(names["model"])
    return result, artifacts.final(report_name)


def _previous_report(path: Path, force: bool) -> dict[str, Any]:
    """The report a variant's section is added to: a new one when there is none, or (with
    ``force``) when the one there is not an edgekit report (an object whose ``variants`` is
    an object; at most 64 MiB); without ``force`` that is an :class:`InputError`, so nobody's
    file is replaced unasked."""
    if not path.exists():
        return {}
    try:
        report = Fields(read_json(path, 64 << 20))
        report.sub("variants", required=False)
    except (OSError, SchemaError) as exc:
        if force:
            return {}
        raise InputError(f"{path} is not an edgekit report, so no variant section can be added "
                         f"to it ({exc})", hint="move it aside, or pass --force to replace it"
                         ) from exc
    return dict(report.data)


def _check_paths(*paths: Any) -> None:
    for what, p in zip(("calibration data", "evaluation data"), paths, strict=False):
        if isinstance(p, str | os.PathLike) and not Path(p).exists():
            raise InputError(f"{what} file {p} does not exist", hint="check the path")
