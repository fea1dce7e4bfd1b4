"""What one request may carry: a body past limits.max_body_bytes is a 413 before it is
read (even unauthenticated), a write past limits.max_request_chars or metadata past
limits.max_metadata_bytes is a 400 naming the field, and nothing is written."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator

import httpx
import pytest

from engram.config import LimitSettings
from tests.fix_app import App
from tests.fix_server import Server, row_counts

LIMITS = LimitSettings()  # the server under test runs with the defaults
HUNDRED_MB = 100 * 2**20
TABLES = ("users", "sessions", "messages", "audit_log")  # what a refusal must not change


def _response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and JSON body of the response on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body)


# Raw sockets to a real port (uvicorn's parser): what the server answers before reading.
@pytest.mark.integration
def test_a_declared_100_mb_body_is_413_before_a_byte_of_it_is_read(server: Server) -> None:
    before = row_counts(server, *TABLES)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        # Headers only, no credentials: the server must answer without waiting for the
        # body (before, it read and parsed all of it, then said 401).
        sock.sendall(
            b"POST /api/v2/users HTTP/1.1\r\nHost: engram\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % HUNDRED_MB
        )
        status, headers, body = _response(sock)
    assert status == 413
    assert body["message"] == (
        f"the request body is {HUNDRED_MB} bytes; the limit is {LIMITS.max_body_bytes} bytes"
    )
    assert "split the request" in body["hint"] and "limits.max_body_bytes" in body["hint"]
    assert headers["connection"] == "close"
    assert row_counts(server, *TABLES) == before
    paths = httpx.get(f"{server.base_url}/openapi.json").json()["paths"]
    assert "413" in paths["/api/v2/users"]["post"]["responses"]


def _chunks() -> Iterator[bytes]:
    piece = b'{"user_id": "x", "metadata": {"k": "' + b"x" * 65_000
    yield b"%x\r\n%s\r\n" % (len(piece), piece)
    piece = b"x" * 65_536
    for _ in range(HUNDRED_MB // len(piece)):
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


@pytest.mark.integration
def test_a_chunked_body_is_refused_once_it_passes_the_limit(server: Server) -> None:
    before = row_counts(server, *TABLES)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            b"POST /api/v2/users HTTP/1.1\r\nHost: engram\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Api-Key " + server.api_key.encode() + b"\r\n\r\n"
        )
        chunks = _chunks()
        pending = b""
        while True:  # send until the server answers
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable or not writable:
                break
            pending = pending or next(chunks)
            done = sock.send(pending)
            sent, pending = sent + done, pending[done:]
        status, headers, body = _response(sock)
    assert status == 413
    assert "connection" not in headers  # the rest is discarded, not reset
    assert body["message"] == (
        f"the request body is longer than the limit of {LIMITS.max_body_bytes} bytes"
    )
    assert sent < HUNDRED_MB  # it stopped reading: the rest was never sent
    assert row_counts(server, *TABLES) == before


def test_the_largest_write_the_limits_allow_is_stored(
    app: App, client: httpx.Client, session_id: str
) -> None:
    # 16 messages of 65,536 characters, escaped as \uXXXX the way Python's json writes
    # them: 6 MiB, under max_body_bytes.
    count = LIMITS.max_request_chars // LIMITS.max_content_chars
    text = "".join(chr(0x4E00 + i % 2000) for i in range(LIMITS.max_content_chars))
    body = json.dumps({"messages": [{"role_type": "user", "content": text}] * count})
    assert len(body) > 6 * 2**20
    r = client.post(
        f"/api/v2/sessions/{session_id}/memory",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v2/sessions/{session_id}/messages").json()["total_count"] == count


def test_a_write_past_the_characters_of_one_request_is_400(
    app: App, client: httpx.Client, session_id: str
) -> None:
    # 500 messages of 64K characters took 68 s and left the server at 3.8 GB: now one
    # write holds at most max_request_chars of content.
    count = LIMITS.max_request_chars // LIMITS.max_content_chars + 1
    body = {"messages": [{"role_type": "user", "content": "x" * LIMITS.max_content_chars}] * count}
    before = row_counts(app, *TABLES)
    r = client.post(f"/api/v2/sessions/{session_id}/memory", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "messages"
    total = count * LIMITS.max_content_chars
    assert r.json()["message"] == (
        f"the messages hold {total} characters of content in all; the limit for one "
        f"request is {LIMITS.max_request_chars}"
    )
    assert r.json()["hint"] == "split the messages over several requests"
    assert row_counts(app, *TABLES)[:3] == before[:3]


def _big() -> dict[str, str]:
    """Metadata of max_metadata_bytes + 1 bytes as compact JSON."""
    return {"k": "x" * (LIMITS.max_metadata_bytes - len('{"k":""}') + 1)}


def test_metadata_past_its_limit_is_400_naming_the_field(
    app: App, client: httpx.Client, session_id: str, uid: str
) -> None:
    message = {"role_type": "user", "content": "hello"}
    ok = client.post(f"/api/v2/sessions/{session_id}/memory", json={"messages": [message]})
    assert ok.status_code == 200
    stored = client.get(f"/api/v2/sessions/{session_id}/messages").json()["messages"][0]
    cases = [
        ("POST", "/api/v2/users", {"user_id": f"b-{uid}", "metadata": _big()}, "metadata"),
        ("PATCH", f"/api/v2/users/u-{uid}", {"metadata": _big()}, "metadata"),
        ("POST", "/api/v2/sessions", {"session_id": f"b-{uid}", "metadata": _big()}, "metadata"),
        ("PATCH", f"/api/v2/sessions/{session_id}", {"metadata": _big()}, "metadata"),
        (
            "PATCH",
            f"/api/v2/sessions/{session_id}",
            {"fact_rating_instruction": _big()},
            "fact_rating_instruction",
        ),
        (
            "POST",
            f"/api/v2/sessions/{session_id}/memory",
            {"messages": [message, {**message, "metadata": _big()}]},
            "messages[1].metadata",
        ),
        (
            "PATCH",
            f"/api/v2/sessions/{session_id}/messages/{stored['uuid']}",
            {"metadata": _big()},
            "metadata",
        ),
        (
            "POST",
            "/api/v2/sessions/search",
            {"text": "x", "record_filter": _big()},
            "record_filter",
        ),
        ("POST", "/v1/search", {"text": "x", "metadata": _big()}, "metadata"),
    ]
    before = row_counts(app, *TABLES)
    for method, path, body, field in cases:
        r = client.request(method, path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["field"] == field
        size = LIMITS.max_metadata_bytes + 1
        assert r.json()["message"] == (
            f"{field} is {size} bytes as JSON; the limit is {LIMITS.max_metadata_bytes}"
        )
        assert "limits.max_metadata_bytes" in r.json()["hint"]
    assert row_counts(app, *TABLES)[:3] == before[:3]
    assert client.get(f"/api/v2/users/u-{uid}").json()["metadata"] == {}
    assert client.get(f"/api/v2/sessions/{session_id}").json()["metadata"] == {}
    again = client.get(f"/api/v2/sessions/{session_id}/messages").json()["messages"][0]
    assert again["metadata"] == stored["metadata"]


def test_metadata_at_its_limit_is_stored(client: httpx.Client, session_id: str) -> None:
    meta = {"k": "x" * (LIMITS.max_metadata_bytes - len('{"k":""}'))}
    r = client.patch(f"/api/v2/sessions/{session_id}", json={"metadata": meta})
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v2/sessions/{session_id}").json()["metadata"] == meta


def test_a_60_mb_metadata_value_is_413(app: App, client: httpx.Client, uid: str) -> None:
    before = row_counts(app, *TABLES)
    body = {"user_id": f"m-{uid}", "metadata": {"v": "x" * 60_000_000}}
    r = client.post("/api/v2/users", json=body)
    assert r.status_code == 413
    assert "limits.max_body_bytes" in r.json()["hint"]
    assert row_counts(app, *TABLES) == before
