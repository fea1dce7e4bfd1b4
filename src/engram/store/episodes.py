"""Episodes: the messages added in one call, and the state of their extraction."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = [
    "Batch",
    "add",
    "errors_for",
    "finish_jobs",
    "load_batch",
    "mark_done",
    "mark_failed",
    "of_user",
    "reset",
]

QUEUE = "extract"
TASK = "engram.extract_episode"


async def add(
    conn: Conn,
    tenant: str,
    episode: uuidlib.UUID,
    user_id: str | None,
    session_id: str,
    message_uuids: list[uuidlib.UUID],
) -> None:
    """Record the episode and enqueue its extraction job in the caller's transaction."""
    await conn.execute(
        """INSERT INTO episodes (tenant_id, uuid, user_id, session_id, message_uuids)
           VALUES (%s, %s, %s, %s, %s)""",
        (tenant, episode, user_id, session_id, message_uuids),
    )
    if user_id is None:
        return  # a session without a user has no graph to extract into
    # procrastinate's own defer function, called inside this transaction: the job exists
    # if and only if the messages were stored. Jobs of one user share a lock, so a user's
    # episodes are extracted one at a time, in order.
    await conn.execute(
        """SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, %s, NULL, %s, NULL)
                  ::procrastinate_job_to_defer_v1])""",
        (
            QUEUE,
            TASK,
            f"{tenant}/{user_id}",
            Jsonb({"tenant_id": tenant, "episode_uuid": str(episode)}),
        ),
    )


@dataclass
class Batch:
    """Episodes of one user to extract together, locked, in the order their jobs run.

    ``episodes[0]`` is the job's own episode (None when it is gone); the rest follow it
    in its user's queue, each with the id of its job (``job_ids``)."""

    episodes: list[dict[str, Any]] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)
    messages: dict[uuidlib.UUID, list[dict[str, Any]]] = field(default_factory=dict)
    context: dict[uuidlib.UUID, list[dict[str, Any]]] = field(default_factory=dict)
    user: dict[str, Any] | None = None


async def load_batch(
    conn: Conn, episode: uuidlib.UUID, job_id: int | None, follow: int, context: int
) -> Batch:
    """Lock the episode and up to ``follow`` pending episodes whose jobs come next in the
    same user's queue; read their messages, the ``context`` messages before each, and the
    user's name, in two round trips. Each message comes with the `sensitivity` its
    metadata and its session's declare (`declared`, `session_declared`). (A job whose
    episode is gone is passed over: it will find nothing to do.)

    A user's jobs share a lock, so while this job runs no worker takes the ones after it;
    they are taken here only as long as they are due at once and their episodes pending,
    so the user's order holds. The transaction commits without waiting for the disk: the
    job queue records the job's end after it, durably, and that flush of the write-ahead
    log covers this commit too; a server crash in between loses both, and the job runs
    again."""
    batch = Batch()
    async with conn.pipeline():
        await conn.execute("SET LOCAL synchronous_commit = off")
        own = await conn.execute("SELECT * FROM episodes WHERE uuid = %s FOR UPDATE", (episode,))
        after = None
        if follow > 0 and job_id is not None:
            after = await conn.execute(
                """SELECT j.id AS job_id, j.scheduled_at <= now() IS NOT FALSE AS due, e.*
                   FROM procrastinate_jobs j
                   JOIN episodes e ON e.uuid = (j.args ->> 'episode_uuid')::uuid
                   WHERE j.lock = (SELECT tenant_id || '/' || user_id FROM episodes
                                   WHERE uuid = %(e)s)
                     AND j.status = 'todo' AND j.id > %(job)s
                     AND j.queue_name = %(queue)s AND j.task_name = %(task)s
                   ORDER BY j.id LIMIT %(n)s
                   FOR UPDATE OF j, e""",
                {"e": episode, "job": job_id, "queue": QUEUE, "task": TASK, "n": follow},
            )
    row = await own.fetchone()
    if row is None:
        return batch
    batch.episodes.append(row)
    for r in await after.fetchall() if after is not None else []:
        if not r["due"] or r["status"] != "pending" or r["user_id"] != row["user_id"]:
            break  # the next one must wait for its turn
        batch.job_ids.append(r.pop("job_id"))
        r.pop("due")
        batch.episodes.append(r)
    ids = [e["uuid"] for e in batch.episodes]
    async with conn.pipeline():
        msgs = await conn.execute(
            """SELECT e.uuid AS episode, m.uuid, m.role, m.role_type, m.content, m.content_enc,
                      m.sensitivity, m.created_at, m.seq,
                      m.metadata -> 'sensitivity' AS declared,
                      s.metadata -> 'sensitivity' AS session_declared
               FROM episodes e
               JOIN messages m ON m.uuid = ANY(e.message_uuids) AND m.episode_uuid = e.uuid
               JOIN sessions s ON s.session_id = e.session_id
               WHERE e.uuid = ANY(%s) ORDER BY m.seq""",
            (ids,),
        )
        user = await conn.execute(
            """SELECT first_name, last_name, first_name_enc, last_name_enc, profile_enc
               FROM users WHERE user_id = %s""",
            (row["user_id"],),
        )
        before = await conn.execute(
            """SELECT e.uuid AS episode, c.*
               FROM episodes e CROSS JOIN LATERAL (
                   SELECT uuid, role, role_type, content, content_enc, created_at, seq
                   FROM messages
                   WHERE session_id = e.session_id
                     AND seq < (SELECT min(seq) FROM messages
                                WHERE uuid = ANY(e.message_uuids) AND episode_uuid = e.uuid)
                   ORDER BY seq DESC LIMIT %s) c
               WHERE e.uuid = ANY(%s) ORDER BY c.seq""",
            (context, ids),
        )
    for uuid in ids:
        batch.messages[uuid], batch.context[uuid] = [], []
    for m in await msgs.fetchall():
        batch.messages[m.pop("episode")].append(m)
    batch.user = await user.fetchone()
    for m in await before.fetchall():
        batch.context[m.pop("episode")].append(m)
    return batch


