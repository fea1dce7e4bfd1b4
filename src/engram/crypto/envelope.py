"""The ciphertext format: AES-256-GCM under a data key, bound to the field it belongs to.

Binary form (format version 1), 49 bytes plus the plaintext::

    offset  size  field
    0       1     format version (1)
    1       16    key id: the data key's UUID
    17      4     key version, unsigned big-endian, >= 1
    21      12    nonce, random per encryption
    33      n+16  AES-256-GCM ciphertext of n bytes, then the 16-byte tag

Text form: ``enc:v1:`` then the binary form in unpadded base64url; only the canonical
encoding is accepted, so no two strings open to the same field.

Associated data (authenticated, not stored): the first 21 bytes above (version, key id,
key version), the label ``engram/field``, then tenant, table, column and row id, each as
a 4-byte big-endian length and UTF-8 bytes. A ciphertext copied to another tenant, table,
column or row therefore fails its tag check.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import struct
from dataclasses import dataclass
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.errors import DecryptionError

__all__ = [
    "FORMAT_VERSION",
    "KEY_BYTES",
    "TEXT_PREFIX",
    "Envelope",
    "FieldContext",
    "failed",
    "field_label",
    "head_or_none",
    "header_of",
    "is_ciphertext",
    "key_of",
    "open_bytes",
    "open_raw",
    "row_label",
    "seal",
    "unseal",
]

FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
TEXT_PREFIX = f"enc:v{FORMAT_VERSION}:"
_HEADER = struct.Struct(">B16sI")
_HEAD = _HEADER.size
_BODY = _HEAD + NONCE_BYTES
_MIN_BYTES = _BODY + TAG_BYTES
_AAD_LABEL = b"engram/field"
_TEXT = re.compile(r"enc:v(\d{1,3}):([A-Za-z0-9_-]*)")
_HINT = "the value was altered or copied from another field; restore it from a backup"


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Where a ciphertext lives; bound into its associated data."""

    tenant: str
    table: str
    column: str
    row_id: str

    def encode(self) -> bytes:
        return field_label(self.tenant, self.table, self.column) + _part(self.row_id)


def _part(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">I", len(raw)) + raw


@functools.lru_cache(maxsize=4096)
def field_label(tenant: str, table: str, column: str) -> bytes:
    """The part of a field's associated data that all rows of one column share, built
    once (a page of rows repeats the same few columns); the row id's part (`row_label`)
    follows it."""
    return _AAD_LABEL + _part(tenant) + _part(table) + _part(column)


@functools.lru_cache(maxsize=16384)
def _key_id(raw: bytes) -> UUID:
    return UUID(bytes=raw)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One parsed ciphertext."""

    key_id: UUID
    key_version: int
    nonce: bytes
    sealed: bytes  # ciphertext then tag
    version: int = FORMAT_VERSION

    def header(self) -> bytes:
        return _HEADER.pack(self.version, self.key_id.bytes, self.key_version)

    def aad(self, ctx: FieldContext) -> bytes:
        return self.header() + ctx.encode()

    def to_bytes(self) -> bytes:
        return self.header() + self.nonce + self.sealed

    def to_text(self) -> str:
        return TEXT_PREFIX + base64.urlsafe_b64encode(self.to_bytes()).rstrip(b"=").decode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse the binary form; raise DecryptionError for anything that is not one."""
        if not data:
            raise DecryptionError("empty ciphertext", reason="malformed", hint=_HINT)
        if data[0] != FORMAT_VERSION:
            raise DecryptionError(
                f"ciphertext format version {data[0]} is not supported (this build reads "
                f"{FORMAT_VERSION})",
                reason="unsupported_version",
                hint="read it with the Engram version that wrote it, or restore from a backup",
            )
        if len(data) < _MIN_BYTES:
            raise DecryptionError(
                f"ciphertext is {len(data)} bytes, shorter than the {_MIN_BYTES} of an empty one",
                reason="malformed",
                hint=_HINT,
            )
        _, key_id, key_version = _HEADER.unpack_from(data)
        nonce = data[_HEADER.size : _HEADER.size + NONCE_BYTES]
        return cls(_key_id(key_id), key_version, nonce, data[_HEADER.size + NONCE_BYTES :])

    @classmethod
    def from_text(cls, text: str) -> Envelope:
        """Parse the text form; raise DecryptionError for anything that is not one."""
        m = _TEXT.fullmatch(text)
        if m is None:
            raise DecryptionError(
                "not an Engram ciphertext (expected 'enc:v1:' and base64url)",
                reason="malformed",
                hint=_HINT,
            )
        body = m.group(2)
        try:
            data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            raise DecryptionError(
                "ciphertext is not valid base64url", reason="malformed", hint=_HINT
            ) from None
        env = cls.from_bytes(data)
        if int(m.group(1)) != env.version or env.to_text() != text:
            raise DecryptionError(
                "ciphertext text form is not canonical", reason="malformed", hint=_HINT
            )
        return env


