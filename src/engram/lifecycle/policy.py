"""A tenant's retention policy: its own row, or the configured defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from engram.config import LifecycleSettings
from engram.errors import ValidationError
from engram.store import retention
from engram.store.db import Conn, Database

__all__ = [
    "RetentionPolicy",
    "change_policy",
    "effective_policy",
    "set_policy",
    "tenant_policy",
]

Action = Literal["archive", "delete"]


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a tenant's sessions and invalidated facts are kept."""

    retention_days: int | None  # None: sessions are kept forever
    action: Action  # what happens to a session past retention
    fact_cleanup_days: int | None  # None: invalidated facts are kept
    source: Literal["config", "tenant"]
    updated_at: str | None = None
    updated_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _from_row(row: dict[str, Any]) -> RetentionPolicy:
    return RetentionPolicy(
        row["retention_days"],
        row["action"],
        row["fact_cleanup_days"],
        "tenant",
        row["updated_at"].isoformat(),
        row["updated_by"],
    )


async def effective_policy(conn: Conn, defaults: LifecycleSettings) -> RetentionPolicy:
    """The policy of the connection's tenant."""
    row = await retention.get_policy(conn)
    if row is not None:
        return _from_row(row)
    return RetentionPolicy(
        defaults.retention_days, defaults.action, defaults.fact_cleanup_days, "config"
    )


def _days(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 36_500:
        raise ValidationError(
            f"{field} must be a whole number of days from 1 to 36500, or null to keep forever",
            field=field,
            hint=f'send e.g. {{"{field}": 90}}',
        )
    return value


async def set_policy(
    conn: Conn, tenant: str, defaults: LifecycleSettings, changes: dict[str, Any], actor: str
) -> RetentionPolicy:
    """Change the given fields of the tenant's policy (others keep their current value)."""
    unknown = set(changes) - {"retention_days", "action", "fact_cleanup_days"}
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(
            f"unknown retention setting {name!r}",
            field=name,
            hint="use retention_days, action or fact_cleanup_days",
        )
    current = await effective_policy(conn, defaults)
    days = _days(changes.get("retention_days", current.retention_days), "retention_days")
    facts = _days(changes.get("fact_cleanup_days", current.fact_cleanup_days), "fact_cleanup_days")
    action = changes.get("action", current.action)
    if action not in ("archive", "delete"):
        raise ValidationError(
            f"action must be 'archive' or 'delete', not {action!r}",
            field="action",
            hint="'archive' keeps expired sessions in blob storage; 'delete' drops them",
        )
    row = await retention.put_policy(
        conn, tenant, retention_days=days, action=action, fact_cleanup_days=facts, actor=actor
    )
    return _from_row(row)


async def tenant_policy(db: Database, tenant: str, defaults: LifecycleSettings) -> RetentionPolicy:
    """The tenant's policy (`effective_policy`), in a transaction bound to it."""
    async with db.tenant(tenant) as conn:
        return await effective_policy(conn, defaults)


async def change_policy(
    db: Database, tenant: str, defaults: LifecycleSettings, changes: dict[str, Any], actor: str
) -> RetentionPolicy:
    """`set_policy`, in a transaction bound to the tenant."""
    async with db.tenant(tenant) as conn:
        return await set_policy(conn, tenant, defaults, changes, actor)
