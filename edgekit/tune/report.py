"""The tune's report and outputs: the Pareto front, the candidates table, the reason for the
winner, the tuned file's bytes and the checked output paths."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__
from edgekit.errors import InputError
from edgekit.io.artifacts import ArtifactSet
from edgekit.metadata import PREFIX, set_props
from edgekit.progress import StatusFn
from edgekit.runtime.engine_registry import installed_engines
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.speed.machine import cpu_model, instruction_set
from edgekit.tune.core import Candidate, TuneConfig
from edgekit.tune.engines import THREAD_MARGIN

if TYPE_CHECKING:
    from edgekit.tune.search import _Search
    from edgekit.tune.setup import TuneData

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


def _agreement_cell(c: Candidate) -> str:
    """Top-1 agreement with fp32 in percent, or a regression output's relative error."""
    value = c.relative_error if c.relative_error is not None else c.agreement
    return "-" if value is None else f"{value:.2f}"


def format_candidates(cands: Sequence[Candidate], winner: Candidate | None = None) -> str:
    """The candidates table (latency ratio vs fp32, accuracy, size)."""
    from edgekit.measure.tables import render_table

    rows = []
    for c in cands:
        rows.append([
            ("* " if c is winner else "  ") + c.name,
            c.stage,
            c.engine,
            "-" if c.latency_ratio is None else f"{c.latency_ratio:.3f}",
            "-" if c.latency_ms is None else f"{c.latency_ms:.3f}",
            "-" if c.accuracy is None else f"{c.accuracy:.2f}",
            _agreement_cell(c),
            f"{c.size_bytes / 1024:.0f}" if c.size_bytes else "-",
            ("yes" if c.accepted else "no") + (" P" if c.pareto else "")
            + (" R" if c.finalist else ""),
        ])
    regression = any(c.relative_error is not None for c in cands)
    header = ["candidate", "stage", "engine", "ratio vs fp32", "median ms", "acc %",
              "rel err %" if regression else "agree %",
              "KiB",
              "ok (P=pareto, R=run-off)"]
    return render_table(header, rows)


def _why(winner: Candidate, fp32: Candidate, cands: Sequence[Candidate], cfg: TuneConfig) -> str:
    if winner is fp32 or (winner.quantization is None and winner.engine == "onnxruntime"):
        int8 = [c for c in cands if c.quantization is not None and c.latency_ratio is not None]
        accepted = [c for c in int8 if c.accepted]
        if not accepted:
            return (f"no int8 candidate met the accuracy budget ({cfg.max_accuracy_drop:g} pt); "
                    f"keeping fp32 ({winner.name})")
        fastest = min(accepted, key=lambda c: c.latency_ratio)  # type: ignore[arg-type, return-value]
        own = ("" if winner is fp32 or winner.latency_ratio is None else
               f", {winner.name} {winner.latency_ratio:.2f}x")
        return (f"fp32 ({winner.name}) is fastest: the fastest int8 candidate within the "
                f"accuracy budget, {fastest.name}, takes {fastest.latency_ratio:.2f}x the fp32 "
                f"latency here{own} ({cfg.threads} thread(s), batch {cfg.batch}); see "
                f"node_profile for where the time goes{_fewer_note(winner, cfg)}")
    faster = 1 / winner.latency_ratio if winner.latency_ratio else float("nan")
    acc = _loss_text(winner)
    more = _faster_on_more_threads(winner, cands, cfg.threads)
    which = "" if not more else (f" on {winner.thread_count(cfg.threads)} thread(s), within "
                                 f"{THREAD_MARGIN:.0%} of {more[0].name} on more threads")
    return (f"{winner.name} ({winner.engine}) is the fastest candidate within the accuracy "
            f"budget{which}: "
            f"{faster:.2f}x faster than fp32 ({winner.latency_ms:.3f} ms vs "
            f"{winner.fp32_latency_ms:.3f} ms, {_threads_text(winner, cfg)}, batch {cfg.batch}), "
            f"{acc}, {winner.size_bytes / 1024:.0f} KiB{_runoff_note(winner, cands, bool(more))}")


def _faster_on_more_threads(winner: Candidate, cands: Sequence[Candidate],
                            threads: int) -> list[Candidate]:
    """The run-off's finalists on more threads than ``winner`` that timed faster (the winner
    was within :data:`~edgekit.tune.engines.THREAD_MARGIN` of them), fastest first."""
    mine = winner.thread_count(threads)
    return sorted((c for c in cands if c.finalist and c is not winner
                   and c.thread_count(threads) > mine
                   and (c.latency_ratio or 0.0) < (winner.latency_ratio or 0.0)),
                  key=lambda c: c.latency_ratio or 0.0)


def _loss_text(c: Candidate) -> str:
    """What a candidate's accuracy budget was checked on: the accuracy drop with labels, a
    regression output's relative error, else top-1 agreement with fp32."""
    if c.accuracy_drop is not None:
        return f"accuracy drop {c.accuracy_drop:+.2f} pt"
    if c.relative_error is not None:
        return f"relative error {c.relative_error:.2f}%"
    return f"top-1 agreement {c.agreement:.2f}%"


