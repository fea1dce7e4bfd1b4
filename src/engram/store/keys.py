"""Data-key records in the `data_keys` table, and the scans rotation needs.

`PgKeyStore` is the keyring's `KeyStore` for one tenant. It is synchronous (key
providers are), runs on a small pool of its own, and is used off the event loop; every
call is one transaction bound to its tenant, so Row-Level Security applies as for any
other table.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from engram.errors import ConflictError, UnavailableError
from engram.store.db import Conn, Pending

__all__ = [
    "ENCRYPTED_FIELDS",
    "INSERT_DRAFT",
    "DataKeyRecord",
    "KeyPool",
    "KeyState",
    "KeyTaken",
    "PgKeyStore",
    "SyncConn",
    "WrappedDek",
    "classify_message",
    "classify_session",
    "encrypted_batch",
    "finish_run",
    "key_id_of",
    "key_taken",
    "key_values",
    "key_versions_in_use",
    "latest_runs",
    "run",
    "save_checkpoint",
    "send_key_id_of",
    "start_run",
    "swap_ciphertext",
    "unclassified",
    "unclassified_messages",
    "unclassified_sessions",
    "unclassified_users",
]

logger = logging.getLogger(__name__)

SyncConn = psycopg.Connection[dict[str, Any]]
# A user's data key is named by its version 1 (later versions share the key id).
_FIND_KEY = """SELECT key_id FROM data_keys
               WHERE coalesce(user_id, '') = coalesce(%s, '') AND version = 1"""


class KeyState(StrEnum):
    """A data-key version's state (see `engram.crypto.keyring`)."""

    PRIMARY = "primary"
    ACTIVE = "active"
    DISABLED = "disabled"
    DESTROYED = "destroyed"


@dataclass(frozen=True, slots=True)
class WrappedDek:
    """A data key as a provider wrapped it: what to store next to the key's id.

    `kek_id` names exactly the KEK (and version, where the provider has versions) that
    wrapped it, so it unwraps after the provider's current KEK has moved on.
    """

    provider: str
    kek_id: str
    blob: bytes


@dataclass(frozen=True, slots=True)
class DataKeyRecord:
    """One version of a data key as stored (never the plaintext key)."""

    key_id: uuidlib.UUID
    version: int
    tenant: str
    user: str | None
    state: KeyState
    wrapped: WrappedDek | None  # None once destroyed
    created_at: datetime


class KeyPool:
    """A few synchronous connections for key records (rarely used: keys are cached)."""

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int = 4,
        timeout_s: float = 10.0,
        prepare_threshold: int | None = 5,
    ) -> None:
        self.pool: ConnectionPool[SyncConn] = ConnectionPool(
            dsn,
            min_size=0,
            max_size=max_size,
            timeout=timeout_s,
            open=True,
            kwargs={
                "row_factory": dict_row,
                "autocommit": True,
                "prepare_threshold": prepare_threshold,
            },
            connection_class=psycopg.Connection[dict[str, Any]],
        )

    @contextmanager
    def tenant(self, tenant: str, *, pipeline: bool = False) -> Iterator[SyncConn]:
        """A connection in a transaction bound to `tenant`.

        ``pipeline``: in pipeline mode, where BEGIN and the tenant go out with the first
        statement and a statement's errors surface when its results are read (or at
        COMMIT): one statement whose rows are read takes two round trips, not four. Not
        for callers that read ``rowcount`` (it is known only once results are read)."""
        try:
            with self.pool.connection() as conn, ExitStack() as stack:
                if pipeline:
                    stack.enter_context(conn.pipeline())
                stack.enter_context(conn.transaction())
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise UnavailableError(
                f"the database is not reachable to read data keys: {str(exc).strip()}",
                hint="check that PostgreSQL is running",
            ) from exc

    def close(self) -> None:
        self.pool.close()


async def key_id_of(conn: Conn, user: str | None) -> uuidlib.UUID | None:
    """The data key id of `user` in the connection's tenant, or None: the same look-up as
    `PgKeyStore.find`, inside a write's own transaction (no extra one of its own)."""
    return await (await send_key_id_of(conn, user)).result()


async def send_key_id_of(conn: Conn, user: str | None) -> Pending[uuidlib.UUID | None]:
    """`key_id_of`, sent now and read later (see `Pending`)."""
    cur = await conn.execute(_FIND_KEY, (user,))
    return Pending(cur, lambda row: row["key_id"] if row else None)


