"""The 4x4 rotation matrix through the real storage path.

Four keysets, as a staged rotation passes through them (and as a process holding a key
table from another moment sees them): {old primary, old+new with old primary, new
primary, old retired}. For each, a user with their own data key (version 1 "old" and 2
"new", made by the real keyring in `data_keys`) gets a user record, a session and a
message written through the API while their key is in that keyset. Then each of the 16
cells puts the key in a keyset and reads those rows back through the API (the reveal
path): every value is the plaintext, or the request fails with the documented error; it
never answers with other data. The server's key cache is off (TTL 0), so each request
sees the keyset the test just set.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from engram.crypto import DataKeyCache, KeyState
from engram.crypto.keyring import DataKeyRecord
from engram.crypto.protect import Keyrings
from engram.crypto.providers import LocalKeyProvider
from engram.store.keys import KeyPool, PgKeyStore
from tests.fix_app import App, running_app
from tests.fix_server import short_tmpdir

TENANT = "default"
P, A, D = KeyState.PRIMARY, KeyState.ACTIVE, KeyState.DISABLED
# (state of version 1 "old", state of version 2 "new"); None: that version is absent.
KEYSETS: dict[str, tuple[KeyState, KeyState | None]] = {
    "old_primary": (P, None),
    "old+new_old_primary": (P, A),
    "new_primary": (A, P),
    "old_retired": (D, P),
}
WRITES_WITH = {"old_primary": 1, "old+new_old_primary": 1, "new_primary": 2, "old_retired": 2}
# Reading a ciphertext of version v under a keyset: "ok", or the error it must fail with.
EXPECT = {
    ("old_primary", 1): "ok",
    ("old_primary", 2): "does not exist",
    ("old+new_old_primary", 1): "ok",
    ("old+new_old_primary", 2): "ok",
    ("new_primary", 1): "ok",
    ("new_primary", 2): "ok",
    ("old_retired", 1): "is disabled",
    ("old_retired", 2): "ok",
}
EMAIL = "katherine.johnson@example.org"
SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"


@dataclass
class Written:
    """What one user wrote while their key was in one keyset."""

    keyset: str
    user_id: str
    session_id: str
    key_id: uuidlib.UUID
    records: dict[int, DataKeyRecord]  # the two versions as the keyring made them

    @property
    def user(self) -> dict[str, Any]:
        return {"email": EMAIL, "first_name": "Katherine", "last_name": self.keyset,
                "metadata": {"ssn": SSN, "keyset": self.keyset}}  # fmt: skip

    @property
    def session_metadata(self) -> dict[str, Any]:
        return {"contact": EMAIL, "keyset": self.keyset}

    @property
    def message(self) -> dict[str, Any]:
        return {"content": f"written under {self.keyset}: mail {EMAIL}",
                "metadata": {"card": CARD}}  # fmt: skip


@dataclass
class Matrix:
    server: App
    store: PgKeyStore
    written: dict[str, Written]

    def set_keyset(self, w: Written, keyset: str) -> None:
        """Put `w`'s data key in `keyset`, in `data_keys` (through the real key store)."""
        old, new = KEYSETS[keyset]
        self.store.put(dataclasses.replace(w.records[1], state=old))
        if new is None:
            with self.server.superuser() as conn:
                conn.execute("DELETE FROM data_keys WHERE key_id = %s AND version = 2", (w.key_id,))
        else:
            self.store.put(dataclasses.replace(w.records[2], state=new))
        states = {r.version: r.state for r in self.store.versions(w.key_id)}
        assert states == {1: old, **({2: new} if new else {})}


def _versions(server: App, user_id: str) -> dict[int, int]:
    """Key versions named by every ciphertext of the user, their session and message."""
    with server.superuser() as conn:
        rows = conn.execute(
            """SELECT get_byte(c, 20), count(*) FROM (
                   SELECT unnest(ARRAY[profile_enc, email_enc, first_name_enc, last_name_enc,
                                       metadata_enc])
                   FROM users WHERE user_id = %(u)s
                   UNION ALL SELECT metadata_enc FROM sessions WHERE user_id = %(u)s
                   UNION ALL SELECT unnest(ARRAY[content_enc, metadata_enc]) FROM messages
                   WHERE user_id = %(u)s) t(c)
               WHERE c IS NOT NULL GROUP BY 1""",
            {"u": user_id},
        ).fetchall()
    return {int(v): int(n) for v, n in rows}


@pytest.fixture(scope="module")
def matrix() -> Iterator[Matrix]:
    with running_app(short_tmpdir("eg-mx-") / "d", worker={"enabled": False},
                     crypto={"dek_cache_ttl_s": 0}) as srv:  # fmt: skip
        yield from _matrix(srv)


