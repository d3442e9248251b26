"""Issue #23: a public conversion matrix built from other projects' test lists.

The cases (``benchmarks/matrix_cases.py``): the ``keras.applications`` architectures of Keras'
applications tests, the models of Keras' ``export/onnx_test.py`` and a Keras 3 port of tf2onnx's
Keras layer tests. For each case, in a fresh process with a timeout:

1. **edgekit**: :func:`edgekit.convert.export_model` with default options (validation on
   edgekit's synthetic inputs; a case whose inputs must be valid indices gives its own sample):
   ok or the error's class and first line, the validation's max abs error, the per-engine
   proof (``report["engines"]``: loads/passed on onnxruntime and OpenVINO), and an
   independent onnxruntime run of the file on the case's own inputs (other batch sizes and
   shapes where the case has them) against Keras;
2. **Keras' own export**: ``model.export(path, format="onnx")``: ok or the error, and whether
   the file runs in onnxruntime on the same inputs and matches Keras within edgekit's
   tolerance (1e-4 + 1e-3 x |keras|);
3. **LiteRT** (``benchmarks/matrix_litert.py``): Keras' ``model.export(format="litert")`` with
   the converter held to LiteRT's builtin ops (a case only ``SELECT_TF_OPS`` converts is
   recorded as needing TF ops, with the ops), float32, run in ``ai_edge_litert``'s Interpreter
   on the same inputs against Keras, same tolerance;
4. **int8** (last: the quantizer is what has crashed a process here):
   :func:`edgekit.quantize.quantize_model` (static int8 calibrated on 64 synthetic samples or
   the case's sample; ``auto`` where int8 does not apply): top-1 agreement with fp32 and the
   variant's per-engine record.

    python benchmarks/conversion_matrix.py --quick            # a handful of cases (CI)
    python benchmarks/conversion_matrix.py --per-process 10 --skip-slow --app-timeout 240
    python benchmarks/conversion_matrix.py --cases 'test_conv*,MobileNetV2' --out /tmp/m

Each case runs alone in its process by default; ``--per-process N`` runs the light cases N to
a process (TensorFlow starts once per process; each case still has its own timeout, and the
cases a crash or a kill left unstarted rerun in a fresh process). Writes
``benchmarks/results/conversion_matrix.{json,md}`` (``--out``) and prints the summary.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import matrix_litert  # noqa: E402
import numpy as np  # noqa: E402
from matrix_cases import CASES, NOT_PORTED, SUITES, TF2ONNX_TESTS, Case  # noqa: E402
from matrix_report import ANSI, ATOL, RTOL, _line, counts, write  # noqa: E402

RESULTS = HERE / "results"
CALIBRATION_SAMPLES = 64
#: seconds a group of cases may run past the sum of its timeouts before it is killed (a C++
#: call holding the GIL, such as the TFLite converter's, delays a case's SIGALRM until it returns)
KILL_GRACE_S = 120


class CaseTimeout(BaseException):
    """A case ran past its timeout (BaseException: no stage's ``except Exception`` eats it)."""


# ---------------------------------------------------------------------------------------------
# child side: one case's stages, its record written after each
# ---------------------------------------------------------------------------------------------


def _error(exc: BaseException) -> dict[str, Any]:
    text = ANSI.sub("", str(getattr(exc, "message", None) or exc))
    lines = text.strip().splitlines()
    out = {"class": type(exc).__name__, "message": lines[0][:500] if lines else ""}
    hint = getattr(exc, "hint", None)
    if hint:
        out["hint"] = str(hint)[:300]
    return out


def _flat(sample: Any) -> list[np.ndarray]:
    if isinstance(sample, dict):
        return [np.asarray(v) for v in sample.values()]
    if isinstance(sample, list | tuple):
        return [np.asarray(v) for v in sample]
    return [np.asarray(sample)]


def _reference(model: Any, case: Case, sample: Any) -> list[np.ndarray]:
    import keras

    out = model(*sample) if case.spread else model(sample)
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(out)]


