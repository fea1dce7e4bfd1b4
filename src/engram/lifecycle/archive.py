"""Archive a session to blob storage and bring it back, byte for byte.

An archive is a folder ``<tenant>/u-<user>/s-<session>/<archive id>/`` holding one
``<table>.jsonl.gz`` per table (rows exactly as PostgreSQL stores them, ciphertext
included) and ``manifest.json`` (tenant, user, session, counts, SHA-256 of every file,
the data-key versions its ciphertexts need). The session's rows are deleted only after
every file was read back and matched its checksum, in the transaction that marks the
archive done: a crash at any instant leaves either the rows or a complete archive.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import uuid as uuidlib
from datetime import UTC, datetime
from typing import Any

import orjson

from engram.crypto.envelope import Envelope, is_ciphertext
from engram.errors import ConflictError, DecryptionError, EngramError, NotFoundError
from engram.lifecycle.blobs import BlobStore, delete_prefix, key_part
from engram.store import archives, retention
from engram.store.db import Database

__all__ = [
    "ArchiveError",
    "archive_session",
    "list_archives",
    "restore_session",
    "session_prefix",
]

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"


class ArchiveError(EngramError):
    """An archive that does not match its manifest (missing, truncated or altered)."""

    status = 500


def user_prefix(tenant: str, user_id: str | None) -> str:
    """Where all archives of a user live (erasure deletes this whole folder)."""
    return f"{key_part(tenant)}/" + (f"u-{key_part(user_id)}/" if user_id else "nouser/")


def session_prefix(tenant: str, user_id: str | None, session_id: str) -> str:
    return f"{user_prefix(tenant, user_id)}s-{key_part(session_id)}/"


def _key_versions(tables: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The data keys (id, version) that the archived ciphertexts were sealed with."""
    found: set[tuple[str, int]] = set()
    for rows in tables.values():
        for line in rows:
            for column, value in orjson.loads(line).items():
                if not isinstance(value, str):
                    continue
                try:
                    if column.endswith("_enc") and value.startswith("\\x"):
                        env = Envelope.from_bytes(bytes.fromhex(value[2:]))
                    elif is_ciphertext(value):
                        env = Envelope.from_text(value)
                    else:
                        continue
                except (DecryptionError, ValueError):
                    continue
                found.add((str(env.key_id), env.key_version))
    return [{"key_id": k, "version": v} for k, v in sorted(found)]


