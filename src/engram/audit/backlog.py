"""Audit records that could not be written when their request was answered.

The API writes a request's record as the response starts, in a transaction of its own.
When that fails (the database refused or was unreachable, retries included), the
record is kept here and written later, with ``"late": true`` in its details and its
original time, by the same task that writes the anonymous-request summaries; the
server log has a line for it at once. At most ``limit`` records wait: past that, the
oldest are dropped (each already logged, and counted).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engram.audit.log import record_now
from engram.store.db import Database

__all__ = ["Backlog", "Delayed"]

logger = logging.getLogger(__name__)


@dataclass
class Delayed:
    """A record not written yet: its tenant and the arguments of ``record()``."""

    tenant: str
    fields: dict[str, Any]


class Backlog:
    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._waiting: deque[Delayed] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, tenant: str, fields: dict[str, Any]) -> None:
        if len(self._waiting) >= self.limit:
            self._waiting.popleft()
            self.dropped += 1
        details = {**(fields.get("details") or {}), "late": True}
        self._waiting.append(Delayed(tenant, {**fields, "details": details}))

    async def write(
        self, db: Database, appended: Callable[[str, int, str], None] | None = None
    ) -> int:
        """Write the waiting records in order until one fails; return how many were
        written. ``appended(tenant, seq, hash)`` is told of each."""
        done = 0
        while self._waiting:
            item = self._waiting[0]
            try:
                seq, digest = await record_now(db, item.tenant, **item.fields)
            except Exception as exc:  # kept: the next round tries again
                logger.debug("audit backlog still not writable: %s", type(exc).__name__)
                break
            self._waiting.popleft()
            done += 1
            if appended is not None:
                appended(item.tenant, seq, digest)
        if done:
            logger.warning("wrote %d delayed audit record(s) (marked late)", done)
        return done