def _feeds(session: Any, sample: Any) -> dict[str, np.ndarray]:
    """The sample as onnxruntime feeds: by name where the file's input names are the sample's
    keys, else by position."""
    names = [i.name for i in session.get_inputs()]
    if isinstance(sample, dict) and set(names) <= set(sample):
        return {n: np.asarray(sample[n]) for n in names}
    arrays = _flat(sample)
    if len(arrays) != len(names):
        raise ValueError(f"the file has {len(names)} inputs ({', '.join(names)}), the model "
                         f"takes {len(arrays)}")
    return dict(zip(names, arrays, strict=True))


def check_file(path: Path, refs: list[list[np.ndarray]], samples: list[Any]) -> dict[str, Any]:
    """Run an ONNX file in onnxruntime on every sample; compare with Keras' outputs."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst, close = 0.0, True
        for ref, sample in zip(refs, samples, strict=True):
            w, c = matrix_litert.compare(ref, session.run(None, _feeds(session, sample)), ATOL,
                                         RTOL)
            worst, close = max(worst, w), close and c
    except Exception as exc:
        return {"runs": False, "run_error": _error(exc)}
    return {"runs": True, "max_abs_error": worst, "matches": close}


def _engines(section: dict[str, Any] | None) -> dict[str, Any]:
    """``{engine: {loads, passed[, reason]}}`` of a report's engine section."""
    out = {}
    for name, e in (section or {}).items():
        out[name] = {"loads": e.get("loads"), "passed": e.get("passed")}
        if not e.get("passed") and e.get("reason"):
            out[name]["reason"] = str(e["reason"]).splitlines()[0][:300]
    return out


def _dataset(onnx_or_source: Any, sample: Any) -> Any:
    """The case's sample as a Dataset named after the file's or the model's inputs, in order
    (as it is: some of these models only run at the sample's batch size)."""
    from edgekit.inputs.data import Dataset

    names = [s.name for s in onnx_or_source]
    return Dataset(dict(zip(names, _flat(sample), strict=True)))


def stage_edgekit(case: Case, model: Any, samples: list[Any], refs: list[list[np.ndarray]],
                  work: Path) -> dict[str, Any]:
    from edgekit.convert import ExportConfig, export_model, load_source

    t0 = time.perf_counter()
    try:
        data = _dataset(load_source(model).inputs, samples[0]) if case.data else None
        res = export_model(model, work / "edgekit", ExportConfig(force=True),
                           validation_data=data)
    except Exception as exc:
        return {"edgekit_ok": False, "edgekit_error": _error(exc),
                "edgekit_s": round(time.perf_counter() - t0, 1)}
    report: dict[str, Any] = dict(res.report)
    v = report["validation"]
    check = check_file(res.onnx_path, refs, samples)
    return {"edgekit_ok": True, "edgekit_s": round(time.perf_counter() - t0, 1),
            "edgekit_onnx": str(res.onnx_path), "max_abs_error": v["max_abs_error"],
            "validation_samples": v["n_samples"], "validation_data": v["data"],
            "validation_warnings": v["warnings"], "engines": _engines(report.get("engines")),
            "lowered": report["graph"].get("lowered") or [],
            **{f"edgekit_recheck_{k}": val for k, val in check.items()}}


