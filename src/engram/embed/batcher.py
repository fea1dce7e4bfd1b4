"""Async micro-batching: concurrent requests share one batched call of a sync embedder."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from engram.errors import EmbeddingError

if TYPE_CHECKING:
    from engram.embed import Embedder

__all__ = ["BatchingEmbedder"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    texts: list[str]
    future: asyncio.Future[NDArray[np.float32]]
    wait: bool = True


class BatchingEmbedder:
    """Coalesces concurrent callers' texts into batches run on one worker thread."""

    # The first request after an idle spell waits up to max_wait_s for company; requests
    # that arrive while the model is busy join the next batch at once. A batch holds at most
    # max_batch texts, except that a single larger request runs whole. The embedder stays
    # its creator's to close.

    def __init__(
        self, embedder: Embedder, *, max_batch: int = 64, max_wait_s: float = 0.002
    ) -> None:
        self.embedder = embedder
        self.id = embedder.id
        self.dimensions = embedder.dimensions
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._pending: list[_Request] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="engram-embed-batch")
        self._closed = False

    async def embed(self, texts: Sequence[str], *, wait: bool = True) -> NDArray[np.float32]:
        """Return one row per text, computed in a batch shared with concurrent callers.

        ``wait=False``: a caller with a batch of its own (an extraction job) does not wait
        for company after an idle spell; it still joins a batch that is forming."""
        if self._closed:
            raise EmbeddingError("the embedder is closed", hint="the server is shutting down")
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        loop = asyncio.get_running_loop()
        worker = self._worker
        if worker is None or worker.done() or worker.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="engram-embed-batcher")
        assert self._wakeup is not None
        request = _Request(list(texts), loop.create_future(), wait)
        self._pending.append(request)
        self._wakeup.set()
        return await request.future

    async def aclose(self) -> None:
        """Fail waiting callers and stop the worker thread (the embedder stays open)."""
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is not None and not worker.done():
            worker.cancel()
            if worker.get_loop() is asyncio.get_running_loop():
                await asyncio.gather(worker, return_exceptions=True)
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(EmbeddingError("the embedder was closed"))
        self._pending.clear()
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                if self._queued() < self._max_batch and all(r.wait for r in self._pending):
                    await asyncio.sleep(self._max_wait_s)  # let concurrent callers join
            await self._process(self._take())

    def _queued(self) -> int:
        return sum(len(r.texts) for r in self._pending)

    def _take(self) -> list[_Request]:
        """Pop the oldest requests that fit in one batch (at least one)."""
        count, taken = 0, 0
        for request in self._pending:
            if taken and count + len(request.texts) > self._max_batch:
                break
            count += len(request.texts)
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    async def _process(self, batch: list[_Request]) -> None:
        texts = [t for r in batch for t in r.texts]
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(self._executor, self.embedder.embed, texts)
        except asyncio.CancelledError:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(EmbeddingError("the embedder was closed"))
            raise
        except Exception as exc:
            self._fail(batch, exc)
            return
        if vectors.shape != (len(texts), self.dimensions):
            self._fail(
                batch,
                EmbeddingError(
                    f"embedder {self.id} returned shape {vectors.shape} for {len(texts)} texts, "
                    f"expected ({len(texts)}, {self.dimensions})"
                ),
            )
            return
        start = 0
        for request in batch:
            stop = start + len(request.texts)
            if not request.future.done():  # the caller may have gone away
                request.future.set_result(vectors[start:stop].copy())
            start = stop

    def _fail(self, batch: list[_Request], exc: Exception) -> None:
        logger.warning("embedding a batch of %d requests failed: %s", len(batch), exc)
        for request in batch:
            if not request.future.done():
                request.future.set_exception(_as_embedding_error(exc))


def _as_embedding_error(exc: Exception) -> EmbeddingError:
    """A fresh error per caller (one exception object must not be raised in many tasks)."""
    if isinstance(exc, EmbeddingError):
        error = EmbeddingError(exc.message, hint=exc.hint)
    else:
        error = EmbeddingError(f"embedding failed: {exc}", hint="see the server log")
    error.__cause__ = exc
    return error
