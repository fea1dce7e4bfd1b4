"""What a session is about now: the latest messages as query text and query vector."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import numpy as np

from engram.memory.focus import FOCUS_CHARS, focus_text, focus_vector
from engram.store import messages
from engram.store.db import Database
from tests.fix_app import App

TEXTS = [
    "We talked about the garden yesterday.",
    "The tomatoes need more sun.",
    "I moved them to the south wall.",
    "Now they are turning red!",
]


def _focus(app: App, session: str, n: int) -> tuple[str, Any]:
    async def main() -> tuple[str, Any]:
        db = Database(app.pg.dsn("engram_app"), min_size=1, max_size=1, timeout_s=10)
        await db.open()
        try:
            async with db.tenant("default") as conn:
                latest = await messages.last_n(conn, session, n)
                return focus_text(latest), await focus_vector(conn, latest)
        finally:
            await db.close()

    return asyncio.run(main())


def _stored(app: App, session: str) -> list[np.ndarray]:
    with app.superuser() as conn:
        rows = conn.execute(
            "SELECT embedding::real[] FROM messages WHERE session_id = %s ORDER BY seq",
            (session,),
        ).fetchall()
    return [np.asarray(r[0], dtype=np.float32) for r in rows]


def test_the_latest_three_messages_as_text_and_as_their_embeddings_mean(
    app: App, client: httpx.Client, uid: str
) -> None:
    session = f"f-{uid}"
    assert client.post("/api/v2/sessions", json={"session_id": session}).status_code == 201
    body = {"messages": [{"role_type": "user", "content": t} for t in TEXTS]}
    assert client.post(f"/api/v2/sessions/{session}/memory", json=body).status_code == 200
    stored = _stored(app, session)

    text, vector = _focus(app, session, 12)
    assert text == " ".join(TEXTS[-3:])
    mean = np.mean(stored[-3:], axis=0)
    assert np.allclose(vector, mean / np.linalg.norm(mean), atol=1e-5)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5

    text, vector = _focus(app, session, 1)  # GET memory with lastn=1
    assert text == TEXTS[-1]
    assert np.allclose(vector, stored[-1], atol=1e-5)


def test_a_session_without_messages_has_no_focus(app: App, client: httpx.Client, uid: str) -> None:
    session = f"e-{uid}"
    assert client.post("/api/v2/sessions", json={"session_id": session}).status_code == 201
    assert _focus(app, session, 12) == ("", None)


def _words(count: int, seed: int) -> str:
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join(
        "".join(rnd.choice(letters) for _ in range(rnd.randint(3, 9))) for _ in range(count)
    )


def test_a_session_of_three_64k_messages_reads_back(
    app: App, client: httpx.Client, uid: str
) -> None:
    # Before, the query text of GET memory and of the context block was the three
    # messages whole: PostgreSQL failed on it ("invalid memory alloc request size"), 500.
    assert client.post("/api/v2/users", json={"user_id": f"u-{uid}"}).status_code == 201
    session = f"l-{uid}"
    r = client.post("/api/v2/sessions", json={"session_id": session, "user_id": f"u-{uid}"})
    assert r.status_code == 201
    texts = [_words(11_000, seed)[:65_536] for seed in range(3)]
    body = {"messages": [{"role_type": "user", "content": t} for t in texts]}
    assert client.post(f"/api/v2/sessions/{session}/memory", json=body).status_code == 200

    memory = client.get(f"/api/v2/sessions/{session}/memory")
    assert memory.status_code == 200, memory.text
    assert [m["content"] for m in memory.json()["messages"]] == texts
    params = {"recent": 0, "max_tokens": 100_000}
    context = client.get(f"/v1/sessions/{session}/context", params=params)
    assert context.status_code == 200, context.text
    assert context.json()["context"].startswith("EARLIER MESSAGES:")
    assert {m["content"] for m in context.json()["messages"]} == set(texts)

    text, _ = _focus(app, session, 12)  # the end of the latest message, whole words
    assert FOCUS_CHARS - 10 < len(text) <= FOCUS_CHARS
    assert texts[-1].endswith(" " + text)
