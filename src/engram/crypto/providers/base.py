"""The key-provider protocol: a service that holds key-encryption keys (KEKs) and wraps
and unwraps data keys with them, never handing a KEK out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from engram.errors import DecryptionError
from engram.store.keys import WrappedDek

__all__ = ["BatchUnwrap", "KeyProvider", "WrappedDek"]


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps data keys under a KEK it keeps.

    Errors: KeyUnavailableError when the provider cannot be used now (unreachable,
    denied, misconfigured, KEK missing), DecryptionError(reason="unwrap_failed") when it
    answered that a wrapped key is not one of its own.
    """

    name: str
    # True when wrap and unwrap are computed in this process (no network, no device):
    # then making a data key is CPU only and may run on the event loop.
    in_process: bool

    def current_kek(self) -> str:
        """The id of the KEK new data keys are wrapped with."""
        ...

    def wrap(self, plaintext_dek: bytes, kek_id: str | None = None) -> WrappedDek:
        """Wrap a data key under `kek_id` (default: the current KEK)."""
        ...

    def unwrap(self, wrapped: WrappedDek) -> bytes:
        """The plaintext data key inside `wrapped`."""
        ...

    def new_kek(self) -> str:
        """Create a new KEK (or KEK version), make it current, and return its id."""
        ...

    def describe(self) -> dict[str, str]:
        """What this provider is, for `engram keys status` (never secret material)."""
        ...

    def close(self) -> None:
        """Release connections and sessions."""
        ...


@runtime_checkable
class BatchUnwrap(Protocol):
    """A provider that unwraps many data keys in one call per KEK (the keyring falls
    back to one `unwrap` per key for the others)."""

    def unwrap_many(self, wrapped: Sequence[WrappedDek]) -> list[bytes | DecryptionError]:
        """The data key inside each of `wrapped`, in order; one that does not open is its
        DecryptionError. KeyUnavailableError when the provider cannot be used now."""
        ...
