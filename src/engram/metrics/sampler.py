"""The background task that samples database figures for /metrics.

It holds one connection of its own (not one of the pool's, so a busy pool never delays
it and it never takes a request's connection), reads the statistics views every
``metrics.sample_interval_s`` seconds, and reconnects after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from engram.metrics.registry import Metrics
from engram.store.stats import encryption_coverage, read_health_bounded, reencrypt_runs

__all__ = ["Sampler"]

logger = logging.getLogger(__name__)


class Sampler:
    """Sample now, then every ``interval`` seconds, until stopped."""

    def __init__(
        self,
        dsn: str,
        metrics: Metrics,
        interval: float,
        tenants: Callable[[], Awaitable[list[str]]] | None = None,
        protected_levels: list[int] | None = None,
        *,
        prepare_threshold: int | None = 5,
    ) -> None:
        self.dsn = dsn
        self.tenants = tenants
        self.protected_levels = protected_levels or []
        self.prepare_threshold = prepare_threshold
        self.metrics = metrics
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engram-metrics-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    async def sample(self) -> None:
        """Take one sample (connecting first if needed)."""
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=5, application_name="engram-metrics",
                prepare_threshold=self.prepare_threshold,
            )  # fmt: skip
        health = await read_health_bounded(self._conn)
        self.metrics.observe_health(health, time.time())
        if self.protected_levels and self.tenants is not None:
            names = await self.tenants()
            protected = encrypted = 0
            for tenant in names:
                p, e = await encryption_coverage(self._conn, tenant, self.protected_levels)
                protected, encrypted = protected + p, encrypted + e
            self.metrics.encryption_coverage.set(encrypted / protected if protected else 1.0)
            runs = {"running": 0, "done": 0, "failed": 0}
            for tenant in names:
                for status, n in (await reencrypt_runs(self._conn, tenant)).items():
                    runs[status] = runs.get(status, 0) + n
            for status, n in runs.items():
                self.metrics.reencrypt_runs.labels(status=status).set(n)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
                if self._failing:
                    logger.info("database metrics sampling works again")
                self._failing = False
            except (psycopg.Error, OSError) as exc:
                self.metrics.sample_errors.inc()
                if not self._failing:  # say it once per outage, not every interval
                    logger.warning("cannot sample database metrics: %s", str(exc).strip())
                self._failing = True
                await self._disconnect()
            await asyncio.sleep(self.interval)

    async def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await self._conn.close()
            self._conn = None
