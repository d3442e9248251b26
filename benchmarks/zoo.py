"""Model-zoo benchmark (issue 25): 12 architectures nobody here wrote, plus the 3 recipes.

For each model of ``benchmarks/zoo_models.py``, at batch 1 and 32 and with 1 and 2 threads,
five rows timed interleaved (balanced orders, :func:`edgekit.speed.timing.measure`): ORT fp32,
edgekit's default int8 (``edgekit export --quantize auto``; or the reason auto wrote none),
edgekit tuned (``edgekit tune --threads T --batch B``, run on the engine and threads it
stored: at most T), LiteRT int8
(TensorFlow's full-integer converter with float I/O and the model's calibration data, as
``edgekit compare`` builds it; XNNPACK) and OpenVINO fp32 (f32 pinned). Every statistic of
a row: p50/p90/p99 of the interleaved rounds, the per-call median of warm-cache blocks (20
consecutive calls of one row; each interleaved sample is itself the settled median of a
short block, :func:`edgekit.speed.timing.settle_for`) and the median of
per-round paired ratios against ORT fp32
(:func:`edgekit.speed.ratio.paired_ratio`). Export and each tune run as the real CLI in
their own process: wall time and that process's peak RSS (``os.wait4``) are recorded. Timing
runs in one process per model and thread setting (LiteRT/OpenVINO fix thread pools at start).

    python benchmarks/zoo.py                    # everything: results/zoo.{json,md,png}
    python benchmarks/zoo.py --quick            # smoke run: 3 tiny models, 32x32, b1, 1t
    python benchmarks/zoo.py --models resnet50,vit_small --size 160 --budget 2
    python benchmarks/zoo.py --models conv1d_text --merge results/zoo_x.json --out results
    python benchmarks/zoo.py --threads 2 --merge results/zoo_x.json --out results  # adds 2t

Resumable: each model's files and step results are cached in ``benchmarks/.cache/zoo/<model>/``
(``--cache``; ``zoo-quick`` for ``--quick``); a step is redone only when its inputs or options
changed, so a killed run continues where it stopped. Linux/Unix only (``os.wait4``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo_models  # noqa: E402
import zoo_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
#: rows in table order (the first is the reference of every ratio)
ROWS = zoo_report.ROWS
#: signals that mean "the run was stopped" (not cached: a rerun retries the step)
STOPPED = (-2, -9, -15)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# steps: subprocesses with wall time and peak RSS, results cached with their inputs
# ---------------------------------------------------------------------------------------------
def run_step(cmd: list[str], stdout: Path, logfile: Path) -> dict[str, Any]:
    """Run ``cmd`` (repository root, this tree first on PYTHONPATH): exit code, wall seconds,
    the process's own peak RSS in MiB (``ru_maxrss`` from ``os.wait4``) and, on failure, the
    last line of its log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    with open(stdout, "wb") as out, open(logfile, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: stop the child too, then re-raise
            proc.kill()
            proc.wait()
            raise
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    kib = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    res: dict[str, Any] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 2),
                           "peak_rss_mb": round(kib / 1024, 1)}
    if rc != 0:
        lines = [ln for ln in logfile.read_text(errors="replace").splitlines() if ln.strip()]
        res["error"] = (lines[-1][:300] if lines else "") + f" (exit code {rc})"
    return res


