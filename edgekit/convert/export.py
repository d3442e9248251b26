"""Keras -> ONNX export: :func:`export_model`, the stage's orchestrator.

The steps, each in its own module: load the Keras source (:mod:`edgekit.convert.load`),
convert it with tf2onnx and check the graph (:mod:`edgekit.convert.conversion`), validate it
against Keras on the user's data or on seeded synthetic inputs (:mod:`edgekit.convert.validate`),
then record the metadata and the report (:mod:`edgekit.convert.report`). Nothing is written
unless every step passed; later stages (quantization, packaging) add their files to the same
atomic output set through ``extra_outputs`` hooks, which get one
:class:`~edgekit.exported.ExportOutcome`.

TensorFlow, tf2onnx and onnx are imported inside the functions (the ``export`` extra).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.convert.config import ExportConfig
from edgekit.convert.conversion import convert, simplified
from edgekit.convert.load import CustomObjects, KerasSource, ModelSource, load_source, source_stem
from edgekit.convert.report import build_report, check_labels, onnx_metadata_props, output_contract
from edgekit.convert.validate import validate, validation_feeds
from edgekit.exported import ExportHook, ExportOutcome
from edgekit.inputs.data import Dataset
from edgekit.inputs.prepare import DataFile, open_data
from edgekit.io.artifacts import ArtifactSet, file_entry
from edgekit.io.memory import activation_bytes
from edgekit.io.tempdirs import temp_dir
from edgekit.metadata import set_props
from edgekit.runtime.engine_record import engines_prop
from edgekit.runtime.proof import batch_prop, check_engines
from edgekit.validate import ValidationResult

if TYPE_CHECKING:
    import numpy as np
    import onnx

__all__ = ["ExportResult", "export_model"]


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    onnx_path: Path
    report_path: Path
    validation: ValidationResult
    report: dict[str, object] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = round(time.perf_counter() - t0, 4)


@dataclass
class _Converted:
    """The validated model of :func:`_convert_and_validate`: the ONNX model (with its
    metadata), its bytes as they will be written, the validation result and the report."""

    model_proto: onnx.ModelProto
    blob: bytes
    validation: ValidationResult
    report: dict[str, object]


def export_model(
    model: ModelSource,
    outdir: str | os.PathLike[str],
    config: ExportConfig | None = None,
    validation_data: str | os.PathLike[str] | Dataset | None = None,
    extra_outputs: ExportHook | None = None,
    custom_objects: CustomObjects | None = None,
) -> ExportResult:
    """Export a Keras model to ``OUTDIR/<stem>.onnx`` + ``<stem>.report.json``.

    Args:
        model: a ``.keras`` / ``.h5`` path, a SavedModel folder, or an in-memory Keras model.
        outdir: output folder (created if missing).
        config: options (default :class:`ExportConfig()`).
        validation_data: ``.npz``/``.npy`` file, IDX folder, text table (models with a
            tokenizer) or :class:`Dataset` to validate on (default: seeded synthetic inputs);
            a :class:`~edgekit.inputs.prepare.DataFile` shared with later stages is read once.
        extra_outputs: hook for later stages (quantization) that stage more files into the
            same atomic output set: ``f(outcome)`` with an
            :class:`~edgekit.exported.ExportOutcome`.
        custom_objects: the user's custom layers: ``.py`` file(s), module name(s) or a
            ``{name: object}`` mapping (default None); see :func:`load_custom_objects`.

    Raises:
        EdgekitError subclasses for every user error; nothing is written then.
    """
    config = config or ExportConfig()
    timer = _Timer()
    stem = source_stem(model)
    onnx_name, report_name = f"{stem}.onnx", f"{stem}.report.json"
    artifacts = ArtifactSet(outdir, [onnx_name, report_name], force=config.force)
    artifacts.check()  # fail before any slow work
    data = None if validation_data is None else open_data(validation_data, "validation data")
    with timer.step("load"):
        source = load_source(model, custom_objects, config.input_specs, data)
    check_labels(source, config)
    source.metadata.output_kinds = output_contract(source, source.metadata, config)
    done = _convert_and_validate(source, config, data, onnx_name, timer)
    with artifacts.open():
        artifacts.write_bytes(onnx_name, done.blob)
        if extra_outputs is not None:
            with timer.step("variants"):
                extra_outputs(ExportOutcome(
                    artifacts, done.model_proto, stem, tuple(source.inputs),
                    tuple(source.outputs), source.metadata, done.validation, data, done.report))
        done.report["timings_s"] = timer.steps
        artifacts.write_json(report_name, done.report)
    return ExportResult(onnx_path=artifacts.final(onnx_name),
                        report_path=artifacts.final(report_name),
                        validation=done.validation, report=done.report)


def _convert_and_validate(source: KerasSource, config: ExportConfig,
                          data: DataFile | Dataset | None, onnx_name: str,
                          timer: _Timer) -> _Converted:
    """Convert, simplify and validate against Keras. The user's data is checked before the
    slow steps; synthetic inputs are drawn after conversion, so they are not held through
    its peak."""
    if data is not None:
        with timer.step("validation_inputs"):
            feeds, notes, data_desc = validation_feeds(source, config, data)
    with timer.step("convert"):
        model_proto = convert(source, config.opset)
    with timer.step("simplify"):
        simplified_notes, session = simplified(model_proto, config.simplify, config.opset)
    if data is None:
        with timer.step("validation_inputs"):
            feeds, notes, data_desc = validation_feeds(source, config, None, session)
    with timer.step("validate"):
        result = validate(source, session, feeds, config, activation_bytes(model_proto))
    del session
    with timer.step("engines"):
        engines = engine_record(model_proto, feeds, onnx_name, result.batch_dependent)
    set_props(model_proto, {**onnx_metadata_props(source, config.opset, source.metadata, config),
                            **engines_prop(engines), **batch_prop(result.batch_dependent)})
    validation = {"data": data_desc, "notes": notes, **asdict(result)}
    blob = model_proto.SerializeToString()
    report = build_report(source, config, model_proto, simplified_notes, validation,
                          file_entry(onnx_name, blob), timer.steps)
    report["engines"] = engines
    return _Converted(model_proto, blob, result, report)


def engine_record(model_proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                  name: str, batch_dependent: bool = False) -> dict[str, dict[str, object]]:
    """The fp32 file on every installed engine against onnxruntime on the validation inputs
    (:func:`edgekit.runtime.proof.check_engines`; on the same whole batches only when the
    outputs are ``batch_dependent``), as the record stored in the file."""
    with temp_dir("edgekit-engines-") as tmp:
        path = tmp / name
        path.write_bytes(model_proto.SerializeToString())
        checks = check_engines(path, feeds, batch_dependent=batch_dependent)
    return {name: c.to_dict() for name, c in checks.items()}
