"""Model metadata: labels, input preprocessing and tokenizer, carried from Keras to ONNX.

Pure Python + numpy (no TensorFlow, no onnx), so that the runtime can read it on a device.

Where it lives:
- with a Keras model: inside the ``.keras`` zip as ``edgekit.json``; beside a legacy ``.h5``
  file as ``<stem>.edgekit.json``; inside a SavedModel folder as ``edgekit.json``;
- in an ONNX model: ``metadata_props`` entries whose keys start with ``edgekit.``
  (structured values are JSON text), see :meth:`ModelMetadata.to_props`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract import OutputKind
from edgekit.errors import InputError, SchemaError
from edgekit.schema import Fields, integer, list_of, number, parse_json, scalar_map, string

__all__ = [
    "PREFIX",
    "Preprocessing",
    "ModelMetadata",
    "load_keras_metadata",
    "save_keras_metadata",
    "keras_metadata_path",
    "set_props",
]

PREFIX = "edgekit."
_KERAS_MEMBER = "edgekit.json"
_KINDS = ("image", "tabular", "text", "none")
_OUTPUT_KINDS = tuple(k.value for k in OutputKind)
#: bounds of what metadata may hold: features (mean/std), labels, image side in pixels
_MAX_FEATURES = 1 << 20
_MAX_LABELS = 1 << 20
_MAX_IMAGE_SIDE = 16384


@dataclass
class Preprocessing:
    """How raw inputs become model inputs: ``x = (x * scale + offset - mean) / std``.

    Attributes:
        kind: ``"image"``, ``"tabular"``, ``"text"`` or ``"none"`` (default).
        scale: multiply raw values by this (e.g. ``1/255`` for uint8 images); default 1.
        offset: add after scaling; default 0.
        mean: per-feature mean to subtract (last axis); default none.
        std: per-feature standard deviation to divide by; default none.
        layout: tensor layout of image inputs, ``"NHWC"`` (Keras default) or ``"NCHW"``.
        image_size: ``[height, width]`` that images are resized to; default none.
        color: ``"grayscale"`` or ``"rgb"`` for image inputs; default none.
        raw_dtype: dtype of the raw data the scale applies to (e.g. ``"uint8"``).
    """

    kind: str = "none"
    scale: float = 1.0
    offset: float = 0.0
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: str = "NHWC"
    image_size: list[int] | None = None
    color: str | None = None
    raw_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"unknown preprocessing kind {self.kind!r}")
        if (self.mean is None) != (self.std is None):
            raise InputError("preprocessing needs both mean and std, or neither")
        if self.std is not None and any(s == 0 for s in self.std):
            raise InputError("preprocessing std contains zeros")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise InputError(f"preprocessing has {len(self.mean)} means but {len(self.std)} "
                             "standard deviations")

    @property
    def is_identity(self) -> bool:
        """True when :meth:`apply` changes nothing but the dtype."""
        return self.scale == 1.0 and self.offset == 0.0 and self.mean is None

    def applies_to(self, raw: np.dtype[np.generic]) -> bool:
        """The preprocessing rule: whether raw data of dtype ``raw`` for a float input is
        preprocessed by :meth:`apply` (else it is taken as already preprocessed and only cast).

        Never for an identity; when a ``raw_dtype`` is named (``"uint8"`` images), to integer
        (and boolean) data only, float data being already scaled; when none is named (tabular
        standardisation), always.
        """
        return not self.is_identity and (self.raw_dtype is None or raw.kind in "iub")

    def apply(self, x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Apply scale/offset/standardisation to a raw numeric array, returning ``dtype``."""
        y: np.ndarray = np.asarray(x, dtype=np.float32)
        if self.scale != 1.0:
            y = y * np.float32(self.scale)
        if self.offset != 0.0:
            y = y + np.float32(self.offset)
        if self.mean is not None and self.std is not None:
            y = (y - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return y.astype(dtype, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "preprocessing") -> Preprocessing:
        """Rebuild from :meth:`to_dict` output, every field checked (:class:`SchemaError`
        naming ``where``); unknown keys are ignored."""
        f = Fields(d, where)
        floats = list_of(number(), _MAX_FEATURES, 1)
        side = integer(1, _MAX_IMAGE_SIDE)
        kwargs: dict[str, Any] = dict(
            kind=f.get("kind", string(_KINDS), "none"),
            scale=f.get("scale", number(), 1.0),
            offset=f.get("offset", number(), 0.0),
            mean=f.get("mean", floats, None),
            std=f.get("std", floats, None),
            layout=f.get("layout", string(("NHWC", "NCHW"), fold=True), "NHWC"),
            image_size=f.get("image_size", list_of(side, 2, 2), None),
            color=f.get("color", string(("grayscale", "rgb")), None),
            raw_dtype=f.get("raw_dtype", string(max_len=32), None),
        )
        try:
            return cls(**kwargs)
        except InputError as exc:  # a rule across fields (mean and std ...)
            raise SchemaError(f"{where}: {exc.message}") from None


@dataclass
class ModelMetadata:
    """What edgekit knows about a model beyond its graph.

    Attributes:
        labels: class names, index-aligned with the output; default none.
        preprocessing: how to turn raw inputs into model inputs; default none.
        tokenizer: a serialized :class:`edgekit.inputs.text.TextTokenizer` for text models.
        task: ``"classification"`` (default) or ``"regression"``.
        recipe: the training recipe that made the model, if any.
        output_kinds: the output contract, one :class:`edgekit.contract.OutputKind` value per
            model output (``probabilities``, ``independent``, ``logits``, ``regression``,
            ``other``), written at export; default none (``predict`` then returns outputs
            unchanged). Files written before ``independent`` existed say ``probabilities`` for
            sigmoid outputs too: the runtime reads those from the graph (see
            :func:`edgekit.contract.graph_kind`).
        extra: free-form string properties kept as they are (e.g. export provenance).
    """

    labels: list[str] | None = None
    preprocessing: Preprocessing | None = None
    tokenizer: dict[str, Any] | None = None
    task: str = "classification"
    recipe: str | None = None
    output_kinds: list[str] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    # -- JSON (Keras side) -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "labels": self.labels,
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
            "tokenizer": self.tokenizer,
            "task": self.task,
            "recipe": self.recipe,
        }
        if self.output_kinds is not None:
            d["output_kinds"] = list(self.output_kinds)
        if self.extra:
            d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ModelMetadata:
        """Rebuild from :meth:`to_dict` output, every field checked (:class:`SchemaError`)."""
        f = Fields(d)
        meta = cls._checked(f, f.get("extra", scalar_map(), {}))
        meta.output_kinds = meta.output_kinds or None
        return meta

    @classmethod
    def _checked(cls, f: Fields, extra: dict[str, str]) -> ModelMetadata:
        """The metadata in ``f`` (parsed JSON values), each field checked."""
        pre = f.data.get("preprocessing")
        return cls(
            labels=f.get("labels", list_of(string(), _MAX_LABELS), None),
            preprocessing=None if pre is None or pre == {} else Preprocessing.from_dict(
                pre, f.path("preprocessing")),
            tokenizer=f.get("tokenizer", _tokenizer, None),
            task=f.get("task", string(max_len=64), None) or "classification",
            recipe=f.get("recipe", string(max_len=256), None),
            output_kinds=f.get("output_kinds", list_of(string(_OUTPUT_KINDS), 1 << 16), None),
            extra=extra,
        )

    # -- ONNX metadata_props -------------------------------------------------------------
    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries (all keys prefixed ``edgekit.``)."""
        props: dict[str, str] = {PREFIX + "task": self.task}
        if self.labels is not None:
            props[PREFIX + "labels"] = json.dumps(self.labels)
        if self.preprocessing is not None:
            props[PREFIX + "preprocessing"] = json.dumps(self.preprocessing.to_dict())
        if self.tokenizer is not None:
            props[PREFIX + "tokenizer"] = json.dumps(self.tokenizer)
        if self.recipe is not None:
            props[PREFIX + "recipe"] = self.recipe
        if self.output_kinds is not None:
            props[PREFIX + "output_kinds"] = json.dumps(self.output_kinds)
        for k, v in self.extra.items():
            props[k if k.startswith(PREFIX) else PREFIX + k] = v
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Read back what :meth:`to_props` wrote, every value checked (:class:`SchemaError`
        naming the key); other ``edgekit.*`` keys go to ``extra``."""
        own = {"labels", "preprocessing", "tokenizer", "output_kinds"}  # JSON values
        values: dict[str, Any] = {k: props.get(PREFIX + k) for k in ("task", "recipe")}
        for k in own:
            text = props.get(PREFIX + k)
            values[k] = parse_json(text, PREFIX + k) if text else None
        own |= {"task", "recipe"}
        extra = {
            k: v for k, v in props.items() if k.startswith(PREFIX) and k[len(PREFIX):] not in own
        }
        return cls._checked(Fields(values, PREFIX.rstrip(".")), extra)

    def get_json(self, key: str) -> Any:
        """Parse ``extra[edgekit.<key>]`` as JSON; None when absent."""
        v = self.extra.get(PREFIX + key)
        return parse_json(v, PREFIX + key) if v else None


