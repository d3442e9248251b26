"""The ``edgekit check`` baseline file: its version, bounds and validated reading.

A baseline is JSON that ``edgekit check --update-baseline`` writes and a later check trusts;
it is read back through :mod:`edgekit.schema`, so that an edited or forged one is an
:class:`~edgekit.errors.InputError` naming the field, before anything is built or timed. The
bounds are what edgekit itself can write: the built-in reference is at most
:data:`MAX_REFERENCE_DEPTH` layers of :data:`REFERENCE_WIDTH` (about 128 MiB of weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import InputError, SchemaError
from edgekit.schema import MAX_BATCH, MAX_THREADS, Fields, integer, number, read_json, string
from edgekit.speed.ratio import MAX_SETTLE_S

__all__ = ["BASELINE_VERSION", "REFERENCE_WIDTH", "MAX_REFERENCE_DEPTH", "load_baseline",
           "validate_baseline"]

BASELINE_VERSION = 1
#: width of the built-in reference's MatMul layers (the only width edgekit writes)
REFERENCE_WIDTH = 256
#: the deepest built-in reference edgekit chooses (as slow as the slowest model it fits)
MAX_REFERENCE_DEPTH = 512
_MAX_BYTES = 1 << 20  # a baseline is about 1 KiB
_MAKE = "make it again with: edgekit check MODEL --baseline FILE --update-baseline --force"


def _reference(ref: Fields) -> None:
    kind = ref.get("kind", string(("matmul", "file")))
    if kind == "matmul":
        ref.get("depth", integer(1, MAX_REFERENCE_DEPTH, "the deepest reference edgekit makes"))
        ref.get("width", integer(1, REFERENCE_WIDTH, "the widest reference edgekit makes"), None)
    else:
        ref.get("path", string())
    ref.get("name", string(), None)


def validate_baseline(data: Any) -> dict[str, Any]:
    """``data`` when it is a baseline edgekit can use, else :class:`SchemaError` naming the
    first wrong field. Fields edgekit does not read are not checked."""
    top = Fields(data)
    version = top.get("edgekit_check_baseline", integer(0, 1 << 30))
    if version != BASELINE_VERSION:
        raise SchemaError(f"edgekit_check_baseline is version {version}; this edgekit reads "
                          f"version {BASELINE_VERSION}")
    top.get("accuracy", number(0, 100), None)
    top.get("model_sha256", string(max_len=128), None)
    machine = top.sub("machine", required=False)
    if machine is not None:
        machine.get("cpu", string(), None)
    lat = top.sub("latency")
    lat.get("ratio", number(hi=1e9, above=0))
    lat.get("batch", integer(1, MAX_BATCH), None)
    lat.get("threads", integer(1, MAX_THREADS), None)
    lat.get("settle_s", number(0, MAX_SETTLE_S), None)
    _reference(lat.sub("reference"))
    return data


def load_baseline(path: Path) -> dict[str, Any]:
    """The validated baseline at ``path``; an :class:`InputError` when it is missing, not
    readable, or not a baseline edgekit can use (see :func:`validate_baseline`)."""
    if not path.exists():
        raise InputError(f"baseline {path} does not exist",
                         hint="make it with --update-baseline (and commit it)")
    try:
        return validate_baseline(read_json(path, _MAX_BYTES))
    except OSError as exc:
        raise InputError(f"cannot read baseline {path}: {exc}") from exc
    except SchemaError as exc:
        raise InputError(f"{path} is not a usable edgekit check baseline: {exc.message}",
                         hint=_MAKE) from exc
