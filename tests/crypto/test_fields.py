"""Protected fields end to end: the app in process, the real database read directly."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.fix_app import App, running_app
from tests.fix_server import Server, free_port, short_tmpdir

EMAIL = "ada.lovelace@example.org"
SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"
DIAGNOSIS = "Ada was diagnosed with type 2 diabetes in March"


def _setup(
    client: httpx.Client, uid: str, session_meta: dict[str, Any] | None = None, **user: Any
) -> str:
    body = {"user_id": uid, "first_name": "Ada", **user}
    assert client.post("/api/v2/users", json=body).status_code == 201
    sid = f"s-{uid}"
    r = client.post(
        "/api/v2/sessions", json={"session_id": sid, "user_id": uid, "metadata": session_meta or {}}
    )
    assert r.status_code == 201, r.text
    return sid


def _add(client: httpx.Client, sid: str, *messages: dict[str, Any]) -> None:
    r = client.post(f"/api/v2/sessions/{sid}/memory", json={"messages": list(messages)})
    assert r.status_code == 200, r.text


def _rows(app: App | Server, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with app.superuser() as conn:
        args = params[0] if len(params) == 1 and isinstance(params[0], dict) else params
        return conn.execute(sql, args).fetchall()


def _everything_stored(app: App | Server, uid: str) -> str:
    """Every column of the user, their sessions, messages, facts and entities, as stored."""
    rows = _rows(
        app,
        """SELECT u::text FROM users u WHERE user_id = %(u)s
           UNION ALL SELECT s::text FROM sessions s WHERE user_id = %(u)s
           UNION ALL SELECT m::text FROM messages m WHERE user_id = %(u)s
           UNION ALL SELECT f::text FROM facts f WHERE user_id = %(u)s
           UNION ALL SELECT e::text FROM entities e WHERE user_id = %(u)s""",
        {"u": uid},
    )
    return "\n".join(r[0] for r in rows)


def _wait_extracted(app: App | Server, sid: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = _rows(
            app, "SELECT count(*) FROM episodes WHERE session_id = %s AND status <> 'done'", sid
        )[0][0]
        if left == 0:
            return
        time.sleep(0.2)
    raise AssertionError("extraction did not finish")


def test_detected_values_are_stored_only_as_ciphertext(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid)
    text = f"My email is {EMAIL} and my SSN is {SSN}, I work at Acme in London"
    _add(
        client,
        sid,
        {"role_type": "user", "role": "Ada", "content": text, "metadata": {"card": CARD}},
        {"role_type": "assistant", "content": "Noted, thanks!"},
    )
    _wait_extracted(app, sid)
    stored = _everything_stored(app, uid)
    for secret in (EMAIL, SSN, CARD, "lovelace", "45-6789"):
        assert secret not in stored
    assert "[EMAIL]" in stored and "[SSN]" in stored
    content, enc, level = _rows(
        app,
        "SELECT content, content_enc, sensitivity FROM messages WHERE session_id = %s "
        "AND role = 'Ada'",
        sid,
    )[0]
    assert enc is not None and bytes(enc)[0] == 1  # format version 1
    assert level >= 1 and "Acme" in content  # only the sensitive spans are redacted
    query = "SELECT content_enc FROM messages WHERE session_id = %s AND role = ''"
    plain = _rows(app, query, sid)[0][0]
    assert plain is None  # nothing sensitive: stored as it is

    # Authorised reads get the plaintext back, whatever the route.
    got = client.get(f"/api/v2/sessions/{sid}/memory").json()["messages"]
    assert got[0]["content"] == text and got[0]["metadata"] == {"card": CARD}
    listed = client.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
    assert listed[0]["content"] == text
    one = client.get(f"/api/v2/sessions/{sid}/messages/{got[0]['uuid']}").json()
    assert one["content"] == text
    found = client.post(
        "/api/v2/sessions/search?limit=3", json={"text": "where does Ada work", "user_id": uid}
    ).json()["results"]
    assert any(r["message"]["content"] == text for r in found)


def test_full_text_finds_redacted_form_not_the_secret(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid)
    _add(client, sid, {"role_type": "user", "content": f"reach me at {EMAIL} about the piano"})

    def text_hits(query: str) -> list[dict[str, Any]]:
        body = {"text": query, "user_id": uid, "targets": ["messages"]}
        r = client.post("/v1/search", json=body)
        assert r.status_code == 200, r.text
        return [h for h in r.json()["results"] if "text" in h["score_parts"]]

    # The plain words are searchable; the protected value is not, in any form.
    assert [h["message"]["content"] for h in text_hits("piano")] == [
        f"reach me at {EMAIL} about the piano"
    ]
    assert text_hits("lovelace") == []
    assert text_hits(EMAIL) == []


def test_declared_class_redacts_the_whole_field(app: App, client: httpx.Client, uid: str) -> None:
    sid = _setup(client, uid, {"sensitivity": "phi"})
    _add(client, sid, {"role_type": "user", "content": DIAGNOSIS})
    content, enc, level = _rows(
        app, "SELECT content, content_enc, sensitivity FROM messages WHERE session_id = %s", sid
    )[0]
    assert (content, level) == ("[PHI]", 2) and enc is not None
    _wait_extracted(app, sid)
    assert "diabetes" not in _everything_stored(app, uid)
    got = client.get(f"/api/v2/sessions/{sid}/memory").json()["messages"]
    assert got[0]["content"] == DIAGNOSIS


def test_metadata_update_keeps_values_encrypted(app: App, client: httpx.Client, uid: str) -> None:
    sid = _setup(client, uid)
    _add(client, sid, {"role_type": "user", "content": "hello", "metadata": {"topic": "greeting"}})
    mid = client.get(f"/api/v2/sessions/{sid}/messages").json()["messages"][0]["uuid"]
    r = client.patch(
        f"/api/v2/sessions/{sid}/messages/{mid}", json={"metadata": {"contact": EMAIL}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {"topic": "greeting", "contact": EMAIL}
    meta, enc = _rows(app, "SELECT metadata::text, metadata_enc FROM messages WHERE uuid = %s",
                      mid)[0]  # fmt: skip
    assert EMAIL not in meta and "[EMAIL]" in meta and enc is not None


def test_bad_sensitivity_is_refused_and_nothing_is_stored(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid)
    r = client.post(
        f"/api/v2/sessions/{sid}/memory",
        json={
            "messages": [{"role_type": "user", "content": "x", "metadata": {"sensitivity": "top"}}]
        },
    )
    assert r.status_code == 400 and "none, pii, phi, secret" in r.text
    assert _rows(app, "SELECT count(*) FROM messages WHERE session_id = %s", sid)[0][0] == 0
    _add(client, sid, {"role_type": "user", "content": "hello", "metadata": {"topic": "a"}})
    mid = client.get(f"/api/v2/sessions/{sid}/messages").json()["messages"][0]["uuid"]
    r = client.patch(
        f"/api/v2/sessions/{sid}/messages/{mid}", json={"metadata": {"sensitivity": 7}}
    )
    assert r.status_code == 400 and "metadata.sensitivity" in r.text
    assert client.get(f"/api/v2/sessions/{sid}/messages/{mid}").json()["metadata"] == {"topic": "a"}


def test_ciphertext_copied_to_another_row_does_not_open(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid)
    _add(
        client,
        sid,
        {"role_type": "user", "content": f"first {EMAIL}"},
        {"role_type": "user", "content": f"second {SSN}"},
    )
    with app.superuser() as conn:
        conn.execute(
            """UPDATE messages SET content_enc = (SELECT content_enc FROM messages
                                                  WHERE session_id = %s ORDER BY seq LIMIT 1)
               WHERE session_id = %s AND content LIKE 'second%%'""",
            (sid, sid),
        )
    r = client.get(f"/api/v2/sessions/{sid}/memory")
    assert r.status_code == 500 and "failed authentication" in r.json()["message"]


def test_data_keys_are_per_user_and_wrapped(app: App, client: httpx.Client, uid: str) -> None:
    sid = _setup(client, uid)
    _add(client, sid, {"role_type": "user", "content": f"mail {EMAIL}"})
    other = uid + "b"
    sid2 = _setup(client, other)
    _add(client, sid2, {"role_type": "user", "content": f"mail {EMAIL}"})
    keys = _rows(
        app,
        "SELECT user_id, key_id, state, provider, length(wrapped) FROM data_keys "
        "WHERE user_id IN (%s, %s)",
        uid,
        other,
    )
    assert len(keys) == 2 and keys[0][1] != keys[1][1]
    assert {k[2] for k in keys} == {"primary"} and {k[3] for k in keys} == {"local"}
    assert all(k[4] > 32 for k in keys)  # wrapped, never the bare 32-byte key


def test_a_new_users_key_is_stored_with_the_user_and_only_then(
    app: App, client: httpx.Client, uid: str
) -> None:
    """Creating a user makes its data key in the user's own transaction: one key for a
    user with protected fields, none for one without, and none more for a refused
    duplicate; the stored key opens the user's fields."""
    plain = uid + "p"
    assert (
        client.post(
            "/api/v2/users", json={"user_id": plain, "metadata": {"plan": "pro"}}
        ).status_code
        == 201
    )
    body = {"user_id": uid, "email": EMAIL, "first_name": "Ada", "metadata": {"mail": EMAIL}}
    assert client.post("/api/v2/users", json=body).status_code == 201
    assert client.post("/api/v2/users", json=body).status_code == 400  # taken, as Zep says it
    # A taken id whose user has no key: the insert refuses it, and the key drafted for
    # it is not kept (nor is anything of the refused body).
    again = {"user_id": plain, "email": "mallory@example.org", "first_name": "Mallory"}
    refused = client.post("/api/v2/users", json=again)
    assert refused.status_code == 400 and "already exists" in refused.text
    assert client.get(f"/api/v2/users/{plain}").json()["email"] is None
    keys = _rows(
        app,
        "SELECT user_id, version, state FROM data_keys WHERE user_id IN (%s, %s)",
        uid,
        plain,
    )
    assert keys == [(uid, 1, "primary")]
    got = client.get(f"/api/v2/users/{uid}").json()
    assert (got["email"], got["first_name"], got["metadata"]["mail"]) == (EMAIL, "Ada", EMAIL)
    stored = _rows(app, "SELECT email, profile_enc IS NOT NULL FROM users WHERE user_id = %s", uid)
    assert stored == [("[EMAIL]", True)]


