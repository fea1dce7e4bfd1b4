"""Read-modify-write of protected rows: never re-store a redacted form as the value."""

from __future__ import annotations

from typing import Any

from engram.crypto.protect import Protector
from engram.errors import UnavailableError

__all__ = ["refuse_unreadable"]


def refuse_unreadable(protector: Protector, row: dict[str, Any], what: str) -> None:
    """Refuse to change a row holding ciphertexts while encryption is off.

    Its plain columns hold only the redacted forms; merging into those and storing the
    result would replace the real values with markers for good."""
    if protector.keyrings is None and any(
        v is not None for k, v in row.items() if k.endswith("_enc")
    ):
        raise UnavailableError(
            f"{what} has encrypted fields, and encryption is off on this server",
            hint="turn crypto.enabled back on (with the same key provider) to change it",
        )
