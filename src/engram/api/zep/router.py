"""All Zep v2 routes, authenticated with the Api-Key header."""

from fastapi import APIRouter, Depends

from engram.api.deps import _authenticate
from engram.api.zep import facts, memory, sessions, users

__all__ = ["router"]

router = APIRouter(prefix="/api/v2", dependencies=[Depends(_authenticate)])
router.include_router(users.router)
router.include_router(sessions.router)
router.include_router(memory.router)
router.include_router(facts.router)
