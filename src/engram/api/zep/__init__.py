"""The Zep v2 REST API (as served to the published zep-python 2.x SDK), under /api/v2."""

from engram.api.zep.router import router

__all__ = ["router"]