def pack(
    tenant: str,
    user_id: str | None,
    session_id: str,
    archive_id: uuidlib.UUID,
    tables: dict[str, list[str]],
) -> tuple[dict[str, bytes], bytes]:
    """The archive's files and its manifest."""
    files: dict[str, bytes] = {}
    listing: dict[str, dict[str, Any]] = {}
    for table, rows in tables.items():
        raw = "".join(line + "\n" for line in rows).encode()
        data = gzip.compress(raw, compresslevel=6, mtime=0)
        name = f"{table}.jsonl.gz"
        files[name] = data
        listing[name] = {
            "table": table,
            "rows": len(rows),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_sha256": hashlib.sha256(raw).hexdigest(),
        }
    manifest = {
        "format": FORMAT,
        "tenant_id": tenant,
        "user_id": user_id,
        "session_id": session_id,
        "archive_id": str(archive_id),
        "archived_at": datetime.now(UTC).isoformat(),
        "counts": {t: len(r) for t, r in tables.items()},
        "files": listing,
        "key_versions": _key_versions(tables),
    }
    return files, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def _read_verified(store: BlobStore, prefix: str, manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Every file of the archive, checked against the manifest; rows per table."""
    tables: dict[str, list[str]] = {}
    for name, meta in manifest["files"].items():
        try:
            data = store.get(prefix + name)
        except NotFoundError:
            raise ArchiveError(
                f"archive file {prefix + name} is missing",
                hint="restore the object from the blob store's versioning or backup",
            ) from None
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ArchiveError(
                f"archive file {prefix + name} does not match its checksum",
                hint="the object was altered or truncated; restore it from the blob store's "
                "versioning or backup",
            )
        # split("\n"), not splitlines(): JSON text may hold U+2028 or NEL unescaped.
        lines = gzip.decompress(data).decode().split("\n")[:-1]
        if len(lines) != meta["rows"]:
            raise ArchiveError(
                f"archive file {prefix + name} has {len(lines)} rows, "
                f"the manifest says {meta['rows']}"
            )
        tables[meta["table"]] = lines
    return tables


def _write_and_verify(
    store: BlobStore, prefix: str, files: dict[str, bytes], manifest: bytes
) -> None:
    for name, data in files.items():
        store.put(prefix + name, data)
    store.put(prefix + MANIFEST, manifest)
    if store.get(prefix + MANIFEST) != manifest:
        raise ArchiveError(f"archive manifest {prefix + MANIFEST} did not read back intact")
    _read_verified(store, prefix, orjson.loads(manifest))


async def archive_session(
    db: Database,
    store: BlobStore,
    tenant: str,
    session_id: str,
    user_id: str | None,
    *,
    cutoff: datetime | None = None,
) -> dict[str, int] | None:
    """Archive one session and delete its rows; None when it is gone or active again
    (only sessions last active before ``cutoff`` are archived, when given)."""
    async with db.tenant(tenant) as conn:  # the checkpoint: committed before any blob
        record = await archives.begin(
            conn,
            tenant,
            session_id,
            user_id,
            store.name,
            session_prefix(tenant, user_id, session_id),
        )
    prefix: str = record["prefix"]
    archive_id: uuidlib.UUID = record["archive_id"]
    async with db.tenant(tenant) as conn:
        session = await archives.lock_session(conn, session_id)
        if session is None or (cutoff is not None and session["last_active"] >= cutoff):
            await asyncio.to_thread(delete_prefix, store, prefix)
            await archives.delete_record(conn, archive_id)
            return None
        tables = await archives.export_session(conn, session_id)
        files, manifest = pack(tenant, session["user_id"], session_id, archive_id, tables)
        await asyncio.to_thread(_write_and_verify, store, prefix, files, manifest)
        await retention.delete_session(conn, session_id)
        counts = {t: len(r) for t, r in tables.items()}
        size = sum(len(d) for d in files.values()) + len(manifest)
        await archives.finish(conn, archive_id, counts, size, hashlib.sha256(manifest).hexdigest())
    logger.info("archived session %s (%d messages) to %s", session_id, counts["messages"], prefix)
    return counts


def _remap(rows: list[str], renames: dict[str, str], columns: tuple[str, ...]) -> list[str]:
    out = []
    for line in rows:
        row = orjson.loads(line)
        for c in columns:
            if row.get(c) in renames:
                row[c] = renames[row[c]]
        out.append(orjson.dumps(row).decode())
    return out


async def restore_session(
    db: Database,
    store: BlobStore,
    tenant: str,
    session_id: str,
    archive_id: uuidlib.UUID | None = None,
) -> dict[str, Any]:
    """Put an archived session back as it was; rows inserted per table."""
    async with db.tenant(tenant) as conn:
        records = await archives.list_records(conn, session_id=session_id)
    candidates = [
        r
        for r in records
        if r["state"] == "archived" and (archive_id is None or r["archive_id"] == archive_id)
    ]
    if not candidates:
        raise NotFoundError("archive of session", session_id)
    record = candidates[0]
    prefix = record["prefix"]

    def load() -> tuple[dict[str, Any], dict[str, list[str]]]:
        raw = store.get(prefix + MANIFEST)
        if hashlib.sha256(raw).hexdigest() != record["manifest_sha256"]:
            raise ArchiveError(
                f"archive manifest {prefix + MANIFEST} was altered",
                hint="restore the object from the blob store's versioning",
            )
        manifest = orjson.loads(raw)
        return manifest, _read_verified(store, prefix, manifest)

    manifest, tables = await asyncio.to_thread(load)
    inserted: dict[str, int] = {}
    async with db.tenant(tenant) as conn:
        if await archives.lock_session(conn, session_id) is not None:
            raise ConflictError(
                f"session {session_id!r} exists again",
                field="session_id",
                hint="delete the new session first, or keep it and leave the archive",
            )
        renames = await archives.entity_renames(conn, tables.get("entities", []))
        for table in archives.ARCHIVED_TABLES:
            rows = tables.get(table, [])
            if renames and table == "facts":
                rows = _remap(rows, renames, ("source_uuid", "target_uuid"))
            if renames and table == "entity_mentions":
                rows = _remap(rows, renames, ("entity_uuid",))
            keys = set(orjson.loads(rows[0])) if rows else set()
            inserted[table] = await archives.import_rows(conn, table, rows, keys)
            if table == "facts":
                await archives.merge_fact_episodes(conn, rows)
        await archives.mark_restored(conn, record["archive_id"])
    logger.info("restored session %s from %s", session_id, prefix)
    return {
        "archive_id": str(record["archive_id"]),
        "inserted": inserted,
        "counts": manifest["counts"],
    }


async def list_archives(
    db: Database, tenant: str, *, session_id: str | None, user_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """The tenant's archives, newest first, optionally of one session or user."""
    async with db.tenant(tenant) as conn:
        return await archives.list_records(
            conn, session_id=session_id, user_id=user_id, limit=limit
        )
