"""One page of a listing, and how many there are in all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Page"]


@dataclass(frozen=True, slots=True)
class Page:
    """The rows of one page (revealed as the caller may read them) and the total count."""

    rows: list[dict[str, Any]]
    total: int
