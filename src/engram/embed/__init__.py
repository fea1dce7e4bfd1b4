"""Embedders: text to unit-length float32 vectors, local (ONNX) or hosted (OpenAI, Azure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from engram.config import EmbedderSettings
from engram.embed.batcher import BatchingEmbedder

__all__ = ["BatchingEmbedder", "Embedder", "build_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors; synchronous, thread-safe, and GIL-free while computing."""

    # Stable identifier recorded in engram_meta, e.g. "local/all-MiniLM-L6-v2".
    id: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Return a float32 array of shape (len(texts), dimensions) with unit-length rows."""
        ...

    def close(self) -> None:
        """Release threads, sessions and connections."""
        ...


def build_embedder(settings: EmbedderSettings) -> Embedder:
    """Build the embedder the settings name (loading or preparing the local model)."""
    if settings.kind == "local":
        from engram.embed.local import LocalEmbedder

        return LocalEmbedder(
            settings.model_dir, threads=settings.threads, precision=settings.precision
        )
    from engram.embed.openai import OpenAIEmbedder

    return OpenAIEmbedder(settings)
