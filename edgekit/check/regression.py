"""``edgekit check``: a regression gate for CI on accuracy and latency.

Latency is never compared in absolute terms (a shared CI runner is not the machine the baseline
was made on, and its load changes by the minute). Instead the model and a *reference* are timed
interleaved in the same process, call after call, and the gate compares the **median of the
paired ratios** model time / reference time. The reference is a fixed ONNX graph built in code
(a chain of 256x256 MatMul + Relu, its depth chosen once, when the baseline is made, so that it
takes about as long as the model), or any ONNX file given with ``--reference`` (e.g. the
model's fp32 variant). Timing goes on in blocks until the ratio is stable.

The baseline JSON stores the accuracy, the reference description and the ratio.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.check.baseline import (
    BASELINE_VERSION,
    MAX_REFERENCE_DEPTH,
    REFERENCE_WIDTH,
    load_baseline,
)
from edgekit.configs import check_groups
from edgekit.contract import scores_classes
from edgekit.errors import DataError, InputError
from edgekit.inputs.data import Dataset
from edgekit.io.artifacts import atomic_write_json, sha256_file
from edgekit.measure.backend import Backend
from edgekit.measure.backends import load_backend
from edgekit.progress import FractionFn
from edgekit.speed.machine import machine_info
from edgekit.speed.ratio import LatencyRatio, RatioConfig, measure_ratio
from edgekit.speed.timing import make_inputs, measure

__all__ = [
    "CheckConfig",
    "CHECK_RATIO",
    "Finding",
    "CheckResult",
    "reference_model",
    "latency_ratio",
    "labelled_data",
    "model_accuracy",
    "check_model",
    "BASELINE_VERSION",
]

_WIDTH = REFERENCE_WIDTH


#: how ``check`` times the model against the reference (see :class:`CheckConfig`)
CHECK_RATIO = RatioConfig(tolerance=0.02, min_rounds=5, min_seconds=2.0, max_seconds=20.0,
                          block_seconds=0.5)


@dataclass
class CheckConfig:
    """Limits and measurement settings of :func:`check_model`.

    Attributes:
        max_accuracy_drop: largest accepted accuracy drop in points (default 1.0).
        max_latency_increase: largest accepted growth of the latency ratio in percent
            (default 25).
        batch: batch size of the timed calls (default 1).
        threads: intra-op threads of model and reference (default 1: steadiest on shared CI).
        reference: an ONNX file to use as reference (default None: the built-in MatMul graph).
        ratio: when the interleaved timing stops (:class:`~edgekit.speed.ratio.RatioConfig`;
            default :data:`CHECK_RATIO`: 2 to 20 seconds in blocks of 0.5 s, stable when the
            ratio moves less than 2 % over the last two blocks, at least 5 rounds); its
            ``settle`` is resolved for ``threads`` when unset
            (:meth:`~edgekit.speed.ratio.RatioConfig.for_threads`).
        eval_samples: cap on evaluation samples (default 0: all).
    """

    max_accuracy_drop: float = 1.0
    max_latency_increase: float = 25.0
    batch: int = 1
    threads: int | None = 1
    reference: Path | None = None
    ratio: RatioConfig = CHECK_RATIO
    eval_samples: int = 0

    def __post_init__(self) -> None:
        if self.max_accuracy_drop < 0 or self.max_latency_increase < 0:
            raise InputError("limits must be >= 0")
        if self.batch < 1:
            raise InputError("batch must be >= 1")
        check_groups(self)
        self.ratio = self.ratio.for_threads(self.threads)


@dataclass
class Finding:
    """One compared metric."""

    metric: str
    baseline: float | None
    current: float | None
    change: float | None
    limit: str
    passed: bool
    text: str


@dataclass
class CheckResult:
    """Outcome of :func:`check_model`: findings, current figures, and whether it passed."""

    model: str
    baseline_path: str
    findings: list[Finding]
    current: dict[str, object]
    updated: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, object]:
        """JSON-ready outcome (what ``edgekit check --json`` prints)."""
        return {"model": self.model, "baseline": self.baseline_path, "passed": self.passed,
                "updated": self.updated, "findings": [vars(f) for f in self.findings],
                "current": self.current, "notes": self.notes}

    def report(self) -> str:
        """The readable diff."""
        if self.updated:
            lat: Any = self.current["latency"]
            acc = self.current.get("accuracy")
            head = (f"baseline {self.baseline_path} written for {self.model}: latency "
                    f"{lat['ratio']:.3f}x the reference ({lat['reference']['name']})"
                    + (f", accuracy {acc:.2f} %" if acc is not None else ""))
            return "\n".join([head, *[f"note: {n}" for n in self.notes]])
        w = max(len(f.metric) for f in self.findings) if self.findings else 8
        lines = [f"edgekit check {self.model} against {self.baseline_path}"]
        for f in self.findings:
            lines.append(f"  {'ok  ' if f.passed else 'FAIL'}  {f.metric:<{w}}  {f.text}"
                         f"  (limit {f.limit})")
        lines += [f"note: {n}" for n in self.notes]
        verdict = "passed" if self.passed else (
            f"FAILED: {', '.join(f.metric for f in self.findings if not f.passed)} regressed")
        lines.append(verdict)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the reference graph
# ---------------------------------------------------------------------------------------------
def reference_model(depth: int, path: str | os.PathLike[str], width: int = _WIDTH) -> Path:
    """Write the built-in reference: ``depth`` MatMul(width x width) + Relu on a (1, width)
    input, seeded weights (identical on every machine). Needs the ``onnx`` package."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1234)
    nodes, inits = [], []
    prev = "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if i == depth - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "edgekit_reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgekit-check")
    model.ir_version = 8
    out_path = Path(path)
    onnx.save(model, str(out_path))
    return out_path


