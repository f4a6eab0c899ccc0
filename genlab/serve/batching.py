"""Dynamic batching: concurrent requests merged into one model call.

One asyncio task takes requests from a queue. It starts a batch with the oldest request, waits
``timeout_s`` for more (not when enough are already waiting), then adds the waiting ones in
arrival order while the batch stays within ``max_batch`` records and the requests fit one call
(same sampler, same DDPM ``steps``); a request that does not fit waits for the next batch. The model call runs in one
worker thread, so the event loop keeps accepting requests meanwhile: under load the queue fills
while the model works and the next batch forms at once. ``max_batch=1`` serves one request per
call (an ``n > max_batch`` request always runs, alone).
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from genlab.serve.sampler import Draw

__all__ = ["Batcher", "BatchResult"]


@dataclass
class BatchResult:
    samples: torch.Tensor
    batch_size: int  # records in the model call this request joined


@dataclass
class _Item:
    sampler: object
    draw: Draw
    future: asyncio.Future = field(repr=False)

    def key(self) -> tuple:
        return id(self.sampler), self.draw.steps


class Batcher:
    def __init__(self, max_batch: int, timeout_s: float):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if timeout_s < 0:
            raise ValueError(f"batch timeout must be >= 0 seconds, got {timeout_s}")
        self.max_batch, self.timeout_s = int(max_batch), float(timeout_s)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._waiting: deque[_Item] = deque()  # taken from the queue, left for a later batch
        # torch's thread count is per OS thread under OpenMP: the model thread takes the
        # serving thread's (GENLAB_THREADS); left at the default it ran as many threads as cores
        # and, on a loaded machine, batched calls took 100× longer (measured)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="genlab-model",
                                        initializer=torch.set_num_threads,
                                        initargs=(torch.get_num_threads(),))
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="genlab-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, sampler, draw: Draw) -> BatchResult:
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(sampler, draw, future))
        return await future

    async def _gather(self) -> list[_Item]:
        first = self._waiting.popleft() if self._waiting else await self._queue.get()
        batch, records = [first], first.draw.n
        if not getattr(first.sampler, "batches", False) or records >= self.max_batch:
            return batch
        # wait once for the window unless enough requests already wait (each has n >= 1); a
        # plain sleep, not a timed queue.get: under a saturated loop, timed-out queue waits
        # held requests for up to two minutes (measured with the VAE at 320 requests/s)
        if self.timeout_s > 0 and self._queue.qsize() + len(self._waiting) < self.max_batch - records:
            await asyncio.sleep(self.timeout_s)
        later: deque[_Item] = deque()  # taken but not fitting: next batch, in arrival order
        while records < self.max_batch and (self._waiting or not self._queue.empty()):
            item = self._waiting.popleft() if self._waiting else self._queue.get_nowait()
            if item.key() == first.key() and records + item.draw.n <= self.max_batch:
                batch.append(item)
                records += item.draw.n
            else:
                later.append(item)
        later.extend(self._waiting)
        self._waiting = later
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [it for it in batch if not it.future.done()]  # a cancelled client is skipped
            if not live:
                continue
            sampler = live[0].sampler
            draws = [it.draw for it in live]
            try:
                outs = await loop.run_in_executor(self._pool, sampler.sample_many, draws)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            size = sum(d.n for d in draws)
            for it, out in zip(live, outs):
                if not it.future.done():
                    it.future.set_result(BatchResult(out, size))
