"""Signed checkpoints of each tenant's chain (length and head hash), kept outside the
database so that cutting records off the end of the log is detected too."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engram.config import Settings
from engram.errors import ConfigError

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "Checkpointer",
    "DirectoryStore",
    "Signer",
    "checkpoint_paths",
    "from_settings",
    "latest",
    "write",
]

logger = logging.getLogger(__name__)


class CheckpointStore(Protocol):
    """Where checkpoints go: a directory here; any blob store with these three calls."""

    def put(self, name: str, data: bytes) -> None: ...
    def names(self, prefix: str) -> list[str]: ...
    def get(self, name: str) -> bytes: ...


class DirectoryStore:
    """Checkpoints as files under one directory (``<tenant>/<length>-<time>.json``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def names(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        return sorted(f"{prefix}/{p.name}" for p in folder.glob("*.json"))

    def get(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


class Signer:
    """An Ed25519 key in a PEM file, created with mode 0600 on first use."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            logger.warning("created the audit checkpoint signing key %s", key_file)
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                f"{key_file} is not an Ed25519 private key",
                hint="point audit.signing_key_file at an Ed25519 PEM key, or at a new path",
            )
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    tenant: str
    length: int
    head: str
    at: str
    key_id: str
    signature: str = ""

    def payload(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def write(
    store: CheckpointStore, signer: Signer, tenant: str, length: int, head: str
) -> Checkpoint:
    """Sign and store a checkpoint of ``tenant``'s chain."""
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    unsigned = Checkpoint(tenant, length, head, at, signer.key_id)
    cp = Checkpoint(**{**asdict(unsigned), "signature": signer.sign(unsigned.payload()).hex()})
    stamp = at.replace(":", "").replace("-", "").replace("+0000", "Z")
    store.put(f"{tenant}/{length:012d}-{stamp}.json", orjson.dumps(asdict(cp)))
    return cp


def latest(
    store: CheckpointStore, tenant: str, public_key: Ed25519PublicKey
) -> tuple[Checkpoint | None, list[str]]:
    """The longest correctly signed checkpoint of ``tenant``, and the names of any file
    that does not verify (forged or damaged)."""
    best: Checkpoint | None = None
    bad: list[str] = []
    for name in store.names(tenant):
        try:
            cp = Checkpoint(**orjson.loads(store.get(name)))
            public_key.verify(bytes.fromhex(cp.signature), cp.payload())
        except (InvalidSignature, ValueError, TypeError, orjson.JSONDecodeError):
            bad.append(name)
            continue
        if cp.tenant != tenant:
            bad.append(name)
        elif best is None or cp.length > best.length:
            best = cp
    return best, bad


class Checkpointer:
    """Writes a tenant's checkpoint when its chain has grown and the last one is older
    than ``interval_s``; ``flush()`` writes every pending one (at shutdown)."""

    def __init__(self, store: CheckpointStore, signer: Signer, interval_s: float) -> None:
        self.store = store
        self.signer = signer
        self.interval_s = interval_s
        self._written: dict[str, float] = {}
        self._pending: dict[str, tuple[int, str]] = {}

    def appended(self, tenant: str, length: int, head: str) -> None:
        current = self._pending.get(tenant)
        if current is None or length > current[0]:
            self._pending[tenant] = (length, head)
        if time.monotonic() - self._written.get(tenant, float("-inf")) >= self.interval_s:
            self._write(tenant)

    def flush(self) -> None:
        for tenant in list(self._pending):
            self._write(tenant)

    def _write(self, tenant: str) -> None:
        length, head = self._pending.pop(tenant)
        try:
            write(self.store, self.signer, tenant, length, head)
        except OSError as exc:  # the request was served and audited; say so loudly
            logger.error("cannot write the audit checkpoint of %s: %s", tenant, exc)
            return
        self._written[tenant] = time.monotonic()


def checkpoint_paths(settings: Settings) -> tuple[Path, Path]:
    """(checkpoint directory, signing key file) from the settings or under data_dir."""
    a = settings.audit
    base = Path(settings.data_dir).expanduser() / "audit"
    return (
        a.checkpoint_dir or base / "checkpoints",
        a.signing_key_file or base / "checkpoint-ed25519.pem",
    )


def from_settings(settings: Settings) -> tuple[DirectoryStore, Signer]:
    folder, key_file = checkpoint_paths(settings)
    return DirectoryStore(folder), Signer(key_file)