def _stamp(path: str | Path) -> list[Any]:
    """What identifies a file's version: path, size, mtime."""
    p = Path(path)
    return [str(p), p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else [str(p)]


def cached_step(result: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result of a step when it ran with the same ``params``."""
    if not result.exists():
        return None
    try:
        data = json.loads(result.read_text())
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and data.get("params") == params else None


def store_step(result: Path, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    data = {**data, "params": params}
    if data.get("rc") not in STOPPED:
        tmp = result.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(result)
    return data


def _py() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve())]


def _edgekit() -> list[str]:
    return [sys.executable, "-m", "edgekit.cli"]


def step_prepare(name: str, work: Path, size: int, samples: int) -> dict[str, Any]:
    """Build the Keras model and calibration data, and the LiteRT int8 file (one process)."""
    params = {"size": size, "samples": samples}
    got = cached_step(work / "prepare.json", params)
    if got is not None:
        return got
    work.mkdir(parents=True, exist_ok=True)
    for f in ("prepare.out.json", "litert.out.json"):
        (work / f).unlink(missing_ok=True)
    log(f"{name}: building the model, its calibration data and the LiteRT int8 file")
    res = run_step([*_py(), "--worker", "prepare", "--models", name, "--size", str(size),
                    "--calibration-samples", str(samples), "--work", str(work)],
                   work / "prepare.stdout", work / "prepare.log")
    if (work / "prepare.out.json").exists():
        res.update(json.loads((work / "prepare.out.json").read_text()))
        res["litert"] = (json.loads((work / "litert.out.json").read_text())
                         if (work / "litert.out.json").exists() else
                         {"error": f"the converter process died: {res.get('error')}"})
    return store_step(work / "prepare.json", params, res)


def step_export(name: str, work: Path, prep: dict[str, Any], samples: int) -> dict[str, Any]:
    """``edgekit export --quantize auto`` (fp32 + edgekit's default int8 or auto's reason)."""
    params = _export_params(prep, samples)
    got = cached_step(work / "export.json", params)
    if got is not None:
        return got
    log(f"{name}: edgekit export --quantize auto")
    out = work / "export"
    res = run_step(_export_cmd(name, prep, out, samples), work / "export.stdout",
                   work / "export.log")
    stem = Path(prep["keras"]).stem
    if res["rc"] == 0:
        report = json.loads((out / f"{stem}.report.json").read_text())
        res["fp32"] = str(out / f"{stem}.onnx")
        variant: dict[str, Any] = next(iter(report.get("variants", {}).values()), {})
        if variant.get("written"):
            res["int8"], res["int8_mode"] = str(out / variant["path"]), variant["mode"]
        else:
            res["int8_reason"] = "; ".join(variant.get("notes") or ["auto wrote no variant"])
    return store_step(work / "export.json", params, res)


def _export_params(prep: dict[str, Any], samples: int) -> dict[str, Any]:
    """What an export's result depends on: the Keras file, the calibration data, the count."""
    return {"keras": _stamp(prep["keras"]), "calibration": _stamp(prep["calibration"]),
            "samples": samples}


def _export_cmd(name: str, prep: dict[str, Any], out: Path, samples: int) -> list[str]:
    cmd = [*_edgekit(), "export", prep["keras"], "-o", str(out), "--quantize", "auto",
           "--calibration", prep["calibration"], "--calibration-samples", str(samples),
           "--validation-samples", str(samples), "--force"]
    if zoo_models.MODELS[name].custom_objects:
        cmd += ["--custom-objects", str(zoo_models.LAYERS)]
    return cmd


def _edgekit_code() -> str:
    """A hash of edgekit's source: what the export's memory depends on."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "edgekit").rglob("*.py")):
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def step_export_memory(name: str, work: Path, prep: dict[str, Any],
                       samples: int) -> dict[str, Any]:
    """The same export into a scratch folder, for its wall time and peak RSS, redone whenever
    edgekit's code changes (the timed files stay those of :func:`step_export`, so a change
    that only moves memory does not redo every tune and timing)."""
    params = {**_export_params(prep, samples), "edgekit": _edgekit_code()}
    got = cached_step(work / "export_memory.json", params)
    if got is not None:
        return got
    log(f"{name}: edgekit export again (wall time and peak RSS of this code)")
    scratch = work / "export_memory"
    res = run_step(_export_cmd(name, prep, scratch, samples), work / "export_memory.stdout",
                   work / "export_memory.log")
    shutil.rmtree(scratch, ignore_errors=True)
    return store_step(work / "export_memory.json", params, res)


def step_tune(name: str, work: Path, fp32: str, prep: dict[str, Any], threads: int,
              batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """``edgekit tune --threads T --batch B --json`` on the fp32 ONNX model."""
    drop = zoo_models.MODELS[name].max_accuracy_drop
    params = {"fp32": _stamp(fp32), "calibration": _stamp(prep["calibration"]),
              "budget": args.budget, "drop": drop, "samples": args.calibration_samples}
    key = f"tune_t{threads}_b{batch}"
    got = cached_step(work / f"{key}.json", params)
    if got is not None:
        return got
    log(f"{name}: edgekit tune --threads {threads} --batch {batch} --budget {args.budget:g}")
    cmd = [*_edgekit(), "tune", fp32, "-o", str(work / key), "--calibration",
           prep["calibration"], "--threads", str(threads), "--batch", str(batch), "--budget",
           str(args.budget), "--max-accuracy-drop", str(drop), "--calibration-samples",
           str(args.calibration_samples), "--json", "--force"]
    res = run_step(cmd, work / f"{key}.stdout", work / f"{key}.log")
    if res["rc"] == 0:
        rep = json.loads((work / f"{key}.stdout").read_text())
        win = rep["winner"]
        res.update({"path": str(work / key / rep["files"]["tuned"]["path"]),
                    "winner": win["name"], "engine": win.get("engine") or "onnxruntime",
                    "latency_ratio": win.get("latency_ratio"), "why": rep["why"],
                    "candidates": len(rep["candidates"]), "elapsed_s": rep.get("elapsed_s")})
    return store_step(work / f"{key}.json", params, res)


def step_bench(name: str, work: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Time every row at every batch with ``plan['threads']`` threads (own process)."""
    stamps = {r["row"]: {b: _stamp(p) for b, p in r["paths"].items()} for r in plan["rows"]}
    params = {**{k: v for k, v in plan.items() if k != "rows"}, "files": stamps}
    key = f"bench_t{plan['threads']}"
    got = cached_step(work / f"{key}.json", params)
    if got is not None:  # a cache written before benches kept their date: the file's
        got.setdefault("measured", _minute((work / f"{key}.json").stat().st_mtime))
        return got
    log(f"{name}: timing {len(plan['rows'])} rows with {plan['threads']} thread(s)")
    (work / f"{key}.plan.json").write_text(json.dumps(plan, indent=1))
    (work / f"{key}.out.json").unlink(missing_ok=True)
    res = run_step([*_py(), "--worker", "bench", "--work", str(work / f"{key}.plan.json")],
                   work / f"{key}.stdout", work / f"{key}.log")
    if (work / f"{key}.out.json").exists():
        res.update(json.loads((work / f"{key}.out.json").read_text()))
    res["measured"] = _minute(time.time())
    return store_step(work / f"{key}.json", params, res)


def _minute(t: float) -> str:
    """``t`` (seconds since the epoch) as the local minute the zoo dates its timings with."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


# ---------------------------------------------------------------------------------------------
# one model, all steps
# ---------------------------------------------------------------------------------------------
def _plan(prep: dict[str, Any], exp: dict[str, Any], tunes: dict[str, Any], threads: int,
          args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The rows to time with ``threads`` threads and the reasons of rows that have no file."""
    batches = [str(b) for b in args.batches]
    rows: list[dict[str, Any]] = [{"row": "ort-fp32", "engine": "onnxruntime",
                                   "paths": dict.fromkeys(batches, exp["fp32"])}]
    missing: dict[str, str] = {}
    if exp.get("int8"):
        rows.append({"row": "int8", "engine": "onnxruntime",
                     "paths": dict.fromkeys(batches, exp["int8"])})
    else:
        missing["int8"] = f"auto wrote none: {exp.get('int8_reason')}"
    tuned = {b: tunes[f"t{threads}_b{b}"].get("path") for b in batches}
    if any(tuned.values()):
        rows.append({"row": "tuned", "engine": "auto",
                     "paths": {b: p for b, p in tuned.items() if p}})
    for b, p in tuned.items():
        if not p:
            missing[f"tuned@b{b}"] = str(tunes[f"t{threads}_b{b}"].get("error"))
    lite = prep.get("litert", {})
    if lite.get("path"):
        rows.append({"row": "litert-int8", "engine": "litert",
                     "paths": dict.fromkeys(batches, lite["path"])})
    else:
        missing["litert-int8"] = str(lite.get("error"))
    rows.append({"row": "openvino-fp32", "engine": "openvino",
                 "paths": dict.fromkeys(batches, exp["fp32"])})
    plan = {"threads": threads, "batches": list(args.batches), "seconds": args.seconds,
            "min_rounds": 3 if args.quick else 5, "warmup": 1 if args.quick else 2,
            "data": prep.get("calibration"), "rows": rows}
    return plan, missing


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every step of one model; a failed step is recorded and the model goes on if it can."""
    entry = zoo_models.MODELS[name]
    work = args.cache / name
    size = args.size if entry.family == "image" else 0
    out: dict[str, Any] = {"name": name, "title": entry.title, "family": entry.family,
                           "zoo": name in zoo_models.ZOO, "size": size or None}
    prep = out["prepare"] = step_prepare(name, work, size, args.calibration_samples)
    if prep["rc"] != 0 or "keras" not in prep:
        out["error"] = f"build failed: {prep.get('error')}"
        return out
    exp = out["export"] = step_export(name, work, prep, args.calibration_samples)
    if exp["rc"] != 0:
        out["error"] = f"export failed: {exp.get('error')}"
        return out
    out["export_memory"] = step_export_memory(name, work, prep, args.calibration_samples)
    out["tune"] = {f"t{t}_b{b}": step_tune(name, work, exp["fp32"], prep, t, b, args)
                   for t in args.threads for b in args.batches}
    out["bench"] = {}
    for t in args.threads:
        plan, missing = _plan(prep, exp, out["tune"], t, args)
        res = step_bench(name, work, plan)
        res["missing"] = missing
        out["bench"][str(t)] = res
    return out


# ---------------------------------------------------------------------------------------------
# workers (run by the steps above in their own processes)
# ---------------------------------------------------------------------------------------------
def worker_prepare(name: str, size: int, work: Path, samples: int) -> None:
    """Model, calibration data (prepare.out.json), then the LiteRT int8 file
    (litert.out.json) by :func:`edgekit.measure.compare_variants.build_variants`."""
    from edgekit.measure.backends import KerasBackend
    from edgekit.measure.compare_variants import build_variants

    if zoo_models.MODELS[name].custom_objects:
        import zoo_layers  # noqa: F401 - registers the layers the saved model names
    info = zoo_models.prepare(name, size, work, samples)
    (work / "prepare.out.json").write_text(json.dumps(info, indent=1))
    kb = KerasBackend(info["keras"])
    ds = kb.load_data(info["calibration"], "calibration data", "train", samples)
    cal = dict(zip([i.name for i in kb.inputs], kb.prepare(ds), strict=True))
    t0 = time.perf_counter()
    made = build_variants(info["keras"], work / "litert", cal, ("tflite-int8",))
    paths, errors = made.paths, made.errors
    lite: dict[str, Any] = {"convert_s": round(time.perf_counter() - t0, 1)}
    if "tflite-int8" in paths:
        lite["path"] = str(paths["tflite-int8"])
    else:
        lite["error"] = errors.get("tflite-int8", "not built")
    (work / "litert.out.json").write_text(json.dumps(lite, indent=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker == "prepare":
        worker_prepare(args.models[0], args.size, args.work, args.calibration_samples)
        return 0
    if args.worker == "bench":
        import zoo_bench

        out = zoo_bench.bench_plan(json.loads(args.work.read_text()))
        args.work.with_name(args.work.name.replace(".plan", ".out")).write_text(
            json.dumps(out, indent=1))
        return 0
    from edgekit.speed.machine import cpu_model, instruction_set

    t0 = time.perf_counter()
    log(f"CPU: {cpu_model()}, {instruction_set()} ({os.cpu_count()} logical cores)")
    log(f"zoo: {len(args.models)} model(s) at {args.size}x{args.size}, batches {args.batches}, "
        f"threads {args.threads}, tune budget {args.budget:g} min; cache {args.cache}")
    models, threads, batches = (zoo_report.merged_models(args.merge, vars(args)) if args.merge
                                else ({}, [], []))
    for name in args.models:
        new = run_model(name, args)
        # when its timings were taken (a resumed run's cached ones keep their own date)
        new["measured"] = max((b["measured"] for b in new.get("bench", {}).values()),
                              default=_minute(time.time()))
        (args.cache / name / "result.json").write_text(json.dumps(new, indent=1))
        models[name] = zoo_report.merge_model(models.get(name), new)
    options = {**vars(args), "models": list(models),
               "threads": sorted(set(args.threads) | set(threads)),
               "batches": sorted(set(args.batches) | set(batches))}
    result = zoo_report.summarize(models, options, time.perf_counter() - t0)
    paths = zoo_report.write(result, args.out, "zoo")
    print(zoo_report.markdown(result))
    log("wrote " + ", ".join(str(p) for p in paths))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 tiny models, --size 32, "
                    "batch 1, 1 thread, 1 s per row, a 3 s tune; results in a temp folder")
    ap.add_argument("--models", default=None,
                    help="comma-separated subset of " + ",".join(zoo_models.MODELS))
    ap.add_argument("--size", type=int, default=None, help="image side (default 224; quick 32)")
    ap.add_argument("--budget", type=float, default=None,
                    help="edgekit tune --budget in minutes (default 3; quick 0.05)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="interleaved timing per row and batch, and as much again in warm-cache "
                    "blocks (default 3; quick 1)")
    ap.add_argument("--threads", default=None, help="thread settings (default 1,2; quick 1)")
    ap.add_argument("--batches", default=None, help="batch sizes (default 1,32; quick 1)")
    ap.add_argument("--calibration-samples", type=int, default=None,
                    help="calibration (and export validation) samples (default 32; quick 16)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default "
                    "benchmarks/results; quick: a new temporary folder)")
    ap.add_argument("--cache", type=Path, default=None, help="artifact cache (default "
                    "benchmarks/.cache/zoo, quick benchmarks/.cache/zoo-quick)")
    ap.add_argument("--merge", type=Path, default=None,
                    help="an earlier zoo JSON of this CPU and these options: its models are "
                    "kept, the --models run now replace theirs (a partial re-measurement); "
                    "with other --threads or --batches, this run's thread settings and batch "
                    "sizes are added to its own")
    ap.add_argument("--worker", choices=["prepare", "bench"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    q = args.quick
    args.models = (args.models.split(",") if args.models else
                   list(zoo_models.QUICK if q else zoo_models.MODELS))
    unknown = [m for m in args.models if m not in zoo_models.MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; use {', '.join(zoo_models.MODELS)}")
    args.size = args.size or (32 if q else 224)
    args.budget = args.budget or (0.05 if q else 3.0)
    args.seconds = args.seconds or (1.0 if q else 3.0)
    args.threads = [int(t) for t in (args.threads or ("1" if q else "1,2")).split(",")]
    args.batches = [int(b) for b in (args.batches or ("1" if q else "1,32")).split(",")]
    args.calibration_samples = args.calibration_samples or (16 if q else 32)
    args.cache = (args.cache or CACHE / ("zoo-quick" if q else "zoo")).resolve()
    if args.worker is None:
        args.out = (args.out or (Path(tempfile.mkdtemp(prefix="edgekit-zoo-quick-")) if q
                                 else RESULTS)).resolve()
    return args


if __name__ == "__main__":
    sys.exit(main())