def keras_metadata_path(model_path: str | os.PathLike[str]) -> Path:
    """Sidecar file used for ``.h5`` models and SavedModel folders."""
    p = Path(model_path)
    if p.is_dir():
        return p / _KERAS_MEMBER
    return p.with_name(p.stem + ".edgekit.json")


def load_keras_metadata(model_path: str | os.PathLike[str]) -> ModelMetadata | None:
    """Metadata stored with a Keras model, or None when there is none."""
    p = Path(model_path)
    text: str | None = None
    if p.is_file() and p.suffix == ".keras" and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            if _KERAS_MEMBER in zf.namelist():
                text = zf.read(_KERAS_MEMBER).decode()
    if text is None:
        side = keras_metadata_path(p)
        if side.is_file():
            text = side.read_text()
    if text is None:
        return None
    try:
        return ModelMetadata.from_dict(parse_json(text, _KERAS_MEMBER))
    except InputError as exc:
        raise InputError(f"edgekit metadata of {p} is malformed: {exc.message}") from exc


def save_keras_metadata(model_path: str | os.PathLike[str], meta: ModelMetadata) -> Path:
    """Store ``meta`` with a Keras model (inside a ``.keras`` zip, else as a sidecar file)."""
    p = Path(model_path)
    text = json.dumps(meta.to_dict(), indent=2)
    if p.is_file() and p.suffix == ".keras":
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(p) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
                for item in src.infolist():
                    if item.filename != _KERAS_MEMBER:
                        dst.writestr(item, src.read(item.filename))
                dst.writestr(_KERAS_MEMBER, text)
            shutil.copymode(p, tmp)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p
    side = keras_metadata_path(p)
    side.write_text(text)
    return side


def set_props(model_proto: Any, props: dict[str, str]) -> None:
    """Set ``metadata_props`` entries of an ``onnx.ModelProto`` (other entries are kept)."""
    existing = {p.key: p for p in model_proto.metadata_props}
    for k, v in props.items():
        if k in existing:
            existing[k].value = v
        else:
            entry = model_proto.metadata_props.add()
            entry.key, entry.value = k, v


def _tokenizer(value: Any, where: str) -> dict[str, Any]:
    """``value`` when :class:`~edgekit.inputs.text.TextTokenizer` can be rebuilt from it."""
    from edgekit.inputs.text import TextTokenizer

    TextTokenizer.from_dict(value, where)  # checks every field
    return dict(value)
