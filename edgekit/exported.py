"""What the export stage hands to later stages: :class:`ExportOutcome`, the one argument of
an ``extra_outputs`` hook of :func:`edgekit.convert.export_model` (the ``--quantize`` and
``--package`` hooks). It lives below the stage packages so that a sibling stage
(:mod:`edgekit.quantize`) can take it without importing :mod:`edgekit.convert`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgekit.inputs.data import Dataset, TensorSpecInfo
from edgekit.inputs.prepare import DataFile
from edgekit.io.artifacts import ArtifactSet
from edgekit.metadata import ModelMetadata
from edgekit.validate import ValidationResult

if TYPE_CHECKING:
    import onnx

__all__ = ["ExportOutcome", "ExportHook"]


@dataclass(frozen=True)
class ExportOutcome:
    """What :func:`~edgekit.convert.export_model` made, handed to its ``extra_outputs`` hooks
    (quantization, packaging) so that they need not re-derive it from the ONNX model or the
    report.

    Attributes:
        artifacts: the output set being written; hooks stage their files into it
            (``artifacts.add(name)``), so that every file is committed at once.
        model_proto: the validated fp32 model as written (its metadata included).
        stem: the stem of the output names (``<stem>.onnx``, ``<stem>.report.json``).
        inputs / outputs: the model's tensor specs.
        metadata: what the model carries (labels, preprocessing, output kinds ...).
        validation: the validation against Keras.
        validation_data: the data validated on (None: synthetic inputs); a
            :class:`~edgekit.inputs.prepare.DataFile` keeps what it read for later stages.
        report: the report being built; hooks add their sections (``variants``, ``package``).
    """

    artifacts: ArtifactSet
    model_proto: onnx.ModelProto
    stem: str
    inputs: tuple[TensorSpecInfo, ...]
    outputs: tuple[TensorSpecInfo, ...]
    metadata: ModelMetadata
    validation: ValidationResult
    validation_data: DataFile | Dataset | None
    report: dict[str, object]

    @property
    def onnx_name(self) -> str:
        """The fp32 model's file name."""
        return f"{self.stem}.onnx"


#: an ``extra_outputs`` hook of :func:`edgekit.convert.export_model`
ExportHook = Callable[[ExportOutcome], None]
