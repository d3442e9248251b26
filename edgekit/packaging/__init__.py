"""ONNX Runtime model packages written by ``edgekit export/tune --package`` (the format, the
variant table and the selection live in :mod:`edgekit.runtime.modelpackage`)."""

from __future__ import annotations

from edgekit.packaging.build import PackageTarget, export_package_hook, tune_package
from edgekit.packaging.write import write_package

__all__ = ["PackageTarget", "export_package_hook", "tune_package", "write_package"]
