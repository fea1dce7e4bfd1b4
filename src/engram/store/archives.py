"""Archive rows out of a session and back in, column for column, and the archive catalogue.

Rows leave as ``to_jsonb(row)`` text, so every column travels as PostgreSQL stores it
(text, jsonb, bytea ciphertext as hex, vectors in their exact text form, identity
values) including columns added by later migrations, and come back through
``jsonb_populate_recordset`` with ``OVERRIDING SYSTEM VALUE``.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from engram.store.db import Conn

__all__ = [
    "ARCHIVED_TABLES",
    "begin",
    "delete_record",
    "entity_renames",
    "export_session",
    "finish",
    "import_rows",
    "list_records",
    "lock_session",
    "mark_restored",
    "merge_fact_episodes",
    "of_user",
    "unfinished",
    "writing",
]

# In the order a restore inserts them (foreign keys first).
ARCHIVED_TABLES = (
    "users",
    "sessions",
    "messages",
    "episodes",
    "entities",
    "facts",
    "entity_mentions",
)

_EXPORT: dict[str, sql.SQL] = {
    "users": sql.SQL("""SELECT to_jsonb(u)::text AS row FROM users u
        WHERE user_id = (SELECT user_id FROM sessions WHERE session_id = %(s)s)"""),
    "sessions": sql.SQL("SELECT to_jsonb(s)::text AS row FROM sessions s WHERE session_id = %(s)s"),
    "messages": sql.SQL(
        "SELECT to_jsonb(m)::text AS row FROM messages m WHERE session_id = %(s)s ORDER BY seq"
    ),
    "episodes": sql.SQL("""SELECT to_jsonb(e)::text AS row FROM episodes e
        WHERE session_id = %(s)s ORDER BY created_at, uuid"""),
    "entity_mentions": sql.SQL("""SELECT to_jsonb(x)::text AS row FROM entity_mentions x
        WHERE message_uuid IN (SELECT uuid FROM messages WHERE session_id = %(s)s)
        ORDER BY message_uuid, entity_uuid"""),
    "facts": sql.SQL("""SELECT to_jsonb(f)::text AS row FROM facts f
        WHERE episodes && ARRAY(SELECT uuid FROM messages WHERE session_id = %(s)s)
        ORDER BY created_at, uuid"""),
    "entities": sql.SQL("""SELECT to_jsonb(e)::text AS row FROM entities e WHERE uuid IN (
        SELECT entity_uuid FROM entity_mentions WHERE message_uuid IN (
            SELECT uuid FROM messages WHERE session_id = %(s)s)
        UNION SELECT unnest(ARRAY[source_uuid, target_uuid]) FROM facts
        WHERE episodes && ARRAY(SELECT uuid FROM messages WHERE session_id = %(s)s))
        ORDER BY created_at, uuid"""),
}


async def lock_session(conn: Conn, session_id: str) -> dict[str, Any] | None:
    """Lock the session row for this transaction (writers wait); None if it is gone."""
    cur = await conn.execute(
        """SELECT session_id, user_id, updated_at,
                  greatest(updated_at, coalesce((SELECT max(created_at) FROM messages m
                      WHERE m.session_id = s.session_id), created_at)) AS last_active
           FROM sessions s WHERE session_id = %s FOR UPDATE""",
        (session_id,),
    )
    return await cur.fetchone()


async def export_session(conn: Conn, session_id: str) -> dict[str, list[str]]:
    """Every row of the session and what it supports, as JSON text per table."""
    out: dict[str, list[str]] = {}
    for table in ARCHIVED_TABLES:
        cur = await conn.execute(_EXPORT[table], {"s": session_id})
        out[table] = [r["row"] for r in await cur.fetchall()]
    return out


async def _columns(conn: Conn, table: str) -> list[str]:
    cur = await conn.execute(
        """SELECT attname FROM pg_attribute
           WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped
             AND attgenerated = '' ORDER BY attnum""",
        (table,),
    )
    return [r["attname"] for r in await cur.fetchall()]


async def import_rows(conn: Conn, table: str, rows: list[str], keys: set[str]) -> int:
    """Insert archived rows that are not there yet; return how many were inserted.

    Only the columns the archive has are written (a column added since then takes its
    default); a row whose key already exists is left as it is."""
    if not rows:
        return 0
    cols = [c for c in await _columns(conn, table) if c in keys]
    ident = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
    query = sql.SQL(
        "INSERT INTO {t} ({c}) OVERRIDING SYSTEM VALUE SELECT {c} "
        "FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb) ON CONFLICT DO NOTHING"
    ).format(t=sql.Identifier(table), c=ident)
    cur = await conn.execute(query, ("[" + ",".join(rows) + "]",))
    return cur.rowcount


async def merge_fact_episodes(conn: Conn, rows: list[str]) -> None:
    """Give facts that outlived the archival their archived provenance back (in order)."""
    if not rows:
        return
    await conn.execute(
        """UPDATE facts f SET episodes = f.episodes || ARRAY(
               SELECT e FROM unnest(r.episodes) WITH ORDINALITY AS x(e, i)
               WHERE e <> ALL(f.episodes) ORDER BY i)
           FROM jsonb_populate_recordset(NULL::facts, %s::jsonb) r
           WHERE f.tenant_id = r.tenant_id AND f.uuid = r.uuid
             AND NOT r.episodes <@ f.episodes""",
        ("[" + ",".join(rows) + "]",),
    )


async def entity_renames(conn: Conn, rows: list[str]) -> dict[str, str]:
    """Archived entity uuids whose name now belongs to another entity: old -> current."""
    if not rows:
        return {}
    cur = await conn.execute(
        """SELECT r.uuid::text AS old, e.uuid::text AS new
           FROM jsonb_populate_recordset(NULL::entities, %s::jsonb) r
           JOIN entities e ON e.tenant_id = r.tenant_id AND e.user_id = r.user_id
                AND e.normalized_name = r.normalized_name AND e.uuid <> r.uuid""",
        ("[" + ",".join(rows) + "]",),
    )
    return {r["old"]: r["new"] for r in await cur.fetchall()}


# --- the catalogue -------------------------------------------------------------------


async def begin(
    conn: Conn, tenant: str, session_id: str, user_id: str | None, store: str, prefix: str
) -> dict[str, Any]:
    """The session's attempt in progress, or a new one (committed by the caller first)."""
    archive_id = uuidlib.uuid4()
    await conn.execute(
        """INSERT INTO archives (tenant_id, archive_id, session_id, user_id, store, prefix)
           VALUES (%s, %s, %s, %s, %s, %s || %s::text || '/')
           ON CONFLICT (tenant_id, session_id) WHERE state = 'writing' DO NOTHING""",
        (tenant, archive_id, session_id, user_id, store, prefix, archive_id),
    )
    row = await writing(conn, session_id)
    assert row is not None
    return row


