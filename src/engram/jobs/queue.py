"""The procrastinate job queue in Engram's own PostgreSQL, and the extraction worker."""

from __future__ import annotations

import logging
import uuid as uuidlib
from typing import Any

import procrastinate
from procrastinate import RetryStrategy

from engram.graph.ingest import GraphSettings, process_episode
from engram.store import episodes

__all__ = ["build_queue", "run_worker"]

logger = logging.getLogger(__name__)

# Exponential back-off: 2, 4, 8, 16 s; after the fifth failure the job stays failed
# (with its reason in `episodes.error`) until `engram jobs retry`.
RETRY = RetryStrategy(max_attempts=5, exponential_wait=2)


def build_queue(dsn: str, runtime: Any) -> procrastinate.App:
    """A procrastinate app whose extraction task uses the runtime's pool and models."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=episodes.TASK, queue=episodes.QUEUE, retry=RETRY, pass_context=True)
    async def extract_episode(
        context: procrastinate.JobContext, tenant_id: str, episode_uuid: str
    ) -> None:
        assert runtime.db is not None and runtime.batcher is not None
        episode = uuidlib.UUID(episode_uuid)
        try:
            outcome = await process_episode(
                runtime.db, runtime.batcher, runtime.extractor, tenant_id, episode,
                GraphSettings(
                    entity_threshold=runtime.settings.extractor.entity_threshold,
                    fact_threshold=runtime.settings.extractor.fact_threshold,
                    ts_config=runtime.settings.text_search_config,
                ),
            )  # fmt: skip
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            async with runtime.db.tenant(tenant_id) as conn:
                await episodes.mark_failed(conn, episode, reason)
            logger.warning("extraction of episode %s failed: %s", episode_uuid, reason)
            raise
        logger.debug("episode %s: %s", episode_uuid, outcome)

    return app


async def run_worker(app: procrastinate.App, concurrency: int = 1) -> None:
    """Process extraction jobs until cancelled (the app must be open)."""
    await app.run_worker_async(
        queues=[episodes.QUEUE], concurrency=concurrency, install_signal_handlers=False
    )
