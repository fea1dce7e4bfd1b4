"""The bring-your-own-model extractor: one structured-output chat completion per episode,
through the official ``openai`` SDK (OpenAI, Azure OpenAI, or any OpenAI-compatible
``base_url`` such as vLLM or Ollama)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from engram.config import ExtractorSettings
from engram.errors import ConfigError, ExtractionError
from engram.extract.answer import InvalidAnswer, parse_answer
from engram.extract.prompt import prompt_messages, response_format
from engram.extract.types import CandidateFact, Episode, Extraction

__all__ = ["ExtractionError", "LLMExtractor", "Reason"]

logger = logging.getLogger(__name__)

Reason = Literal[
    "unreachable", "timeout", "rate_limited", "server_error", "auth", "not_found",
    "rejected", "failed", "refusal", "truncated", "content_filter", "empty",
    "invalid_json", "schema",
]  # fmt: skip


class LLMExtractor:
    """Extracts entities, facts and contradictions with one chat completion per episode."""

    uses_candidates = True

    def __init__(self, settings: ExtractorSettings) -> None:
        if settings.kind != "llm":
            raise ConfigError(f"LLMExtractor cannot serve extractor kind {settings.kind!r}")
        if not settings.model.strip():
            raise ConfigError("extractor.model is empty", hint="set ENGRAM_EXTRACTOR__MODEL")
        self.id = f"llm/{settings.model}"
        self._settings = settings
        self._client = _client(settings)
        self._endpoint = str(self._client.base_url)
        azure = settings.provider == "azure-openai"
        # Azure routes by deployment, which the SDK puts in the URL; the body names it too.
        self._model = (settings.azure_deployment or settings.model) if azure else settings.model
        # api.openai.com's reasoning models reject `max_tokens`; Azure's GA api-version and
        # OpenAI-compatible servers (vLLM, Ollama) all accept it.
        self._completion_tokens = not azure and settings.base_url is None

    def extract(self, episode: Episode, candidates: Sequence[CandidateFact] = ()) -> Extraction:
        """Entities and facts stated in the episode, and the candidates it contradicts."""
        if not episode.messages:
            return Extraction()
        started = time.perf_counter()
        completion = self._complete(prompt_messages(episode, candidates))
        usage = _usage(completion)
        content = self._content(completion, usage)
        try:
            extraction = parse_answer(content, episode, candidates)
        except InvalidAnswer as exc:
            raise ExtractionError(
                str(exc),
                reason="invalid_json" if exc.kind == "invalid_json" else "schema",
                endpoint=self._endpoint,
                hint="use a model that supports structured outputs (JSON schema, strict)",
                usage=usage,
            ) from exc
        logger.debug(
            "extracted %d entities, %d facts, %d contradictions in %.2f s (%s tokens)",
            len(extraction.entities), len(extraction.facts), len(extraction.contradicted),
            time.perf_counter() - started, usage.get("total_tokens", "?"),
        )  # fmt: skip
        return replace(extraction, usage=usage)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def _complete(self, messages: list[ChatCompletionMessageParam]) -> ChatCompletion:
        s, endpoint = self._settings, self._endpoint
        try:
            # The SDK retries 408/409/429/5xx and connection errors with exponential backoff.
            if self._completion_tokens:
                return self._client.chat.completions.create(
                    model=self._model, messages=messages, response_format=response_format(),
                    temperature=s.temperature, max_completion_tokens=s.max_output_tokens,
                )  # fmt: skip
            return self._client.chat.completions.create(
                model=self._model, messages=messages, response_format=response_format(),
                temperature=s.temperature, max_tokens=s.max_output_tokens,
            )  # fmt: skip
        except openai.APITimeoutError as exc:
            raise self._error(
                f"the extraction endpoint {endpoint} did not answer within {s.timeout_s} s "
                f"({s.max_retries} retries)",
                "timeout", "raise extractor.timeout_s or check the model server",
            ) from exc  # fmt: skip
        except openai.APIConnectionError as exc:
            raise self._error(
                f"cannot reach the extraction endpoint {endpoint} ({s.max_retries} retries): {exc}",
                "unreachable", "check extractor.base_url / azure_endpoint and the network",
            ) from exc  # fmt: skip
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._error(
                f"the extraction endpoint {endpoint} refused the API key (HTTP {exc.status_code})",
                "auth", "check extractor.api_key",
            ) from exc  # fmt: skip
        except openai.NotFoundError as exc:
            raise self._error(
                f"model or deployment {self._model!r} not found at {endpoint}",
                "not_found", "check extractor.model / azure_deployment",
            ) from exc  # fmt: skip
        except openai.RateLimitError as exc:
            raise self._error(
                f"the extraction endpoint {endpoint} is rate limiting ({s.max_retries} retries): "
                f"{exc.message}",
                "rate_limited", "lower worker.concurrency or raise the quota",
            ) from exc  # fmt: skip
        except openai.BadRequestError as exc:
            raise self._error(
                f"the extraction endpoint {endpoint} rejected the request: {exc.message}",
                "rejected", "the model must support structured outputs (JSON schema, strict)",
            ) from exc  # fmt: skip
        except openai.APIStatusError as exc:
            reason: Reason = "server_error" if exc.status_code >= 500 else "failed"
            raise self._error(
                f"the extraction endpoint {endpoint} answered HTTP {exc.status_code} "
                f"({s.max_retries} retries): {exc.message}",
                reason, None,
            ) from exc  # fmt: skip
        except openai.OpenAIError as exc:
            raise self._error(
                f"extraction request to {endpoint} failed: {exc}", "failed", None
            ) from exc

    def _content(self, completion: ChatCompletion, usage: dict[str, int]) -> str:
        if not completion.choices:
            raise self._error("the model returned no choices", "empty", None, usage)
        choice = completion.choices[0]
        if choice.message.refusal:
            raise self._error(
                f"the model refused to extract the episode: {choice.message.refusal}",
                "refusal", None, usage,
            )  # fmt: skip
        if choice.finish_reason == "length":
            raise self._error(
                "the model's output was truncated at extractor.max_output_tokens "
                f"({self._settings.max_output_tokens} tokens)",
                "truncated", "raise extractor.max_output_tokens", usage,
            )  # fmt: skip
        if choice.finish_reason == "content_filter":
            raise self._error(
                "the provider's content filter blocked the model's answer",
                "content_filter", "review the provider's content filter settings", usage,
            )  # fmt: skip
        if not choice.message.content:
            raise self._error("the model returned an empty answer", "empty", None, usage)
        return choice.message.content

    def _error(
        self, message: str, reason: Reason, hint: str | None, usage: dict[str, int] | None = None
    ) -> ExtractionError:
        return ExtractionError(
            message, reason=reason, endpoint=self._endpoint, hint=hint, usage=usage
        )


def _usage(completion: ChatCompletion) -> dict[str, int]:
    u = completion.usage
    if u is None:  # some OpenAI-compatible servers omit it
        return {}
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def _client(settings: ExtractorSettings) -> openai.OpenAI:
    """Build the SDK client for the settings; secrets never appear in errors."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    timeout, retries = settings.timeout_s, settings.max_retries
    if settings.provider == "azure-openai":
        key = key or os.environ.get("AZURE_OPENAI_API_KEY")
        if not key:
            raise ConfigError(
                "extractor.api_key is not set for Azure OpenAI",
                hint="set ENGRAM_EXTRACTOR__API_KEY",
            )
        if settings.base_url:
            return openai.AzureOpenAI(
                api_key=key, base_url=settings.base_url, api_version=settings.api_version,
                timeout=timeout, max_retries=retries,
            )  # fmt: skip
        endpoint = settings.azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ConfigError(
                "extractor.azure_endpoint is not set",
                hint="set ENGRAM_EXTRACTOR__AZURE_ENDPOINT to https://<resource>.openai.azure.com",
            )
        if not settings.azure_deployment:
            raise ConfigError(
                "extractor.azure_deployment is not set",
                hint="set ENGRAM_EXTRACTOR__AZURE_DEPLOYMENT to the chat model's deployment name",
            )
        return openai.AzureOpenAI(
            api_key=key, azure_endpoint=endpoint, azure_deployment=settings.azure_deployment,
            api_version=settings.api_version, timeout=timeout, max_retries=retries,
        )  # fmt: skip
    key = key or os.environ.get("OPENAI_API_KEY")
    if not key:
        if not settings.base_url:
            raise ConfigError(
                "extractor.api_key is not set for OpenAI",
                hint="set ENGRAM_EXTRACTOR__API_KEY, or extractor.base_url for a self-hosted "
                "OpenAI-compatible server",
            )
        key = "unused"  # self-hosted OpenAI-compatible servers (vLLM, Ollama) often need none
    return openai.OpenAI(
        api_key=key, base_url=settings.base_url, timeout=timeout, max_retries=retries
    )
