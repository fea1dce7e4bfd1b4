"""Text fields stored in clear, read in key order and sealed in place (`engram keys
reclassify`, see `memory.reclassify`).

Each scan reads one table's rows with no ciphertext in the field, after a uuid, locked
until the transaction ends; each seal is compare-and-set on that field still having no
ciphertext, and sets the redacted text, its full-text vector and its embedding together.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import numpy as np
from pgvector import Vector as Vec  # its text form: this pool's connections have no adapter
from psycopg import sql

from engram.store.keys import SyncConn

__all__ = [
    "entity_named",
    "entity_names",
    "facts",
    "merge_entity",
    "messages",
    "rename_entity",
    "seal_summary",
    "seal_text",
    "summaries",
]

Vector = np.ndarray[Any, np.dtype[np.float32]]


def messages(conn: SyncConn, after: uuidlib.UUID, limit: int) -> list[dict[str, Any]]:
    """Messages whose content is in clear, with what they and their session declare."""
    rows: list[dict[str, Any]] = conn.execute(
        """SELECT m.uuid, m.user_id, m.content, m.metadata, s.metadata AS session_metadata
           FROM messages m LEFT JOIN sessions s USING (tenant_id, session_id)
           WHERE m.content_enc IS NULL AND m.uuid > %s
           ORDER BY m.uuid LIMIT %s FOR UPDATE OF m""",
        (after, limit),
    ).fetchall()
    return rows


def facts(conn: SyncConn, after: uuidlib.UUID, limit: int) -> list[dict[str, Any]]:
    """Facts whose text is in clear, with the highest class of the messages they came from."""
    rows: list[dict[str, Any]] = conn.execute(
        """SELECT f.uuid, f.user_id, f.fact, f.sensitivity,
                  (SELECT max(m.sensitivity) FROM messages m
                   WHERE m.tenant_id = f.tenant_id AND m.uuid = ANY(f.episodes)) AS source
           FROM facts f
           WHERE f.fact_enc IS NULL AND f.uuid > %s
           ORDER BY f.uuid LIMIT %s FOR UPDATE OF f""",
        (after, limit),
    ).fetchall()
    return rows


# The fields `seal_text` writes: table -> (text, ciphertext, embedding) columns, and the
# function of its full-text vector (a fact's bounded for its index, migration 0019).
_TEXT_COLUMNS = {
    "messages": ("content", "content_enc", "embedding", "to_tsvector"),
    "facts": ("fact", "fact_enc", "fact_embedding", "engram_fact_words"),
}


def seal_text(
    conn: SyncConn, table: str, uuid: uuidlib.UUID, text: str, enc: bytes | None, level: int,
    embedding: Vector, ts_config: str,
) -> None:  # fmt: skip
    """Store a message's content or a fact's text as redacted (and sealed, unless `enc` is
    None: its user's key was destroyed), with the full-text vector and embedding of that;
    its class rises to `level` if that is higher."""
    plain, sealed, vector, words = (sql.Identifier(c) for c in _TEXT_COLUMNS[table])
    conn.execute(
        sql.SQL(
            """UPDATE {table} SET {plain} = %s, {sealed} = %s,
                   sensitivity = greatest(sensitivity, %s),
                   search_text = {words}(%s::regconfig, %s), {vector} = %s::vector
               WHERE uuid = %s AND {sealed} IS NULL"""
        ).format(
            table=sql.Identifier(table), plain=plain, sealed=sealed, vector=vector, words=words
        ),
        (text, enc, level, ts_config, text, Vec(embedding).to_text(), uuid),
    )


def summaries(conn: SyncConn, after: uuidlib.UUID, limit: int) -> list[dict[str, Any]]:
    """Entities whose summary is in clear, with the highest class of the messages that
    mention them."""
    rows: list[dict[str, Any]] = conn.execute(
        """SELECT e.uuid, e.user_id, e.summary,
                  (SELECT max(m.sensitivity) FROM entity_mentions em
                   JOIN messages m ON m.tenant_id = em.tenant_id AND m.uuid = em.message_uuid
                   WHERE em.tenant_id = e.tenant_id AND em.entity_uuid = e.uuid) AS source
           FROM entities e
           WHERE e.summary IS NOT NULL AND e.summary_enc IS NULL AND e.uuid > %s
           ORDER BY e.uuid LIMIT %s FOR UPDATE OF e""",
        (after, limit),
    ).fetchall()
    return rows


def seal_summary(conn: SyncConn, uuid: uuidlib.UUID, summary: str, enc: bytes | None) -> None:
    """Store an entity's summary as redacted (and sealed, unless `enc` is None)."""
    conn.execute(
        """UPDATE entities SET summary = %s, summary_enc = %s
           WHERE uuid = %s AND summary_enc IS NULL""",
        (summary, enc, uuid),
    )


def entity_names(conn: SyncConn, after: uuidlib.UUID, limit: int) -> list[dict[str, Any]]:
    """Entities' names and aliases in clear, locked; with what the messages that mention
    them declare (`declared`: the distinct [message's, session's] `sensitivity` pairs,
    null when none mentions it), those messages' roles, and the user's name in clear."""
    rows: list[dict[str, Any]] = conn.execute(
        """SELECT e.uuid, e.user_id, e.name, e.aliases, d.declared, d.roles,
                  u.first_name, u.last_name
           FROM entities e
           JOIN users u ON u.tenant_id = e.tenant_id AND u.user_id = e.user_id
           LEFT JOIN LATERAL (
               SELECT array_agg(DISTINCT jsonb_build_array(m.metadata -> 'sensitivity',
                                                           s.metadata -> 'sensitivity'))
                          AS declared,
                      array_agg(DISTINCT m.role) AS roles
               FROM entity_mentions em
               JOIN messages m ON m.tenant_id = em.tenant_id AND m.uuid = em.message_uuid
               JOIN sessions s ON s.tenant_id = m.tenant_id AND s.session_id = m.session_id
               WHERE em.tenant_id = e.tenant_id AND em.entity_uuid = e.uuid) d ON true
           WHERE e.uuid > %s AND e.name_enc IS NULL
           ORDER BY e.uuid LIMIT %s FOR UPDATE OF e""",
        (after, limit),
    ).fetchall()
    return rows


def seal_name(
    conn: SyncConn, uuid: uuidlib.UUID, name: str, enc: bytes | None, normalized: str,
    embedding: Vector,
) -> None:  # fmt: skip
    """Store an entity's name as its marker (and sealed, unless `enc` is None), under a
    name key of its own, with no aliases (they hold the name in clear)."""
    conn.execute(
        """UPDATE entities SET name = %s, name_enc = %s, normalized_name = %s,
                  aliases = ARRAY[]::text[], name_embedding = %s::vector, updated_at = now()
           WHERE uuid = %s AND name_enc IS NULL""",
        (name, enc, normalized, Vec(embedding).to_text(), uuid),
    )


def entity_named(
    conn: SyncConn, user_id: str, normalized: str, other: uuidlib.UUID
) -> uuidlib.UUID | None:
    """The user's entity with that name key, other than `other`."""
    row = conn.execute(
        """SELECT uuid FROM entities
           WHERE user_id = %s AND normalized_name = %s AND uuid <> %s FOR UPDATE""",
        (user_id, normalized, other),
    ).fetchone()
    return row["uuid"] if row else None


def rename_entity(
    conn: SyncConn, uuid: uuidlib.UUID, name: str, normalized: str, aliases: list[str],
    embedding: Vector,
) -> None:  # fmt: skip
    conn.execute(
        """UPDATE entities SET name = %s, normalized_name = %s, aliases = %s,
                  name_embedding = %s::vector, updated_at = now()
           WHERE uuid = %s""",
        (name, normalized, aliases, Vec(embedding).to_text(), uuid),
    )


def merge_entity(
    conn: SyncConn, gone: uuidlib.UUID, into: uuidlib.UUID, aliases: list[str]
) -> None:
    """Make `gone`'s facts and mentions `into`'s, add `aliases` to it, delete `gone`."""
    conn.execute("UPDATE facts SET source_uuid = %s WHERE source_uuid = %s", (into, gone))
    conn.execute("UPDATE facts SET target_uuid = %s WHERE target_uuid = %s", (into, gone))
    conn.execute(
        """INSERT INTO entity_mentions (tenant_id, entity_uuid, message_uuid)
           SELECT tenant_id, %s, message_uuid FROM entity_mentions WHERE entity_uuid = %s
           ON CONFLICT DO NOTHING""",
        (into, gone),
    )
    conn.execute(
        """UPDATE entities SET aliases = ARRAY(SELECT DISTINCT unnest(aliases || %s::text[])),
                  updated_at = now()
           WHERE uuid = %s""",
        (aliases, into),
    )
    conn.execute("DELETE FROM entities WHERE uuid = %s", (gone,))
