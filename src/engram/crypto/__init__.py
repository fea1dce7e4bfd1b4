"""Field-level encryption: classification, envelopes, data keys and key providers.

``detect``/``redact``/``Classifier`` decide what is sensitive; ``FieldCipher`` seals a
field under a tenant's (and user's) data key from a ``Keyring``, whose keys a
``KeyProvider`` wraps. See ARCHITECTURE.md, "Encryption and keys".
"""

from __future__ import annotations

from engram.crypto.cache import DataKey, DataKeyCache
from engram.crypto.cipher import FieldCipher
from engram.crypto.detect import DETECTOR_KINDS, Classifier, Redaction, Span, detect, redact
from engram.crypto.envelope import (
    FORMAT_VERSION,
    TEXT_PREFIX,
    Envelope,
    FieldContext,
    is_ciphertext,
    seal,
    unseal,
)
from engram.crypto.keyring import (
    DataKeyRecord,
    Keyring,
    KeyState,
    KeyStore,
    MemoryKeyStore,
    build_keyring,
)
from engram.crypto.providers import KeyProvider, WrappedDek, build_provider
from engram.crypto.sensitivity import Sensitivity, combine, from_metadata

__all__ = [
    "DETECTOR_KINDS",
    "FORMAT_VERSION",
    "TEXT_PREFIX",
    "Classifier",
    "DataKey",
    "DataKeyCache",
    "DataKeyRecord",
    "Envelope",
    "FieldCipher",
    "FieldContext",
    "KeyProvider",
    "KeyState",
    "KeyStore",
    "Keyring",
    "MemoryKeyStore",
    "Redaction",
    "Sensitivity",
    "Span",
    "WrappedDek",
    "build_keyring",
    "build_provider",
    "combine",
    "detect",
    "from_metadata",
    "is_ciphertext",
    "redact",
    "seal",
    "unseal",
]
