"""Key jobs: start a re-encryption run, and rotate the keys that are due (periodic)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from engram.crypto import rotation
from engram.jobs.deps import JobDeps
from engram.jobs.tasks import MAINTENANCE_QUEUE, REENCRYPT_TASK
from engram.store import keys

__all__ = ["rotate_due", "start_reencrypt"]

logger = logging.getLogger(__name__)


async def start_reencrypt(runtime: JobDeps, tenant: str) -> int:
    """Record a re-encryption run of `tenant` and queue it; returns the run id."""
    pool, queue = runtime.key_pool, runtime.queue
    assert pool is not None and queue is not None

    def create() -> int:
        with pool.tenant(tenant) as conn:
            return keys.start_run(conn)

    run_id = await asyncio.to_thread(create)
    await queue.configure_task(REENCRYPT_TASK, queue=MAINTENANCE_QUEUE).defer_async(
        tenant_id=tenant, run_id=run_id
    )
    return run_id


async def rotate_due(runtime: JobDeps, timestamp: int) -> list[str]:
    """Rotate (and re-encrypt) each tenant whose primary keys are older than configured."""
    every = runtime.settings.crypto.rotate_every_days
    if not every or runtime.keyrings is None:
        return []
    now = datetime.fromtimestamp(timestamp, UTC)
    rotated = []
    for tenant in await runtime.tenants():
        age = await asyncio.to_thread(rotation.primary_age_days, runtime.keyrings, tenant, now)
        if age is None or age < every:
            continue
        try:
            await asyncio.to_thread(rotation.rotate_data_keys, runtime.keyrings, tenant)
            await start_reencrypt(runtime, tenant)
        except Exception:
            runtime.metrics.key_rotations.labels(operation="rotate", outcome="failed").inc()
            logger.exception("scheduled rotation of tenant %s failed", tenant)
            continue
        runtime.metrics.key_rotations.labels(operation="rotate", outcome="ok").inc()
        rotated.append(tenant)
    return rotated