def test_one_user_id_created_at_once_by_many_requests_gets_one_user_and_one_key(
    app: App, uid: str
) -> None:
    """Twelve requests create the same new user at the same moment: one is stored (201),
    every other is refused as taken (400, as Zep says it), and one data key exists, the
    one the stored user's fields open with."""
    from concurrent.futures import ThreadPoolExecutor

    user = uid + "race"
    start = threading.Barrier(12)

    def create(i: int) -> tuple[int, str]:
        with app.client() as http:
            body = {"user_id": user, "email": f"racer{i}@example.org", "last_name": f"R{i}"}
            start.wait()
            r = http.post("/api/v2/users", json=body)
            return r.status_code, r.text

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(create, range(12)))
    codes = sorted(code for code, _ in outcomes)
    assert codes == [201] + [400] * 11, outcomes
    assert all("already exists" in text for code, text in outcomes if code == 400)
    keys = _rows(app, "SELECT version FROM data_keys WHERE user_id = %s", user)
    assert keys == [(1,)]
    with app.client() as http:
        got = http.get(f"/api/v2/users/{user}").json()
    winner = next(text for code, text in outcomes if code == 201)
    assert got["email"] in winner and got["email"].startswith("racer")


@pytest.fixture(scope="module")
def dead_kms() -> Iterator[App]:
    """An app whose key provider (Vault transit) is not reachable."""
    vault = {"url": f"http://127.0.0.1:{free_port()}", "token": "t", "timeout_s": 0.5,
             "retries": 0}  # fmt: skip
    with running_app(
        short_tmpdir("eg-kms-") / "d", crypto={"provider": "vault-transit", "vault": vault},
        worker={"enabled": False},
    ) as app:  # fmt: skip
        yield app


