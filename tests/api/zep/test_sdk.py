"""The published zep-python 2.0.2 SDK, unmodified, against the Engram app (in process:
the SDK takes an httpx client, here one over the ASGI transport)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from zep_python import NotFoundError
from zep_python.client import Zep
from zep_python.core.api_error import ApiError
from zep_python.types import Message

from tests.fix_app import App


@pytest.fixture
def zep(app: App) -> Iterator[Zep]:
    # The SDK sends the API key itself.
    with app.client(anonymous=True) as client:
        yield Zep(api_key=app.api_key, base_url=app.base_url, httpx_client=client)


def test_users_round_trip(zep: Zep, uid: str) -> None:
    added = zep.user.add(
        user_id=f"u-{uid}", email="ada@example.com", first_name="Ada", last_name="Lovelace",
        metadata={"plan": "pro"},
    )  # fmt: skip
    assert added.user_id == f"u-{uid}"
    assert added.uuid_ and added.id and added.created_at

    got = zep.user.get(f"u-{uid}")
    assert (got.email, got.first_name, got.last_name) == ("ada@example.com", "Ada", "Lovelace")
    assert got.metadata == {"plan": "pro"}

    updated = zep.user.update(f"u-{uid}", first_name="Augusta", metadata={"tier": 2})
    assert updated.first_name == "Augusta"
    assert updated.last_name == "Lovelace"  # untouched fields stay
    assert updated.metadata == {"plan": "pro", "tier": 2}  # metadata merges

    zep.user.add(user_id=f"u2-{uid}")
    listed = zep.user.list_ordered(page_number=1, page_size=1000)
    ids = [u.user_id for u in listed.users or []]
    assert ids.index(f"u-{uid}") < ids.index(f"u2-{uid}")  # ordered by creation
    assert listed.total_count is not None and listed.total_count >= 2
    page = zep.user.list_ordered(page_number=1, page_size=1)
    assert page.row_count == 1 and len(page.users or []) == 1

    assert zep.user.delete(f"u-{uid}").message == "OK"
    with pytest.raises(NotFoundError):
        zep.user.get(f"u-{uid}")
    with pytest.raises(NotFoundError):
        zep.user.delete(f"u-{uid}")


def test_sessions_round_trip(zep: Zep, uid: str) -> None:
    zep.user.add(user_id=f"u-{uid}")
    s = zep.memory.add_session(
        session_id=f"s-{uid}", user_id=f"u-{uid}", metadata={"channel": "web"}
    )
    assert s.session_id == f"s-{uid}" and s.user_id == f"u-{uid}"
    assert zep.memory.get_session(f"s-{uid}").metadata == {"channel": "web"}

    upd = zep.memory.update_session(f"s-{uid}", metadata={"topic": "travel"})
    assert upd.metadata == {"channel": "web", "topic": "travel"}

    zep.memory.add_session(session_id=f"s2-{uid}", user_id=f"u-{uid}")
    nested = zep.user.get_sessions(f"u-{uid}")
    assert [x.session_id for x in nested[0]] == [f"s-{uid}", f"s2-{uid}"]

    listed = zep.memory.list_sessions(
        page_number=1, page_size=1000, order_by="created_at", asc=True
    )
    ids = [x.session_id for x in listed.sessions or []]
    assert ids.index(f"s-{uid}") < ids.index(f"s2-{uid}")
    desc = zep.memory.list_sessions(page_number=1, page_size=1000, order_by="created_at", asc=False)
    ids_desc = [x.session_id for x in desc.sessions or []]
    assert ids_desc.index(f"s2-{uid}") < ids_desc.index(f"s-{uid}")
    assert listed.total_count is not None and listed.total_count >= 2

    with pytest.raises(NotFoundError):
        zep.memory.get_session(f"missing-{uid}")


def test_duplicate_session_is_bad_request(zep: Zep, uid: str) -> None:
    zep.memory.add_session(session_id=f"s-{uid}")
    with pytest.raises(ApiError) as exc:
        zep.memory.add_session(session_id=f"s-{uid}")
    assert exc.value.status_code == 400
    assert "already exists" in str(exc.value.body)


def _chat(uid: str) -> list[Message]:
    return [
        Message(role="Ada", role_type="user", content="I adopted a beagle puppy named Biscuit."),
        Message(role="assistant", role_type="assistant", content="Congratulations on Biscuit!"),
        Message(role="Ada", role_type="user", content="My sister lives in Lisbon and paints."),
        Message(role="Ada", role_type="user", content="Quarterly tax forms are due on Friday.",
                metadata={"topic": "finance"}),
    ]  # fmt: skip


def test_memory_and_messages(zep: Zep, uid: str) -> None:
    zep.user.add(user_id=f"u-{uid}")
    zep.memory.add_session(session_id=f"s-{uid}", user_id=f"u-{uid}")
    assert zep.memory.add(f"s-{uid}", messages=_chat(uid)).message == "OK"

    memory = zep.memory.get(f"s-{uid}", lastn=2)
    assert [m.content for m in memory.messages or []] == [
        "My sister lives in Lisbon and paints.",
        "Quarterly tax forms are due on Friday.",
    ]
    # The in-process worker may already have extracted the episode: any fact comes from it.
    for fact in memory.relevant_facts or []:
        assert any(w in fact.fact for w in ("Biscuit", "beagle", "Lisbon", "sister", "tax"))
    full = zep.memory.get(f"s-{uid}")
    assert len(full.messages or []) == 4
    assert full.messages and full.messages[0].role == "Ada" and full.messages[0].role_type == "user"
    assert full.messages[0].token_count and full.messages[0].uuid_

    listed = zep.memory.get_session_messages(f"s-{uid}", limit=3, cursor=1)
    assert listed.total_count == 4 and listed.row_count == 3
    page2 = zep.memory.get_session_messages(f"s-{uid}", limit=3, cursor=2)
    assert [m.content for m in page2.messages or []] == ["Quarterly tax forms are due on Friday."]

    first = (listed.messages or [])[0]
    assert first.uuid_ is not None
    one = zep.memory.get_session_message(f"s-{uid}", first.uuid_)
    assert one.content == first.content

    updated = zep.memory.update_message_metadata(f"s-{uid}", first.uuid_, metadata={"seen": True})
    assert updated.metadata == {"seen": True}
    assert zep.memory.get_session_message(f"s-{uid}", first.uuid_).metadata == {"seen": True}

    assert zep.memory.delete(f"s-{uid}").message == "OK"
    assert zep.memory.get(f"s-{uid}").messages == []
    with pytest.raises(NotFoundError):
        zep.memory.get(f"missing-{uid}")
    with pytest.raises(NotFoundError):
        zep.memory.get_session_messages(f"missing-{uid}")
    with pytest.raises(NotFoundError):
        zep.memory.get_session_message(f"s-{uid}", first.uuid_)


def test_search_is_semantic_and_scoped(zep: Zep, uid: str) -> None:
    zep.user.add(user_id=f"u-{uid}")
    zep.user.add(user_id=f"v-{uid}")
    zep.memory.add_session(session_id=f"s-{uid}", user_id=f"u-{uid}")
    zep.memory.add_session(session_id=f"t-{uid}", user_id=f"v-{uid}")
    zep.memory.add(f"s-{uid}", messages=_chat(uid))
    zep.memory.add(
        f"t-{uid}",
        messages=[Message(role_type="user", content="I adopted a dog called Rex last week.")],
    )

    # Searchable at once (no waiting), ranked by meaning rather than shared words.
    found = zep.memory.search_sessions(text="what pet does she have?", user_id=f"u-{uid}", limit=2)
    results = found.results or []
    assert results and results[0].message is not None
    assert "Biscuit" in (results[0].message.content or "")
    assert all(r.session_id == f"s-{uid}" for r in results)  # never another user's
    assert results[0].score is not None and 0 < results[0].score <= 1

    by_session = zep.memory.search_sessions(text="dog", session_ids=[f"t-{uid}"], limit=5)
    assert [r.message.content for r in by_session.results or [] if r.message] == [
        "I adopted a dog called Rex last week."
    ]

    strict = zep.memory.search_sessions(
        text="what pet does she have?", user_id=f"u-{uid}", limit=10, min_score=0.99
    )
    assert strict.results == []

    mmr = zep.memory.search_sessions(
        text="puppy", user_id=f"u-{uid}", limit=3, search_type="mmr", mmr_lambda=0.5
    )
    contents = [r.message.content for r in mmr.results or [] if r.message]
    assert len(contents) == 3 and len(set(contents)) == 3

    filtered = zep.memory.search_sessions(
        text="deadline", user_id=f"u-{uid}", limit=10, record_filter={"topic": "finance"}
    )
    assert [r.message.content for r in filtered.results or [] if r.message] == [
        "Quarterly tax forms are due on Friday."
    ]


def test_facts_unknown_ids_are_404(zep: Zep) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(NotFoundError):
        zep.memory.get_fact(missing)
    with pytest.raises(NotFoundError):
        zep.memory.delete_fact(missing)


def test_wrong_api_key_is_refused(app: App) -> None:
    with app.client(anonymous=True) as client:
        bad = Zep(api_key="not-the-key", base_url=app.base_url, httpx_client=client)
        with pytest.raises(ApiError) as exc:
            bad.user.list_ordered()
    assert exc.value.status_code == 401
