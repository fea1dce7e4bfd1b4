"""Keep the embedded PostgreSQL running under `engram serve`.

A task checks every few seconds that the postmaster lives and starts it again when it
died (killed, OOM). Meanwhile ``down`` is true, so that requests are refused at once
with a 503 to retry; ``healthy`` turns false after several failed restarts in a row, so
that /healthz fails and Kubernetes restarts the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from engram.errors import EngramError
from engram.store.embedded import EmbeddedPostgres

__all__ = ["Watchdog"]

logger = logging.getLogger(__name__)


class Watchdog:
    """Restart ``pg`` when it dies; ``reconnect`` runs after each restart."""

    def __init__(
        self,
        pg: EmbeddedPostgres,
        *,
        interval_s: float,
        unhealthy_after: int,
        reconnect: Callable[[], Awaitable[None]],
    ) -> None:
        self.pg = pg
        self.interval_s = interval_s
        self.unhealthy_after = unhealthy_after
        self._reconnect = reconnect
        self.down = False
        self.failures = 0  # failed restarts in a row
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        return self.failures < self.unhealthy_after

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engram-postgres-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.down and self.pg.alive():
                continue
            if not self.down:
                logger.error(
                    "embedded PostgreSQL in %s is not running; restarting it", self.pg.pgdata
                )
                self.down = True
            try:
                await asyncio.to_thread(self.pg.restart)
                await self._reconnect()
            except EngramError as exc:
                self.failures += 1
                self.last_error = str(exc)
                logger.error(
                    "restarting embedded PostgreSQL failed (%d in a row): %s", self.failures, exc
                )
                continue
            logger.warning(
                "embedded PostgreSQL restarted (%d failed attempts before)", self.failures
            )
            self.down, self.failures, self.last_error = False, 0, ""