async def finish_jobs(conn: Conn, job_ids: list[int]) -> None:
    """Mark the jobs of episodes extracted with another job's batch as succeeded, in
    that job's transaction (procrastinate's own function)."""
    if job_ids:
        await conn.execute(
            "SELECT procrastinate_finish_job_v1(id, 'succeeded', false)"
            " FROM unnest(%s::bigint[]) AS id",
            (job_ids,),
        )


# Token usage of every attempt is added up, so failed LLM calls are accounted for too.
_ADD_USAGE = sql.SQL("""usage = CASE WHEN %(usage)s::jsonb IS NULL THEN usage ELSE (
    SELECT jsonb_object_agg(k, coalesce((usage ->> k)::bigint, 0)
                               + coalesce((%(usage)s::jsonb ->> k)::bigint, 0))
    FROM jsonb_object_keys(coalesce(usage, jsonb_build_object()) || %(usage)s::jsonb) AS k)
    END""")


async def mark_done(
    conn: Conn, episode: uuidlib.UUID, extractor: str, usage: dict[str, int]
) -> None:
    await conn.execute(
        sql.SQL(
            "UPDATE episodes SET status = 'done', extractor = %(extractor)s, error = NULL,"
            " attempts = attempts + 1, processed_at = now(), {} WHERE uuid = %(episode)s"
        ).format(_ADD_USAGE),
        {"extractor": extractor, "usage": Jsonb(usage) if usage else None, "episode": episode},
    )


async def mark_failed(
    conn: Conn, episode: uuidlib.UUID, error: str, usage: dict[str, int] | None = None
) -> None:
    """Record a failed attempt, its reason and any tokens it spent."""
    await conn.execute(
        sql.SQL(
            "UPDATE episodes SET status = 'failed', error = %(error)s, attempts = attempts + 1,"
            " processed_at = now(), {} WHERE uuid = %(episode)s"
        ).format(_ADD_USAGE),
        {"error": error[:4000], "usage": Jsonb(usage) if usage else None, "episode": episode},
    )


async def errors_for(conn: Conn, uuids: list[uuidlib.UUID]) -> dict[str, dict[str, Any]]:
    """Status, attempts and last error of the given episodes (of the current tenant)."""
    cur = await conn.execute(
        "SELECT uuid, status, attempts, error FROM episodes WHERE uuid = ANY(%s)", (uuids,)
    )
    return {str(r["uuid"]): r for r in await cur.fetchall()}


async def reset(conn: Conn, episode: uuidlib.UUID) -> None:
    """Make a failed episode pending again (before its job is retried)."""
    await conn.execute(
        """UPDATE episodes SET status = 'pending', error = NULL
           WHERE uuid = %s AND status = 'failed'""",
        (episode,),
    )


async def of_user(conn: Conn, user_id: str, limit: int) -> list[dict[str, Any]]:
    """A user's latest episodes with their extraction state."""
    cur = await conn.execute(
        """SELECT uuid, session_id, cardinality(message_uuids) AS messages, status, extractor,
                  attempts, error, usage, created_at, processed_at
           FROM episodes WHERE user_id = %s ORDER BY created_at DESC LIMIT %s""",
        (user_id, limit),
    )
    return await cur.fetchall()
