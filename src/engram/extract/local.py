"""The offline, deterministic extractor: English rules, small lexicons, no model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from engram.extract.clauses import statements
from engram.extract.entities import Mention, find_entities
from engram.extract.lexicon import FAMILY
from engram.extract.patterns import Relation, relate, topic
from engram.extract.perspective import third_person
from engram.extract.subjects import Subject, find_subject
from engram.extract.timeparse import TimeMention, find_times
from engram.extract.types import (
    CandidateFact,
    EntityLabel,
    Episode,
    EpisodeMessage,
    ExtractedEntity,
    ExtractedFact,
    Extraction,
)
from engram.extract.views import mention, opinion

__all__ = ["LocalExtractor", "speaker_name"]

_NAME = re.compile(r"^[A-Z][a-zA-Z'\-]+(?: [A-Z][a-zA-Z'\-]+){0,3}$")
_ROLE_WORDS = frozenset(
    {"user", "assistant", "system", "human", "ai", "bot", "norole", "tool", "function", "agent"}
)
_SKIPPED_ROLES = frozenset({"system", "tool", "function"})
_VIEWS = frozenset({"BELIEVES", "ADVISES", "RELATES_TO"})
_FUTURE = frozenset({"PLANS_TO", "WANTS_TO", "LOOKS_FORWARD_TO"})
_KIN_RELATION = {"HUSBAND": "MARRIED_TO", "WIFE": "MARRIED_TO", "FIANCE": "ENGAGED_TO",
                 "BOYFRIEND": "DATING", "GIRLFRIEND": "DATING", "PARTNER": "DATING"}  # fmt: skip
_EXCLUSIVE_KIN = frozenset(_KIN_RELATION.values())
_PETS = frozenset({"DOG", "CAT", "PET"})
_KIN_NAMED = re.compile(r"\b[Mm]y ([a-z-]+)(?:,)? ([A-Z][a-z]+)\b")
_MY_NAME = re.compile(r"\b[Mm]y name is ([A-Z][a-z]+(?: [A-Z][a-z]+)?)\b")
_NAMED_KIN = re.compile(r"\b([A-Z][a-z]+), my ([a-z-]+)\b")
_LABEL_RANK = {"other": 0, "concept": 1}
_PRONOUN_START = re.compile(
    r"^(?:it|it's|its|they|they're|she|she's|he|he's|there|that was|this was)\b", re.I
)
_FIRST_PERSON = re.compile(r"\b(?:me|my|myself|mine|I|I'm|I've|I'd|I'll)\b")


def speaker_name(message: EpisodeMessage, user_name: str | None) -> str:
    """Whom a message's "I" means: its role if that is a name, else the user or the role."""
    role = message.role.strip()
    if _NAME.match(role) and role.lower() not in _ROLE_WORDS:
        return role
    if message.role_type == "user":
        return user_name.strip() if user_name and user_name.strip() else "user"
    return "assistant" if message.role_type == "assistant" else (role or message.role_type)


def _sentence(text: str) -> str:
    text = re.sub(r"[\s!.,;:~]+$", "", text.strip())
    text = re.sub(r"\s+", " ", text)
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _absolute(clause: str, times: Sequence[TimeMention], drop: bool = False) -> str:
    out = clause
    for t in sorted(times, key=lambda t: t.start, reverse=True):
        if drop:
            out = (out[: t.start].rstrip(" ,") + " " + out[t.end :].lstrip(" ,")).strip()
        else:
            out = out[: t.start] + t.phrase() + out[t.end :]
    return out


