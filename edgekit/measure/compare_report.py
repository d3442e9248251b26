"""``edgekit compare``'s result: one row per variant, the budget rule and the recommendation,
the table and the JSON."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.inputs.data import Dataset
from edgekit.measure.bench import BenchResult
from edgekit.measure.compare_variants import BuiltVariants, variant_table
from edgekit.measure.tables import fmt_ms, fmt_size, render_table

__all__ = ["VariantRow", "CompareResult", "agreement", "compare_result"]


@dataclass
class VariantRow:
    """One variant: file, size, accuracy, agreement with Keras and latency (ms)."""

    name: str
    format: str
    precision: str
    path: str | None = None
    size_bytes: int | None = None
    accuracy: float | None = None
    agreement: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    throughput: float | None = None
    ratio: float | None = None
    within_budget: bool | None = None
    error: str | None = None
    runtime: str | None = None  # which API ran a TFLite row (CompiledModel or Interpreter, why)


@dataclass
class CompareResult:
    """The table, the recommendation and the raw latency results."""

    model: str
    rows: list[VariantRow]
    recommended: str | None
    smallest: str | None
    budget: float
    labelled: bool
    n_eval: int
    bench: BenchResult | None = None
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> VariantRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "accuracy_budget_points": self.budget,
            "labelled": self.labelled,
            "eval_samples": self.n_eval,
            "recommended": self.recommended,
            "smallest_within_budget": self.smallest,
            "variants": [vars(r) for r in self.rows],
            "bench": self.bench.to_dict() if self.bench else None,
            "notes": self.notes,
        }

    def table(self) -> str:
        """The side-by-side table, then the recommendation."""
        keras = self.row("keras")
        ksize = keras.size_bytes or 0
        header = ["variant", "size", "vs Keras", "accuracy" if self.labelled else "-",
                  "top-1 = Keras", "p50", "p90", "speed-up", "samples/s", "budget"]
        rows = []
        for r in self.rows:
            if r.error:
                rows.append([r.name, "-", "-", "-", "-", "-", "-", "-", "-", "failed: " + r.error])
                continue
            rows.append([
                r.name + (" *" if r.name == self.recommended else ""),
                _size(r.size_bytes),
                f"{100 * (r.size_bytes or 0) / ksize:.0f} %" if ksize else "-",
                f"{r.accuracy:.2f} %" if r.accuracy is not None else "-",
                f"{r.agreement:.2f} %" if r.agreement is not None else "-",
                _ms(r.p50_ms), _ms(r.p90_ms),
                f"{1 / r.ratio:.2f}x" if r.ratio else "-",
                f"{r.throughput:,.0f}" if r.throughput else "-",
                "ok" if r.within_budget else ("-" if r.within_budget is None else "over"),
            ])
        what = "accuracy drop" if self.labelled else "disagreement with Keras"
        lines = [render_table(header, rows, [False] + [True] * (len(header) - 1)), ""]
        lines.append(f"{self.n_eval} evaluation samples; latency at batch "
                     f"{self.bench.config.batches[0] if self.bench else '?'}, interleaved "
                     "(speed-up = Keras p50 / variant p50); budget: "
                     f"{what} <= {self.budget:g} points.")
        if self.recommended:
            r = self.row(self.recommended)
            lines.append(f"recommended: {self.recommended} (fastest within budget: p50 "
                         f"{_ms(r.p50_ms)}, {_size(r.size_bytes)})"
                         + (f"; smallest within budget: {self.smallest}"
                            if self.smallest and self.smallest != self.recommended else ""))
        else:
            lines.append("recommended: none of the TFLite/ONNX variants is within the budget")
        lines += [f"{r.name}: {r.runtime}" for r in self.rows if r.runtime and not r.error]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency boxes (ms) and accuracy bars with the budget, the recommended variant
        marked (:func:`edgekit.measure.plots.plot_compare`)."""
        from edgekit.measure.plots import plot_compare

        return plot_compare(self, path)


def _size(n: int | None) -> str:
    return "-" if n is None else fmt_size(n)


def _ms(ms: float | None) -> str:
    return "-" if ms is None else fmt_ms(ms)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two prediction arrays in percent (one column: threshold 0.5)."""
    def top1(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p)
        return (p.reshape(-1) >= 0.5) if p.ndim == 1 or p.shape[-1] == 1 else p.argmax(-1)

    return 100.0 * float(np.mean(top1(a) == top1(b)))


def compare_result(model: str, built: BuiltVariants, preds: Mapping[str, np.ndarray],
                   eval_ds: Dataset, bench: BenchResult, budget: float,
                   notes: list[str]) -> CompareResult:
    """The table of every variant of ``built`` (file, size, accuracy, agreement with Keras,
    latency at the benchmark's batch), each row marked within or over the accuracy ``budget``
    (points of accuracy drop vs Keras; without labels, percent of top-1 disagreement), and the
    recommendation: the fastest deployable variant within the budget (and the smallest)."""
    rows = _rows(built, preds, eval_ds, bench)
    _mark_budget(rows, eval_ds.labels is not None, budget)
    ok = [r for r in rows if r.within_budget and r.format != "keras"]
    best = min(ok, key=lambda r: (r.p50_ms or 0.0, r.size_bytes or 0)) if ok else None
    small = min(ok, key=lambda r: (r.size_bytes or 0, r.p50_ms or 0.0)) if ok else None
    return CompareResult(
        model=model, rows=rows, recommended=best.name if best else None,
        smallest=small.name if small else None, budget=budget,
        labelled=eval_ds.labels is not None, n_eval=len(eval_ds), bench=bench, notes=notes,
    )


def _rows(built: BuiltVariants, preds: Mapping[str, np.ndarray], eval_ds: Dataset,
          bench: BenchResult) -> list[VariantRow]:
    from edgekit.validate import accuracy

    labelled = eval_ds.labels is not None
    lat = {m.name: m for m in bench.models}
    ref = preds.get("keras")
    batch = bench.config.batches[0]
    table = variant_table()
    paths, errors = built.paths, built.errors
    rows: list[VariantRow] = []
    for v in built.variants:
        fmt, prec = table[v]
        row = VariantRow(v, fmt, prec, error=errors.get(v))
        if v in paths:
            row.path = str(paths[v])
            row.size_bytes = lat[v].size_bytes if v in lat else None
            row.runtime = lat[v].runtime if v in lat else None
        if v in preds:
            if labelled:
                row.accuracy = accuracy(preds[v], eval_ds.labels)  # type: ignore[arg-type]
            if ref is not None:
                row.agreement = agreement(preds[v], ref)
        if v in lat and not row.error:
            s = lat[v].latency[batch]
            row.p50_ms, row.p90_ms, row.throughput, row.ratio = (
                s.p50_ms, s.p90_ms, s.throughput, s.ratio)
        rows.append(row)
    return rows


def _mark_budget(rows: list[VariantRow], labelled: bool, budget: float) -> None:
    """``within_budget`` of every timed row: its accuracy drop vs Keras (labelled data), else
    its top-1 disagreement with Keras, at most ``budget``."""
    keras_row = rows[0]
    for row in rows:
        if row.error or row.p50_ms is None:
            continue
        if labelled and keras_row.accuracy is not None and row.accuracy is not None:
            row.within_budget = keras_row.accuracy - row.accuracy <= budget + 1e-9
        elif row.agreement is not None:
            row.within_budget = 100.0 - row.agreement <= budget + 1e-9
