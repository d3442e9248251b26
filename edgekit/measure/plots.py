"""Latency plots of ``edgekit bench`` and ``edgekit compare`` (needs ``edgekit[plot]``).

The ``*_figure`` functions return the matplotlib Figure (tests read its texts); the ``plot_*``
functions save it as a PNG and return the path. Latencies are in ms on every axis; each box
is labelled above its upper whisker with its median (ms) and its ratio to the reference (the
first model), so labels never cover a box.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import InputError, require

if TYPE_CHECKING:
    from edgekit.measure.bench import ModelResult
    from edgekit.measure.compare_report import CompareResult

__all__ = ["latency_figure", "plot_latencies", "compare_figure", "plot_compare", "save_figure"]

_RECOMMENDED = "#2e7d32"
_OVER = "#c62828"


def _pyplot() -> Any:
    matplotlib: Any = require("matplotlib", "plot")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "plot")


def _ms(value: float) -> str:
    return f"{value:.3g} ms"


def _latency_panel(ax: Any, models: Sequence[ModelResult], batch: int,
                   labels: Sequence[str] | None = None,
                   highlight: str | None = None) -> None:
    """Box plots of one batch size on ``ax``: whiskers p1-p99, median and ratio above each."""
    ms = [m for m in models if batch in m.latency]
    data = [np.asarray(m.latency[batch].samples_ms, dtype=float) for m in ms]
    boxes = ax.boxplot(data, showfliers=True, whis=(1, 99), patch_artist=True,
                       flierprops={"markersize": 2, "alpha": 0.4})
    for m, patch in zip(ms, boxes["boxes"], strict=True):
        patch.set_facecolor(_RECOMMENDED if m.name == highlight else "#bbdefb")
        patch.set_alpha(0.6)
    span = max(float(np.max(d)) for d in data) / max(1e-9, min(float(np.min(d)) for d in data))
    log = span > 20
    if log:
        ax.set_yscale("log")
    tops = [float(np.percentile(d, 99)) for d in data]
    for k, (m, d, top) in enumerate(zip(ms, data, tops, strict=True), start=1):
        ratio = m.latency[batch].ratio
        rel = "reference" if k == 1 else f"{ratio:.2f}x the reference"
        ax.annotate(f"p50 {_ms(float(np.median(d)))}\n{rel}", (k, top), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * (2.5 if log else 1.0) + (0 if log else 0.25 * (high - low)))
    names = list(labels) if labels is not None else [m.name for m in ms]
    ax.set_xticks(range(1, len(ms) + 1))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel(f"latency per call (ms){', log scale' if log else ''}")
    ax.set_xlabel("model")
    ax.set_title(f"batch {batch}: n = {ms[0].latency[batch].runs} calls each, whiskers "
                 f"p1-p99; ratio = p50 / p50 of {ms[0].name}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def latency_figure(models: Sequence[ModelResult], title: str = "Inference latency") -> Any:
    """Box plots of per-call latency (ms), one panel per batch size; the first model is the
    reference every ratio is relative to. Returns the matplotlib Figure."""
    if not models:
        raise InputError("no latency results to plot")
    plt = _pyplot()
    batch_sizes = sorted({b for m in models for b in m.latency})
    width = max(6.0, 1.5 * len(models) + 2) * len(batch_sizes) ** 0.8
    fig, axes = plt.subplots(1, len(batch_sizes), squeeze=False, figsize=(width, 5.2))
    for ax, b in zip(axes[0], batch_sizes, strict=True):
        _latency_panel(ax, models, b)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG to ``path`` (atomically) and close it."""
    import io

    from edgekit.io.artifacts import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue(), force=True)
    return out


def plot_latencies(models: Sequence[ModelResult], path: str | os.PathLike[str],
                   title: str = "Inference latency") -> Path:
    """Save :func:`latency_figure` as a PNG at ``path``; returns the path."""
    return save_figure(latency_figure(models, title), path)


def _score_panel(ax: Any, result: CompareResult) -> None:
    """Accuracy (or agreement with Keras) per variant, the budget line, the recommendation."""
    rows = [r for r in result.rows if r.error is None]
    scores = [(r.accuracy if result.labelled else r.agreement) or 0.0 for r in rows]
    colours = [_RECOMMENDED if r.name == result.recommended else
               (_OVER if r.within_budget is False else "#90caf9") for r in rows]
    ax.bar(range(len(rows)), scores, color=colours)
    keras = result.row("keras")
    ref = (keras.accuracy if result.labelled else 100.0) or 0.0
    what = "accuracy (%)" if result.labelled else "top-1 agreement with Keras (%)"
    ax.axhline(ref - result.budget, color=_OVER, linestyle="--", linewidth=1)
    ax.annotate(f"budget: Keras - {result.budget:g} pt", (len(rows) - 0.5, ref - result.budget),
                xytext=(0, -3), textcoords="offset points", ha="right", va="top",
                fontsize=8, color=_OVER)
    for i, (r, s) in enumerate(zip(rows, scores, strict=True)):
        mark = "\nrecommended" if r.name == result.recommended else ""
        ax.annotate(f"{s:.1f} %{mark}", (i, s), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    low = min([*scores, ref - result.budget])
    ax.set_ylim(max(0.0, low - 3 * max(result.budget, 1.0)), min(100.0, max(scores)) + 3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.name for r in rows], rotation=20, ha="right")
    ax.set_ylabel(what)
    ax.set_title(f"{result.n_eval} evaluation samples", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def compare_figure(result: CompareResult) -> Any:
    """Latency boxes (ms, ratio to Keras) and accuracy bars with the budget line of a
    :class:`edgekit.measure.compare_report.CompareResult`; the recommended variant is marked in
    both. Returns the matplotlib Figure."""
    if result.bench is None:
        raise InputError("no latency results to plot")
    plt = _pyplot()
    models = result.bench.models
    labels = []
    for m in models:
        r = result.row(m.name)
        star = "\n(recommended)" if m.name == result.recommended else ""
        size = f"{r.size_bytes / 1024:.0f} KiB" if r.size_bytes else "-"
        labels.append(f"{m.name}{star}\n{size}")
    fig, (lat, acc) = plt.subplots(1, 2, figsize=(max(10.0, 2.4 * len(models) + 3), 5.6),
                                   gridspec_kw={"width_ratios": [3, 2]})
    _latency_panel(lat, models, result.bench.config.batches[0], labels, result.recommended)
    _score_panel(acc, result)
    rec = result.recommended or "none within the budget"
    fig.suptitle(f"{result.model}: variants side by side (recommended: {rec})")
    fig.tight_layout()
    return fig


def plot_compare(result: CompareResult, path: str | os.PathLike[str]) -> Path:
    """Save :func:`compare_figure` as a PNG at ``path``; returns the path."""
    return save_figure(compare_figure(result), path)
