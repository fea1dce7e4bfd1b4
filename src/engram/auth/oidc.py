"""OIDC bearer tokens: JWTs checked against the issuer's JWKS (discovered or configured,
cached, refetched on an unknown ``kid`` at most once per ``jwks_min_refresh_s``)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import httpx
import jwt

from engram.config import OidcSettings
from engram.errors import AuthError, UnavailableError

__all__ = ["OidcVerifier", "claim"]

logger = logging.getLogger(__name__)

# The key type each algorithm family needs, so that a key is never used for another kind.
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def claim(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted claim path, or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class OidcVerifier:
    """Validates tokens of one issuer; one instance per server process."""

    def __init__(self, settings: OidcSettings) -> None:
        assert settings.issuer is not None
        self.settings = settings
        self.issuer = settings.issuer
        self._jwks_url = settings.jwks_url
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or AuthError saying why it is refused."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed bearer token", hint="send a JWT from the issuer") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in s.algorithms:
            raise AuthError(
                f"token algorithm {alg!r} is not allowed",
                hint=f"the server accepts {', '.join(s.algorithms)}",
            )
        jwk = await self._key(header.get("kid"))
        kty = _KTY.get(alg[:2])
        if jwk.get("kty") != kty or jwk.get("alg", alg) != alg:
            raise AuthError(
                f"token algorithm {alg} does not match its key", hint="check the issuer's JWKS"
            )
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=s.audience,
                issuer=self.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired", hint="get a new token from the issuer") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token not valid yet (nbf/iat in the future)") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(
                "token audience is not this server", hint=f"request a token for {s.audience}"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("token issuer is not trusted", hint=f"use {self.issuer}") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return claims

    async def _key(self, kid: Any) -> dict[str, Any]:
        fresh = time.monotonic() - self._fetched_at < self.settings.jwks_cache_s
        if fresh and isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            since = time.monotonic() - self._fetched_at
            if since >= self.settings.jwks_min_refresh_s or not fresh:
                await self._refresh()
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise AuthError(
            f"token signed with an unknown key (kid {kid!r})",
            hint="the issuer's JWKS does not list it; retry after the issuer publishes it",
        )

    async def _refresh(self) -> None:
        s = self.settings
        verify: Any = ssl.create_default_context(cafile=str(s.ca_file)) if s.ca_file else True
        try:
            async with httpx.AsyncClient(timeout=s.timeout_s, verify=verify) as http:
                if self._jwks_url is None:
                    url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                    doc = (await http.get(url)).raise_for_status().json()
                    self._jwks_url = str(doc["jwks_uri"])
                jwks = (await http.get(self._jwks_url)).raise_for_status().json()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            self._fetched_at = time.monotonic()  # rate-limit retries against a dead issuer
            raise UnavailableError(
                f"cannot fetch the issuer's keys: {exc}",
                hint="check oidc.issuer / oidc.jwks_url and that the issuer is reachable",
            ) from exc
        keys = {str(k.get("kid")): k for k in jwks.get("keys", []) if isinstance(k, dict)}
        logger.info("fetched %d signing keys from %s", len(keys), self._jwks_url)
        self._keys = keys
        self._fetched_at = time.monotonic()
