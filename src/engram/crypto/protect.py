"""Protecting fields as the write and read paths use it.

On write a text field is classified (detectors, what the caller declared, the tenant's
policy and the configured floor). A field of a protected class is stored as ciphertext
under the data key of its tenant and user, and its plain column keeps only the redacted
form: detected values replaced by markers such as ``[EMAIL]``. When the class does not
come from detected values alone (the caller said ``phi``, or the policy says so), the
spans cannot say what is sensitive, so the whole field becomes its class marker
(``[PHI]``). The redacted form feeds full-text search and, unless ``embed_plaintext``
is set, the embedding.

A metadata object is protected as a whole: each string value is classified, protected
values are redacted in the stored object, and the original object is encrypted.

A user's identity (e-mail, first and last name) is personal data by nature: each value
is at least `pii`, whatever the detectors find, and the three are classified as one
group (the highest class of the three), so the stored class says which are encrypted.
A user's protected identity and metadata are sealed together, as one JSON object in the
column `profile`: a page of users is one field per row to open.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.config import CryptoSettings
from engram.crypto import envelope
from engram.crypto.cache import DataKey, DataKeyCache
from engram.crypto.cipher import FieldCipher
from engram.crypto.detect import Classifier, Redaction
from engram.crypto.envelope import (
    FieldContext,
    failed,
    field_label,
    head_or_none,
    header_of,
    open_raw,
    row_label,
)
from engram.crypto.keyring import DataKeyRecord, Keyring, KeyStore
from engram.crypto.providers import build_provider
from engram.crypto.providers.base import KeyProvider
from engram.crypto.sensitivity import Sensitivity
from engram.errors import DecryptionError
from engram.store import jsonb

__all__ = [
    "IDENTITY_FIELDS",
    "Column",
    "Keyrings",
    "Protector",
    "Sealed",
    "SealedMetadata",
    "SealedPage",
    "SealedProfile",
    "has_values",
    "sealed_or_redacted",
]

logger = logging.getLogger(__name__)

# Metadata keys that say how to treat the field and are never themselves protected.
_CONTROL_KEYS = frozenset({"sensitivity"})

# A user's fields that are personal data whatever they hold.
IDENTITY_FIELDS = ("email", "first_name", "last_name")


def has_values(metadata: Mapping[str, Any]) -> bool:
    """True when a metadata object holds anything to classify (beyond control keys)."""
    return any(k not in _CONTROL_KEYS for k in metadata)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A text field as stored: the plain column, the ciphertext column, its class."""

    text: str
    ciphertext: bytes | None
    sensitivity: Sensitivity
    embed_text: str


@dataclass(frozen=True, slots=True)
class SealedMetadata:
    """A metadata object as stored: redacted values, and the whole object encrypted."""

    value: dict[str, Any]
    ciphertext: bytes | None
    sensitivity: Sensitivity


@dataclass(frozen=True, slots=True)
class SealedProfile:
    """A user's identity and metadata as stored: plain (or redacted) values, the class of
    each part, and one ciphertext of the protected parts' real values."""

    identity: dict[str, str | None]
    metadata: dict[str, Any]
    identity_sensitivity: Sensitivity
    metadata_sensitivity: Sensitivity
    ciphertext: bytes | None


class KeyRef:
    """The data key of one (tenant, user), looked up or created on first use, then kept.

    One is made per write, so that the fields of one write (a user's identity and
    metadata, an episode's messages) take one look-up between them, and writes that
    protect nothing take none. ``looked_up``: the write knows the key id already:
    ``key_id``, read in its own transaction (``store.keys.send_key_id_of``), or None when
    the user has no key yet (found none, or is being created), which is then made without
    looking (if one is stored meanwhile, the stored one wins). ``draft``: a missing key is
    made but not stored; ``pending`` then holds its record, for the write to store in its
    own transaction (and `drop` forgets it if the write fails)."""

    def __init__(
        self, keyring: Keyring, tenant: str, user: str | None, *,
        looked_up: bool = False, key_id: UUID | None = None, draft: bool = False,
    ) -> None:  # fmt: skip
        self._keyring, self._tenant, self._user = keyring, tenant, user
        self._looked_up = looked_up
        self._key_id = key_id
        self._draft = draft and looked_up and key_id is None
        self._drafted: DataKey | None = None
        self.pending: DataKeyRecord | None = None

    def __call__(self) -> UUID:
        if self._key_id is None:
            if self._draft:
                self.pending, self._drafted = self._keyring.draft(self._tenant, self._user)
                self._keyring.adopt(self._drafted)
                self._key_id = self._drafted.key_id
            else:
                self._key_id = self._keyring.key_for(self._tenant, self._user, new=self._looked_up)
        return self._key_id

    def data_key(self) -> DataKey:
        """The primary version to seal under. A drafted key is this write's own, whatever
        the cache keeps (with ``dek_cache_ttl_s`` 0 it keeps nothing, and the record is
        not stored until the write is)."""
        key_id = self()
        return self._drafted or self._keyring.encryption_key(key_id)

    def ready(self) -> bool:
        """Whether sealing under this key needs no store and no remote provider: its id is
        known and its primary version in memory, or it is to be drafted by a provider that
        wraps in this process. Sealing is then CPU only, fit for the event loop."""
        if self._key_id is None:
            return self._draft and bool(getattr(self._keyring.provider, "in_process", False))
        return self._keyring.ready(self._key_id)

    def drop(self) -> None:
        """Forget a drafted key whose record the write did not store."""
        if self.pending is not None:
            self._keyring.forget(self.pending.key_id)
            self.pending = self._drafted = None