def _matrix(srv: App) -> Iterator[Matrix]:
    pool = KeyPool(srv.pg.dsn("engram_app", "engram"))
    rings = Keyrings(
        LocalKeyProvider(srv.data_dir / "keys" / "kek.json"),
        lambda t: PgKeyStore(pool, t),
        DataKeyCache(ttl_s=0),
    )
    ring = rings.get(TENANT)
    store = ring.store
    assert isinstance(store, PgKeyStore)
    m = Matrix(srv, store, {})
    try:
        with srv.client() as http:
            for keyset in KEYSETS:
                user_id = f"mx-{keyset}-{secrets.token_hex(3)}"
                # The user's data key with both versions, as a staged rotation makes them.
                key_id = ring.key_for(TENANT, user_id)
                assert ring.add_version(key_id, primary=False) == 2
                records = {r.version: r for r in store.versions(key_id)}
                w = Written(keyset, user_id, f"s-{user_id}", key_id, records)
                m.set_keyset(w, keyset)
                r = http.post("/api/v2/users", json={"user_id": user_id, **w.user})
                assert r.status_code == 201, r.text
                body = {"session_id": w.session_id, "user_id": user_id,
                        "metadata": w.session_metadata}  # fmt: skip
                assert http.post("/api/v2/sessions", json=body).status_code == 201
                msg = {"role_type": "user", **w.message}
                r = http.post(f"/api/v2/sessions/{w.session_id}/memory", json={"messages": [msg]})
                assert r.status_code == 200, r.text
                # The user's profile, the session's metadata, the message's content and
                # metadata, all on the version this keyset writes with.
                assert _versions(srv, user_id) == {WRITES_WITH[keyset]: 4}
                m.written[keyset] = w
        yield m
    finally:
        pool.close()


def _reads(http: httpx.Client, w: Written) -> list[httpx.Response]:
    return [
        http.get(f"/api/v2/users/{w.user_id}"),
        http.get(f"/api/v2/sessions/{w.session_id}"),
        http.get(f"/api/v2/sessions/{w.session_id}/memory"),
    ]


CELLS = [
    pytest.param(writer, reader, id=f"written_{writer}-read_{reader}")
    for writer in KEYSETS
    for reader in KEYSETS
]


@pytest.mark.parametrize(("writer", "reader"), CELLS)
def test_rotation_matrix(matrix: Matrix, writer: str, reader: str) -> None:
    w = matrix.written[writer]
    matrix.set_keyset(w, reader)
    version = WRITES_WITH[writer]
    expected = EXPECT[(reader, version)]
    with matrix.server.client() as http:
        user, session, memory = _reads(http, w)
    if expected == "ok":
        assert [r.status_code for r in (user, session, memory)] == [200, 200, 200]
        assert {k: user.json()[k] for k in w.user} == w.user
        assert session.json()["metadata"] == w.session_metadata
        got = memory.json()
        assert got["metadata"] == w.session_metadata
        assert [(m["content"], m["metadata"]) for m in got["messages"]] == [
            (w.message["content"], w.message["metadata"])
        ]
        return
    # Refused, naming the key version, on every route: never redacted or other data.
    message = f"data key {w.key_id} v{version} {expected}"
    for r in (user, session, memory):
        assert r.status_code == 500, r.text
        assert r.json()["message"] == message
        assert EMAIL not in r.text and "[EMAIL]" not in r.text


@pytest.mark.parametrize("writer", list(KEYSETS))
def test_old_version_destroyed(matrix: Matrix, writer: str) -> None:
    """Beside the matrix: once the retired version is destroyed, what it encrypted stays
    redacted (crypto-shredded by design); what the new version encrypted still opens."""
    w = matrix.written[writer]
    matrix.set_keyset(w, "old_retired")
    matrix.store.put(dataclasses.replace(w.records[1], state=KeyState.DESTROYED, wrapped=None))
    try:
        with matrix.server.client() as http:
            user, session, memory = _reads(http, w)
    finally:
        matrix.store.put(w.records[1])  # back to the snapshot, for the other tests
    assert [r.status_code for r in (user, session, memory)] == [200, 200, 200]
    got = memory.json()["messages"][0]
    if WRITES_WITH[writer] == 2:
        assert {k: user.json()[k] for k in w.user} == w.user
        assert got["content"] == w.message["content"]
        return
    assert (user.json()["email"], user.json()["first_name"]) == ("[EMAIL]", "[PII]")
    assert user.json()["metadata"] == {"ssn": "[SSN]", "keyset": writer}
    assert session.json()["metadata"] == {"contact": "[EMAIL]", "keyset": writer}
    assert got["content"] == f"written under {writer}: mail [EMAIL]"
    assert got["metadata"] == {"card": "[PAYMENT_CARD]"}


def test_a_new_user_is_sealed_under_its_new_key_with_no_key_cache(matrix: Matrix) -> None:
    """The matrix's server keeps no unwrapped key in memory (dek_cache_ttl_s 0): a new
    user's key, made for the request and stored with the user, seals and reads all the
    same, and the user's data is under it."""
    user_id = f"mx-new-{secrets.token_hex(3)}"
    with matrix.server.client() as http:
        r = http.post("/api/v2/users", json={"user_id": user_id, "email": EMAIL})
        assert r.status_code == 201, r.text
        assert http.get(f"/api/v2/users/{user_id}").json()["email"] == EMAIL
    assert _versions(matrix.server, user_id) == {1: 1}
    with matrix.server.superuser() as conn:
        keys = conn.execute("SELECT count(*) FROM data_keys WHERE user_id = %s", (user_id,))
        assert keys.fetchone() == (1,)
