"""What a tune starts from: the fp32 file (exported when given a Keras model), the data it
measures on (calibration, evaluation, a timing batch) and the context every stage shares (the
fp32 reference session and its outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.contract import scores_classes
from edgekit.inputs.data import Dataset, run_in_batches
from edgekit.io.memory import BATCH_MEMORY_BYTES, activation_bytes
from edgekit.metadata import ModelMetadata
from edgekit.progress import StatusFn
from edgekit.runtime.session import SessionOptionsConfig
from edgekit.tune.core import _EVAL_BATCH, TuneConfig, _Context, _open
from edgekit.validate import accuracy

__all__ = ["TuneData", "fp32_model", "load_tune_data", "tune_context"]


@dataclass
class TuneData:
    """What the search measures on: calibration, evaluation and benchmark inputs."""

    calibration: Dataset
    eval_feeds: dict[str, np.ndarray]
    eval_labels: np.ndarray | None
    eval_desc: str
    bench_feeds: dict[str, np.ndarray]
    notes: list[str]
    classes: bool = True  #: the first output scores classes (False: a regression output)


def fp32_model(src: Path, tmp: Path, say: StatusFn) -> Path:
    """``src`` itself when it is ONNX, else its validated fp32 export in ``tmp``."""
    if src.suffix.lower() == ".onnx":
        return src
    from edgekit.convert import ExportConfig, export_model

    say("exporting the fp32 model")
    return export_model(src, tmp / "fp32", ExportConfig()).onnx_path


def load_tune_data(proto: Any, calibration: Any, eval_data: Any, config: TuneConfig) -> TuneData:
    """Calibration samples; evaluation on ``eval_data``, else on calibration samples held out
    (not used to calibrate), else on the calibration samples; a batch for timing."""
    from edgekit.inputs.prepare import load_model_data, onnx_input_specs
    from edgekit.quantize.calibration import calibration_split

    specs = onnx_input_specs(proto)
    meta = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    cal = config.quantization.calibration
    feeds, cal_info, held, notes = calibration_split(calibration, specs, meta, cal)
    desc = cal_info["data"]
    if eval_data is not None:
        ev, labels, more, ev_desc = load_model_data(
            eval_data, specs, meta, "evaluation data", "test", config.eval_samples, cal.seed)
        notes += more
    elif held is not None:
        ev, labels, ev_desc = held[0], held[1], f"{held[2]} (held out)"
    else:
        ev, labels, ev_desc = feeds, None, f"{desc} (agreement only)"
    classes = scores_classes(meta.output_kinds)
    if not classes and labels is not None:
        labels = None
        notes.append("labels not used: the first output is a regression output, so candidates "
                     "are compared with fp32 by their relative error")
    reps = -(-config.batch // len(next(iter(feeds.values()))))
    bench = {k: np.concatenate([v] * reps)[: config.batch] for k, v in feeds.items()}
    return TuneData(Dataset(feeds, None, desc), ev, labels, ev_desc, bench, notes, classes)


def _mem_pattern(fp32_path: Path, batch: int) -> bool | None:
    """False (onnxruntime's memory pattern off) when a batch's activations pass
    :data:`~edgekit.io.memory.BATCH_MEMORY_BYTES`, else None (onnxruntime's default, on). The
    pattern is planned on the first run and allocated as one more block on the second, beside
    the arena chunks of the first, which stay: ConvNeXtTiny at batch 32 went 1225 -> 1809 MiB
    on its second run (batch 8: 622 MiB with it, 485 without, and no slower)."""
    return False if activation_bytes(fp32_path) * batch > BATCH_MEMORY_BYTES else None


def tune_context(config: TuneConfig, fp32_path: Path, proto: Any, data: TuneData, tmp: Path,
             say: StatusFn) -> _Context:
    base_session = SessionOptionsConfig(
        intra_op_num_threads=config.threads, inter_op_num_threads=1,
        execution_mode="sequential", graph_optimization_level="all",
        engine="onnxruntime", enable_mem_pattern=_mem_pattern(fp32_path, config.batch),
    )
    scorer = _open(fp32_path, base_session)
    try:
        fp32_probs = run_in_batches(scorer.run, data.eval_feeds, _EVAL_BATCH)[0]
    finally:
        scorer.close()
    # timed fresh, as every candidate is: a session that ran the evaluation's batches first
    # runs the timing batch slower afterwards, as without onnxruntime's memory pattern (a
    # masked bidirectional GRU at batch 1 after batches of 16: 0.60 against 0.49 ms, the same
    # with the pattern off; MobileNetV2 224: 2-4 %), and every ratio against fp32 looked
    # better than it was (fp32's own: 0.81)
    reference = _open(fp32_path, base_session)
    labels = data.eval_labels
    fp32_acc = accuracy(fp32_probs, labels) if labels is not None else None
    return _Context(config, fp32_path, proto.graph, data.eval_feeds, labels, fp32_probs,
                    fp32_acc, data.bench_feeds, data.calibration, reference, base_session, tmp,
                    say, proto, data.classes)
