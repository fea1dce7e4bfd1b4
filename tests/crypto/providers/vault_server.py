"""A local HTTP server speaking HashiCorp Vault's transit API, as Vault answers it.

Covers what the provider uses and the cases it must handle: versioned keys and
``vault:v<n>:`` ciphertexts (base64 of a 12-byte nonce and AES-256-GCM output), rotation,
``min_decryption_version``, upsert on first encrypt, ``X-Vault-Token`` checks (403
``permission denied``), a sealed Vault (503), and Vault's error bodies ``{"errors": [...]}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PATH = re.compile(
    r"/v1/(?P<mount>[\w-]+)/(?P<op>keys|encrypt|decrypt)/(?P<name>[\w-]+)(?P<rest>/\w+)?"
)
_CIPHERTEXT = re.compile(r"vault:v(\d+):(.*)")


@dataclass
class TransitKey:
    versions: dict[int, bytes] = field(default_factory=dict)
    created: dict[int, int] = field(default_factory=dict)
    min_decryption_version: int = 1

    @property
    def latest(self) -> int:
        return max(self.versions)

    def rotate(self) -> None:
        version = (max(self.versions) if self.versions else 0) + 1
        self.versions[version] = AESGCM.generate_key(256)
        self.created[version] = int(time.time())

    def info(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "aes256-gcm96",
            "latest_version": self.latest,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": 0,
            "keys": {str(v): t for v, t in self.created.items()},
            "deletion_allowed": False,
            "derived": False,
            "exportable": False,
            "allow_plaintext_backup": False,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_derivation": True,
            "supports_signing": False,
        }


@dataclass
class FakeVault:
    url: str
    token: str
    keys: dict[str, TransitKey] = field(default_factory=dict)
    sealed: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)


def _handler(state: FakeVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any] | None = None) -> None:
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _errors(self, status: int, *errors: str) -> None:
            self._send(status, {"errors": list(errors)})

        def _data(self, data: dict[str, Any], status: int = 200) -> None:
            self._send(
                status,
                {
                    "request_id": str(uuid.uuid4()),
                    "lease_id": "",
                    "renewable": False,
                    "lease_duration": 0,
                    "data": data,
                    "wrap_info": None,
                    "warnings": None,
                    "auth": None,
                },
            )

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parsed = json.loads(raw) if raw else {}
            return parsed if isinstance(parsed, dict) else {}

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            state.calls.append((method, self.path))
            body = self._body()
            if state.sealed:
                return self._errors(503, "Vault is sealed")
            if self.headers.get("X-Vault-Token") != state.token:
                return self._errors(403, "permission denied")
            m = _PATH.fullmatch(self.path)
            if m is None or m.group("mount") != "transit":
                return self._errors(404, f"no handler for route {self.path!r}")
            op, name, rest = m.group("op"), m.group("name"), m.group("rest")
            key = state.keys.get(name)
            if op == "keys":
                if method == "GET" and rest is None:
                    return self._errors(404) if key is None else self._data(key.info(name))
                if method == "POST" and rest is None:
                    if key is None:
                        key = state.keys[name] = TransitKey()
                        key.rotate()
                    return self._data(key.info(name))
                if key is None:
                    return self._errors(400, "no existing key named " + name + " could be found")
                if method == "POST" and rest == "/rotate":
                    key.rotate()
                    return self._data(key.info(name))
                if method == "POST" and rest == "/config":
                    if "min_decryption_version" in body:
                        key.min_decryption_version = int(body["min_decryption_version"])
                    return self._data(key.info(name))
                return self._errors(405)
            if method != "POST" or rest is not None:
                return self._errors(405)
            if op == "encrypt":
                return self._encrypt(name, body)
            return self._decrypt(name, key, body)

        def _encrypt(self, name: str, body: dict[str, Any]) -> None:
            key = state.keys.get(name)
            if key is None:  # upsert, as Vault does with create capability
                key = state.keys[name] = TransitKey()
                key.rotate()
            try:
                plaintext = base64.b64decode(body.get("plaintext", ""), validate=True)
            except binascii.Error:
                return self._errors(400, "failed to base64-decode plaintext")
            version = int(body.get("key_version") or key.latest)
            if version > key.latest:
                return self._errors(
                    400, "requested version for encryption is higher than the latest key version"
                )
            if version < key.min_decryption_version:
                return self._errors(400, "requested version for encryption is too old")
            nonce = os.urandom(12)
            sealed = AESGCM(key.versions[version]).encrypt(nonce, plaintext, None)
            ciphertext = f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode()
            self._data({"ciphertext": ciphertext, "key_version": version})

        def _decrypt(self, name: str, key: TransitKey | None, body: dict[str, Any]) -> None:
            if key is None:
                return self._errors(400, "encryption key not found")
            batch = body.get("batch_input")
            if batch is None:
                error, plaintext = _open(key, body.get("ciphertext", ""))
                if error:
                    return self._errors(400, error)
                return self._data({"plaintext": plaintext})
            # As Vault: every item's result, and 400 when any of them failed.
            results = []
            for item in batch:
                error, plaintext = _open(key, item.get("ciphertext", ""))
                results.append({"error": error} if error else {"plaintext": plaintext})
            failed = any("error" in r for r in results)
            self._data({"batch_results": results}, 400 if failed else 200)

    return Handler


def _open(key: TransitKey, ciphertext: object) -> tuple[str, str]:
    """(error, base64 plaintext) of one transit ciphertext, as Vault words its errors."""
    m = _CIPHERTEXT.fullmatch(str(ciphertext))
    if m is None:
        return "invalid ciphertext: no prefix", ""
    version = int(m.group(1))
    if version < key.min_decryption_version:
        return "ciphertext or signature version is disallowed by policy (too old)", ""
    if version not in key.versions:
        return "invalid ciphertext: version is greater than latest", ""
    try:
        raw = base64.b64decode(m.group(2), validate=True)
        plaintext = AESGCM(key.versions[version]).decrypt(raw[:12], raw[12:], None)
    except (binascii.Error, InvalidTag, ValueError):
        return "cipher: message authentication failed", ""
    return "", base64.b64encode(plaintext).decode()


@contextmanager
def run_vault(token: str) -> Iterator[FakeVault]:
    """A fake Vault on 127.0.0.1 for the duration of the block."""
    state = FakeVault("", token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
