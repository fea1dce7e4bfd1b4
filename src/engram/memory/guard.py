"""Guards of protected writes: never re-store a redacted form as the value; seal off the
event loop only when sealing may wait on the key store or provider."""

from __future__ import annotations

from typing import Any

from engram.crypto.protect import KeyRef, Protector
from engram.errors import UnavailableError

__all__ = ["off_loop", "refuse_unreadable"]


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


def off_loop(protector: Protector, key: KeyRef | None) -> bool:
    """Whether sealing a write must run in a thread: encryption is on and its key is not
    known and in memory (looking it up, creating or unwrapping it waits on I/O). Sealing
    with a key in memory is CPU only, cheaper than the thread hop (and the GIL hand-over)."""
    return protector.enabled and (key is None or not key.ready())