def _reference_backend(spec: dict[str, Any], threads: int | None, tmp: Path) -> Backend:
    if spec.get("kind") == "file":
        p = Path(spec["path"])
        if not p.exists():
            raise InputError(f"reference model {p} (from the baseline) does not exist",
                             hint="pass --reference, or --update-baseline")
        return load_backend(p, "reference", threads=threads)
    path = reference_model(int(spec["depth"]), tmp / "reference.onnx", int(spec.get("width",
                                                                                    _WIDTH)))
    return load_backend(path, "reference", threads=threads)


def _spec_name(spec: dict[str, Any]) -> str:
    if spec.get("kind") == "file":
        return f"file {spec['path']}"
    return f"built-in {spec['depth']} x MatMul {spec.get('width', _WIDTH)}"


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
def latency_ratio(model: Backend, reference: Backend, config: CheckConfig | None = None,
                  on_progress: FractionFn | None = None) -> LatencyRatio:
    """``model`` / ``reference`` latency by :func:`edgekit.speed.ratio.measure_ratio` (median
    of per-round ratios, interleaved until stable), with ``config``'s ratio settings and
    batch."""
    cfg = config or CheckConfig()
    return measure_ratio(reference.bind(make_inputs(reference.inputs, 1)),
                         model.bind(make_inputs(model.inputs, cfg.batch)), cfg.ratio, on_progress)


def _auto_depth(model: Backend, threads: int | None, batch: int, tmp: Path) -> int:
    """Reference depth whose latency is about the model's (1..:data:`MAX_REFERENCE_DEPTH`, a
    power of two)."""
    probe = load_backend(reference_model(4, tmp / "probe.onnx"), "probe", threads=threads)
    tm, tr = measure([model.bind(make_inputs(model.inputs, batch)),
                      probe.bind(make_inputs(probe.inputs, 1))], runs=None, duration=0.5,
                     warmup=5)
    per_layer = float(np.median(tr)) / 4
    want = float(np.median(tm)) / max(per_layer, 1.0)
    return int(min(MAX_REFERENCE_DEPTH, max(1, 2 ** round(np.log2(max(want, 1.0))))))


