"""What the jobs use of the process that runs them: an `engram.runtime.Runtime`.

The runtime builds the queue (it imports `engram.jobs`), so the jobs name what they
need of it here rather than import it.
"""

from __future__ import annotations

from typing import Protocol

import procrastinate

from engram.config import Settings
from engram.crypto.protect import Keyrings, Protector
from engram.embed.batcher import BatchingEmbedder
from engram.extract import Extractor
from engram.metrics.registry import Metrics
from engram.store.db import Database
from engram.store.keys import KeyPool

__all__ = ["JobDeps"]


class JobDeps(Protocol):
    """The settings, pools, models and keys a job runs with (None until opened)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def db(self) -> Database | None: ...
    @property
    def batcher(self) -> BatchingEmbedder | None: ...
    @property
    def extractor(self) -> Extractor: ...
    @property
    def protector(self) -> Protector: ...
    @property
    def key_pool(self) -> KeyPool | None: ...
    @property
    def keyrings(self) -> Keyrings | None: ...
    @property
    def queue(self) -> procrastinate.App | None: ...
    @property
    def metrics(self) -> Metrics: ...

    async def tenants(self) -> list[str]:
        """The tenants this deployment serves."""
        ...
