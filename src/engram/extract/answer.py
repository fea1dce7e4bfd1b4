"""The LLM extractor's answer: parse, check against the episode, repair what is safe to."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import cast

import pydantic

from engram.extract.prompt import LABELS
from engram.extract.types import (
    CandidateFact,
    EntityLabel,
    Episode,
    EpisodeMessage,
    ExtractedEntity,
    ExtractedFact,
    Extraction,
)

__all__ = ["InvalidAnswer", "parse_answer", "parse_time"]

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)
_YEAR_MONTH = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


class InvalidAnswer(ValueError):
    """The answer is not JSON, or not the schema's shape."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind  # "invalid_json" | "schema"


class _Entity(pydantic.BaseModel):
    name: str
    label: str = "other"
    summary: str | None = None


class _Fact(pydantic.BaseModel):
    subject: str
    relation: str
    object: str
    fact: str
    source_message: str
    valid_at: str | None = None
    invalid_at: str | None = None
    exclusive: bool = False


class _Answer(pydantic.BaseModel):
    # Defaults only matter for servers that do not enforce the strict schema.
    entities: list[_Entity] = []
    facts: list[_Fact] = []
    contradicted: list[str] = []


def parse_time(text: str | None, default_tz: tzinfo = UTC) -> datetime | None:
    """An aware datetime from ISO 8601 (date, year-month or year allowed); None if unusable."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        partial = _YEAR_MONTH.match(text)
        if partial is None:
            return None
        when = datetime(int(partial.group(1)), int(partial.group(2) or 1), 1)
    return when if when.tzinfo is not None else when.replace(tzinfo=default_tz)


def _load(content: str) -> _Answer:
    fenced = _FENCE.match(content)  # servers without structured outputs like code fences
    text = fenced.group(1) if fenced else content
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text[:200] + ("…" if len(text) > 200 else "")
        raise InvalidAnswer(
            f"the model's answer is not valid JSON ({exc.msg} at position {exc.pos}): {snippet!r}",
            kind="invalid_json",
        ) from exc
    try:
        return _Answer.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise InvalidAnswer(
            f"the model's answer does not match the extraction schema: {problems}", kind="schema"
        ) from exc


def _relation(text: str) -> str:
    return "_".join(re.findall(r"[A-Za-z0-9]+", text)).upper()


class _Checker:
    """Maps the answer's names and uuids onto the episode's."""

    def __init__(self, episode: Episode, answer: _Answer) -> None:
        self.messages = {m.uuid.casefold(): m for m in episode.messages}
        self.entities: dict[str, ExtractedEntity] = {}
        for e in answer.entities:
            name = e.name.strip()
            if name and name.casefold() not in self.entities:
                label = e.label if e.label in LABELS else "other"
                summary = (e.summary or "").strip() or None
                self.entities[name.casefold()] = ExtractedEntity(
                    name, cast(EntityLabel, label), summary
                )

    def entity(self, name: str) -> str:
        key = name.strip().casefold()
        if key not in self.entities:
            self.entities[key] = ExtractedEntity(name.strip(), "other")
        return self.entities[key].name

    def message(self, uuid: str) -> EpisodeMessage:
        found = self.messages.get(uuid.strip().casefold())
        if found is None:
            if not self.messages:
                raise InvalidAnswer("the model stated facts for an empty episode", kind="schema")
            # The fact came from this episode; the last message is the closest safe guess.
            found = list(self.messages.values())[-1]
            logger.warning(
                "the model cited unknown message %r; attributing the fact to %s", uuid, found.uuid
            )
        return found

    def fact(self, f: _Fact) -> ExtractedFact | None:
        relation = _relation(f.relation)
        sentence = f.fact.strip()
        if not (f.subject.strip() and f.object.strip() and relation and sentence):
            logger.warning("dropping an incomplete fact from the model: %r", f)
            return None
        message = self.message(f.source_message)
        tz = message.created_at.tzinfo or UTC
        valid_at, invalid_at = parse_time(f.valid_at, tz), parse_time(f.invalid_at, tz)
        for raw, parsed in ((f.valid_at, valid_at), (f.invalid_at, invalid_at)):
            if raw is not None and raw.strip() and parsed is None:
                logger.warning("ignoring unparseable time %r in fact %r", raw, sentence)
        if valid_at is not None and invalid_at is not None and invalid_at < valid_at:
            logger.warning("ignoring invalid_at before valid_at in fact %r", sentence)
            invalid_at = None
        return ExtractedFact(
            subject=self.entity(f.subject),
            relation=relation,
            object=self.entity(f.object),
            fact=sentence,
            source_message=message.uuid,
            valid_at=valid_at,
            invalid_at=invalid_at,
            exclusive=f.exclusive,
        )


def parse_answer(content: str, episode: Episode, candidates: Sequence[CandidateFact]) -> Extraction:
    """The extraction an answer describes; raises InvalidAnswer for non-JSON or a wrong shape."""
    answer = _load(content)
    checker = _Checker(episode, answer)
    facts = [f for f in map(checker.fact, answer.facts) if f is not None]
    known = {c.uuid.casefold(): c.uuid for c in candidates}
    contradicted: list[str] = []
    for uuid in answer.contradicted:
        found = known.get(uuid.strip().casefold())
        if found is None:
            logger.warning("dropping contradicted uuid %r: not among the candidate facts", uuid)
        elif found not in contradicted:
            contradicted.append(found)
    return Extraction(
        entities=list(checker.entities.values()), facts=facts, contradicted=contradicted
    )
