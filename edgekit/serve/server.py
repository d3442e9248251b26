"""Running the app: :func:`serve` (uvicorn, one or several worker processes), the worker app
factory, and :func:`server_process` (a real server in a subprocess, for tests and benchmarks)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError, require
from edgekit.runtime.model import EdgeModel
from edgekit.serve.config import ServeConfig
from edgekit.speed.machine import usable_cores

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["ENV_CONFIG", "serve", "app_factory", "free_port", "server_process"]

logger = logging.getLogger("edgekit.serve")

#: Environment variable carrying the JSON config to each ``--workers`` process.
ENV_CONFIG = "EDGEKIT_SERVE_CONFIG"


def _worker_threads(cfg: ServeConfig, stored: int | None = None) -> ServeConfig:
    """Without ``threads``, with several workers or micro-batching: ``cores // workers``
    intra-op threads per worker (one less with batching: the event loop needs a core while a
    batch runs), so processes and threads do not fight over the cores; at most ``stored``,
    the count a tuned model stores (``edgekit tune`` found it faster than more)."""
    if cfg.threads is None and (cfg.workers > 1 or cfg.batching):
        threads = max(1, usable_cores() // cfg.workers - (1 if cfg.batching else 0))
        return dataclasses.replace(cfg, threads=min(threads, stored or threads))
    return cfg


def _stored_threads(model_path: str | os.PathLike[str]) -> int | None:
    """The intra-op thread count in the model's ``edgekit.session`` metadata (None without)."""
    from edgekit.runtime.engines import stored_session
    from edgekit.runtime.specs import read_onnx_props

    path = Path(model_path)
    if not path.is_file():
        return None
    n = stored_session(read_onnx_props(path), path)[0].get("intra_op_num_threads")
    return n if isinstance(n, int) and n > 0 else None


def app_factory() -> Starlette:
    """App of one ``--workers`` process: the config comes from ``$EDGEKIT_SERVE_CONFIG``."""
    from edgekit.serve.app import create_app
    from edgekit.serve.protocol import install_log_rate_limit

    raw = os.environ.get(ENV_CONFIG)
    if not raw:
        raise InputError(f"${ENV_CONFIG} is not set", hint="start the server with edgekit serve")
    cfg = json.loads(raw)
    model = cfg.pop("model")
    install_log_rate_limit()
    return create_app(model, ServeConfig.from_dict(cfg))


def serve(
    model_path: str | os.PathLike[str], config: ServeConfig | None = None, **settings: object
) -> None:
    """Serve ``model_path`` with uvicorn until interrupted.

    Args:
        model_path: the ``.onnx``/``.ort`` model.
        config: settings; default :class:`ServeConfig` () (127.0.0.1:8000, one worker).
        settings: :class:`ServeConfig` fields overriding ``config``.

    With ``workers > 1`` uvicorn starts that many processes, each loading the model through
    :func:`app_factory`. The soft open-file limit is raised to the hard limit first. A
    certificate/key pair that does not load (not PEM, not a pair) is an :class:`InputError`
    before anything starts.
    """
    require("uvicorn", "serve")
    from edgekit.serve.app import create_app, resolve_config
    from edgekit.serve.protocol import EdgekitUvicornConfig, install_log_rate_limit
    from edgekit.serve.shutdown import EdgekitServer
    from edgekit.serve.tls import server_context

    cfg = _worker_threads(resolve_config(config, settings), _stored_threads(model_path))
    if cfg.ssl_certfile and cfg.ssl_keyfile:
        server_context(cfg.ssl_certfile, cfg.ssl_keyfile)  # a bad pair fails here, clearly
    if not cfg.secure_bind:
        sys.stderr.write(
            f"warning: serving on {cfg.host}, reachable from other machines, without an API "
            "key: anyone who can reach this port can use the model. Pass --api-key (or set "
            "EDGEKIT_API_KEY), and --ssl-certfile/--ssl-keyfile off a trusted network.\n"
        )
    install_log_rate_limit()
    uv = _uvicorn_settings(cfg)
    if cfg.workers == 1:
        app = create_app(model_path, cfg)
        EdgekitServer(EdgekitUvicornConfig(app, **uv)).run()
        return
    EdgeModel(model_path, cfg.provider, fallback=cfg.fallback).close()  # fail early, here
    env = {"model": str(Path(model_path).resolve()), **cfg.to_dict()}
    os.environ[ENV_CONFIG] = json.dumps(env)
    config_uv = EdgekitUvicornConfig("edgekit.serve.server:app_factory", factory=True, **uv)
    _run_workers(config_uv, cfg.workers)


