"""Options of the export stage: :class:`ExportConfig` and the ``--labels`` file reader."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgekit.contract import parse_output_kinds
from edgekit.convert.signature import InputSpec
from edgekit.convert.tfconvert import MAX_OPSET
from edgekit.errors import InputError
from edgekit.schema import parse_json
from edgekit.validate import DEFAULT_ATOL, DEFAULT_RTOL

__all__ = ["MIN_OPSET", "ExportConfig", "read_labels"]

MIN_OPSET = 13


@dataclass
class ExportConfig:
    """Options of :func:`export_model`.

    Attributes:
        opset: ONNX opset to target, 13..18 (default 17).
        atol / rtol: validation fails when any output element differs from Keras by more
            than ``atol + rtol * |keras|`` (defaults 1e-4 and 1e-3, see :mod:`edgekit.validate`).
        validation_samples: synthetic samples when no validation data is given (default 256);
            also the cap on samples read from validation data (0 = all).
        labels: class names stored in the model (default: the Keras model's own metadata).
        seed: seed of the synthetic inputs (default 0).
        simplify: static Flatten shapes, conversion Transposes folded into weights, the
            Embedding's index wrap left to Gather, Conv1D bias and activation fused (default
            True; see :mod:`edgekit.convert.graph` and :mod:`edgekit.convert.rewrites`).
            Validation covers the simplified graph.
        force: overwrite existing outputs (default False).
        strict: fail when validation ran on degenerate reference outputs (default False: warn).
        noise_envelope: elements beyond ``atol + rtol * |keras|`` pass when they lie within
            Keras' own float noise (default True; see :mod:`edgekit.convert.noise`); False:
            every such element fails.
        batch_size: batch size of Keras and onnxruntime during validation (default 8); peak
            memory grows with it and the model, not with the sample count.
        output_kinds: the output contract, one of ``probabilities``, ``independent``,
            ``logits``, ``regression``, ``other`` per output (default None: read from each
            output's final Keras activation, see :mod:`edgekit.contract`).
        input_specs: the model's input signature given explicitly, one :class:`InputSpec` per
            input (``--input-spec``; default None: the model's own inputs, else for a
            subclassed model its build shapes, else a sample of the validation data; see
            :mod:`edgekit.convert.signature`).
    """

    opset: int = 17
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    validation_samples: int = 256
    labels: list[str] | None = None
    seed: int = 0
    simplify: bool = True
    force: bool = False
    output_kinds: list[str] | None = None
    strict: bool = False
    noise_envelope: bool = True
    batch_size: int = 8
    input_specs: list[InputSpec] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.opset, int) or self.opset > MAX_OPSET:
            raise InputError(
                f"opset {self.opset} is not supported: tf2onnx 1.17 converts to opset "
                f"{MAX_OPSET} at most",
                hint=f"use --opset {MAX_OPSET} or lower (default 17)",
            )
        if self.opset < MIN_OPSET:
            raise InputError(
                f"opset {self.opset} is too old for edgekit (needs {MIN_OPSET}..{MAX_OPSET})",
                hint="use the default --opset 17",
            )
        if not (self.atol > 0 and self.rtol >= 0):
            raise InputError(f"atol must be > 0 and rtol >= 0, got {self.atol} and {self.rtol}")
        if self.validation_samples < 0:
            raise InputError("validation_samples must be >= 0")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        self._check_input_specs()
        kinds = parse_output_kinds(self.output_kinds)
        self.output_kinds = None if kinds is None else [k.value for k in kinds]

    def _check_input_specs(self) -> None:
        specs = self.input_specs
        if specs is None:
            return
        if not specs or not all(isinstance(s, InputSpec) for s in specs):
            raise InputError("input_specs must be a non-empty list of InputSpec",
                             hint="e.g. [InputSpec('x', (None, 28, 28, 1), 'float32')] or "
                             "InputSpec.parse('x:None,28,28,1:float32')")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise InputError(f"input_specs name an input twice: {names}")
        self.input_specs = list(specs)


def read_labels(path: str | os.PathLike[str]) -> list[str]:
    """Class labels from a text file (one per line) or a JSON list."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {p} does not exist", hint="check the --labels path")
    text = p.read_text().strip()
    if text.startswith("["):
        labels = [str(x) for x in parse_json(text, f"labels file {p}")]
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise InputError(f"labels file {p} is empty")
    return labels
