"""API key format: ``egk_<key id>_<secret>``; only SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["PREFIX", "NewKey", "hash_secret", "new_key", "parse_key", "secret_matches"]

PREFIX = "egk_"
_FORMAT = re.compile(r"^egk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: ``token`` is shown once, ``digest`` is what is stored."""

    key_id: str
    token: str
    digest: bytes


def hash_secret(secret: str) -> bytes:
    # 256 bits of randomness need no slow hash: a brute force is hopeless either way.
    return hashlib.sha256(secret.encode()).digest()


def new_key() -> NewKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{PREFIX}{key_id}_{secret}", hash_secret(secret))


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    m = _FORMAT.match(token)
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, digest: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), digest)
