"""Graceful shutdown of ``edgekit serve --workers 2``: SIGTERM while requests are in flight and
keep-alive clients keep posting, repeated.

Each run is the drill of ``tests/_shutdown_drill.py`` (what ``tests/test_serve_shutdown.py``
runs 3 times): the server starts on a free 127.0.0.1 port, 16 clients post single-sample
``/predict`` requests on keep-alive connections (a fresh connection every 3 requests) for 1.5 s,
then the server gets SIGTERM while the clients keep posting and new ones keep arriving. A
request is *accepted* when the server sent any byte of a response to it, or when it was sent
before the SIGTERM on a connection the server was already reading (or on one it kept inviting
requests on 3 s after the SIGTERM); it is *answered* when its response arrived complete. The
rest were *refused* (closed without a byte of response: a new connection, or one that raced the
closing of an idle keep-alive connection). Target (issue 22): every accepted request answered,
and every exit within the graceful limit (10 s).

    python benchmarks/serve_shutdown.py                    # 30 runs, exports models/fashion_cnn
    python benchmarks/serve_shutdown.py --model out/fashion_cnn.onnx --runs 5

Prints a table and writes ``benchmarks/results/serve_shutdown.json`` (``--out``). Exit status 1
when the target is missed and ``--check`` is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _runtime_common import ROOT, add_model_args, model_path

from edgekit.serve.shutdown import GRACEFUL_TIMEOUT
from edgekit.speed.machine import cpu_model, instruction_set

sys.path.insert(0, str(ROOT / "tests"))
from _shutdown_drill import drill  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "serve_shutdown.json"


def run(model: Path, runs: int, workers: int, clients: int, tmp: Path) -> dict[str, Any]:
    per_run = []
    for i in range(runs):
        log = tmp / f"server{i}.log"
        r = drill(model, workers=workers, clients=clients, log_path=log)
        row = r.to_dict()
        row["cancelled_by_uvicorn"] = "Cancel" in log.read_text()
        per_run.append(row)
        print(f"run {i + 1}/{runs}: exit {r.exit_s:.2f} s, {r.accepted} accepted, "
              f"{r.unanswered} unanswered, {r.refused} refused", file=sys.stderr)  # fmt: skip
    exits = [r["exit_s"] for r in per_run]
    counts = ("accepted", "answered", "unanswered", "refused", "marked_close")
    total = {k: sum(r[k] for r in per_run) for k in counts}
    summary = {
        "runs": runs,
        **total,
        "runs_with_unanswered": sum(r["unanswered"] > 0 for r in per_run),
        "runs_over_graceful_limit": sum(e >= GRACEFUL_TIMEOUT for e in exits),
        "exit_s_median": round(statistics.median(exits), 3),
        "exit_s_max": round(max(exits), 3),
    }
    return {
        "cpu": cpu_model(),
        "instruction_set": instruction_set(),
        "command": f"serve --workers {workers}; {clients} clients; SIGTERM after 1.5 s of load",
        "graceful_limit_s": GRACEFUL_TIMEOUT,
        "date": time.strftime("%Y-%m-%d"),
        "summary": summary,
        "target_met": summary["unanswered"] == 0 and summary["runs_over_graceful_limit"] == 0,
        "per_run": per_run,
    }


def _print(r: dict[str, Any]) -> None:
    s = r["summary"]
    print(f"CPU: {r['cpu']} ({r['instruction_set']}); {r['command']}")
    print("| runs | accepted requests | answered | unanswered | refused | exit median | "
          "max time to exit |")  # fmt: skip
    print("|--:|--:|--:|--:|--:|--:|--:|")
    print(f"| {s['runs']} | {s['accepted']:,} | {s['answered']:,} | {s['unanswered']} | "
          f"{s['refused']:,} | {s['exit_s_median']:.2f} s | {s['exit_s_max']:.2f} s |")  # fmt: skip
    print(f"target (every accepted request answered, every exit < {r['graceful_limit_s']:g} s): "
          + ("PASS" if r["target_met"] else "FAIL"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--runs", type=int, default=30, help="repetitions (default 30)")
    ap.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    ap.add_argument("--clients", type=int, default=16, help="clients before SIGTERM (16)")
    ap.add_argument("--out", default=str(RESULTS), help=f"JSON file (default {RESULTS})")
    ap.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, args.keras, Path(tmp))
        r = run(path, args.runs, args.workers, args.clients, Path(tmp))
    _print(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if r["target_met"] or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
