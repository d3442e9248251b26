"""pytest plugin for users' regression tests (registered through the ``pytest11`` entry point).

Fixtures:

- ``edge_model``: the :class:`edgekit.runtime.EdgeModel` named by ``@pytest.mark.edge_model(path)``
  on the test, else by ``--edge-model PATH``, else by the ini option ``edge_model``; closed
  after the test.
- ``edge_model_factory``: ``factory(path, **EdgeModel kwargs)``; every model is closed after
  the test.

Helpers (import them from ``edgekit.check.pytest_plugin``):

- :func:`assert_accuracy` (model, data file or ``(x, y)``, ``min_accuracy`` / ``baseline`` +
  ``max_drop``);
- :func:`assert_latency_ratio` (model vs reference, interleaved, median paired ratio).

This module imports nothing heavy at import time: it is loaded in every pytest run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["assert_accuracy", "assert_latency_ratio", "edge_model", "edge_model_factory"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgekit")
    group.addoption("--edge-model", default=None, help="ONNX model for the edge_model fixture.")
    parser.addini("edge_model", "ONNX model for the edge_model fixture", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "edge_model(path, **kwargs): model (and EdgeModel options) of edge_model")


@pytest.fixture
def edge_model_factory() -> Iterator[Callable[..., Any]]:
    """``factory(path, provider="cpu", **kwargs)`` -> EdgeModel, closed after the test."""
    from edgekit.runtime.model import EdgeModel

    made: list[Any] = []

    def factory(path: str | os.PathLike[str], provider: str = "cpu", **kwargs: Any) -> Any:
        m = EdgeModel(path, provider, **kwargs)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


@pytest.fixture
def edge_model(request: pytest.FixtureRequest, edge_model_factory: Callable[..., Any]) -> Any:
    """The model of ``@pytest.mark.edge_model(path, **kwargs)``, ``--edge-model`` or the
    ``edge_model`` ini option (relative paths: from the rootdir); skips when none is set."""
    marker = request.node.get_closest_marker("edge_model")
    kwargs: dict[str, Any] = {}
    if marker is not None and marker.args:
        path = marker.args[0]
        kwargs = dict(marker.kwargs)
    else:
        path = request.config.getoption("--edge-model") or request.config.getini("edge_model")
    if not path:
        pytest.skip("no model: use @pytest.mark.edge_model(path), --edge-model or ini edge_model")
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = Path(str(request.config.rootpath)) / p
    return edge_model_factory(p, **kwargs)


def _xy(data: Any, model: Any) -> tuple[Any, Any]:
    if isinstance(data, str | os.PathLike):  # .npz/.npy, IDX folder, text table
        from edgekit.inputs.data import TensorSpecInfo
        from edgekit.inputs.prepare import read_data

        specs = [TensorSpecInfo(s.name, tuple(s.shape), str(s.dtype)) for s in model.inputs]
        ds = read_data(data, specs, model.metadata, "evaluation data", "test")
        if ds.labels is None:
            raise AssertionError(f"{data} has no labels 'y'")
        x = ds.inputs if len(ds.inputs) > 1 else next(iter(ds.inputs.values()))
        return x, ds.labels
    x, y = data
    return x, y


def assert_accuracy(model: Any, data: Any, min_accuracy: float | None = None, *,
                    baseline: float | None = None, max_drop: float = 1.0,
                    batch_size: int = 256) -> float:
    """Assert the top-1 accuracy (percent) of ``model`` on ``data``; returns it.

    Args:
        model: an :class:`edgekit.runtime.model.EdgeModel` or a path to one.
        data: an ``.npz`` with inputs and labels ``y`` (or an IDX folder: its test split), or
            ``(x, y)`` (raw inputs: the model's preprocessing metadata is applied by
            ``predict``).
        min_accuracy: lowest accepted accuracy in percent (default None).
        baseline / max_drop: accepted when ``accuracy >= baseline - max_drop`` (default 1 pt).
        batch_size: inference batch size (default 256).
    """
    import numpy as np

    from edgekit.runtime.model import EdgeModel
    from edgekit.validate import accuracy

    m = model if isinstance(model, EdgeModel) else EdgeModel(model, "cpu")
    x, y = _xy(data, m)
    n = len(y)
    if isinstance(x, dict):
        probs = np.concatenate([m.predict({k: v[i:i + batch_size] for k, v in x.items()})
                                for i in range(0, n, batch_size)])
    else:
        probs = np.concatenate([m.predict(x[i:i + batch_size]) for i in range(0, n, batch_size)])
    acc = accuracy(probs, np.asarray(y))
    if min_accuracy is None and baseline is None:
        raise ValueError("give min_accuracy or baseline")
    if min_accuracy is not None and acc < min_accuracy:
        raise AssertionError(f"{m.path.name}: accuracy {acc:.2f} % < minimum {min_accuracy:.2f} %"
                             f" on {n} samples")
    if baseline is not None and acc < baseline - max_drop:
        raise AssertionError(f"{m.path.name}: accuracy {acc:.2f} % dropped "
                             f"{baseline - acc:.2f} pt below the baseline {baseline:.2f} % "
                             f"(limit {max_drop:g} pt) on {n} samples")
    return acc


def assert_latency_ratio(model: Any, reference: Any, max_ratio: float, *, batch: int = 1,
                         threads: int | None = 1, min_time: float = 1.0,
                         max_time: float = 10.0) -> float:
    """Assert that ``model`` takes at most ``max_ratio`` times as long as ``reference``.

    Both are timed interleaved in this process (median of paired per-call ratios, see
    :func:`edgekit.speed.ratio.measure_ratio`), so the assertion holds on a busy CI machine.
    ``model`` / ``reference``: paths (.onnx, .tflite, .keras) or ``EdgeModel`` objects
    (then their own thread settings apply). Defaults: batch 1, 1 thread, 1 to 10 s of timing.
    Returns the ratio.
    """
    from edgekit.check.regression import CHECK_RATIO, CheckConfig, latency_ratio
    from edgekit.measure.backend import Backend
    from edgekit.measure.backends import OnnxBackend, load_backend
    from edgekit.runtime.model import EdgeModel

    def backend(m: Any) -> Backend:
        if isinstance(m, EdgeModel):
            return OnnxBackend(m)
        return load_backend(m, threads=threads)

    mb, rb = backend(model), backend(reference)
    timing = dataclasses.replace(CHECK_RATIO, min_seconds=min_time, max_seconds=max_time)
    lr = latency_ratio(mb, rb, CheckConfig(batch=batch, threads=threads, ratio=timing))
    if lr.ratio > max_ratio:
        raise AssertionError(
            f"{mb.name} takes {lr.ratio:.2f}x as long as {rb.name} (limit {max_ratio:g}x; "
            f"p50 {lr.candidate_ms:.3g} ms vs {lr.reference_ms:.3g} ms, batch {batch}, "
            f"{lr.rounds} interleaved rounds)")
    return lr.ratio
