"""Does edgekit's per-engine record tell the truth? (issue #23, acceptance point 2)

"On at least three trained models, every int8 variant agrees with fp32 within the gate on every
engine edgekit marks as passed, and no engine is marked passed that is not."

For each model below this script trains it briefly on real data (``../shared/data``), exports it
with edgekit (fp32, then each variant with ``quantize_model``: static ``int8``; for text models
also ``auto``; for the ViT also ``int8-matmul``, only MatMul/Gemm/Conv in int8; the accuracy gate
on: ``max_accuracy_drop=1``, calibration on 512 training samples, the engine proof and the gate
on held-out samples never used for calibration), and then checks every file **independently of
the record**: it runs the file with ``EdgeModel(path, engine=e, check_engine=False)`` on every
installed engine over the held-out samples at several batch sizes (``--batches``, a fresh model
each: OpenVINO compiles one network per input shape, and its answers can depend on it; a row
shows the worst batch size), and compares each engine's top-1 classes with fp32 on onnxruntime
using the accuracy gate's own rule (:func:`edgekit.agreement.compare_predictions` +
:func:`edgekit.agreement.gate`, a 1-point budget). Then it reads the record the file carries
(``edgekit.engines`` metadata) and classifies every (file, engine):

- recorded passed and within the gate vs fp32 -> ``ok``; outside it (or not loading) ->
  ``FALSE PASS`` (a correctness failure: the script exits 1);
- recorded failed and (does not load, or outside the gate vs fp32, or worse than onnxruntime on
  the same file by the proof's rule) -> ``ok (...)``; otherwise ``false fail`` (reported, not
  a correctness failure);
- a variant with no record for an installed engine -> ``UNRECORDED`` (exit 1: every variant
  should be proven on every engine);
- fp32 files carry no record (export does not prove them): their rows are information.

Models: ``vit_fashion`` (patch Conv2D, 2 Transformer blocks with LayerNormalization,
MultiHeadAttention and a GELU MLP, GlobalAveragePooling1D, softmax), ``dwsep_fashion``
(MobileNet-style DepthwiseConv2D + BatchNorm + ReLU6), the recipes ``image_cnn`` (Fashion-MNIST),
``tabular_mlp`` (scikit-learn's digits as a CSV, 60 % held out; and its default breast-cancer
data, whose 114 test rows are below 1,000: information), ``text_lstm`` (SMS Spam) and
``sms_embed`` (Embedding + GlobalAveragePooling1D + Dense on the SMS tokens).

    python benchmarks/engine_agreement.py                 # ~20 min on 2 busy cores
    python benchmarks/engine_agreement.py --quick         # 3 small models, 1 epoch, temp folder
    python benchmarks/engine_agreement.py --models vit_fashion,sms_embed --keep /tmp/agree

Writes ``benchmarks/results/engine_agreement_<isa>.{json,md}`` (``--quick``: a temp folder
unless ``--out-dir``). The SMS file is only read from ``--data-root``; nothing derived from it
is written there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1.0  # points, the accuracy gate's budget here and in the export
PROOF_BATCH = 64  # the batch size edgekit's engine proof runs at (check_engines' default)
COLUMNS = ["model", "file", "engine", "recorded passed?", "loads", "accuracy", "fp32 accuracy",
           "top-1 agreement with fp32", "drop (pt)", "worst batch", "verdict"]


# ---------------------------------------------------------------------------------------------
# Models: recipes and two architectures built on the image / text recipes' data handling
# ---------------------------------------------------------------------------------------------
def _vit(keras: Any, input_shape: Any, n_classes: int) -> Any:
    L = keras.layers
    inp = keras.Input(tuple(input_shape), name="image")
    x = L.Conv2D(32, 4, strides=4, name="patches")(inp)  # 7x7 patches of 4x4
    x = L.Reshape((49, 32))(x)
    for i in range(2):
        h = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}a")(x)
        h = L.MultiHeadAttention(num_heads=2, key_dim=16, name=f"mha{i}")(h, h)
        x = L.Add()([x, h])
        h = L.LayerNormalization(epsilon=1e-6, name=f"ln{i}b")(x)
        h = L.Dense(64, activation="gelu")(h)
        x = L.Add()([x, L.Dense(32)(h)])
    x = L.LayerNormalization(epsilon=1e-6)(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(n_classes, activation="softmax")(x), name="vit_fashion")


def _dwsep(keras: Any, input_shape: Any, n_classes: int) -> Any:
    L = keras.layers

    def bn_relu6(x: Any) -> Any:
        return L.ReLU(max_value=6.0)(L.BatchNormalization(momentum=0.9)(x))

    inp = keras.Input(tuple(input_shape), name="image")
    x = bn_relu6(L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp))
    for filters, stride in [(32, 1), (64, 2), (64, 1)]:
        x = bn_relu6(L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x))
        x = bn_relu6(L.Conv2D(filters, 1, use_bias=False)(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(n_classes, activation="softmax")(x), name="dwsep_fashion")


def _sms_embed(keras: Any, input_shape: Any, n_classes: int) -> Any:
    from edgekit.recipes.text_lstm import MAX_TOKENS

    L = keras.layers
    inp = keras.Input(tuple(input_shape), dtype="int32", name="tokens")
    x = L.GlobalAveragePooling1D()(L.Embedding(MAX_TOKENS, 32)(inp))
    x = L.Dense(16, activation="relu")(x)
    return keras.Model(inp, L.Dense(n_classes, activation="softmax")(x), name="sms_embed")


_BUILDERS = {"vit_fashion": _vit, "dwsep_fashion": _dwsep, "sms_embed": _sms_embed}


def _recipe(case: Case) -> Any:
    """The recipe object of ``case``: a shipped recipe, or one with another model."""
    from edgekit.recipes import get_recipe
    from edgekit.recipes.recipe import require_keras

    base = get_recipe(case.recipe).RECIPE
    if case.name not in _BUILDERS:
        return base
    build = _BUILDERS[case.name]

    class Custom(type(base)):  # type: ignore[misc]
        name = case.name

        def build_model(self, config: Any, input_shape: Any, n_classes: int) -> Any:
            return build(require_keras(), input_shape, n_classes)

    return Custom()


@dataclasses.dataclass
class Case:
    """One trained model: its recipe (data handling), data, training and variants."""

    name: str
    recipe: str
    data: str  # fashion | sms | digits | breast_cancer
    epochs: int
    limit: int | None = None
    modes: tuple[str, ...] = ("int8",)
    test_split: float = 0.2


CASES = [
    Case("vit_fashion", "image_cnn", "fashion", epochs=6, limit=20000,
         modes=("int8", "int8-matmul")),
    Case("dwsep_fashion", "image_cnn", "fashion", epochs=3, limit=12000),
    Case("image_cnn", "image_cnn", "fashion", epochs=2, limit=12000),
    Case("tabular_mlp_digits", "tabular_mlp", "digits", epochs=30, test_split=0.6),
    Case("tabular_mlp_breast_cancer", "tabular_mlp", "breast_cancer", epochs=30),
    Case("text_lstm", "text_lstm", "sms", epochs=3, modes=("int8", "auto")),
    Case("sms_embed", "text_lstm", "sms", epochs=5, modes=("int8", "auto")),
]
QUICK = {"dwsep_fashion": 1, "image_cnn": 1, "tabular_mlp_digits": 20}  # name -> epochs
#: variant name -> QuantizationConfig options (besides the 1-point gate); ``int8-matmul`` is the
#: usual transformer setting: only the weight-bearing ops in int8, LayerNorm/GELU/residual
#: arithmetic float (a ViT's default int8 cannot meet the gate: see the results)
VARIANTS: dict[str, dict[str, Any]] = {
    "int8": {"mode": "int8"}, "auto": {"mode": "auto"},
    "int8-matmul": {"mode": "int8", "scheme": {"op_types_to_quantize": ["MatMul", "Gemm", "Conv"]}}}


# ---------------------------------------------------------------------------------------------
# Train, hold out, export
# ---------------------------------------------------------------------------------------------
def _data_path(case: Case, data_root: Path, work: Path) -> tuple[Path | None, dict[str, Any]]:
    if case.data == "fashion":
        return data_root / "fashion-mnist", {}
    if case.data == "sms":
        return data_root / "sms-spam" / "SMSSpamCollection.tsv", {}
    if case.data == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        csv = work / "digits.csv"
        head = ",".join([f"p{i}" for i in range(d.data.shape[1])] + ["label"])
        rows = np.column_stack([d.data, d.target]).astype(np.int64)
        np.savetxt(csv, rows, fmt="%d", delimiter=",", header=head, comments="")
        return csv, {"label": "label"}
    return None, {}  # breast cancer: the recipe's default data


def train_case(case: Case, data_root: Path, work: Path, epochs: int, held: int
               ) -> dict[str, Any]:
    """Train ``case``, save it, and write its calibration and held-out NPZ files."""
    from edgekit.inputs.text import TextTokenizer
    from edgekit.metadata import load_keras_metadata
    from edgekit.recipes import TrainConfig
    from edgekit.recipes.loop import run_training

    recipe = _recipe(case)
    path, options = _data_path(case, data_root, work)
    cfg = TrainConfig(epochs=epochs, limit=case.limit, seed=0, test_split=case.test_split)
    keras_path = work / f"{case.name}.keras"
    t0 = time.perf_counter()
    res = run_training(recipe, cfg, data_path=path, output=keras_path, force=True,
                       options=options)
    meta = load_keras_metadata(keras_path)
    assert meta is not None and meta.preprocessing is not None
    # the same split the training used (seeded), without the training's --limit on the test part
    split = recipe.load_split(path, cfg.resolved(recipe.defaults), **options)
    # edgekit reads raw data (uint8 images, raw features: it applies the model's preprocessing
    # metadata itself) or token ids; this script runs the files on model-ready inputs
    raw = TextTokenizer.from_dict(meta.tokenizer).encode if meta.tokenizer else np.asarray
    ready = (lambda x: x) if meta.tokenizer else meta.preprocessing.apply
    rng = np.random.default_rng(0)
    test_idx = np.sort(rng.permutation(len(split.y_test))[:held])
    cal_idx = np.sort(rng.permutation(len(split.y_train))[:512])
    x_held = raw(split.x_test[test_idx])
    y_held = np.asarray(split.y_test[test_idx]).astype(np.int64)
    cal, held_npz = work / f"{case.name}.cal.npz", work / f"{case.name}.heldout.npz"
    np.savez(cal, x=raw(split.x_train[cal_idx]),
             y=np.asarray(split.y_train[cal_idx]).astype(np.int64))
    np.savez(held_npz, x=x_held, y=y_held)
    return {"keras": keras_path, "cal": cal, "held": held_npz,
            "x": np.asarray(ready(x_held), dtype=np.int32 if meta.tokenizer else np.float32),
            "y": y_held,
            "train": {"epochs": epochs, "limit": case.limit, "seconds": round(
                time.perf_counter() - t0, 1), "keras_test_accuracy": res.test_accuracy,
                "n_train": res.n_train, "data": "sklearn.datasets.load_digits (as a CSV)"
                if case.data == "digits" else res.data}}


def export_case(case: Case, trained: dict[str, Any], out: Path) -> dict[str, Any]:
    """fp32 export (validated on the held-out samples), then each variant of ``case.modes``
    (accuracy gate 1 pt, engine proof on the held-out samples); a variant edgekit refuses or
    skips is noted."""
    import onnx

    from edgekit.convert import ExportConfig, export_model
    from edgekit.quantize.config import QuantizationConfig, resolve_mode
    from edgekit.quantize.core import quantize_model

    res = export_model(trained["keras"], out, ExportConfig(force=True),
                       validation_data=trained["held"])
    files: dict[str, Path] = {"fp32": res.onnx_path}
    notes: dict[str, str] = {}
    reports: dict[str, Any] = {}
    for mode in case.modes:
        options = VARIANTS[mode]
        chosen = resolve_mode(onnx.load(str(res.onnx_path)), options["mode"])[0].value
        if chosen != mode and chosen in files:
            notes[mode] = f"{mode} chose {chosen}: the {chosen} row"
            continue
        sub = out / mode
        sub.mkdir(exist_ok=True)
        cfg = QuantizationConfig.from_dict(
            {**options, "gate": {"max_accuracy_drop": BUDGET}})
        try:
            v = quantize_model(res.onnx_path, sub, config=cfg, calibration=trained["cal"],
                               eval_data=trained["held"])
        except Exception as exc:  # edgekit refusing a variant is a result, not a crash
            notes[mode] = f"not written: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            continue
        if not v.written:
            notes[mode] = "not written: " + "; ".join(v.notes)[:300]
            continue
        label = mode if options["mode"] == v.mode else f"{mode}->{v.mode}"
        files[label] = v.path
        reports[label] = {"engines": v.engines, "evaluation": v.evaluation, "gate": v.gate,
                          "notes": v.notes}
    return {"files": files, "notes": notes, "reports": reports}


# ---------------------------------------------------------------------------------------------
# Independent verification
# ---------------------------------------------------------------------------------------------
def run_file(path: Path, engine: str, x: np.ndarray, batch: int) -> tuple[np.ndarray | None, str]:
    """The first output of ``path`` on ``engine`` for all of ``x``, or (None, why)."""
    from edgekit.runtime.model import EdgeModel

    try:
        model = EdgeModel(path, engine=engine, check_engine=False)
    except Exception as exc:
        return None, f"load: {_first(exc)}"
    try:
        return np.concatenate([model.run(x[i:i + batch])[0] for i in range(0, len(x), batch)]), ""
    except Exception as exc:
        return None, f"run: {_first(exc)}"
    finally:
        model.close()


def _first(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:240]


def _own_rule(ort: np.ndarray, got: np.ndarray, labels: np.ndarray) -> tuple[bool, str]:
    """The proof's rule, recomputed: the engine against onnxruntime on the same file (gate with
    labels, 1 pt) and a mean |difference| within 2 % of the mean magnitude."""
    from edgekit.agreement import compare_predictions, gate

    ok, _, why = gate(compare_predictions(ort, got, labels), BUDGET)
    d = np.abs(got.astype(np.float64) - ort)
    rel = float(d.mean()) / (float(np.abs(ort).mean()) or 1.0)
    if not np.isfinite(d).all() or rel > 0.02:
        return False, f"mean |diff| {rel:.1%} of onnxruntime's magnitude"
    return ok, why


def _measure(out: np.ndarray, ref: np.ndarray, ort: np.ndarray | None, y: np.ndarray
             ) -> dict[str, Any]:
    """Figures of one engine's outputs ``out`` against fp32 (``ref``) and against onnxruntime
    on the same file (``ort``)."""
    from edgekit.agreement import compare_predictions, gate
    from edgekit.contract import top1

    agree = compare_predictions(ref, out, y)
    ok, lower, why = gate(agree, BUDGET)
    m: dict[str, Any] = {
        "accuracy": float((top1(out) == y).mean()), "top1_agreement": agree.top1_agreement,
        "gate_ok": ok, "gate_lower_pt": lower, "gate": why,
        "mean_abs_diff_vs_fp32": agree.mean_abs_error}
    if ort is not None:
        m["own_rule_ok"], m["own_rule"] = _own_rule(ort, out, y)
    return m


def verify_file(model: str, label: str, path: Path, x: np.ndarray, y: np.ndarray,
                ref: np.ndarray, engines: list[str], batches: list[int]
                ) -> list[dict[str, Any]]:
    """One row per engine for ``path``: independent figures at each batch size (a fresh
    model per size: OpenVINO compiles one network per input shape), the worst of them in the
    row, the record and the verdict."""
    from edgekit.contract import top1
    from edgekit.runtime.engine_record import read_engine_checks
    from edgekit.runtime.specs import read_onnx_props

    record = read_engine_checks(read_onnx_props(path) or {})
    fp32_acc = float((top1(ref) == y).mean())
    ort = run_file(path, "onnxruntime", x, PROOF_BATCH)[0]
    rows = []
    for e in engines:
        rec = record.get(e)
        row: dict[str, Any] = {
            "model": model, "file": path.name, "variant": label, "engine": e, "samples": len(y),
            "recorded": None if rec is None else rec.to_dict(), "fp32_accuracy": fp32_acc,
            "by_batch": {}}
        errors = []
        for b in batches:
            out, err = (ort, "") if e == "onnxruntime" and b == PROOF_BATCH else run_file(
                path, e, x, b)
            if out is None:
                errors.append(f"batch {b}: {err}")
                continue
            row["by_batch"][b] = _measure(out, ref, ort, y)
        row["loads"] = not errors
        row["error"] = "; ".join(errors)
        if row["by_batch"]:  # the worst batch size: outside the gate first, then lowest
            b, worst = min(row["by_batch"].items(), key=lambda kv: (
                kv[1]["gate_ok"], kv[1]["top1_agreement"] or 0.0, -kv[0]))
            same = len({m["top1_agreement"] for m in row["by_batch"].values()}) == 1
            row.update(worst, worst_batch="all" if same else b,
                       drop_pt=100 * (fp32_acc - worst["accuracy"]))
            if rec is not None and rec.fp32_top1_agreement is not None:
                at = row["by_batch"].get(PROOF_BATCH, {}).get("top1_agreement")
                row["record_reproduced"] = at is not None and abs(
                    rec.fp32_top1_agreement - at) < 1e-9
        row["verdict"] = verdict(label, row, rec)
        rows.append(row)
    return rows


def verdict(label: str, row: dict[str, Any], rec: Any) -> str:
    """The classification described in the module docstring."""
    if label == "fp32":
        if row["engine"] == "onnxruntime":
            return "reference"
        if not row["loads"]:
            return "info: fp32 does not load (not recorded)"
        return "info: fp32 within gate" if row["gate_ok"] else "info: fp32 OVER gate"
    if rec is None:
        return "UNRECORDED"
    if rec.passed:
        return "ok" if row["loads"] and row["gate_ok"] else "FALSE PASS"
    if not row["loads"]:
        return "ok (fails: does not load)"
    if not row["gate_ok"]:
        return "ok (fails: over the gate vs fp32)"
    if not row.get("own_rule_ok", True):
        return "ok (fails: worse than onnxruntime on the file)"
    return "false fail"


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        rec = r["recorded"]
        recorded = "-" if rec is None else ("yes" if rec["passed"] else "no")
        loads = "yes" if r["loads"] else f"no ({r['error'][:60]})"
        drop = "-" if "drop_pt" not in r else f"{r['drop_pt']:+.2f}"
        shown = r["file"] if r["variant"] in ("fp32", *r["file"].split(".")) else \
            f"{r['file']} ({r['variant']})"
        out.append([r["model"], shown, r["engine"], recorded, loads, _pct(r.get("accuracy")),
                    _pct(r["fp32_accuracy"]), _pct(r.get("top1_agreement")), drop,
                    str(r.get("worst_batch", "-")), r["verdict"]])
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Engine agreement: edgekit's per-engine record vs an independent check (issue #23)",
        "",
        f"- CPU: {m['cpu']}, {m['instruction_set']} ({m['logical_cores']} logical cores, "
        "shared); " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"- command: `{result['command']}`; wall time {result['seconds'] / 60:.1f} min",
        f"- gate: `compare_predictions` + `gate`, {BUDGET:g}-point budget, against fp32 on "
        "onnxruntime, on held-out samples never used for calibration; variants exported with "
        f"`max_accuracy_drop={BUDGET:g}`",
        f"- **verdict: {result['verdict']}**",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join([":--"] * 3 + [":-:"] * 2 + ["--:"] * 5 + [":--"]) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |"
              for row in table_rows(result["rows"])]
    lines += ["", "## Models", "", "| model | data | epochs | Keras test accuracy | held-out | "
              "variants not written |", "|:--|:--|--:|--:|--:|:--|"]
    for name, mod in result["models"].items():
        t = mod["train"]
        skipped = "; ".join(f"{k}: {v}" for k, v in mod["notes"].items()) or "-"
        data = str(t["data"]).replace(str(ROOT.parent) + "/", "../")
        lines.append(f"| {name} | {data} | {t['epochs']} | {_pct(t['keras_test_accuracy'])}"
                     f" | {mod['held_out']} | {skipped.replace('|', '/')} |")
    varying = [r for r in result["rows"] if r.get("worst_batch") not in (None, "all")]
    if varying:
        lines += ["", "## Rows whose answers depend on the batch size", "",
                  "Top-1 agreement with fp32 (and accuracy) per batch size; edgekit's engine "
                  f"proof runs at batch {PROOF_BATCH}.", ""]
        for r in varying:
            per = ", ".join(f"b{b}: {_pct(m['top1_agreement'])} ({_pct(m['accuracy'])})"
                            for b, m in r["by_batch"].items())
            lines.append(f"- {r['file']} on {r['engine']}: {per}")
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    counts: dict[str, int] = {}
    for r in rows:
        key = r["verdict"].split(" (")[0] if not r["verdict"].startswith("info") else "info"
        counts[key] = counts.get(key, 0) + 1
    bad = counts.get("FALSE PASS", 0) + counts.get("UNRECORDED", 0)
    passed = sum(1 for r in rows if r["recorded"] and r["recorded"]["passed"])
    same = [r["record_reproduced"] for r in rows if "record_reproduced" in r]
    text = (f"{'FAIL' if bad else 'PASS'}: {counts.get('FALSE PASS', 0)} false pass(es), "
            f"{counts.get('UNRECORDED', 0)} unrecorded, {counts.get('false fail', 0)} false "
            f"fail(s); {passed} (variant, engine) pairs recorded passed, all checked against "
            f"fp32; the record's fp32 top-1 agreement reproduced exactly on {sum(same)}/"
            f"{len(same)} recorded rows")
    return text, not bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--models", default="", help="comma-separated subset of: " +
                    ", ".join(c.name for c in CASES))
    ap.add_argument("--held-out", type=int, default=2000,
                    help="held-out samples per model at most (default 2000; the SMS test split "
                         "has 1,115, digits 1,079, breast cancer 114)")
    ap.add_argument("--quick", action="store_true",
                    help="3 small models, 1 epoch, 1,000 held-out samples, results in a temp "
                         "folder")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the JSON + Markdown go (default benchmarks/results)")
    ap.add_argument("--batches", default="1,8,64,256",
                    help="batch sizes every file is run at on every engine; a row shows the "
                         "worst (default 1,8,64,256; edgekit's proof runs at 64)")
    ap.add_argument("--keep", type=Path, default=None, help="keep models and ONNX files here")
    args = ap.parse_args(argv)
    from edgekit.runtime.proof import installed_engines
    from edgekit.speed.machine import machine_info

    t0 = time.time()
    names = [n for n in args.models.split(",") if n] or (list(QUICK) if args.quick else [
        c.name for c in CASES])
    unknown = set(names) - {c.name for c in CASES}
    if unknown:
        ap.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    held = 1000 if args.quick else args.held_out
    batches = sorted({int(b) for b in args.batches.split(",") if b} | {PROOF_BATCH})
    engines = installed_engines()
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="engine-agreement-") as tmp:
        work = args.keep or Path(tmp)
        for case in [c for c in CASES if c.name in names]:
            epochs = QUICK.get(case.name, case.epochs) if args.quick else case.epochs
            print(f"== {case.name}: training {epochs} epoch(s)", flush=True)
            d = work / case.name
            d.mkdir(parents=True, exist_ok=True)
            trained = train_case(case, args.data_root, d, epochs, held)
            exported = export_case(case, trained, d / "out")
            ref, err = run_file(exported["files"]["fp32"], "onnxruntime", trained["x"],
                                PROOF_BATCH)
            assert ref is not None, f"fp32 {case.name} does not run in onnxruntime: {err}"
            for label, path in exported["files"].items():
                rows += verify_file(case.name, label, path, trained["x"], trained["y"], ref,
                                    engines, batches)
            models[case.name] = {"train": trained["train"], "held_out": len(trained["y"]),
                                 "notes": exported["notes"], "variants": exported["reports"]}
            for row in table_rows([r for r in rows if r["model"] == case.name]):
                print("  " + " | ".join(row), flush=True)
    machine = machine_info()
    text, ok = summarize(rows)
    result = {"machine": machine, "versions": _versions(), "engines": engines,
              "command": "python benchmarks/engine_agreement.py" + (
                  " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
              "budget_points": BUDGET, "quick": args.quick, "models": models, "rows": rows,
              "verdict": text, "seconds": round(time.time() - t0, 1)}
    widths = [max(len(c) for c in col) for col in zip(COLUMNS, *table_rows(rows), strict=True)]
    for row in [COLUMNS, *table_rows(rows)]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"\nCPU: {machine['cpu']} ({machine['instruction_set']}); engines: {', '.join(engines)}")
    print(f"verdict: {text}")
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="engine-agreement-results-"))
                               if args.quick else ROOT / "benchmarks" / "results")
    isa = re.sub(r"[^a-z0-9]+", "_", machine["instruction_set"].lower()).strip("_")
    stem = out_dir / f"engine_agreement_{isa.removesuffix('_no_vnni')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {stem}.json and {stem}.md ({result['seconds'] / 60:.1f} min)")
    return 0 if ok else 1


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("onnxruntime", "openvino", "tensorflow", "keras", "tf2onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    sys.exit(main())
