"""Rotation end to end: `engram keys`, the re-encryption job, kill -9, shredding."""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import subprocess
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from engram.config import CryptoSettings
from engram.crypto.cache import DataKeyCache
from engram.crypto.envelope import FieldContext
from engram.crypto.protect import Keyrings, Protector
from engram.crypto.providers import LocalKeyProvider
from engram.store.keys import KeyPool, PgKeyStore
from tests.fix_server import ENGRAM, Server, short_tmpdir, start_server, stop_server

pytestmark = pytest.mark.integration

EMAIL = "grace.hopper@example.org"
ENV = {
    "ENGRAM_CRYPTO__DEK_CACHE_TTL_S": "1",
    "ENGRAM_CRYPTO__REENCRYPT_BATCH": "2000",
    "ENGRAM_CRYPTO__REENCRYPT_PAUSE_S": "0",
    "ENGRAM_WORKER__STALLED_AFTER_S": "5",
    "ENGRAM_METRICS__SAMPLE_INTERVAL_S": "0.5",
    "ENGRAM_CRYPTO__ROTATE_EVERY_DAYS": "30",
}


def _keys_run(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `engram keys ...` against the server's database and key file."""
    return subprocess.run(
        [ENGRAM, "keys", *args, "--data-dir", str(server.data_dir),
         "--database-url", _app_dsn(server)],
        capture_output=True, text=True, timeout=600, env=_base_env(),
    )  # fmt: skip


def _keys(server: Server, *args: str) -> str:
    """Run `engram keys ...`; it must succeed; returns what it printed."""
    done = _keys_run(server, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _base_env() -> dict[str, str]:
    import os

    return {**os.environ, **ENV}


def _app_dsn(server: Server) -> str:
    return server.pg.dsn("engram_app", "engram")


def _versions(server: Server, sid: str | None = None) -> dict[int, int]:
    with server.superuser() as conn:
        rows = conn.execute(
            """SELECT get_byte(content_enc, 20), count(*) FROM messages
               WHERE content_enc IS NOT NULL AND (%(s)s::text IS NULL OR session_id = %(s)s)
               GROUP BY 1""",
            {"s": sid},
        ).fetchall()
    return {int(v): int(n) for v, n in rows}


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    root = short_tmpdir("eg-rot-")
    s = start_server(root / "d", api_key=secrets.token_urlsafe(24), env=ENV)
    yield s
    stop_server(s)


def _user_session(http: httpx.Client, **user: Any) -> tuple[str, str]:
    uid = secrets.token_hex(6)
    assert http.post("/api/v2/users", json={"user_id": uid, **user}).status_code == 201
    sid = f"s-{uid}"
    body = {"session_id": sid, "user_id": uid, "metadata": {"contact": EMAIL, "channel": "web"}}
    assert http.post("/api/v2/sessions", json=body).status_code == 201
    return uid, sid


PERSON = {"email": EMAIL, "first_name": "Grace", "last_name": "Hopper",
          "metadata": {"phone": "+1 415 555 0100"}}  # fmt: skip
SESSION_META = {"contact": EMAIL, "channel": "web"}
DECLARED = {"sensitivity": "phi", "diagnosis": "type 2 diabetes", "clinic": "Riverside"}


def _person(http: httpx.Client, uid: str, sid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the API returns of the user's identity and metadata, and the session's metadata."""
    user = http.get(f"/api/v2/users/{uid}").json()
    session = http.get(f"/api/v2/sessions/{sid}").json()
    return {k: user[k] for k in PERSON}, session["metadata"]


def _people_versions(server: Server, uid: str) -> dict[int, int]:
    """Key versions of the user's and their sessions' ciphertexts (as `_versions`)."""
    with server.superuser() as conn:
        rows = conn.execute(
            """SELECT get_byte(c, 20), count(*) FROM (
                   SELECT unnest(ARRAY[profile_enc, email_enc, first_name_enc, last_name_enc,
                                       metadata_enc])
                   FROM users WHERE user_id = %(u)s
                   UNION ALL SELECT metadata_enc FROM sessions WHERE user_id = %(u)s) t(c)
               WHERE c IS NOT NULL GROUP BY 1""",
            {"u": uid},
        ).fetchall()
    return {int(v): int(n) for v, n in rows}


def test_rotate_reencrypt_retire_destroy_shred(srv: Server) -> None:
    with srv.client() as http:
        uid, sid = _user_session(http, **PERSON)
        assert _people_versions(srv, uid) == {1: 2}  # the user's profile, the session's metadata
        texts = [f"note {i}: write to {EMAIL}" for i in range(30)]
        r = http.post(
            f"/api/v2/sessions/{sid}/memory",
            json={"messages": [{"role_type": "user", "content": t} for t in texts]},
        )
        assert r.status_code == 200
        assert _versions(srv, sid) == {1: 30}

        out = _keys(srv, "rotate", "--now")
        assert "re-encrypted" in out
        assert _versions(srv, sid) == {2: 30}
        assert _people_versions(srv, uid) == {2: 2}
        assert _person(http, uid, sid) == (PERSON, SESSION_META)
        got = [
            m["content"] for m in http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
        ]
        assert got == texts

        status = _keys(srv, "status")
        assert "fields on a non-primary version: 0" in status

        refused = _keys_run(srv, "retire", "2")
        said = refused.stdout + refused.stderr
        assert refused.returncode == 2 and "still encrypted with version 2" in said

        unknown = _keys_run(srv, "retire", "99")
        assert unknown.returncode == 2 and "99" in unknown.stdout + unknown.stderr

        assert "retired" in _keys(srv, "retire", "1")
        assert "destroyed" in _keys(srv, "destroy", "1", "--yes")
        # Reads are unaffected: every field is on version 2.
        got = [
            m["content"] for m in http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
        ]
        assert got == texts

        assert "destroyed" in _keys(srv, "shred", "--user", uid, "--yes")
        time.sleep(1.5)  # the server's cache of unwrapped keys expires (ttl 1 s here)
        got = [
            m["content"] for m in http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
        ]
        assert got == [f"note {i}: write to [EMAIL]" for i in range(30)]
        # The user's identity went with their key; what was not protected is still there.
        shredded = {"email": "[EMAIL]", "first_name": "[PII]", "last_name": "[PII]",
                    "metadata": {"phone": "[PHONE]"}}  # fmt: skip
        assert _person(http, uid, sid) == (shredded, {"contact": "[EMAIL]", "channel": "web"})
        # Changing a shredded user is refused with the reason, and changes nothing.
        patch = http.patch(f"/api/v2/users/{uid}", json={"first_name": "New"})
        assert patch.status_code == 409 and "destroyed" in patch.json()["message"], patch.text
        body = {"messages": [{"role_type": "user", "content": f"write to {EMAIL}"}]}
        added = http.post(f"/api/v2/sessions/{sid}/memory", json=body)
        assert added.status_code == 409 and "destroyed" in added.json()["message"], added.text
        assert _person(http, uid, sid) == (shredded, {"contact": "[EMAIL]", "channel": "web"})
        after = http.get(f"/api/v2/sessions/{sid}/messages", params={"limit": 100}).json()
        assert len(after["messages"]) == 30
        # Shredded fields stay where they are; rotation moves the rest and says so.
        assert "re-encrypted" in _keys(srv, "rotate", "--now")
        status = _keys(srv, "status")
        assert "fields on a non-primary version: 0" in status
        gone = re.search(r"unreadable for good: (\d+)", status)
        assert gone is not None and int(gone.group(1)) >= 30  # the messages and their facts
        # A shredded user id stays burned: deleted and created again, it is refused.
        assert http.delete(f"/api/v2/users/{uid}").status_code == 200
        again = http.post("/api/v2/users", json={"user_id": uid, "email": EMAIL})
        assert again.status_code == 409 and "destroyed" in again.json()["message"], again.text
        assert http.get(f"/api/v2/users/{uid}").status_code == 404
    with srv.superuser() as conn:
        left = conn.execute(
            "SELECT count(*) FROM data_keys WHERE user_id = %s AND wrapped IS NOT NULL", (uid,)
        ).fetchone()
    assert left == (0,)


def _metric(srv: Server, name: str, until: Callable[[float], bool]) -> float:
    """The metric's value once `until(value)` holds (or the last value seen after 20 s)."""
    deadline = time.monotonic() + 20
    value = float("nan")
    while time.monotonic() < deadline:
        auth = {"Authorization": f"Api-Key {srv.api_key}"}  # every figure: the admin's
        text = httpx.get(f"{srv.base_url}/metrics", headers=auth, timeout=10).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                value = float(line.rsplit(" ", 1)[1])
        if until(value):
            break
        time.sleep(0.3)
    return value


def test_coverage_metric_reads_one_and_drops_for_plaintext(srv: Server) -> None:
    with srv.client() as http:
        _, sid = _user_session(http)
        body = {"messages": [{"role_type": "user", "content": f"mail {EMAIL}"}]}
        assert http.post(f"/api/v2/sessions/{sid}/memory", json=body).status_code == 200
    assert _metric(srv, "engram_encryption_coverage_ratio", lambda v: v == 1.0) == 1.0
    with srv.superuser() as conn:
        (saved,) = conn.execute(
            "UPDATE messages SET content_enc = NULL WHERE session_id = %s "
            "RETURNING (SELECT content_enc FROM messages WHERE session_id = %s)",
            (sid, sid),
        ).fetchone()
    try:
        assert _metric(srv, "engram_encryption_coverage_ratio", lambda v: v < 1.0) < 1.0
    finally:
        with srv.superuser() as conn:
            conn.execute("UPDATE messages SET content_enc = %s WHERE session_id = %s", (saved, sid))
    assert _metric(srv, "engram_encryption_coverage_ratio", lambda v: v == 1.0) == 1.0
    # Users' identity and the metadata of users and sessions count too.
    with srv.client() as http:
        uid, sid = _user_session(http, **PERSON)
    for table, column in (("users", "profile_enc"), ("sessions", "metadata_enc")):
        ident = {"t": sql.Identifier(table), "c": sql.Identifier(column)}
        with srv.superuser() as conn:
            (saved,) = conn.execute(
                sql.SQL("SELECT {c} FROM {t} WHERE user_id = %s").format(**ident), (uid,)
            ).fetchone()
            conn.execute(sql.SQL("UPDATE {t} SET {c} = NULL WHERE user_id = %s").format(**ident),
                         (uid,))  # fmt: skip
        try:
            ratio = _metric(srv, "engram_encryption_coverage_ratio", lambda v: v < 1.0)
            assert ratio < 1.0, (table, column)
        finally:
            with srv.superuser() as conn:
                conn.execute(
                    sql.SQL("UPDATE {t} SET {c} = %s WHERE user_id = %s").format(**ident),
                    (saved, uid),
                )
        assert _metric(srv, "engram_encryption_coverage_ratio", lambda v: v == 1.0) == 1.0
    # A message protected only by its metadata is covered by that metadata's ciphertext.
    sid = _session_with_message(srv, "see you at noon", {"contact": EMAIL})
    with srv.superuser() as conn:
        stored = conn.execute(
            "SELECT sensitivity > 0, content_enc IS NULL, metadata_enc IS NOT NULL"
            " FROM messages WHERE session_id = %s", (sid,)
        ).fetchone()  # fmt: skip
    assert stored == (True, True, True)
    _coverage_drops_without_metadata_ciphertext(srv, sid)
    # A declared message's metadata is a protected field of its own: its content's
    # ciphertext does not stand in for it.
    sid = _session_with_message(srv, "HbA1c came back at 7.2", DECLARED)
    with srv.superuser() as conn:
        stored = conn.execute(
            "SELECT content_enc IS NOT NULL, metadata_enc IS NOT NULL FROM messages"
            " WHERE session_id = %s", (sid,)
        ).fetchone()  # fmt: skip
    assert stored == (True, True)
    _coverage_drops_without_metadata_ciphertext(srv, sid)


def _session_with_message(srv: Server, content: str, metadata: dict[str, Any]) -> str:
    """A new user's session holding one message; its id."""
    with srv.client() as http:
        _, sid = _user_session(http)
        body = {"messages": [{"role_type": "user", "content": content, "metadata": metadata}]}
        assert http.post(f"/api/v2/sessions/{sid}/memory", json=body).status_code == 200
    return sid


def _coverage_drops_without_metadata_ciphertext(srv: Server, sid: str) -> None:
    """Take the session's message's metadata ciphertext away and the ratio drops; put it
    back and it is 1.0."""
    with srv.superuser() as conn:
        (saved,) = conn.execute(
            "UPDATE messages m SET metadata_enc = NULL FROM messages o"
            " WHERE m.session_id = %s AND o.tenant_id = m.tenant_id AND o.uuid = m.uuid"
            " RETURNING o.metadata_enc", (sid,)
        ).fetchone()  # fmt: skip
    try:
        assert _metric(srv, "engram_encryption_coverage_ratio", lambda v: v < 1.0) < 1.0
    finally:
        with srv.superuser() as conn:
            conn.execute("UPDATE messages SET metadata_enc = %s WHERE session_id = %s",
                         (saved, sid))  # fmt: skip
    assert _metric(srv, "engram_encryption_coverage_ratio", lambda v: v == 1.0) == 1.0


def test_rows_stored_before_encryption_are_sealed_by_the_next_run(srv: Server) -> None:
    """Users and sessions written before migration 0010 (class -1, fields in clear)."""
    with srv.client() as http:
        uid, sid = _user_session(http)
    with srv.superuser() as conn:
        # As such rows look after the migration: values in clear, not classified.
        conn.execute(
            """UPDATE users SET email = %s, first_name = 'Grace', last_name = 'Hopper',
                   metadata = '{"phone": "+1 415 555 0100"}', identity_sensitivity = -1,
                   metadata_sensitivity = -1
               WHERE user_id = %s""",
            (EMAIL, uid),
        )
        conn.execute(
            """UPDATE sessions SET metadata = jsonb_build_object('contact', %s::text,
                   'channel', 'web'), metadata_enc = NULL, metadata_sensitivity = -1
               WHERE user_id = %s""",
            (EMAIL, uid),
        )
    assert "users, sessions and messages stored before their fields were classified: 2" in _keys(
        srv, "status"
    )
    _keys(srv, "reencrypt", "--now")
    with srv.superuser() as conn:
        stored = conn.execute(
            """SELECT u::text || s::text FROM users u JOIN sessions s USING (tenant_id, user_id)
               WHERE u.user_id = %s""",
            (uid,),
        ).fetchone()
    assert stored is not None
    for secret in (EMAIL, "Grace", "Hopper", "555 0100"):
        assert secret not in stored[0]
    assert _people_versions(srv, uid)  # sealed under the user's key
    with srv.client() as http:
        assert _person(http, uid, sid) == (PERSON, SESSION_META)
    assert "stored before their fields were classified" not in _keys(srv, "status")


def test_a_user_sealed_field_by_field_before_migration_0017_reads_rotates_and_converts(
    srv: Server,
) -> None:
    """Users written before migration 0017 have a ciphertext per field (`email_enc`,
    `first_name_enc`, `last_name_enc`, `metadata_enc`), not one `profile_enc`: they read
    as before, count as covered, rotate, and a change stores them in the new form."""
    from engram.crypto.cipher import FieldCipher

    with srv.client() as http:
        uid, sid = _user_session(http)
    pool = KeyPool(_app_dsn(srv))
    try:
        ring = _keyrings(srv, pool).get("default")
        key_id = ring.key_for("default", uid)
        with srv.superuser() as conn:
            (row,) = conn.execute("SELECT uuid FROM users WHERE user_id = %s", (uid,)).fetchone()
        cipher = FieldCipher(ring)

        def seal(column: str, value: bytes) -> bytes:
            return cipher.encrypt_bytes(
                value, FieldContext("default", "users", column, str(row)), key_id=key_id
            )

        with srv.superuser() as conn:  # as the old code stored PERSON
            conn.execute(
                """UPDATE users SET email = '[EMAIL]', first_name = '[PII]', last_name = '[PII]',
                       metadata = '{"phone": "[PHONE]"}', identity_sensitivity = 1,
                       metadata_sensitivity = 1, profile_enc = NULL, email_enc = %s,
                       first_name_enc = %s, last_name_enc = %s, metadata_enc = %s
                   WHERE user_id = %s""",
                (seal("email", EMAIL.encode()), seal("first_name", b"Grace"),
                 seal("last_name", b"Hopper"), seal("metadata", b'{"phone": "+1 415 555 0100"}'),
                 uid),
            )  # fmt: skip
    finally:
        pool.close()
    with srv.client() as http:
        assert _person(http, uid, sid) == (PERSON, SESSION_META)
        listed = http.get("/api/v2/users-ordered", params={"pageSize": 1000}).json()["users"]
        assert {k: next(u for u in listed if u["user_id"] == uid)[k] for k in PERSON} == PERSON
    assert _metric(srv, "engram_encryption_coverage_ratio", lambda v: v == 1.0) == 1.0
    before = _people_versions(srv, uid)
    assert sum(before.values()) == 5  # four of the user's, the session's metadata
    _keys(srv, "rotate", "--now")
    after = _people_versions(srv, uid)
    assert len(after) == 1 and max(after) > max(before) and sum(after.values()) == 5
    with srv.client() as http:
        assert _person(http, uid, sid) == (PERSON, SESSION_META)
        r = http.patch(f"/api/v2/users/{uid}", json={"first_name": "Amazing Grace"})
        assert r.status_code == 200, r.text
        assert _person(http, uid, sid) == ({**PERSON, "first_name": "Amazing Grace"}, SESSION_META)
    with srv.superuser() as conn:
        stored = conn.execute(
            """SELECT profile_enc IS NOT NULL, email_enc, first_name_enc, last_name_enc,
                      metadata_enc FROM users WHERE user_id = %s""",
            (uid,),
        ).fetchone()
    assert stored == (True, None, None, None, None)


def _message_metadata(srv: Server, sid: str) -> tuple[Any, ...]:
    with srv.superuser() as conn:
        row = conn.execute(
            """SELECT metadata, metadata_sensitivity, sensitivity, get_byte(metadata_enc, 20)
               FROM messages WHERE session_id = %s""",
            (sid,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_declared_message_metadata_stored_before_0015_is_sealed_then_rotated(
    srv: Server,
) -> None:
    """Before migration 0015 a declared message's metadata values were classified by the
    detectors alone (stored in clear here); the migration marks such rows -1."""
    sid = _session_with_message(srv, "follow-up", DECLARED)
    with srv.superuser() as conn:
        conn.execute(
            """UPDATE messages SET metadata = %s, metadata_enc = NULL, metadata_sensitivity = -1
               WHERE session_id = %s""",
            (Jsonb(DECLARED), sid),
        )
    assert "users, sessions and messages stored before their fields were classified: 1" in (
        _keys(srv, "status")
    )
    _keys(srv, "reencrypt", "--now")
    redacted = {"sensitivity": "phi", "diagnosis": "[PHI]", "clinic": "[PHI]"}
    meta, level, overall, version = _message_metadata(srv, sid)
    assert (meta, level, overall) == (redacted, 2, 2)
    with srv.client() as http:
        got = http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
        assert got[0]["metadata"] == DECLARED
    # Rotation moves it to the new primary version like every other ciphertext.
    _keys(srv, "rotate", "--now")
    assert _message_metadata(srv, sid) == (redacted, 2, 2, version + 1)
    with srv.client() as http:
        got = http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
        assert got[0]["metadata"] == DECLARED
    assert "stored before their fields were classified" not in _keys(srv, "status")


def test_scheduled_rotation_rotates_keys_older_than_configured(srv: Server) -> None:
    import procrastinate

    with srv.client() as http:
        _, sid = _user_session(http)
        body = {"messages": [{"role_type": "user", "content": f"mail {EMAIL}"}]}
        assert http.post(f"/api/v2/sessions/{sid}/memory", json=body).status_code == 200
    before = _versions(srv, sid)
    (version,) = before
    queue = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=_app_dsn(srv)))

    def tick() -> None:
        # What the daily schedule defers; the server's in-process worker runs it.
        with queue.open():
            queue.configure_task("engram.rotate_keys", queue="maintenance").defer(
                timestamp=int(time.time())
            )

    tick()  # keys made today are not due: nothing changes
    time.sleep(3)
    assert _versions(srv, sid) == before
    with srv.superuser() as conn:
        conn.execute("UPDATE data_keys SET created_at = created_at - interval '31 days'")
    tick()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _versions(srv, sid) != {version + 1: 1}:
        time.sleep(0.5)
    assert _versions(srv, sid) == {version + 1: 1}
    with srv.client() as http:
        got = http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
    assert got[0]["content"] == f"mail {EMAIL}"


def _keyrings(srv: Server, pool: KeyPool) -> Keyrings:
    """Keyrings on the server's key file and its database (through `pool`), as the server
    builds them."""
    return Keyrings(
        LocalKeyProvider(srv.data_dir / "keys" / "kek.json"),
        lambda t: PgKeyStore(pool, t),
        DataKeyCache(ttl_s=60),
    )


def _seal_many(srv: Server, uid: str, n: int) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    """`n` protected rows sealed by Engram's own code, and their plaintext hashes."""
    pool = KeyPool(_app_dsn(srv))
    rings = _keyrings(srv, pool)
    protector = Protector(CryptoSettings(), rings)
    rows, hashes = [], {}
    try:
        for i in range(n):
            u = uuidlib.uuid4()
            text = f"row {i} {secrets.token_hex(4)} mail {EMAIL}"
            ctx = FieldContext("default", "messages", "content", str(u))
            sealed = protector.seal_text(ctx, uid, text)
            assert sealed.ciphertext is not None
            rows.append((u, sealed.text, sealed.ciphertext))
            hashes[str(u)] = hashlib.sha256(text.encode()).hexdigest()
    finally:
        pool.close()
    return rows, hashes


def _all_decrypt(srv: Server) -> dict[str, str]:
    pool = KeyPool(_app_dsn(srv))
    rings = _keyrings(srv, pool)
    protector = Protector(CryptoSettings(), rings)
    out = {}
    try:
        with srv.superuser() as conn:
            for u, enc in conn.execute(
                "SELECT uuid, content_enc FROM messages WHERE content_enc IS NOT NULL"
            ):
                ctx = FieldContext("default", "messages", "content", str(u))
                text = protector.open_text(ctx, bytes(enc))
                out[str(u)] = hashlib.sha256(text.encode()).hexdigest()
    finally:
        pool.close()
    return out


@pytest.mark.slow
# Sealing 100k rows, then a run through 10 kills, allowed up to 600 s itself below: the
# suite's 300 s default cut it short on a loaded 2-core machine (273 s alone at load 8).
@pytest.mark.timeout(900)
def test_reencryption_survives_kill_9_with_concurrent_writes(tmp_path: Path) -> None:
    root = short_tmpdir("eg-k9-")
    srv = start_server(
        root / "d", api_key=secrets.token_urlsafe(24), env=ENV, extra=["--no-worker"]
    )
    worker: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    written: dict[str, str] = {}
    try:
        with srv.client() as http:
            uid, sid = _user_session(http)
            r = http.post(
                f"/api/v2/sessions/{sid}/memory",
                json={"messages": [{"role_type": "user", "content": f"hi {EMAIL}"}]},
            )
            assert r.status_code == 200
        rows, hashes = _seal_many(srv, uid, 100_000)
        with srv.superuser() as conn:
            # Loading test rows: skip the vector index (rebuilt by nobody; search is not tested).
            for (idx,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'messages' "
                "AND indexdef ILIKE '%%hnsw%%'"
            ).fetchall():
                conn.execute(f'DROP INDEX "{idx}"')
            zero = "[" + ",".join(["0.01"] * 384) + "]"
            with conn.cursor().copy(
                "COPY messages (tenant_id, uuid, session_id, user_id, role_type, content, "
                "token_count, embedding, search_text, sensitivity, content_enc, "
                "metadata_sensitivity) FROM STDIN"
            ) as copy:
                for u, text, enc in rows:
                    copy.write_row(("default", u, sid, uid, "user", text, 5, zero, "", 1, enc, 0))
        assert _versions(srv) == {1: 100_001}

        _keys(srv, "rotate")  # queued: the worker below runs it

        def write() -> None:
            with srv.client() as http:
                i = 0
                while not stop.is_set():
                    text = f"live {i} {EMAIL}"
                    r = http.post(
                        f"/api/v2/sessions/{sid}/memory",
                        json={"messages": [{"role_type": "user", "content": text}]},
                    )
                    if r.status_code == 200:
                        got = http.get(f"/api/v2/sessions/{sid}/memory?lastn=1").json()
                        digest = hashlib.sha256(text.encode()).hexdigest()
                        written[got["messages"][0]["uuid"]] = digest
                    i += 1
                    time.sleep(0.05)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()

        def start_worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [
                    ENGRAM,
                    "worker",
                    "--data-dir",
                    str(srv.data_dir),
                    "--database-url",
                    _app_dsn(srv),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_base_env(),
            )

        rng = random.Random(7)
        kills = 0
        worker = start_worker()
        while kills < 10:
            time.sleep(rng.uniform(1.0, 3.0))
            worker.kill()  # SIGKILL
            worker.wait()
            kills += 1
            worker = start_worker()
        deadline = time.monotonic() + 600
        status = None
        while time.monotonic() < deadline:
            with srv.superuser() as conn:
                status = conn.execute(
                    "SELECT status FROM reencrypt_runs ORDER BY id DESC LIMIT 1"
                ).fetchone()
            if status and status[0] == "done":
                break
            time.sleep(1)
        assert status == ("done",), status
        stop.set()
        writer.join(timeout=30)
        # Writes that landed after the run finished are on the primary too (ttl 1 s).
        time.sleep(1.5)
        versions = _versions(srv)
        assert set(versions) == {2}, versions
        plain = _all_decrypt(srv)
        assert len(plain) == 100_001 + len(written) and len(written) > 10
        for u, h in {**hashes, **written}.items():
            assert plain[u] == h
    finally:
        stop.set()
        if worker is not None:
            worker.kill()
            worker.wait()
        stop_server(srv)


def test_a_new_users_key_made_twice_keeps_the_stored_one(srv: Server) -> None:
    """Creating a user makes its key without looking first; if another process stored
    one for the same user meanwhile, that one is used and no second key is stored."""
    pool = KeyPool(_app_dsn(srv))
    try:
        first = _keyrings(srv, pool).get("default").key_for("default", "race-user", new=True)
        again = _keyrings(srv, pool).get("default").key_for("default", "race-user", new=True)
        looked_up = _keyrings(srv, pool).get("default").key_for("default", "race-user")
    finally:
        pool.close()
    assert again == first == looked_up
    with srv.superuser() as conn:
        rows = conn.execute(
            "SELECT key_id, version, state FROM data_keys WHERE user_id = 'race-user'"
        ).fetchall()
    assert rows == [(first, 1, "primary")]


def test_a_user_id_with_a_data_key_already_is_sealed_under_that_key(
    srv: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a user drafts a data key without looking (a new user has none) and stores
    it with the user. If the user id has a key all the same (used before, or another write
    stored one in between), storing the draft fails, the retry looks the key up and seals
    the user under it, and no second key is kept."""
    import asyncio

    from engram.memory.users import add_user
    from engram.store import keys
    from engram.store.db import Database

    pool = KeyPool(_app_dsn(srv))
    rings = _keyrings(srv, pool)
    protector = Protector(CryptoSettings(), rings)
    uid = "raced-" + secrets.token_hex(4)
    existing = rings.get("default").key_for("default", uid)
    send = keys.send_key_id_of
    looks: list[str] = []

    async def counted(conn: Any, user: str | None) -> Any:
        looks.append(str(user))
        return await send(conn, user)

    monkeypatch.setattr(keys, "send_key_id_of", counted)

    async def main() -> dict[str, Any]:
        db = Database(_app_dsn(srv), min_size=1, max_size=2, timeout_s=10)
        await db.open()
        try:
            fields = {"email": EMAIL, "first_name": "Grace", "metadata": {"mail": EMAIL}}
            return await add_user(db, protector, "default", uid, fields, plaintext=False)
        finally:
            await db.close()

    try:
        row = asyncio.run(main())
    finally:
        pool.close()
    assert looks == [uid] and row["user_id"] == uid  # the retry looked, the first try did not
    with srv.superuser() as conn:
        stored = conn.execute("SELECT key_id FROM data_keys WHERE user_id = %s", (uid,)).fetchall()
        blob = conn.execute("SELECT profile_enc FROM users WHERE user_id = %s", (uid,)).fetchone()
    assert stored == [(existing,)]
    assert uuidlib.UUID(bytes=bytes(blob[0])[1:17]) == existing  # sealed under the stored key
    with srv.client() as http:
        assert http.get(f"/api/v2/users/{uid}").json()["email"] == EMAIL
