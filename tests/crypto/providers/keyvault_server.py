"""A local HTTPS server speaking Azure Key Vault's keys REST API, as Key Vault answers it.

Covers what azure-keyvault-keys sends for the provider: the bearer challenge (401 with
``WWW-Authenticate: Bearer authorization=..., resource=...``, answered to a bodiless first
request), GET a key (latest or a version), POST ``rotate``, POST
``{name}/{version}/wrapkey`` and ``unwrapkey`` with RSA-OAEP / RSA-OAEP-256, and Key
Vault's error bodies ``{"error": {"code", "message"}}``. TLS uses a throwaway CA.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# "/keys/<name>/" (an empty version) means the latest version, as in Key Vault.
_PATH = re.compile(r"/keys/(?P<name>[\w-]+)(?:/(?P<version>[0-9a-f]{32}|))?(?:/(?P<op>[a-z]+))?")
_CHALLENGE = (
    'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001",'
    ' resource="https://vault.azure.net"'
)
_OAEP = {
    "RSA-OAEP": padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),  # noqa: S303
    "RSA-OAEP-256": padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class VaultKey:
    versions: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    created: dict[str, int] = field(default_factory=dict)

    def rotate(self) -> str:
        version = uuid.uuid4().hex
        self.versions[version] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.order.append(version)
        self.created[version] = int(time.time())
        return version


@dataclass
class FakeKeyVault:
    url: str
    token: str
    ca_file: Path
    keys: dict[str, VaultKey] = field(default_factory=dict)
    allow_get: bool = True  # False: 403 on GET key (no keys/get permission)
    calls: list[tuple[str, str]] = field(default_factory=list)
    challenges: int = 0  # 401s sent with a WWW-Authenticate challenge

    def create(self, name: str) -> str:
        key = self.keys.setdefault(name, VaultKey())
        return f"{self.url}/keys/{name}/{key.rotate()}"


def _bundle(state: FakeKeyVault, name: str, version: str) -> dict[str, Any]:
    key = state.keys[name]
    numbers = key.versions[version].public_key().public_numbers()
    return {
        "key": {
            "kid": f"{state.url}/keys/{name}/{version}",
            "kty": "RSA",
            "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes(3, "big")),
        },
        "attributes": {
            "enabled": True,
            "created": key.created[version],
            "updated": key.created[version],
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
        "tags": {},
    }


def _handler(state: FakeKeyVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(
            self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None
        ) -> None:
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _error(self, status: int, code: str, message: str) -> None:
            self._send(status, {"error": {"code": code, "message": message}})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            state.calls.append((method, url.path))
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                state.challenges += 1
                return self._send(
                    401,
                    {
                        "error": {
                            "code": "Unauthorized",
                            "message": "AKV10000: Request is missing a Bearer or PoP token.",
                        }
                    },
                    {"WWW-Authenticate": _CHALLENGE},
                )
            if "api-version=" not in (url.query or ""):
                return self._error(400, "BadParameter", "The 'api-version' parameter is missing")
            m = _PATH.fullmatch(url.path)
            if m is None:
                return self._error(404, "NotFound", f"no route {url.path}")
            name, version, op = m.group("name"), m.group("version") or None, m.group("op")
            key = state.keys.get(name)
            if key is None or (version is not None and version not in key.versions):
                return self._error(
                    404,
                    "KeyNotFound",
                    f"A key with (name/id) {name} was not found in this key vault.",
                )
            body = json.loads(raw) if raw else {}
            if method == "GET" and op is None:
                if not state.allow_get:
                    return self._error(
                        403, "Forbidden", "The user does not have keys get permission"
                    )
                return self._send(200, _bundle(state, name, version or key.order[-1]))
            if method == "POST" and version is None and op == "rotate":
                return self._send(200, _bundle(state, name, key.rotate()))
            if method == "POST" and version is not None and op in ("wrapkey", "unwrapkey"):
                return self._crypt(name, version, op, body)
            return self._error(405, "MethodNotAllowed", f"{method} {url.path}")

        def _crypt(self, name: str, version: str, op: str, body: dict[str, Any]) -> None:
            alg = body.get("alg")
            if alg not in _OAEP:
                return self._error(400, "BadParameter", f"Invalid algorithm {alg!r}")
            try:
                value = unb64url(str(body.get("value", "")))
            except (binascii.Error, ValueError):
                return self._error(400, "BadParameter", "value is not base64url")
            private = state.keys[name].versions[version]
            try:
                if op == "wrapkey":
                    result = private.public_key().encrypt(value, _OAEP[alg])
                else:
                    result = private.decrypt(value, _OAEP[alg])
            except ValueError:
                return self._error(400, "BadParameter", "Unable to decrypt the specified value.")
            self._send(200, {"kid": f"{state.url}/keys/{name}/{version}", "value": b64url(result)})

    return Handler


def _tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "engram test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "cert.pem",
        directory / "key.pem",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@contextmanager
def run_keyvault(directory: Path, token: str) -> Iterator[FakeKeyVault]:
    """A fake Key Vault on https://127.0.0.1 for the duration of the block."""
    ca_file, cert_file, key_file = _tls(directory)
    state = FakeKeyVault("", token, ca_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
