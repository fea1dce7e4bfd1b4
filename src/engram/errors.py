"""Engram's error tree. Every error a user can cause says what was wrong and what to do.

EngramError
├── ConfigError            bad settings or flags (exit 2 from the CLI)
├── NotFoundError          an id that does not exist (HTTP 404)
├── ValidationError        a request that cannot be applied as given (HTTP 400)
│   └── ConflictError      a duplicate id (HTTP 400 in the Zep API, as Zep does)
├── AuthError              missing or wrong credentials (HTTP 401)
├── UnavailableError       a dependency (database, model, KMS) is down (HTTP 503)
├── SchemaMismatchError    the database was made for other vector settings (refuse to start)
├── EmbeddingError         the embedder failed or returned something unusable (HTTP 503)
└── ExtractionError        the LLM extractor could not extract an episode (the job fails,
                           its messages stay); ``transient`` says whether a retry may help
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "EmbeddingError",
    "EngramError",
    "ExtractionError",
    "NotFoundError",
    "SchemaMismatchError",
    "UnavailableError",
    "ValidationError",
]


class EngramError(Exception):
    """Root of every error Engram raises on purpose."""

    status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(EngramError):
    status = 500


class NotFoundError(EngramError):
    status = 404

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} not found: {ident!r}")
        self.kind = kind
        self.ident = ident


class ValidationError(EngramError):
    status = 400

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field


class ConflictError(ValidationError):
    pass


class AuthError(EngramError):
    status = 401


class UnavailableError(EngramError):
    status = 503


class SchemaMismatchError(EngramError):
    status = 503


class EmbeddingError(EngramError):
    status = 503


class ExtractionError(EngramError):
    status = 503
    TRANSIENT = frozenset({"unreachable", "timeout", "rate_limited", "server_error"})

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        endpoint: str,
        hint: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.endpoint = endpoint
        self.usage = usage or {}  # tokens spent on the failed call, if it got an answer

    @property
    def transient(self) -> bool:
        """True when retrying later may succeed (network, rate limit, server error)."""
        return self.reason in self.TRANSIENT