class _Builder:
    """Collects the entities and facts of one episode, without duplicates."""

    def __init__(self) -> None:
        self.entities: dict[str, ExtractedEntity] = {}
        self.facts: dict[tuple[str, str, str, str], ExtractedFact] = {}

    def entity(self, name: str, label: EntityLabel, summary: str | None = None) -> None:
        key = name.lower()
        old = self.entities.get(key)
        if old is None or _LABEL_RANK.get(old.label, 2) < _LABEL_RANK.get(label, 2):
            self.entities[key] = ExtractedEntity(
                name, label, summary or (old.summary if old else None)
            )

    def fact(self, fact: ExtractedFact) -> tuple[str, str, str, str]:
        key = (fact.subject.lower(), fact.relation, fact.object.lower(), fact.fact)
        self.facts.setdefault(key, fact)
        return key

    def extend(self, key: tuple[str, str, str, str], sentence: str) -> tuple[str, str, str, str]:
        """Append a follow-up sentence ("It was great.") to a fact, for its pronoun's sake."""
        old = self.facts.pop(key, None)
        if old is None:
            return key
        merged = f"{old.fact.rstrip('.')}; {sentence[:1].lower()}{sentence[1:]}"
        return self.fact(replace(old, fact=merged))

    def result(self) -> Extraction:
        return Extraction(entities=list(self.entities.values()), facts=list(self.facts.values()))


