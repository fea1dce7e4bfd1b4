"""All native routes, authenticated like the Zep API."""

from fastapi import APIRouter, Depends

from engram.api.deps import _authenticate
from engram.api.v1 import admin, audit, graph, lifecycle, search

__all__ = ["router"]

router = APIRouter(prefix="/v1", dependencies=[Depends(_authenticate)])
router.include_router(graph.router)
router.include_router(search.router)
router.include_router(admin.router)
router.include_router(audit.router)
router.include_router(lifecycle.router)
