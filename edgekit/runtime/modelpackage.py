"""ONNX Runtime model packages: one folder, one model in several variants, each meant for one
execution provider (EP) and device; :class:`~edgekit.runtime.model.EdgeModel` opens the folder
and runs the variant that fits the providers present.

The format is onnxruntime's (1.29+): ``manifest.json`` -> components -> variants, each variant
naming its ``ep`` and ``device`` and, under ``executor_info["ort"]``, its ``model_file``; files
shared between variants are content-addressed folders (``shared_assets/sha256-<hex>/``). edgekit
never parses it by hand: :func:`read_package` reads it with ``onnxruntime.ModelPackage.open``
(schema, versions, paths) and resolves every model file with the package's own
``resolve_string_ref``; ``edgekit.packaging`` writes it with ``onnxruntime.ModelPackage``.

What ``edgekit export/tune --package`` writes (:data:`VARIANT_TARGETS`, manifest order): one
component ``model``; one shared asset per precision (the fp32, the int8 QDQ and the fp16 file),
and one variant per (EP, precision) below, all pointing at those assets:

================  =========================  ======  =========
variant           EP                         device  precision
================  =========================  ======  =========
cuda-fp16         CUDAExecutionProvider      gpu     fp16
tensorrt-fp16     TensorrtExecutionProvider  gpu     fp16
dml-fp16          DmlExecutionProvider       gpu     fp16
openvino-int8     OpenVINOExecutionProvider  cpu     int8
cpu-int8          CPUExecutionProvider       cpu     int8
cpu-fp32          CPUExecutionProvider       cpu     fp32
================  =========================  ======  =========

Selection (:func:`select_variant`): the providers are taken in the order the runtime would give
onnxruntime for a single file (``provider="auto"``: :data:`~edgekit.runtime.session.AUTO_ORDER`
filtered by this build, CPU last); the first provider that has a variant wins, and among its
variants the manifest order decides (int8 before fp32 on CPU). A variant whose EP is missing,
or whose device that EP does not report (``onnxruntime.get_ep_devices``), is skipped, so the
fallback runs down the same order; EPs without variants of their own (CoreML, QNN, NNAPI,
XNNPACK) end on the CPU variants. No variant for any provider is a
:class:`~edgekit.errors.ProviderError`.

Imports only onnxruntime (and pure-Python edgekit modules).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgekit.errors import InputError, MissingDependencyError, ModelLoadError, ProviderError
from edgekit.runtime.session import PROVIDER_NAMES

__all__ = [
    "COMPONENT",
    "EXECUTOR",
    "NAMESPACE",
    "VARIANT_TARGETS",
    "VariantTarget",
    "PackageVariant",
    "PackageContents",
    "PackageSelection",
    "is_model_package",
    "read_package",
    "select_variant",
    "available_devices",
    "open_package",
    "require_model_packages",
]

logger = logging.getLogger(__name__)

#: The component edgekit writes (a package of one model).
COMPONENT = "model"
#: onnxruntime's namespace under a variant's ``executor_info``.
EXECUTOR = "ort"
#: edgekit's key under the manifest's and each variant's ``additional_metadata``.
NAMESPACE = "edgekit"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class VariantTarget:
    """One variant edgekit writes: a provider (short name, see
    :data:`~edgekit.runtime.session.PROVIDER_NAMES`), its device and the precision it runs."""

    provider: str
    device: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.provider}-{self.precision}"

    @property
    def ep(self) -> str:
        return PROVIDER_NAMES[self.provider]


#: The variants of an edgekit package, in manifest order (the order within one EP decides).
VARIANT_TARGETS: tuple[VariantTarget, ...] = (
    VariantTarget("cuda", "gpu", "fp16"),
    VariantTarget("tensorrt", "gpu", "fp16"),
    VariantTarget("dml", "gpu", "fp16"),
    VariantTarget("openvino", "cpu", "int8"),
    VariantTarget("cpu", "cpu", "int8"),
    VariantTarget("cpu", "cpu", "fp32"),
)


@dataclass(frozen=True)
class PackageVariant:
    """A variant as onnxruntime's reader reports it, its model file resolved.

    ``precision`` comes from edgekit's metadata (None in packages made elsewhere); ``ep`` /
    ``device`` are None when the manifest leaves them out (any EP / any device)."""

    name: str
    ep: str | None
    device: str | None
    model_file: Path
    precision: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ep": self.ep, "device": self.device,
                "precision": self.precision, "model_file": str(self.model_file)}


@dataclass
class PackageContents:
    """A package read by :func:`read_package`: its one component's variants and metadata."""

    root: Path
    component: str
    variants: list[PackageVariant]
    name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PackageSelection:
    """The variant chosen for the providers present, and why.

    ``providers`` is what the session gets: the requested providers from the variant's EP on.
    ``skipped`` names each variant passed over before it, with the reason."""

    package: PackageContents
    variant: PackageVariant
    providers: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def model_file(self) -> Path:
        return self.variant.model_file

    def reason(self) -> str:
        v = self.variant
        why = f"variant {v.name} ({v.ep or 'any EP'}, {v.device or 'any device'}, " \
              f"{v.precision or 'precision not recorded'})"
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.skipped:
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():
            why += f"; {reason}: {', '.join(names)}"
        return why

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.package.root), "variant": self.variant.to_dict(),
                "skipped": [{"variant": n, "reason": r} for n, r in self.skipped],
                "variants": [v.name for v in self.package.variants]}