def _seal(key: DataKey, plaintext: bytes, ctx: FieldContext) -> bytes:
    """The binary ciphertext of `plaintext` for the field `ctx` under `key`."""
    return envelope.seal(key.aead, key.key_id, key.version, plaintext, ctx).to_bytes()


class Keyrings:
    """One keyring per tenant, sharing the provider and the cache of unwrapped keys."""

    def __init__(
        self,
        provider: KeyProvider,
        store_for: Any,  # Callable[[str], KeyStore]
        cache: DataKeyCache,
    ) -> None:
        self.provider = provider
        self._store_for = store_for
        self.cache = cache
        self._rings: dict[str, Keyring] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: CryptoSettings, data_dir: Path, store_for: Any) -> Keyrings:
        cache = DataKeyCache(ttl_s=settings.dek_cache_ttl_s, max_entries=settings.dek_cache_max)
        return cls(build_provider(settings, data_dir), store_for, cache)

    def get(self, tenant: str) -> Keyring:
        """The keyring whose records are `tenant`'s."""
        with self._lock:
            ring = self._rings.get(tenant)
            if ring is None:
                store: KeyStore = self._store_for(tenant)
                ring = self._rings[tenant] = Keyring(self.provider, store, cache=self.cache)
            return ring

    def close(self) -> None:
        self.provider.close()


T = TypeVar("T")


def sealed_or_redacted(protector: Protector, seal: Callable[[Protector], T]) -> tuple[T, bool]:
    """`seal(protector)`, or if the user's data key was destroyed (crypto-shredded),
    `seal(protector.redacting())`: what is stored then holds no protected value at all.
    The second item says which. For rows stored in clear that are sealed after the fact
    (a write of new data by a shredded user is refused instead)."""
    try:
        return seal(protector), False
    except DecryptionError as exc:
        if exc.reason != "key_destroyed":
            raise
        return seal(protector.redacting()), True


