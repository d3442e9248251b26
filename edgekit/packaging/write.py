"""Writing an ONNX Runtime model package with onnxruntime's own authoring API.

:func:`write_package` takes one model file per precision (``fp32``, ``int8``, ``fp16``) and
writes, through ``onnxruntime.ModelPackage``, a package whose layout is described in
:mod:`edgekit.runtime.modelpackage`: each file becomes a content-addressed shared asset, and each
entry of :data:`~edgekit.runtime.modelpackage.VARIANT_TARGETS` whose precision is present
becomes a variant pointing at it. The package is then read back with onnxruntime's two readers
(``ModelPackage.open`` with every model file resolved, and the session-side
``ModelPackageContext`` selecting a variant) before it is reported; the caller writes it into a
staging folder, so a package that fails here is never published.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgekit.errors import ModelLoadError, OutputError, fs_fault, output_error
from edgekit.io.artifacts import fsync_files, sha256_file
from edgekit.runtime.modelpackage import (
    COMPONENT,
    EXECUTOR,
    NAMESPACE,
    VARIANT_TARGETS,
    read_package,
    require_model_packages,
)

__all__ = ["write_package", "PRECISION_FORMATS"]

#: What each precision's file holds (recorded in every variant's metadata).
PRECISION_FORMATS = {
    "fp32": "float32",
    "int8": "int8 QDQ (ai.onnx QuantizeLinear/DequantizeLinear), float32 inputs/outputs",
    "fp16": "float16 weights and compute, float32 inputs/outputs",
}


def _stage_asset(src: Path, folder: Path) -> Path:
    """``src`` alone in ``folder`` (a shared asset is a folder, hashed as a whole)."""
    folder.mkdir(parents=True)
    dst = folder / src.name
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links there: copy
        shutil.copyfile(src, dst)
    return dst


def _entry(root: Path, path: Path) -> dict[str, Any]:
    return {"path": path.relative_to(root).as_posix(), "size_bytes": path.stat().st_size,
            "sha256": sha256_file(path)}


def _author(dest: Path, files: Mapping[str, Path], scratch: Path, stem: str,
            variant_info: Mapping[str, Mapping[str, Any]],
            metadata: Mapping[str, Any]) -> dict[str, str]:
    """Author and commit the package into ``dest``; the shared asset URI per precision."""
    pkg = ort.ModelPackage()
    try:
        pkg.set_metadata(stem, None, f"{stem}: " + ", ".join(files) + " variants (edgekit)")
        pkg.set_component_inline(COMPONENT, json.dumps({"variants": {}}))
        refs: dict[str, str] = {}
        for precision, path in files.items():
            asset = _stage_asset(path, scratch / precision)
            refs[precision] = f"{pkg.add_shared_asset(str(asset.parent))}/{asset.name}"
        for t in VARIANT_TARGETS:
            if t.precision not in refs:
                continue
            ours = {"precision": t.precision, "format": PRECISION_FORMATS[t.precision],
                    **variant_info.get(t.precision, {})}
            pkg.set_variant(COMPONENT, t.name, json.dumps(
                {"ep": t.ep, "device": t.device, "additional_metadata": {NAMESPACE: ours}}))
            pkg.set_variant_executor_info_inline(
                COMPONENT, t.name, EXECUTOR, json.dumps({"model_file": refs[t.precision]}))
        pkg.set_additional_metadata_json("manifest", None, None,
                                         json.dumps({NAMESPACE: dict(metadata)}))
        pkg.commit(str(dest))
    finally:
        pkg.close()
    return {p: r.split("/", 1)[0] for p, r in refs.items()}


def _check_with_onnxruntime(dest: Path, eps: list[str | None]) -> None:
    """onnxruntime's session-side reader opens the package (every model file resolved), sees
    each variant's EP (``eps``, manifest order) and, when one is for CPU, selects it for the
    default providers, as ``ModelPackageComponentContext.create_session`` would."""
    ctx = ort.ModelPackageContext(str(dest))
    seen = [ctx.get_variant_ep_name(COMPONENT, n) for n in ctx.get_variant_names(COMPONENT)]
    if seen != eps:
        raise ValueError(f"onnxruntime reads the variants' EPs as {seen}, not {eps}")
    if "CPUExecutionProvider" in eps:
        ctx.select_component(COMPONENT, ort.ModelPackageOptions(ort.SessionOptions()))


def write_package(
    dest: str | os.PathLike[str],
    files: Mapping[str, str | os.PathLike[str]],
    stem: str,
    scratch: str | os.PathLike[str],
    variant_info: Mapping[str, Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    final: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write a model package of ``files`` (precision -> ``.onnx`` file) into ``dest`` (absent
    or empty; a staging path) and return its report section.

    Args:
        dest: the package folder to create.
        files: ``fp32`` / ``int8`` / ``fp16`` -> model file (each becomes a shared asset).
        stem: the model's name (the package name).
        scratch: an empty scratch folder (asset sources; kept until this returns).
        variant_info: more edgekit metadata per precision (e.g. its evaluation); default none.
        metadata: edgekit metadata of the package (manifest ``additional_metadata.edgekit``).
        final: where ``dest`` will be published (the report's ``path``); default ``dest``.

    Raises:
        OutputError: onnxruntime could not write the package, or cannot read it back.
    """
    require_model_packages()
    root, scratch = Path(dest).absolute(), Path(scratch)
    shown = Path(final) if final is not None else root
    try:
        uris = _author(root, {p: Path(f) for p, f in files.items()}, scratch, stem,
                       variant_info or {}, metadata or {})
        contents = read_package(root)
        _check_with_onnxruntime(root, [v.ep for v in contents.variants])
        fsync_files(sorted(root.rglob("*")))  # every file, before it is published
    except (OSError, ValueError, RuntimeError, ModelLoadError) as exc:
        if isinstance(exc, OSError) and fs_fault(exc) is not None:
            raise output_error(exc, shown) from exc
        why = exc.message if isinstance(exc, ModelLoadError) else str(exc).strip()
        raise OutputError(f"onnxruntime could not write the model package {shown}: "
                          f"{why.splitlines()[-1] if why else type(exc).__name__}",
                          hint="this is a bug in edgekit or onnxruntime; please report it") from exc
    assets = {p: {"uri": uri, "file": _entry(root, next(
        v.model_file for v in contents.variants if v.precision == p))} for p, uri in uris.items()}
    return {
        "path": str(shown),
        "manifest": _entry(root, root / "manifest.json"),
        "assets": assets,
        "variants": [{"name": v.name, "ep": v.ep, "device": v.device, "precision": v.precision}
                     for v in contents.variants],
    }
