"""Typed, bounded reading of the JSON that edgekit reads back.

Files edgekit wrote (check baselines, model metadata, stored session settings, reports,
journals) may since have been edited, truncated or forged. Each reader checks every value it
uses here, at load, so that a wrong one is a :class:`~edgekit.errors.SchemaError` naming the
field and the rule (``latency.reference.depth must be an integer in 1..512, got 1000000``),
never a traceback or an allocation later on. Readers add which file it was.

A check is a function ``(value, where) -> value`` that returns the value (typed) or raises;
:class:`Fields` applies checks to the fields of one JSON object::

    top = Fields(data)
    ratio = top.sub("latency").get("ratio", number(above=0))
    acc = top.get("accuracy", number(0, 100), None)  # optional: missing or null -> None
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar, overload

from edgekit.errors import SchemaError

__all__ = [
    "MAX_BATCH",
    "MAX_THREADS",
    "Check",
    "Fields",
    "number",
    "integer",
    "string",
    "boolean",
    "list_of",
    "scalar_map",
    "parse_json",
    "read_json",
]

#: the largest batch size any command or stored setting accepts (bigger ones only exhaust memory)
MAX_BATCH = 65536
#: the most intra-/inter-op threads any command or stored setting accepts
MAX_THREADS = 1024
_MAX_STRING = 4096

T = TypeVar("T")
D = TypeVar("D")
Check = Callable[[Any, str], T]
_REQUIRED: Any = object()


def _shown(value: Any) -> str:
    """A wrong value as a message shows it: short, with its JSON type."""
    if isinstance(value, int) and value.bit_length() > 200:  # str() refuses > 4300 digits
        return "a huge number"
    text = json.dumps(value) if isinstance(value, str | int | float | bool | None) else None
    kind = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__)
    if text is None or len(text) > 60:
        return f"a{'n' if kind[0] in 'aeiou' else ''} {kind}"
    return text if kind in ("number", "boolean", "null") else f"{text} ({kind})"


def _fail(where: str, need: str, value: Any) -> NoReturn:
    raise SchemaError(f"{where} must be {need}, got {_shown(value)}")


def _range(lo: float | None, hi: float | None, above: float | None) -> str:
    low = f"> {above:g}" if above is not None else (f">= {lo:g}" if lo is not None else "")
    if hi is None:
        return f" {low}" if low else ""
    if lo is not None and above is None:
        return f" in {lo:g}..{hi:g}"
    return f" {low} and <= {hi:g}" if low else f" <= {hi:g}"


def number(lo: float | None = None, hi: float | None = None, *,
           above: float | None = None) -> Check[float]:
    """A finite JSON number (not a boolean) in ``lo``..``hi``; ``above``: strictly greater."""
    need = "a finite number" + _range(lo, hi, above)

    def check(v: Any, where: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            _fail(where, need, v)
        if (lo is not None and v < lo) or (hi is not None and v > hi) or (
                above is not None and v <= above):
            _fail(where, need, v)
        return float(v)
    return check


def integer(lo: int, hi: int, why: str = "") -> Check[int]:
    """A JSON integer (not a boolean, not 1.0) in ``lo``..``hi``; ``why`` explains the bounds
    in the message."""
    need = f"an integer in {lo}..{hi}" + (f" ({why})" if why else "")

    def check(v: Any, where: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            _fail(where, need, v)
        return v
    return check


def string(choices: Sequence[str] | None = None, max_len: int = _MAX_STRING,
           fold: bool = False) -> Check[str]:
    """A string of at most ``max_len`` characters (no NUL), one of ``choices`` when given
    (compared case-insensitively with ``fold``; the value is returned as it is)."""
    allowed = {c.lower() if fold else c for c in choices} if choices is not None else None
    need = (f"one of {', '.join(choices)}" if choices
            else f"a string of at most {max_len} characters")

    def check(v: Any, where: str) -> str:
        if not isinstance(v, str) or len(v) > max_len or "\0" in v:
            _fail(where, need, v)
        if allowed is not None and (v.lower() if fold else v) not in allowed:
            _fail(where, need, v)
        return v
    return check


def boolean() -> Check[bool]:
    """``true`` or ``false``."""
    def check(v: Any, where: str) -> bool:
        if not isinstance(v, bool):
            _fail(where, "true or false", v)
        return v
    return check


def list_of(item: Check[T], max_items: int, min_items: int = 0) -> Check[list[T]]:
    """A list of ``min_items``..``max_items`` values, each passing ``item``."""
    need = (f"a list of {min_items} items" if min_items == max_items else
            f"a list of {min_items}..{max_items} items" if min_items else
            f"a list of at most {max_items} items")

    def check(v: Any, where: str) -> list[T]:
        if not isinstance(v, list) or not min_items <= len(v) <= max_items:
            _fail(where, need, v)
        return [item(x, f"{where}[{i}]") for i, x in enumerate(v)]
    return check


def scalar_map(max_items: int = 1024) -> Check[dict[str, str]]:
    """An object of at most ``max_items`` string, number or boolean values, as strings."""
    def check(v: Any, where: str) -> dict[str, str]:
        if not isinstance(v, Mapping) or len(v) > max_items:
            _fail(where, f"an object of at most {max_items} entries", v)
        out = {}
        for k, x in v.items():
            if isinstance(x, dict | list) or x is None:
                _fail(f"{where}.{k}", "a string, number or boolean", x)
            out[str(k)] = str(x)
        return out
    return check


class Fields:
    """The fields of one JSON object, read through checks; ``where`` names it in messages
    (``""``: the file's top level)."""

    def __init__(self, value: Any, where: str = "") -> None:
        if not isinstance(value, dict):
            _fail(where or "the file", "a JSON object", value)
        self.data: dict[str, Any] = value
        self.where = where

    def path(self, key: str) -> str:
        """The field's name in messages (``latency.ratio``)."""
        return f"{self.where}.{key}" if self.where else key

    @overload
    def get(self, key: str, check: Check[T]) -> T: ...
    @overload
    def get(self, key: str, check: Check[T], default: D) -> T | D: ...

    def get(self, key: str, check: Check[T], default: Any = _REQUIRED) -> Any:
        """``check`` applied to the field; without ``default`` it is required, with one a
        missing or null field gives ``default``."""
        v = self.data.get(key)
        if v is None:
            if default is _REQUIRED:
                self._missing(key)
            return default
        return check(v, self.path(key))

    @overload
    def sub(self, key: str) -> Fields: ...
    @overload
    def sub(self, key: str, required: bool) -> Fields | None: ...

    def sub(self, key: str, required: bool = True) -> Fields | None:
        """The nested object ``key`` (None when it is optional and missing or null)."""
        v = self.data.get(key)
        if v is None and not required:
            return None
        if v is None:
            self._missing(key)
        return Fields(v, self.path(key))

    def _missing(self, key: str) -> NoReturn:
        raise SchemaError(f"{self.path(key)} is {'null' if key in self.data else 'missing'}")


def parse_json(text: str | bytes, where: str) -> Any:
    """``json.loads(text)``; malformed or absurdly nested JSON is a :class:`SchemaError`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise SchemaError(f"{where} is nested too deeply to be edgekit's JSON") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError of bytes
        raise SchemaError(f"{where} is not valid JSON: {exc}") from None


def read_json(path: str | os.PathLike[str], max_bytes: int) -> Any:
    """The JSON in ``path``, refused (:class:`SchemaError`) when it is larger than
    ``max_bytes`` (read no further) or not JSON; ``OSError`` when it cannot be read."""
    p = Path(path)
    with p.open("rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise SchemaError(f"the file is larger than {max_bytes // 1024} KiB, far more than edgekit "
                          "writes there")
    return parse_json(raw, "the file")
