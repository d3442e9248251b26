"""The per-engine record of a model file (``edgekit.engines`` metadata): which engines were
shown to load it and to give onnxruntime's answers (:mod:`edgekit.runtime.proof` makes it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekit.errors import EngineCheckError, ModelLoadError
from edgekit.metadata import PREFIX

__all__ = ["ENGINES_KEY", "EngineCheck", "engines_prop", "read_engine_checks", "proven_engine",
           "engines_line"]

logger = logging.getLogger(__name__)

#: metadata key (under the ``edgekit.`` prefix) of the per-engine record
ENGINES_KEY = "engines"


@dataclass(frozen=True)
class EngineCheck:
    """One engine on one file.

    Attributes:
        engine: the engine's name.
        loads: whether it loaded and ran the file.
        passed: loads and agrees with onnxruntime within the rule above.
        samples: samples compared.
        top1_agreement: share of samples with onnxruntime's top-1 class (None: no class output).
        fp32_top1_agreement: share with the fp32 model's top-1 class (variants; else None).
        mean_abs_diff / max_abs_diff: over every output element, against onnxruntime.
        accuracy: top-1 accuracy on the labels, when there were labels and class outputs.
        reason: why it failed (empty when it passed).
        batches: the batch sizes it was run at (its answers must not depend on it).
    """

    engine: str
    loads: bool
    passed: bool
    samples: int = 0
    top1_agreement: float | None = None
    fp32_top1_agreement: float | None = None
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    accuracy: float | None = None
    reason: str = ""
    batches: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The record form (without the engine's name, which is its key)."""
        d = asdict(self)
        del d["engine"]
        return d

    @classmethod
    def from_dict(cls, engine: str, d: Mapping[str, object]) -> EngineCheck:
        """Read one record back (:class:`ValueError` on a malformed one)."""
        if not isinstance(d.get("passed"), bool) or not isinstance(d.get("loads"), bool):
            raise ValueError(f"engine record {engine!r} needs boolean 'loads' and 'passed'")
        return cls(engine=engine, loads=bool(d["loads"]), passed=bool(d["passed"]),
                   samples=_int(d.get("samples", 0)), reason=str(d.get("reason", "")),
                   top1_agreement=_opt_float(d.get("top1_agreement")),
                   fp32_top1_agreement=_opt_float(d.get("fp32_top1_agreement")),
                   mean_abs_diff=_opt_float(d.get("mean_abs_diff")),
                   max_abs_diff=_opt_float(d.get("max_abs_diff")),
                   accuracy=_opt_float(d.get("accuracy")), batches=_ints(d.get("batches", [])))

    def summary(self) -> str:
        """One line for logs and CLI output."""
        if not self.loads:
            return f"{self.engine}: does not load ({self.reason})"
        parts = [f"{self.samples} samples"]
        if self.top1_agreement is not None:
            parts.append(f"top-1 agreement {self.top1_agreement:.2%}")
        if self.mean_abs_diff is not None:
            parts.append(f"mean abs diff {self.mean_abs_diff:.2g}")
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.2%}")
        verdict = "passed" if self.passed else f"FAILED: {self.reason}"
        return f"{self.engine}: {', '.join(parts)} - {verdict}"


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


def _ints(v: object) -> list[int]:
    if not isinstance(v, list):
        raise ValueError(f"expected a list of integers, got {v!r}")
    return [_int(x) for x in v]


def _opt_float(v: object) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def engines_prop(record: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """The ``metadata_props`` entry that stores a per-engine record (engine -> the
    :meth:`EngineCheck.to_dict` of its check) in a file; empty for an empty record."""
    if not record:
        return {}
    return {PREFIX + ENGINES_KEY: json.dumps(record, sort_keys=True)}


def read_engine_checks(props: Mapping[str, str]) -> dict[str, EngineCheck]:
    """The per-engine record of a file's ``metadata_props`` (empty when it has none);
    :class:`ValueError` when it is malformed."""
    raw = props.get(PREFIX + ENGINES_KEY)
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("edgekit.engines must be a JSON object")
    out = {}
    for name, d in data.items():
        if not isinstance(d, dict):
            raise ValueError(f"edgekit.engines[{name!r}] must be a JSON object")
        out[str(name)] = EngineCheck.from_dict(str(name), d)
    return out


def proven_engine(name: str, explicit: bool, props: Mapping[str, str] | None,
                  path: Path) -> str:
    """The engine to run ``path`` on, given its per-engine record in ``props``.

    onnxruntime is the reference and always allowed. Another engine the file *failed* on is
    refused when it was asked for by name (:class:`~edgekit.errors.EngineCheckError`) and
    replaced by onnxruntime, with a warning, when it was only the file's stored engine; one the
    file was never checked on runs, with a warning.
    """
    if name == "onnxruntime" or props is None:
        return name
    try:
        record = read_engine_checks(props)
    except ValueError as exc:
        raise ModelLoadError(f"edgekit.engines metadata of {path.name} is malformed: {exc}",
                             hint="export or quantize the model again with edgekit") from exc
    check = record.get(name)
    if check is None and not record:
        return name  # a file no edgekit proof ran on (older, or another tool's)
    if check is None:
        logger.warning("%s was never checked on %s (only on %s): its answers there are "
                       "unverified", path.name, name, ", ".join(record) or "no engine")
        return name
    if check.passed:
        return name
    if explicit:
        what = "gives wrong answers on" if check.loads else "does not load in"
        raise EngineCheckError(
            f"{path.name} {what} {name}: {check.reason}",
            hint="run it with engine='onnxruntime' (the reference it was checked against), or "
                 "pass check_engine=False (--no-engine-check) to run it anyway")
    logger.warning("%s: its stored engine %s failed the engine check (%s); running it on "
                   "onnxruntime", path.name, name, check.reason)
    return "onnxruntime"


def engines_line(record: Mapping[str, Mapping[str, object]]) -> str:
    """One line for people: each engine's verdict on a file (a record as stored)."""
    checks = [EngineCheck.from_dict(name, d) for name, d in record.items()]
    parts = [f"{c.engine} passed" if c.passed else f"{c.engine} FAILED ({c.reason})"
             for c in checks]
    failed = [c.engine for c in checks if not c.passed and c.engine != "onnxruntime"]
    tail = f" - edgekit will not run it on {', '.join(failed)}" if failed else ""
    return "engines: " + ", ".join(parts) + tail