def test_unreachable_provider_refuses_protected_writes_with_503(dead_kms: App) -> None:
    uid = secrets.token_hex(6)
    with dead_kms.client() as client:
        r = client.post("/api/v2/users", json={"user_id": uid, "email": EMAIL})
        assert r.status_code == 503 and "vault-transit" in r.json()["message"]
        r = client.post("/api/v2/users", json={"user_id": uid, "metadata": {"contact": EMAIL}})
        assert r.status_code == 503
        sid = _setup(client, uid, first_name=None)  # nothing protected: no key needed
        r = client.patch(f"/api/v2/sessions/{sid}", json={"metadata": {"contact": EMAIL}})
        assert r.status_code == 503
        assert client.get(f"/api/v2/sessions/{sid}").json()["metadata"] == {}
        r = client.post(
            f"/api/v2/sessions/{sid}/memory",
            json={"messages": [{"role_type": "user", "content": f"mail me at {EMAIL}"}]},
        )
        assert r.status_code == 503, r.text
        assert "vault-transit" in r.json()["message"]
        _add(client, sid, {"role_type": "user", "content": "nothing sensitive here"})
    with dead_kms.superuser() as conn:
        stored = [r[0] for r in conn.execute("SELECT content FROM messages").fetchall()]
        people = conn.execute("SELECT user_id, email, metadata::text FROM users").fetchall()
    assert stored == ["nothing sensitive here"]
    assert people == [(uid, None, "{}")]


