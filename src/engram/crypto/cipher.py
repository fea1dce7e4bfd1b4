"""Field encryption as callers use it: text in, ``enc:v1:...`` out, and back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.crypto.cache import DataKey
from engram.crypto.envelope import (
    Envelope,
    FieldContext,
    head_or_none,
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
            raise _wrong_owner(key, ctx.tenant)
        return unseal(key.aead, env, ctx)

    def decrypt_bytes(self, ciphertext: bytes, ctx: FieldContext) -> bytes:
        """The plaintext of a binary ciphertext; DecryptionError if it does not open."""
        return self._open(Envelope.from_bytes(ciphertext), ctx)

    def openers(
        self, heads: Iterable[bytes], tenant: str, *, cached_only: bool = False
    ) -> dict[bytes, AESGCM | DecryptionError] | None:
        """What opens the ciphertexts with each header (`head_or_none`) in fields of
        `tenant`: the data key version's AEAD, or why none does (unknown, disabled,
        destroyed, or another tenant's key). The cached versions, and the rest read from
        the store in one look-up and unwrapped as one batch; with `cached_only`, None
        unless every one is in memory (then nothing reads the store or calls the
        provider). KeyUnavailableError if a key is needed from an unreachable provider."""
        out: dict[bytes, AESGCM | DecryptionError] = {}
        if cached_only:
            # A header is the format byte, then the key version's name in the cache.
            cached = self.keyring.cached_keys({h[1:] for h in heads})
            if cached is None:
                return None
            for head in heads:
                key = cached[head[1:]]
                out[head] = key.aead if key.tenant == tenant else _wrong_owner(key, tenant)
            return out
        slots = {h: key_of(h) for h in heads}
        keys = self.keyring.decryption_keys(slots.values())
        for head, slot in slots.items():
            found = keys[slot]
            if isinstance(found, DecryptionError):
                out[head] = found
            elif found.tenant != tenant:
                out[head] = _wrong_owner(found, tenant)
            else:
                out[head] = found.aead
        return out

    def decrypt_many(
        self, items: Sequence[tuple[bytes, FieldContext]]
    ) -> list[bytes | DecryptionError]:
        """The plaintexts of many binary ciphertexts, in order, their keys
        looked up together (see `openers`). One that does not open is its
        DecryptionError; KeyUnavailableError if a key is needed from an unreachable
        provider."""
        heads = [head_or_none(blob) for blob, _ in items]
        wanted = {h for h in heads if h is not None}
        openers = {t: self.openers(wanted, t) or {} for t in {ctx.tenant for _, ctx in items}}
        out: list[bytes | DecryptionError] = []
        for head, (blob, ctx) in zip(heads, items, strict=True):
            try:
                if head is None:
                    header_of(blob)  # raises what is wrong
                    raise AssertionError("unreachable")
                aead = openers[ctx.tenant][head]
                if isinstance(aead, DecryptionError):
                    raise aead
                out.append(open_bytes(aead, blob, ctx))
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


def _wrong_owner(key: DataKey, tenant: str) -> DecryptionError:
    return DecryptionError(
        f"data key {key.key_id} belongs to another tenant than {tenant!r}",
        reason="wrong_owner",
        key_id=str(key.key_id),
        key_version=key.version,
        hint="the value was copied from another tenant; restore it from a backup",
    )
