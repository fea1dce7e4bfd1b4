"""The audit record and its hash: SHA-256 over a canonical JSON of every field and the
previous record's hash, so that a change anywhere breaks the chain from there on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from engram.store.audit import GENESIS

__all__ = ["FORMAT", "GENESIS", "Entry", "entry_of", "record_hash"]

FORMAT = 1


@dataclass
class Entry:
    """What one audit record says (the chain fields are added when it is appended)."""

    actor: str
    action: str
    resource: str
    outcome: str  # success | denied | failure | error
    status: int | None = None
    reason: str | None = None
    request_id: str | None = None
    client: str | None = None
    details: dict[str, Any] | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def fields(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "resource": self.resource,
            "outcome": self.outcome,
            "status": self.status,
            "reason": self.reason,
            "request_id": self.request_id,
            "client": self.client,
            "details": self.details,
        }


def record_hash(tenant: str, seq: int, entry: Entry, prev_hash: str) -> str:
    """The hash a record with these fields, at this place in the chain, must carry."""
    canonical = orjson.dumps(
        [
            FORMAT,
            tenant,
            seq,
            entry.at.astimezone(UTC).isoformat(timespec="microseconds"),
            entry.actor,
            entry.action,
            entry.resource,
            entry.outcome,
            entry.status,
            entry.reason,
            entry.request_id,
            entry.client,
            entry.details,
            prev_hash,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def entry_of(row: dict[str, Any]) -> Entry:
    """The Entry a stored row says it holds (to recompute its hash)."""
    return Entry(
        actor=row["actor"],
        action=row["action"],
        resource=row["resource"],
        outcome=row["outcome"],
        status=row["status"],
        reason=row["reason"],
        request_id=row["request_id"],
        client=row["client"],
        details=row["details"],
        at=row["at"],
    )
