"""What an export records: the model's output contract and labels, the ``metadata_props`` the
ONNX file carries (see :mod:`edgekit.metadata`) and the ``<stem>.report.json`` content.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit import __version__
from edgekit.contract import output_kind
from edgekit.convert.config import ExportConfig
from edgekit.convert.load import KerasSource
from edgekit.errors import InputError
from edgekit.io.artifacts import sha256_file
from edgekit.metadata import PREFIX, ModelMetadata

if TYPE_CHECKING:
    import onnx

__all__ = ["build_report", "check_labels", "library_versions", "onnx_metadata_props",
           "output_contract"]


def library_versions() -> dict[str, str]:
    """Versions of the libraries in the export path (those importable)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "edgekit": __version__}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def check_labels(source: KerasSource, config: ExportConfig) -> None:
    """Set ``config.labels`` (when given) as the source's labels; raise :class:`InputError`
    when their count does not match the first output's classes."""
    meta = source.metadata
    if config.labels is not None:
        meta.labels = list(config.labels)
    n_classes = source.outputs[0].shape[-1] if source.outputs and source.outputs[0].shape else None
    if meta.labels is not None and n_classes not in (None, len(meta.labels)):
        if not (n_classes == 1 and len(meta.labels) == 2):
            raise InputError(
                f"{len(meta.labels)} labels given but the model has {n_classes} output classes",
                hint="give one label per output class",
            )


def output_contract(source: KerasSource, meta: ModelMetadata, config: ExportConfig) -> list[str]:
    """The kind of each output: ``config.output_kinds`` when given, else from each output's
    final activation (a linear end counts as logits only for a known classifier: labels or
    an edgekit recipe; pass ``--output-kind logits`` otherwise)."""
    n = len(source.outputs)
    if config.output_kinds is not None:
        if len(config.output_kinds) != n:
            raise InputError(
                f"{len(config.output_kinds)} output kind(s) given but the model has {n} output(s)",
                hint="give one --output-kind per output, in order",
            )
        return list(config.output_kinds)
    classifier = meta.task == "classification" and (
        meta.labels is not None or meta.recipe is not None)
    acts = source.output_activations or ["unknown"] * n
    return [output_kind(a, meta.task, classifier).value for a in acts]


def onnx_metadata_props(
    source: KerasSource, opset: int, meta: ModelMetadata, config: ExportConfig
) -> dict[str, str]:
    """The ``metadata_props`` an exported model carries (see :mod:`edgekit.metadata`)."""
    props = meta.to_props()
    props.update(
        {
            PREFIX + "version": __version__,
            PREFIX + "source": source.path.name if source.path else source.name,
            PREFIX + "source_sha256": sha256_file(source.path) if source.path else "",
            PREFIX + "opset": str(opset),
            PREFIX + "inputs": json.dumps([s.to_dict() for s in source.inputs]),
            PREFIX + "outputs": json.dumps([s.to_dict() for s in source.outputs]),
            PREFIX + "export_config": json.dumps(asdict(config)),
        }
    )
    return props


def build_report(source: KerasSource, config: ExportConfig, model_proto: onnx.ModelProto,
                 simplified: list[str], validation: dict[str, object],
                 onnx_file: dict[str, object], timings: dict[str, float]) -> dict[str, object]:
    """The ``<stem>.report.json`` content (later stages add their sections to it)."""
    return {
        "edgekit_version": __version__,
        "source": {
            "path": str(source.path) if source.path else None,
            "format": source.format,
            "sha256": sha256_file(source.path) if source.path else None,
            "size_bytes": _size(source.path) if source.path else None,
        },
        "versions": library_versions(),
        "config": asdict(config),
        "inputs": [s.to_dict() for s in source.inputs],
        "outputs": [s.to_dict() for s in source.outputs],
        "metadata": source.metadata.to_dict(),
        "graph": {
            "opset": config.opset,
            "nodes": len(model_proto.graph.node),
            "op_histogram": _op_histogram(model_proto),
            "simplified": simplified,
            "lowered": source.lowered,
            # outputs not per-sample: compare the file with anything on the same batches only
            "batch_dependent": bool(validation.get("batch_dependent")),
        },
        "validation": validation,
        "files": {"onnx": onnx_file},
        "timings_s": timings,
    }


def _op_histogram(model_proto: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model_proto.graph.node).most_common())


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