class Protector:
    """Classifies, redacts and encrypts fields on write; decrypts them on read."""

    def __init__(self, settings: CryptoSettings, keyrings: Keyrings | None) -> None:
        self.enabled = settings.enabled and keyrings is not None
        self.classifier = Classifier.from_settings(settings)
        self.embed_plaintext = settings.embed_plaintext
        self.keyrings = keyrings
        self._seals = True  # False: `redacting`

    def redacting(self) -> Protector:
        """This protector, storing protected values only as their redacted forms, with no
        ciphertext and class none (nothing protected is stored): for a crypto-shredded
        user's text and metadata that were never sealed, which no key can seal now."""
        view = copy.copy(self)
        view._seals = False
        return view

    # --- write -------------------------------------------------------------------------

    def classify(self, text: str, declared: Sensitivity = Sensitivity.NONE) -> Redaction:
        """The redacted form and class of `text` (declared: what the caller or policy said)."""
        return self.classifier.classify(text, policy=declared)

    def _redacted(self, found: Redaction) -> str:
        detected = max((s.sensitivity for s in found.spans), default=Sensitivity.NONE)
        if detected >= found.sensitivity:
            return found.text
        return f"[{found.sensitivity.label.upper()}]"

    def _cipher(self, tenant: str) -> FieldCipher:
        assert self.keyrings is not None
        return FieldCipher(self.keyrings.get(tenant))

    def key_ref(
        self, tenant: str, user: str | None, *, looked_up: bool = False,
        key_id: UUID | None = None, draft: bool = False,
    ) -> KeyRef:  # fmt: skip
        """The data key of (tenant, user) for one write (see KeyRef)."""
        assert self.keyrings is not None
        return KeyRef(
            self.keyrings.get(tenant), tenant, user,
            looked_up=looked_up, key_id=key_id, draft=draft,
        )  # fmt: skip

    def seal_text(
        self,
        ctx: FieldContext,
        user: str | None,
        text: str,
        declared: Sensitivity = Sensitivity.NONE,
        key: KeyRef | None = None,
    ) -> Sealed:
        """How to store `text` in the field `ctx` of `user`'s row (`key`: the write's)."""
        if not self.enabled:
            return Sealed(text, None, Sensitivity.NONE, text)
        found = self.classify(text, declared)
        if not self.classifier.protects(found.sensitivity):
            return Sealed(text, None, found.sensitivity, text)
        redacted = self._redacted(found)
        if not self._seals:
            return Sealed(redacted, None, Sensitivity.NONE, redacted)
        data_key = (key or self.key_ref(ctx.tenant, user)).data_key()
        ciphertext = _seal(data_key, text.encode(), ctx)
        embed = text if self.embed_plaintext else redacted
        return Sealed(redacted, ciphertext, found.sensitivity, embed)

    def redact_only(self, text: str) -> str:
        """`text` with its protected values replaced by their markers (for what is never
        encrypted, such as an entity's name); `text` itself if it holds none."""
        found = self.classify(text)
        return self._redacted(found) if self.classifier.protects(found.sensitivity) else text

    def seal_profile(
        self, tenant: str, row_id: str, user: str | None, identity: Mapping[str, str | None],
        metadata: Mapping[str, Any], key: KeyRef | None = None,
    ) -> SealedProfile:  # fmt: skip
        """How to store a user's identity (e-mail, first and last name) and metadata.

        Each identity value is at least `pii`, and the three are one group (the highest
        class of them); metadata values are classified like any metadata. The protected
        parts (the identity values that are set, when the group's class is protected; the
        metadata object, when any of its values is) are sealed as one JSON object in the
        column ``profile`` of `row_id`, and their plain columns keep the redacted forms."""
        if not self.enabled:
            none = Sensitivity.NONE
            return SealedProfile(dict(identity), dict(metadata), none, none, None)
        found = {k: self.classify(v, Sensitivity.PII) for k, v in identity.items() if v is not None}
        identity_level = max((f.sensitivity for f in found.values()), default=Sensitivity.NONE)
        levels: list[Sensitivity] = []
        redacted = self._redact_values(dict(metadata), levels, Sensitivity.NONE, top=True)
        secret: dict[str, Any] = {}
        plain = dict(identity)
        if self.classifier.protects(identity_level):
            for name, f in found.items():
                secret[name] = identity[name]
                plain[name] = self._redacted(f)
        stored = dict(metadata)
        if any(self.classifier.protects(x) for x in levels):
            secret["metadata"], stored = stored, redacted
        ciphertext = None
        if secret and not self._seals:
            identity_level = Sensitivity.NONE
            levels = []
        elif secret:
            data_key = (key or self.key_ref(tenant, user)).data_key()
            ctx = FieldContext(tenant, "users", "profile", row_id)
            ciphertext = _seal(data_key, jsonb.dumps(secret), ctx)
        metadata_level = max(levels, default=Sensitivity.NONE)
        return SealedProfile(plain, stored, identity_level, metadata_level, ciphertext)

    def seal_metadata(
        self,
        ctx: FieldContext,
        user: str | None,
        metadata: Mapping[str, Any],
        declared: Sensitivity = Sensitivity.NONE,
        key: KeyRef | None = None,
    ) -> SealedMetadata:
        """How to store a metadata object: redacted values and, if any, the whole encrypted.

        `declared` is the least class of every value (what the caller said of the record
        the metadata belongs to, e.g. a session's own ``sensitivity``); `key` the write's
        data key of (tenant, user)."""
        if not self.enabled or not metadata:
            return SealedMetadata(dict(metadata), None, Sensitivity.NONE)
        levels: list[Sensitivity] = []
        redacted = self._redact_values(dict(metadata), levels, declared, top=True)
        level = max(levels, default=Sensitivity.NONE)
        if not any(self.classifier.protects(x) for x in levels):
            return SealedMetadata(dict(metadata), None, level)
        if not self._seals:
            return SealedMetadata(redacted, None, Sensitivity.NONE)
        data_key = (key or self.key_ref(ctx.tenant, user)).data_key()
        ciphertext = _seal(data_key, jsonb.dumps(dict(metadata)), ctx)
        return SealedMetadata(redacted, ciphertext, level)

    def _redact_values(
        self, value: Any, levels: list[Sensitivity], declared: Sensitivity, top: bool = False
    ) -> Any:
        if isinstance(value, str):
            found = self.classify(value, declared)
            levels.append(found.sensitivity)
            return self._redacted(found) if self.classifier.protects(found.sensitivity) else value
        if isinstance(value, dict):
            return {
                k: v if top and k in _CONTROL_KEYS else self._redact_values(v, levels, declared)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._redact_values(v, levels, declared) for v in value]
        return value

    # --- read --------------------------------------------------------------------------

    def open_text(self, ctx: FieldContext, ciphertext: bytes) -> str:
        """The plaintext of a stored field (KeyUnavailableError, DecryptionError)."""
        return self._cipher(ctx.tenant).decrypt_bytes(ciphertext, ctx).decode()

    def open_metadata(self, ctx: FieldContext, ciphertext: bytes) -> dict[str, Any]:
        """The original metadata object of a stored row."""
        plaintext = self._cipher(ctx.tenant).decrypt_bytes(ciphertext, ctx)
        value: dict[str, Any] = jsonb.loads(plaintext)
        return value

    def page(
        self, tenant: str, rows: Sequence[dict[str, Any]], columns: Sequence[Column],
        id_key: str = "uuid",
    ) -> SealedPage:  # fmt: skip
        """The protected fields of a page of `tenant`'s rows, to open together."""
        return SealedPage(self._cipher(tenant), tenant, rows, columns, id_key)