def test_no_protected_plaintext_anywhere(app: App) -> None:
    """Every protected field in the database has its ciphertext (coverage 1.0): a
    message's content when its class is higher than its metadata's, its metadata when
    that is protected, and so on."""
    with psycopg.connect(app.pg.dsn("postgres", "engram"), autocommit=True) as conn:
        bad = conn.execute(
            """SELECT count(*) FROM messages WHERE sensitivity > 0 AND content_enc IS NULL
                   AND metadata_sensitivity < sensitivity
               UNION ALL SELECT count(*) FROM messages
                   WHERE metadata_sensitivity > 0 AND metadata_enc IS NULL
               UNION ALL SELECT count(*) FROM facts WHERE sensitivity > 0 AND fact_enc IS NULL
               UNION ALL SELECT count(*) FROM users WHERE identity_sensitivity > 0
                   AND ((email IS NOT NULL AND coalesce(profile_enc, email_enc) IS NULL)
                        OR (first_name IS NOT NULL
                            AND coalesce(profile_enc, first_name_enc) IS NULL)
                        OR (last_name IS NOT NULL
                            AND coalesce(profile_enc, last_name_enc) IS NULL))
               UNION ALL SELECT count(*) FROM users
                   WHERE metadata_sensitivity > 0 AND coalesce(profile_enc, metadata_enc) IS NULL
               UNION ALL SELECT count(*) FROM sessions
                   WHERE metadata_sensitivity > 0 AND metadata_enc IS NULL"""
        ).fetchall()
        # A user's name is personal data whatever it holds: never stored in clear.
        names = conn.execute(
            """SELECT count(*) FROM users
               WHERE (first_name IS NOT NULL AND first_name NOT LIKE '[%%]')
                  OR (last_name IS NOT NULL AND last_name NOT LIKE '[%%]')"""
        ).fetchone()
    assert [b[0] for b in bad] == [0, 0, 0, 0, 0, 0]
    assert names == (0,)


def test_entity_names_never_hold_a_protected_value(
    app: App, client: httpx.Client, uid: str
) -> None:
    """Entity names are not encrypted. A name the extractor took from a protected value
    (a whole phone number, the local part of an e-mail address, the start of an IBAN) is
    stored as the value's marker; a name the message also has outside such a value stays."""
    sid = _setup(client, uid)
    _add(
        client, sid,
        *({"role_type": "user", "role": "Grace", "content": t} for t in (
            "My phone number is +1 415 555 0100.",
            "I met alice@example.org at the conference.",
            "My IBAN is GB82 WEST 1234 5698 7654 32.",
            "My colleague Bob Smith lives in Paris, his email is bob@example.org.",
        )),
    )  # fmt: skip
    _wait_extracted(app, sid)
    names = {r[0] for r in _rows(app, "SELECT name FROM entities WHERE user_id = %s", uid)}
    assert {"[PHONE]", "[EMAIL]", "[IBAN]", "Bob", "Paris"} <= names, names
    for part in ("0100", "alice", "GB82", "example"):
        assert not any(part in n for n in names), (part, names)


def _keys(app: App, client: httpx.Client, tenant: str) -> tuple[httpx.Client, httpx.Client]:
    """A writer without read_protected and one with it, of a new tenant."""
    assert client.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201

    def key_client(**extra: Any) -> httpx.Client:
        body = {"name": "k", "role": "writer", "tenant": tenant, **extra}
        r = client.post("/v1/admin/apikeys", json=body)
        assert r.status_code == 201, r.text
        return app.client(r.json()["key"])

    return key_client(), key_client(read_protected=True)