def _uvicorn_settings(cfg: ServeConfig) -> dict[str, Any]:
    """uvicorn's settings for ``cfg`` (raises the soft open-file limit to the hard one)."""
    from edgekit.serve.connections import (
        ProtocolLimits,
        accept_backlog,
        auto_max_connections,
        raise_fd_limit,
    )
    from edgekit.serve.protocol import guarded_protocol_class
    from edgekit.serve.shutdown import GRACEFUL_TIMEOUT

    fd_limit = raise_fd_limit()
    tls = (cfg.ssl_certfile, cfg.ssl_keyfile) if cfg.ssl_certfile and cfg.ssl_keyfile else None
    limits = ProtocolLimits(
        header_timeout=cfg.header_timeout or None,
        body_timeout=cfg.body_timeout or None,
        max_connections=auto_max_connections(cfg.max_connections, fd_limit),
    )
    return {
        "host": cfg.host,
        "port": cfg.port,
        "log_level": cfg.log_level,
        "access_log": cfg.access_log,
        "timeout_keep_alive": cfg.keep_alive_timeout,
        "http": guarded_protocol_class(),
        # the same event loop whatever else is installed: uvicorn[standard] (pulled in by
        # other packages) would switch to uvloop, under which the guards are not tested
        "loop": "asyncio",
        "tls": tls,
        "server_header": False,
        "proxy_headers": False,  # edgekit does not use client addresses: one layer less
        "timeout_graceful_shutdown": GRACEFUL_TIMEOUT,
        "limits": limits,
        "backlog": accept_backlog(fd_limit),
    }


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with ``SO_REUSEPORT``: the kernel spreads connections evenly over
    the workers' sockets (one shared socket lets one busy worker take most of them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker_main(config: Any) -> None:
    """One ``--workers`` process: its own ``SO_REUSEPORT`` socket, one uvicorn server."""
    from edgekit.serve.shutdown import EdgekitServer

    config.configure_logging()
    sock = _reuse_port_socket(config.host, config.port)
    EdgekitServer(config).run(sockets=[sock])


def _run_workers(config: Any, workers: int) -> None:
    """Start ``workers`` processes, restart any that dies, stop them all on SIGINT/SIGTERM."""
    import multiprocessing
    import signal

    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - Windows
        raise InputError("--workers needs SO_REUSEPORT (Linux, macOS, BSD)")
    try:
        guard = _reuse_port_socket(config.host, config.port)  # holds the port, never listens
    except OSError as exc:
        raise InputError(f"cannot bind {config.host}:{config.port}: {exc}") from None
    ctx = multiprocessing.get_context("spawn")
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs: list[tuple[Any, float]] = []
    quick_deaths = 0
    try:
        while not stop:
            alive = []
            for p, started in procs:
                if p.is_alive():
                    alive.append((p, started))
                elif time.monotonic() - started < 10:
                    quick_deaths += 1
            if quick_deaths > 2 * workers:
                raise InputError("the worker processes keep exiting at start-up; see the log")
            procs = alive
            while len(procs) < workers and not stop:
                p = ctx.Process(target=_worker_main, args=(config,), daemon=False)
                p.start()
                procs.append((p, time.monotonic()))
            procs[0][0].join(0.5)
    finally:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            p.join(15)
            if p.is_alive():
                p.kill()
        guard.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# a server in a subprocess, for tests and benchmarks
# ---------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _fd_limiter(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@contextlib.contextmanager
def server_process(
    model_path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
    timeout: float = 60.0,
    log_path: str | os.PathLike[str] | None = None,
    fd_limit: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``edgekit serve MODEL`` in a subprocess on a free port; yields its base URL.

    Waits until ``GET /health`` answers (up to ``timeout`` seconds, default 60) and stops the
    server on exit. ``args`` are extra ``edgekit serve`` options (e.g. ``["--workers", "2"]``;
    with ``--ssl-certfile`` the URL is ``https://``). ``log_path`` keeps the server's output
    (default: a temporary file); ``fd_limit`` sets its open-file limit (soft and hard, as
    ``ulimit -n``); ``env`` adds environment variables.
    """
    port = port or free_port(host)
    tls = "--ssl-certfile" in args
    url = f"{'https' if tls else 'http'}://{host}:{port}"
    context = ssl._create_unverified_context() if tls else None  # our own test certificate
    cmd = [sys.executable, "-m", "edgekit.cli", "serve", str(model_path)]
    cmd += ["--host", host, "--port", str(port), "--log-level", "warning", *args]
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log: Any = stack.enter_context(tempfile.TemporaryFile())
        else:
            log = stack.enter_context(open(log_path, "w+b"))
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_fd_limiter(fd_limit) if fd_limit else None,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited ({proc.returncode}): {log.read().decode()}")
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2, context=context) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not answer /health within {timeout} s")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
