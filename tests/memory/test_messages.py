"""A message's declared sensitivity covers its own metadata: the app in process, the
database read directly, and callers with and without the right to read protected fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.crypto.test_fields import (
    DIAGNOSIS,
    EMAIL,
    _add,
    _everything_stored,
    _rows,
    _setup,
    _wait_extracted,
)
from tests.fix_app import App

MEDICATION = "metformin 500 mg twice daily"
PHI_META = {"sensitivity": "phi", "diagnosis": DIAGNOSIS, "medication": [MEDICATION],
            "visit": 3}  # fmt: skip
REDACTED = {"sensitivity": "phi", "diagnosis": "[PHI]", "medication": ["[PHI]"], "visit": 3}


def _stored(app: App, sid: str) -> list[tuple[Any, ...]]:
    return _rows(
        app,
        """SELECT content, metadata, metadata_sensitivity, metadata_enc IS NOT NULL, sensitivity
           FROM messages WHERE session_id = %s ORDER BY seq""",
        sid,
    )


def _metadata_everywhere(client: httpx.Client, sid: str, uid: str) -> list[dict[str, Any]]:
    """The first message's metadata as every route that returns messages gives it."""
    memory = client.get(f"/api/v2/sessions/{sid}/memory").json()["messages"][0]
    listed = client.get(f"/api/v2/sessions/{sid}/messages").json()["messages"][0]
    one = client.get(f"/api/v2/sessions/{sid}/messages/{memory['uuid']}").json()
    found = client.post(
        "/api/v2/sessions/search?limit=5", json={"text": "follow-up notes", "user_id": uid}
    ).json()["results"]
    hit = next(r["message"] for r in found if r["message"]["uuid"] == memory["uuid"])
    return [memory["metadata"], listed["metadata"], one["metadata"], hit["metadata"]]


def test_declared_message_metadata_is_stored_only_as_ciphertext(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid)
    _add(
        client,
        sid,
        {"role_type": "user", "content": "follow-up notes", "metadata": PHI_META},
        {"role_type": "assistant", "content": "Thanks", "metadata": {"topic": "piano lessons"}},
    )
    _wait_extracted(app, sid)
    declared, plain = _stored(app, sid)
    assert declared == ("[PHI]", REDACTED, 2, True, 2)
    # A message that declares nothing keeps its metadata as it came.
    assert plain == ("Thanks", {"topic": "piano lessons"}, 0, False, 0)
    stored = _everything_stored(app, uid)
    for secret in (DIAGNOSIS, "diabetes", "metformin"):
        assert secret not in stored, secret
    # A caller allowed to read protected fields gets the values back on every route.
    assert _metadata_everywhere(client, sid, uid) == [PHI_META] * 4
    messages = client.get(f"/api/v2/sessions/{sid}/messages").json()["messages"]
    assert messages[1]["metadata"] == {"topic": "piano lessons"}


def test_session_declared_class_covers_its_messages_metadata(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid, {"sensitivity": "secret"})
    _add(client, sid, {"role_type": "user", "content": "rotate it", "metadata": {"vault": "prod"}})
    assert _stored(app, sid) == [("[SECRET]", {"vault": "[SECRET]"}, 3, True, 3)]
    got = client.get(f"/api/v2/sessions/{sid}/messages").json()["messages"][0]
    assert got["metadata"] == {"vault": "prod"}


@pytest.fixture
def tenant_keys(app: App, client: httpx.Client, uid: str) -> Iterator[tuple[Any, Any]]:
    """(writer without read_protected, reader with it) in a tenant of their own."""
    tenant = f"t-{uid}"
    assert client.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
    clients = []
    for extra in ({}, {"read_protected": True}):
        body = {"name": "k", "role": "writer", "tenant": tenant, **extra}
        r = client.post("/v1/admin/apikeys", json=body)
        assert r.status_code == 201, r.text
        clients.append(app.client(r.json()["key"]))
    with clients[0] as writer, clients[1] as reader:
        yield writer, reader


def test_callers_without_read_protected_get_redacted_message_metadata(
    tenant_keys: tuple[httpx.Client, httpx.Client],
) -> None:
    writer, reader = tenant_keys
    sid = _setup(writer, "ada")
    _add(writer, sid, {"role_type": "user", "content": "follow-up notes", "metadata": PHI_META})
    assert _metadata_everywhere(writer, sid, "ada") == [REDACTED] * 4
    assert _metadata_everywhere(reader, sid, "ada") == [PHI_META] * 4
    # The writer's update merges into the real values, though it sees only markers.
    mid = writer.get(f"/api/v2/sessions/{sid}/messages").json()["messages"][0]["uuid"]
    r = writer.patch(f"/api/v2/sessions/{sid}/messages/{mid}", json={"metadata": {"visit": 4}})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {**REDACTED, "visit": 4}
    assert reader.get(f"/api/v2/sessions/{sid}/messages/{mid}").json()["metadata"] == {
        **PHI_META, "visit": 4}  # fmt: skip


def test_an_update_cannot_change_a_messages_declared_class(
    app: App, tenant_keys: tuple[httpx.Client, httpx.Client], uid: str
) -> None:
    writer, reader = tenant_keys
    sid = _setup(writer, "ada")
    _add(writer, sid, {"role_type": "user", "content": "follow-up notes", "metadata": PHI_META},
         {"role_type": "user", "content": "hello", "metadata": {"topic": "greeting"}})  # fmt: skip
    first, second = (m["uuid"] for m in writer.get(f"/api/v2/sessions/{sid}/messages").json()[
        "messages"])  # fmt: skip
    before = _stored(app, sid)
    # Lowering it would hand a caller who may not read the values their plaintext; raising
    # it would leave the content classified below it. Both are refused, nothing changes.
    for mid, sensitivity, was in ((first, "none", "phi"), (second, "phi", "none")):
        r = writer.patch(f"/api/v2/sessions/{sid}/messages/{mid}",
                         json={"metadata": {"sensitivity": sensitivity, "visit": 9}})  # fmt: skip
        assert r.status_code == 400, r.text
        said = r.json()
        assert f"stored with sensitivity '{was}'" in said["message"]
        assert "add the message again" in said["hint"]
    assert _stored(app, sid) == before
    assert reader.get(f"/api/v2/sessions/{sid}/messages/{first}").json()["metadata"] == PHI_META
    # The same class again is no change.
    r = writer.patch(f"/api/v2/sessions/{sid}/messages/{first}",
                     json={"metadata": {"sensitivity": "PHI", "note": "seen"}})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {**REDACTED, "sensitivity": "PHI", "note": "[PHI]"}


def test_metadata_update_raises_the_message_class_with_its_metadata(
    app: App, client: httpx.Client, uid: str
) -> None:
    sid = _setup(client, uid)
    _add(client, sid, {"role_type": "user", "content": "hello", "metadata": {"topic": "greeting"}})
    mid = client.get(f"/api/v2/sessions/{sid}/messages").json()["messages"][0]["uuid"]
    r = client.patch(
        f"/api/v2/sessions/{sid}/messages/{mid}", json={"metadata": {"contact": EMAIL}}
    )
    assert r.status_code == 200 and r.json()["metadata"]["contact"] == EMAIL
    assert _stored(app, sid) == [("hello", {"topic": "greeting", "contact": "[EMAIL]"}, 1, True, 1)]
