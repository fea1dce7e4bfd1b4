"""Bad requests get a 400/404 that names the problem, and write nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.fix_app import App
from tests.fix_server import row_counts


def _msg(**kw: object) -> dict[str, object]:
    return {"role_type": "user", "content": "hello there", **kw}


BAD_MEMORY_BODIES = [
    ({"messages": []}, "messages"),
    ({"messages": [_msg(content="")]}, "messages[0].content"),
    ({"messages": [_msg(content="   ")]}, "messages[0].content"),
    ({"messages": [_msg(content="\ufeff\u3000\x1c")]}, "messages[0].content"),
    ({"messages": [_msg(created_at=0)]}, "messages[0].created_at"),
    ({"messages": [_msg(content="x" * 70_000)]}, "messages[0].content"),
    ({"messages": [_msg(role_type="wizard")]}, "messages[0].role_type"),
    ({"messages": [{"content": "no role type"}]}, "messages[0].role_type"),
    ({"messages": [_msg(content=42)]}, "messages[0].content"),
    ({"messages": [_msg(), _msg(metadata="not an object")]}, "messages[1].metadata"),
    ({"messages": "hello"}, "messages"),
    ({}, "messages"),
]


@pytest.mark.parametrize(("body", "field"), BAD_MEMORY_BODIES)
def test_bad_messages_are_400_naming_the_field(
    app: App, client: httpx.Client, session_id: str, body: dict[str, object], field: str
) -> None:
    before = row_counts(app)
    r = client.post(f"/api/v2/sessions/{session_id}/memory", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert field.split(".")[-1].split("[")[0] in r.json()["message"]
    assert row_counts(app) == before


def test_one_bad_message_rejects_the_whole_episode(
    app: App, client: httpx.Client, session_id: str
) -> None:
    before = row_counts(app)
    body = {"messages": [_msg(), _msg(role_type="nobody")]}
    assert client.post(f"/api/v2/sessions/{session_id}/memory", json=body).status_code == 400
    assert row_counts(app) == before


def test_malformed_json_is_400(app: App, client: httpx.Client, session_id: str) -> None:
    before = row_counts(app)
    r = client.post(
        f"/api/v2/sessions/{session_id}/memory",
        content=b'{"messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["message"]
    assert row_counts(app) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v2/users", {"user_id": ""}, "user_id"),
        ("/api/v2/users", {"user_id": 7}, "user_id"),
        ("/api/v2/users", {"user_id": "ok", "metadata": [1, 2]}, "metadata"),
        ("/api/v2/sessions", {}, "session_id"),
        ("/api/v2/sessions", {"session_id": "a/b"}, "session_id"),
        ("/api/v2/sessions/search", {"text": ""}, "text"),
        ("/api/v2/sessions/search", {"text": "x", "search_type": "fuzzy"}, "search_type"),
        ("/api/v2/sessions/search", {"text": "x", "mmr_lambda": 3}, "mmr_lambda"),
    ],
)
def test_bad_bodies_are_400(
    app: App, client: httpx.Client, path: str, body: dict[str, object], field: str
) -> None:
    before = row_counts(app)
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert row_counts(app) == before


def test_unknown_ids_are_404_in_zep_shape(app: App, client: httpx.Client, uid: str) -> None:
    before = row_counts(app)
    cases = [
        client.get(f"/api/v2/users/nobody-{uid}"),
        client.patch(f"/api/v2/users/nobody-{uid}", json={"email": "a@b.c"}),
        client.get(f"/api/v2/users/nobody-{uid}/sessions"),
        client.post(
            "/api/v2/sessions", json={"session_id": f"s-{uid}", "user_id": f"nobody-{uid}"}
        ),
        client.patch(f"/api/v2/sessions/none-{uid}", json={"metadata": {"a": 1}}),
        client.post(f"/api/v2/sessions/none-{uid}/memory", json={"messages": [_msg()]}),
        client.delete(f"/api/v2/sessions/none-{uid}/memory"),
        client.post("/api/v2/sessions/search", json={"text": "x", "user_id": f"nobody-{uid}"}),
    ]
    for r in cases:
        assert r.status_code == 404, (r.request.url, r.text)
        assert set(r.json()) >= {"message"} and "not found" in r.json()["message"]
    assert row_counts(app) == before


def test_duplicate_user_is_400(app: App, client: httpx.Client, uid: str) -> None:
    assert (
        client.post("/api/v2/users", json={"user_id": f"u-{uid}", "email": "a@x"}).status_code
        == 201
    )
    r = client.post("/api/v2/users", json={"user_id": f"u-{uid}", "email": "b@x"})
    assert r.status_code == 400 and "already exists" in r.json()["message"]
    assert client.get(f"/api/v2/users/u-{uid}").json()["email"] == "a@x"


def test_missing_or_wrong_key_is_401(app: App) -> None:
    with app.client(anonymous=True) as anonymous:
        assert anonymous.get("/api/v2/users-ordered").status_code == 401
    with app.client("wrong") as wrong:
        r = wrong.get("/api/v2/users-ordered")
    assert r.status_code == 401 and "invalid API key" in r.json()["message"]


def test_probes_and_openapi(app: App) -> None:
    with app.client(anonymous=True) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz").json()
        assert ready["status"] == "ready" and ready["checks"]["dimensions"] == "ok"
        paths = anonymous.get("/openapi.json").json()["paths"]
    assert "/api/v2/sessions/{session_id}/memory" in paths


def test_a_message_uuid_taken_is_400_and_writes_nothing(
    app: App, client: httpx.Client, session_id: str
) -> None:
    taken = "6a0c4a7e-57b1-4d54-9a6c-0d9e8c1d2f3a"
    path = f"/api/v2/sessions/{session_id}/memory"
    assert client.post(path, json={"messages": [_msg(uuid=taken)]}).status_code == 200
    before = row_counts(app)
    for body in (
        {"messages": [_msg(), _msg(uuid=taken)]},  # once used
        {"messages": [_msg(uuid=str(u)) for u in ("1" * 32, "1" * 32)]},  # twice in one
    ):
        r = client.post(path, json=body)
        assert r.status_code == 400 and r.json()["field"] == "messages.uuid", r.text
    assert row_counts(app) == before


def test_metadata_numbers_come_back_exactly_and_nan_is_refused(
    client: httpx.Client, session_id: str
) -> None:
    # Integers of any size exactly, and 1.5e300 as the same float (not its 301 digits).
    big = {"n": 2**70, "m": -(2**90), "f": 1.5e300}
    r = client.patch(f"/api/v2/sessions/{session_id}", json={"metadata": big})
    assert r.status_code == 200, r.text
    for got in (r.json(), client.get(f"/api/v2/sessions/{session_id}").json()):
        assert got["metadata"] == big
        assert isinstance(got["metadata"]["f"], float)
    assert client.get(f"/api/v2/sessions/{session_id}/memory").status_code == 200
    r = client.patch(
        f"/api/v2/sessions/{session_id}",
        content=b'{"metadata": {"x": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "NaN" in r.json()["message"]
    assert client.get(f"/api/v2/sessions/{session_id}").json()["metadata"]["n"] == 2**70


def test_metadata_nested_too_deep_is_400(client: httpx.Client, session_id: str) -> None:
    deep: object = "bottom"
    for _ in range(200):
        deep = [deep]
    r = client.patch(f"/api/v2/sessions/{session_id}", json={"metadata": {"a": deep}})
    assert r.status_code == 400 and "nested deeper than 64" in r.json()["message"], r.text
    assert client.get(f"/api/v2/sessions/{session_id}").status_code == 200


def test_nul_characters_are_400(app: App, client: httpx.Client, session_id: str) -> None:
    before = row_counts(app)
    for path, body in (
        (f"/api/v2/sessions/{session_id}/memory", {"messages": [_msg(content="a\x00b")]}),
        ("/api/v2/users", {"user_id": "nul", "metadata": {"k": "a\x00b"}}),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 400 and "NUL character" in r.json()["message"], r.text
    assert row_counts(app) == before