def test_a_declared_class_covers_the_entity_names_taken_from_the_text(
    app: App, client: httpx.Client, uid: str
) -> None:
    """In a session declared phi, the names the extractor takes from the text are stored
    only sealed: the table holds the class marker, and a reader without read_protected
    sees only that in the graph, the searches and the context; a reader with it sees the
    names, and a later mention of a name finds the same entity."""
    tenant = f"t-{uid}"
    writer, reader = _keys(app, client, tenant)
    with writer, reader:
        assert writer.post("/api/v2/users", json={"user_id": "ada"}).status_code == 201
        r = writer.post("/api/v2/sessions", json={"session_id": "s", "user_id": "ada",
                                                   "metadata": {"sensitivity": "phi"}})  # fmt: skip
        assert r.status_code == 201, r.text
        r = writer.post("/api/v2/sessions", json={"session_id": "plain", "user_id": "ada"})
        assert r.status_code == 201, r.text
        for sid, text in (
            ("s", "I was diagnosed with xylophonitis Marblewick last week."),
            ("s", "I like Marblewick and Paris."),
            ("plain", "I visited Oslo."),
            ("s", "I met Marblewick yesterday."),
            ("plain", "I like Paris."),
        ):
            _add(writer, sid, {"role_type": "user", "role": "Ada", "content": text})
        deadline = time.monotonic() + 60
        while _rows(app, "SELECT count(*) FROM episodes WHERE tenant_id = %s AND status <> "
                    "'done'", tenant)[0][0]:  # fmt: skip
            assert time.monotonic() < deadline, "extraction did not finish"
            time.sleep(0.2)

        secret = ("xylophonitis", "marblewick")
        stored = _rows(
            app,
            """SELECT e::text FROM entities e WHERE tenant_id = %(t)s
               UNION ALL SELECT f::text FROM facts f WHERE tenant_id = %(t)s
               UNION ALL SELECT m::text FROM messages m WHERE tenant_id = %(t)s
               UNION ALL SELECT x::text FROM episodes x WHERE tenant_id = %(t)s""",
            {"t": tenant},
        )
        text = "\n".join(r[0] for r in stored).lower()
        assert not [w for w in secret if w in text]
        names = [r[0] for r in _rows(
            app, "SELECT name FROM entities WHERE tenant_id = %s AND name_enc IS NOT NULL",
            tenant)]  # fmt: skip
        assert names and set(names) == {"[PHI]"}, names

        def seen(c: httpx.Client) -> str:
            out = []
            for r in (
                c.get("/v1/users/ada/graph"),
                c.post("/v1/search", json={"text": "xylophonitis Marblewick", "user_id": "ada",
                                           "targets": ["messages", "facts", "entities"]}),
                c.post("/v1/facts/search", json={"text": "xylophonitis Marblewick",
                                                 "user_id": "ada"}),
                c.get("/v1/sessions/s/context", params={"query": "xylophonitis Marblewick",
                                                        "recent": 0}),
            ):  # fmt: skip
                assert r.status_code == 200, r.text
                out.append(r.text)
            return "\n".join(out)

        assert not [w for w in secret if w in seen(writer).lower()]
        # A fact of the declared session links no name in clear but the speaker's; the
        # plain session's Paris is a node of its own.
        edges = {(f["fact"], f["source"]["name"], f["target"]["name"])
                 for f in writer.get("/v1/users/ada/graph").json()["facts"]}  # fmt: skip
        assert {(fact, s, t) for fact, s, t in edges if fact == "[PHI]"} == {
            ("[PHI]", "Ada", "[PHI]")}, edges  # fmt: skip
        assert ("Ada likes Paris.", "Ada", "Paris") in edges, edges
        graph = reader.get("/v1/users/ada/graph").json()
        names = {e["name"] for e in graph["entities"]}
        assert {"Ada", "xylophonitis Marblewick", "Marblewick"} <= names
        # The third message's "Marblewick" is the second one's entity.
        assert sum(1 for e in graph["entities"] if e["name"] == "Marblewick") == 1
        edges = {(f["source"]["name"], f["relation"], f["target"]["name"])
                 for f in graph["facts"]}  # fmt: skip
        assert {("Ada", "DIAGNOSED_WITH", "xylophonitis Marblewick"),
                ("Ada", "MET", "Marblewick")} <= edges, edges  # fmt: skip
        assert any("xylophonitis" in f["fact"] for f in graph["facts"])
        assert "xylophonitis" in seen(reader).lower()