@dataclass(frozen=True, slots=True)
class Column:
    """A protected column as the rows read from the store carry it."""

    enc: str  # the row's key holding the ciphertext
    plain: str  # the row's key that receives the plaintext
    table: str
    name: str  # the column name bound into the associated data
    json: bool = False  # the plaintext is a JSON value (a metadata object)
    # The plaintext is a JSON object of the row's fields (`plain` unused): a user's
    # profile, whose keys are the protected ones of e-mail, names and metadata.
    spread: bool = False


class SealedPage:
    """The protected fields of a page of rows of one tenant.

    Their data keys are looked up at once (the cached ones, then the rest in one store
    look-up and one batch of unwraps), and opening a field makes no object of its own:
    the hot loop of a page of a hundred users."""

    def __init__(
        self, cipher: FieldCipher, tenant: str, rows: Sequence[dict[str, Any]],
        columns: Sequence[Column], id_key: str,
    ) -> None:  # fmt: skip
        self._cipher, self._tenant, self._id_key = cipher, tenant, id_key
        # Column by column: (column, its label, [(row, ciphertext, header or b"")]).
        self._columns: list[tuple[Column, bytes, list[tuple[dict[str, Any], bytes, bytes]]]] = []
        self._heads: set[bytes] = set()
        for col in columns:
            enc, found = col.enc, []
            for row in rows:
                raw = row.get(enc)
                if raw is not None:
                    blob = bytes(raw)  # a binary cursor's may be a memoryview
                    # A malformed one's header is b"", never a key's.
                    found.append((row, blob, head_or_none(blob) or b""))
            if found:
                self._columns.append((col, field_label(tenant, col.table, col.name), found))
                self._heads.update(head for _, _, head in found if head)
        self._openers: dict[bytes, AESGCM | DecryptionError] | None = None

    def __bool__(self) -> bool:
        return bool(self._columns)

    @property
    def sealed(self) -> tuple[int, int]:
        """The fields to open and their ciphertexts' total bytes: the cost of `open`."""
        fields = sum(len(found) for _, _, found in self._columns)
        return fields, sum(len(blob) for _, _, found in self._columns for _, blob, _ in found)

    def in_memory(self) -> bool:
        """Whether every data key the page needs is cached: opening it is then CPU only,
        cheaper on the event loop than a hop to a thread."""
        if self._openers is None:
            self._openers = self._cipher.openers(self._heads, self._tenant, cached_only=True)
        return self._openers is not None

    def open(self) -> list[DecryptionError]:
        """Put each field's plaintext (text, or the JSON value) in its row's `plain` key
        (a spread column's keys in the row itself). A field that does not open keeps what
        its row had and is returned as its error; KeyUnavailableError if a key is needed
        from an unreachable provider."""
        openers = self._openers
        if openers is None:
            openers = self._openers = self._cipher.openers(self._heads, self._tenant)
            assert openers is not None
        errors: list[DecryptionError] = []
        loads, id_key = jsonb.loads, self._id_key
        for col, label, found in self._columns:
            plain, spread, as_json = col.plain, col.spread, col.json
            for row, blob, head in found:
                aead = openers.get(head)
                if type(aead) is AESGCM:
                    try:
                        raw = open_raw(aead, blob, label + row_label(str(row[id_key])))
                    except InvalidTag:
                        ctx = FieldContext(self._tenant, col.table, col.name, str(row[id_key]))
                        errors.append(failed(head, ctx))
                        continue
                    if spread:
                        row.update(loads(raw))
                    else:
                        row[plain] = loads(raw) if as_json else raw.decode()
                elif isinstance(aead, DecryptionError):
                    errors.append(aead)
                else:
                    try:
                        header_of(blob)
                    except DecryptionError as exc:
                        errors.append(exc)
        return errors
