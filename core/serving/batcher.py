"""Micro-batching: the inputs of concurrent requests gathered into one forward pass.

On a CPU one forward of 16 images costs far less than 16 forwards of one (the weights are read
once, the kernels run wide), so a service that answers each request on its own wastes most of
its cores as soon as requests overlap. Each request puts its inputs on a queue and awaits a
future; one task takes the first waiting request, gathers whatever else arrives within
``max_wait_s`` until ``max_batch`` inputs are in hand, runs one forward in a worker thread (the
event loop keeps accepting and decoding meanwhile) and answers every request with its own rows.
Requests that arrive during a forward wait for the next one, so under load batches fill
without waiting at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Waiting:
    inputs: torch.Tensor
    answer: asyncio.Future[torch.Tensor]


@dataclass(frozen=True)
class BatchStats:
    """What the batcher has done since it started: how many forwards, over how many inputs."""

    batches: int
    inputs: int


class MicroBatcher:
    """Runs ``forward`` (``[N, ...]`` in, ``[N, ...]`` out, one row per input) over the inputs of
    the requests waiting, in the order they came, ``max_batch`` inputs at a time at most; a single
    request larger than that runs whole, alone (the service bounds images per request)."""

    def __init__(self, forward: Forward, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(
                f"max_batch must be at least 1 and max_wait_s at least 0, not {max_batch}, {max_wait_s}"
            )
        self.forward, self.max_batch, self.max_wait_s = forward, max_batch, max_wait_s
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._held: _Waiting | None = None  # came too late to fit the last batch: opens the next
        self._batches = self._inputs = 0

    @property
    def stats(self) -> BatchStats:
        return BatchStats(self._batches, self._inputs)

    async def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """``forward(inputs)``, computed in one batch with the other requests waiting now."""
        answer: asyncio.Future[torch.Tensor] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(inputs, answer))
        return await answer

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MicroBatcher]:
        """The batcher serving requests for the life of the block (the application's lifespan)."""
        task = asyncio.create_task(self._serve())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self) -> None:
        while True:
            batch = await self._gather()
            try:
                outputs = await asyncio.to_thread(self.forward, torch.cat([w.inputs for w in batch]))
            except Exception as exc:  # noqa: BLE001 - each request gets the failure, the loop goes on
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(exc)
                continue
            self._batches += 1
            self._inputs += len(outputs)
            rows = outputs.split([len(w.inputs) for w in batch])
            for waiting, answer in zip(batch, rows, strict=True):
                if not waiting.answer.done():  # its client may have gone
                    waiting.answer.set_result(answer)

    async def _gather(self) -> list[_Waiting]:
        """The first waiting request and those that join it within ``max_wait_s``, up to
        ``max_batch`` inputs; a request that would overflow the batch opens the next one."""
        first, self._held = self._held or await self._queue.get(), None
        batch, size = [first], len(first.inputs)
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while size < self.max_batch and (waiting := await self._next_before(deadline)) is not None:
            if size + len(waiting.inputs) > self.max_batch:
                self._held = waiting
                break
            batch.append(waiting)
            size += len(waiting.inputs)
        return batch

    async def _next_before(self, deadline: float) -> _Waiting | None:
        """The next waiting request: at once if one is queued, else the first to come before
        ``deadline`` (None if none does)."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), left)
        except TimeoutError:
            return None