async def writing(conn: Conn, session_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT * FROM archives WHERE session_id = %s AND state = 'writing'", (session_id,)
    )
    return await cur.fetchone()


async def unfinished(conn: Conn) -> list[dict[str, Any]]:
    """Attempts a crash or an error left behind (resumed first by the next run)."""
    cur = await conn.execute("SELECT * FROM archives WHERE state = 'writing' ORDER BY started_at")
    return await cur.fetchall()


async def finish(
    conn: Conn, archive_id: uuidlib.UUID, counts: dict[str, int], size: int, manifest_sha256: str
) -> None:
    await conn.execute(
        """UPDATE archives SET state = 'archived', counts = %s, bytes = %s,
               manifest_sha256 = %s, archived_at = now()
           WHERE archive_id = %s AND state = 'writing'""",
        (Jsonb(counts), size, manifest_sha256, archive_id),
    )


async def mark_restored(conn: Conn, archive_id: uuidlib.UUID) -> None:
    await conn.execute(
        "UPDATE archives SET state = 'restored', restored_at = now() WHERE archive_id = %s",
        (archive_id,),
    )


async def delete_record(conn: Conn, archive_id: uuidlib.UUID) -> None:
    await conn.execute("DELETE FROM archives WHERE archive_id = %s", (archive_id,))


async def list_records(
    conn: Conn, *, session_id: str | None = None, user_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Archives of the tenant, newest first, optionally of one session or user."""
    cur = await conn.execute(
        """SELECT * FROM archives
           WHERE (%(s)s::text IS NULL OR session_id = %(s)s)
             AND (%(u)s::text IS NULL OR user_id = %(u)s)
           ORDER BY started_at DESC LIMIT %(n)s""",
        {"s": session_id, "u": user_id, "n": limit},
    )
    return await cur.fetchall()


async def of_user(conn: Conn, user_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute("SELECT * FROM archives WHERE user_id = %s", (user_id,))
    return await cur.fetchall()
