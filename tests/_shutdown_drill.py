"""A shutdown drill: ``edgekit serve`` under keep-alive load gets SIGTERM; what became of each
request, and how long the server took to exit.

Shared by ``tests/test_serve_shutdown.py`` (a few runs) and ``benchmarks/serve_shutdown.py``
(30 runs). Clients (asyncio, raw sockets, in a thread of this process) post ``/predict``
requests back to back on keep-alive connections; each client opens a fresh connection every
``rotate`` requests, so new connections keep arriving too, and keeps using a connection for as
long as the server keeps it open. SIGTERM goes to the server (the process that
:func:`edgekit.serve.server_process` started); clients keep posting, reconnecting when a
connection is closed, until connections are refused.

A request counts as **accepted** when the server sent any byte of a response; or when it was
sent in full before the SIGTERM on a connection that had already been answered (the server was
reading that connection; the request was in its socket buffer before shutdown began); or when
it was sent on a connection whose previous response kept it alive more than :data:`LATE`
seconds after the SIGTERM (the server was plainly still taking requests on it). It is
**answered** when its response arrived complete. Any other request the server closed without a
byte of response was **refused** (it raced the closing of an idle connection or of the
listening socket).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.serve import server_process

__all__ = ["DrillResult", "drill"]

_BODY = json.dumps({"inputs": [[0] * 28] * 28}).encode()
#: seconds after the SIGTERM by which every worker has begun to shut down, on a busy machine too
LATE = 3.0
_READ_TIMEOUT = 40.0  # longer than any exit: the server's end closes every connection first


@dataclass
class DrillResult:
    """One drill: counts of requests (see the module docstring) and the server's exit time."""

    exit_s: float
    accepted: int = 0
    answered: int = 0
    refused: int = 0
    before_sigterm: int = 0
    marked_close: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def unanswered(self) -> int:
        return self.accepted - self.answered

    def to_dict(self) -> dict[str, Any]:
        return {"exit_s": round(self.exit_s, 3), "accepted": self.accepted,
                "answered": self.answered, "unanswered": self.unanswered,
                "refused": self.refused, "answered_before_sigterm": self.before_sigterm,
                "marked_close": self.marked_close,
                "failures": self.failures[:10]}  # fmt: skip


class _Load:
    """The clients: a thread running an asyncio loop; :meth:`result` joins it."""

    def __init__(self, port: int, clients: int, rotate: int, arrival_s: float) -> None:
        self.port, self.clients, self.rotate, self.arrival_s = port, clients, rotate, arrival_s
        self.refused = threading.Event()
        self.sigterm_at: float | None = None  # monotonic time of the SIGTERM
        self.answered = 0
        self.records: list[tuple[str, str]] = []  # (outcome, detail)
        self.stop = threading.Event()
        self.request = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(_BODY)}\r\n\r\n"
        ).encode() + _BODY
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        tasks = [asyncio.ensure_future(self._client()) for _ in range(self.clients)]
        while not self._after_sigterm():
            await asyncio.sleep(0.01)
        while not self.refused.is_set() and not self.stop.is_set():
            tasks.append(asyncio.ensure_future(self._client()))  # new clients keep arriving
            await asyncio.sleep(self.arrival_s)
        await asyncio.gather(*tasks)

    def _after_sigterm(self) -> bool:
        return self.sigterm_at is not None

    async def _client(self) -> None:
        refused_since: float | None = None
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if not self._after_sigterm():
                    self.records.append(("failure", "connection refused before SIGTERM"))
                    return
                self.refused.set()
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since > 2.0:
                    return  # refused for good: the server is gone
                await asyncio.sleep(0.01)
                continue
            refused_since = None
            rotate = self.rotate if not self._after_sigterm() else 0
            try:
                await self._post_until_closed(reader, writer, rotate)
            finally:
                writer.close()

    async def _post_until_closed(self, reader: Any, writer: Any, rotate: int) -> None:
        served, invited = 0, False
        while not self.stop.is_set():
            try:
                writer.write(self.request)
                await writer.drain()
            except OSError:
                self._record_silent(invited)
                return
            sent_before = not self._after_sigterm()
            outcome = await self._read_response(reader)
            if outcome is None:
                self._record_silent(invited or (served > 0 and sent_before))
                return
            complete, keep_alive = outcome
            if not complete:
                self.records.append(("unanswered", "a response cut short"))
                return
            self.answered += 1
            self.records.append(("answered", "before" if sent_before else "after"))
            if not keep_alive:
                self.records.append(("close", ""))
            served += 1
            t0 = self.sigterm_at
            invited = keep_alive and t0 is not None and time.monotonic() - t0 > LATE
            if not keep_alive or served == rotate:
                return

    def _record_silent(self, accepted: bool) -> None:
        """A request closed without a byte of response: unanswered when it was accepted (see
        the module docstring), else refused."""
        if accepted:
            self.records.append(("unanswered", "no response to an accepted request"))
        else:
            self.records.append(("refused", ""))

    async def _read_response(self, reader: Any) -> tuple[bool, bool] | None:
        """(complete, keep-alive) of one response; None when the connection closed first."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            return (False, False) if exc.partial else None
        except (TimeoutError, OSError):
            return None
        headers = head.decode("latin-1").lower()
        length = 0
        for line in headers.split("\r\n")[1:]:
            if line.startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        try:
            await asyncio.wait_for(reader.readexactly(length), _READ_TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            return False, False
        return True, "connection: close" not in headers


def drill(
    model: str | os.PathLike[str],
    *,
    workers: int = 2,
    clients: int = 16,
    rotate: int = 3,
    arrival_s: float = 0.002,
    load_s: float = 1.5,
    log_path: str | os.PathLike[str] | None = None,
) -> DrillResult:
    """Serve ``model`` with ``workers`` processes, load it with ``clients`` keep-alive clients
    (a fresh connection every ``rotate`` requests) for ``load_s`` seconds, send SIGTERM while
    they keep posting; returns what became of the requests and the seconds to exit."""
    args = ["--workers", str(workers)]
    with server_process(model, args=args, log_path=log_path) as url:
        time.sleep(1.0)  # /health answered by one worker: let the others finish loading
        load = _Load(int(url.rsplit(":", 1)[1]), clients, rotate, arrival_s)
        load.thread.start()
        deadline = time.monotonic() + load_s
        while time.monotonic() < deadline or load.answered < 10 * clients:
            if time.monotonic() > deadline + 30:
                break
            time.sleep(0.05)
        load.sigterm_at = t0 = time.monotonic()
        # leaving the block: SIGTERM, then wait for the server to exit (killed after 15 s)
    exit_s = time.monotonic() - t0
    load.thread.join(_READ_TIMEOUT + 10)
    load.stop.set()
    return _tally(load, exit_s)


def _tally(load: _Load, exit_s: float) -> DrillResult:
    result = DrillResult(exit_s=exit_s)
    for outcome, detail in load.records:
        if outcome == "answered":
            result.accepted += 1
            result.answered += 1
            result.before_sigterm += detail == "before"
        elif outcome == "unanswered":
            result.accepted += 1
            result.failures.append(detail)
        elif outcome == "refused":
            result.refused += 1
        elif outcome == "close":
            result.marked_close += 1
        else:
            result.failures.append(detail)
    if load.thread.is_alive():
        result.failures.append("clients still waiting for answers")
    return result


if __name__ == "__main__":  # a quick look: python tests/_shutdown_drill.py MODEL.onnx [RUNS]
    import sys

    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        print(drill(Path(sys.argv[1])).to_dict(), flush=True)
