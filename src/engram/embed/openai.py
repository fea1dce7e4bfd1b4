"""Hosted embedders through the ``openai`` SDK: OpenAI, Azure OpenAI, OpenAI-compatible."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import openai
from numpy.typing import NDArray

from engram.config import EmbedderSettings
from engram.errors import ConfigError, EmbeddingError

__all__ = ["KNOWN_DIMENSIONS", "OpenAIEmbedder"]

logger = logging.getLogger(__name__)

# Native sizes, so that the vector column can be created without a network call.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_MAX_INPUTS = 2048  # the API's limit on inputs per request


class OpenAIEmbedder:
    """Embeds through an OpenAI or Azure OpenAI embeddings endpoint; rows are unit length."""

    def __init__(self, settings: EmbedderSettings) -> None:
        if settings.kind not in ("openai", "azure-openai"):
            raise ConfigError(f"OpenAIEmbedder cannot serve embedder kind {settings.kind!r}")
        self.model = settings.model
        dims = settings.dimensions or KNOWN_DIMENSIONS.get(settings.model)
        if dims is None:
            raise ConfigError(
                f"the vector size of embedding model {settings.model!r} is unknown",
                hint="set embedder.dimensions (ENGRAM_EMBEDDER__DIMENSIONS) to its size",
            )
        self.dimensions: int = dims
        # The same model gives the same vectors through OpenAI or Azure: one id for both.
        self.id = f"openai/{settings.model}"
        self._send_dimensions = settings.dimensions
        self._client = _client(settings)
        # Azure routes by deployment name, which the SDK takes from the `model` field.
        self._request_model = (
            settings.azure_deployment or settings.model
            if settings.kind == "azure-openai"
            else settings.model
        )
        self._endpoint = str(self._client.base_url)
        logger.info("embedder %s (%d dimensions) at %s", self.id, self.dimensions, self._endpoint)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Return one unit-length row per text, in order."""
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(texts), _MAX_INPUTS):
            chunk = list(texts[start : start + _MAX_INPUTS])
            out[start : start + len(chunk)] = self._request(chunk)
        return out

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def _request(self, texts: list[str]) -> NDArray[np.float32]:
        # The API rejects empty strings; a lone space stands in for "no text".
        inputs = [t if t else " " for t in texts]
        try:
            if self._send_dimensions is None:
                response = self._client.embeddings.create(model=self._request_model, input=inputs)
            else:
                response = self._client.embeddings.create(
                    model=self._request_model, input=inputs, dimensions=self._send_dimensions
                )
        except openai.APITimeoutError as exc:
            raise EmbeddingError(
                f"the embedding endpoint {self._endpoint} timed out",
                hint="raise embedder.timeout_s or check the endpoint",
            ) from exc
        except openai.APIConnectionError as exc:
            raise EmbeddingError(
                f"cannot reach the embedding endpoint {self._endpoint}: {exc}",
                hint="check embedder.base_url / azure_endpoint and the network",
            ) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise EmbeddingError(
                f"the embedding endpoint {self._endpoint} refused the API key "
                f"(HTTP {exc.status_code})",
                hint="check embedder.api_key",
            ) from exc
        except openai.NotFoundError as exc:
            raise EmbeddingError(
                f"model or deployment {self._request_model!r} not found at {self._endpoint}",
                hint="check embedder.model / azure_deployment",
            ) from exc
        except openai.APIStatusError as exc:
            raise EmbeddingError(
                f"the embedding endpoint {self._endpoint} answered HTTP "
                f"{exc.status_code}: {exc.message}"
            ) from exc
        except openai.OpenAIError as exc:
            raise EmbeddingError(f"embedding request to {self._endpoint} failed: {exc}") from exc
        return self._vectors(response, len(texts))

    def _vectors(
        self, response: openai.types.CreateEmbeddingResponse, count: int
    ) -> NDArray[np.float32]:
        data = sorted(response.data, key=lambda d: d.index)
        if [d.index for d in data] != list(range(count)):
            raise EmbeddingError(
                f"the embedding endpoint {self._endpoint} returned "
                f"{len(data)} vectors for {count} texts"
            )
        for d in data:
            if len(d.embedding) != self.dimensions:
                raise EmbeddingError(
                    f"the embedding endpoint {self._endpoint} returned {len(d.embedding)}-"
                    f"dimensional vectors, expected {self.dimensions}",
                    hint="set embedder.dimensions to the model's size, or use a model that "
                    "supports the `dimensions` parameter",
                )
        vectors: NDArray[np.float32] = np.asarray([d.embedding for d in data], dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise EmbeddingError(
                f"the embedding endpoint {self._endpoint} returned a zero or non-finite vector"
            )
        vectors /= norms
        return vectors


def _client(settings: EmbedderSettings) -> openai.OpenAI:
    """Build the SDK client for the settings; secrets never appear in errors."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    timeout, retries = settings.timeout_s, settings.max_retries
    if settings.kind == "azure-openai":
        key = key or os.environ.get("AZURE_OPENAI_API_KEY")
        if not key:
            raise ConfigError(
                "embedder.api_key is not set for Azure OpenAI", hint="set ENGRAM_EMBEDDER__API_KEY"
            )
        if settings.base_url:
            return openai.AzureOpenAI(
                api_key=key,
                base_url=settings.base_url,
                api_version=settings.api_version,
                timeout=timeout,
                max_retries=retries,
            )
        endpoint = settings.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ConfigError(
                "embedder.azure_endpoint is not set",
                hint="set ENGRAM_EMBEDDER__AZURE_ENDPOINT to https://<resource>.openai.azure.com",
            )
        return openai.AzureOpenAI(
            api_key=key,
            azure_endpoint=endpoint,
            azure_deployment=settings.azure_deployment or settings.model,
            api_version=settings.api_version,
            timeout=timeout,
            max_retries=retries,
        )
    key = key or os.environ.get("OPENAI_API_KEY")
    if not key:
        if not settings.base_url:
            raise ConfigError(
                "embedder.api_key is not set for OpenAI", hint="set ENGRAM_EMBEDDER__API_KEY"
            )
        key = "unused"  # self-hosted OpenAI-compatible servers often need none
    return openai.OpenAI(
        api_key=key, base_url=settings.base_url, timeout=timeout, max_retries=retries
    )
