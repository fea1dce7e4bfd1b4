"""Contract tests: the OpenAI SDK against a local server speaking the embeddings wire protocol."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import openai
import pytest
from numpy.typing import NDArray
from pydantic import SecretStr

from engram.config import EmbedderSettings
from engram.embed import Embedder, build_embedder
from engram.embed.openai import OpenAIEmbedder
from engram.errors import ConfigError, EmbeddingError


def raw_vector(text: str, dims: int) -> NDArray[np.float32]:
    """The server's deterministic, deliberately not normalised, vector for a text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dims) * 3).astype(np.float32)


def unit(v: NDArray[np.float32]) -> NDArray[np.float32]:
    return v / np.linalg.norm(v)


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    """What the server saw, and how it should misbehave."""

    url: str
    received: list[Received] = field(default_factory=list)
    native_dims: int = 1536
    wrong_dims: int | None = None
    status: int = 200


def make_handler(state: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.received.append(
                Received(
                    "POST",
                    url.path,
                    parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
            )
            openai_path = url.path == "/v1/embeddings"
            azure_path = (
                url.path.startswith("/openai/deployments/")
                and url.path.endswith("/embeddings")
                and "api-version" in parse_qs(url.query)
            )
            if not (openai_path or azure_path):
                return self.reply(
                    404, {"error": {"message": "no such route", "type": "invalid_request_error"}}
                )
            if state.status != 200:
                return self.reply(
                    state.status,
                    {
                        "error": {
                            "message": "Incorrect API key",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    },
                )
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            if any(not isinstance(t, str) or not t for t in inputs):
                return self.reply(
                    400,
                    {"error": {"message": "'$.input' is invalid", "type": "invalid_request_error"}},
                )
            dims = state.wrong_dims or body.get("dimensions") or state.native_dims
            data = []
            for i, text in enumerate(inputs):
                v = raw_vector(text, dims)
                embedding: Any = (
                    base64.b64encode(v.astype("<f4").tobytes()).decode()
                    if body.get("encoding_format") == "base64"
                    else v.tolist()
                )
                data.append({"object": "embedding", "index": i, "embedding": embedding})
            data.reverse()  # clients must order by "index", not by position
            self.reply(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": body["model"],
                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                },
            )

        def reply(self, status: int, payload: dict[str, Any]) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    state = FakeOpenAI(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll interval: shutdown() waits for the loop to look (0.5 s by default).
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def openai_settings(server: FakeOpenAI, **overrides: Any) -> EmbedderSettings:
    values: dict[str, Any] = {
        "kind": "openai",
        "base_url": f"{server.url}/v1",
        "api_key": SecretStr("sk-test-123"),
        "max_retries": 0,
        "timeout_s": 5.0,
    }
    return EmbedderSettings(**(values | overrides))


def azure_settings(server: FakeOpenAI, **overrides: Any) -> EmbedderSettings:
    values: dict[str, Any] = {
        "kind": "azure-openai",
        "azure_endpoint": server.url,
        "azure_deployment": "emb-prod",
        "api_key": SecretStr("az-key-9"),
        "api_version": "2024-10-21",
        "max_retries": 0,
        "timeout_s": 5.0,
    }
    return EmbedderSettings(**(values | overrides))


TEXTS = ["first text", "second, longer text about hiking", "third"]


def test_openai_request_and_vectors(server: FakeOpenAI) -> None:
    embedder = build_embedder(openai_settings(server, dimensions=256))
    try:
        vectors = embedder.embed(TEXTS)
    finally:
        embedder.close()
    assert isinstance(embedder, Embedder)
    assert (embedder.id, embedder.dimensions) == ("openai/text-embedding-3-small", 256)
    (req,) = server.received
    assert req.path == "/v1/embeddings"
    assert req.headers["authorization"] == "Bearer sk-test-123"
    assert req.body["model"] == "text-embedding-3-small"
    assert req.body["dimensions"] == 256
    assert req.body["input"] == TEXTS
    assert req.body["encoding_format"] == "base64"  # the SDK's default, decoded by the SDK
    expected = np.stack([unit(raw_vector(t, 256)) for t in TEXTS])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_azure_request_uses_deployment_api_version_and_api_key(server: FakeOpenAI) -> None:
    embedder = build_embedder(azure_settings(server))
    try:
        vectors = embedder.embed(TEXTS)
    finally:
        embedder.close()
    (req,) = server.received
    assert req.path == "/openai/deployments/emb-prod/embeddings"
    assert req.query["api-version"] == ["2024-10-21"]
    assert req.headers["api-key"] == "az-key-9"
    assert "authorization" not in req.headers
    assert "dimensions" not in req.body  # ada-002 style deployments reject it; send only if set
    assert embedder.dimensions == 1536
    np.testing.assert_allclose(
        vectors, np.stack([unit(raw_vector(t, 1536)) for t in TEXTS]), atol=1e-6
    )


def test_both_wire_encodings_decode_to_the_same_vectors(server: FakeOpenAI) -> None:
    client = openai.OpenAI(api_key="sk-x", base_url=f"{server.url}/v1", max_retries=0)
    try:
        as_float = client.embeddings.create(model="m", input=TEXTS, encoding_format="float")
        as_b64 = client.embeddings.create(model="m", input=TEXTS, encoding_format="base64")
    finally:
        client.close()
    assert [r.body["encoding_format"] for r in server.received] == ["float", "base64"]
    for a, b in zip(
        sorted(as_float.data, key=lambda d: d.index),
        sorted(as_b64.data, key=lambda d: d.index),
        strict=True,
    ):
        # Asked for explicitly, base64 comes back undecoded, as the API sends it.
        assert isinstance(b.embedding, str)
        decoded = np.frombuffer(base64.b64decode(b.embedding), dtype="<f4")
        np.testing.assert_allclose(a.embedding, decoded, rtol=1e-6)


def test_dimensions_are_known_without_a_network_call(server: FakeOpenAI) -> None:
    for model, dims in [
        ("text-embedding-3-small", 1536),
        ("text-embedding-3-large", 3072),
        ("text-embedding-ada-002", 1536),
    ]:
        embedder = OpenAIEmbedder(openai_settings(server, model=model))
        assert embedder.dimensions == dims
        embedder.close()
    custom = OpenAIEmbedder(openai_settings(server, model="custom", dimensions=768))
    assert custom.dimensions == 768
    custom.close()
    assert server.received == []
    with pytest.raises(ConfigError, match="dimensions"):
        OpenAIEmbedder(openai_settings(server, model="nomic-embed-text"))


def test_wrong_length_vectors_raise_embedding_error(server: FakeOpenAI) -> None:
    server.wrong_dims = 100
    embedder = OpenAIEmbedder(openai_settings(server))
    with pytest.raises(EmbeddingError, match="100-dimensional vectors, expected 1536"):
        embedder.embed(TEXTS)
    embedder.close()


def test_rejected_key_raises_embedding_error(server: FakeOpenAI) -> None:
    server.status = 401
    embedder = OpenAIEmbedder(azure_settings(server))
    with pytest.raises(EmbeddingError, match="refused the API key") as info:
        embedder.embed(TEXTS)
    embedder.close()
    assert "az-key-9" not in str(info.value)


def test_empty_strings_are_sent_as_a_space_and_empty_input_sends_nothing(
    server: FakeOpenAI,
) -> None:
    embedder = OpenAIEmbedder(openai_settings(server))
    assert embedder.embed([]).shape == (0, 1536)
    assert server.received == []
    assert embedder.embed(["", "x"]).shape == (2, 1536)
    embedder.close()
    assert server.received[0].body["input"] == [" ", "x"]


def test_a_server_that_is_down_raises_embedding_error_quickly() -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = EmbedderSettings(
        kind="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=SecretStr("sk-x"),
        max_retries=1,
        timeout_s=2.0,
    )
    embedder = OpenAIEmbedder(settings)
    start = time.perf_counter()
    with pytest.raises(EmbeddingError, match="cannot reach the embedding endpoint"):
        embedder.embed(TEXTS)
    assert time.perf_counter() - start < 3.0
    embedder.close()


def test_missing_key_or_endpoint_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="api_key"):
        OpenAIEmbedder(EmbedderSettings(kind="openai"))
    with pytest.raises(ConfigError, match="azure_endpoint"):
        OpenAIEmbedder(EmbedderSettings(kind="azure-openai", api_key=SecretStr("k")))
    # A self-hosted OpenAI-compatible server (vLLM, Ollama) may need no key at all.
    OpenAIEmbedder(EmbedderSettings(kind="openai", base_url="http://127.0.0.1:9/v1")).close()
