"""The one protocol every archive store speaks, and key naming shared by all of them."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

__all__ = ["BlobStore", "delete_prefix", "key_part"]


class BlobStore(Protocol):
    """A flat namespace of immutable objects addressed by ``/``-separated keys."""

    name: str

    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) one object."""

    def get(self, key: str) -> bytes:
        """Read one object; NotFoundError if it does not exist."""

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, sorted."""

    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error (idempotent)."""


def delete_prefix(store: BlobStore, prefix: str) -> int:
    """Remove every object under ``prefix``; return how many there were."""
    keys = store.list(prefix)
    for key in keys:
        store.delete(key)
    return len(keys)


def key_part(value: str) -> str:
    """One path component from any id: percent-encoded, never '.', '..' or containing '/'."""
    return quote(value, safe="").replace(".", "%2E") or "%00"
