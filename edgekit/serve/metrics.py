"""The Prometheus metrics of ``edgekit serve`` (``GET /metrics``): requests and latency by
endpoint and status, micro-batch sizes, requests in flight and refused."""

from __future__ import annotations

from typing import Any

from edgekit.errors import require

__all__ = ["Metrics", "endpoint_of"]

_ENDPOINTS = {
    "/predict": "predict", "/health": "health", "/metadata": "metadata", "/metrics": "metrics",
}  # fmt: skip
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        prom: Any = require("prometheus_client", "serve", "prometheus-client")
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "edgekit_requests", "HTTP requests by endpoint and status code",
            ["endpoint", "code"], registry=r,
        )  # fmt: skip
        self.latency = prom.Histogram(
            "edgekit_request_duration_seconds", "Request latency by endpoint",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch = prom.Histogram(
            "edgekit_batch_size", "Samples per model call (micro-batches merged)",
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = prom.Gauge(
            "edgekit_requests_in_flight", "Requests being handled", registry=r
        )
        self.rejected = prom.Counter(
            "edgekit_rejected_requests", "Requests refused before handling", ["reason"], registry=r
        )
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        pair = self._children.get((endpoint, code))
        if pair is None:
            pair = (self.requests.labels(endpoint, str(code)), self.latency.labels(endpoint))
            self._children[(endpoint, code)] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return self.prom.generate_latest(self.registry), self.prom.CONTENT_TYPE_LATEST


def endpoint_of(path: str) -> str:
    """The ``endpoint`` label of a request path (``v2``, ``v2_infer``, ``other`` ...)."""
    ep = _ENDPOINTS.get(path)
    if ep is not None:
        return ep
    if path.startswith("/v2"):
        return "v2_infer" if path.endswith("/infer") else "v2"
    return "other"
