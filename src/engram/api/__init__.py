"""HTTP: the Zep v2 compatible API, the native API, health and metrics."""

from engram.api.app import create_app

__all__ = ["create_app"]
