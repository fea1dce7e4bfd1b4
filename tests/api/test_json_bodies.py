"""Nothing in a JSON body is silently changed: text that is not Unicode (a lone
surrogate) and numbers a 64-bit float cannot hold are a 400 naming the field, and
metadata numbers come back as they were sent."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fix_app import App
from tests.fix_server import Server, row_counts

JSON = {"Content-Type": "application/json"}


# Raw bodies: \ud800 is the JSON escape of a lone surrogate (httpx would not send one).
LONE_SURROGATES = [
    ("POST", "/api/v2/users", '{"user_id": "e-UID", "email": "a\\ud800@example.com"}', "email"),
    ("POST", "/api/v2/users", '{"user_id": "f-UID", "first_name": "Ad\\ud800a"}', "first_name"),
    ("PATCH", "/api/v2/users/u-UID", '{"last_name": "\\udfffLovelace"}', "last_name"),
    # Protected metadata (an e-mail address makes it pii, sealed), a value and a name.
    (
        "POST",
        "/api/v2/users",
        '{"user_id": "p-UID", "metadata": {"mail": "ada@example.com", "note": "x\\ud800"}}',
        "metadata.note",
    ),
    (
        "PATCH",
        "/api/v2/users/u-UID",
        '{"metadata": {"mail": "ada@example.com", "n\\udc00te": "x"}}',
        "metadata.n\\udc00te",
    ),
    ("PATCH", "/api/v2/sessions/SID", '{"metadata": {"a": ["ok", "\\ud83d"]}}', "metadata.a[1]"),
    (
        "POST",
        "/api/v2/sessions/SID/memory",
        '{"messages": [{"role_type": "user", "content": "hi", "metadata": {"k": "\\ud800"}}]}',
        "messages[0].metadata.k",
    ),
    (
        "POST",
        "/api/v2/sessions/SID/memory",
        '{"messages": [{"role_type": "user", "content": "a\\ud800b"}]}',
        "messages[0].content",
    ),
    ("POST", "/api/v2/sessions/search", '{"text": "\\ud800", "user_id": "u-UID"}', "text"),
    ("POST", "/v1/search", '{"text": "x", "session_ids": ["SID", "\\ud800"]}', "session_ids[1]"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), LONE_SURROGATES)
def test_a_lone_surrogate_is_400_naming_the_field(
    app: App, client: httpx.Client, session_id: str, uid: str,
    method: str, path: str, body: str, field: str,
) -> None:  # fmt: skip
    before = row_counts(app)
    user = client.get(f"/api/v2/users/u-{uid}").json()
    session = client.get(f"/api/v2/sessions/{session_id}").json()
    r = client.request(
        method,
        path.replace("UID", uid).replace("SID", session_id),
        content=body.replace("UID", uid).replace("SID", session_id).encode(),
        headers=JSON,
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["field"] == field
    assert f"{field}: " in r.json()["message"]
    assert "lone surrogate" in r.json()["message"]
    assert row_counts(app) == before
    assert client.get(f"/api/v2/users/u-{uid}").json() == user
    assert client.get(f"/api/v2/sessions/{session_id}").json() == session


def test_metadata_numbers_come_back_as_they_were_sent(
    client: httpx.Client, session_id: str, uid: str
) -> None:
    # Integers of any size exactly; other numbers as the same 64-bit float, also where
    # PostgreSQL would write them out as integers (1.5e300 as 301 digits).
    numbers = {
        "big": 2**70,
        "neg": -(2**90),
        "huge": 1.5e300,
        "whole": 1e20,
        "tenth": 0.1,
        "tiny": 5e-324,
        "small": 1e-7,
        "one": 1.0,
        "int": 7,
    }
    session = f"/api/v2/sessions/{session_id}"
    assert client.patch(session, json={"metadata": numbers}).status_code == 200
    # Sealed metadata (an e-mail address makes it pii) keeps them too.
    sealed = {**numbers, "mail": "ada@example.com"}
    assert client.patch(f"/api/v2/users/u-{uid}", json={"metadata": sealed}).status_code == 200
    for path, want in ((session, numbers), (f"/api/v2/users/u-{uid}", sealed)):
        got = json.loads(client.get(path).content)["metadata"]
        assert got == want
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}


@pytest.mark.parametrize("number", ["1e-400", "-2.5e-330", "1e400", "-1.8e308"])
def test_a_number_a_64_bit_float_cannot_hold_is_400(
    client: httpx.Client, session_id: str, number: str
) -> None:
    path = f"/api/v2/sessions/{session_id}"
    assert client.patch(path, json={"metadata": {"n": 1}}).status_code == 200
    r = client.patch(
        path, content=b'{"metadata": {"x": {"n": %s}}}' % number.encode(), headers=JSON
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "metadata.x.n"
    assert f"{number} is beyond what a 64-bit floating-point number holds" in r.json()["message"]
    assert "as a string" in r.json()["message"]
    assert client.get(path).json()["metadata"] == {"n": 1}


def test_zero_written_any_way_is_zero(client: httpx.Client, session_id: str) -> None:
    path = f"/api/v2/sessions/{session_id}"
    r = client.patch(path, content=b'{"metadata": {"a": 0e-999, "b": -0.0e5}}', headers=JSON)
    assert r.status_code == 200, r.text
    assert client.get(path).json()["metadata"] == {"a": 0.0, "b": 0.0}


@pytest.mark.parametrize("number", ["1.5e300", "1.5e+300", "2E20", "1e16"])
def test_a_large_float_sent_alone_comes_back_a_float(
    client: httpx.Client, session_id: str, number: str
) -> None:
    # As a client's encoder writes it, with no big integer beside it in the body.
    path = f"/api/v2/sessions/{session_id}"
    body = b'{"metadata": {"f": %s, "list": [%s]}}' % (number.encode(), number.encode())
    r = client.patch(path, content=body, headers=JSON)
    assert r.status_code == 200, r.text
    for got in (json.loads(r.content), json.loads(client.get(path).content)):
        assert got["metadata"] == {"f": float(number), "list": [float(number)]}
        assert isinstance(got["metadata"]["f"], float), got["metadata"]


@pytest.mark.integration
def test_a_nul_character_is_400_naming_the_field_and_never_logged(
    server: Server, http: httpx.Client, uid: str
) -> None:
    # PostgreSQL refuses \u0000 in jsonb and quotes the JSON around it in its log; both
    # logs are a server process's. The body is judged before the route looks anything up.
    session_id = f"s-{uid}"
    marker = f"nul-marker-{uid}"
    before = row_counts(server)
    for path, body, field in [
        (
            "/api/v2/users",
            {"user_id": f"n-{uid}", "metadata": {"a": f"{marker}\x00"}},
            "metadata.a",
        ),
        (
            "/api/v2/sessions",
            {"session_id": f"n-{uid}", "user_id": f"u-{uid}", "metadata": {f"{marker}\x00": 1}},
            f"metadata.{marker}\x00",
        ),
        (
            f"/api/v2/sessions/{session_id}/memory",
            {
                "messages": [
                    {"role_type": "user", "content": "hi", "metadata": {"q": [marker, "\x00"]}}
                ]
            },
            "messages[0].metadata.q[1]",
        ),
        ("/v1/search", {"text": "x", "metadata": {"k": f"{marker}\x00"}}, "metadata.k"),
    ]:
        r = http.post(path, json=body)
        assert r.status_code == 400, r.text
        assert "NUL character" in r.json()["message"] and r.json()["field"] == field, r.text
    assert row_counts(server) == before
    for log in (server.log, server.data_dir / "postgres.log"):
        assert marker not in log.read_text(errors="replace"), log
