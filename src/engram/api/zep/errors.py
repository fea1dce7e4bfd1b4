"""Where Zep's error contract differs from the native API's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from engram.errors import ConflictError, ValidationError

__all__ = ["zep_duplicate"]


@asynccontextmanager
async def zep_duplicate() -> AsyncIterator[None]:
    """A duplicate id is a 400 in Zep (zep-python raises BadRequestError for it), where
    the native API answers 409."""
    try:
        yield
    except ConflictError as exc:
        raise ValidationError(exc.message, field=exc.field, hint=exc.hint) from exc
