"""The `pkcs11` key provider: AES KEKs inside an HSM, reached through its PKCS#11 library.

KEK versions are AES-256 secret keys on the token labelled ``<key_label>-<n>``; the
highest n is current. The KEKs are created sensitive and non-extractable: they never
leave the token. Wrapped blob: 1 byte mechanism, then
- 1 ``aes-key-wrap-pad`` (CKM_AES_KEY_WRAP_PAD, RFC 5649) via C_WrapKey/C_UnwrapKey,
- 2 ``aes-key-wrap`` (CKM_AES_KEY_WRAP, RFC 3394) via C_WrapKey/C_UnwrapKey,
- 3 ``aes-gcm``: a 12-byte nonce, then C_Encrypt with CKM_AES_GCM (AAD: the KEK label).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from engram.crypto.providers.base import WrappedDek
from engram.errors import DecryptionError, KeyUnavailableError

__all__ = ["Pkcs11KeyProvider"]

logger = logging.getLogger(__name__)

MECHANISMS: dict[str, tuple[int, Mechanism | None]] = {
    "aes-key-wrap-pad": (1, Mechanism.AES_KEY_WRAP_PAD),
    "aes-key-wrap": (2, Mechanism.AES_KEY_WRAP),
    "aes-gcm": (3, None),
}
_BY_CODE = {code: (name, mech) for name, (code, mech) in MECHANISMS.items()}
# Errors that mean the token or session went away, as opposed to a bad wrapped key.
_GONE = (
    p11.DeviceError,
    p11.DeviceRemoved,
    p11.DeviceMemory,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.GeneralError,
)
_BAD_BLOB = (
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataLenRange,
    p11.FunctionFailed,
)


class Pkcs11KeyProvider:
    name = "pkcs11"
    in_process = False

    def __init__(
        self,
        *,
        library: str,
        token_label: str,
        pin: str | None,
        key_label: str = "engram-kek",
        mechanism: str = "aes-key-wrap-pad",
    ) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown mechanism {mechanism!r}")
        self.library = library
        self.token_label = token_label
        self.key_label = key_label
        self.mechanism = mechanism
        self._pin = pin
        self._lock = threading.RLock()
        self._session: pkcs11.Session | None = None
        self._current: str | None = None
        self._label = re.compile(re.escape(key_label) + r"-(\d+)")

    def _fail(self, message: str, reason: str, hint: str | None = None) -> KeyUnavailableError:
        return KeyUnavailableError(message, provider=self.name, reason=reason, hint=hint)

    def _open(self) -> pkcs11.Session:
        if self._session is not None:
            return self._session
        if not os.path.exists(self.library):
            raise self._fail(
                f"PKCS#11 library {self.library} does not exist",
                "misconfigured",
                hint="set crypto.pkcs11.library to the HSM vendor's .so",
            )
        try:
            lib = pkcs11.lib(self.library)
            token = lib.get_token(token_label=self.token_label)
        except p11.NoSuchToken as exc:
            raise self._fail(
                f"no token labelled {self.token_label!r} in {self.library}",
                "misconfigured",
                hint="check crypto.pkcs11.token_label (softhsm2-util --show-slots lists them)",
            ) from exc
        except (p11.PKCS11Error, RuntimeError, OSError) as exc:
            raise self._fail(f"cannot load {self.library}: {exc!r}", "unreachable") from exc
        try:
            try:
                self._session = token.open(rw=True, user_pin=self._pin)
            except p11.UserAlreadyLoggedIn:
                # Login is per application and token: another session of ours holds it.
                self._session = token.open(rw=True)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLocked, p11.PinExpired) as exc:
            raise self._fail(
                f"token {self.token_label!r} refused the PIN ({type(exc).__name__})",
                "denied",
                hint="check crypto.pkcs11.pin",
            ) from exc
        except p11.PKCS11Error as exc:
            raise self._fail(
                f"cannot open a session on {self.token_label!r}: {exc!r}", "unreachable"
            ) from exc
        return self._session

    def _reset(self) -> None:
        if self._session is not None:
            with contextlib.suppress(p11.PKCS11Error):
                self._session.close()
        self._session = None

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """Run `fn(session, *args)` holding the session; map token errors."""
        with self._lock:
            for attempt in (1, 2):
                session = self._open()
                try:
                    return fn(session, *args)
                except (p11.NoSuchKey, p11.UserNotLoggedIn) as exc:
                    # Login is shared by all sessions of this process on the token: if
                    # another one logged out, ours sees no private objects. Log in again.
                    self._reset()
                    if attempt == 2 and isinstance(exc, p11.NoSuchKey):
                        label = args[0] if args else self.key_label
                        raise self._fail(
                            f"{what}: no key labelled {label!r} on {self.token_label!r}",
                            "kek_missing",
                        ) from exc
                    if attempt == 2:
                        raise self._fail(f"{what}: not logged in ({exc!r})", "denied") from exc
                except _GONE as exc:
                    self._reset()
                    raise self._fail(
                        f"{what}: the token went away ({exc!r})", "unreachable"
                    ) from exc
            raise AssertionError("unreachable")

    def _versions(self, session: pkcs11.Session) -> list[int]:
        found = []
        for obj in session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
        ):
            m = self._label.fullmatch(str(obj[Attribute.LABEL]))
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def _generate(self, session: pkcs11.Session, version: int) -> str:
        label = f"{self.key_label}-{version}"
        session.generate_key(
            KeyType.AES,
            256,
            label=label,
            store=True,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.WRAP: True,
                Attribute.UNWRAP: True,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            },
        )
        logger.info("generated KEK %s on token %s", label, self.token_label)
        return label

    def current_kek(self) -> str:
        def current(session: pkcs11.Session) -> str:
            versions = self._versions(session)
            return f"{self.key_label}-{versions[-1]}" if versions else self._generate(session, 1)

        with self._lock:
            if self._current is None:
                self._current = self._call("find the current KEK", current)
            return self._current

    def new_kek(self) -> str:
        def generate(session: pkcs11.Session) -> str:
            versions = self._versions(session)
            return self._generate(session, (versions[-1] if versions else 0) + 1)

        with self._lock:
            self._current = self._call("generate a KEK", generate)
            return self._current

    def wrap(self, plaintext_dek: bytes, kek_id: str | None = None) -> WrappedDek:
        label = kek_id or self.current_kek()
        code, mech = MECHANISMS[self.mechanism]

        def wrap(session: pkcs11.Session, label: str) -> bytes:
            kek: Any = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=label)
            if mech is None:
                nonce = os.urandom(12)
                params = GCMParams(nonce, label.encode())
                sealed = kek.encrypt(
                    plaintext_dek, mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
                return nonce + bytes(sealed)
            dek = session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: plaintext_dek,
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: False,
                    Attribute.EXTRACTABLE: True,
                }
            )
            try:
                return bytes(kek.wrap_key(dek, mechanism=mech))
            finally:
                dek.destroy()

        blob = self._call(f"wrap under {label}", wrap, label)
        return WrappedDek(self.name, label, bytes([code]) + blob)

    def unwrap(self, wrapped: WrappedDek) -> bytes:
        label, blob = wrapped.kek_id, wrapped.blob
        if not blob or blob[0] not in _BY_CODE:
            raise DecryptionError(
                f"wrapped data key under {label} names no known mechanism",
                reason="unwrap_failed",
                hint="the stored data key is damaged; restore the key table from a backup",
            )
        _, mech = _BY_CODE[blob[0]]

        def unwrap(session: pkcs11.Session, label: str) -> bytes:
            kek: Any = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=label)
            if mech is None:
                params = GCMParams(blob[1:13], label.encode())
                return bytes(
                    kek.decrypt(blob[13:], mechanism=Mechanism.AES_GCM, mechanism_param=params)
                )
            key = kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                blob[1:],
                mechanism=mech,
                template={
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: False,
                    Attribute.EXTRACTABLE: True,
                },
            )
            try:
                return bytes(key[Attribute.VALUE])
            finally:
                key.destroy()

        try:
            result: bytes = self._call(f"unwrap under {label}", unwrap, label)
        except KeyUnavailableError as exc:
            # Some tokens (SoftHSM2 among them) answer a failed integrity check with
            # CKR_GENERAL_ERROR: if the token still answers, the blob was at fault.
            if exc.reason != "unreachable" or not self._alive(label):
                raise
            raise DecryptionError(
                f"token {self.token_label!r} could not unwrap the data key under {label}",
                reason="unwrap_failed",
                hint="the stored data key is damaged; restore the key table from a backup",
            ) from None
        except _BAD_BLOB as exc:
            raise DecryptionError(
                f"token {self.token_label!r} rejected the wrapped data key under {label} "
                f"({type(exc).__name__})",
                reason="unwrap_failed",
                hint="the stored data key is damaged; restore the key table from a backup",
            ) from None
        return result

    def _alive(self, label: str) -> bool:
        """True when the token answers and still holds the KEK `label`."""

        def probe(session: pkcs11.Session, label: str) -> None:
            session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=label)

        try:
            self._call("probe the token", probe, label)
        except KeyUnavailableError:
            return False
        return True

    def describe(self) -> dict[str, str]:
        return {
            "provider": self.name,
            "library": self.library,
            "token": self.token_label,
            "key_label": self.key_label,
            "mechanism": self.mechanism,
        }

    def close(self) -> None:
        with self._lock:
            self._reset()
