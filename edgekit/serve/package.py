"""``edgekit package``: an ONNX model as a Triton Inference Server model repository, plus a
KServe ``InferenceService`` manifest (Open Inference Protocol, ``protocolVersion: v2``).

Layout written under the repository folder ``REPO``::

    REPO/NAME/config.pbtxt      # platform onnxruntime_onnx, dims without the batch axis,
                                # max_batch_size + dynamic_batching when the batch is dynamic
    REPO/NAME/1/model.onnx      # the model, byte for byte
    REPO/NAME/labels.txt        # class labels (Triton's classification extension), if any
    REPO/NAME.kserve.yaml       # InferenceService on the kserve-tritonserver runtime

Everything is staged and committed at once (:class:`edgekit.io.artifacts.ArtifactSet`); existing
outputs are kept unless ``force``. Needs only the base install (onnxruntime reads the model).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.io.artifacts import ArtifactSet
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.specs import InputSpec
from edgekit.serve.v2 import check_model_name, default_model_name, v2_datatype

__all__ = [
    "PackageConfig",
    "PackageResult",
    "package_triton",
    "triton_config_text",
    "kserve_manifest",
]

@dataclass(frozen=True)
class PackageConfig:
    """How to package a model for Triton / KServe.

    Attributes:
        name: Triton model name; default None (the file's stem).
        max_batch: Triton ``max_batch_size``; default 32 (0: no batching; a model without a
            dynamic batch axis always gets 0).
        max_delay_us: dynamic batching ``max_queue_delay_microseconds``; default 2000.
        instances: model instances (``instance_group`` count); default 1.
        gpu: run the instances on GPUs (``KIND_GPU``); default False (``KIND_CPU``).
        storage_uri: where KServe finds the repository; default None (a ``pvc://``
            placeholder to edit).
    """

    name: str | None = None
    max_batch: int = 32
    max_delay_us: int = 2000
    instances: int = 1
    gpu: bool = False
    storage_uri: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_model_name(self.name)
        for attr, low in (("max_batch", 0), ("max_delay_us", 0), ("instances", 1)):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InputError(f"{attr} must be an integer >= {low}, got {v!r}")


@dataclass
class PackageResult:
    """What :func:`package_triton` wrote."""

    name: str
    repository: Path
    config: Path
    model: Path
    manifest: Path
    labels: Path | None
    max_batch_size: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def summary(self) -> str:
        lines = [
            f"Triton model {self.name!r} in {self.repository}:",
            f"  {self.config}",
            f"  {self.model}",
        ]
        if self.labels is not None:
            lines.append(f"  {self.labels}")
        lines.append(f"KServe InferenceService: {self.manifest}")
        batching = (
            f"max_batch_size {self.max_batch_size}, dynamic batching"
            if self.max_batch_size
            else "no batching (max_batch_size 0)"
        )
        lines.append(f"  {batching}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _triton_type(spec: InputSpec) -> str:
    dt = v2_datatype(spec.dtype)
    if dt == "BYTES":
        raise InputError(
            f"tensor {spec.name!r} has type {spec.type}, which Triton packaging does not support"
        )
    return "TYPE_" + dt


def _dims(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_block(spec: InputSpec, batched: bool, label_file: str | None) -> str:
    shape = [-1 if d is None else int(d) for d in spec.shape]
    dims = shape[1:] if batched else shape
    lines = [f"    name: {json.dumps(spec.name)}", f"    data_type: {_triton_type(spec)}"]
    if dims:
        lines.append(f"    dims: {_dims(dims)}")
    else:  # a [N] tensor: Triton needs at least one dim
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    if label_file:
        lines.append(f"    label_filename: {json.dumps(label_file)}")
    return "  {\n" + "\n".join(lines) + "\n  }"


def triton_config_text(
    model: EdgeModel, name: str, config: PackageConfig, label_file: str | None = None
) -> tuple[str, int, list[str]]:
    """``config.pbtxt`` text for ``model``, its ``max_batch_size`` and notes for the user."""
    notes: list[str] = []
    specs = [*model.inputs, *model.outputs]
    batchable = all(s.ndim >= 1 and s.shape[0] is None for s in specs)
    max_batch = config.max_batch if batchable else 0
    if config.max_batch and not batchable:
        fixed = [s.name for s in specs if s.ndim == 0 or s.shape[0] is not None]
        notes.append(
            f"no batching: {', '.join(map(repr, fixed))} have no dynamic batch axis, so "
            "max_batch_size is 0 (re-export with a dynamic batch dimension to batch)"
        )
    batched = max_batch > 0
    inputs = ",\n".join(_tensor_block(s, batched, None) for s in model.inputs)
    outputs = ",\n".join(
        _tensor_block(s, batched, label_file if i == 0 else None)
        for i, s in enumerate(model.outputs)
    )
    kind = "KIND_GPU" if config.gpu else "KIND_CPU"
    parts = [
        f"name: {json.dumps(name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
    ]
    if batched:
        parts.append(
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {config.max_delay_us}\n}}"
        )
    group = f"  {{\n    count: {config.instances}\n    kind: {kind}\n  }}"
    parts.append(f"instance_group [\n{group}\n]")
    return "\n".join(parts) + "\n", max_batch, notes


def _service_name(name: str) -> str:
    """A DNS-1123 label (what Kubernetes accepts as a resource name) from a model name."""
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not s or not s[0].isalpha():
        s = "model-" + s
    return s[:45].rstrip("-")


def kserve_manifest(name: str, storage_uri: str, gpu: bool = False) -> str:
    """YAML of a KServe ``InferenceService`` serving the Triton repository at ``storage_uri``."""
    limits = '        limits:\n          nvidia.com/gpu: "1"\n' if gpu else ""
    resources = f"      resources:\n{limits}" if gpu else ""
    return (
        "# KServe InferenceService for the Triton model repository written by edgekit package.\n"
        "# Copy the repository folder to storageUri, then: kubectl apply -f this file.\n"
        "# Inference (Open Inference Protocol): POST /v2/models/"
        f"{name}/infer\n"
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata:\n"
        f"  name: {_service_name(name)}\n"
        "spec:\n"
        "  predictor:\n"
        "    model:\n"
        "      modelFormat:\n"
        "        name: triton\n"
        "      protocolVersion: v2\n"
        "      runtime: kserve-tritonserver\n"
        f"      storageUri: {json.dumps(storage_uri)}\n"
        f"{resources}"
    )


def _model_config(src: Path, name: str, config: PackageConfig
                  ) -> tuple[str, int, list[str], list[str] | None]:
    """The Triton ``config.pbtxt`` text, max batch size, notes, and the labels worth a label
    file (None when the model has none or they do not match its first output)."""
    with EdgeModel(src, "cpu") as model:
        labels = model.labels
        out0 = model.outputs[0] if model.outputs else None
        label_ok = (
            labels is not None and out0 is not None and out0.ndim >= 1
            and out0.shape[-1] in (len(labels), None)
        )  # fmt: skip
        text, max_batch, notes = triton_config_text(
            model, name, config, "labels.txt" if label_ok else None)
    return text, max_batch, notes, (list(labels) if label_ok and labels is not None else None)


def package_triton(
    model_path: str | os.PathLike[str],
    repository: str | os.PathLike[str],
    config: PackageConfig | None = None,
    *,
    force: bool = False,
) -> PackageResult:
    """Write a Triton model repository entry and a KServe manifest for ``model_path``.

    Args:
        model_path: the ``.onnx`` model (``.ort`` files are not supported by Triton).
        repository: the model repository folder (created if missing; other models in it stay).
        config: packaging settings; default :class:`PackageConfig` ().
        force: overwrite this model's existing entry and manifest; default False.
    """
    config = config or PackageConfig()
    src = Path(model_path)
    if src.suffix.lower() != ".onnx":
        raise InputError(
            f"{src} is not an .onnx file",
            hint="Triton's onnxruntime backend loads .onnx models; package the .onnx export",
        )
    name = config.name or default_model_name(src)
    repo = Path(repository)
    manifest_name = f"{name}.kserve.yaml"
    aset = ArtifactSet(repo, [name, manifest_name], force=force)
    aset.check()  # before loading the model
    text, max_batch, notes, labels = _model_config(src, name, config)
    label_file = "labels.txt" if labels is not None else None
    storage = config.storage_uri or f"pvc://model-store/{repo.name or 'models'}"
    if config.storage_uri is None:
        notes.append(f"storageUri is a placeholder ({storage}): edit it in {manifest_name}")
    with aset.open():  # an existing entry (a folder) is swapped out with the manifest
        entry = aset.path(name)
        (entry / "1").mkdir(parents=True)
        (entry / "config.pbtxt").write_text(text)
        shutil.copyfile(src, entry / "1" / "model.onnx")
        if label_file and labels is not None:
            (entry / label_file).write_text("".join(f"{lab}\n" for lab in labels))
        aset.write_bytes(manifest_name, kserve_manifest(name, storage, config.gpu).encode())
    final = aset.final(name)
    return PackageResult(
        name=name,
        repository=repo,
        config=final / "config.pbtxt",
        model=final / "1" / "model.onnx",
        manifest=aset.final(manifest_name),
        labels=final / label_file if label_file else None,
        max_batch_size=max_batch,
        notes=notes,
    )
