"""The native API under /v1: what Zep never had (the temporal graph, provenance)."""

from engram.api.v1.router import router

__all__ = ["router"]
