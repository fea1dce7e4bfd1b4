"""Request value types shared by the routers: what the OpenAPI document promises is what
is accepted (no lax coercion of "5" to 5 or of 0 to a date), and no JSON that could be
stored but not sent back (NaN, nesting past MAX_DEPTH)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BeforeValidator, StrictFloat

from engram.config import LimitSettings
from engram.errors import ValidationError

__all__ = [
    "MAX_DEPTH",
    "IsoDateTime",
    "JsonObject",
    "Number",
    "json_within",
    "search_bounds",
    "whole",
]

_NUMERIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


# Deeper JSON could be stored but not sent back (the response writers stop at a few
# hundred levels), so every later read of the row would fail.
MAX_DEPTH = 64


def _portable(value: Any, where: str, depth: int = 1) -> None:
    """Refuse NaN and Infinity (Python's JSON reader takes them, but they are not JSON
    and PostgreSQL's jsonb refuses them) and nesting past MAX_DEPTH."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where or 'a value'}: NaN and Infinity are not JSON numbers")
    elif isinstance(value, (dict, list)):
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            key = f"[{k}]" if isinstance(value, list) else (f".{k}" if where else str(k))
            _portable(v, f"{where}{key}", depth + 1)


def _portable_object(value: dict[str, Any]) -> dict[str, Any]:
    _portable(value, "")
    return value


def _json_bytes(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except TypeError:  # an integer past 64 bits
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def json_within(limit: int, fields: Mapping[str, Any]) -> None:
    """Refuse (400, naming it) a JSON object given, such as metadata, whose compact JSON
    text passes ``limit`` bytes (``limits.max_metadata_bytes``)."""
    for field, value in fields.items():
        if value is None:
            continue
        size = _json_bytes(value)
        if size > limit:
            raise ValidationError(
                f"{field} is {size} bytes as JSON; the limit is {limit}",
                field=field,
                hint="keep large texts out of metadata (in messages, say), "
                "or raise limits.max_metadata_bytes",
            )


def _iso_only(value: Any) -> Any:
    # Lax pydantic would take a number (or a numeric string, as in a query) as Unix
    # time; the schema promises an ISO 8601 string.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _NUMERIC.match(value.strip()):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z")
    return value


def whole(value: Any) -> Any:
    """For a ``mode="before"`` field validator of a strict int: JSON Schema counts 5.0 as
    an integer, so take it as 5 (and nothing else that is not an int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A JSON object of any shape (metadata, filters), as _portable allows.
JsonObject = Annotated[dict[str, Any], AfterValidator(_portable_object)]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]
# A JSON number (an int or a float; not true/false, not "0.5"), constraints kept.
Number = StrictFloat


def search_bounds(limits: LimitSettings, limit: int, text: str) -> None:
    """Refuse (400) a search asking for more results, or with a longer text, than the
    server's limits allow: each costs CPU while the request runs."""
    if limit > limits.max_search_results:
        raise ValidationError(
            f"limit {limit} is above the maximum of {limits.max_search_results} results per search",
            field="limit",
            hint=f"ask for at most {limits.max_search_results} (an operator can raise"
            " limits.max_search_results)",
        )
    if len(text) > limits.max_search_text_chars:
        raise ValidationError(
            f"the search text has {len(text)} characters, above the maximum of"
            f" {limits.max_search_text_chars}",
            field="text",
            hint="shorten the text (an operator can raise limits.max_search_text_chars)",
        )
