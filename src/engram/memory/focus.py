"""What a session is about now: its latest messages, as a query text and a query vector."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from engram.store import messages
from engram.store.db import Conn

__all__ = ["FOCUS", "focus_text", "focus_vector"]

FOCUS = 3  # the latest messages that stand for the session's current subject


def focus_text(latest: list[dict[str, Any]]) -> str:
    """The contents of the last FOCUS of ``latest`` (messages oldest first), joined."""
    return " ".join(r["content"] for r in latest[-FOCUS:])


async def focus_vector(conn: Conn, latest: list[dict[str, Any]]) -> NDArray[np.float32] | None:
    """The same messages as one query vector, from the embeddings stored with them (the
    model does not run): the mean at unit length. On LoCoMo it finds relevant facts as
    well as embedding the joined text does (bench/graph.py --quality)."""
    return await messages.mean_vector(conn, [r["uuid"] for r in latest[-FOCUS:]])
