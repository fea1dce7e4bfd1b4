"""Zep v2 request bodies (validated) and response shapes (rendered from rows)."""

from __future__ import annotations

import re
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from engram.api.validation import IsoDateTime, JsonObject, Number

__all__ = [
    "MAX_PAGE",
    "NOT_BLANK",
    "CreateSessionRequest",
    "CreateUserRequest",
    "IsoDateTime",
    "JsonObject",
    "MemoryAddRequest",
    "MessageRequest",
    "Number",
    "SearchRequest",
    "UpdateMessageRequest",
    "UpdateSessionRequest",
    "UpdateUserRequest",
    "fact_json",
    "message_json",
    "session_json",
    "user_json",
]

# A character that is white space to no one: not to Python (str.isspace), nor to
# JSON Schema's ECMA regular expressions (which add U+FEFF).
NOT_BLANK = re.compile(
    r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a"
    r"\u2028\u2029\u202f\u205f\u3000\ufeff]"
)

# Page numbers past this would overflow the offset (page x size) PostgreSQL takes.
MAX_PAGE = 1_000_000_000

Id = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f/]+$")


class _Body(BaseModel):
    # Unknown fields are ignored (newer SDKs send more); wrong types are refused.
    model_config = ConfigDict(extra="ignore")


class CreateUserRequest(_Body):
    user_id: StrictStr = Id
    email: StrictStr | None = None
    first_name: StrictStr | None = None
    last_name: StrictStr | None = None
    metadata: JsonObject | None = None


class UpdateUserRequest(_Body):
    email: StrictStr | None = None
    first_name: StrictStr | None = None
    last_name: StrictStr | None = None
    metadata: JsonObject | None = None


class CreateSessionRequest(_Body):
    session_id: StrictStr = Id
    user_id: StrictStr | None = None
    metadata: JsonObject | None = None
    fact_rating_instruction: JsonObject | None = None


class UpdateSessionRequest(_Body):
    metadata: JsonObject | None = None
    fact_rating_instruction: JsonObject | None = None


RoleType = Literal["norole", "system", "assistant", "user", "function", "tool"]


class MessageRequest(_Body):
    # Not blank: some character that is not white space (as api/zep/memory.py checks).
    content: StrictStr = Field(min_length=1, json_schema_extra={"pattern": NOT_BLANK.pattern})
    role_type: RoleType
    role: StrictStr | None = Field(default=None, max_length=256)
    metadata: JsonObject | None = None
    created_at: IsoDateTime | None = None
    uuid: UUID | None = None


class MemoryAddRequest(_Body):
    messages: list[MessageRequest] = Field(min_length=1)
    fact_instruction: StrictStr | None = None
    summary_instruction: StrictStr | None = None


class UpdateMessageRequest(_Body):
    metadata: JsonObject


class SearchRequest(_Body):
    text: StrictStr = Field(min_length=1, max_length=8192)
    user_id: StrictStr | None = None
    session_ids: list[StrictStr] | None = None
    search_scope: Literal["messages", "facts", "summary"] = "messages"
    search_type: Literal["similarity", "mmr"] = "similarity"
    mmr_lambda: Number | None = Field(default=None, ge=0.0, le=1.0)
    min_score: Number | None = Field(default=None, ge=-1.0, le=1.0)
    min_fact_rating: Number | None = None
    record_filter: JsonObject | None = None


def user_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "uuid": row["uuid"],
        "user_id": row["user_id"],
        "email": row["email"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "metadata": row["metadata"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "deleted_at": None,
        "session_count": row.get("session_count"),
        "project_uuid": None,
    }


def session_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "uuid": row["uuid"],
        "session_id": row["session_id"],
        "user_id": row["user_id"],
        "metadata": row["metadata"],
        "fact_rating_instruction": row["fact_rating_instruction"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "ended_at": row["ended_at"],
        "deleted_at": None,
        "classifications": None,
        "facts": None,
        "project_uuid": None,
    }


def message_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": row["uuid"],
        "role": row["role"],
        "role_type": row["role_type"],
        "content": row["content"],
        "metadata": row["metadata"],
        "token_count": row["token_count"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def fact_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": row["uuid"],
        "fact": row["fact"],
        "rating": row.get("rating"),
        "created_at": row["created_at"],
        "valid_at": row.get("valid_at"),
        "invalid_at": row.get("invalid_at"),
        "expired_at": row.get("expired_at"),
    }
