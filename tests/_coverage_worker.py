"""One coverage-zoo model through the CLI, in its own process (used by test_coverage.py).

    python tests/_coverage_worker.py OUTDIR NAME [NAME ...]

For each name: builds the model, saves ``OUTDIR/NAME/NAME.keras``, runs ``edgekit export``
on it with 8 validation samples, then checks the written ONNX independently: onnxruntime at
batch 1 and 3 against the in-memory Keras model on inputs of another seed. Writes
``OUTDIR/NAME/NAME.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _coverage_models import CUSTOM_LAYER_SOURCE, ZOO, build  # noqa: E402


def _independent_check(model: Any, onnx_path: Path) -> dict[str, Any]:
    """Max abs difference Keras vs onnxruntime on 3 fresh samples, at batch 3 and batch 1."""
    import onnxruntime as ort

    from edgekit.convert import load_source, synthetic_inputs

    source = load_source(model)  # the in-memory model: its input names may differ
    feeds = synthetic_inputs(source, 3, seed=12345)
    ref = source.call(feeds)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    onnx_feeds = {n: feeds[s.name] for n, s in zip(names, source.inputs, strict=True)}
    got3 = sess.run(None, onnx_feeds)
    got1 = [np.concatenate(c) for c in zip(*[sess.run(None, {k: v[i:i + 1] for k, v in
                                                           onnx_feeds.items()})
                                             for i in range(3)], strict=True)]
    err = max(float(np.max(np.abs(r - g))) for got in (got3, got1)
              for r, g in zip(ref, got, strict=True))
    return {"max_abs_error": err, "onnx_inputs": names,
            "finite": bool(all(np.isfinite(g).all() for g in got3))}


def run(name: str, outdir: Path, size: int | None = None) -> dict[str, Any]:
    """Build, save and export ``name``; the result record (also written as JSON)."""
    import keras
    from click.testing import CliRunner

    from edgekit.cli.main import cli

    entry = next(z for z in ZOO if z.name == name)
    args: list[str] = []
    if name == "custom_layer":
        from edgekit.convert import load_custom_objects

        module = outdir / "zoo_layers.py"
        module.write_text(CUSTOM_LAYER_SOURCE)
        load_custom_objects(module)  # registers ScaledSwish for the build
        args = ["--custom-objects", str(module)]
    t0 = time.perf_counter()
    model = build(entry, size)
    path = outdir / f"{name}.keras"
    model.save(path)
    if name == "custom_layer":
        keras.saving.get_custom_objects().clear()  # the CLI must import the module itself
    t1 = time.perf_counter()
    res = CliRunner().invoke(cli, ["export", str(path), "-o", str(outdir / "out"),
                                   "--validation-samples", "8", *args])
    t2 = time.perf_counter()
    record: dict[str, Any] = {"name": name, "exit_code": res.exit_code, "output": res.output,
                              "build_s": round(t1 - t0, 2), "export_s": round(t2 - t1, 2)}
    onnx_path = outdir / "out" / f"{name}.onnx"
    if res.exit_code == 0:
        record["report"] = json.loads((outdir / "out" / f"{name}.report.json").read_text())
        record["check"] = _independent_check(model, onnx_path)
    (outdir / f"{name}.json").write_text(json.dumps(record, default=str))
    return record


if __name__ == "__main__":
    for model_name in sys.argv[2:]:  # several models share one TensorFlow start-up
        run(model_name, Path(sys.argv[1]) / model_name)
        import keras

        keras.backend.clear_session(free_memory=True)  # the next model starts from a clean slate
