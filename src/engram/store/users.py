"""Users: the people (or agents' principals) whose memory Engram keeps.

With field-level encryption, `email`, `first_name`, `last_name` and `metadata` hold the
redacted forms of protected values and `profile_enc` one ciphertext of their real values
(see `engram.crypto.protect`); this module stores and returns both as given. Users
written before migration 0017 may hold a ciphertext per field instead (`email_enc`,
`first_name_enc`, `last_name_enc`, `metadata_enc`): they are returned for reading, and
every write stores the new form and clears them.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, ClassVar, LiteralString

from psycopg import sql
from psycopg.errors import UniqueViolation

from engram.errors import ConflictError, NotFoundError
from engram.store import keys
from engram.store.db import Conn, Pending
from engram.store.jsonb import jsonb
from engram.store.keys import DataKeyRecord, SyncConn

__all__ = ["UserFields", "add", "classify", "conflict", "delete", "exists", "get", "lock",
           "replace", "send_count", "send_exists", "send_list_ordered"]  # fmt: skip

_COLUMNS = sql.SQL("""user_id, id, uuid, email, first_name, last_name, metadata,
    created_at, updated_at, identity_sensitivity, metadata_sensitivity, profile_enc,
    email_enc, first_name_enc, last_name_enc, metadata_enc,
    (SELECT count(*) FROM sessions s
      WHERE s.tenant_id = u.tenant_id AND s.user_id = u.user_id) AS session_count""")


@dataclass(frozen=True)
class UserFields:
    """A user's stored fields: plain (or redacted) values, their classes and the one
    ciphertext of the protected ones."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    metadata: dict[str, Any] | None = None
    identity_sensitivity: int = 0
    metadata_sensitivity: int = 0
    profile_enc: bytes | None = None

    # How an UPDATE stores them: the new form, and the per-field ciphertexts of a row
    # written before migration 0017 cleared (`classify` uses it too).
    SET: ClassVar[LiteralString] = """email = %(email)s, first_name = %(first_name)s,
        last_name = %(last_name)s, metadata = %(metadata)s,
        identity_sensitivity = %(identity_sensitivity)s,
        metadata_sensitivity = %(metadata_sensitivity)s, profile_enc = %(profile_enc)s,
        email_enc = NULL, first_name_enc = NULL, last_name_enc = NULL, metadata_enc = NULL"""

    def params(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "metadata": jsonb(self.metadata or {}),
            "identity_sensitivity": self.identity_sensitivity,
            "metadata_sensitivity": self.metadata_sensitivity,
            "profile_enc": self.profile_enc,
        }


async def add(
    conn: Conn, tenant: str, user_id: str, uuid: uuidlib.UUID, fields: UserFields,
    key: DataKeyRecord | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Insert a user whose ciphertexts were bound to `uuid`, and `key` with it: the user's
    data key, drafted for this user; the row as stored. The key, the user and the row
    read back are one statement. ConflictError if the user id is taken; KeyTaken if the
    user has a data key already (another write stored one meanwhile)."""
    query = sql.SQL(
        """INSERT INTO users AS u (tenant_id, user_id, uuid, email, first_name, last_name,
               metadata, identity_sensitivity, metadata_sensitivity, profile_enc)
           VALUES (%(tenant)s, %(user_id)s, %(uuid)s, %(email)s, %(first_name)s,
               %(last_name)s, %(metadata)s, %(identity_sensitivity)s,
               %(metadata_sensitivity)s, %(profile_enc)s)
           RETURNING {}"""
    ).format(_COLUMNS)
    params = {"tenant": tenant, "user_id": user_id, "uuid": uuid, **fields.params()}
    if key is not None:
        # A data-modifying WITH runs whether or not the rest reads it.
        query = sql.SQL("WITH draft AS ({}) {}").format(sql.SQL(keys.INSERT_DRAFT), query)
        params.update(keys.key_values(key))
    try:
        cur = await conn.execute(query, params, binary=True)
        row = await cur.fetchone()
    except UniqueViolation as exc:
        raise (keys.key_taken(exc, user_id) or conflict(user_id)) from exc
    assert row is not None
    return row


def conflict(user_id: str) -> ConflictError:
    """The error for a user id that is taken."""
    return ConflictError(
        f"user {user_id!r} already exists", field="user_id", hint="use another user_id"
    )


async def get(conn: Conn, user_id: str) -> dict[str, Any]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM users u WHERE user_id = %s").format(_COLUMNS),
        (user_id,),
        binary=True,  # as `send_list_ordered`
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("user", user_id)
    return row


async def lock(conn: Conn, user_id: str) -> dict[str, Any]:
    """The user, locked until the transaction ends (for a read-modify-write)."""
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM users u WHERE user_id = %s FOR UPDATE").format(_COLUMNS),
        (user_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("user", user_id)
    return row


async def exists(conn: Conn, user_id: str) -> bool:
    return await (await send_exists(conn, user_id)).result()


async def send_exists(conn: Conn, user_id: str) -> Pending[bool]:
    """`exists`, sent now and read later (see `Pending`)."""
    cur = await conn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
    return Pending(cur, lambda row: row is not None)


async def replace(conn: Conn, user_id: str, fields: UserFields) -> dict[str, Any]:
    """Store every field anew (the caller merged them into the locked row)."""
    cur = await conn.execute(
        sql.SQL(
            "UPDATE users SET {}, updated_at = now() WHERE user_id = %(user_id)s RETURNING user_id"
        ).format(sql.SQL(fields.SET)),
        {"user_id": user_id, **fields.params()},
    )
    if await cur.fetchone() is None:
        raise NotFoundError("user", user_id)
    return await get(conn, user_id)


async def delete(conn: Conn, user_id: str) -> None:
    """Delete the user with their sessions and messages."""
    cur = await conn.execute("DELETE FROM users WHERE user_id = %s RETURNING 1", (user_id,))
    if await cur.fetchone() is None:
        raise NotFoundError("user", user_id)


async def send_list_ordered(
    conn: Conn, *, offset: int, limit: int
) -> Pending[list[dict[str, Any]]]:
    """A page of users in creation order, sent now and read later (see `Pending`)."""
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM users u ORDER BY id LIMIT %s OFFSET %s").format(_COLUMNS),
        (limit, offset),
        binary=True,  # ciphertexts as bytes, not hex text twice their size
    )
    return Pending(cur, list, many=True)


async def send_count(conn: Conn) -> Pending[int]:
    """How many users the tenant has, sent now and read later (see `Pending`)."""
    cur = await conn.execute("SELECT count(*) AS n FROM users")
    return Pending(cur, lambda row: int(row["n"]) if row else 0)


def classify(conn: SyncConn, uuid: uuidlib.UUID, fields: UserFields) -> None:
    """Store a locked user's fields as classified and sealed (updated_at unchanged); the
    users to classify are `store.keys.unclassified_users`."""
    conn.execute(
        sql.SQL("UPDATE users SET {} WHERE uuid = %(uuid)s").format(sql.SQL(fields.SET)),
        {"uuid": uuid, **fields.params()},
    )