def stage_int8(case: Case, model: Any, samples: list[Any], onnx_path: Path,
               work: Path) -> dict[str, Any]:
    import onnx

    from edgekit.convert import load_source, synthetic_inputs
    from edgekit.inputs.data import Dataset
    from edgekit.quantize import QuantizationConfig, QuantMode, quantize_model

    inputs = onnx.load(str(onnx_path), load_external_data=False).graph.input
    if case.data:
        calib = _dataset(inputs, samples[0])
    else:
        feeds = synthetic_inputs(load_source(model), CALIBRATION_SAMPLES, seed=1)
        calib = Dataset(dict(zip([i.name for i in inputs], feeds.values(), strict=True)))
    out: dict[str, Any] = {}
    for mode in ("int8", "auto"):
        (work / mode).mkdir(exist_ok=True)
        try:
            res: dict[str, Any] = dict(quantize_model(
                onnx_path, work / mode, "model", QuantizationConfig(mode=QuantMode(mode)),
                calibration=calib).to_dict())
        except Exception as exc:
            out[f"{mode}_error"] = _error(exc)
            continue
        ev = res.get("evaluation") or {}
        out.update({"int8_mode": res["mode"], "int8_written": res["written"],
                    "int8_top1_agreement": ev.get("top1_agreement"),
                    "int8_max_abs_error": ev.get("max_abs_error"),
                    "int8_held_out": ev.get("held_out"),
                    "int8_engines": _engines(res.get("engines"))})
        if not res["written"]:
            out["int8_notes"] = [str(n)[:300] for n in res.get("notes") or []][:3]
        return out
    return out


def stage_keras(case: Case, model: Any, samples: list[Any], refs: list[list[np.ndarray]],
                work: Path) -> dict[str, Any]:
    path = work / "keras.onnx"
    t0 = time.perf_counter()
    try:
        model.export(str(path), format="onnx", **(case.keras_export() if case.keras_export
                                                  else {}))
    except Exception as exc:
        return {"keras_ok": False, "keras_error": _error(exc),
                "keras_s": round(time.perf_counter() - t0, 1)}
    check = check_file(path, refs, samples)
    return {"keras_ok": True, "keras_s": round(time.perf_counter() - t0, 1),
            **{f"keras_{k}": v for k, v in check.items()}}


class _Record:
    """A case's record, written to ``work/record.json`` after every stage."""

    def __init__(self, case: Case, work: Path) -> None:
        self.path = work / "record.json"
        self.data: dict[str, Any] = {"case": case.name, "suite": case.suite,
                                     "source": case.source, "note": case.note,
                                     "status": "running", "stage": "build"}
        self.save()

    def update(self, stage: str | None = None, **values: Any) -> None:
        self.data.update(values)
        if stage is not None:
            self.data["stage"] = stage
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        tmp.replace(self.path)


@contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_case(case: Case, work: Path, timeout: int | None = None) -> dict[str, Any]:
    """Every stage of ``case`` in this process (``timeout``: SIGALRM after that many seconds;
    the record then says which stage ran out); the record."""
    from matrix_cases import build, samples

    work.mkdir(parents=True, exist_ok=True)
    rec = _Record(case, work)
    t0 = time.perf_counter()
    try:
        with _alarm(timeout) if timeout else _nothing():
            _stages(case, work, rec, build, samples)
        rec.update(status="done")
    except CaseTimeout as exc:
        rec.update(status="timeout", timeout_s=timeout, error=_error(exc))
    rec.update(wall_s=round(time.perf_counter() - t0, 1))
    return rec.data


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _stages(case: Case, work: Path, rec: _Record, build: Any, samples: Any) -> None:
    try:
        model = build(case)
        inputs = samples(case, model)
        refs = [_reference(model, case, s) for s in inputs]
    except Exception as exc:  # Keras itself cannot build or run the port
        rec.update(build_error=_error(exc))
        return
    rec.update("edgekit", params=int(model.count_params()))
    rec.update("keras_export", **stage_edgekit(case, model, inputs, refs, work))
    rec.update("litert", **stage_keras(case, model, inputs, refs, work))
    rec.update("int8", **matrix_litert.stage(case, model, inputs, refs, work, atol=ATOL,
                                             rtol=RTOL, error=_error))
    if rec.data["edgekit_ok"]:  # last: the quantizer is what has crashed a process here
        rec.update(**stage_int8(case, model, inputs, Path(rec.data["edgekit_onnx"]), work))