def _fewer_threads(winner: Candidate, cfg: TuneConfig) -> int | None:
    """The winner's intra-op threads when fewer than requested (that won), else None."""
    n = winner.thread_count(cfg.threads)
    return n if n < cfg.threads else None


def _split(winner: Candidate) -> str | None:
    """How the winner splits its batch ("2 streams of 1 thread(s)"), None when it does not."""
    s = SessionOptionsConfig.from_dict(winner.session)
    return None if s.streams < 2 else f"{s.streams} streams of {s.stream_threads()} thread(s)"


def _streams_text(winner: Candidate) -> str:
    split = _split(winner)
    return "" if split is None else f", the batch split into {split}"


def _threads_text(winner: Candidate, cfg: TuneConfig) -> str:
    """How many threads the winner runs with (fewer than requested when that won), and how
    it splits its batch."""
    n = _fewer_threads(winner, cfg)
    return (f"{cfg.threads} thread(s)" if n is None else (
        f"{n} of {cfg.threads} threads (fp32 on {cfg.threads})")) + _streams_text(winner)


def _fewer_note(winner: Candidate, cfg: TuneConfig) -> str:
    """The fp32 winner's threads when fewer than requested, and its batch streams."""
    n = _fewer_threads(winner, cfg)
    notes = [] if n is None else [f"runs on {n} of the {cfg.threads} threads"]
    split = _split(winner)
    notes += [] if split is None else [f"splits its batch into {split}"]
    return f"; {winner.name} {' and '.join(notes)}" if notes else ""


def _runoff_note(winner: Candidate, cands: Sequence[Candidate], on_fewer: bool) -> str:
    """The run-off's ratios; ``on_fewer``: the winner runs on fewer threads than a faster
    finalist (:func:`_faster_on_more_threads`)."""
    others = [c for c in cands if c.finalist and c is not winner]
    if not winner.finalist or not others:
        return ""
    why = "a more complex setting must win by more than the noise" + (
        f", and more threads by more than {THREAD_MARGIN:.0%}" if on_fewer else "")
    return (f"; run-off ratio {winner.latency_ratio:.3f} vs "
            + ", ".join(f"{c.name} {c.latency_ratio:.3f}" for c in others) + f" ({why})")


def _tuned_bytes(winner: Candidate, config: TuneConfig) -> bytes:
    """The winner's file with its session settings and the search summary in metadata."""
    import onnx

    tuned = onnx.load(winner.path)  # type: ignore[arg-type]
    session = SessionOptionsConfig.from_dict(winner.session)
    summary = {"winner": winner.name, "latency_ratio": winner.latency_ratio,
               "threads": config.threads, "batch": config.batch, "edgekit": __version__}
    set_props(tuned, {PREFIX + "session": json.dumps(session.to_dict()),
                      PREFIX + "tune": json.dumps(summary)})
    return bytes(tuned.SerializeToString())


def _artifacts(src: Path, outdir: str | os.PathLike[str],
               force: bool) -> tuple[ArtifactSet, list[str]]:
    """The checked outputs ``<stem>.tuned.onnx`` and ``<stem>.tune.json`` of ``src``."""
    if not src.exists():
        raise InputError(f"model path {src} does not exist", hint="check the path")
    stem = src.stem if not src.is_dir() else src.name
    names = [f"{stem}.tuned.onnx", f"{stem}.tune.json"]
    artifacts = ArtifactSet(outdir, names, force=force)
    artifacts.check()
    return artifacts, names


def _package_target(package: str | os.PathLike[str] | None, outdir: str | os.PathLike[str],
                    force: bool) -> Any:
    """The checked :class:`edgekit.packaging.PackageTarget` of ``--package`` (None without)."""
    if package is None:
        return None
    from edgekit.packaging import PackageTarget

    return PackageTarget(package, force, outdir)


def _package(target: Any, artifacts: ArtifactSet, fp32_path: Path, winner: Candidate,
             tuned: bytes, data: tuple[Any, Any], say: StatusFn) -> dict[str, Any]:
    """The model package of the tune (the tuned file as int8 when quantized, else as fp32)."""
    from edgekit.packaging import tune_package

    precision = "int8" if winner.quantization is not None else "fp32"
    return tune_package(target, artifacts, fp32_path, tuned, precision, data[0], data[1], say)


def _build_report(search: _Search, winner: Candidate, src: Path, data: TuneData, log: list[str],
                  t_start: float) -> dict[str, Any]:
    """The ``<stem>.tune.json`` document (without its files section)."""
    ctx, cands = search.ctx, search.cands
    return {
        "edgekit_version": __version__,
        "model": str(src),
        "fp32_model": ctx.fp32_path.name,
        "machine": {"cpu": cpu_model(), "instruction_set": instruction_set(),
                    "cores": os.cpu_count(), "engines": installed_engines()},
        "config": ctx.config.to_dict(),
        "calibration": data.calibration.source,
        "evaluation": data.eval_desc,
        "notes": data.notes,
        "fp32": {"accuracy": ctx.fp32_accuracy, "latency_ms": search.fp32.latency_ms},
        "winner": winner.to_dict(),
        "why": _why(winner, search.fp32, cands, ctx.config),
        "candidates": [c.to_dict() for c in cands],
        "pareto_front": [c.name for c in cands if c.pareto],
        "node_profile": search.profile,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "log": log,
    }
