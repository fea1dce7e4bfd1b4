from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from engram.embed import BatchingEmbedder
from engram.embed.local import LocalEmbedder
from engram.errors import EmbeddingError


def vector(text: str) -> NDArray[np.float32]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEmbedder:
    """Deterministic vectors per text; records the batches it was called with."""

    id = "fake/8"
    dimensions = 8

    def __init__(
        self, delay_s: float = 0.0, fail: Exception | None = None, rows: int | None = None
    ) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()
        self.delay_s = delay_s
        self.fail = fail
        self.rows = rows

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        out = np.stack([vector(t) for t in texts])
        return out[: self.rows] if self.rows is not None else out

    def close(self) -> None:
        pass


async def gather_requests(
    batcher: BatchingEmbedder, requests: list[list[str]]
) -> list[NDArray[np.float32]]:
    return list(await asyncio.gather(*(batcher.embed(r) for r in requests)))


def requests_of(n: int, size: int) -> list[list[str]]:
    return [[f"caller {i} text {j}" for j in range(size)] for i in range(n)]


def test_concurrent_callers_share_batches_and_get_their_own_rows() -> None:
    fake = FakeEmbedder(delay_s=0.01)
    requests = requests_of(12, 3)

    async def main() -> list[NDArray[np.float32]]:
        batcher = BatchingEmbedder(fake, max_batch=64)
        try:
            return await gather_requests(batcher, requests)
        finally:
            await batcher.aclose()

    results = asyncio.run(main())
    for texts, got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, np.stack([vector(t) for t in texts]))
    assert len(fake.calls) < len(requests)  # coalesced
    assert sorted(t for call in fake.calls for t in call) == sorted(t for r in requests for t in r)
    assert len(fake.threads) == 1  # one worker thread, off the event loop


def test_batches_respect_max_batch_but_a_big_request_runs_whole() -> None:
    fake = FakeEmbedder(delay_s=0.005)
    requests = [*requests_of(10, 4), [f"big {j}" for j in range(25)]]

    async def main() -> None:
        batcher = BatchingEmbedder(fake, max_batch=10)
        await gather_requests(batcher, requests)
        await batcher.aclose()

    asyncio.run(main())
    assert all(len(c) <= 10 or len(c) == 25 for c in fake.calls)
    assert [f"big {j}" for j in range(25)] in fake.calls


def test_a_lone_caller_is_not_kept_waiting() -> None:
    async def main() -> float:
        batcher = BatchingEmbedder(FakeEmbedder(), max_wait_s=0.002)
        await batcher.embed(["warm up"])
        start = time.perf_counter()
        await batcher.embed(["alone"])
        elapsed = time.perf_counter() - start
        await batcher.aclose()
        return elapsed

    assert asyncio.run(main()) < 0.05


def test_empty_request_needs_no_model_call() -> None:
    fake = FakeEmbedder()

    async def main() -> NDArray[np.float32]:
        batcher = BatchingEmbedder(fake)
        try:
            return await batcher.embed([])
        finally:
            await batcher.aclose()

    assert asyncio.run(main()).shape == (0, 8)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("fail", "rows", "message"),
    [
        (EmbeddingError("endpoint down", hint="retry later"), None, "endpoint down"),
        (RuntimeError("onnx exploded"), None, "embedding failed: onnx exploded"),
        (None, 1, "returned shape"),
    ],
)
def test_errors_reach_every_caller_as_embedding_error(
    fail: Exception | None, rows: int | None, message: str
) -> None:
    async def main() -> list[BaseException | NDArray[np.float32]]:
        batcher = BatchingEmbedder(FakeEmbedder(delay_s=0.01, fail=fail, rows=rows))
        try:
            return await asyncio.gather(
                *(batcher.embed(r) for r in requests_of(4, 2)), return_exceptions=True
            )
        finally:
            await batcher.aclose()

    results = asyncio.run(main())
    assert all(isinstance(r, EmbeddingError) and message in str(r) for r in results)


def test_the_batcher_keeps_working_after_a_failed_batch() -> None:
    fake = FakeEmbedder(fail=RuntimeError("transient"))

    async def main() -> NDArray[np.float32]:
        batcher = BatchingEmbedder(fake)
        with pytest.raises(EmbeddingError):
            await batcher.embed(["first"])
        fake.fail = None
        try:
            return await batcher.embed(["second"])
        finally:
            await batcher.aclose()

    np.testing.assert_array_equal(asyncio.run(main()), vector("second")[None, :])


def test_closing_fails_waiting_callers_and_later_calls() -> None:
    async def main() -> None:
        batcher = BatchingEmbedder(FakeEmbedder(delay_s=0.2))
        first = asyncio.ensure_future(batcher.embed(["slow"]))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.embed(["queued"]))
        await asyncio.sleep(0)
        await batcher.aclose()
        for task in (first, queued):
            with pytest.raises(EmbeddingError, match="closed"):
                await task
        with pytest.raises(EmbeddingError, match="closed"):
            await batcher.embed(["late"])

    asyncio.run(main())


def test_real_model_concurrent_callers_match_direct_embedding(
    local_embedder: LocalEmbedder,
) -> None:
    requests = [
        [
            f"Message {i}.{j}: we talked about {'hiking ' * (i % 5)}plans for June."
            for j in range(1 + i % 4)
        ]
        for i in range(16)
    ]

    async def main() -> list[NDArray[np.float32]]:
        batcher = BatchingEmbedder(local_embedder, max_batch=16)
        try:
            return await gather_requests(batcher, requests)
        finally:
            await batcher.aclose()

    for texts, got in zip(requests, asyncio.run(main()), strict=True):
        np.testing.assert_allclose(got, local_embedder.embed(texts), atol=1e-6)


def test_the_batcher_follows_a_new_event_loop() -> None:
    batcher = BatchingEmbedder(FakeEmbedder())
    first = asyncio.run(batcher.embed(["a"]))
    second = asyncio.run(batcher.embed(["b"]))
    asyncio.run(batcher.aclose())
    np.testing.assert_array_equal(first[0], vector("a"))
    np.testing.assert_array_equal(second[0], vector("b"))


def test_a_caller_with_its_own_batch_does_not_wait_for_company() -> None:
    """An extraction job embeds its episode's texts at once, not max_wait_s later."""

    async def main() -> tuple[float, float, NDArray[np.float32]]:
        batcher = BatchingEmbedder(FakeEmbedder(), max_batch=64, max_wait_s=0.5)
        try:
            start = time.perf_counter()
            out = await batcher.embed(["a name", "a fact"], wait=False)
            own = time.perf_counter() - start
            start = time.perf_counter()
            await batcher.embed(["a query"])  # a lone API request still waits for company
            return own, time.perf_counter() - start, out
        finally:
            await batcher.aclose()

    own, lone, out = asyncio.run(main())
    assert own < 0.25 and lone >= 0.45
    assert np.allclose(out[1], vector("a fact"))