class LocalExtractor:
    """Rule-based English extraction: who did, has, likes or plans what, and when."""

    id = "local/rules-v1"
    uses_candidates = False  # contradictions come from exclusive relations, by rule

    def extract(self, episode: Episode, candidates: Sequence[CandidateFact] = ()) -> Extraction:
        """Entities and facts stated in the episode's messages."""
        out = _Builder()
        names = {
            speaker_name(m, episode.user_name)
            for m in (*episode.context, *episode.messages)
            if m.role_type not in _SKIPPED_ROLES
        }
        people = sorted(n for n in names if n not in ("user", "assistant"))
        for message in episode.messages:
            if message.role_type in _SKIPPED_ROLES or not message.content.strip():
                continue
            speaker = speaker_name(message, episode.user_name)
            others = [p for p in people if p != speaker]
            other = others[0] if len(others) == 1 else None
            self._message(out, message, speaker, other, people)
        return out.result()

    def _message(
        self,
        out: _Builder,
        message: EpisodeMessage,
        speaker: str,
        other: str | None,
        people: Sequence[str],
    ) -> None:
        topic_of_message = ""  # what "it" refers to: the last object talked about
        last: tuple[str, str, str, str] | None = None
        for clause in statements(message.content, people):
            mentions = find_entities(clause, people)
            for m in mentions:
                if m.name != speaker:
                    out.entity(m.name, m.label)
            times = find_times(clause, message.created_at)
            for t in times:
                if t.explicit:
                    out.entity(t.label(), "date")
            text = _absolute(clause, times)
            bare = _absolute(clause, times, drop=True)
            when = times[0].when if times else message.created_at
            self._kin_facts(out, clause, speaker, message)
            if _MY_NAME.search(clause):
                continue
            if last is not None and _PRONOUN_START.match(text):
                sentence = _sentence(third_person(text, speaker, other))
                last = out.extend(last, sentence)
                continue
            subject = find_subject(text, speaker, find_entities(text, people))
            plain = find_subject(bare, speaker, find_entities(bare, people))
            if subject is None and plain is not None:
                subject = replace(plain, text=text if plain.text == bare else plain.text)
            relation = relate((plain or subject).predicate) if subject else None
            if subject is not None and relation is None and len(subject.predicate.split()) >= 4:
                obj = topic(subject.predicate)
                relation = Relation("RELATES_TO", obj, False, "concept") if obj else None
            if subject is None and _FIRST_PERSON.search(text):
                subject, relation, text = mention(text, bare, speaker, topic_of_message)
            elif subject is None:
                subject, relation = opinion(text, bare, speaker, other, mentions)
            if subject is None or relation is None:
                continue
            if speaker == "assistant" and relation.name in _VIEWS:
                continue  # an unnamed assistant's views and advice are not the user's memory
            if relation.name not in ("RELATES_TO", "BELIEVES", "ADVISES", "FEELS"):
                topic_of_message = relation.object
            last = self._fact(out, subject, relation, speaker, other, message, when, mentions)

    def _fact(
        self,
        out: _Builder,
        subject: Subject,
        relation: Relation,
        speaker: str,
        other: str | None,
        message: EpisodeMessage,
        when: datetime,
        mentions: Sequence[Mention],
    ) -> tuple[str, str, str, str] | None:
        if subject.kind == "named" and relation.name not in _NAMED_RELATIONS:
            return None
        rewritten = third_person(subject.text, speaker, other)
        sentence = _sentence(rewritten)
        if len(sentence.split()) < 3:
            return None
        obj = re.sub(r"\b(?:[Mm]y|[Oo]ur)\b", f"{speaker}'s", relation.object)
        label = relation.object_label
        for m in mentions:
            if m.name.lower() == obj.lower():
                obj, label = m.name, m.label
        subject_label: EntityLabel = "person" if subject.kind != "kin" else "other"
        if subject.kind == "kin" and (subject.kin or "") in FAMILY:
            subject_label = "person"
        if subject.kind in ("speaker", "group"):
            subject_label = "person" if speaker != "assistant" else "other"
        out.entity(subject.name, subject_label)
        out.entity(obj, label)
        valid_at = message.created_at if relation.name in _FUTURE else when
        return out.fact(
            ExtractedFact(
                subject=subject.name,
                relation=relation.name,
                object=obj,
                fact=sentence,
                source_message=message.uuid,
                valid_at=valid_at,
                exclusive=relation.exclusive,
            )
        )

    def _kin_facts(self, out: _Builder, clause: str, speaker: str, message: EpisodeMessage) -> None:
        named = _MY_NAME.search(clause)
        if named and named.group(1) != speaker:
            out.entity(speaker, "person")
            out.entity(named.group(1), "person")
            out.fact(
                ExtractedFact(
                    subject=speaker,
                    relation="NAMED",
                    object=named.group(1),
                    fact=_sentence(f"{speaker}'s name is {named.group(1)}"),
                    source_message=message.uuid,
                    valid_at=message.created_at,
                    exclusive=True,
                )
            )
        found = [(k.lower(), n) for k, n in _KIN_NAMED.findall(clause)]
        found += [(k.lower(), n) for n, k in _NAMED_KIN.findall(clause)]
        for word, name in found:
            kin = FAMILY.get(word)
            if kin is None or name == speaker:
                continue
            relation = _KIN_RELATION.get(kin, f"HAS_{kin}")
            if kin in _PETS:
                sentence = f"{speaker} has a {word} named {name}."
            elif relation in _EXCLUSIVE_KIN:
                sentence = f"{name} is {speaker}'s {word}."
            else:
                sentence = f"{speaker} has a {word} named {name}."
            out.entity(speaker, "person")
            out.entity(name, "other" if kin in _PETS else "person", f"{speaker}'s {word}")
            out.fact(
                ExtractedFact(
                    subject=speaker,
                    relation=relation,
                    object=name,
                    fact=sentence,
                    source_message=message.uuid,
                    valid_at=message.created_at,
                    exclusive=relation in _EXCLUSIVE_KIN,
                )
            )


# Facts about third parties are kept only for the relations the rules read reliably.
_NAMED_RELATIONS = frozenset(
    {
        "LIVES_IN", "WORKS_AT", "WORKS_AS", "MARRIED_TO", "ENGAGED_TO", "LIKES", "DISLIKES",
        "WENT_TO", "VISITED", "JOINED", "STARTED", "FINISHED", "BOUGHT", "IS", "HAS",
        "PLANS_TO", "WANTS_TO", "STUDIES", "STUDIES_AT", "GRADUATED_FROM", "FROM", "AGE",
        "DATING", "TRAVELED_TO", "GREW_UP_IN", "ADOPTED", "INTERESTED_IN",
    }
)  # fmt: skip