def child_main(work: Path, names: list[str], timeouts: dict[str, int]) -> None:
    import keras

    for name in names:
        case = CASES[name]
        run_case(case, work / _slug(name), case_timeout(case, timeouts))
        keras.backend.clear_session(free_memory=True)


# ---------------------------------------------------------------------------------------------
# parent side: groups of cases in fresh processes, results and tables
# ---------------------------------------------------------------------------------------------

def case_timeout(case: Case, timeouts: dict[str, int]) -> int:
    return timeouts["app"] if case.slow or case.suite == "applications" else timeouts["light"]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


_NOISE = ("I0000", "W0000", "WARNING: All log messages", "  if not hasattr(np",
          "Saved artifact at")


def _tail(stderr: str) -> str:
    """The last lines of a child's stderr without TensorFlow's start-up noise."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(_NOISE)
             and "FutureWarning" not in ln]
    return " / ".join(lines[-4:])[-1000:] or "(nothing on stderr)"


def run_group(names: list[str], work: Path, timeouts: dict[str, int]) -> list[dict[str, Any]]:
    """Run ``names`` in one fresh process; cases it never started rerun in another."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(work),
           "--light-timeout", str(timeouts["light"]), "--app-timeout", str(timeouts["app"]),
           *names]
    limit = sum(case_timeout(CASES[n], timeouts) for n in names) + KILL_GRACE_S
    killed = False
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
        died, tail = proc.returncode != 0, f"exit code {proc.returncode}: {_tail(proc.stderr)}"
    except subprocess.TimeoutExpired as exc:
        died = killed = True
        err = exc.stderr or ""  # bytes even with text=True
        tail = f"killed after {limit} s: " + _tail(err.decode(errors="replace")
                                                   if isinstance(err, bytes) else err)
    records, unstarted = [], []
    for name in names:
        path = work / _slug(name) / "record.json"
        if not path.exists():
            unstarted.append(name)
            continue
        rec = dict(json.loads(path.read_text()))
        if rec["status"] == "running" and killed:  # past its SIGALRM by KILL_GRACE_S
            rec.update(status="timeout", timeout_s=case_timeout(CASES[name], timeouts),
                       error={"class": "CaseTimeout", "message": tail})
        elif rec["status"] == "running":
            rec.update(status="crashed", error={"class": "ProcessDied", "message": tail})
        records.append(rec)
    if unstarted and len(unstarted) < len(names):
        records += run_group(unstarted, work, timeouts)
    elif unstarted:
        records += [{"case": n, "suite": CASES[n].suite, "source": CASES[n].source,
                     "status": "crashed" if died else "not run",
                     "error": {"class": "ProcessDied", "message": tail}} for n in unstarted]
    return records


def select(patterns: str | None, quick: bool, suites: list[str]) -> list[Case]:
    cases = [c for c in CASES.values() if c.suite in suites and (c.quick or not quick)]
    if patterns:
        pats = [p.strip() for p in patterns.split(",") if p.strip()]
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) or p == c.name
                                         for p in pats)]
    return cases


def groups(cases: list[Case], per_process: int) -> list[list[str]]:
    """The light cases ``per_process`` a group, then each heavy case alone."""
    heavy = [[c.name] for c in cases if c.slow or c.suite == "applications"]
    light = [c.name for c in cases if not (c.slow or c.suite == "applications")]
    return [light[i:i + per_process] for i in range(0, len(light), per_process)] + heavy


