"""Micro-batching: concurrent requests to one model gathered into one batch, run off the event loop.

Each model has a :class:`Batcher`: requests wait in a bounded queue; one worker task takes the first, waits
at most ``max_wait_ms`` for more (up to ``max_batch``), groups them by operation (requests of one ``key`` —
the operation and its options, e.g. ``("caption", beam, length_penalty, max_len)`` — run together) and runs
each group as one call on the model's own thread under ``torch.inference_mode``. While a batch runs, new
requests queue up and form the next one, so under load batches fill without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from vislang.serve.errors import ApiError

#: ``run(key, items) -> results``: one batch of one operation; one result (or exception) per item.
RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


@dataclass
class _Request:
    key: Hashable
    item: Any
    future: asyncio.Future


class Batcher:
    """Gathers the requests of one model into batches.

    Args:
        name: The model's name (for metrics and messages).
        run: Runs one batch: ``run(key, items)`` returns one result per item, in order; an item's result may
            be an exception, raised to its request alone.
        max_batch: Most requests per batch.
        max_wait_ms: Longest wait for a batch to fill after its first request.
        queue_size: Requests allowed to wait; beyond it :meth:`submit` raises 503 ``busy``.
        on_batch: Called with ``(key, batch size)`` after each batch (metrics).
    """

    def __init__(self, name: str, run: RunBatch, *, max_batch: int, max_wait_ms: float, queue_size: int,
                 on_batch: Callable[[Hashable, int], None] | None = None):
        self.name, self.run = name, run
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")

    @property
    def depth(self) -> int:
        """Requests waiting."""
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop the worker; waiting requests fail with 503."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            req = self._queue.get_nowait()
            if not req.future.done():
                req.future.set_exception(ApiError(503, "the server is shutting down", "busy"))
        self._thread.shutdown(wait=True)

    async def submit(self, key: Hashable, item: Any, timeout_s: float) -> Any:
        """Queue one request and wait for its result.

        Raises:
            ApiError: 503 ``busy`` (queue full, with ``Retry-After``) or 504 ``timeout``.
        """
        if self._queue is None:
            raise ApiError(503, "the server is not ready", "not_ready")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Request(key, item, future))
        except asyncio.QueueFull:
            raise ApiError(503, f"model {self.name} is busy ({self.queue_size} requests waiting); retry shortly",
                           "busy", {"Retry-After": "1"}) from None
        try:
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:  # the worker skips a cancelled request that is still queued
            raise ApiError(504, f"no answer from model {self.name} within {timeout_s:g} s", "timeout") from None

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                wait = deadline - loop.time()
                if wait <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), wait))
                except asyncio.TimeoutError:
                    break
            groups: dict[Hashable, list[_Request]] = {}
            for req in batch:
                if not req.future.done():  # timed out while waiting
                    groups.setdefault(req.key, []).append(req)
            for key, reqs in groups.items():
                await self._run_group(loop, key, reqs)

    async def _run_group(self, loop: asyncio.AbstractEventLoop, key: Hashable, reqs: list[_Request]) -> None:
        try:
            results = await loop.run_in_executor(self._thread, _run_inference, self.run, key,
                                                 [r.item for r in reqs])
            if len(results) != len(reqs):
                raise RuntimeError(f"batch of {len(reqs)} gave {len(results)} results")
        except Exception as e:  # the whole batch failed: every request gets the error
            results = [e] * len(reqs)
        if self.on_batch is not None:
            self.on_batch(key, len(reqs))
        for req, res in zip(reqs, results):
            if req.future.done():
                continue
            if isinstance(res, BaseException):
                req.future.set_exception(res)
            else:
                req.future.set_result(res)


def _run_inference(run: RunBatch, key: Hashable, items: list[Any]) -> Sequence[Any]:
    with torch.inference_mode():
        return run(key, items)