def labelled_data(model: Backend, eval_data: str | os.PathLike[str] | Dataset,
                  eval_samples: int = 0) -> Dataset:
    """``eval_data`` read for ``model`` (at most ``eval_samples``; 0 = all), refused when it
    has no labels or the model's first output has no classes (a regression output)."""
    if not scores_classes(model.metadata.output_kinds if model.metadata else None):
        raise InputError(f"{model.name}'s first output is a regression output: it has no "
                         "top-1 accuracy to check",
                         hint="check its latency without --eval-data")
    ds = model.load_data(eval_data, "evaluation data", "test", eval_samples)
    if ds.labels is None:
        raise DataError(f"evaluation data {ds.source or eval_data} has no labels 'y'",
                        hint="save it with numpy.savez(path, x=inputs, y=labels)")
    return ds


def model_accuracy(model: Backend, eval_data: str | os.PathLike[str] | Dataset,
                   eval_samples: int = 0) -> float:
    """Top-1 accuracy in percent on labelled ``eval_data`` (``y`` required;
    :func:`labelled_data`)."""
    from edgekit.measure.backend import evaluate
    from edgekit.validate import accuracy

    ds = labelled_data(model, eval_data, eval_samples)
    assert ds.labels is not None
    return accuracy(evaluate(model, ds), ds.labels)


# ---------------------------------------------------------------------------------------------
# the gate
# ---------------------------------------------------------------------------------------------
def _baseline_settings(cfg: CheckConfig, base: dict[str, Any] | None,
                       notes: list[str]) -> CheckConfig:
    """``cfg`` with the baseline's batch, threads and settle (a check times as the baseline
    did; a baseline without ``settle_s`` settles as its thread count does)."""
    if base is None:
        return cfg
    lat = base["latency"]
    threads, batch = lat.get("threads", cfg.threads), int(lat.get("batch", cfg.batch))
    if threads != cfg.threads or batch != cfg.batch:
        notes.append(f"using the baseline's batch {batch} and threads {threads}")
    # without settle_s, None: CheckConfig resolves it for the threads (RatioConfig.for_threads)
    settle = lat.get("settle_s")
    settle = None if settle is None else float(settle)
    return dataclasses.replace(cfg, threads=threads, batch=batch,
                               ratio=dataclasses.replace(cfg.ratio, settle=settle))


def _reference_spec(cfg: CheckConfig, base: dict[str, Any] | None, model: Backend,
                    tmp: Path) -> dict[str, Any]:
    """The reference to time against: ``--reference``, the baseline's, or a built-in graph
    as slow as the model; a reference other than the baseline's is an :class:`InputError`."""
    if cfg.reference is not None:
        spec: dict[str, Any] = {"kind": "file", "path": str(cfg.reference)}
    elif base:
        spec = dict(base["latency"]["reference"])
    else:
        spec = {"kind": "matmul", "width": _WIDTH,
                "depth": _auto_depth(model, cfg.threads, cfg.batch, tmp)}
    if base:
        base_ref = {k: v for k, v in base["latency"]["reference"].items() if k != "name"}
        if {k: v for k, v in spec.items() if k != "name"} != base_ref:
            raise InputError("--reference differs from the baseline's reference "
                             f"({_spec_name(base['latency']['reference'])})",
                             hint="use the same reference, or --update-baseline")
    return spec


