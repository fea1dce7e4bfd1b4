"""What extractors read (an episode) and what they produce (entities and facts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

__all__ = [
    "CandidateFact",
    "EntityLabel",
    "Episode",
    "EpisodeMessage",
    "ExtractedEntity",
    "ExtractedFact",
    "Extraction",
    "Extractor",
]

EntityLabel = Literal[
    "person", "place", "organization", "product", "date", "event", "concept", "other"
]


@dataclass(frozen=True)
class EpisodeMessage:
    """One message: who said it (role, e.g. the user's name), what, and when."""

    uuid: str
    role: str
    role_type: str  # norole | system | assistant | user | function | tool
    content: str
    created_at: datetime


@dataclass(frozen=True)
class Episode:
    """The messages added in one call, with the user they belong to."""

    user_id: str
    session_id: str
    messages: Sequence[EpisodeMessage]
    # The user's display name if known (first/last name), to attribute "I" statements.
    user_name: str | None = None
    # A few earlier messages of the session, for pronouns and topics (not extracted from).
    context: Sequence[EpisodeMessage] = ()


@dataclass(frozen=True)
class CandidateFact:
    """A currently valid fact of this user that the episode might contradict."""

    uuid: str
    subject: str
    relation: str
    object: str
    fact: str


@dataclass(frozen=True)
class ExtractedEntity:
    name: str  # canonical surface form, e.g. "Caroline", "Lisbon", "Acme Corp"
    label: EntityLabel
    summary: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtractedFact:
    """An edge: subject --relation--> object, with a readable sentence and its time."""

    subject: str  # an entity name from Extraction.entities
    relation: str  # UPPER_SNAKE verb phrase, e.g. LIVES_IN, WORKS_AT, LIKES
    object: str  # an entity name from Extraction.entities
    fact: str  # a self-contained sentence, e.g. "Caroline moved to Lisbon."
    source_message: str  # uuid of the message it was stated in
    valid_at: datetime | None = None  # when it started to hold (resolved, absolute)
    invalid_at: datetime | None = None  # when it stopped holding, if stated
    exclusive: bool = False  # a subject holds one object at a time (lives in, works at)


@dataclass(frozen=True)
class Extraction:
    entities: list[ExtractedEntity] = field(default_factory=list)
    facts: list[ExtractedFact] = field(default_factory=list)
    # uuids of CandidateFacts the episode contradicts (LLM extractor; the graph layer
    # also closes exclusive relations by rule).
    contradicted: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)  # e.g. prompt/completion tokens


class Extractor(Protocol):
    """Turns an episode into entities and facts. Pure: no database access."""

    id: str
    # Whether extract() judges CandidateFacts (then the graph layer looks them up).
    uses_candidates: bool

    def extract(self, episode: Episode, candidates: Sequence[CandidateFact] = ()) -> Extraction:
        """Entities and facts stated in the episode's messages."""
        ...
