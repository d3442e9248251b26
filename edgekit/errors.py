"""The one error family for user errors.

Every mistake a user can make (a missing file, a corrupt model, bad calibration data, an
unknown provider ...) raises a subclass of :class:`EdgekitError`. The CLI prints
``error: <message>`` and ``hint: <hint>`` and exits with status 1, without a traceback.
Anything else is a bug in edgekit and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "EdgekitError",
    "InputError",
    "ModelLoadError",
    "ConversionError",
    "ValidationError",
    "OutputExistsError",
    "MissingDependencyError",
    "DataError",
    "ProviderError",
    "AccuracyGateError",
    "require",
]


class EdgekitError(Exception):
    """Base class of all user-facing errors.

    Args:
        message: what went wrong, in one sentence.
        hint: what the user can do about it (optional).
    """

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class InputError(EdgekitError):
    """A path, option or input array is wrong (missing file, wrong shape/dtype, NaN ...)."""


class ModelLoadError(EdgekitError):
    """A file exists but cannot be loaded as a model (not a model, truncated, corrupt)."""


class ConversionError(EdgekitError):
    """Keras -> ONNX conversion failed or left unconverted ops behind."""


class ValidationError(EdgekitError):
    """The converted model does not match its source within tolerance."""


class OutputExistsError(EdgekitError):
    """An output file exists and ``force`` was not given."""


class MissingDependencyError(EdgekitError):
    """An optional dependency (an extra) is not installed."""


class DataError(EdgekitError):
    """Data (calibration, evaluation, training) is empty, malformed or inconsistent."""


class ProviderError(EdgekitError):
    """An onnxruntime execution provider is unknown or not available."""


class AccuracyGateError(EdgekitError):
    """A quantized model could not meet the accuracy budget."""


def require(module: str, extra: str, package: str | None = None) -> object:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    Args:
        module: dotted module name to import.
        extra: the edgekit extra that provides it, e.g. ``"export"``.
        package: the pip package name when it differs from the module name.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{pkg} is not installed ({exc})",
            hint=f'pip install "edgekit[{extra}]"',
        ) from exc