# A drafted data key (a new user's), as the first part of the statement that stores its
# user (`store.users.add`), with the parameters of `key_values`. Its key id is new, so a
# plain insert: its one possible conflict is the owner index's (`key_taken`).
INSERT_DRAFT: LiteralString = """INSERT INTO data_keys (tenant_id, key_id, version, user_id,
        state, provider, kek_id, wrapped, created_at)
    VALUES (current_setting('app.tenant_id'), %(key_id)s, %(key_version)s, %(key_user)s,
        %(key_state)s, %(key_provider)s, %(key_kek)s, %(key_wrapped)s, %(key_created)s)"""

# Insert a key version, or update the stored one (state, wrapping) when it exists.
_PUT_KEY = (
    INSERT_DRAFT
    + """ ON CONFLICT (tenant_id, key_id, version) DO UPDATE
    SET state = excluded.state, provider = excluded.provider, kek_id = excluded.kek_id,
        wrapped = excluded.wrapped, updated_at = now()
    RETURNING key_id"""
)


def key_values(record: DataKeyRecord) -> dict[str, Any]:
    """A key record as the parameters of `_PUT_KEY` and `INSERT_DRAFT` (all named
    ``key_*``, so that they sit beside a user's own in one statement)."""
    w = record.wrapped
    return {
        "key_id": record.key_id,
        "key_version": record.version,
        "key_user": record.user,
        "key_state": record.state.value,
        "key_provider": w.provider if w else None,
        "key_kek": w.kek_id if w else None,
        "key_wrapped": w.blob if w else None,
        "key_created": record.created_at,
    }


class KeyTaken(ConflictError):
    """(tenant, user) has a data key already: another write stored one meanwhile (409 if
    it reaches a caller: creating the user retries once itself)."""


def key_taken(exc: psycopg.errors.UniqueViolation, user: str | None) -> KeyTaken | None:
    """KeyTaken when `exc` says (tenant, `user`) has a data key already (another write
    stored one meanwhile), else None."""
    if exc.diag.constraint_name == "data_keys_owner_idx":
        return KeyTaken(
            f"user {user!r} was given a data key by another request at the same time",
            hint="send the request again",
        )
    return None


def _record(row: dict[str, Any]) -> DataKeyRecord:
    wrapped = (
        WrappedDek(row["provider"], row["kek_id"], bytes(row["wrapped"]))
        if row["wrapped"] is not None
        else None
    )
    return DataKeyRecord(
        key_id=row["key_id"],
        version=row["version"],
        tenant=row["tenant_id"],
        user=row["user_id"],
        state=KeyState(row["state"]),
        wrapped=wrapped,
        created_at=row["created_at"],
    )


class PgKeyStore:
    """The `KeyStore` of one tenant, in `data_keys`."""

    def __init__(self, pool: KeyPool, tenant: str) -> None:
        self.pool = pool
        self.tenant = tenant

    def versions(self, key_id: uuidlib.UUID) -> list[DataKeyRecord]:
        with self.pool.tenant(self.tenant, pipeline=True) as conn:
            rows = conn.execute(
                "SELECT * FROM data_keys WHERE key_id = %s ORDER BY version", (key_id,)
            ).fetchall()
        return [_record(r) for r in rows]

    def versions_many(
        self, key_ids: Collection[uuidlib.UUID]
    ) -> dict[uuidlib.UUID, list[DataKeyRecord]]:
        out: dict[uuidlib.UUID, list[DataKeyRecord]] = {}
        if not key_ids:
            return out
        with self.pool.tenant(self.tenant, pipeline=True) as conn:
            rows = conn.execute(
                "SELECT * FROM data_keys WHERE key_id = ANY(%s) ORDER BY key_id, version",
                (list(key_ids),),
            ).fetchall()
        for r in rows:
            out.setdefault(r["key_id"], []).append(_record(r))
        return out

    def find(self, tenant: str, user: str | None) -> uuidlib.UUID | None:
        with self.pool.tenant(tenant, pipeline=True) as conn:
            row = conn.execute(_FIND_KEY, (user,)).fetchone()
        return row["key_id"] if row else None

    def put(self, record: DataKeyRecord) -> bool:
        try:
            with self.pool.tenant(record.tenant, pipeline=True) as conn:
                stored = conn.execute(_PUT_KEY, key_values(record)).fetchone()
        except psycopg.errors.UniqueViolation:
            # A first version racing another process's for the same (tenant, user) loses
            # (data_keys_owner_idx); `Keyring.key_for` then finds the winner.
            return False
        return stored is not None

    def all_keys(self) -> list[DataKeyRecord]:
        """Every version of every key of this tenant (for status and rotation)."""
        with self.pool.tenant(self.tenant) as conn:
            rows = conn.execute("SELECT * FROM data_keys ORDER BY key_id, version").fetchall()
        return [_record(r) for r in rows]


