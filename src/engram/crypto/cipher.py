"""Field encryption as callers use it: text in, ``enc:v1:...`` out, and back."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from engram.crypto.cache import DataKey
from engram.crypto.envelope import (
    Envelope,
    FieldContext,
    header_of,
    key_of,
    open_bytes,
    seal,
    unseal,
)
from engram.crypto.keyring import Keyring
from engram.errors import DecryptionError

__all__ = ["FieldCipher"]


class FieldCipher:
    """Encrypts and decrypts field values with the data keys of a keyring."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def encrypt_bytes(self, plaintext: bytes, ctx: FieldContext, *, key_id: UUID) -> bytes:
        """The binary ciphertext of `plaintext` for field `ctx` under `key_id`'s primary."""
        key = self.keyring.encryption_key(key_id)
        return seal(key.aead, key.key_id, key.version, plaintext, ctx).to_bytes()

    def encrypt(self, plaintext: str, ctx: FieldContext, *, key_id: UUID) -> str:
        """The text ciphertext of `plaintext` for field `ctx` under `key_id`'s primary."""
        key = self.keyring.encryption_key(key_id)
        return seal(key.aead, key.key_id, key.version, plaintext.encode(), ctx).to_text()

    def _open(self, env: Envelope, ctx: FieldContext) -> bytes:
        return self._open_with(self.keyring.decryption_key(env.key_id, env.key_version), env, ctx)

    @staticmethod
    def _open_with(key: DataKey, env: Envelope, ctx: FieldContext) -> bytes:
        if key.tenant != ctx.tenant:
            raise _wrong_owner(key, ctx)
        return unseal(key.aead, env, ctx)

    def decrypt_bytes(self, ciphertext: bytes, ctx: FieldContext) -> bytes:
        """The plaintext of a binary ciphertext; DecryptionError if it does not open."""
        return self._open(Envelope.from_bytes(ciphertext), ctx)

    def decrypt_many(
        self, items: Sequence[tuple[bytes, FieldContext]]
    ) -> list[bytes | DecryptionError]:
        """The plaintexts of many binary ciphertexts, in order, their keys looked up
        together (those not cached: one store look-up, unwrapped as one batch). One that
        does not open is its DecryptionError; KeyUnavailableError if a key is needed from
        an unreachable provider."""
        heads: list[bytes | DecryptionError] = []
        for blob, _ in items:
            try:
                heads.append(header_of(blob))
            except DecryptionError as exc:
                heads.append(exc)
        slots = {h: key_of(h) for h in heads if isinstance(h, bytes)}
        keys = self.keyring.decryption_keys(slots.values())
        by_head = {h: keys[slot] for h, slot in slots.items()}
        out: list[bytes | DecryptionError] = []
        for head, (blob, ctx) in zip(heads, items, strict=True):
            key = head if isinstance(head, DecryptionError) else by_head[head]
            try:
                if isinstance(key, DecryptionError):
                    raise key
                if key.tenant != ctx.tenant:
                    raise _wrong_owner(key, ctx)
                out.append(open_bytes(key.aead, blob, ctx))
            except DecryptionError as exc:
                out.append(exc)
        return out

    def decrypt(self, ciphertext: str, ctx: FieldContext) -> str:
        """The plaintext of a text ciphertext; DecryptionError if it does not open."""
        return self._open(Envelope.from_text(ciphertext), ctx).decode()

    def _reseal(self, env: Envelope, ctx: FieldContext) -> Envelope | None:
        if env.key_version == self.keyring.primary_version(env.key_id):
            return None
        plaintext = self._open(env, ctx)
        key = self.keyring.encryption_key(env.key_id)
        return seal(key.aead, key.key_id, key.version, plaintext, ctx)

    def reencrypt(self, ciphertext: str, ctx: FieldContext) -> str | None:
        """The value under its key's primary version, or None if it already is."""
        env = self._reseal(Envelope.from_text(ciphertext), ctx)
        return None if env is None else env.to_text()

    def reencrypt_bytes(self, ciphertext: bytes, ctx: FieldContext) -> bytes | None:
        """The binary value under its key's primary version, or None if it already is."""
        env = self._reseal(Envelope.from_bytes(ciphertext), ctx)
        return None if env is None else env.to_bytes()


def _wrong_owner(key: DataKey, ctx: FieldContext) -> DecryptionError:
    return DecryptionError(
        f"data key {key.key_id} belongs to another tenant than {ctx.tenant!r}",
        reason="wrong_owner",
        key_id=str(key.key_id),
        key_version=key.version,
        hint="the value was copied from another tenant; restore it from a backup",
    )
