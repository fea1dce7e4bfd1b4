"""The permission matrix: what every route demands. A route missing here is refused
(403 ``undeclared_route``), and tests/auth/test_routes.py fails for it."""

from __future__ import annotations

from engram.auth.principal import Permission

__all__ = ["ROUTE_PERMISSIONS", "permission_for"]

R, W = Permission.MEMORY_READ, Permission.MEMORY_WRITE
Z = "/api/v2"

ROUTE_PERMISSIONS: dict[tuple[str, str], Permission] = {
    # Probes and metrics: unauthenticated (kubelet, Prometheus); no tenant data.
    ("GET", "/healthz"): Permission.PUBLIC,
    ("GET", "/readyz"): Permission.PUBLIC,
    ("GET", "/metrics"): Permission.PUBLIC,
    # FastAPI's own OpenAPI document and its viewers: the API's shape, no data.
    ("GET", "/openapi.json"): Permission.PUBLIC,
    ("GET", "/docs"): Permission.PUBLIC,
    ("GET", "/docs/oauth2-redirect"): Permission.PUBLIC,
    ("GET", "/redoc"): Permission.PUBLIC,
    # Zep v2
    ("POST", f"{Z}/users"): W,
    ("GET", f"{Z}/users-ordered"): R,
    ("GET", f"{Z}/users/{{user_id}}"): R,
    ("PATCH", f"{Z}/users/{{user_id}}"): W,
    ("DELETE", f"{Z}/users/{{user_id}}"): W,
    ("GET", f"{Z}/users/{{user_id}}/sessions"): R,
    ("POST", f"{Z}/sessions"): W,
    ("GET", f"{Z}/sessions-ordered"): R,
    ("POST", f"{Z}/sessions/search"): R,
    ("GET", f"{Z}/sessions/{{session_id}}"): R,
    ("PATCH", f"{Z}/sessions/{{session_id}}"): W,
    ("POST", f"{Z}/sessions/{{session_id}}/memory"): W,
    ("GET", f"{Z}/sessions/{{session_id}}/memory"): R,
    ("DELETE", f"{Z}/sessions/{{session_id}}/memory"): W,
    ("GET", f"{Z}/sessions/{{session_id}}/messages"): R,
    ("GET", f"{Z}/sessions/{{session_id}}/messages/{{message_uuid}}"): R,
    ("PATCH", f"{Z}/sessions/{{session_id}}/messages/{{message_uuid}}"): W,
    ("GET", f"{Z}/facts/{{fact_uuid}}"): R,
    ("DELETE", f"{Z}/facts/{{fact_uuid}}"): W,
    # Native
    ("GET", "/v1/users/{user_id}/graph"): R,
    ("GET", "/v1/users/{user_id}/entities/{entity_uuid}"): R,
    ("POST", "/v1/facts/search"): R,
    ("GET", "/v1/facts/{fact_uuid}/episodes"): R,
    ("POST", "/v1/search"): R,
    ("GET", "/v1/sessions/{session_id}/context"): R,
    ("GET", "/v1/whoami"): Permission.AUTHENTICATED,
    # Administration
    ("POST", "/v1/admin/tenants"): Permission.TENANTS_MANAGE,
    ("GET", "/v1/admin/tenants"): Permission.TENANTS_MANAGE,
    ("POST", "/v1/admin/tenants/{tenant_id}/disable"): Permission.TENANTS_MANAGE,
    ("POST", "/v1/admin/tenants/{tenant_id}/enable"): Permission.TENANTS_MANAGE,
    ("POST", "/v1/admin/apikeys"): Permission.KEYS_MANAGE,
    ("GET", "/v1/admin/apikeys"): Permission.KEYS_MANAGE,
    ("DELETE", "/v1/admin/apikeys/{key_id}"): Permission.KEYS_MANAGE,
    ("GET", "/v1/audit/events"): Permission.AUDIT_READ,
    ("GET", "/v1/audit/verify"): Permission.AUDIT_READ,
    # Lifecycle
    ("GET", "/v1/admin/retention"): Permission.LIFECYCLE_MANAGE,
    ("PUT", "/v1/admin/retention"): Permission.LIFECYCLE_MANAGE,
    ("GET", "/v1/archives"): R,
    ("POST", "/v1/archives/{session_id}/restore"): W,
    ("DELETE", "/v1/users/{user_id}"): Permission.LIFECYCLE_MANAGE,
}


def permission_for(method: str, template: str) -> Permission | None:
    """The permission a route demands, or None when it declared none (deny)."""
    if method == "HEAD":
        method = "GET"
    return ROUTE_PERMISSIONS.get((method, template))
