"""Native (/v1) response shapes, for the OpenAPI document (the routes render rows
themselves; tests/api/test_openapi.py checks every response against these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel

from engram.api.zep.models import Message

__all__ = [
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyList",
    "Archive",
    "ArchiveList",
    "AuditEvent",
    "AuditEvents",
    "AuditVerdict",
    "Context",
    "Deleted",
    "Entity",
    "EntityWithFacts",
    "ErasureReceipt",
    "FactEpisodes",
    "FactSearchResults",
    "GraphFact",
    "RestoredArchive",
    "RetentionPolicy",
    "SearchHit",
    "SearchResults",
    "Tenant",
    "TenantList",
    "UserGraph",
    "WhoAmI",
]


class WhoAmI(BaseModel):
    tenant: str
    actor: str
    role: Literal["admin", "writer", "reader", "auditor"]
    method: str
    permissions: list[str]
    can_read_protected: bool


class Tenant(BaseModel):
    id: str
    name: str | None
    status: Literal["active", "disabled"]
    created_at: datetime
    updated_at: datetime


class TenantList(BaseModel):
    tenants: list[Tenant]


class ApiKey(BaseModel):
    tenant_id: str
    key_id: str
    name: str
    role: Literal["admin", "writer", "reader", "auditor"]
    read_protected: bool
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    key: str  # shown once


class ApiKeyList(BaseModel):
    keys: list[ApiKey]


class AuditEvent(BaseModel):
    tenant_id: str
    seq: int
    at: datetime
    actor: str
    action: str
    resource: str
    outcome: str
    status: int | None
    reason: str | None
    request_id: str | None
    client: str | None
    details: dict[str, Any] | None
    prev_hash: str
    hash: str


class AuditEvents(BaseModel):
    events: list[AuditEvent]


class AuditProblem(BaseModel):
    seq: int
    kind: str
    message: str


class AuditVerdict(BaseModel):
    tenant: str
    ok: bool
    length: int
    head: str | None
    checkpoint: int | None
    problems: list[AuditProblem]


class EntityRef(BaseModel):
    uuid: UUID
    name: str | None


class GraphFact(BaseModel):
    uuid: UUID
    fact: str
    relation: str
    source: EntityRef
    target: EntityRef
    valid_at: datetime | None
    invalid_at: datetime | None
    created_at: datetime
    expired_at: datetime | None
    rating: float | None
    episodes: list[UUID]
    score: float | None = None  # in search results only


class Entity(BaseModel):
    uuid: UUID
    user_id: str
    name: str
    labels: list[str]
    aliases: list[str]
    summary: str | None
    created_at: datetime
    updated_at: datetime


class EntityWithFacts(Entity):
    facts: list[GraphFact]


class Episode(BaseModel):
    uuid: UUID
    session_id: str
    messages: int
    status: Literal["pending", "done", "failed"]
    extractor: str | None
    attempts: int
    error: str | None
    usage: dict[str, Any] | None
    created_at: datetime
    processed_at: datetime | None


class UserGraph(BaseModel):
    user_id: str
    as_of: datetime
    known_at: datetime
    entities: list[Entity]
    facts: list[GraphFact]
    episodes: list[Episode]


class FactSearchResults(BaseModel):
    results: list[GraphFact]


class SessionMessage(Message):
    session_id: str


class FactEpisodes(BaseModel):
    messages: list[SessionMessage]


class SearchHit(BaseModel):
    kind: Literal["message", "fact", "entity"]
    score: float
    score_parts: dict[str, float]
    ranks: dict[str, int]
    # The item itself, under its kind's name.
    message: dict[str, Any] | None = None
    fact: dict[str, Any] | None = None
    entity: dict[str, Any] | None = None


class SearchResults(BaseModel):
    results: list[SearchHit]


class Context(BaseModel):
    context: str
    tokens: int
    facts: list[dict[str, Any]]
    messages: list[dict[str, Any]]


class RetentionPolicy(BaseModel):
    retention_days: int | None
    action: Literal["archive", "delete"]
    fact_cleanup_days: int | None
    source: Literal["config", "tenant"]
    updated_at: str | None
    updated_by: str | None


class Archive(BaseModel):
    archive_id: UUID
    session_id: str
    user_id: str | None
    state: Literal["writing", "archived", "restored"]
    store: str
    counts: dict[str, int]
    bytes: int
    started_at: datetime
    archived_at: datetime | None
    restored_at: datetime | None


class ArchiveList(BaseModel):
    archives: list[Archive]


class RestoredArchive(BaseModel):
    archive_id: UUID
    inserted: dict[str, int]
    counts: dict[str, int]


class ErasureReceipt(BaseModel):
    receipt_id: UUID
    tenant_id: str
    user_id: str | None
    user_id_sha256: str
    state: Literal["running", "completed"]
    requested_by: str
    removed: dict[str, int]
    started_at: datetime
    completed_at: datetime | None


class Deleted(BaseModel):
    message: str
