"""``--package DIR`` of ``edgekit export`` and ``edgekit tune``: the variants of one model built
and written as one ONNX Runtime model package, atomically with the run's other files.

- :class:`PackageTarget` checks ``DIR`` before any slow work and stages the package: when
  ``DIR`` lies in the run's output folder it is one more name of the run's
  :class:`~edgekit.io.artifacts.ArtifactSet` (committed with the other files, all at once);
  elsewhere it is an artifact set of its own, committed just before the run's files.
- :func:`export_package_hook` is an ``extra_outputs`` hook of
  :func:`edgekit.convert.export_model`: fp32 is the validated export, int8 (static QDQ)
  and fp16 are the variants ``--quantize`` staged beside it, or built here with the same
  quantization options.
- :func:`tune_package` packages a tune's result: the tuned file takes the place of its precision
  (int8 when the winner is quantized, else fp32), fp16 is built from the fp32 model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgekit import __version__
from edgekit.errors import InputError
from edgekit.exported import ExportOutcome
from edgekit.inputs.data import Dataset
from edgekit.inputs.prepare import open_data
from edgekit.io.artifacts import ArtifactSet
from edgekit.io.tempdirs import temp_dir
from edgekit.metadata import ModelMetadata
from edgekit.packaging.write import write_package
from edgekit.progress import StatusFn
from edgekit.progress import status as report_progress
from edgekit.quantize import (
    OutputConfig,
    OutputFormat,
    QuantizationConfig,
    QuantMode,
    check_gate_data,
    quantize_model,
)
from edgekit.runtime.modelpackage import require_model_packages

if TYPE_CHECKING:
    import onnx

__all__ = ["PackageTarget", "export_package_hook", "tune_package", "package_metadata"]

Data = str | os.PathLike[str] | Dataset | None


class PackageTarget:
    """The package folder ``path`` of a run writing to ``outdir`` (default: not known yet),
    checked now, before any slow work.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is off.
        InputError: ``path`` is ``outdir`` itself.
        MissingDependencyError: this onnxruntime cannot write model packages.
    """

    def __init__(self, path: str | os.PathLike[str], force: bool = False,
                 outdir: str | os.PathLike[str] | None = None) -> None:
        require_model_packages()
        self.path = Path(path)
        self.force = force
        if self.path.name in ("", ".", ".."):
            raise InputError(f"--package {path}: name a new folder for the package")
        if outdir is not None:
            self.check_outdir(outdir)
        ArtifactSet(self.path.parent, [self.path.name], force=force).check()

    def check_outdir(self, outdir: str | os.PathLike[str]) -> None:
        """Refuse a package folder that is the run's output folder itself."""
        if self.path.resolve() == Path(outdir).resolve():
            raise InputError(f"--package {self.path} is the output folder itself",
                             hint="give the package a folder of its own, e.g. OUTDIR/model.pkg")

    @contextmanager
    def staged(self, artifacts: ArtifactSet) -> Iterator[Path]:
        """The staging path to write the package into (absent; committed with ``artifacts``
        when the package lies in their folder, else on leaving this block)."""
        self.check_outdir(artifacts.outdir)
        if self.path.parent.resolve() == artifacts.outdir.resolve():
            yield artifacts.add(self.path.name)
            return
        own = ArtifactSet(self.path.parent, [self.path.name], force=self.force)
        with own.open():
            yield own.path(self.path.name)


def package_metadata(meta: ModelMetadata, stem: str) -> dict[str, Any]:
    """The manifest's ``additional_metadata.edgekit``: producer and what the model is (each
    model file carries the full edgekit metadata)."""
    d = meta.to_dict()
    return {"producer": "edgekit", "edgekit_version": __version__, "model": stem,
            **{k: d.get(k) for k in ("task", "labels", "output_kinds", "preprocessing")}}


_SUMMARY = ("samples", "n_samples", "top1_agreement", "max_abs_error", "accuracy_drop")


def _variant_info(section: Mapping[str, Any], key: str = "evaluation") -> dict[str, Any]:
    """What a variant's manifest metadata keeps of its report: a summary of its comparison
    with fp32 (``evaluation``) or, for fp32, of its validation against Keras (``validation``);
    the full figures are in the run's report."""
    found = section.get(key) or {}
    return {key: {k: found[k] for k in _SUMMARY if found.get(k) is not None}} if found else {}


def _build(model: ExportOutcome | onnx.ModelProto, precision: str, tmp: Path, stem: str,
           config: QuantizationConfig, calibration: Data, eval_data: Data,
           progress: StatusFn | None) -> tuple[Path, dict[str, Any]]:
    """The ``precision`` variant of the fp32 ``model`` (an export's, whose specs and metadata
    are known, or a model read from a file) built in ``tmp``: its file and report."""
    out = tmp / precision
    out.mkdir()
    report_progress(progress, f"package: building the {precision} variant")
    variant = dataclasses.replace(config, mode=QuantMode(precision))
    if isinstance(model, ExportOutcome):
        result = quantize_model(model.model_proto, out, stem, variant, calibration, eval_data,
                                progress, known=(model.inputs, model.metadata))
    else:
        result = quantize_model(model, out, stem, variant, calibration, eval_data, progress)
    return result.path, result.to_dict()