# Every column that holds a ciphertext: table -> ((ciphertext column, field name), ...).
# The field name is the column named in the ciphertext's associated data.
ENCRYPTED_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "messages": (("content_enc", "content"), ("metadata_enc", "metadata")),
    "facts": (("fact_enc", "fact"),),
    "entities": (("summary_enc", "summary"), ("name_enc", "name")),
    "users": (
        ("profile_enc", "profile"),
        ("email_enc", "email"),
        ("first_name_enc", "first_name"),
        ("last_name_enc", "last_name"),
        ("metadata_enc", "metadata"),
    ),
    "sessions": (("metadata_enc", "metadata"),),
}


def key_versions_in_use(conn: SyncConn) -> dict[tuple[uuidlib.UUID, int], int]:
    """(key id, version) -> protected fields stored under it, in the current tenant.

    A ciphertext names its key in bytes 1..16 and the key version in bytes 17..20
    (big-endian), so this needs no decryption."""
    parts = []
    for table, fields in ENCRYPTED_FIELDS.items():
        for column, _ in fields:
            c = sql.Identifier(column)
            parts.append(
                sql.SQL(
                    """SELECT substring({c} FROM 2 FOR 16) AS key_id,
                              get_byte({c}, 17) << 24 | get_byte({c}, 18) << 16
                              | get_byte({c}, 19) << 8 | get_byte({c}, 20) AS version,
                              count(*) AS n
                       FROM {t} WHERE {c} IS NOT NULL GROUP BY 1, 2"""
                ).format(c=c, t=sql.Identifier(table))
            )
    query = sql.SQL("SELECT key_id, version, sum(n)::bigint AS n FROM ({}) t GROUP BY 1, 2").format(
        sql.SQL(" UNION ALL ").join(parts)
    )
    rows = conn.execute(query).fetchall()
    return {(uuidlib.UUID(bytes=bytes(r["key_id"])), int(r["version"])): int(r["n"]) for r in rows}


def encrypted_batch(
    conn: SyncConn, table: str, after: uuidlib.UUID | None, limit: int
) -> list[dict[str, Any]]:
    """The next rows of `table` (in uuid order, after `after`) that hold a ciphertext."""
    cols = [c for c, _ in ENCRYPTED_FIELDS[table]]
    query = sql.SQL(
        "SELECT uuid, {cols} FROM {table} WHERE ({any}) AND uuid > %s ORDER BY uuid LIMIT %s"
    ).format(
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        table=sql.Identifier(table),
        any=sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in cols),
    )
    zero = uuidlib.UUID(int=0)
    return conn.execute(query, (after or zero, limit)).fetchall()


def swap_ciphertext(
    conn: SyncConn, table: str, column: str, uuid: uuidlib.UUID, old: bytes, new: bytes
) -> bool:
    """Compare-and-set one ciphertext: False if the row changed since it was read."""
    cur = conn.execute(
        sql.SQL("UPDATE {} SET {col} = %s WHERE uuid = %s AND {col} = %s").format(
            sql.Identifier(table), col=sql.Identifier(column)
        ),
        (new, uuid, old),
    )
    return cur.rowcount == 1


def start_run(conn: SyncConn) -> int:
    """A new re-encryption run of the current tenant; returns its id."""
    row = conn.execute(
        "INSERT INTO reencrypt_runs (tenant_id) VALUES (current_setting('app.tenant_id')) "
        "RETURNING id"
    ).fetchone()
    assert row is not None
    return int(row["id"])


def run(conn: SyncConn, run_id: int) -> dict[str, Any] | None:
    """One run, locked for this transaction (None if unknown)."""
    row: dict[str, Any] | None = conn.execute(
        "SELECT * FROM reencrypt_runs WHERE id = %s FOR UPDATE", (run_id,)
    ).fetchone()
    return row


