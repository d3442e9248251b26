"""Image files as uint8 arrays, resized and greyscaled as a model's metadata says: the one image
reader of ``edgekit run`` and of image-folder data (:mod:`edgekit.inputs.folders`).

Pillow is imported lazily by :func:`load_image` only (``edgekit[image]``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError, require
from edgekit.metadata import Preprocessing

__all__ = ["MAX_IMAGE_PIXELS", "IMAGE_SUFFIXES", "load_image"]

#: file suffixes read as images (lower case)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: images with more pixels are refused from their header, before a pixel is decoded (a 20000 x
#: 20000 PNG of a few KiB would otherwise take 1.2 GB); an 8K frame is 33 Mpixel
MAX_IMAGE_PIXELS = 40_000_000


def _too_large(p: Path, size: str) -> InputError:
    return InputError(f"image {p} is over edgekit's limit of {MAX_IMAGE_PIXELS // 1_000_000} "
                      f"Mpixel ({size}; edgekit.runtime.MAX_IMAGE_PIXELS)",
                      hint="resize it to the model's input size before running it")


def _open_image(image_mod: Any, p: Path) -> Any:
    """The image at ``p``, opened (its header read, no pixel decoded) and within the limit."""
    with warnings.catch_warnings():  # Pillow only warns from 89 Mpixel on: refuse it too
        warnings.simplefilter("error", image_mod.DecompressionBombWarning)
        try:
            im = image_mod.open(p)
        except (image_mod.DecompressionBombError, image_mod.DecompressionBombWarning) as exc:
            raise _too_large(p, str(exc).split(",")[0]) from exc
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise _too_large(p, f"{w} x {h} pixels")
    return im


def load_image(
    path: str | os.PathLike[str], preprocessing: Preprocessing | None = None
) -> np.ndarray:
    """uint8 image array as the metadata describes it (needs ``edgekit[image]``).

    Resized to ``image_size`` ([height, width]) when set, greyscaled when ``color`` is
    ``"grayscale"`` (RGB when ``"rgb"``), shaped HWC (CHW for ``layout="NCHW"``).
    """
    image_mod: Any = require("PIL.Image", "image", package="pillow")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file {p} does not exist")
    pre = preprocessing or Preprocessing()
    try:
        with _open_image(image_mod, p) as im:
            if pre.color == "grayscale":
                im = im.convert("L")
            elif pre.color == "rgb" or im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            if pre.image_size:
                h, w = (int(v) for v in pre.image_size)
                im = im.resize((w, h), image_mod.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {p}: {exc}") from exc
    if a.ndim == 2:
        a = a[..., None]
    if pre.layout.upper() == "NCHW":
        a = np.ascontiguousarray(a.transpose(2, 0, 1))
    return a
