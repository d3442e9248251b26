"""Inputs from files and the ``edgekit run`` command: :func:`load_image` (from
:mod:`edgekit.inputs.images`, shared with image-folder data), :func:`load_array`,
:func:`predict_input` (a JSON-ready report) and :func:`format_predictions`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract import DEFAULT_THRESHOLD, has_class_rows
from edgekit.errors import InputError
from edgekit.inputs.data import read_inputs
from edgekit.inputs.images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, load_image
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.specs import check_outputs_finite

__all__ = ["MAX_IMAGE_PIXELS", "load_image", "load_array", "predict_input", "format_predictions"]


def load_array(
    path: str | os.PathLike[str], input_names: Iterable[str] = ()
) -> np.ndarray | dict[str, np.ndarray]:
    """The input array of a ``.npy``/``.npz`` file (a dict by input name for a multi-input
    model), by the array-name rule of :func:`edgekit.inputs.data.read_inputs`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file {p} does not exist")
    names = list(input_names)
    inputs, _ = read_inputs(p, names, "input", InputError)
    return inputs if len(names) > 1 else next(iter(inputs.values()))


def predict_input(
    model: str | os.PathLike[str] | EdgeModel,
    input_path: str | os.PathLike[str] | None = None,
    *,
    text: str | None = None,
    provider: str = "auto",
    fallback: bool = False,
    top_k: int | None = None,
    engine: str = "auto",
    variant: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, object]:
    """What ``edgekit run`` does: load the input, predict, return a JSON-ready report.

    ``input_path`` is a ``.npy``/``.npz`` file or an image file; ``text`` is raw text for text
    models (exactly one of them). ``top_k`` defaults to 3 labels per sample, for a multi-label
    model to every label at or over ``threshold`` (default 0.5; the report then says
    ``multi_label`` and the threshold, see :meth:`EdgeModel.top_k`); outputs per pixel or step
    are reported as ``outputs``. ``engine`` defaults to ``"auto"``; ``variant`` (model
    packages) to None: the selected one (see :class:`EdgeModel`).
    """
    if (input_path is None) == (text is None):
        raise InputError("give exactly one input: a file, or --text for text models")
    em = (
        model
        if isinstance(model, EdgeModel)
        else EdgeModel(model, provider, fallback=fallback, engine=engine, variant=variant)
    )
    x, source = _read_input(em, input_path, text)
    probs = em.predict(x)
    check_outputs_finite(probs)
    report: dict[str, Any] = {
        "model": str(em.path),
        "input": source,
        "engine": em.engine_name,
        "providers": em.providers,
        "task": em.metadata.task,
    }
    if em.package is not None:
        report["package"] = em.package.to_dict()
        report["package"]["why"] = em.package.reason()
    if em.metadata.task == "classification" and has_class_rows(probs):
        if em.multi_label(probs):
            report["multi_label"], report["threshold"] = True, threshold
        report["predictions"] = [
            [{"label": lab, "probability": prob} for lab, prob in row]
            for row in em.top_k(probs, top_k, threshold=threshold)
        ]
    else:
        report["outputs"] = probs.tolist()
    return report


def _read_input(
    em: EdgeModel, input_path: str | os.PathLike[str] | None, text: str | None
) -> tuple[Any, str]:
    """The model input and its description for :func:`predict_input`."""
    if text is not None:
        x: Any = [text]
        source = "text"
    else:
        p = Path(input_path)  # type: ignore[arg-type]
        suffix = p.suffix.lower()
        if suffix in (".npy", ".npz"):
            x = load_array(p, em.input_names)
        elif suffix in IMAGE_SUFFIXES:
            x = load_image(p, em.preprocessing)
        else:
            raise InputError(
                f"unsupported input file type {suffix or p.name!r}",
                hint="use a .npy/.npz array, a PNG/JPEG image, or --text",
            )
        source = str(p)
    return x, source


def format_predictions(report: Mapping[str, object]) -> str:
    """Human-readable table of a :func:`predict_input` report."""
    data: Mapping[str, Any] = report
    lines = [f"model: {data['model']}  ({', '.join(data['providers'])})"]
    if data.get("package"):
        lines.append(f"package: {data['package']['path']}: {data['package']['why']}")
    if "outputs" in data:
        lines += [f"sample {i}: {row}" for i, row in enumerate(data["outputs"])]
        return "\n".join(lines)
    rows = data["predictions"]
    width = max([5] + [len(p["label"]) for row in rows for p in row])
    for i, row in enumerate(rows):
        if len(rows) > 1:
            lines.append(f"sample {i}:")
        lines.append(f"  {'label':<{width}}  probability")
        lines += [f"  {p['label']:<{width}}  {p['probability']:.4f}" for p in row]
        if not row:  # multi-label: none at or over the threshold
            lines.append(f"  (no label at or over {data.get('threshold')})")
    return "\n".join(lines)
