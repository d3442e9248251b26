"""The Markdown tables of ``bench`` (and the helper ``compare``, ``check`` and ``tune`` use)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.measure.bench import ModelResult

__all__ = ["render_table", "format_table", "fmt_ms", "fmt_size"]


def fmt_ms(ms: float) -> str:
    """A latency in µs below 1 ms, else in ms."""
    if ms < 1.0:
        return f"{ms * 1000:.0f} µs"
    if ms < 100:
        return f"{ms:.2f} ms"
    return f"{ms:.0f} ms"


def fmt_size(n: int) -> str:
    """A size in KiB below 1 MiB, else in MiB."""
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.2f} MiB"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[bool] | None = None) -> str:
    """A Markdown table, columns padded to equal width (``right``: right-align columns)."""
    right = list(right) if right is not None else [i > 0 for i in range(len(header))]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(
            str(c).rjust(w) if a else str(c).ljust(w)
            for c, w, a in zip(cells, widths, right, strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a else (":" + "-" * (w + 1))
                         for w, a in zip(widths, right, strict=True)) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def format_table(models: Sequence[ModelResult], baseline: int = 0) -> str:
    """One row per model and batch size: p50/p90/p99/mean±std, ratio of p50 to the first
    model, throughput, load time, memory and file size."""
    header = ["model", "batch", "p50", "p90", "p99", "mean ± std", "vs " + models[baseline].name,
              "samples/s", "load", "RSS +load", "peak RSS", "size"]
    rows = []
    for m in models:
        for b, s in m.latency.items():
            rows.append([
                m.name, str(b), fmt_ms(s.p50_ms), fmt_ms(s.p90_ms), fmt_ms(s.p99_ms),
                f"{fmt_ms(s.mean_ms)} ± {fmt_ms(s.std_ms)}", f"{s.ratio:.2f}x",
                f"{s.throughput:,.0f}", f"{m.load_time_ms:.0f} ms", f"{m.load_rss_mb:.0f} MiB",
                f"{m.peak_rss_mb:.0f} MiB", fmt_size(m.size_bytes),
            ])
    return render_table(header, rows, [False] + [True] * (len(header) - 1))
