"""A JSON response rendered by orjson (datetimes as RFC 3339, UUIDs as strings)."""

from __future__ import annotations

import json
from datetime import date, datetime, time
from typing import Any
from uuid import UUID

import orjson
from fastapi.responses import JSONResponse

__all__ = ["FastJSON"]


_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def _as_orjson(value: Any) -> Any:
    """What orjson writes for the types the stdlib's json does not know."""
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


class FastJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=_OPTIONS)
        except TypeError:
            # orjson stops at 64-bit integers, but JSON (and jsonb metadata) has none:
            # write such a body exactly with the stdlib's writer instead.
            text = json.dumps(
                content, default=_as_orjson, ensure_ascii=False, separators=(",", ":")
            )
            return text.encode()
