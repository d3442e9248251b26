"""Dynamic micro-batching: concurrent requests merged into one model call.

Requests queue their model-ready feeds; one runner task takes everything queued (up to
``max_batch`` samples with the same per-sample shapes), waits up to ``max_delay`` seconds for
more *only while other requests are still arriving* (so a lone client pays no delay), runs the
model once in a dedicated thread and hands each request its rows. While a batch runs, the next
one fills up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]

BatchFn = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]


@dataclass
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[list[np.ndarray]] = field(repr=False)


class MicroBatcher:
    """Merge concurrent calls of ``fn`` (feeds -> outputs with the batch on axis 0).

    Args:
        fn: the model call, e.g. ``EdgeModel.run``; runs in one dedicated thread.
        max_batch: the most samples in one call; default 64.
        max_delay: seconds to wait for more requests while some are arriving; default 0.002.
        on_batch: called with each merged batch's sample count (metrics); default None.
    """

    def __init__(
        self,
        fn: BatchFn,
        max_batch: int = 64,
        max_delay: float = 0.002,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.fn, self.max_batch, self.max_delay, self.on_batch = fn, max_batch, max_delay, on_batch
        self.arriving = 0  # requests being read/parsed that will submit soon
        self._queue: list[_Item] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "edgekit-batch")

    @contextlib.contextmanager
    def arrival(self) -> Iterator[None]:
        """Mark a request as on its way (read and parsed inside the block, then submitted):
        a forming batch waits for arriving requests, up to ``max_delay``."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def submit(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Queue ``feeds`` (every input batched on axis 0) and wait for their outputs."""
        loop = asyncio.get_running_loop()
        rows = next(iter(feeds.values())).shape[0] if feeds else 1
        key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in feeds.items())
        item = _Item(feeds, rows, key, loop.create_future())
        self._queue.append(item)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run_forever())
        self._wake()
        return await item.future

    def close(self) -> None:
        """Stop the runner and its thread (pending requests get an error)."""
        if self._task is not None:
            self._task.cancel()
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=False)

    def _wake(self) -> None:
        w = self._wakeup
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._wakeup
            else:
                await asyncio.wait_for(self._wakeup, timeout)
        except TimeoutError:
            pass
        finally:
            self._wakeup = None

    def _take(self) -> list[_Item]:
        """The first queued item plus the queued items of the same shapes, up to max_batch."""
        first = self._queue[0]
        batch, rows, rest = [first], first.rows, []
        for item in self._queue[1:]:
            if item.key == first.key and rows + item.rows <= self.max_batch:
                batch.append(item)
                rows += item.rows
            else:
                rest.append(item)
        self._queue[:] = rest
        return batch

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                await self._wait(None)
                continue
            deadline = loop.time() + self.max_delay
            while self.arriving > 0 and sum(i.rows for i in self._queue) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await self._wait(remaining)
            batch = self._take()
            outs = await loop.run_in_executor(self._executor, self._call, batch)
            for item, out in zip(batch, outs, strict=True):
                if item.future.done():
                    continue
                if isinstance(out, Exception):
                    item.future.set_exception(out)
                else:
                    item.future.set_result(out)

    def _call(self, batch: list[_Item]) -> list[list[np.ndarray] | Exception]:
        """Run one merged call; split its outputs by rows (one call per item on a mismatch)."""
        total = sum(it.rows for it in batch)
        if self.on_batch is not None:
            self.on_batch(total)
        if len(batch) == 1:
            return [self._single(batch[0])]
        names = batch[0].feeds.keys()
        merged = {k: np.concatenate([it.feeds[k] for it in batch]) for k in names}
        try:
            outs = list(self.fn(merged))
        except Exception:  # one bad request must not fail the others: run them one by one
            return [self._single(it) for it in batch]
        if any(o.ndim == 0 or o.shape[0] != total for o in outs):
            return [self._single(it) for it in batch]
        bounds = np.cumsum([0] + [it.rows for it in batch])
        return [[o[a:b] for o in outs] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _single(self, item: _Item) -> list[np.ndarray] | Exception:
        try:
            return list(self.fn(item.feeds))
        except Exception as exc:
            return exc
