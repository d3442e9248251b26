"""Results of ``benchmarks/zoo.py``: the JSON, the Markdown table, the plot and the targets.

Imports numpy-free edgekit code only (matplotlib when the plot is drawn).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "TITLES", "summarize", "markdown", "targets", "plot", "write",
           "merged_models", "merge_model"]

#: rows in table order; every ratio is against the first
ROWS = ("ort-fp32", "int8", "tuned", "litert-int8", "openvino-fp32")
TITLES = {"ort-fp32": "ORT fp32", "int8": "edgekit int8", "tuned": "edgekit tuned",
          "litert-int8": "LiteRT int8", "openvino-fp32": "OpenVINO fp32"}
#: the issue's targets (checked on full runs)
ZOO_MODELS_NEEDED, LITERT_MAX, RSS_LIMIT_MB, TUNED_SLACK = 10, 1.15, 3072.0, 1.10


def _strip(obj: Any) -> Any:
    """``obj`` without the cache bookkeeping (step parameters)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "params"}
    return obj


def summarize(models: dict[str, Any], options: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """The result document: machine, options, per-model steps and statistics, targets."""
    import importlib.metadata as md

    from edgekit.speed.machine import machine_info

    engines = {}
    for pkg in ("openvino", "ai-edge-litert"):
        try:
            engines[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()
            if k not in ("worker", "work", "cache", "out")}
    result = {"tool": "benchmarks/zoo.py", "date": time.strftime("%Y-%m-%d %H:%M"),
              "options": opts, "machine": machine_info(), "engine_versions": engines,
              "wall_s": round(wall_s, 1), "models": _strip(models)}
    result["targets"] = targets(result)
    return result


#: options a merged result must share with the run that extends it
_SAME_OPTIONS = ("size", "budget", "seconds", "calibration_samples", "quick")


def merged_models(path: Path, options: dict[str, Any]
                  ) -> tuple[dict[str, Any], list[int], list[int]]:
    """The models of the earlier result ``path``, to be extended by this run, and its thread
    settings and batch sizes: refused (a SystemExit naming the difference) unless it was
    measured on this CPU (model and instruction set) with the same options (thread settings
    and batch sizes may differ: a run with ``--threads 2`` or ``--batches 32`` adds its rows
    to the earlier ones, see :func:`merge_model`)."""
    from edgekit.speed.machine import machine_info

    try:
        old = json.loads(path.read_text())
        models, machine, opts = old["models"], old["machine"], old["options"]
        threads = [int(t) for t in opts["threads"]]
        batches = [int(b) for b in opts["batches"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: --merge {path}: not a zoo result ({exc})") from exc
    here = machine_info()
    for key in ("cpu", "instruction_set"):
        if machine.get(key) != here.get(key):
            raise SystemExit(f"error: --merge {path}: measured on {machine.get(key)!r}, this "
                             f"machine is {here.get(key)!r}; merge results of one CPU only")
    for key in _SAME_OPTIONS:
        if opts.get(key) != options.get(key):
            raise SystemExit(f"error: --merge {path}: its {key} is {opts.get(key)!r}, this run's "
                             f"{options.get(key)!r}")
    merged = models if isinstance(models, dict) else {m["name"]: m for m in models}
    for m in merged.values():
        m.setdefault("measured", old.get("date"))
        for bench in m.get("bench", {}).values():
            bench.setdefault("measured", m["measured"])
    return dict(merged), threads, batches


def merge_model(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (this run's result of a model), plus the tunes and timings of the thread settings
    and batch sizes ``old`` (the merged result's) has and this run did not measure; each
    timing keeps its date (a batch merged into a thread setting's bench carries its own)."""
    if not old or "bench" not in old or "bench" not in new:
        return new
    bench = {**old["bench"], **new["bench"]}
    for t in set(old["bench"]) & set(new["bench"]):
        bench[t] = _merge_bench(old["bench"][t], new["bench"][t])
    return {**new, "tune": {**old.get("tune", {}), **new.get("tune", {})}, "bench": bench}


def _merge_bench(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """One thread setting's timings: ``new``'s batches and those only ``old`` has."""
    kept = {b: {"measured": old.get("measured"), **res}
            for b, res in old.get("batches", {}).items() if b not in new.get("batches", {})}
    if not kept:
        return new
    rows = {r: {**old.get("rows", {}).get(r, {}), **new.get("rows", {}).get(r, {})}
            for r in {*old.get("rows", {}), *new.get("rows", {})}}
    return {**new, "batches": {**kept, **new.get("batches", {})}, "rows": rows,
            "missing": {**old.get("missing", {}), **new.get("missing", {})}}


def cell(model: dict[str, Any], threads: int, batch: int, row: str) -> dict[str, Any] | None:
    """The statistics of one row (None when it was not timed)."""
    bench = model.get("bench", {}).get(str(threads), {})
    return bench.get("batches", {}).get(str(batch), {}).get("rows", {}).get(row)


def _ms(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v * 1000:.0f} µs" if v < 1 else (f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms")


def _step(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    if s.get("rc") != 0:
        return "failed"
    return f"{s['wall_s']:.0f} s / {s['peak_rss_mb']:.0f} MiB"


def export_step(m: dict[str, Any]) -> dict[str, Any] | None:
    """The export's wall time and peak RSS: from the re-run with the current code
    (``export_memory``) when it ran, else from the export the timed files came from."""
    again = m.get("export_memory")
    return again if again and again.get("rc") == 0 else m.get("export")


def _settings(result: dict[str, Any]) -> list[tuple[int, int]]:
    o = result["options"]
    return [(b, t) for b in o["batches"] for t in o["threads"]]


def _timed_at(m: dict[str, Any], t: int, b: int) -> bool:
    """Whether the model was timed with ``t`` threads at batch ``b`` (a merged result may lack
    a setting)."""
    return str(b) in m.get("bench", {}).get(str(t), {}).get("batches", {})


def _table(result: dict[str, Any]) -> list[str]:
    header = ["model", "b", "t", *(TITLES[r] for r in ROWS), "tuned engine",
              "export s / peak RSS", "tune s / peak RSS"]
    lines = ["| " + " | ".join(header) + " |", "|:--|--:|--:|" + "--:|" * (len(ROWS) + 3)]
    for m in result["models"].values():
        if "bench" not in m:
            lines.append(f"| {m['name']} | | | not measured: {m.get('error')} |")
            continue
        for b, t in _settings(result):
            if not _timed_at(m, t, b):
                continue
            cells = []
            for r in ROWS:
                c = cell(m, t, b, r)
                cells.append("-" if c is None else
                             _ms(c["p50_ms"]) + ("" if r == ROWS[0] else
                                                 f" ({c['speedup']:.2f}x)"))
            tune = m.get("tune", {}).get(f"t{t}_b{b}", {})
            engine = f"{tune['engine']} ({tune['winner']})" if tune.get("winner") else "-"
            lines.append(f"| {m['name']} | {b} | {t} | " + " | ".join(cells)
                         + f" | {engine} | {_step(export_step(m))} | {_step(tune)} |")
    return lines


def _sampling(bench: dict[str, Any]) -> str:
    """How a bench's interleaved samples were taken: a settled block per row and round, or (a
    1-thread bench timed before one thread settled, which has no ``settle_s``) one call."""
    settle = bench.get("settle_s")
    if settle is None and bench.get("threads") == 1:
        return "one call per row and round"
    # a multi-threaded bench without settle_s was timed with SETTLE_S, 0.06 s (edgekit's
    # timing module is not imported here: it needs numpy)
    return f"settled samples ({1000 * float(settle or 0.06):.0f} ms blocks)"


def _notes(result: dict[str, Any]) -> list[str]:
    out = []
    for m in result["models"].values():
        dates = {b.get("measured") for b in m.get("bench", {}).values()} - {None}
        notes = ([f"measured {m['measured']}"] if len(dates) < 2 and m.get("measured") else
                 [f"measured with {t} thread(s) {b['measured']}"
                  for t, b in sorted(m["bench"].items()) if b.get("measured")])
        notes += [f"{t} thread(s): {_sampling(b)}" for t, b in sorted(m["bench"].items())
                  if b.get("measured")]
        prep = m.get("prepare", {})
        if prep.get("calibration_desc"):
            notes.append(f"calibration: {prep['calibration_desc']}")
        if m.get("error"):
            notes.append(m["error"])
        for t, bench in m.get("bench", {}).items():
            for row, why in bench.get("missing", {}).items():
                notes.append(f"{row}, {t} thread(s): no file ({why})")
            if bench.get("rc"):
                notes.append(f"timing, {t} thread(s): {bench.get('error')}")
            for b, res in bench.get("batches", {}).items():
                for row, err in res.get("errors", {}).items():
                    notes.append(f"{row}, b{b} {t}t: not timed ({err})")
        for key, tune in m.get("tune", {}).items():
            notes.append(f"tune {key}: " + (tune.get("why") or f"failed: {tune.get('error')}"))
        out.append(f"- **{m['name']}** ({m['title']}): " + "; ".join(notes))
    return out


def header(result: dict[str, Any]) -> list[str]:
    m, o = result["machine"], result["options"]
    v = {**m["versions"], **result.get("engine_versions", {})}
    flag = " --quick" if o.get("quick") else ""
    return [
        "# edgekit model-zoo benchmark",
        "",
        f"Generated by `python benchmarks/zoo.py{flag}` on {result['date']} in "
        f"{result['wall_s'] / 60:.1f} min"
        + (f"; models not re-run are kept from {o['merge']} (each model's date is in its "
           "notes)." if o.get("merge") else "."),
        "",
        f"- CPU: {m['cpu']}, {m.get('instruction_set', 'instruction set unknown')} "
        f"({m['logical_cores']} logical cores, shared while measured: absolute numbers are "
        "noisy, the ratios are paired)",
        "- " + ", ".join(f"{k} {v[k]}" for k in ("python", "tensorflow", "keras", "onnxruntime",
                                                    "openvino", "ai-edge-litert", "tf2onnx")
                         if k in v),
        f"- image models at {o['size']}x{o['size']}; `edgekit tune --budget {o['budget']:g}` "
        "per thread setting and batch; calibration per model in the notes",
        f"- cells: p50 per call of the interleaved rounds ({o['seconds']:g} s per row and "
        "batch) on the model's calibration samples repeated to the batch (the data its tune "
        "timed; token ids across the vocabulary), and the speed-up over ORT fp32: 1 / median "
        "of the per-round paired ratios. "
        "JSON: p90/p99, warm-cache p50 (blocks of 20 consecutive calls) and every ratio",
        "",
    ]


def markdown(result: dict[str, Any]) -> str:
    lines = [*header(result), *_table(result), "", "## Notes", "", *_notes(result), "",
             "## Targets", "", *target_lines(result["targets"])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------
def _measured(result: dict[str, Any], zoo_only: bool) -> list[dict[str, Any]]:
    return [m for m in result["models"].values() if (m["zoo"] or not zoo_only)]


def _check(result: dict[str, Any], zoo_only: bool, rule: Any, threads: int | None = None
           ) -> tuple[list[str], list[str], list[str]]:
    """(passing, failing with reasons, n/a with reasons) model lists under ``rule(model,
    threads, batch) -> (ok | None, detail)``, on every thread setting or on ``threads`` only."""
    ok, bad, na = [], [], []
    settings = [(b, t) for b, t in _settings(result) if threads in (None, t)]
    for m in _measured(result, zoo_only):
        fails, skips = [], []
        for b, t in settings:
            good, detail = (rule(m, t, b) if _timed_at(m, t, b) else
                            (None, f"not timed with {t} thread(s) at batch {b}"))
            if good is None:
                skips.append(detail)
            elif not good:
                fails.append(f"b{b} t{t}: {detail}")
        if fails:
            bad.append(f"{m['name']} ({', '.join(fails)})")
        elif skips and len(skips) == len(settings):
            na.append(f"{m['name']} ({skips[0]})")
        else:
            ok.append(m["name"])
    return ok, bad, na


def _tuned_vs_litert(m: dict[str, Any], t: int, b: int) -> tuple[bool | None, str]:
    tuned = cell(m, t, b, "tuned")
    if tuned is None:
        return False, "no tuned row"
    if cell(m, t, b, "litert-int8") is None:
        return True, "no LiteRT int8 row"
    r = tuned["vs_rows"]["litert-int8"]
    return r <= 1.0, f"tuned/LiteRT {r:.2f}"


def _tuned_over_litert(result: dict[str, Any], t: int) -> list[float]:
    """Every paired tuned/LiteRT int8 ratio of the zoo models with ``t`` threads."""
    out = []
    for m in _measured(result, True):
        for b in result["options"]["batches"]:
            tuned = cell(m, t, b, "tuned")
            if tuned is not None and cell(m, t, b, "litert-int8") is not None:
                out.append(tuned["vs_rows"]["litert-int8"])
    return out


def _int8_vs_fp32(m: dict[str, Any], t: int, b: int) -> tuple[bool | None, str]:
    c = cell(m, t, b, "int8")
    if c is None:
        return None, "no int8 file: " + str(m.get("export", {}).get("int8_reason", "not timed"))
    return c["ratio_vs_fp32"] <= 1.0, f"int8/fp32 {c['ratio_vs_fp32']:.2f}"


def _tuned_vs_fastest(m: dict[str, Any], t: int, b: int) -> tuple[bool | None, str]:
    tuned = cell(m, t, b, "tuned")
    if tuned is None:
        return False, "no tuned row"
    worst = max(tuned["vs_rows"].items(), key=lambda kv: kv[1])
    return worst[1] <= TUNED_SLACK, f"tuned/{worst[0]} {worst[1]:.2f}"


def _rss(m: dict[str, Any]) -> tuple[bool | None, str]:
    steps = [("export", export_step(m))] + list(m.get("tune", {}).items())
    peaks = [(k, s["peak_rss_mb"]) for k, s in steps if s and "peak_rss_mb" in s]
    if not peaks:
        return None, "no export/tune ran"
    k, v = max(peaks, key=lambda kv: kv[1])
    return v < RSS_LIMIT_MB, f"{k} {v:.0f} MiB"


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The four checks of issue 25 on this result, each with its status and the models that
    fail; ``incomplete`` when the run did not cover what the target is stated for."""
    o = result["options"]
    full = set(o["batches"]) >= {1, 32}
    n_zoo = len(_measured(result, True))
    every_setting = all(_timed_at(m, t, b) for m in _measured(result, False)
                        for b, t in _settings(result))
    out = []
    ok, bad, na = _check(result, True, _tuned_vs_litert, threads=1)
    worst = max(_tuned_over_litert(result, 1), default=1.0)
    complete = n_zoo == 12 and full and 1 in o["threads"] and every_setting
    if worst > LITERT_MAX or len(bad) > 12 - ZOO_MODELS_NEEDED:
        status = "fail"  # whatever the settings not measured give
    else:
        status = "pass" if complete and len(ok) >= ZOO_MODELS_NEEDED else "incomplete"
    out.append({"target": f"tuned no slower than LiteRT int8 (paired ratio <= 1) on >= "
                f"{ZOO_MODELS_NEEDED} of the 12 zoo models at batch 1 and 32 (1 thread), and "
                f"never slower than {LITERT_MAX:.2f}x",
                "status": status, "passing": ok, "failing": bad, "n/a": na,
                "summary": f"{len(ok)} pass of the {n_zoo} zoo models measured; the slowest "
                f"tuned/LiteRT ratio {worst:.2f}"})
    for name, rule, zoo_only in (
            ("edgekit's default int8 file never slower than ORT fp32", _int8_vs_fp32, False),
            (f"tuned within {TUNED_SLACK:.2f}x of the fastest row of its model and batch",
             _tuned_vs_fastest, False)):
        ok, bad, na = _check(result, zoo_only, rule)
        out.append({"target": name, "status": "fail" if bad else (
            "pass" if full and n_zoo == 12 and set(o["threads"]) >= {1, 2} and every_setting
            else "incomplete"),
            "passing": ok, "failing": bad, "n/a": na,
            "summary": f"{len(ok)} pass, {len(bad)} fail, {len(na)} n/a"})
    out.append(_warm_cnn(result))
    rss = [(m["name"], *_rss(m)) for m in _measured(result, False)]
    bad = [f"{n} ({d})" for n, good, d in rss if good is False]
    out.append({"target": f"peak RSS of export and tune < {RSS_LIMIT_MB:.0f} MiB at 224x224",
                "status": "fail" if bad else ("pass" if o["size"] == 224 else "incomplete"),
                "passing": [n for n, good, _ in rss if good], "failing": bad,
                "n/a": [f"{n} ({d})" for n, good, d in rss if good is None],
                "summary": "largest: " + ", ".join(f"{n} {d}" for n, _, d in rss)})
    return out


def _warm_cnn(result: dict[str, Any]) -> dict[str, Any]:
    """The Fashion CNN at batch 1, 1 thread, in warm-cache blocks (an app's loop): tuned at most
    1.10x LiteRT int8's per-call p50."""
    name = "fashion_cnn"
    target = (f"{name} at batch 1, 1 thread, warm-cache blocks: tuned within "
              f"{TUNED_SLACK:.2f}x of LiteRT int8")
    m = result["models"].get(name, {})
    tuned, lite = (cell(m, 1, 1, r) for r in ("tuned", "litert-int8"))
    if not tuned or not lite:
        return {"target": target, "status": "incomplete", "passing": [], "failing": [],
                "n/a": [], "summary": "not measured"}
    r = tuned["warm_p50_ms"] / lite["warm_p50_ms"]
    good = r <= TUNED_SLACK
    return {"target": target, "status": "pass" if good else "fail",
            "passing": [name] if good else [], "failing": [] if good else [f"{name} ({r:.2f})"],
            "n/a": [], "summary": f"{_ms(tuned['warm_p50_ms'])} vs {_ms(lite['warm_p50_ms'])} "
            f"per call: {r:.2f}x"}


def target_lines(checks: list[dict[str, Any]]) -> list[str]:
    lines = []
    for c in checks:
        lines.append(f"- [{c['status'].upper()}] {c['target']}: {c['summary']}")
        if c["failing"]:
            lines.append(f"  - failing: {'; '.join(c['failing'])}")
        if c["n/a"]:
            lines.append(f"  - n/a: {'; '.join(c['n/a'])}")
    if any(c["status"] == "incomplete" for c in checks):
        lines.append("- incomplete: the run did not cover the 12 zoo models at batch 1 and 32, "
                     "1 and 2 threads, at 224x224; the checks hold for what was measured only")
    return lines


# ---------------------------------------------------------------------------------------------
# plot and files
# ---------------------------------------------------------------------------------------------
def plot(result: dict[str, Any], path: Path) -> Path:
    """Speed-up over ORT fp32 per model and row, one panel per batch and thread setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    settings = _settings(result)
    models = [m for m in result["models"].values() if "bench" in m]
    rows = ROWS[1:]
    fig, axes = plt.subplots(len(settings), 1, squeeze=False,
                             figsize=(max(6.0, 0.9 * len(models) + 2), 3.2 * len(settings)))
    width = 0.8 / len(rows)
    for ax, (b, t) in zip(axes[:, 0], settings, strict=True):
        for j, r in enumerate(rows):
            ys = [(cell(m, t, b, r) or {}).get("speedup", math.nan) for m in models]
            ax.bar([i + (j - (len(rows) - 1) / 2) * width for i in range(len(models))], ys,
                   width, label=TITLES[r])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda v, _: f"{v:g}x" if f"{v:g}".lstrip("0.")[:1] in "25" else ""))
        ax.tick_params(axis="y", which="both", labelsize=7)
        ax.set_xticks(range(len(models)), [m["name"] for m in models], rotation=30, ha="right",
                      fontsize=8)
        ax.set_ylabel("speed-up over ORT fp32")
        ax.set_title(f"batch {b}, {t} thread(s)", fontsize=9)
    m = result["machine"]
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f"edgekit zoo: {m['cpu']}, {m.get('instruction_set')}", fontsize=9)
    fig.legend(handles, labels, loc="upper center", ncol=len(rows), fontsize=7,
               bbox_to_anchor=(0.5, 0.96), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(result: dict[str, Any], out: Path, stem: str) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    paths[1].write_text(markdown(result) + "\n")
    paths.append(plot(result, out / f"{stem}.png"))
    return paths