def is_ciphertext(value: str) -> bool:
    """True when `value` looks like the text form of a ciphertext (not that it opens)."""
    return value.startswith("enc:v")


def seal(
    aead: AESGCM, key_id: UUID, key_version: int, plaintext: bytes, ctx: FieldContext
) -> Envelope:
    """Encrypt `plaintext` for the field `ctx` under one data key version."""
    if not 1 <= key_version <= 0xFFFFFFFF:
        raise ValueError(f"key version {key_version} out of range")
    env = Envelope(key_id, key_version, os.urandom(NONCE_BYTES), b"")
    sealed = aead.encrypt(env.nonce, plaintext, env.aad(ctx))
    return Envelope(key_id, key_version, env.nonce, sealed)


def unseal(aead: AESGCM, env: Envelope, ctx: FieldContext) -> bytes:
    """Decrypt `env` for the field `ctx`; DecryptionError if it was altered or moved."""
    try:
        return aead.decrypt(env.nonce, env.sealed, env.aad(ctx))
    except InvalidTag:
        raise _failed(env.key_id, env.key_version, ctx) from None


def _failed(key_id: UUID, key_version: int, ctx: FieldContext) -> DecryptionError:
    return DecryptionError(
        f"ciphertext under key {key_id} v{key_version} failed authentication "
        f"for {ctx.tenant}/{ctx.table}.{ctx.column} row {ctx.row_id}",
        reason="authentication_failed",
        key_id=str(key_id),
        key_version=key_version,
        hint=_HINT,
    )


# Reading many fields: the same checks and associated data as Envelope and unseal,
# without an object per field (a page of a hundred rows opens hundreds of them).


def header_of(data: bytes) -> bytes:
    """The header (format version, key id, key version) of a binary ciphertext;
    DecryptionError, as `Envelope.from_bytes` says it, if `data` is not one."""
    head = head_or_none(data)
    if head is not None:
        return head
    Envelope.from_bytes(data)  # raises what is wrong
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=16384)
def key_of(header: bytes) -> tuple[UUID, int]:
    """(key id, key version) named by a header from `header_of`."""
    _, key_id, key_version = _HEADER.unpack(header)
    return _key_id(key_id), int(key_version)


def head_or_none(data: bytes) -> bytes | None:
    """The header of a binary ciphertext, or None if `data` is not one (`header_of` says
    why)."""
    return data[:_HEAD] if len(data) >= _MIN_BYTES and data[0] == FORMAT_VERSION else None


def row_label(row_id: str) -> bytes:
    """The row id's part of a field's associated data; `field_label` precedes it."""
    return _part(row_id)


def open_bytes(aead: AESGCM, data: bytes, ctx: FieldContext) -> bytes:
    """Decrypt a binary ciphertext whose header `header_of` checked, for the field `ctx`."""
    try:
        return open_raw(aead, data, ctx.encode())
    except InvalidTag:
        raise _failed(*key_of(data[:_HEAD]), ctx) from None


def open_raw(aead: AESGCM, data: bytes, context: bytes) -> bytes:
    """Decrypt a binary ciphertext whose header was checked, its field's associated data
    being `context` (`FieldContext.encode`, or `field_label` + `row_label`); InvalidTag if
    it was altered or moved. The hot loop of a page of rows: no objects per field."""
    return aead.decrypt(data[_HEAD:_BODY], data[_BODY:], data[:_HEAD] + context)


def failed(header: bytes, ctx: FieldContext) -> DecryptionError:
    """The error for a ciphertext with this header that did not open as the field `ctx`."""
    return _failed(*key_of(header), ctx)
