"""From an Authorization header to a Principal: the bootstrap key, tenant API keys,
or an OIDC bearer JWT; a disabled or unknown tenant is refused with 403."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from engram.auth.apikeys import parse_key, secret_matches
from engram.auth.oidc import OidcVerifier, claim
from engram.auth.principal import Principal, Role, permissions_for
from engram.config import Settings
from engram.errors import AuthError, ForbiddenError
from engram.store import apikeys, tenants
from engram.store.db import Database

__all__ = ["BOOTSTRAP_ACTOR", "Authenticator"]

BOOTSTRAP_ACTOR = "bootstrap-key"
_ROLE_ORDER = (Role.ADMIN, Role.WRITER, Role.READER, Role.AUDITOR)


class Authenticator:
    """Holds the caches; one per server process."""

    def __init__(self, settings: Settings, bootstrap_key: str) -> None:
        self.settings = settings
        self.default_tenant = settings.default_tenant
        self._bootstrap = bootstrap_key.encode()
        self.oidc = OidcVerifier(settings.oidc) if settings.oidc.issuer else None
        self._ttl = settings.auth.cache_s
        self._keys: dict[bytes, tuple[float, Principal]] = {}
        self._tenants: dict[str, tuple[float, str | None]] = {}

    def forget(self, *, tenant: str | None = None, key_id: str | None = None) -> None:
        """Drop cached credentials after a revocation or a tenant change in this process."""
        if tenant is not None:
            self._tenants.pop(tenant, None)
        self._keys = {
            h: (t, p)
            for h, (t, p) in self._keys.items()
            if (tenant is None or p.tenant != tenant)
            and (key_id is None or p.actor != f"apikey:{key_id}")
        }

    async def authenticate(self, header: str, db: Database) -> Principal:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("api-key", "bearer") or not credential:
            raise AuthError(
                "missing credentials",
                hint="send 'Authorization: Api-Key <key>' or 'Authorization: Bearer <token>'",
            )
        if hmac.compare_digest(credential.encode(), self._bootstrap):
            return Principal(
                self.default_tenant,
                BOOTSTRAP_ACTOR,
                Role.ADMIN,
                "bootstrap",
                permissions_for(Role.ADMIN, read_protected=True, platform=True),
            )
        parsed = parse_key(credential)
        if parsed is not None:
            return await self._api_key(credential, *parsed, db)
        if self.oidc is not None and scheme.lower() == "bearer" and credential.count(".") == 2:
            return await self._token(credential, db)
        raise AuthError("invalid API key", hint="check the key; keys look like egk_<id>_<secret>")

    async def _api_key(self, credential: str, key_id: str, secret: str, db: Database) -> Principal:
        cache_key = hashlib.sha256(credential.encode()).digest()
        hit = self._keys.get(cache_key)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        async with db.connection() as conn:
            row = await apikeys.lookup(conn, key_id)
        if row is None or not secret_matches(secret, bytes(row["secret_sha256"])):
            raise AuthError("invalid API key", hint="check the key, or ask an admin for a new one")
        if row["revoked_at"] is not None:
            raise AuthError("API key revoked", hint="ask an admin of your tenant for a new key")
        if row["expired"]:
            raise AuthError("API key expired", hint="ask an admin of your tenant for a new key")
        tenant = str(row["tenant_id"])
        self._check_status(tenant, row["tenant_status"])
        role = Role(row["role"])
        principal = Principal(
            tenant,
            f"apikey:{key_id}",
            role,
            "api-key",
            permissions_for(
                role,
                read_protected=bool(row["read_protected"]),
                platform=tenant == self.default_tenant,
            ),
        )
        if row["expires_at"] is None:  # an expiring key is checked every time
            self._keys[cache_key] = (time.monotonic(), principal)
        return principal

    async def _token(self, token: str, db: Database) -> Principal:
        assert self.oidc is not None
        s = self.settings.oidc
        claims = await self.oidc.verify(token)
        tenant = claim(claims, s.tenant_claim) or s.tenant
        if not isinstance(tenant, str) or not tenant:
            raise ForbiddenError(
                f"the token has no tenant (claim {s.tenant_claim!r})",
                reason="tenant_unknown",
                hint="have the identity provider add the tenant claim, or set oidc.tenant",
            )
        raw = claim(claims, s.roles_claim)
        values = set(raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else [])
        roles = [r for r in _ROLE_ORDER if r.value in values]
        if not roles:
            raise ForbiddenError(
                f"the token grants no Engram role (claim {s.roles_claim!r})",
                reason="permission",
                hint="assign one of admin, writer, reader, auditor in the identity provider",
            )
        await self._tenant_status(tenant, db)
        perms = set().union(
            *(
                permissions_for(
                    r,
                    read_protected=s.read_protected_role in values,
                    platform=tenant == self.default_tenant,
                )
                for r in roles
            )
        )
        subject = claim(claims, s.subject_claim)
        return Principal(tenant, f"oidc:{subject}", roles[0], "oidc", frozenset(perms))

    async def _tenant_status(self, tenant: str, db: Database) -> None:
        hit = self._tenants.get(tenant)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            status: Any = hit[1]
        else:
            async with db.connection() as conn:
                status = await tenants.status(conn, tenant)
            self._tenants[tenant] = (time.monotonic(), status)
        self._check_status(tenant, status)

    @staticmethod
    def _check_status(tenant: str, status: Any) -> None:
        if status is None:
            raise ForbiddenError(
                f"tenant {tenant!r} does not exist",
                reason="tenant_unknown",
                hint="an admin creates it with `engram tenants create`",
            )
        if status != "active":
            raise ForbiddenError(
                f"tenant {tenant!r} is disabled",
                reason="tenant_disabled",
                hint="ask the platform admin to enable it",
            )
