"""OIDC bearer tokens against a real local issuer (discovery + JWKS over HTTP), on the app
in process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fix_app import App, running_app
from tests.fix_server import free_port, short_tmpdir

AUDIENCE = "engram-test"


class Issuer:
    """An identity provider's public side: discovery document and JWKS."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.published: list[str] = []
        self.jwks_hits = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path == "/jwks":
                    issuer.jwks_hits += 1
                    body = {"keys": [issuer.jwk(kid) for kid in issuer.published]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def add_key(self, kid: str, kind: str = "rsa", publish: bool = True) -> None:
        self.keys[kid] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        if publish:
            self.published.append(kid)

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid]
        alg = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
        if alg is not None:
            jwk = json.loads(alg.to_jwk(key.public_key()))
        else:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig"}

    def token(self, kid: str = "k1", alg: str | None = None, **claims: Any) -> str:
        key = self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300,
                "tenant": "sso", "roles": ["writer"], **claims}  # fmt: skip
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(issuer: Issuer, header: dict[str, Any], secret: bytes | None) -> str:
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300,
              "tenant": "sso", "roles": ["admin"]}  # fmt: skip
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = _b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing}.{sig}"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    iss.add_key("k1")
    iss.add_key("ec1", kind="ec")
    yield iss
    iss.httpd.shutdown()
    iss.httpd.server_close()


@pytest.fixture(scope="module")
def sso(issuer: Issuer) -> Iterator[App]:
    oidc = {"issuer": issuer.url, "audience": [AUDIENCE], "leeway_s": 5, "jwks_min_refresh_s": 2}
    with running_app(short_tmpdir("eg-oidc-") / "d", oidc=oidc, worker={"enabled": False}) as app:
        with app.client() as admin:
            assert admin.post("/v1/admin/tenants", json={"id": "sso"}).status_code == 201
        yield app


def _get(app: App, token: str, path: str = "/v1/whoami") -> httpx.Response:
    with app.client(anonymous=True, Authorization=f"Bearer {token}") as client:
        return client.get(path)


def test_a_valid_token_gives_tenant_role_and_subject(sso: App, issuer: Issuer) -> None:
    who = _get(sso, issuer.token(roles=["reader", "read_protected"])).json()
    assert who["tenant"] == "sso" and who["role"] == "reader" and who["method"] == "oidc"
    assert who["actor"] == "oidc:alice" and who["can_read_protected"] is True
    assert _get(sso, issuer.token(kid="ec1")).json()["role"] == "writer"  # ES256
    r = _get(sso, issuer.token(roles=["auditor"]), "/api/v2/users-ordered")
    assert r.status_code == 403 and r.json()["reason"] == "permission"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"iss": "http://127.0.0.1:1/other"}, "issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
    ],
)
def test_bad_claims_are_refused(
    sso: App, issuer: Issuer, claims: dict[str, Any], message: str
) -> None:
    r = _get(sso, issuer.token(**claims))
    assert r.status_code == 401 and message in r.json()["message"]


def test_unknown_or_disabled_tenant_and_no_role_are_403(sso: App, issuer: Issuer) -> None:
    r = _get(sso, issuer.token(tenant="nobody"))
    assert r.status_code == 403 and r.json()["reason"] == "tenant_unknown"
    r = _get(sso, issuer.token(roles=["viewer"]))
    assert r.status_code == 403 and "no Engram role" in r.json()["message"]


def test_alg_none_and_hmac_with_the_public_key_are_refused(sso: App, issuer: Issuer) -> None:
    r = _get(sso, _unsigned(issuer, {"alg": "none", "typ": "JWT", "kid": "k1"}, None))
    assert r.status_code == 401 and "'none' is not allowed" in r.json()["message"]
    public_pem = (
        issuer.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    forged = _unsigned(issuer, {"alg": "HS256", "typ": "JWT", "kid": "k1"}, public_pem)
    r = _get(sso, forged)
    assert r.status_code == 401 and "'HS256' is not allowed" in r.json()["message"]
    # An RS256 header on the EC key is refused too (a key serves one algorithm family).
    token = issuer.token(kid="k1")
    header = _b64(json.dumps({"alg": "RS256", "kid": "ec1", "typ": "JWT"}).encode())
    r = _get(sso, header + token[token.index(".") :])
    assert r.status_code == 401 and "does not match its key" in r.json()["message"]


def test_unknown_kid_then_key_rotation(sso: App, issuer: Issuer) -> None:
    assert _get(sso, issuer.token()).status_code == 200
    issuer.add_key("k2", publish=False)
    token = issuer.token(kid="k2")
    hits = issuer.jwks_hits
    r = _get(sso, token)
    assert r.status_code == 401 and "unknown key" in r.json()["message"]
    assert _get(sso, token).status_code == 401
    assert issuer.jwks_hits <= hits + 1  # refetches are rate-limited
    issuer.published = ["k2"]  # the issuer rotates: k1 retired, k2 published
    time.sleep(2.2)
    assert _get(sso, token).json()["actor"] == "oidc:alice"
    assert issuer.jwks_hits == hits + 1 or issuer.jwks_hits == hits + 2
    time.sleep(2.2)
    r = _get(sso, issuer.token(kid="k1"))
    assert r.status_code == 401 and "unknown key" in r.json()["message"]


def test_token_requests_are_audited_with_the_subject(sso: App, issuer: Issuer) -> None:
    token = issuer.token(kid="k2", roles=["auditor"], sub="carol")  # k2: after rotation
    _get(sso, token, "/api/v2/users-ordered")
    events = _get(sso, token, "/v1/audit/events?limit=10000").json()["events"]
    mine = [e for e in events if e["actor"] == "oidc:carol"]
    assert mine[0]["outcome"] == "denied" and mine[0]["action"] == "GET /api/v2/users-ordered"
