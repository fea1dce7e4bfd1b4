"""Contract tests: the LLM extractor against a local server speaking the chat-completions
wire protocol (OpenAI-compatible and Azure OpenAI)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from engram.config import ExtractorSettings
from engram.errors import ConfigError
from engram.extract import (
    CandidateFact,
    Episode,
    EpisodeMessage,
    ExtractedEntity,
    ExtractedFact,
    build_extractor,
)
from engram.extract.llm import ExtractionError, LLMExtractor

M1 = "5b0f3c1e-6a47-4b8e-9a51-0c1f2e3d4a01"
M2 = "5b0f3c1e-6a47-4b8e-9a51-0c1f2e3d4a02"
CTX = "5b0f3c1e-6a47-4b8e-9a51-0c1f2e3d4a00"
F_BERLIN = "9d2c7a10-1111-4c3b-8e2f-000000000001"
F_PAINT = "9d2c7a10-1111-4c3b-8e2f-000000000002"
T1 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
T2 = T1 + timedelta(minutes=1)

EPISODE = Episode(
    user_id="u1",
    session_id="s1",
    user_name="Caroline Smith",
    messages=[
        EpisodeMessage(M1, "user", "user", "I moved to Lisbon last week!", T1),
        EpisodeMessage(M2, "assistant", "assistant", "Congrats! How is the new job at Acme?", T2),
    ],
    context=[EpisodeMessage(CTX, "user", "user", "Big news coming soon \u2728", T1)],
)
CANDIDATES = [
    CandidateFact(F_BERLIN, "Caroline Smith", "LIVES_IN", "Berlin", "Caroline lives in Berlin."),
    CandidateFact(F_PAINT, "Caroline Smith", "LIKES", "painting", "Caroline likes painting."),
]

ANSWER: dict[str, Any] = {
    "entities": [
        {"name": "Caroline Smith", "label": "person", "summary": "Moved to Lisbon in May 2023."},
        {"name": "Lisbon", "label": "place", "summary": None},
    ],
    "facts": [
        {
            "subject": "Caroline Smith",
            "relation": "LIVES_IN",
            "object": "Lisbon",
            "fact": "Caroline Smith moved to Lisbon in early May 2023.",
            "source_message": M1,
            "valid_at": "2023-05-01T00:00:00Z",
            "invalid_at": None,
            "exclusive": True,
        },
        {
            "subject": "Caroline Smith",
            "relation": "works at",  # not UPPER_SNAKE: normalised
            "object": "Acme",  # not among the entities: added as "other"
            "fact": "Caroline Smith has a new job at Acme.",
            "source_message": M2,
            "valid_at": "2023-05-08T15:57:00+02:00",
            "invalid_at": None,
            "exclusive": True,
        },
    ],
    # The second uuid is not a candidate: dropped.
    "contradicted": [F_BERLIN, "00000000-0000-0000-0000-000000000000"],
}


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Reply:
    """One canned answer: an HTTP status, and for 200 the assistant message's fields."""

    status: int = 200
    content: str | None = json.dumps(ANSWER)
    refusal: str | None = None
    finish_reason: str = "stop"
    delay_s: float = 0.0


@dataclass
class FakeChat:
    """What the server saw, and what it answers next (the last reply repeats)."""

    url: str
    received: list[Received] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=lambda: [Reply()])

    def user_payload(self, i: int = 0) -> dict[str, Any]:
        messages = self.received[i].body["messages"]
        user = [m for m in messages if m["role"] == "user"]
        assert len(user) == 1
        payload: dict[str, Any] = json.loads(user[0]["content"])
        return payload


def completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "system_fingerprint": "fp_test",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.content,
                    "refusal": reply.refusal,
                },
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 812, "completion_tokens": 164, "total_tokens": 976},
    }