def require_model_packages() -> None:
    """Raise :class:`MissingDependencyError` when this onnxruntime has no model packages."""
    if not hasattr(ort, "ModelPackage"):
        raise MissingDependencyError(
            f"onnxruntime {ort.__version__} cannot read or write model packages (1.29 or later "
            "can)", hint='pip install -U "onnxruntime>=1.29"')


def is_model_package(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder with a top-level ``manifest.json``."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


# ---------------------------------------------------------------------------------------------
# reading (onnxruntime's reader)
# ---------------------------------------------------------------------------------------------
def _load_error(root: Path, exc: BaseException) -> ModelLoadError:
    msg = str(exc).strip().splitlines()
    return ModelLoadError(
        f"onnxruntime cannot read the model package {root}: {msg[-1] if msg else exc}",
        hint="write it again with edgekit export/tune --package",
    )


def _json(raw: str | None, what: str, root: Path) -> Any:
    """A JSON value onnxruntime's reader returned as text (it has checked the syntax)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise _load_error(root, ValueError(f"{what}: {exc}")) from exc


def _variant(pkg: Any, root: Path, v: Mapping[str, Any]) -> PackageVariant:
    """One variant of ``ModelPackage.get_info()``, its ``model_file`` resolved by the package."""
    name = str(v["name"])
    info = _json((v.get("executor_info") or {}).get(EXECUTOR), f"variant {name} ort info", root)
    model_file = info.get("model_file") if isinstance(info, dict) else None
    if not isinstance(model_file, str) or not model_file:
        raise ModelLoadError(
            f"variant {name} of the model package {root} names no model file "
            f"(executor_info.{EXECUTOR}.model_file)",
            hint="edgekit runs variants that onnxruntime can load from a model file",
        )
    base = v.get("variant_directory") or str(root)
    try:
        resolved = Path(pkg.resolve_string_ref(model_file, base, True))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"variant {name} of the model package {root}: its model file {model_file} "
            f"cannot be found: {str(exc).strip()}",
            hint="the package is incomplete; write it again with edgekit export --package",
        ) from exc
    extra = _json(v.get("additional_metadata_json"), f"variant {name} metadata", root)
    ours = extra.get(NAMESPACE, {}) if isinstance(extra, dict) else {}
    ours = ours if isinstance(ours, dict) else {}
    precision = ours.get("precision")
    return PackageVariant(name, v.get("ep"), v.get("device"), resolved,
                          str(precision) if precision else None, ours)


def read_package(path: str | os.PathLike[str]) -> PackageContents:
    """Read a model package with onnxruntime's reader (``onnxruntime.ModelPackage.open``:
    schema, version, paths) and resolve every variant's model file.

    Raises:
        InputError: ``path`` is not a package folder (no ``manifest.json``).
        ModelLoadError: onnxruntime rejects the package, it holds no component or several,
            no variant, or a variant whose model file is missing.
    """
    root = Path(path).absolute()
    if not is_model_package(root):
        raise InputError(
            f"{root} is not a model package (no {MANIFEST})" if root.is_dir()
            else f"{root} is not a model package folder" if root.exists()
            else f"model package folder {root} does not exist",
            hint="pass a folder written by edgekit export/tune --package, or an .onnx file")
    require_model_packages()
    try:
        pkg = ort.ModelPackage.open(str(root))
        info = pkg.get_info()
    except (OSError, ValueError, RuntimeError) as exc:
        raise _load_error(root, exc) from exc
    components = info.get("components") or []
    if len(components) != 1:
        names = ", ".join(str(c["name"]) for c in components) or "none"
        raise ModelLoadError(
            f"the model package {root} has {len(components)} components ({names}); "
            "edgekit runs packages of one model",
            hint="open the component's model file directly")
    comp = components[0]
    variants = [_variant(pkg, root, v) for v in comp.get("variants") or []]
    if not variants:
        raise ModelLoadError(f"the model package {root} has no variant",
                             hint="write it again with edgekit export --package")
    extra = _json(info.get("additional_metadata_json"), "package metadata", root)
    meta = extra.get(NAMESPACE, {}) if isinstance(extra, dict) else {}
    return PackageContents(root, str(comp["name"]), variants, info.get("package_name"),
                           meta if isinstance(meta, dict) else {})


# ---------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------
def available_devices() -> dict[str, set[str]]:
    """Device kinds (``cpu``/``gpu``/``npu``) per EP, as ``onnxruntime.get_ep_devices()``
    reports them; EPs it does not list are not in the dict (their devices are unknown)."""
    found: dict[str, set[str]] = {}
    get = getattr(ort, "get_ep_devices", None)
    for d in get() if get is not None else []:
        found.setdefault(str(d.ep_name), set()).add(str(d.device.type.name).lower())
    return found


def _unfit(v: PackageVariant, ep: str, devices: Mapping[str, Iterable[str]] | None) -> str | None:
    """Why ``v`` cannot run on ``ep`` (None: it can)."""
    if v.ep is not None and v.ep != ep:
        return ""
    known = None if devices is None else devices.get(ep)
    if v.device is not None and known is not None and v.device.lower() not in set(known):
        return f"EP reports no {v.device} device"
    return None


def select_variant(
    package: PackageContents,
    providers: Sequence[str],
    devices: Mapping[str, Iterable[str]] | None = None,
    variant: str | None = None,
) -> PackageSelection:
    """The variant of ``package`` to run with ``providers`` (onnxruntime EP names, priority
    order, e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``).

    The first provider with a fitting variant wins; among its variants, manifest order. A
    variant fits a provider when its ``ep`` is that provider (or unset) and its ``device`` is
    one that provider reports in ``devices`` (EP name -> device kinds; default None, or an EP
    missing from it: not checked). ``variant`` (a name) forces that variant, which must still
    fit one of the providers.

    Raises:
        InputError: ``variant`` is not in the package.
        ProviderError: no variant fits any of ``providers``.
    """
    names = [v.name for v in package.variants]
    pool = package.variants
    if variant is not None:
        pool = [v for v in pool if v.name == variant]
        if not pool:
            raise InputError(f"the model package {package.root} has no variant {variant!r}",
                             hint=f"its variants: {', '.join(names)}")
    skipped = [(v.name, "EP not available") for v in pool
               if v.ep is not None and v.ep not in providers]
    for i, ep in enumerate(providers):
        for v in pool:
            why = _unfit(v, ep, devices)
            if why is None:
                return PackageSelection(package, v, list(providers[i:]), skipped)
            if why:
                skipped.append((v.name, why))
    tried = ", ".join(providers) or "none"
    eps = ", ".join(f"{v.name} ({v.ep or 'any EP'}, {v.device or 'any device'})" for v in pool)
    raise ProviderError(
        f"no variant of the model package {package.root} runs on the providers here "
        f"({tried}); its variants: {eps}",
        hint="run it where one of those execution providers is installed, or export a "
        "package with a CPU variant (edgekit export --package)")


def open_package(
    path: str | os.PathLike[str],
    providers: Sequence[str],
    variant: str | None = None,
    devices: Mapping[str, Iterable[str]] | None = None,
) -> PackageSelection:
    """Read the package at ``path`` and select the variant for ``providers`` (on the devices
    onnxruntime reports here unless ``devices`` is given); logs which and why."""
    package = read_package(path)
    sel = select_variant(package, providers,
                         available_devices() if devices is None else devices, variant)
    logger.info("model package %s: %s", package.root.name, sel.reason())
    return sel
