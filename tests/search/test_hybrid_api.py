"""Hybrid search through the native API: vector, full-text and graph signals, filters,
score parts, and the ready-to-prompt context block."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fix_app import App
from tests.graph.test_extraction_flow import _wait_extracted

TURNS = [
    ("2024-01-05T09:00:00Z", "Ada", "user", "My sister Maria lives in Porto and teaches piano."),
    ("2024-01-05T09:01:00Z", "assistant", "assistant", "Porto is lovely in spring."),
    ("2024-02-10T18:00:00Z", "Ada", "user", "Invoice XJ-4471 from the plumber is still unpaid."),
    ("2024-03-01T08:00:00Z", "Ada", "user", "I started running every morning before work."),
    ("2024-03-02T08:00:00Z", "Ada", "user", "I adopted a grey cat called Pixel."),
]


@pytest.fixture
def ada(app: App, client: httpx.Client, uid: str) -> str:
    user, session = f"ada-{uid}", f"s-{uid}"
    client.post("/api/v2/users", json={"user_id": user, "first_name": "Ada"})
    client.post("/api/v2/sessions", json={"session_id": session, "user_id": user})
    for at, role, role_type, text in TURNS:
        meta = {"topic": "money"} if "Invoice" in text else {}
        body = {"messages": [{"role": role, "role_type": role_type, "content": text,
                              "created_at": at, "metadata": meta}]}  # fmt: skip
        assert client.post(f"/api/v2/sessions/{session}/memory", json=body).status_code == 200
    _wait_extracted(app, session)
    return user


def _search(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    results: list[dict[str, Any]] = r.json()["results"]
    return results


def _text(hit: dict[str, Any]) -> str:
    item = hit[hit["kind"]]
    return str(item.get("content") or item.get("fact") or item.get("name"))


def test_results_explain_why_they_ranked(client: httpx.Client, ada: str) -> None:
    hits = _search(client, text="XJ-4471", user_id=ada, targets=["messages"], limit=3)
    assert "XJ-4471" in _text(hits[0])
    assert "text" in hits[0]["score_parts"]  # an exact code: found by full-text search
    assert 0 < hits[0]["score"] <= 1
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    pet = _search(client, text="which pet does she have?", user_id=ada, targets=["messages"])
    assert "Pixel" in _text(pet[0])
    assert "vector" in pet[0]["score_parts"]  # no shared word: found by meaning


def test_the_graph_brings_back_messages_about_named_entities(
    client: httpx.Client, ada: str
) -> None:
    hits = _search(client, text="Maria", user_id=ada, targets=["messages", "facts"], limit=10)
    graph = [h for h in hits if "graph" in h["score_parts"]]
    assert graph, hits
    assert any("Porto" in _text(h) for h in graph)


def test_filters_narrow_the_results(client: httpx.Client, ada: str) -> None:
    money = _search(
        client, text="bills", user_id=ada, targets=["messages"], metadata={"topic": "money"}
    )
    assert [_text(h) for h in money] == ["Invoice XJ-4471 from the plumber is still unpaid."]
    march = _search(
        client, text="morning", user_id=ada, targets=["messages"],
        time_from="2024-03-01T00:00:00Z", time_to="2024-04-01T00:00:00Z",
    )  # fmt: skip
    assert march and all(h["message"]["created_at"] >= "2024-03-01" for h in march)
    assistant = _search(
        client, text="Porto", user_id=ada, targets=["messages"], roles=["assistant"]
    )
    assert [_text(h) for h in assistant] == ["Porto is lovely in spring."]
    one = _search(client, text="Porto", user_ids=[ada], limit=1)
    assert len(one) == 1


def test_entities_and_facts_are_targets(client: httpx.Client, ada: str) -> None:
    ents = _search(client, text="Pixel the cat", user_id=ada, targets=["entities"], limit=3)
    assert ents and all(h["kind"] == "entity" for h in ents)
    assert any("Pixel" in h["entity"]["name"] for h in ents)
    facts = _search(client, text="exercise habits", user_id=ada, targets=["facts"], limit=3)
    assert facts and "running" in _text(facts[0])
    assert facts[0]["fact"]["valid_at"].startswith("2024-03-01")


def test_context_block_fits_the_budget(client: httpx.Client, ada: str, uid: str) -> None:
    r = client.get(f"/v1/sessions/s-{uid}/context", params={"max_tokens": 60, "query": "family"})
    assert r.status_code == 200
    body = r.json()
    assert body["tokens"] <= 60
    assert "Maria" in body["context"] and "valid 2024-01-05" in body["context"]
    big = client.get(f"/v1/sessions/s-{uid}/context", params={"max_tokens": 2000, "recent": 2})
    block = big.json()["context"]
    assert "FACTS:" in block and "EARLIER MESSAGES:" in block
    assert "Pixel" not in block.split("EARLIER MESSAGES:")[1]  # latest turns are left out


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "x", "targets": []},
        {"text": "x", "targets": ["summaries"]},
        {"text": "x", "user_id": "a", "user_ids": ["b"]},
        {"text": "x", "as_of": "2024-01-01T00:00:00"},
        {"text": "x", "limit": 0},
        {"text": "x", "unknown": 1},
    ],
)
def test_bad_search_requests_are_400(client: httpx.Client, body: dict[str, Any]) -> None:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["message"]


def test_a_search_too_large_is_400_naming_the_maximum(client: httpx.Client, uid: str) -> None:
    """At most limits.max_search_results (100) results and limits.max_search_text_chars
    (4096) characters of text, at every door; the zep-python SDK sends no limit unless
    asked (the default is 10)."""
    user = f"big-{uid}"
    assert client.post("/api/v2/users", json={"user_id": user}).status_code == 201
    too_many = [
        client.post("/api/v2/sessions/search?limit=101", json={"text": "x", "user_id": user}),
        client.post("/v1/search", json={"text": "x", "user_id": user, "limit": 101}),
        client.post("/v1/facts/search", json={"text": "x", "user_id": user, "limit": 101}),
    ]
    for r in too_many:
        assert r.status_code == 400, r.text
        assert r.json()["message"] == "limit 101 is above the maximum of 100 results per search"
        assert r.json()["field"] == "limit"
    r = client.post("/v1/search", json={"text": "x" * 4097, "user_id": user})
    assert r.status_code == 400 and r.json()["field"] == "text"
    assert "above the maximum of 4096" in r.json()["message"]
    r = client.post("/api/v2/sessions/search?limit=100", json={"text": "x", "user_id": user})
    assert r.status_code == 200, r.text


def test_unknown_user_or_session_is_404(client: httpx.Client, uid: str) -> None:
    assert client.post("/v1/search", json={"text": "x", "user_id": f"no-{uid}"}).status_code == 404
    assert client.get(f"/v1/sessions/no-{uid}/context").status_code == 404


def test_tenant_wide_search_with_filters_only(app: App, client: httpx.Client, uid: str) -> None:
    """No user or session: the index path, with a metadata filter or a time range (in a
    tenant of its own, so that only these messages are there)."""
    tenant = f"tw-{uid}"
    assert client.post("/v1/admin/tenants", json={"id": tenant}).status_code == 201
    key = client.post("/v1/admin/apikeys", json={"name": "w", "role": "writer", "tenant": tenant})
    with app.client(key.json()["key"]) as c:
        assert c.post("/api/v2/users", json={"user_id": "ada"}).status_code == 201
        assert c.post("/api/v2/sessions", json={"session_id": "s", "user_id": "ada"}).is_success
        for at, role, role_type, text in TURNS:
            meta = {"topic": "money"} if "Invoice" in text else {}
            body = {"messages": [{"role": role, "role_type": role_type, "content": text,
                                  "created_at": at, "metadata": meta}]}  # fmt: skip
            assert c.post("/api/v2/sessions/s/memory", json=body).status_code == 200
        money = {"text": "unpaid invoice", "record_filter": {"topic": "money"}}
        r = c.post("/api/v2/sessions/search?limit=10", json=money)
        assert r.status_code == 200, r.text
        assert [h["message"]["content"] for h in r.json()["results"]] == [TURNS[2][3]]
        r = c.post("/v1/search", json={"text": "grey cat", "targets": ["messages"],
                                       "time_from": "2024-03-02T00:00:00Z"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert [h["message"]["content"] for h in r.json()["results"]] == [TURNS[4][3]]


def test_relevant_facts_lead_with_what_the_latest_messages_are_about(
    app: App, client: httpx.Client, ada: str, uid: str
) -> None:
    session = f"s-{uid}"
    facts = client.get(f"/api/v2/sessions/{session}/memory").json()["relevant_facts"]
    assert {f["fact"] for f in facts[:2]} == {
        "Ada adopted a grey cat called Pixel.",
        "Ada started running every morning before work.",
    }  # the last three turns: the invoice (no fact), running, the cat
    said = "My sister Maria is coming over with her piano."
    body = {"messages": [{"role": "Ada", "role_type": "user", "content": said}]}
    assert client.post(f"/api/v2/sessions/{session}/memory", json=body).status_code == 200
    _wait_extracted(app, session)
    latest = client.get(f"/api/v2/sessions/{session}/memory", params={"lastn": 1}).json()
    assert [m["content"] for m in latest["messages"]] == [said]
    assert "Maria" in latest["relevant_facts"][0]["fact"]
