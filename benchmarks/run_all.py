"""The benchmark suite behind every performance figure in the README.

Models: the shipped Fashion-MNIST CNN and breast-cancer MLP (``models/``), the SMS text LSTM
(trained here for a few epochs from ../shared/data/sms-spam, never committed), MobileNetV2 at
224x224 alpha 1.0 and at 96x96 alpha 0.35 (``keras.applications``, ``weights=None``: latency
does not need trained weights). Variants: Keras (graph-mode ``tf.function``), TFLite fp32,
TFLite int8 (TensorFlow's converter), ONNX fp32 and ONNX int8 (edgekit), at batch 1 and 32,
with 1 and 2 threads. Within one model the variants are timed interleaved
(:mod:`edgekit.measure.bench`), so the speed-ups against Keras hold on a busy machine; each thread
setting runs in its own process (TensorFlow fixes its thread pools at start).

    python benchmarks/run_all.py            # full suite (< 15 min on 2 cores)
    python benchmarks/run_all.py --quick    # smoke run: two small models, batch 1, 1 thread
    python benchmarks/run_all.py --engines  # engines: MobileNetV2-224 and the CNN, 1 thread,
                                            # b1/b32: ORT fp32, int8, tuned (for b1 and for
                                            # b32), TFLite int8 (LiteRT, XNNPACK), OpenVINO
                                            # tuned and fp32 (f32)

ONNX rows: ``onnx-*`` run in onnxruntime, ``onnx-tuned`` on the engine ``edgekit tune --batch 1``
chose (stored in its metadata), ``onnx-tuned-b32`` (``--engines``) is tuned for batch 32 the same
way (a deployment at batch 32 tunes for it), ``openvino-tuned`` is the batch-1 tuned QDQ file
run by OpenVINO and
``openvino-fp32`` the fp32 file in OpenVINO with ``INFERENCE_PRECISION_HINT=f32`` pinned.
TFLite files run through LiteRT's ``CompiledModel`` API (``ai-edge-litert``, CPU/XNNPACK;
:mod:`edgekit.measure.litert`), its Interpreter only as the fallback; each model's table says
which API ran its TFLite rows (and the raw results hold ``runtime`` per row).

Writes ``benchmarks/results/latest.json`` and ``benchmarks/results/latest.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
SMS = ROOT.parent / "shared" / "data" / "sms-spam" / "SMSSpamCollection.tsv"
BUILT = ("keras", "tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")
VARIANTS = (*BUILT, "onnx-tuned", "openvino-tuned", "openvino-fp32")
#: ``--engines``: the rows of the engine comparison, ratios against the first
ENGINE_VARIANTS = ("onnx-fp32", "onnx-int8", "onnx-tuned", "onnx-tuned-b32", "tflite-int8",
                   "openvino-tuned", "openvino-fp32")
#: rows that run another row's file on OpenVINO
OPENVINO_ROWS = {"openvino-tuned": "onnx-tuned", "openvino-fp32": "onnx-fp32"}
FASHION = ROOT.parent / "shared" / "data" / "fashion-mnist"
#: models `edgekit tune` runs on (convnets; static int8): name -> accuracy budget in points.
#: MobileNetV2 has random weights (latency only), so its budget is open.
TUNED: dict[str, float] = {"fashion_cnn": 0.5, "mobilenetv2_96_035": 100.0,
                           "mobilenetv2_224_100": 100.0}
#: tune time budget in minutes (the engine stage comes after quantization and mixed precision)
TUNE_MINUTES: dict[str, float] = {"mobilenetv2_224_100": 4.0}

#: model -> (title, seconds of timing per batch size, warmup calls)
MODELS: dict[str, tuple[str, float, int]] = {
    "fashion_cnn": ("Fashion-MNIST CNN (28x28x1)", 2.0, 10),
    "breast_cancer_mlp": ("breast-cancer MLP (30 features)", 1.5, 10),
    "text_lstm": ("SMS text LSTM (100 tokens)", 2.0, 5),
    "mobilenetv2_96_035": ("MobileNetV2 96x96 alpha 0.35", 3.0, 3),
    "mobilenetv2_224_100": ("MobileNetV2 224x224 alpha 1.0", 4.0, 1),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# preparation: models and their variants
# ---------------------------------------------------------------------------------------------
def _keras_model(name: str) -> tuple[Path, Path | None]:
    """The .keras file of ``name`` and its calibration .npz (None: synthetic calibration)."""
    import keras

    if name == "fashion_cnn":
        return (ROOT / "models" / "fashion_cnn.keras",
                ROOT / "calibration_data" / "fashion_mnist.npz")
    if name == "breast_cancer_mlp":
        return (ROOT / "models" / "breast_cancer_mlp.keras",
                ROOT / "calibration_data" / "breast_cancer.npz")
    out = CACHE / f"{name}.keras"
    if out.exists():
        return out, None
    if name == "text_lstm":
        from edgekit.recipes import TrainConfig, train_recipe

        if not SMS.exists():
            raise FileNotFoundError(f"{SMS} is needed to train the text LSTM")
        log("training the SMS text LSTM (2 epochs)")
        train_recipe("text_lstm", TrainConfig(epochs=2, verbose=0), data=SMS, output=out,
                     force=True)
        return out, None
    size, alpha = (96, 0.35) if name == "mobilenetv2_96_035" else (224, 1.0)
    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None,
                                       classes=1000)
    m.save(out)
    return out, None


def prepare(names: list[str], calibration_samples: int, threads: tuple[int, ...] = (1,),
            built: tuple[str, ...] = BUILT, tune_batches: tuple[int, ...] = (1,)
            ) -> dict[str, Any]:  # fmt: skip
    """Build every variant file; returns the manifest (paths and build errors per model). The
    tuned rows are tuned for each thread setting and each batch of ``tune_batches``."""
    from edgekit.convert import synthetic_inputs
    from edgekit.measure.backends import KerasBackend
    from edgekit.measure.compare_variants import build_variants

    manifest: dict[str, Any] = {}
    for name in names:
        t0 = time.perf_counter()
        keras_path, cal_path = _keras_model(name)
        work = CACHE / name
        kb = KerasBackend(keras_path)
        n = calibration_samples if "224" not in name else min(calibration_samples, 32)
        if cal_path is not None and cal_path.exists():
            ds = kb.load_data(cal_path, "calibration data", "train", n)
            cal = dict(zip([i.name for i in kb.inputs], kb.prepare(ds), strict=True))
        else:
            cal = synthetic_inputs(kb.source, n)
        log(f"{name}: building variants")
        made = build_variants(keras_path, work, cal, built)
        paths, errors, modes = made.paths, made.errors, made.modes
        tune_info: dict[str, Any] | None = None
        if name in TUNED and "onnx-fp32" in paths:
            tune_info = {}
            for t in threads:  # tuned for each deployment setting, as a user would
                for b in tune_batches:
                    row, key = _tuned_row(t, b)
                    tuned, tune_info[key] = _tune(name, Path(paths["onnx-fp32"]), work, cal, n,
                                                  t, b)  # fmt: skip
                    paths[f"{row}@{t}"] = tuned
        manifest[name] = {
            "title": MODELS[name][0],
            "paths": {k: str(v) for k, v in paths.items()},
            "errors": errors,
            "modes": modes,
            "calibration": str(cal_path) if cal_path else f"{n} synthetic inputs",
            "build_s": round(time.perf_counter() - t0, 1),
            "tune": tune_info,
        }
        for v, e in errors.items():
            log(f"{name}: {v} failed: {e}")
    return manifest


def _tuned_row(threads: int, batch: int) -> tuple[str, str]:
    """(row, manifest key) of the file tuned for ``threads`` and ``batch``."""
    return ("onnx-tuned", str(threads)) if batch == 1 else (f"onnx-tuned-b{batch}",
                                                           f"{threads}/b{batch}")


def _tune(name: str, fp32: Path, work: Path, cal: dict[str, np.ndarray],
          n: int, threads: int, batch: int = 1) -> tuple[Path, dict[str, Any]]:
    """``edgekit tune --threads T --batch B`` on the fp32 ONNX model; returns the tuned file."""
    from edgekit.inputs.data import Dataset
    from edgekit.quantize import CalibrationConfig, QuantizationConfig
    from edgekit.tune import TuneConfig, tune_model

    eval_data: Any = FASHION if name == "fashion_cnn" and FASHION.exists() else None
    log(f"{name}: edgekit tune --threads {threads} --batch {batch}")
    res = tune_model(fp32, work / f"tuned{threads}b{batch}", Dataset(cal), eval_data,
                     TuneConfig(max_accuracy_drop=TUNED[name], threads=threads, batch=batch,
                                budget_minutes=TUNE_MINUTES.get(name, 2.0),
                                quantization=QuantizationConfig(
                                    calibration=CalibrationConfig(samples=n)),
                                eval_samples=2000, force=True))
    log(f"{name}: {res.report['why']}")
    return res.model_path, {"winner": res.winner.name, "why": res.report["why"], "batch": batch,
                            "engine": res.winner.engine, "session": res.winner.session,
                            "latency_ratio": res.winner.latency_ratio,
                            "accuracy_drop": res.winner.accuracy_drop,
                            "candidates": [{k: c.to_dict()[k] for k in (
                                "name", "stage", "engine", "latency_ratio", "latency_ms",
                                "accepted", "reason")} for c in res.candidates]}


# ---------------------------------------------------------------------------------------------
# measurement (one process per thread setting)
# ---------------------------------------------------------------------------------------------
def _variant_path(entry: dict[str, Any], v: str, threads: int) -> str | None:
    """The file of row ``v`` (OpenVINO rows run another row's file)."""
    src = OPENVINO_ROWS.get(v, v)
    return entry["paths"].get(f"{src}@{threads}", entry["paths"].get(src))


def worker(manifest: dict[str, Any], threads: int, batches: tuple[int, ...],
           scale: float, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Benchmark every model's ``variants`` interleaved with ``threads`` threads."""
    from edgekit.measure.backends import load_backend
    from edgekit.measure.bench import BenchConfig, bench_models
    from edgekit.speed.timing import make_inputs

    out: dict[str, Any] = {}
    for name, entry in manifest.items():
        _, seconds, warmup = MODELS[name]
        backends, errors = [], dict(entry["errors"])
        for v in variants:
            path = _variant_path(entry, v, threads)
            if path is None:
                continue
            try:
                b = load_backend(path, v, threads=threads,
                                 engine="openvino" if v in OPENVINO_ROWS else "auto")
                for bs in batches:  # fail here, not in the middle of the timing
                    b.infer(make_inputs(b.inputs, bs))
                backends.append(b)
            except Exception as exc:
                errors[v] = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else \
                    type(exc).__name__
        if not backends:
            out[name] = {"errors": errors}
            continue
        cfg = BenchConfig(batches=batches, duration=seconds * scale, min_runs=3 if scale >= 1
                          else 2, warmup=warmup, threads=threads)
        t0 = time.perf_counter()
        res = bench_models(backends, cfg)
        log(f"{name}: {threads} thread(s) measured in {time.perf_counter() - t0:.0f} s")
        out[name] = {"bench": res.to_dict(), "errors": errors}
        for b in backends:
            b.close()
    return out


def run_worker(manifest_path: Path, threads: int, batches: tuple[int, ...],
               scale: float, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    out_path = manifest_path.with_name(f"part_{threads}.json")
    cmd = [sys.executable, __file__, "--worker", str(manifest_path), "--threads", str(threads),
           "--batch", ",".join(map(str, batches)), "--scale", str(scale), "--out", str(out_path),
           "--variants", ",".join(variants)]
    subprocess.run(cmd, check=True)
    return json.loads(out_path.read_text())


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} µs" if v < 1 else (f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms")


def markdown(result: dict[str, Any]) -> str:
    """The README table: per model, p50 latency of each variant and its speed-up vs Keras."""
    m = result["machine"]
    v = {**m["versions"], **result.get("engine_versions", {})}
    variants = result["variants"]
    flag = " --quick" if result["quick"] else (" --engines" if result.get("engines") else "")
    lines = [
        "# edgekit benchmark results",
        "",
        f"Generated by `python benchmarks/run_all.py{flag}` "
        f"on {result['date']} in {result['wall_s'] / 60:.1f} min.",
        "",
        f"- CPU: {m['cpu']}, {m.get('instruction_set', 'instruction set unknown')} "
        f"({m['logical_cores']} logical cores; shared with other jobs "
        "while measured, so absolute numbers are noisy; the speed-ups are interleaved ratios)",
        "- " + ", ".join(f"{k} {v[k]}" for k in ("python", "tensorflow", "keras", "onnxruntime",
                                                    "openvino", "ai-edge-litert", "onnx",
                                                    "tf2onnx", "numpy") if k in v),
        f"- cells: median latency per call (p50), p90 after the slash, and, in brackets, the "
        f"speed-up over {variants[0]} measured in the same interleaved rounds; `b` = batch "
        "size, `t` = threads",
        "",
    ]
    threads = result["threads"]
    batches = result["batches"]
    cols = [(b, t) for b in batches for t in threads]
    cpu = f"{m['cpu']}, {m.get('instruction_set', 'instruction set unknown')}"
    for entry in result["models"].values():
        lines.append(f"## {entry['title']}")
        lines.append("")
        lines.append(f"CPU: {cpu}")
        lines.append("")
        header = ["variant", "size"] + [f"b{b} {t}t" for b, t in cols]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|:--|--:|" + "--:|" * len(cols))
        for var in variants:
            if OPENVINO_ROWS.get(var, var).startswith("onnx-tuned") and not entry.get("tune"):
                continue
            size = entry.get("sizes", {}).get(var)
            row = [var, f"{size / 1024:.0f} KiB" if size and size < 2**20 else
                   (f"{size / 2**20:.1f} MiB" if size else "-")]
            for b, t in cols:
                cell = entry.get("latency", {}).get(f"{t}", {}).get(var, {}).get(str(b))
                if cell is None:
                    row.append("-")
                else:
                    row.append(f"{_ms(cell['p50_ms'])} / {_ms(cell['p90_ms'])} "
                               f"({1 / cell['ratio']:.2f}x)")
            lines.append("| " + " | ".join(row) + " |")
        errs = entry.get("errors", {})
        for var, e in errs.items():
            lines.append(f"\n{var}: not measured ({e})")
        lines += _tflite_api_lines(entry)
        for key, info in (entry.get("tune") or {}).items():
            t, b = key.split("/b")[0], info.get("batch", 1)
            lines.append(f"\n{_tuned_row(int(t), b)[0]}, {t} thread(s): `edgekit tune --threads "
                         f"{t} --batch {b}` (engine {info.get('engine', 'onnxruntime')}): "
                         f"{info['why']}")
        if entry.get("modes", {}).get("onnx-int8") == "dynamic":
            lines.append("\nonnx-int8 is dynamic int8 here (edgekit's `auto` choice for LSTM "
                         "and Dense-only models; static QDQ int8 for convnets).")
        lines.append("")
    return "\n".join(lines)


def _tflite_api_lines(entry: dict[str, Any]) -> list[str]:
    """Which LiteRT API ran the TFLite rows: ``CompiledModel``, else the Interpreter and why."""
    runtimes = {(mm["name"], mm["runtime"]) for bench in entry.get("raw", {}).values()
                for mm in bench["models"] if mm.get("runtime")}
    compiled = sorted({n for n, r in runtimes if r.startswith("LiteRT CompiledModel")})
    lines = [f"\n{', '.join(compiled)}: LiteRT CompiledModel (CPU, XNNPACK)"] if compiled else []
    return lines + sorted(f"\n{n}: {r}" for n, r in runtimes
                          if not r.startswith("LiteRT CompiledModel"))


def _engine_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("openvino", "ai-edge-litert"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def merge(manifest: dict[str, Any], parts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, entry in manifest.items():
        e: dict[str, Any] = {"title": entry["title"], "calibration": entry["calibration"],
                             "tune": entry.get("tune"),
                             "modes": entry["modes"], "build_s": entry["build_s"],
                             "errors": dict(entry["errors"]), "latency": {}, "sizes": {},
                             "raw": {}}
        for t, part in parts.items():
            p = part.get(name, {})
            e["errors"].update(p.get("errors", {}))
            bench = p.get("bench")
            if not bench:
                continue
            e["raw"][str(t)] = bench
            e["latency"][str(t)] = {
                mm["name"]: {b: {k: s[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms",
                                                   "std_ms", "throughput", "ratio", "runs")}
                             for b, s in mm["latency"].items()}
                for mm in bench["models"]}
            e["sizes"] = {mm["name"]: mm["size_bytes"] for mm in bench["models"]}
        models[name] = e
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 small models, b1, 1t")
    ap.add_argument("--engines", action="store_true", help="engine comparison: MobileNetV2-224 "
                    "and the CNN, b1/b32, 1 thread, ORT/TFLite/OpenVINO rows")
    ap.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--calibration-samples", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch", default="1,32", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batches = tuple(int(b) for b in args.batch.split(","))
    if args.worker:
        manifest = json.loads(args.worker.read_text())
        res = worker(manifest, args.threads, batches, args.scale,
                     tuple(args.variants.split(",")))
        args.out.write_text(json.dumps(res))
        return 0

    t_start = time.perf_counter()
    names = list(MODELS) if not args.models else args.models.split(",")
    threads: tuple[int, ...] = (1, 2)
    scale = 1.0
    variants, built = VARIANTS, BUILT
    if args.quick:
        names, batches, threads, scale = ["fashion_cnn", "breast_cancer_mlp"], (1,), (1,), 0.25
    if args.engines:
        names = args.models.split(",") if args.models else ["fashion_cnn", "mobilenetv2_224_100"]
        threads, variants = (1,), ENGINE_VARIANTS
        built = ("tflite-int8", "onnx-fp32", "onnx-int8")
        scale = 4.0  # 7 rows at ~0.3 s per MobileNetV2 b32 call: 16 s gives ~7 rounds, not 2
    CACHE.mkdir(parents=True, exist_ok=True)
    tune_batches = (1, 32) if args.engines else (1,)
    manifest = prepare(names, args.calibration_samples, threads, built, tune_batches)
    manifest_path = CACHE / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=1))
    parts = {}
    for t in threads:
        log(f"measuring with {t} thread(s)")
        parts[t] = run_worker(manifest_path, t, batches, scale, variants)

    from edgekit.speed.machine import machine_info

    result = {
        "quick": args.quick,
        "engines": args.engines,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "engine_versions": _engine_versions(),
        "batches": list(batches),
        "threads": list(threads),
        "variants": list(variants),
        "models": merge(manifest, parts),
    }
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    # the engines comparison is kept per instruction set (each CPU gets its best engine)
    isa = re.sub(r"[^a-z0-9]+", "_", result["machine"]["instruction_set"].lower()).strip("_")
    stem = f"engines_{isa.removesuffix('_no_vnni')}" if args.engines else "latest"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (out / f"{stem}.md").write_text(md + "\n")
    print(md)
    log(f"done in {result['wall_s'] / 60:.1f} min: {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
