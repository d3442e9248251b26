"""What the route handlers of one served model share: the model, settings, metrics and
micro-batchers, and the reading of request bodies under the size limit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from edgekit.errors import require
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.proof import mixes_batch
from edgekit.serve.batching import MicroBatcher
from edgekit.serve.config import ServeConfig
from edgekit.serve.metrics import Metrics
from edgekit.serve.responses import HTTPError, header
from edgekit.serve.v2 import default_model_name

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.types import Receive, Scope

__all__ = ["Service", "Decoded", "RunFn"]

logger = logging.getLogger("edgekit.serve")

_INLINE_BYTES = 64 * 1024  # bodies up to this size are decoded on the event loop

#: runs the model on named feeds, one array per output
RunFn = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]


class Decoded(Protocol):
    """A decoded request: the model's feeds (and whatever else its route needs)."""

    feeds: dict[str, np.ndarray]


RequestT = TypeVar("RequestT", bound=Decoded)


class Service:
    """The state the handlers of one served model share (model, settings, metrics,
    micro-batchers) and the request-body reading they have in common."""

    def __init__(self, em: EdgeModel, cfg: ServeConfig) -> None:
        concurrency: Any = require("starlette.concurrency", "serve")
        responses: Any = require("starlette.responses", "serve")
        self.em, self.cfg = em, cfg
        # a package is served under its folder's name, whichever variant this machine runs
        self.name = cfg.model_name or default_model_name(
            em.package.package.root if em.package else em.path)
        self.metrics = Metrics()
        self.JSONResponse, self.Response = responses.JSONResponse, responses.Response
        self.run_in_threadpool = concurrency.run_in_threadpool
        self.max_body, self.max_batch = cfg.max_body_bytes, cfg.max_batch
        self.batchers: list[MicroBatcher] = []
        self.unbatched = False  # batching asked for a file whose outputs mix the batch

    def batcher(self, fn: RunFn) -> MicroBatcher | None:
        """A micro-batcher running ``fn`` when the config batches, else None; never for a
        file whose outputs mix the batch (merged requests would change each other's
        answers), which the log says once."""
        if not self.cfg.batching:
            return None
        if mixes_batch(self.em.engine.props):
            if not self.unbatched:
                logger.warning("%s: requests are not merged (--batching ignored): its "
                               "outputs are not per-sample, they mix the batch", self.name)
            self.unbatched = True
            return None
        b = MicroBatcher(fn, self.cfg.max_batch, self.cfg.max_delay_ms / 1000.0,
                         self.metrics.batch.observe)
        self.batchers.append(b)
        return b

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Warm the model up (``cfg.warmup``) before serving; stop the batchers after."""
        if self.cfg.warmup:
            await self.run_in_threadpool(self.em.warmup)
        try:
            yield
        finally:
            for b in self.batchers:
                b.close()

    def error(self, status: int, message: str, hint: str | None = None,
              **headers: str) -> JSONResponse:  # fmt: skip
        """A JSON error response (routes served by Starlette)."""
        response: JSONResponse = self.JSONResponse(
            {"error": message, "hint": hint}, status_code=status, headers=headers)
        return response

    def check_batch(self, feeds: dict[str, np.ndarray]) -> None:
        """413 for a batch over ``max_batch`` samples."""
        n = max((len(v) for v in feeds.values() if v.ndim), default=1)
        if n > self.max_batch:
            raise HTTPError(413, f"batch of {n} samples is over the limit of {self.max_batch}")

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The request body, refused (413) past ``max_body_bytes`` before it is all read."""
        max_body = self.max_body
        length = header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                raise HTTPError(400, "invalid Content-Length header")
            if int(length) > max_body:
                raise HTTPError(413, f"request body is over the limit of {max_body} bytes",
                                close=True)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise HTTPError(400, "the client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise HTTPError(413, f"request body is over the limit of {max_body} bytes",
                                close=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def parse(self, scope: Scope, receive: Receive,
                    decode: Callable[..., RequestT], *args: object) -> RequestT:
        """Read and decode a body: small ones on the event loop (no thread hand-off, no GIL
        contention with the loop), large ones in the thread pool."""
        body = await self.read_body(scope, receive)
        if len(body) <= _INLINE_BYTES:
            return decode(body, *args)
        decoded: RequestT = await self.run_in_threadpool(decode, body, *args)
        return decoded

    async def decode_and_run(
        self,
        scope: Scope,
        receive: Receive,
        decode: Callable[..., RequestT],
        fn: RunFn,
        batcher: MicroBatcher | None,
        *args: object,
    ) -> tuple[RequestT, Sequence[np.ndarray]]:
        """Decode the body into a request with ``feeds``, then run ``fn`` on them: in the
        thread pool, or merged with other requests by ``batcher``."""
        if batcher is None:
            req = await self.parse(scope, receive, decode, *args)
            return req, await self.run_in_threadpool(fn, req.feeds)
        with batcher.arrival():
            req = await self.parse(scope, receive, decode, *args)
        return req, await batcher.submit(req.feeds)
