"""Retrieval over memory: vector search with optional MMR diversification."""

from engram.search.engine import MessageQuery, SearchHit, search_facts, search_messages
from engram.search.mmr import mmr

__all__ = ["MessageQuery", "SearchHit", "mmr", "search_facts", "search_messages"]
