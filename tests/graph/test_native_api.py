"""The native /v1 graph API: bi-temporal as-of reads, entities, fact search, provenance."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from tests.fix_app import App
from tests.graph.test_extraction_flow import _add, _wait_extracted


@pytest.fixture
def moved(app: App, client: httpx.Client, uid: str) -> tuple[str, datetime]:
    """Ada lived in Paris from 2023 and moved to Lisbon on 2024-03-04; returns (user, t)."""
    user, session = f"ada-{uid}", f"s-{uid}"
    client.post("/api/v2/users", json={"user_id": user, "first_name": "Ada"})
    client.post("/api/v2/sessions", json={"session_id": session, "user_id": user})
    _add(client, session, "I live in Paris.", "2023-01-10T10:00:00Z")
    _wait_extracted(app, session)
    between = datetime.now(UTC)  # recorded: Paris, not yet the move
    _add(client, session, "I moved to Lisbon yesterday!", "2024-03-05T09:00:00Z")
    _wait_extracted(app, session)
    return user, between


def _places(graph: dict[str, object]) -> set[str]:
    facts = graph["facts"]
    assert isinstance(facts, list)
    return {f["target"]["name"] for f in facts if f["relation"] == "LIVES_IN"}


def test_as_of_answers_what_held_and_what_we_knew(
    client: httpx.Client, moved: tuple[str, datetime]
) -> None:
    user, between = moved
    url = f"/v1/users/{user}/graph"
    assert _places(client.get(url).json()) == {"Lisbon"}
    assert _places(client.get(url, params={"as_of": "2023-06-01T00:00:00Z"}).json()) == {"Paris"}
    assert _places(client.get(url, params={"as_of": "2022-06-01T00:00:00Z"}).json()) == set()
    # What we believed about today before the move was recorded: still Paris.
    before = client.get(url, params={"known_at": between.isoformat()}).json()
    assert _places(before) == {"Paris"}
    graph = client.get(url).json()
    assert {e["name"] for e in graph["entities"]} >= {"Ada", "Lisbon"}
    assert len(graph["episodes"]) == 2 and {e["status"] for e in graph["episodes"]} == {"done"}


def test_entity_with_history_and_provenance(
    client: httpx.Client, moved: tuple[str, datetime]
) -> None:
    user, _ = moved
    graph = client.get(f"/v1/users/{user}/graph").json()
    ada = next(e for e in graph["entities"] if e["name"] == "Ada")
    current = client.get(f"/v1/users/{user}/entities/{ada['uuid']}").json()
    assert {f["target"]["name"] for f in current["facts"]} == {"Lisbon"}
    history = client.get(
        f"/v1/users/{user}/entities/{ada['uuid']}", params={"include_invalid": "true"}
    ).json()
    assert {f["target"]["name"] for f in history["facts"]} == {"Lisbon", "Paris"}

    lisbon = next(f for f in graph["facts"] if f["target"]["name"] == "Lisbon")
    sources = client.get(f"/v1/facts/{lisbon['uuid']}/episodes").json()["messages"]
    assert [m["content"] for m in sources] == ["I moved to Lisbon yesterday!"]


def test_fact_search_ranks_by_meaning(client: httpx.Client, moved: tuple[str, datetime]) -> None:
    user, _ = moved
    found = client.post(
        "/v1/facts/search", json={"text": "which city is her home?", "user_id": user}
    ).json()["results"]
    assert found and found[0]["target"]["name"] == "Lisbon"
    assert all(f["invalid_at"] is None for f in found)  # only what holds now
    assert 0 < found[0]["score"] <= 1


def test_bad_graph_requests(client: httpx.Client, uid: str) -> None:
    assert client.get(f"/v1/users/nobody-{uid}/graph").status_code == 404
    r = client.get(f"/v1/users/nobody-{uid}/graph", params={"as_of": "2024-01-01T00:00:00"})
    assert r.status_code in (400, 404)
    assert client.post("/v1/facts/search", json={"text": "", "user_id": "x"}).status_code == 400
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.get(f"/v1/facts/{missing}/episodes").status_code == 404
    assert client.get("/v1/users/x/entities/not-a-uuid").status_code == 400
