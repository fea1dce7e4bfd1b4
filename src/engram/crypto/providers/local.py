"""The `local` key provider: KEK versions in a JSON key file readable by its owner only.

The file is created on first use with mode 0600 and refused if anyone else may read or
write it. KEK ids look like ``<file id>/<version>``; a data key wrapped under another
file's KEK is reported as such instead of failing as a bad tag.

Wrapped blob: 1 byte format (1), a 12-byte nonce, then AES-256-GCM of the data key with
associated data ``engram/dek`` + the KEK id.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.crypto.providers.base import WrappedDek
from engram.errors import DecryptionError, KeyUnavailableError

__all__ = ["LocalKeyProvider"]

logger = logging.getLogger(__name__)

_FORMAT = "engram-kek/1"
_BLOB_VERSION = 1


class LocalKeyProvider:
    name = "local"
    in_process = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._loaded: tuple[tuple[int, int], dict[str, Any]] | None = None
        self._aeads: dict[str, AESGCM] = {}  # KEK id -> its AEAD, for the file as loaded

    # --- the key file ------------------------------------------------------------------

    def _fail(self, message: str, reason: str, hint: str | None = None) -> KeyUnavailableError:
        return KeyUnavailableError(message, provider=self.name, reason=reason, hint=hint)

    def _read(self) -> dict[str, Any]:
        """The key file's content, created on first use, re-read when it changes."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._create()
            st = self.path.stat()
        except OSError as exc:
            raise self._fail(f"cannot stat {self.path}: {exc}", "misconfigured") from exc
        if st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            raise self._fail(
                f"key file {self.path} has mode {stat.filemode(st.st_mode)}; it must be a "
                "regular file that only its owner can read (0600)",
                "misconfigured",
                hint=f"run: chmod 600 {self.path}",
            )
        if st.st_uid != os.geteuid():
            raise self._fail(
                f"key file {self.path} belongs to uid {st.st_uid}, not to this process "
                f"(uid {os.geteuid()})",
                "misconfigured",
                hint="run Engram as the key file's owner, or chown the file",
            )
        stamp = (st.st_mtime_ns, st.st_size)
        if self._loaded is None or self._loaded[0] != stamp:
            try:
                data = json.loads(self.path.read_bytes())
            except (OSError, ValueError) as exc:
                raise self._fail(
                    f"cannot read key file {self.path}: {exc}", "misconfigured"
                ) from exc
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise self._fail(f"{self.path} is not an Engram key file", "misconfigured")
            self._loaded, self._aeads = (stamp, data), {}
        return self._loaded[1]

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {
            "format": _FORMAT,
            "id": secrets.token_hex(6),
            "primary": 1,
            "keys": {"1": _new_key()},
        }
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        _write_private(tmp, data)
        try:
            os.link(tmp, self.path)  # fails if another process created it first
            logger.info("created key file %s", self.path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _kek(self, kek_id: str | None) -> tuple[str, AESGCM]:
        """The KEK `kek_id` (None: the primary) and its AEAD; the file is checked first."""
        data = self._read()
        kek_id = kek_id or f"{data['id']}/{data['primary']}"
        aead = self._aeads.get(kek_id)
        if aead is None:
            aead = self._aeads[kek_id] = self._load_kek(data, kek_id)
        return kek_id, aead

    def _load_kek(self, data: dict[str, Any], kek_id: str) -> AESGCM:
        file_id, _, version = kek_id.partition("/")
        if file_id != data["id"]:
            raise self._fail(
                f"the data key was wrapped by KEK {kek_id}, but {self.path} holds key set "
                f"{data['id']}",
                "kek_missing",
                hint="point crypto.local.key_file at the key file this data was written with",
            )
        entry = data["keys"].get(version)
        if entry is None:
            raise self._fail(f"KEK {kek_id} is not in {self.path}", "kek_missing")
        return AESGCM(base64.b64decode(entry["key"]))

    # --- the provider protocol ---------------------------------------------------------

    def current_kek(self) -> str:
        with self._lock:
            data = self._read()
            return f"{data['id']}/{data['primary']}"

    def wrap(self, plaintext_dek: bytes, kek_id: str | None = None) -> WrappedDek:
        with self._lock:
            kek_id, aead = self._kek(kek_id)
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, plaintext_dek, b"engram/dek" + kek_id.encode())
        return WrappedDek(self.name, kek_id, bytes([_BLOB_VERSION]) + nonce + sealed)

    def unwrap(self, wrapped: WrappedDek) -> bytes:
        with self._lock:
            _, aead = self._kek(wrapped.kek_id)
        blob = wrapped.blob
        try:
            if len(blob) < 29 or blob[0] != _BLOB_VERSION:
                raise InvalidTag
            return aead.decrypt(blob[1:13], blob[13:], b"engram/dek" + wrapped.kek_id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"wrapped data key under KEK {wrapped.kek_id} does not open",
                reason="unwrap_failed",
                hint="the stored data key is damaged; restore the key table from a backup",
            ) from None

    def new_kek(self) -> str:
        with self._lock:
            self._read()
            with self._exclusive():
                self._loaded = None
                data = dict(self._read())
                version = max(int(v) for v in data["keys"]) + 1
                data["keys"] = {**data["keys"], str(version): _new_key()}
                data["primary"] = version
                tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
                _write_private(tmp, data)
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
                self._loaded = None
            logger.info("new KEK %s/%d in %s", data["id"], version, self.path)
            return f"{data['id']}/{version}"

    def describe(self) -> dict[str, str]:
        return {"provider": self.name, "key_file": str(self.path)}

    def close(self) -> None:
        self._loaded, self._aeads = None, {}


def _new_key() -> dict[str, str]:
    return {
        "key": base64.b64encode(AESGCM.generate_key(256)).decode(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write_private(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
