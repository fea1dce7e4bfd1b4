"""JSON values (metadata) as stored, so that their numbers come back as they were sent:
an integer of any size as the same integer, any other number as the same 64-bit float."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson
from psycopg.types.json import Jsonb

__all__ = ["dumps", "jsonb", "loads"]

# jsonb keeps a number as a PostgreSQL numeric, which writes no exponent: 1.5e300 would
# come back as 301 digits, which JSON readers take for an integer. A float that is a
# whole number written with an exponent (from 1e16 up; orjson writes "1e+16") goes with
# a ".0" to stay a float.
_WHOLE_WITH_EXPONENT = re.compile(rb"\de\+?\d")
_INT64 = range(-(2**63), 2**64)  # what orjson writes; beyond, it raises TypeError
_LONG_DIGITS = re.compile(rb"\d{19}")  # orjson reads an integer past 64 bits as a float


def _exact(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1e16:
            return orjson.Fragment(f"{Decimal(repr(value)):f}.0")
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """The JSON text of ``value`` (UTF-8), numbers written as PostgreSQL keeps them."""
    try:
        text = orjson.dumps(value)
    except TypeError:  # an integer past 64 bits
        return orjson.dumps(_exact(value))
    # The walk only when a number may need it (a string such as "3e8" also leads here).
    return orjson.dumps(_exact(value)) if _WHOLE_WITH_EXPONENT.search(text) else text


def loads(text: bytes | str) -> Any:
    """The value of a JSON text, integers of any size exact."""
    raw = text.encode() if isinstance(text, str) else text
    return json.loads(raw) if _LONG_DIGITS.search(raw) else orjson.loads(raw)


def jsonb(value: Any) -> Jsonb:
    """``value`` as a jsonb query parameter, written by ``dumps``."""
    return Jsonb(value, dumps=dumps)