def _current_figures(model_path: str | os.PathLike[str],
                     eval_data: str | os.PathLike[str] | None, acc: float | None,
                     lr: LatencyRatio, spec: dict[str, Any], cfg: CheckConfig) -> dict[str, Any]:
    """This run's figures, laid out as a baseline file."""
    return {
        "edgekit_check_baseline": BASELINE_VERSION,
        "model": Path(model_path).name,
        "model_sha256": sha256_file(model_path),
        "accuracy": acc,
        "eval_data": str(eval_data) if eval_data else None,
        "latency": {
            "ratio": lr.ratio, "batch": cfg.batch, "threads": cfg.threads,
            "reference": {**spec, "name": _spec_name(spec)},
            "model_p50_ms": lr.candidate_ms, "reference_p50_ms": lr.reference_ms,
            "rounds": lr.rounds, "seconds": round(lr.seconds, 2), "settle_s": lr.settle,
        },
        "machine": machine_info(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def check_model(
    model_path: str | os.PathLike[str],
    baseline: str | os.PathLike[str],
    eval_data: str | os.PathLike[str] | None = None,
    config: CheckConfig | None = None,
    update_baseline: bool = False,
    on_progress: Callable[[float], None] | None = None,
) -> CheckResult:
    """Compare ``model_path`` with ``baseline`` (or write the baseline with ``update_baseline``).

    Accuracy is checked when ``eval_data`` is given and the baseline has an accuracy; latency
    always (ratio to the reference, see module doc). Returns a :class:`CheckResult`; its
    ``exit_code`` is 1 when a limit is exceeded.
    """
    base_path = Path(baseline)
    base = None if update_baseline else load_baseline(base_path)
    notes: list[str] = []
    cfg = _baseline_settings(config or CheckConfig(), base, notes)
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as tmp_s:
        model = load_backend(model_path, threads=cfg.threads)
        spec = _reference_spec(cfg, base, model, Path(tmp_s))
        ref = _reference_backend(spec, cfg.threads, Path(tmp_s))
        # the data read (and refused) before the timing, evaluated after it: a session that ran
        # the evaluation's batches runs the timed batch slower afterwards (onnxruntime's memory
        # pattern no longer serves it), and a baseline made with --eval-data and a check
        # without it would not time the same thing
        data = labelled_data(model, eval_data, cfg.eval_samples) if eval_data else None
        lr = latency_ratio(model, ref, cfg, on_progress)
        acc = model_accuracy(model, data) if data is not None else None
    current = _current_figures(model_path, eval_data, acc, lr, spec, cfg)
    if base is None:
        atomic_write_json(base_path, current, force=True)
        return CheckResult(current["model"], str(base_path), [], current, True, notes)
    current["latency"]["reference"] = base["latency"]["reference"]
    findings = _compare(base, current, cfg, notes)
    base_cpu = (base.get("machine") or {}).get("cpu")
    if base_cpu not in (None, current["machine"]["cpu"]):
        notes.append(f"baseline made on {base_cpu}; ratios carry over between machines only "
                     "roughly")
    return CheckResult(current["model"], str(base_path), findings, current, False, notes)


def _compare(base: dict[str, Any], cur: dict[str, Any], cfg: CheckConfig,
             notes: list[str]) -> list[Finding]:
    findings: list[Finding] = []
    b_acc, c_acc = base.get("accuracy"), cur.get("accuracy")
    if b_acc is not None and c_acc is not None:
        drop = b_acc - c_acc
        findings.append(Finding(
            "accuracy", b_acc, c_acc, -drop, f"-{cfg.max_accuracy_drop:g} pt",
            drop <= cfg.max_accuracy_drop + 1e-9,
            f"{b_acc:.2f} % -> {c_acc:.2f} % ({-drop:+.2f} pt)"))
    elif b_acc is not None:
        notes.append("accuracy not checked: pass --eval-data to check it")
    b_r, c_r = float(base["latency"]["ratio"]), float(cur["latency"]["ratio"])
    inc = 100.0 * (c_r / b_r - 1.0)
    lat = cur["latency"]
    findings.append(Finding(
        "latency", b_r, c_r, inc, f"+{cfg.max_latency_increase:g} %",
        inc <= cfg.max_latency_increase + 1e-9,
        f"{b_r:.3f}x -> {c_r:.3f}x the reference ({inc:+.1f} %; now p50 "
        f"{lat['model_p50_ms']:.3g} ms vs reference {lat['reference_p50_ms']:.3g} ms, "
        f"batch {lat['batch']}, {lat['rounds']} rounds)"))
    if base.get("model_sha256") and base["model_sha256"] != cur["model_sha256"]:
        notes.append("the model file changed since the baseline (sha256 differs)")
    return findings
