"""The tune's report pieces: the Pareto front, the candidates table and the reason for the
winner."""

from __future__ import annotations

from collections.abc import Sequence

from edgekit.tune.core import Candidate, TuneConfig

__all__ = ["format_candidates"]


def _pareto(cands: Sequence[Candidate]) -> None:
    pts = [c for c in cands if c.latency_ratio is not None]
    for c in pts:
        c.pareto = not any(
            o is not c
            and o.latency_ratio <= c.latency_ratio  # type: ignore[operator]
            and o.loss <= c.loss
            and o.size_bytes <= c.size_bytes
            and (o.latency_ratio, o.size_bytes) != (c.latency_ratio, c.size_bytes)
            for o in pts
        )


def format_candidates(cands: Sequence[Candidate], winner: Candidate | None = None) -> str:
    """The candidates table (latency ratio vs fp32, accuracy, size)."""
    from edgekit.measure.bench import render_table

    rows = []
    for c in cands:
        rows.append([
            ("* " if c is winner else "  ") + c.name,
            c.stage,
            c.engine,
            "-" if c.latency_ratio is None else f"{c.latency_ratio:.3f}",
            "-" if c.latency_ms is None else f"{c.latency_ms:.3f}",
            "-" if c.accuracy is None else f"{c.accuracy:.2f}",
            "-" if c.agreement is None else f"{c.agreement:.2f}",
            f"{c.size_bytes / 1024:.0f}" if c.size_bytes else "-",
            ("yes" if c.accepted else "no") + (" P" if c.pareto else "")
            + (" R" if c.finalist else ""),
        ])
    header = ["candidate", "stage", "engine", "ratio vs fp32", "median ms", "acc %", "agree %",
              "KiB",
              "ok (P=pareto, R=run-off)"]
    return render_table(header, rows)


def _why(winner: Candidate, fp32: Candidate, cands: Sequence[Candidate], cfg: TuneConfig) -> str:
    if winner is fp32 or (winner.quantization is None and winner.stage != "engine"):
        int8 = [c for c in cands if c.quantization is not None and c.latency_ratio is not None]
        accepted = [c for c in int8 if c.accepted]
        if not accepted:
            return (f"no int8 candidate met the accuracy budget ({cfg.max_accuracy_drop:g} pt); "
                    f"keeping fp32 ({winner.name})")
        fastest = min(accepted, key=lambda c: c.latency_ratio)  # type: ignore[arg-type, return-value]
        return (f"fp32 ({winner.name}) is fastest: the fastest int8 candidate within the "
                f"accuracy budget, {fastest.name}, takes {fastest.latency_ratio:.2f}x the fp32 "
                f"latency here ({cfg.threads} thread(s), batch {cfg.batch}); see node_profile "
                "for where the time goes")
    faster = 1 / winner.latency_ratio if winner.latency_ratio else float("nan")
    acc = (f"accuracy drop {winner.accuracy_drop:+.2f} pt" if winner.accuracy_drop is not None
           else f"top-1 agreement {winner.agreement:.2f}%")
    return (f"{winner.name} ({winner.engine}) is the fastest candidate within the accuracy "
            "budget: "
            f"{faster:.2f}x faster than fp32 ({winner.latency_ms:.3f} ms vs "
            f"{winner.fp32_latency_ms:.3f} ms, {cfg.threads} thread(s), batch {cfg.batch}), "
            f"{acc}, {winner.size_bytes / 1024:.0f} KiB{_runoff_note(winner, cands)}")


def _runoff_note(winner: Candidate, cands: Sequence[Candidate]) -> str:
    others = [f"{c.name} {c.latency_ratio:.3f}" for c in cands if c.finalist and c is not winner]
    if not winner.finalist or not others:
        return ""
    return (f"; run-off ratio {winner.latency_ratio:.3f} vs " + ", ".join(others)
            + " (a more complex setting must win by more than the noise)")
