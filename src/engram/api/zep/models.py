"""Zep v2 response shapes, for the OpenAPI document (the routes render rows themselves,
see schemas.py; tests/api/test_schemathesis.py checks every response against these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel

__all__ = [
    "Fact",
    "FactResponse",
    "Memory",
    "Message",
    "MessageListResponse",
    "Session",
    "SessionListResponse",
    "SessionSearchResponse",
    "SessionSearchResult",
    "SuccessResponse",
    "User",
    "UserListResponse",
]


class SuccessResponse(BaseModel):
    message: str


class User(BaseModel):
    id: int
    uuid: UUID
    user_id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: None
    session_count: int | None
    project_uuid: None


class UserListResponse(BaseModel):
    users: list[User]
    row_count: int
    total_count: int


class Session(BaseModel):
    id: int
    uuid: UUID
    session_id: str
    user_id: str | None
    metadata: dict[str, Any]
    fact_rating_instruction: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    deleted_at: None
    classifications: None
    facts: None
    project_uuid: None


class SessionListResponse(BaseModel):
    sessions: list[Session]
    response_count: int
    total_count: int


class Message(BaseModel):
    uuid: UUID
    role: str
    role_type: Literal["norole", "system", "assistant", "user", "function", "tool"]
    content: str
    metadata: dict[str, Any]
    token_count: int
    created_at: datetime
    updated_at: datetime


class MessageListResponse(BaseModel):
    messages: list[Message]
    row_count: int
    total_count: int


class Fact(BaseModel):
    uuid: UUID
    fact: str
    rating: float | None
    created_at: datetime
    valid_at: datetime | None
    invalid_at: datetime | None
    expired_at: datetime | None


class FactResponse(BaseModel):
    fact: Fact


class Memory(BaseModel):
    messages: list[Message]
    relevant_facts: list[Fact]
    facts: list[str]
    metadata: dict[str, Any]
    summary: None


class SessionSearchResult(BaseModel):
    message: Message | None
    fact: Fact | None
    score: float
    session_id: str | None
    summary: None


class SessionSearchResponse(BaseModel):
    results: list[SessionSearchResult]
