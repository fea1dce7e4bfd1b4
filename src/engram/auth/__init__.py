"""Authentication and authorization: principals from API keys and OIDC JWTs, roles,
permissions and the per-route permission matrix."""

from engram.auth.principal import Permission, Principal, Role, permissions_for
from engram.auth.routes import ROUTE_PERMISSIONS, permission_for

__all__ = [
    "ROUTE_PERMISSIONS",
    "Permission",
    "Principal",
    "Role",
    "permission_for",
    "permissions_for",
]
