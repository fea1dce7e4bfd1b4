"""Extraction: turn an episode (messages with their time) into entities and facts."""

from engram.extract.local import LocalExtractor
from engram.extract.types import (
    CandidateFact,
    EntityLabel,
    Episode,
    EpisodeMessage,
    ExtractedEntity,
    ExtractedFact,
    Extraction,
    Extractor,
)

__all__ = [
    "CandidateFact",
    "EntityLabel",
    "Episode",
    "EpisodeMessage",
    "ExtractedEntity",
    "ExtractedFact",
    "Extraction",
    "Extractor",
    "LocalExtractor",
]