def test_user_and_session_fields_are_stored_only_as_ciphertext(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(
        client, uid, {"contact": EMAIL, "channel": "web"},
        email=EMAIL, last_name="Lovelace", metadata={"card": CARD, "plan": "pro"},
    )  # fmt: skip
    # The graph does not learn the protected name either (entity names are in clear).
    _add(client, sid, {"role_type": "user", "content": "I moved to Lisbon last year."})
    _wait_extracted(app, sid)
    assert "Lisbon" in _everything_stored(app, uid)
    stored = _everything_stored(app, uid)
    for secret in (EMAIL, "Ada", "Lovelace", "lovelace", CARD):
        assert secret not in stored, secret
    user = _rows(
        app,
        """SELECT email, first_name, last_name, metadata, identity_sensitivity,
                  metadata_sensitivity, profile_enc, email_enc, first_name_enc, last_name_enc,
                  metadata_enc
           FROM users WHERE user_id = %s""",
        uid,
    )[0]
    assert user[:6] == (
        "[EMAIL]", "[PII]", "[PII]", {"card": "[PAYMENT_CARD]", "plan": "pro"}, 1, 3,
    )  # fmt: skip
    # One ciphertext holds them all; the per-field columns of older rows stay empty.
    assert user[6] is not None and bytes(user[6])[0] == 1
    assert user[7:] == (None, None, None, None)
    session = _rows(
        app,
        "SELECT metadata, metadata_sensitivity, metadata_enc FROM sessions WHERE session_id = %s",
        sid,
    )[0]
    assert session[:2] == ({"contact": "[EMAIL]", "channel": "web"}, 1)
    assert session[2] is not None

    # Authorised reads get the plaintext back, on every route that returns them.
    plain_user = {"email": EMAIL, "first_name": "Ada", "last_name": "Lovelace",
                  "metadata": {"card": CARD, "plan": "pro"}}  # fmt: skip
    got = client.get(f"/api/v2/users/{uid}").json()
    assert {k: got[k] for k in plain_user} == plain_user
    listed = client.get("/api/v2/users-ordered", params={"pageSize": 1000}).json()["users"]
    mine = next(u for u in listed if u["user_id"] == uid)
    assert {k: mine[k] for k in plain_user} == plain_user
    plain_meta = {"contact": EMAIL, "channel": "web"}
    assert client.get(f"/api/v2/sessions/{sid}").json()["metadata"] == plain_meta
    assert client.get(f"/api/v2/users/{uid}/sessions").json()[0][0]["metadata"] == plain_meta
    ordered = client.get("/api/v2/sessions-ordered", params={"page_size": 1000}).json()
    assert next(x for x in ordered["sessions"] if x["session_id"] == sid)["metadata"] == plain_meta
    assert client.get(f"/api/v2/sessions/{sid}/memory").json()["metadata"] == plain_meta

    # Updates merge into the real values and keep them sealed.
    r = client.patch(
        f"/api/v2/users/{uid}",
        json={"first_name": "Augusta", "metadata": {"phone": "+1 415 555 0100"}},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["first_name"], r.json()["last_name"], r.json()["email"]) == (
        "Augusta", "Lovelace", EMAIL)  # fmt: skip
    assert r.json()["metadata"] == {"card": CARD, "plan": "pro", "phone": "+1 415 555 0100"}
    r = client.patch(f"/api/v2/sessions/{sid}", json={"metadata": {"topic": "billing"}})
    assert r.json()["metadata"] == {**plain_meta, "topic": "billing"}
    stored = _everything_stored(app, uid)
    for secret in (EMAIL, "Augusta", "Lovelace", CARD, "555 0100"):
        assert secret not in stored, secret


def test_session_declared_class_covers_its_metadata(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid, {"sensitivity": "phi", "topic": "diabetes follow-up"})
    meta, level = _rows(
        app, "SELECT metadata, metadata_sensitivity FROM sessions WHERE session_id = %s", sid
    )[0]
    assert (meta, level) == ({"sensitivity": "phi", "topic": "[PHI]"}, 2)
    got = client.get(f"/api/v2/sessions/{sid}").json()["metadata"]
    assert got == {"sensitivity": "phi", "topic": "diabetes follow-up"}
    # The declared class still reaches the session's messages.
    _add(client, sid, {"role_type": "user", "content": "my sugar was high today"})
    assert _rows(app, "SELECT content FROM messages WHERE session_id = %s", sid) == [("[PHI]",)]


def test_a_session_declared_class_cannot_be_lowered(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid, {"sensitivity": "phi", "topic": "diabetes follow-up"})
    query = (
        "SELECT metadata, metadata_sensitivity, metadata_enc FROM sessions WHERE session_id = %s"
    )
    before = _rows(app, query, sid)
    for lower in ("none", "pii"):
        r = client.patch(f"/api/v2/sessions/{sid}", json={"metadata": {"sensitivity": lower}})
        assert r.status_code == 400, r.text
        assert "cannot lower" in r.text and "new session" in r.text
        assert _rows(app, query, sid) == before
    # Raising it is allowed: the values stay protected, at the higher class.
    r = client.patch(f"/api/v2/sessions/{sid}", json={"metadata": {"sensitivity": "secret"}})
    assert r.status_code == 200, r.text
    meta, level, ciphertext = _rows(app, query, sid)[0]
    assert meta["topic"] != "diabetes follow-up" and level == 3 and ciphertext is not None
    got = client.get(f"/api/v2/sessions/{sid}").json()["metadata"]
    assert got == {"sensitivity": "secret", "topic": "diabetes follow-up"}


def test_callers_without_read_protected_get_the_redacted_form(
    app: App, client: httpx.Client, uid: str
) -> None:
    plain, protected = _keys(app, client, f"t-{uid}")
    with plain as writer, protected as reader:
        r = writer.post(
            "/api/v2/users",
            json={"user_id": "ada", "email": EMAIL, "first_name": "Ada", "metadata": {"ssn": SSN}},
        )
        assert r.status_code == 201, r.text
        redacted = {"email": "[EMAIL]", "first_name": "[PII]", "metadata": {"ssn": "[SSN]"}}
        assert {k: r.json()[k] for k in redacted} == redacted
        r = writer.post(
            "/api/v2/sessions",
            json={"session_id": "s", "user_id": "ada", "metadata": {"contact": EMAIL}},
        )
        assert r.status_code == 201 and r.json()["metadata"] == {"contact": "[EMAIL]"}
        _add(writer, "s", {"role_type": "user", "content": f"write to {EMAIL}"})
        # A writer's update merges into the real values, though it sees only markers.
        r = writer.patch("/api/v2/users/ada", json={"last_name": "Lovelace"})
        assert {k: r.json()[k] for k in ("email", "first_name", "last_name")} == (
            {"email": "[EMAIL]", "first_name": "[PII]", "last_name": "[PII]"})  # fmt: skip
        for c, email, first, ssn in ((writer, "[EMAIL]", "[PII]", "[SSN]"),
                                     (reader, EMAIL, "Ada", SSN)):  # fmt: skip
            got = c.get("/api/v2/users/ada").json()
            assert (got["email"], got["first_name"], got["metadata"]) == (
                email,
                first,
                {"ssn": ssn},
            )
            listed = c.get("/api/v2/users-ordered").json()["users"]
            assert [u["email"] for u in listed] == [email]
            assert c.get("/api/v2/sessions/s").json()["metadata"] == {"contact": email}
            memory = c.get("/api/v2/sessions/s/memory").json()
            assert memory["metadata"] == {"contact": email}
            assert memory["messages"][0]["content"] == f"write to {email}"
        assert reader.get("/api/v2/users/ada").json()["last_name"] == "Lovelace"


def test_user_ciphertext_copied_to_another_user_does_not_open(
    app: App, client: httpx.Client, uid: str
) -> None:
    for u in (uid, uid + "b"):
        r = client.post("/api/v2/users", json={"user_id": u, "email": f"{u}@example.org"})
        assert r.status_code == 201
    with app.superuser() as conn:
        conn.execute(
            """UPDATE users SET profile_enc = (SELECT profile_enc FROM users WHERE user_id = %s)
               WHERE user_id = %s""",
            (uid, uid + "b"),
        )
    r = client.get(f"/api/v2/users/{uid}b")
    assert r.status_code == 500 and "failed authentication" in r.json()["message"]
    assert client.get(f"/api/v2/users/{uid}").json()["email"] == f"{uid}@example.org"
    # A damaged row fails every page it is on (by design): later tests list all users.
    assert client.delete(f"/api/v2/users/{uid}b").status_code == 200
