"""`engram keys reclassify`: text written while encryption was off, sealed once it is on."""

from __future__ import annotations

import secrets
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.fix_server import ENGRAM, Server, short_tmpdir, start_server, stop_server

pytestmark = pytest.mark.integration

ON = {"ENGRAM_CRYPTO__DEK_CACHE_TTL_S": "1"}


def _keys_run(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `engram keys ...` against the server's database."""
    import os

    return subprocess.run(
        [ENGRAM, "keys", *args, "--data-dir", str(server.data_dir),
         "--database-url", server.pg.dsn("engram_app", "engram")],
        capture_output=True, text=True, timeout=600, env={**os.environ, **ON},
    )  # fmt: skip


def _keys(server: Server, *args: str) -> str:
    """Run `engram keys ...`; it must succeed; what it printed, as one line (the console
    wraps)."""
    done = _keys_run(server, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return " ".join((done.stdout + done.stderr).split())


def _rows(server: Server, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with server.superuser() as conn:
        return conn.execute(query, params).fetchall()


def _stored(server: Server) -> str:
    """Every message, fact and entity row, as stored."""
    rows = _rows(
        server,
        """SELECT m::text FROM messages m UNION ALL SELECT f::text FROM facts f
           UNION ALL SELECT e::text FROM entities e""",
    )
    return "\n".join(r[0] for r in rows)


def _content(server: Server, like: str) -> dict[str, tuple[Any, ...]]:
    """user id -> (content, content_enc, sensitivity, search_text, embedding) of the
    message whose content is like `like`."""
    rows = _rows(
        server,
        """SELECT user_id, content, content_enc, sensitivity, search_text::text,
                  embedding::text
           FROM messages WHERE content LIKE %s""",
        like,
    )
    return {r[0]: r[1:] for r in rows}


def _wait_extracted(server: Server, *users: str) -> None:
    """Wait until the episodes of `users` (of everyone if none) are extracted."""
    query = "SELECT count(*) FROM episodes WHERE status <> 'done' AND (%s OR user_id = ANY(%s))"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _rows(server, query, not users, list(users))[0][0] == 0:
            return
        time.sleep(0.2)
    states = _rows(server, "SELECT status, count(*) FROM episodes GROUP BY 1")
    raise AssertionError(f"extraction did not finish: {states}\n{server.log.read_text()[-3000:]}")


def _contents(http: httpx.Client, sid: str) -> list[str]:
    got = http.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
    return [m["content"] for m in got]


@pytest.mark.slow
def test_text_written_while_encryption_was_off_is_sealed_by_reclassify() -> None:
    """Messages and the facts extracted from them while crypto.enabled was off are stored
    in clear with class none. Once encryption is on, `engram keys reclassify` seals the
    protected ones under their user's key (redacted plain column, full-text vector and
    embedding made from the redacted form); a crypto-shredded user's keep their redacted
    form only. Reads get the plaintext back; text with nothing protected is left as it
    was; a second run finds nothing to do."""
    root = short_tmpdir("eg-rc-")
    key = secrets.token_urlsafe(24)
    srv = start_server(root / "d", api_key=key, env=ON)  # the users and their keys
    try:
        with srv.client() as http:
            for uid in ("grace", "bob"):
                user = {"user_id": uid, "email": f"{uid}@example.org"}
                assert http.post("/api/v2/users", json=user).status_code == 201
    finally:
        stop_server(srv)
    srv = start_server(root / "d", api_key=key, env={"ENGRAM_CRYPTO__ENABLED": "false"})
    try:
        with srv.client() as http:
            for uid in ("grace", "bob"):
                meta = {"contact": f"{uid}@example.org", "channel": "web"}
                body = {"session_id": f"s-{uid}", "user_id": uid, "metadata": meta}
                assert http.post("/api/v2/sessions", json=body).status_code == 201
                messages = [
                    {"role_type": "user", "role": uid.title(),
                     "content": f"My email is {uid}@example.org."},
                    {"role_type": "user", "role": uid.title(),
                     "content": "I moved to Paris in 2020."},
                ]  # fmt: skip
                added = http.post(f"/api/v2/sessions/s-{uid}/memory", json={"messages": messages})
                assert added.status_code == 200, added.text
        _wait_extracted(srv)
        before = _content(srv, "%")
        facts = [r[0] for r in _rows(srv, "SELECT fact FROM facts ORDER BY fact")]
        assert "Grace's email is grace@example.org." in facts
    finally:
        stop_server(srv)

    srv = start_server(root / "d", api_key=key, env=ON)
    try:
        assert "destroyed" in _keys(srv, "shred", "--user", "bob", "--yes")
        # The sessions written while off are sealed by a re-encryption run, the shredded
        # user's kept redacted only (the run does not fail on them); message content is
        # not touched: it was never classified.
        _keys(srv, "reencrypt", "--now")
        sessions = _rows(
            srv,
            """SELECT user_id, metadata->>'contact', metadata_enc IS NOT NULL,
                      metadata_sensitivity FROM sessions ORDER BY user_id""",
        )
        assert sessions == [("bob", "[EMAIL]", False, 0), ("grace", "[EMAIL]", True, 1)]
        assert "stored before their fields were classified" not in _keys(srv, "status")
        assert "grace@example.org" in _stored(srv)

        out = _keys(srv, "reclassify")
        assert "2 sealed, 2 kept redacted only" in out, out

        stored = _stored(srv)
        for secret in ("grace@example.org", "bob@example.org"):
            assert secret not in stored
        email = _content(srv, "My email is %")
        content, enc, level, words, vector = email["grace"]
        assert content == "My email is [EMAIL]." and enc is not None and level == 1
        assert "example" not in words and vector != before["grace"][4]
        content, enc, level, words, vector = email["bob"]
        assert content == "My email is [EMAIL]." and enc is None and level == 0
        assert "example" not in words and vector != before["bob"][4]
        paris = _content(srv, "I moved to Paris%")  # nothing protected: left as it was
        assert {u: r[1] for u, r in paris.items()} == {"grace": None, "bob": None}
        assert {u: r[4] for u, r in paris.items()} == {
            u: r[4] for u, r in before.items() if r[0].startswith("I moved")
        }
        sealed_facts = _rows(
            srv, "SELECT fact, fact_enc IS NOT NULL FROM facts WHERE fact LIKE '%%email%%'"
        )
        assert sorted(sealed_facts) == [
            ("Bob's email is [EMAIL].", False),
            ("Grace's email is [EMAIL].", True),
        ]

        with srv.client() as http:
            assert _contents(http, "s-grace") == [
                "My email is grace@example.org.",
                "I moved to Paris in 2020.",
            ]
            assert _contents(http, "s-bob") == ["My email is [EMAIL].", "I moved to Paris in 2020."]
            found = http.post(
                "/v1/search", json={"text": "email", "user_id": "grace", "targets": ["facts"]}
            ).json()["results"]
            assert "Grace's email is grace@example.org." in [f["fact"]["fact"] for f in found]

        again = _keys(srv, "reclassify")
        assert "0 sealed, 0 kept redacted only" in again, again
    finally:
        stop_server(srv)


def test_entity_names_holding_a_protected_value_are_renamed_or_merged(
    server: Server, http: httpx.Client, uid: str
) -> None:
    """Names stored before the extractor's names were checked: a name (or alias) that
    holds a protected value is renamed to the value's marker, or merged, facts and
    mentions with it, into the user's entity of that name."""
    other = f"{uid}-b"
    for u in (uid, other):
        assert http.post("/api/v2/users", json={"user_id": u}).status_code == 201
        body = {"session_id": f"s-{u}", "user_id": u}
        assert http.post("/api/v2/sessions", json=body).status_code == 201
        text = {"role_type": "user", "role": "Grace",
                "content": "My phone number is +1 415 555 0100."}  # fmt: skip
        r = http.post(f"/api/v2/sessions/s-{u}/memory", json={"messages": [text]})
        assert r.status_code == 200, r.text
    _wait_extracted(server, uid, other)
    with server.superuser() as conn:
        # As such names were stored: the value itself, and an alias holding it.
        conn.execute(
            """UPDATE entities SET name = '1 415 555 0100', normalized_name = '1 415 555 0100',
                   aliases = ARRAY['+1 415 555 0100', 'my number']
               WHERE user_id = ANY(%s) AND name = '[PHONE]'""",
            ([uid, other],),
        )
        # The first user also has a node named by the marker already.
        conn.execute(
            """INSERT INTO entities (tenant_id, user_id, name, normalized_name, name_embedding)
               SELECT tenant_id, user_id, '[PHONE]', '[phone]', name_embedding
               FROM entities WHERE user_id = %s AND name = '1 415 555 0100'""",
            (uid,),
        )
    out = _keys(server, "reclassify")
    assert "2 entity name(s) holding a protected value renamed" in out, out

    def graph(user: str) -> tuple[set[str], set[str], list[tuple[str, str]]]:
        rows = _rows(server, "SELECT name, aliases FROM entities WHERE user_id = %s", user)
        edges = _rows(
            server,
            """SELECT s.name, t.name FROM facts f JOIN entities s ON s.uuid = f.source_uuid
               JOIN entities t ON t.uuid = f.target_uuid WHERE f.user_id = %s""",
            user,
        )
        return {r[0] for r in rows}, {a for r in rows for a in r[1]}, sorted(edges)

    for user in (uid, other):
        names, aliases, edges = graph(user)
        assert "[PHONE]" in names and not any("0100" in n for n in names | aliases), names
        assert "my number" in aliases
        assert ("Grace's phone number", "[PHONE]") in edges, edges
    assert len([n for n in graph(uid)[0] if n == "[PHONE]"]) == 1  # merged, not doubled
    assert "0 entity name(s)" in _keys(server, "reclassify")


def test_entity_names_taken_from_text_of_a_declared_class_are_sealed(
    server: Server, http: httpx.Client, uid: str
) -> None:
    """Names stored in clear before a declared class covered them: a name that only
    messages of a declared protected class mention is sealed (the table keeps its
    marker, a reader allowed protected fields still sees it); a speaker's name, and a
    name a message of no declared class also mentions, stay."""
    assert http.post("/api/v2/users", json={"user_id": uid}).status_code == 201
    for sid, meta, text in (
        (f"p-{uid}", {"sensitivity": "phi"}, "I was diagnosed with xylophonitis Marblewick."),
        (f"p-{uid}", {"sensitivity": "phi"}, "I visited Paris."),
        (f"o-{uid}", {}, "I visited Paris."),
    ):
        body = {"session_id": sid, "user_id": uid, "metadata": meta}
        http.post("/api/v2/sessions", json=body)
        msg = {"role_type": "user", "role": "Ada", "content": text}
        r = http.post(f"/api/v2/sessions/{sid}/memory", json={"messages": [msg]})
        assert r.status_code == 200, r.text
    _wait_extracted(server, uid)
    with server.superuser() as conn:
        # As the names were stored before: in clear, with an alias; the phi session's
        # Paris is the other session's.
        conn.execute(
            """UPDATE entities SET name = 'xylophonitis Marblewick', name_enc = NULL,
                   normalized_name = 'xylophonitis marblewick', aliases = ARRAY['xylo m']
               WHERE user_id = %s AND labels = ARRAY['concept']""",
            (uid,),
        )
        places = conn.execute(
            """SELECT uuid FROM entities WHERE user_id = %s AND name <> 'Ada'
                   AND NOT labels @> ARRAY['concept'] ORDER BY name_enc IS NULL""",
            (uid,),
        ).fetchall()
        sealed_paris, clear_paris = (r[0] for r in places)
        assert sealed_paris and clear_paris
        conn.execute(
            "UPDATE facts SET target_uuid = %s WHERE target_uuid = %s", (clear_paris, sealed_paris)
        )
        conn.execute(
            "UPDATE entity_mentions SET entity_uuid = %s WHERE entity_uuid = %s",
            (clear_paris, sealed_paris),
        )
        conn.execute("DELETE FROM entities WHERE uuid = %s", (sealed_paris,))
    out = _keys(server, "reclassify")
    assert "1 entity name(s) taken from text of a declared class sealed" in out, out
    rows = _rows(server, "SELECT e::text FROM entities e WHERE user_id = %s", uid)
    stored = "\n".join(r[0] for r in rows).lower()
    assert "xylophonitis" not in stored and "xylo m" not in stored
    names = sorted(r[0] for r in _rows(server, "SELECT name FROM entities WHERE user_id = %s", uid))
    assert names == ["Ada", "Paris", "[PHI]"], names
    graph = http.get(f"/v1/users/{uid}/graph").json()
    edges = {(f["source"]["name"], f["target"]["name"]) for f in graph["facts"]}
    assert {("Ada", "xylophonitis Marblewick"), ("Ada", "Paris")} <= edges, edges
    assert "0 entity name(s) taken from text" in _keys(server, "reclassify")


def test_a_keys_command_for_a_tenant_that_does_not_exist_is_refused_and_changes_nothing(
    server: Server,
) -> None:
    """A mistyped --tenant is refused with the reason, before anything is recorded: no
    re-encryption run, no data key, no audit record for it."""

    def counts() -> tuple[Any, ...]:
        return _rows(
            server,
            """SELECT (SELECT count(*) FROM reencrypt_runs),
                      (SELECT count(*) FROM data_keys WHERE tenant_id = 'nope'),
                      (SELECT count(*) FROM audit_log WHERE tenant_id = 'nope')""",
        )[0]

    before = counts()
    for args in (("reclassify",), ("reencrypt", "--now"), ("rotate", "--now"), ("status",)):
        done = _keys_run(server, *args, "--tenant", "nope")
        said = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 2, said
        assert "tenant 'nope' does not exist" in said and "engram tenants list" in said
    assert counts() == before
