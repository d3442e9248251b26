"""``edgekit serve`` (edgekit.serve): uvicorn over the model, after checking the port."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import click

from edgekit.cli.app import command, existing_path, threads_option, verbosity

__all__ = ["serve_cmd"]


def _check_port_free(host: str, port: int) -> None:
    """Raise :class:`edgekit.errors.InputError` when ``host:port`` cannot be bound (in use,
    no such address, no permission), before any worker starts."""
    from edgekit.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise InputError(f"cannot bind {host}:{port}: {reason}",
                             hint="another process may be using that port: choose another "
                             "with --port, or stop it") from None


@command("serve", silence=False)
@click.argument("model", type=existing_path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; a non-loopback one without --api-key prints a warning.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--provider", default="auto", show_default=True)
@click.option("--fallback", is_flag=True, help="Fall back to the next provider if unavailable.")
@threads_option(min_threads=0,
                help="Intra-op threads per worker [default: cores/workers with --workers or "
                "--batching (one less with batching), else the model's stored setting].")
@click.option(
    "--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True
)
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most samples per request and per merged micro-batch.")
@click.option("--batching/--no-batching", default=False, show_default=True,
              help="Merge concurrent requests into one model call (dynamic micro-batching).")
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long a micro-batch waits for requests still arriving.")
@click.option("--header-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds for a request's headers to arrive (0: no limit).")
@click.option("--body-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds for a request's body to arrive (0: no limit).")
@click.option("--keep-alive-timeout", type=click.FloatRange(min=0), default=5.0,
              show_default=True, help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-connections", type=click.IntRange(min=1), default=None,
              help="Open connections per worker [default: 1000, below the open-file limit].")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests handled at once per worker; more get 503 + Retry-After.")
@click.option("--api-key", envvar="EDGEKIT_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' (or set EDGEKIT_API_KEY).")
@click.option("--ssl-certfile", type=existing_path(dir_okay=False), default=None,
              help="PEM certificate: serve HTTPS.")
@click.option("--ssl-keyfile", type=existing_path(dir_okay=False), default=None,
              help="PEM private key of --ssl-certfile.")
@click.option("--name", "model_name", default=None,
              help="Model name under /v2/models/ [default: the file's stem].")
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve_cmd(
    model: Path,
    max_body_mb: float,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    **settings: Any,
) -> None:
    """Serve MODEL over HTTP with uvicorn.

    \b
    POST /predict, GET /health, GET /metadata, GET /metrics (Prometheus), and the
    Open Inference Protocol (KServe V2): GET /v2/health/ready, GET /v2/models,
    GET /v2/models/NAME, POST /v2/models/NAME/infer (tritonclient, kserve).
    """
    from edgekit.serve import ServeConfig, serve

    if verbosity.quiet and settings["log_level"] == "info":
        settings["log_level"] = "warning"
    elif verbosity.verbose and settings["log_level"] == "info":
        settings["log_level"] = "debug"
    config = ServeConfig(
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        **settings,
    )
    _check_port_free(config.host, config.port)
    serve(model, config)
