"""Engram's error tree. Every error a user can cause says what was wrong and what to do.

EngramError
├── ConfigError            bad settings or flags (exit 2 from the CLI)
├── NotFoundError          an id that does not exist (HTTP 404)
├── ValidationError        a request that cannot be applied as given (HTTP 400)
│   ├── ConflictError      a duplicate id (HTTP 400 in the Zep API, as Zep does)
│   └── TooLargeError      a request body past limits.max_body_bytes (HTTP 413)
├── AuthError              missing or wrong credentials (HTTP 401)
├── ForbiddenError         valid credentials without the permission asked for, or of a
│                          disabled tenant (HTTP 403); ``reason`` says which
├── RateLimitedError       a caller over its share: too many requests at once or per
│                          second, per key or per tenant (HTTP 429, ``retry_after_s``)
├── UnavailableError       a dependency (database, model, KMS) is down (HTTP 503)
│   ├── OverloadedError    the server is up but busy: no database connection came free
│   │                      in time (HTTP 503, ``retry_after_s``)
│   └── KeyUnavailableError  a key provider cannot wrap or unwrap a data key right now
│                          (unreachable, denied, misconfigured); ``reason`` says which
├── DecryptionError        a ciphertext that does not open: tampered, moved to another
│                          row, or its key is unknown, disabled or destroyed (HTTP 500)
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
    "DecryptionError",
    "EmbeddingError",
    "EngramError",
    "ExtractionError",
    "ForbiddenError",
    "KeyUnavailableError",
    "NotFoundError",
    "OverloadedError",
    "RateLimitedError",
    "SchemaMismatchError",
    "TooLargeError",
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
    """The request is well formed but clashes with what exists (a duplicate id, a state
    that does not allow it): 409."""

    status = 409


class TooLargeError(ValidationError):
    """A request body larger than the server reads: 413, before the body is read."""

    status = 413


class AuthError(EngramError):
    status = 401


class ForbiddenError(EngramError):
    """Authenticated, but not allowed: the message names what was missing."""

    status = 403
    REASONS = frozenset({"permission", "tenant_disabled", "tenant_unknown", "undeclared_route"})

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class RateLimitedError(EngramError):
    """Refused before any work: the caller's key or tenant is over a configured limit."""

    status = 429
    REASONS = frozenset({"concurrency", "rate"})

    def __init__(
        self, message: str, *, scope: str, reason: str, retry_after_s: int, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.scope = scope  # "key" or "tenant"
        self.reason = reason
        self.retry_after_s = retry_after_s


class UnavailableError(EngramError):
    status = 503


class OverloadedError(UnavailableError):
    """Every database connection is busy: the server is up, retrying later may succeed."""

    def __init__(self, message: str, *, retry_after_s: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class KeyUnavailableError(UnavailableError):
    """A key provider could not be used; nothing protected is written and reads that
    need an uncached key fail, until it is back."""

    REASONS = frozenset(
        {"unreachable", "timeout", "denied", "misconfigured", "kek_missing", "server_error"}
    )

    def __init__(
        self, message: str, *, provider: str, reason: str, hint: str | None = None
    ) -> None:
        super().__init__(f"key provider {provider!r} unavailable ({reason}): {message}", hint=hint)
        self.provider = provider
        self.reason = reason


class DecryptionError(EngramError):
    """A ciphertext was refused; never returned as garbage."""

    status = 500
    REASONS = frozenset(
        {
            "malformed",
            "unsupported_version",
            "unknown_key",
            "key_disabled",
            "key_destroyed",
            "wrong_owner",
            "authentication_failed",
            "unwrap_failed",
        }
    )

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        key_id: str | None = None,
        key_version: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.key_id = key_id
        self.key_version = key_version
        if reason == "key_destroyed":
            # Reads redact such fields; only a write can meet it: the caller changed a
            # crypto-shredded user, which is a conflict with that user's state, not a fault.
            self.status = 409


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
