"""Settings of ``edgekit serve``: one validated dataclass shared by the CLI, the app and the
worker processes."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.serve.v2 import check_model_name

__all__ = ["ServeConfig", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_BATCH", "is_loopback"]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_BATCH = 1024


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """Everything ``edgekit serve`` can be told; checked on creation (:class:`InputError`).

    Attributes:
        host: address to bind; default ``127.0.0.1``.
        port: TCP port; default 8000.
        workers: server processes; default 1.
        provider: onnxruntime provider (short name or ``auto``); default ``auto``.
        fallback: fall back to the next provider if unavailable; default False.
        threads: intra-op threads per worker; default None (with several workers or
            batching ``cores // workers``, one less with batching, at most the model's stored
            setting; else the model's stored setting, else onnxruntime's).
        max_body_bytes: larger request bodies get 413; default 10 MB.
        max_batch: the most samples in one request (more get 413) and in one merged
            micro-batch; default 1024.
        batching: merge concurrent requests into one model call; default False.
        max_delay_ms: how long a micro-batch waits for more requests while others are arriving;
            default 2 ms.
        header_timeout: seconds for a request's headers to arrive; default 10.
        body_timeout: seconds for a request's body to arrive after its headers; default 30.
        keep_alive_timeout: seconds an idle keep-alive connection stays open; default 5.
        max_connections: open connections per worker; default None (1000, kept below the
            open-file limit).
        max_in_flight: requests being handled at once per worker, more get 503 with
            ``Retry-After``; default 256.
        api_key: require ``Authorization: Bearer <key>``; default None (no authentication).
        ssl_certfile: PEM certificate to serve HTTPS; default None.
        ssl_keyfile: PEM private key of ``ssl_certfile``; default None.
        model_name: name under ``/v2/models/``; default the model file's stem.
        log_level: uvicorn log level; default ``info``.
        access_log: log every request; default False.
        warmup: run a few inferences at start-up; default True.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    provider: str = "auto"
    fallback: bool = False
    threads: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    batching: bool = False
    max_delay_ms: float = 2.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int | None = None
    max_in_flight: int = 256
    api_key: str | None = field(default=None, repr=False)
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    model_name: str | None = None
    log_level: str = "info"
    access_log: bool = False
    warmup: bool = True

    def __post_init__(self) -> None:
        for name in ("workers", "max_body_bytes", "max_batch", "max_in_flight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be in 0..65535, got {self.port}")
        if self.threads is not None and self.threads < 0:
            raise InputError(f"threads must be >= 0, got {self.threads}")
        if self.max_connections is not None and self.max_connections < 1:
            raise InputError(f"max_connections must be >= 1, got {self.max_connections}")
        for name in ("max_delay_ms", "header_timeout", "body_timeout", "keep_alive_timeout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.api_key is not None and (not self.api_key or self.api_key != self.api_key.strip()):
            raise InputError(
                "the API key must be non-empty and without surrounding spaces",
                hint="pass --api-key KEY or set EDGEKIT_API_KEY",
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise InputError(
                "HTTPS needs both a certificate and its key",
                hint="pass --ssl-certfile CERT.pem --ssl-keyfile KEY.pem",
            )
        for name in ("ssl_certfile", "ssl_keyfile"):
            v = getattr(self, name)
            if v is not None and not Path(v).is_file():
                raise InputError(f"{name.replace('_', ' ')} {v} does not exist")
        if self.model_name is not None:
            check_model_name(self.model_name)

    @property
    def secure_bind(self) -> bool:
        """False when binding a non-loopback address without an API key."""
        return self.api_key is not None or is_loopback(self.host)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the API key included: for the worker processes only)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServeConfig:
        """Settings from :meth:`to_dict` output; unknown keys are an :class:`InputError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown serve setting(s): {', '.join(unknown)}")
        return cls(**d)
