"""Extraction: turn an episode (messages with their time) into entities and facts."""

from engram.config import ExtractorSettings
from engram.errors import ConfigError
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
    "build_extractor",
]


def build_extractor(settings: ExtractorSettings) -> Extractor:
    """The extractor the settings name."""
    if settings.kind == "local":
        return LocalExtractor()
    if settings.kind == "llm":
        from engram.extract.llm import LLMExtractor  # imports the openai SDK only when used

        return LLMExtractor(settings)
    raise ConfigError(
        f"extractor kind {settings.kind!r} is not available in this version",
        hint="use extractor.kind: local or llm",
    )
