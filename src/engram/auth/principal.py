"""Who is calling: the principal every route sees, its role and its permissions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["ROLE_PERMISSIONS", "Permission", "Principal", "Role", "permissions_for"]


class Role(StrEnum):
    ADMIN = "admin"
    WRITER = "writer"
    READER = "reader"
    AUDITOR = "auditor"


class Permission(StrEnum):
    """What a route may demand. ``PUBLIC`` routes (probes, metrics) demand no credentials."""

    PUBLIC = "public"
    AUTHENTICATED = "authenticated"  # any valid credentials, whatever the role
    MEMORY_READ = "memory:read"
    MEMORY_WRITE = "memory:write"
    KEYS_MANAGE = "keys:manage"
    TENANTS_MANAGE = "tenants:manage"
    AUDIT_READ = "audit:read"
    LIFECYCLE_MANAGE = "lifecycle:manage"  # retention policy, erasure
    # Not a route permission: decides plaintext vs redacted for pii/phi/secret fields.
    READ_PROTECTED = "protected:read"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(
        {
            Permission.MEMORY_READ,
            Permission.MEMORY_WRITE,
            Permission.KEYS_MANAGE,
            Permission.AUDIT_READ,
            Permission.LIFECYCLE_MANAGE,
        }
    ),
    Role.WRITER: frozenset({Permission.MEMORY_READ, Permission.MEMORY_WRITE}),
    Role.READER: frozenset({Permission.MEMORY_READ}),
    Role.AUDITOR: frozenset({Permission.AUDIT_READ}),
}


def permissions_for(
    role: Role, *, read_protected: bool = False, platform: bool = False
) -> frozenset[Permission]:
    """A role's permissions, plus protected reads if granted and tenant management for an
    admin of the platform (default) tenant."""
    perms = set(ROLE_PERMISSIONS[role])
    if read_protected:
        perms.add(Permission.READ_PROTECTED)
    if platform and role is Role.ADMIN:
        perms.add(Permission.TENANTS_MANAGE)
    return frozenset(perms)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``method`` is ``api-key`` (a tenant API key), ``bootstrap`` (the configured or
    generated server key: admin of the default tenant) or ``oidc`` (a bearer JWT).
    """

    tenant: str
    actor: str
    role: Role
    method: str
    permissions: frozenset[Permission] = field(default_factory=frozenset)

    def can(self, permission: Permission) -> bool:
        """True when the principal holds ``permission`` (PUBLIC and AUTHENTICATED are
        held by every principal)."""
        if permission in (Permission.PUBLIC, Permission.AUTHENTICATED):
            return True
        return permission in self.permissions

    @property
    def can_read_protected(self) -> bool:
        """May see pii/phi/secret fields in plaintext (otherwise they are redacted)."""
        return Permission.READ_PROTECTED in self.permissions
