"""The tune's session stage: the onnxruntime session settings tried on the best onnxruntime
candidate, and when one is not worth trying."""

from __future__ import annotations

from edgekit.runtime.session import SessionOptionsConfig
from edgekit.tune.core import Candidate

__all__: list[str] = []

#: onnxruntime moves Quantize/Dequantize nodes across pooling/reshape at load (the session
#: stage tries switching that off; mixed-precision files no longer need it, see quantize.qdq)
_NO_PROPAGATION = SessionOptionsConfig(disabled_optimizers=["QDQPropagationTransformer"])


def _session_space() -> list[tuple[str, str, SessionOptionsConfig]]:
    return [
        ("no-qdq-propagation", "onnxruntime's QDQ propagation disabled", _NO_PROPAGATION),
        ("no-spin", "intra-op threads do not spin between runs",
         SessionOptionsConfig(allow_spinning=False)),
        ("denormal-zero", "denormals flushed to zero",
         SessionOptionsConfig(session_config={"session.set_denormal_as_zero": "1"})),
        ("opt-extended", "graph optimization level extended (no layout transforms)",
         SessionOptionsConfig(graph_optimization_level="extended")),
    ]


def _skip_session(extra: SessionOptionsConfig, best: Candidate,
                  best_session: SessionOptionsConfig, threads: int) -> bool:
    if extra.disabled_optimizers and (
            best.quantization is None
            or set(extra.disabled_optimizers) <= set(best_session.disabled_optimizers)):
        return True  # no Q/DQ to propagate, or already off
    # one thread has no pool threads to spin; a "win" would be noise
    return extra.allow_spinning is not None and threads == 1
