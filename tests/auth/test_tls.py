"""HTTPS for the API with a certificate made here; the production profile's refusals."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fix_server import ENGRAM, free_port, short_tmpdir

pytestmark = pytest.mark.integration


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def test_serve_over_https_in_the_production_profile() -> None:
    root = short_tmpdir("eg-tls-")
    certfile, keyfile = _certificate(root)
    port, key = free_port(), secrets.token_urlsafe(32)
    env = {**os.environ, "ENGRAM_PROFILE": "production", "ENGRAM_TLS__CERTFILE": str(certfile),
           "ENGRAM_TLS__KEYFILE": str(keyfile), "ENGRAM_WORKER__ENABLED": "false"}  # fmt: skip
    trust = ssl.create_default_context(cafile=str(certfile))
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [ENGRAM, "serve", "--data-dir", str(root / "d"), "--port", str(port), "--api-key", key],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        deadline, ready = time.monotonic() + 180, False
        while time.monotonic() < deadline and not ready:
            assert proc.poll() is None, (root / "serve.log").read_text()
            try:
                ready = httpx.get(f"https://127.0.0.1:{port}/readyz", verify=trust).is_success
            except httpx.HTTPError:
                time.sleep(0.3)
        assert ready, (root / "serve.log").read_text()
        r = httpx.get(
            f"https://127.0.0.1:{port}/v1/whoami",
            headers={"Authorization": f"Api-Key {key}"},
            verify=trust,
        )
        assert r.json()["role"] == "admin"
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the same port
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the cert
            httpx.get(f"https://127.0.0.1:{port}/readyz")
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "needs TLS for the API"),
        (
            {"ENGRAM_DATABASE_URL": "postgresql://engram_app@db.example/engram?sslmode=require"},
            "sslmode=verify-full",
        ),
    ],
)
def test_production_refuses_to_start_without_tls(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    certfile, keyfile = _certificate(tmp_path)
    env = {**os.environ, "ENGRAM_PROFILE": "production", **extra}
    if extra:
        env |= {"ENGRAM_TLS__CERTFILE": str(certfile), "ENGRAM_TLS__KEYFILE": str(keyfile)}
    done = subprocess.run(
        [ENGRAM, "serve", "--data-dir", str(tmp_path / "d"), "--api-key", "x" * 32],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert not (tmp_path / "d").exists()  # refused before starting anything