def make_handler(state: FakeChat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.received.append(Received(url.path, parse_qs(url.query), headers, body))
            openai_path = url.path == "/v1/chat/completions"
            azure_path = (
                url.path.startswith("/openai/deployments/")
                and url.path.endswith("/chat/completions")
                and "api-version" in parse_qs(url.query)
            )
            if not (openai_path or azure_path):
                return self.reply(404, {"error": {"message": "no such route", "type": "invalid"}})
            reply = state.replies.pop(0) if len(state.replies) > 1 else state.replies[0]
            time.sleep(reply.delay_s)
            if reply.status != 200:
                return self.reply(
                    reply.status,
                    {"error": {"message": "The server had an error", "type": "server_error"}},
                    # As api.openai.com does; keeps the SDK's backoff short in tests.
                    {"retry-after-ms": "20"},
                )
            self.reply(200, completion(body, reply))

        def reply(
            self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            # The timeout test's client hangs up before the answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(raw)

    return Handler


@pytest.fixture
def server() -> Iterator[FakeChat]:
    state = FakeChat(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def openai_settings(url: str, **overrides: Any) -> ExtractorSettings:
    values: dict[str, Any] = {
        "kind": "llm",
        "model": "qwen2.5-7b-instruct",
        "base_url": f"{url}/v1",
        "api_key": SecretStr("sk-test-123"),
        "max_retries": 0,
        "timeout_s": 5.0,
    }
    return ExtractorSettings(**(values | overrides))


def azure_settings(url: str, **overrides: Any) -> ExtractorSettings:
    values: dict[str, Any] = {
        "kind": "llm",
        "provider": "azure-openai",
        "model": "gpt-4o-mini",
        "azure_endpoint": url,
        "azure_deployment": "extract-prod",
        "api_key": SecretStr("az-key-9"),
        "max_retries": 0,
        "timeout_s": 5.0,
    }
    return ExtractorSettings(**(values | overrides))


def run(settings: ExtractorSettings, episode: Episode = EPISODE) -> Any:
    extractor = build_extractor(settings)
    assert isinstance(extractor, LLMExtractor)
    try:
        return extractor.extract(episode, CANDIDATES)
    finally:
        extractor.close()


def test_request_carries_model_auth_schema_messages_and_candidates(server: FakeChat) -> None:
    extractor = build_extractor(openai_settings(server.url, max_output_tokens=2000))
    assert extractor.id == "llm/qwen2.5-7b-instruct"
    extractor.extract(EPISODE, CANDIDATES)
    (req,) = server.received  # exactly one call for the episode
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test-123"
    body = req.body
    assert body["model"] == "qwen2.5-7b-instruct"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 2000  # what OpenAI-compatible servers understand
    assert body.get("stream") in (None, False)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["entities", "facts", "contradicted"]
    assert schema["additionalProperties"] is False
    fact = schema["properties"]["facts"]["items"]
    assert set(fact["required"]) == set(fact["properties"]) >= {"source_message", "exclusive"}
    label = schema["properties"]["entities"]["items"]["properties"]["label"]
    assert "person" in label["enum"] and "other" in label["enum"]

    payload = server.user_payload()
    assert payload["user_name"] == "Caroline Smith"
    assert [m["content"] for m in payload["messages_to_extract_from"]] == [
        m.content for m in EPISODE.messages
    ]
    first = payload["messages_to_extract_from"][0]
    assert first == {
        "uuid": M1,
        "speaker": "Caroline Smith",
        "role": "user",
        "role_type": "user",
        "time": "2023-05-08T13:56:00+00:00",
        "content": "I moved to Lisbon last week!",
    }
    # Context is there for pronouns, without a uuid that could be cited as a source.
    assert payload["context_messages"][0]["content"] == "Big news coming soon \u2728"
    assert "uuid" not in payload["context_messages"][0]
    assert [c["uuid"] for c in payload["candidate_facts"]] == [F_BERLIN, F_PAINT]
    assert payload["candidate_facts"][0]["fact"] == "Caroline lives in Berlin."

    extractor.extract(EPISODE, CANDIDATES)
    assert len(server.received) == 2  # one more episode, one more call


def test_valid_answer_maps_to_entities_facts_contradictions_and_usage(server: FakeChat) -> None:
    out = run(openai_settings(server.url))
    assert out.entities == [
        ExtractedEntity("Caroline Smith", "person", "Moved to Lisbon in May 2023."),
        ExtractedEntity("Lisbon", "place", None),
        ExtractedEntity("Acme", "other"),
    ]
    assert out.facts == [
        ExtractedFact(
            subject="Caroline Smith",
            relation="LIVES_IN",
            object="Lisbon",
            fact="Caroline Smith moved to Lisbon in early May 2023.",
            source_message=M1,
            valid_at=datetime(2023, 5, 1, tzinfo=UTC),
            exclusive=True,
        ),
        ExtractedFact(
            subject="Caroline Smith",
            relation="WORKS_AT",
            object="Acme",
            fact="Caroline Smith has a new job at Acme.",
            source_message=M2,
            valid_at=datetime(2023, 5, 8, 15, 57, tzinfo=timezone(timedelta(hours=2))),
            exclusive=True,
        ),
    ]
    assert all(f.valid_at is not None and f.valid_at.tzinfo for f in out.facts)
    assert out.contradicted == [F_BERLIN]
    assert out.usage == {"prompt_tokens": 812, "completion_tokens": 164, "total_tokens": 976}


def test_api_openai_com_gets_max_completion_tokens(
    server: FakeChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No base_url means api.openai.com, whose reasoning models reject max_tokens; the SDK's
    # own OPENAI_BASE_URL variable points that configuration at the local server.
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    run(openai_settings(server.url, base_url=None, model="gpt-4o-mini", max_output_tokens=300))
    (req,) = server.received
    assert req.body["max_completion_tokens"] == 300
    assert "max_tokens" not in req.body
    assert req.body["model"] == "gpt-4o-mini"


def test_azure_uses_deployment_api_version_and_api_key(server: FakeChat) -> None:
    extractor = build_extractor(azure_settings(server.url, max_output_tokens=512))
    out = extractor.extract(EPISODE, CANDIDATES)
    (req,) = server.received
    assert req.path == "/openai/deployments/extract-prod/chat/completions"
    assert req.query["api-version"] == ["2024-10-21"]
    assert req.headers["api-key"] == "az-key-9"
    assert "authorization" not in req.headers
    assert req.body["response_format"]["json_schema"]["strict"] is True
    assert req.body["max_tokens"] == 512
    assert extractor.id == "llm/gpt-4o-mini"  # the model, not the deployment name
    assert out.contradicted == [F_BERLIN]


def test_answers_are_repaired_where_safe(server: FakeChat) -> None:
    answer = {
        "entities": [{"name": "Caroline Smith", "label": "human", "summary": "  "}],
        "facts": [
            {
                "subject": "caroline smith",  # matched case-insensitively
                "relation": "likes",
                "object": "pottery",
                "fact": "Caroline Smith likes pottery.",
                "source_message": "not-a-message-uuid",  # attributed to the last message
                "valid_at": "2023-05",
                "invalid_at": "sometime",  # unparseable: dropped
                "exclusive": False,
            },
            {
                "subject": "Caroline Smith",
                "relation": "LIVED_IN",
                "object": "Berlin",
                "fact": "Caroline Smith lived in Berlin until 2023.",
                "source_message": M1.upper(),
                "valid_at": "2020-01-01",
                "invalid_at": "2019-01-01",  # before valid_at: dropped
                "exclusive": True,
            },
        ],
        "contradicted": [F_PAINT.upper(), F_PAINT],
    }
    server.replies = [Reply(content="```json\n" + json.dumps(answer) + "\n```")]
    out = run(openai_settings(server.url))
    assert [(e.name, e.label, e.summary) for e in out.entities] == [
        ("Caroline Smith", "other", None),
        ("pottery", "other", None),
        ("Berlin", "other", None),
    ]
    likes, lived = out.facts
    assert (likes.subject, likes.relation, likes.source_message) == ("Caroline Smith", "LIKES", M2)
    assert (likes.valid_at, likes.invalid_at) == (datetime(2023, 5, 1, tzinfo=UTC), None)
    assert (lived.source_message, lived.invalid_at) == (M1, None)
    assert out.contradicted == [F_PAINT]


def test_refusal_fails_with_the_refusal_text(server: FakeChat) -> None:
    server.replies = [Reply(content=None, refusal="I'm sorry, I can't help with that request.")]
    with pytest.raises(ExtractionError, match=r"refused.*I'm sorry, I can't help") as info:
        run(openai_settings(server.url))
    assert info.value.reason == "refusal"
    assert not info.value.transient
    assert info.value.usage["total_tokens"] == 976


def test_invalid_json_fails_and_says_so(server: FakeChat) -> None:
    server.replies = [Reply(content='{"entities": [{"name": "Caroline"')]
    with pytest.raises(ExtractionError, match="not valid JSON") as info:
        run(openai_settings(server.url))
    assert info.value.reason == "invalid_json"
    assert len(server.received) == 1


def test_wrong_shape_fails_and_names_the_field(server: FakeChat) -> None:
    server.replies = [Reply(content=json.dumps({"entities": "Caroline", "facts": []}))]
    with pytest.raises(ExtractionError, match=r"does not match the extraction schema: entities"):
        run(openai_settings(server.url))


def test_truncated_output_fails_and_names_the_setting(server: FakeChat) -> None:
    server.replies = [Reply(content='{"entities": [', finish_reason="length")]
    with pytest.raises(ExtractionError, match="truncated") as info:
        run(openai_settings(server.url, max_output_tokens=64))
    assert "max_output_tokens" in str(info.value) and "64" in str(info.value)
    assert info.value.reason == "truncated"


def test_server_errors_are_retried_with_backoff(server: FakeChat) -> None:
    server.replies = [Reply(status=500), Reply(status=500), Reply()]
    out = run(openai_settings(server.url, max_retries=3))
    assert len(server.received) == 3
    assert server.received[0].body == server.received[2].body
    assert out.contradicted == [F_BERLIN]
    assert out.usage["total_tokens"] == 976


def test_server_errors_past_the_retries_fail_as_transient(server: FakeChat) -> None:
    server.replies = [Reply(status=503)]
    with pytest.raises(ExtractionError, match="HTTP 503") as info:
        run(openai_settings(server.url, max_retries=1))
    assert len(server.received) == 2
    assert info.value.transient


def test_a_slow_server_times_out(server: FakeChat) -> None:
    server.replies = [Reply(delay_s=1.0)]
    start = time.perf_counter()
    with pytest.raises(ExtractionError, match=r"did not answer within 0\.2 s") as info:
        run(openai_settings(server.url, timeout_s=0.2))
    assert time.perf_counter() - start < 1.0
    assert info.value.reason == "timeout"


def test_a_server_that_is_down_fails_quickly_naming_the_endpoint() -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(ExtractionError, match=f"cannot reach.*127.0.0.1:{port}") as info:
        run(openai_settings(f"http://127.0.0.1:{port}", max_retries=1, timeout_s=2.0))
    assert time.perf_counter() - start < 3.0
    assert info.value.reason == "unreachable"
    assert "sk-test-123" not in str(info.value)


def test_an_empty_episode_makes_no_call(server: FakeChat) -> None:
    out = run(openai_settings(server.url), Episode("u1", "s1", []))
    assert (out.entities, out.facts, out.usage) == ([], [], {})
    assert server.received == []


def test_missing_settings_are_config_errors_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=r"extractor\.api_key"):
        build_extractor(ExtractorSettings(kind="llm"))
    with pytest.raises(ConfigError, match=r"extractor\.model"):
        build_extractor(ExtractorSettings(kind="llm", model=" ", api_key=SecretStr("k")))
    azure: dict[str, Any] = {"kind": "llm", "provider": "azure-openai"}
    with pytest.raises(ConfigError, match=r"extractor\.api_key"):
        build_extractor(ExtractorSettings(**azure))
    with pytest.raises(ConfigError, match=r"extractor\.azure_endpoint"):
        build_extractor(ExtractorSettings(**azure, api_key=SecretStr("k")))
    with pytest.raises(ConfigError, match=r"extractor\.azure_deployment"):
        build_extractor(
            ExtractorSettings(**azure, api_key=SecretStr("k"), azure_endpoint="https://x")
        )
    # A self-hosted OpenAI-compatible server (vLLM, Ollama) may need no key at all.
    local = build_extractor(ExtractorSettings(kind="llm", base_url="http://127.0.0.1:9/v1"))
    assert isinstance(local, LLMExtractor)
    local.close()