def _write(target: PackageTarget, artifacts: ArtifactSet, tmp: Path, stem: str,
           files: dict[str, Path], info: dict[str, dict[str, Any]],
           meta: ModelMetadata, progress: StatusFn | None) -> dict[str, Any]:
    report_progress(progress, f"package: writing {target.path}")
    with target.staged(artifacts) as dest:
        section = write_package(dest, files, stem, tmp / "assets", info,
                                package_metadata(meta, stem), final=target.path)
    return section


def export_package_hook(
    target: PackageTarget,
    config: QuantizationConfig | None = None,
    calibration: Data = None,
    eval_data: Data = None,
    progress: StatusFn | None = None,
    classes: bool = True,
) -> Callable[[ExportOutcome], None]:
    """An ``extra_outputs`` hook of :func:`edgekit.convert.export_model` that writes the
    fp32, int8 (static QDQ, needs ``calibration``) and fp16 variants as a model package at
    ``target`` and adds ``report["package"]``. Run it after the ``--quantize`` hook: variants
    that hook staged are reused; the others are built with ``config`` (its mode ignored;
    default ``QuantizationConfig()``). Paths are checked now and read once (see
    :class:`~edgekit.inputs.prepare.DataFile`). ``classes``: as
    :func:`~edgekit.quantize.export_hook`'s."""
    if calibration is None:
        raise InputError("--package needs calibration data: its int8 variant is static QDQ",
                         hint="pass --calibration FILE (npz/npy or an IDX folder)")
    if config is not None:
        check_gate_data(config, eval_data, classes)
    calibration = open_data(calibration, "calibration data")
    base = dataclasses.replace(config or QuantizationConfig(),
                               output=OutputConfig(format=OutputFormat.ONNX))

    def hook(outcome: ExportOutcome) -> None:
        artifacts, stem = outcome.artifacts, outcome.stem
        target.check_outdir(artifacts.outdir)
        files = {"fp32": artifacts.path(outcome.onnx_name)}
        info = {"fp32": _variant_info({"validation": asdict(outcome.validation)}, "validation")}
        builds: dict[str, Any] = {}
        staged = cast(Mapping[str, Mapping[str, Any]], outcome.report.get("variants", {}))
        with temp_dir("edgekit-package-") as tmp:
            for precision in ("int8", "fp16"):
                done = staged.get(precision)
                if done and done.get("written"):
                    files[precision] = artifacts.path(done["files"]["model"])
                    info[precision] = _variant_info(done)
                else:
                    files[precision], builds[precision] = _build(
                        outcome, precision, tmp, stem, base, calibration, eval_data, progress)
                    info[precision] = _variant_info(builds[precision])
            section = _write(target, artifacts, tmp, stem, files, info, outcome.metadata,
                             progress)
            section["builds"] = builds
            outcome.report["package"] = section

    return hook


def tune_package(
    target: PackageTarget,
    artifacts: ArtifactSet,
    fp32_path: Path,
    tuned: bytes,
    tuned_precision: str,
    calibration: Data,
    eval_data: Data = None,
    progress: StatusFn | None = None,
) -> dict[str, Any]:
    """Package a tune's result at ``target`` (staged with ``artifacts``): the ``tuned`` file
    as its ``tuned_precision`` (``"int8"`` or ``"fp32"``), the fp32 model ``fp32_path`` (unless
    the tuned file replaces it) and an fp16 variant built from it. Returns the report section."""
    from edgekit.io.onnxfile import load_onnx

    proto = load_onnx(fp32_path)
    stem = fp32_path.name.removesuffix(".onnx")
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    with temp_dir("edgekit-package-") as tmp:
        tuned_file = tmp / f"{stem}.tuned.onnx"
        tuned_file.write_bytes(tuned)
        files = {"fp32": fp32_path, tuned_precision: tuned_file}
        info: dict[str, dict[str, Any]] = {tuned_precision: {"tuned": True}}
        files["fp16"], built = _build(proto, "fp16", tmp, stem, QuantizationConfig(),
                                      calibration, eval_data, progress)
        info["fp16"] = _variant_info(built)
        section = _write(target, artifacts, tmp, stem, files, info, meta, progress)
        section["builds"] = {"fp16": built}
    if tuned_precision != "int8":
        section["notes"] = [f"no int8 variant: the tune's winner is a float model "
                            f"({tuned_precision}), so int8 did not pay off or hold accuracy"]
    return section
