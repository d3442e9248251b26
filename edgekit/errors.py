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
    "SchemaError",
    "ModelLoadError",
    "ConversionError",
    "ValidationError",
    "OutputExistsError",
    "MissingDependencyError",
    "DataError",
    "ProviderError",
    "AccuracyGateError",
    "EngineCheckError",
    "OutputError",
    "PredictionError",
    "fs_fault",
    "output_error",
    "require",
    "exception_reason",
]

import errno
import os
import tempfile
from typing import Any


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


class SchemaError(InputError):
    """A file edgekit reads back (a check baseline, model metadata, stored settings ...) holds
    a value of the wrong type or out of bounds; the message names the field (see
    :mod:`edgekit.schema`)."""


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


class PredictionError(EdgekitError):
    """A model ran but its outputs are not numbers (NaN or infinite values)."""


class EngineCheckError(EdgekitError):
    """A model file failed its check on the engine asked for (its answers there differ from
    onnxruntime's, or the engine cannot read it): see :mod:`edgekit.runtime.proof`."""


class OutputError(EdgekitError):
    """A file or folder could not be written (disk full, read-only file system, a file where a
    folder should be, no permission, an I/O error); the message names the path."""


#: errno values that mean "the file system refused" (a user's problem, not an edgekit bug)
_FS_FAULTS = {
    errno.ENOSPC: "free some space on that disk, or choose another output folder (-o)",
    errno.EDQUOT: "your disk quota is used up: free some space or choose another output folder",
    errno.EFBIG: "the file is too large for that file system: choose another output folder",
    errno.EROFS: "that file system is read-only: choose another output folder (-o)",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another output folder (-o)",
    errno.EISDIR: "a folder stands where a file is needed: choose another output name",
    errno.EACCES: "check the folder's permissions, or choose another output folder (-o)",
    errno.EPERM: "check the folder's permissions, or choose another output folder (-o)",
    errno.EIO: "the device reported an I/O error: check the disk and try again",
}


def fs_fault(exc: BaseException | None) -> OSError | None:
    """The file-system refusal (disk full, read-only, not a folder, no permission, I/O error)
    behind ``exc`` or its causes, else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FS_FAULTS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def output_error(exc: OSError, path: str | os.PathLike[str] | None = None,
                 action: str = "write", temp: bool = False) -> OutputError:
    """An :class:`OutputError` for an ``OSError`` raised while writing ``path`` (default: the
    error's own file name), with a hint for its errno; ``temp`` (default False): the path is
    edgekit's temporary folder, and the hint points at ``TMPDIR``."""
    target = os.fspath(path) if path is not None else (exc.filename or "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _FS_FAULTS.get(exc.errno or 0, "check the path and try again")
    if temp:
        hint = (f"this is the temporary folder ({tempfile.gettempdir()}): free space there, or "
                f"point TMPDIR at a writable folder with room (TMPDIR=/path edgekit ...)")
    return OutputError(f"cannot {action} {target or 'an output file'}: {reason}", hint=hint)


def require(module: str, extra: str, package: str | None = None) -> Any:
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


def exception_reason(exc: BaseException, limit: int = 800) -> str:
    """The whole reason an exception gives, on one line (Keras' innermost cause first).

    Keras wraps load and call failures ("... could not be deserialized properly ... config=
    {...} Exception encountered: <cause>"); the cause is what the user needs, without the
    serialized config that follows it.
    """
    text = str(exc).strip() or type(exc).__name__
    if "Exception encountered:" in text:
        text = text.rsplit("Exception encountered:", 1)[1]
    text = text.split("Full object config:", 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