def save_checkpoint(
    conn: SyncConn, run_id: int, checkpoint: dict[str, Any], moved: int, passes: int
) -> None:
    """Record progress in the same transaction as the rows it covers."""
    conn.execute(
        """UPDATE reencrypt_runs SET checkpoint = %s, rows_done = rows_done + %s, passes = %s,
                  updated_at = now()
           WHERE id = %s""",
        (Jsonb(checkpoint), moved, passes, run_id),
    )


def finish_run(conn: SyncConn, run_id: int, status: str, error: str | None = None) -> None:
    conn.execute(
        """UPDATE reencrypt_runs SET status = %s, error = %s, finished_at = now(),
                  updated_at = now() WHERE id = %s""",
        (status, error, run_id),
    )


def latest_runs(conn: SyncConn, limit: int = 5) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = conn.execute(
        "SELECT * FROM reencrypt_runs ORDER BY id DESC LIMIT %s", (limit,)
    ).fetchall()
    return rows


# --- users, sessions and messages' metadata not classified yet (migrations 0010, 0015) ---


def unclassified_users(conn: SyncConn, limit: int) -> list[dict[str, Any]]:
    """Users of the current tenant whose fields were never classified, locked (rows
    another transaction holds are skipped: that one classifies them)."""
    rows: list[dict[str, Any]] = conn.execute(
        """SELECT uuid, user_id, email, first_name, last_name, metadata, identity_sensitivity,
                  metadata_sensitivity, profile_enc, email_enc, first_name_enc, last_name_enc,
                  metadata_enc
           FROM users WHERE identity_sensitivity < 0 OR metadata_sensitivity < 0
           ORDER BY uuid LIMIT %s FOR UPDATE SKIP LOCKED""",
        (limit,),
    ).fetchall()
    return rows


def unclassified_sessions(conn: SyncConn, limit: int) -> list[dict[str, Any]]:
    """Sessions of the current tenant whose metadata was never classified, locked."""
    rows: list[dict[str, Any]] = conn.execute(
        """SELECT uuid, user_id, metadata FROM sessions WHERE metadata_sensitivity < 0
           ORDER BY uuid LIMIT %s FOR UPDATE SKIP LOCKED""",
        (limit,),
    ).fetchall()
    return rows


def classify_session(
    conn: SyncConn, uuid: uuidlib.UUID, metadata: dict[str, Any], level: int, enc: bytes | None
) -> None:
    conn.execute(
        """UPDATE sessions SET metadata = %s, metadata_sensitivity = %s, metadata_enc = %s
           WHERE uuid = %s""",
        (Jsonb(metadata), level, enc, uuid),
    )


def unclassified_messages(conn: SyncConn, limit: int) -> list[dict[str, Any]]:
    """Messages of the current tenant whose metadata was never classified, locked, with
    their session's metadata (its declared class applies to them)."""
    rows: list[dict[str, Any]] = conn.execute(
        """SELECT m.uuid, m.user_id, m.metadata, m.metadata_enc, m.sensitivity,
                  s.metadata AS session_metadata
           FROM messages m LEFT JOIN sessions s USING (tenant_id, session_id)
           WHERE m.metadata_sensitivity < 0
           ORDER BY m.uuid LIMIT %s FOR UPDATE OF m SKIP LOCKED""",
        (limit,),
    ).fetchall()
    return rows


def classify_message(
    conn: SyncConn, uuid: uuidlib.UUID, metadata: dict[str, Any], level: int, enc: bytes | None
) -> None:
    """Store a locked message's metadata as classified and sealed; the message's class
    rises to its metadata's if that is higher (updated_at unchanged)."""
    conn.execute(
        """UPDATE messages SET metadata = %s, metadata_sensitivity = %s, metadata_enc = %s,
                  sensitivity = greatest(sensitivity, %s)
           WHERE uuid = %s""",
        (Jsonb(metadata), level, enc, level, uuid),
    )


def unclassified(conn: SyncConn) -> int:
    """Users, sessions and messages' metadata of the current tenant not classified yet."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM users
                   WHERE identity_sensitivity < 0 OR metadata_sensitivity < 0)
                + (SELECT count(*) FROM sessions WHERE metadata_sensitivity < 0)
                + (SELECT count(*) FROM messages WHERE metadata_sensitivity < 0) AS n"""
    ).fetchone()
    return int(row["n"]) if row else 0