def run_all(cases: list[Case], work: Path, jobs: int, per_process: int,
            timeouts: dict[str, int]) -> list[dict[str, Any]]:
    order = {c.name: i for i, c in enumerate(cases)}

    def one(names: list[str]) -> list[dict[str, Any]]:
        records = run_group(names, work, timeouts)
        for r in records:
            print(f"[{time.strftime('%H:%M:%S')}] {_line(r)}", file=sys.stderr, flush=True)
        return records

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        records = [r for rs in pool.map(one, groups(cases, per_process)) for r in rs]
    return sorted(records, key=lambda r: order[r["case"]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the cases marked quick (CI)")
    ap.add_argument("--cases", default=None,
                    help="comma list of case names or fnmatch patterns, e.g. 'test_conv*'")
    ap.add_argument("--suites", default=",".join(SUITES), help="comma list of suites")
    ap.add_argument("--jobs", type=int, default=2, help="processes at a time")
    ap.add_argument("--per-process", type=int, default=1,
                    help="light cases per process (default 1: each case in a fresh one)")
    ap.add_argument("--light-timeout", type=int, default=300, help="seconds per light case")
    ap.add_argument("--app-timeout", type=int, default=600,
                    help="seconds per keras.applications or slow case")
    ap.add_argument("--skip-slow", action="store_true",
                    help="record the slow cases (the largest applications) as skipped")
    ap.add_argument("--work", default=None, help="keep the files here (default: a temp dir)")
    ap.add_argument("--out", default=None, help="folder of conversion_matrix.{json,md}")
    ap.add_argument("--merge", default=None, metavar="JSON",
                    help="keep an earlier conversion_matrix.json's records of the cases this "
                    "run does not run (a rerun of some cases)")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="only write the Markdown and the summary of a stored result again")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from edgekit.speed.machine import machine_info

    args = parse_args(argv)
    if args.render:  # tables again from a stored result
        stored: dict[str, Any] = dict(json.loads(Path(args.render).read_text()))
        write(stored, Path(args.out) if args.out else Path(args.render).parent)
        return stored
    timeouts = {"light": args.light_timeout, "app": args.app_timeout}
    cases = select(args.cases, args.quick, args.suites.split(","))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        records = run_all([c for c in cases if not (args.skip_slow and c.slow)], work,
                          args.jobs, args.per_process, timeouts)
    records += [{"case": c.name, "suite": c.suite, "source": c.source, "status": "skipped",
                 "note": "slow: not run (--skip-slow)"} for c in cases
                if args.skip_slow and c.slow]
    wall = round(time.perf_counter() - t0, 1)
    merged = None
    if args.merge:  # an earlier run's records of the cases this one did not run
        earlier = json.loads(Path(args.merge).read_text())
        ran = {r["case"] for r in records}
        records += [r for r in earlier["records"] if r["case"] not in ran and r["case"] in CASES]
        merged = {"wall_s": earlier["wall_s"], "options": earlier["options"],
                  "cases": sum(r["case"] not in ran for r in earlier["records"])}
    order = list(CASES)
    records.sort(key=lambda r: order.index(r["case"]))
    result: dict[str, Any] = {
        "machine": machine_info(), "wall_s": wall, "merged": merged,
        "options": f"{'--quick, ' if args.quick else ''}"
        f"{'--skip-slow, ' if args.skip_slow else ''}{args.jobs} processes at a time, "
        f"{args.per_process} light case(s) per process, timeouts {args.light_timeout} s / "
        f"{args.app_timeout} s",
        "counts": {s: counts([r for r in records if r["suite"] == s])
                   for s in SUITES if any(r["suite"] == s for r in records)},
        "tf2onnx_ported": {"test_functions": TF2ONNX_TESTS - len(NOT_PORTED),
                           "of": TF2ONNX_TESTS, "not_ported": NOT_PORTED},
        "records": records}
    result["counts"]["all"] = counts(records)
    write(result, Path(args.out) if args.out else RESULTS)
    return result


def _child_entry(argv: list[str]) -> None:
    """``--child WORK --light-timeout S --app-timeout S NAME...`` (what run_group starts)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--light-timeout", type=int, required=True)
    ap.add_argument("--app-timeout", type=int, required=True)
    ap.add_argument("names", nargs="+")
    ns = ap.parse_args(argv)
    child_main(ns.work, ns.names, {"light": ns.light_timeout, "app": ns.app_timeout})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_entry(sys.argv[2:])
    else:
        main()
