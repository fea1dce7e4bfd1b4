"""Episodes: the messages added in one call, and the state of their extraction."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = [
    "add",
    "errors_for",
    "load",
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


async def load(
    conn: Conn, episode: uuidlib.UUID, context: int
) -> tuple[
    dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None, list[dict[str, Any]]
]:
    """Lock the episode; read it, its messages, the user's name and the messages before
    it (``context`` of them), in one round trip.

    The statements run in order, so the later ones read the episode as locked. The
    transaction commits without waiting for the disk: the job queue records the job's end
    after it, durably, and that flush of the write-ahead log covers this commit too; a
    server crash in between loses both, and the job runs again."""
    ep = "(SELECT {} FROM episodes WHERE uuid = %(e)s)"
    uuids = "(SELECT message_uuids FROM episodes WHERE uuid = %(e)s)::uuid[]"
    async with conn.pipeline():
        await conn.execute("SET LOCAL synchronous_commit = off")
        lock = await conn.execute(
            "SELECT * FROM episodes WHERE uuid = %(e)s FOR UPDATE", {"e": episode}
        )
        msgs = await conn.execute(
            sql.SQL(
                """SELECT uuid, role, role_type, content, content_enc, sensitivity, created_at,
                          seq
                   FROM messages WHERE uuid = ANY({}) AND episode_uuid = %(e)s ORDER BY seq"""
            ).format(sql.SQL(uuids)),
            {"e": episode},
        )
        user = await conn.execute(
            sql.SQL(
                "SELECT first_name, last_name, first_name_enc, last_name_enc"
                " FROM users WHERE user_id = {}"
            ).format(sql.SQL(ep).format(sql.SQL("user_id"))),
            {"e": episode},
        )
        before = await conn.execute(
            sql.SQL(
                """SELECT * FROM (
                       SELECT uuid, role, role_type, content, content_enc, created_at, seq
                       FROM messages
                       WHERE session_id = {session}
                         AND seq < (SELECT min(seq) FROM messages
                                    WHERE uuid = ANY({uuids}) AND episode_uuid = %(e)s)
                       ORDER BY seq DESC LIMIT %(n)s) t
                   ORDER BY seq"""
            ).format(
                session=sql.SQL(ep).format(sql.SQL("session_id")),
                uuids=sql.SQL(uuids),
            ),
            {"e": episode, "n": context},
        )
    return (
        await lock.fetchone(),
        await msgs.fetchall(),
        await user.fetchone(),
        await before.fetchall(),
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
