"""Episode → graph: extract, resolve entities, upsert facts, close contradicted facts.

One transaction per episode (or per batch of a user's queued episodes), so a crash leaves
nothing half-written and the retried job starts from scratch; an episode already marked
done is skipped (idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from engram.crypto import reveal
from engram.crypto.detect import Redaction
from engram.crypto.envelope import FieldContext
from engram.crypto.protect import KeyRef, Protector, Sealed
from engram.crypto.sensitivity import Sensitivity, combine, stored_class
from engram.embed.batcher import BatchingEmbedder
from engram.errors import NotFoundError
from engram.extract.types import (
    CandidateFact,
    Episode,
    EpisodeMessage,
    ExtractedEntity,
    Extraction,
    Extractor,
)
from engram.graph import entities, facts
from engram.graph.entities import normalize_name
from engram.store import entities as stored_entities
from engram.store import episodes
from engram.store import facts as stored_facts
from engram.store.db import Conn, Database

__all__ = ["GraphSettings", "normalize_name", "process_episode"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphSettings:
    entity_threshold: float = 0.92  # name-embedding cosine to merge two entities
    fact_threshold: float = 0.95  # fact-embedding cosine to treat two facts as one
    context_messages: int = 4
    candidates: int = 20  # valid facts shown to an extractor that judges contradictions
    ts_config: str = "english"
    batch: int = 64  # a user's queued episodes extracted in one transaction, at most
    name_chars: int = 200  # longer entity names are cut to this length
    fact_chars: int = 1000  # and longer fact texts to this one


def _to_message(row: dict[str, Any]) -> EpisodeMessage:
    return EpisodeMessage(
        uuid=str(row["uuid"]),
        role=row["role"],
        role_type=row["role_type"],
        content=row["content"],
        created_at=row["created_at"],
    )


class _BatchFailed(Exception):
    """A batch of several episodes failed; the job's own episode is tried alone."""


async def process_episode(
    db: Database,
    embedder: BatchingEmbedder,
    extractor: Extractor,
    tenant: str,
    episode_uuid: uuidlib.UUID,
    settings: GraphSettings,
    protector: Protector | None = None,
    job_id: int | None = None,
) -> str:
    """Extract one episode into the user's graph; returns what happened.

    With its job's id, the user's episodes queued right after it are extracted in the
    same transaction (up to ``settings.batch`` in all) and their jobs marked done with
    it: the graph is the same as one job at a time would make, at a fraction of the
    cost. An extractor that judges contradictions against the stored facts sees each
    episode alone. If a batch fails, the job's own episode is tried alone, so one bad
    episode fails only its own job.

    The extractor reads the plaintext of protected messages; the facts it makes are
    classified at least as high as the message they came from, and sealed likewise. The
    entity names taken from a message that declares a protected class are sealed too."""

    async def run(follow: int) -> str:
        batch = episodes.Batch()
        try:
            async with db.tenant(tenant) as conn:
                batch = await episodes.load_batch(
                    conn, episode_uuid, job_id, follow, settings.context_messages
                )
                return await _extract(conn, embedder, extractor, tenant, batch, settings, protector)
        except Exception as exc:
            if len(batch.episodes) > 1:
                raise _BatchFailed(str(exc)) from exc
            raise

    follow = settings.batch - 1 if not extractor.uses_candidates else 0
    if follow > 0 and job_id is not None:
        try:
            return await run(follow)
        except _BatchFailed as exc:
            logger.warning(
                "a batch from episode %s failed (%s); extracting it alone", episode_uuid, exc
            )
    return await run(0)


async def _extract(
    conn: Conn,
    embedder: BatchingEmbedder,
    extractor: Extractor,
    tenant: str,
    batch: episodes.Batch,
    settings: GraphSettings,
    protector: Protector | None,
) -> str:
    if not batch.episodes:
        return "gone"  # its session was deleted before the job ran
    row = batch.episodes[0]
    if row["status"] == "done" or row["user_id"] is None:
        return "skipped"
    todo = [e for e in batch.episodes if batch.messages[e["uuid"]]]
    if todo and batch.user is None:
        raise NotFoundError("user", row["user_id"])
    msgs = [m for e in todo for m in batch.messages[e["uuid"]]]
    levels = {str(m["uuid"]): Sensitivity(m["sensitivity"]) for m in msgs}
    if protector is not None:
        context = [m for e in todo for m in batch.context[e["uuid"]]]
        await reveal.messages(protector, tenant, [*msgs, *context], True)
    name = _user_name(batch.user) if batch.user is not None else None
    extractions: list[tuple[dict[str, Any], Extraction]] = []
    for ep in todo:
        uuid = ep["uuid"]
        episode = Episode(
            user_id=row["user_id"],
            session_id=ep["session_id"],
            messages=[_to_message(m) for m in batch.messages[uuid]],
            user_name=name,
            context=[_to_message(m) for m in batch.context[uuid]],
        )
        known: list[dict[str, Any]] = (
            await stored_facts.candidates_for_episode(conn, uuid, settings.candidates)
            if extractor.uses_candidates
            else []
        )
        if protector is not None:
            await reveal.facts(protector, tenant, known, True)
        candidates = [
            CandidateFact(str(c["uuid"]), c["subject"], c["relation"], c["object"], c["fact"])
            for c in known
        ]
        found = await asyncio.to_thread(extractor.extract, episode, candidates)
        extractions.append((ep, _bounded(found, settings)))
    texts = {str(m["uuid"]): m["content"] for m in msgs}
    declared = {
        str(m["uuid"]): combine(
            stored_class({"sensitivity": m["declared"]}),
            stored_class({"sensitivity": m["session_declared"]}),
        )
        for m in msgs
    }
    speakers = {"user", "assistant", *(normalize_name(m["role"] or "") for m in msgs)}
    if name:
        speakers.add(normalize_name(name))
    sealer = _Sealer(
        protector, tenant, row["user_id"], levels, texts, declared, frozenset(speakers)
    )
    writes = await _apply(
        conn, embedder, row["user_id"], [x for _, x in extractions], settings, sealer
    )
    # Every write of the batch in one round trip: none needs another's result.
    async with conn.pipeline():
        if writes is not None:
            await writes[0].write(conn, tenant, row["user_id"])
            await writes[1].write(conn, tenant, row["user_id"], settings.ts_config)
        for ep, extraction in extractions:
            last = batch.messages[ep["uuid"]][-1]["created_at"]
            await _close_contradicted(conn, extraction, last)
            await episodes.mark_done(conn, ep["uuid"], extractor.id, extraction.usage)
        for ep in batch.episodes:
            if not batch.messages[ep["uuid"]]:
                await episodes.mark_done(conn, ep["uuid"], extractor.id, {})
        await episodes.finish_jobs(conn, batch.job_ids)
    if not todo:
        return "empty"
    return "done" if len(batch.episodes) == 1 else f"done with {len(batch.episodes) - 1} after it"


_RELATION_CHARS = 100


def _clip(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters ending in "…" when it is longer."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _bounded(x: Extraction, settings: GraphSettings) -> Extraction:
    """The extraction with its names, relations and fact texts cut to their limits.

    A name is a key of a database index (at most ~2.7 kB a row), and a message of
    65,536 characters may hold a single word the extractor takes for one; a fact's
    words are part of an index row too."""
    n = settings.name_chars

    def name(text: str) -> str:
        return _clip(text, n)

    return replace(
        x,
        entities=[
            replace(e, name=name(e.name), aliases=tuple(name(a) for a in e.aliases))
            for e in x.entities
        ],
        facts=[
            replace(
                f, subject=name(f.subject), object=name(f.object),
                relation=_clip(f.relation, _RELATION_CHARS),
                fact=_clip(f.fact, settings.fact_chars),
            )
            for f in x.facts
        ],
    )  # fmt: skip


def _user_name(user: dict[str, Any]) -> str | None:
    """The name the extractor gives the user's "I", when their name is stored in clear.

    A protected name is not revealed to the extractor: it would come back in clear as an
    entity name (entity names are not encrypted). The speaker is then the message's role
    when that is a name, else "user". A user with a profile ciphertext is taken to have
    protected names (it holds them unless only the metadata is protected, and a name is
    at least `pii`, which is protected by default)."""
    if any(user[c] is not None for c in ("profile_enc", "first_name_enc", "last_name_enc")):
        return None
    return " ".join(p for p in (user["first_name"], user["last_name"]) if p) or None


@dataclass
class _Sealer:
    """Seals the fact texts, entity summaries and entity names of one episode's
    extraction."""

    protector: Protector | None
    tenant: str
    user_id: str
    levels: dict[str, Sensitivity]  # message uuid -> its class
    texts: dict[str, str] = field(default_factory=dict)  # message uuid -> its plaintext
    # Message uuid -> the class it declares (its metadata's or its session's).
    declared: dict[str, Sensitivity] = field(default_factory=dict)
    # Normalised names that come from no message's text: the speakers' (roles, the user's
    # name), which a declared class does not cover.
    speakers: frozenset[str] = frozenset()
    key: KeyRef | None = None  # the user's data key, looked up once when first needed
    _found: dict[str, Redaction] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.protector is not None and self.protector.enabled

    def _declared(self, message: str) -> Sensitivity:
        assert self.protector is not None
        return combine(
            self.declared.get(message, Sensitivity.NONE), self.protector.classifier.floor
        )

    def covers(self, name: str, message: str) -> bool:
        """Whether a declared protected class covers a name taken from a message: it
        covers everything derived from the message's text, but the speakers' names are
        not taken from it."""
        p = self.protector
        if p is None or not p.enabled or not p.classifier.protects(self._declared(message)):
            return False
        return normalize_name(name) not in self.speakers

    def sealed_name(self, text: str, message: str, node: uuidlib.UUID) -> Sealed:
        """A covered name sealed: stored as the class marker, the name encrypted."""
        return self.seal("entities", "name", node, text, message, self._declared(message))

    def name(self, text: str, message: str) -> str:
        """An entity's name as stored when it is not sealed. Such a name is resolved and
        searched in clear, so a name that holds a protected value (a phone number the
        extractor took for a node), or that the message has only inside one (``alice`` of
        ``alice@example.org``), is stored as the value's marker (``[PHONE]``, ``[EMAIL]``)."""
        p = self.protector
        if p is None or not p.enabled:
            return text
        own = p.redact_only(text)
        content = self.texts.get(message)
        if own != text or content is None or not self.levels.get(message):
            return own  # a message of class none has no protected value to look inside
        found = self._found.get(message)
        if found is None:
            found = self._found[message] = p.classify(content)
        low = text.lower()
        if low in found.text.lower():
            return text  # the message also has it outside every protected value
        for span in found.spans:
            inside = low in content[span.start : span.end].lower()
            if inside and p.classifier.protects(span.sensitivity):
                return span.marker
        return text

    def seal(
        self, table: str, column: str, uuid: uuidlib.UUID, text: str, message: str,
        level: Sensitivity | None = None,
    ) -> Sealed:  # fmt: skip
        if self.protector is None or not self.protector.enabled:
            return Sealed(text, None, Sensitivity.NONE, text)
        if self.key is None:
            self.key = self.protector.key_ref(self.tenant, self.user_id)
        return self.protector.seal_text(
            FieldContext(self.tenant, table, column, str(uuid)),
            self.user_id,
            text,
            self.levels.get(message, Sensitivity.NONE) if level is None else level,
            self.key,
        )


async def _apply(
    conn: Conn,
    embedder: BatchingEmbedder,
    user_id: str,
    extractions: list[Extraction],
    settings: GraphSettings,
    sealer: _Sealer,
) -> tuple[entities.Resolution, facts.FactWrites] | None:
    """Resolve the entities and decide the facts of extractions, in order; returns the
    writes."""
    found = [f for x in extractions for f in x.facts]
    # Per extraction, the names its facts use, each with its first message: an entity
    # no fact uses is no node. A name is one node where a declared class covers it and
    # another where none does: a fact of a declared message is never linked to a name
    # in clear, nor one of a plain message to a sealed name.
    named: list[tuple[str, ExtractedEntity | None, uuidlib.UUID, bool]] = []
    for x in extractions:
        known = {e.name: e for e in x.entities}
        first_message: dict[tuple[str, bool], uuidlib.UUID] = {}
        for f in x.facts:
            for n in (f.subject, f.object):
                covered = sealer.covers(n, f.source_message)
                first_message.setdefault((n, covered), uuidlib.UUID(f.source_message))
        names = list(known)
        for f in x.facts:
            for n in (f.subject, f.object):
                if n not in known and n not in names:
                    names.append(n)
        named += [
            (n, known.get(n), first_message[(n, covered)], covered)
            for n in names
            for covered in (False, True)
            if (n, covered) in first_message
        ]
    if not named and not found:
        return None
    fact_ids = [uuidlib.uuid4() for _ in found]

    # (an extracted name, whether a declared class covers it) -> the key it resolves by
    key_of: dict[tuple[str, bool], str] = {}

    def seal() -> tuple[list[Sealed], list[entities.Mention]]:
        sealed = [
            sealer.seal("facts", "fact", fact_ids[i], f.fact, f.source_message)
            for i, f in enumerate(found)
        ]
        mentions = []
        for n, entity, message, covered in named:
            node, summary = uuidlib.uuid4(), None
            if entity is not None and entity.summary:
                s = sealer.seal("entities", "summary", node, entity.summary, str(message))
                summary = (s.text, s.ciphertext)
            label = entity.label if entity else "other"
            hidden = sealer.sealed_name(n, str(message), node) if covered else None
            if hidden is not None and hidden.ciphertext is not None:
                m = entities.Mention.of_sealed(hidden.text, n, hidden.ciphertext, label, message,
                                            node, summary)  # fmt: skip
            else:
                name = hidden.text if hidden is not None else sealer.name(n, str(message))
                m = entities.Mention(name, label, message, node, summary)
            key_of[(n, covered)] = m.key
            mentions.append(m)
        return sealed, mentions

    sealed, mentions = await asyncio.to_thread(seal) if sealer.enabled else seal()
    fact_texts = [s.embed_text for s in sealed]
    fact_vectors: list[np.ndarray[Any, np.dtype[np.float32]]] = []

    async def embed(unmatched: list[str]) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
        # One embedder call for the names no stored name matches and all the fact texts.
        vectors = list(await embedder.embed(unmatched + fact_texts, wait=False))
        fact_vectors.extend(vectors[len(unmatched) :])
        return vectors[: len(unmatched)]

    stored_sealed = (
        await _sealed_names(conn, sealer, user_id) if any(m.sealed for m in mentions) else {}
    )
    resolution = await entities.resolve(
        conn, user_id, mentions, embed, settings.entity_threshold, stored_sealed
    )
    ids = resolution.ids
    if not fact_vectors and fact_texts:  # resolve() had nothing to embed
        fact_vectors.extend(await embedder.embed(fact_texts, wait=False))
    planned = [
        facts.Planned(
            fact_ids[i], ids[key_of[(f.subject, sealer.covers(f.subject, f.source_message))]],
            ids[key_of[(f.object, sealer.covers(f.object, f.source_message))]], f.relation,
            sealed[i].text, f.exclusive,
            fact_vectors[i], f.valid_at, f.invalid_at, uuidlib.UUID(f.source_message),
            int(sealed[i].sensitivity), sealed[i].ciphertext,
            not entities.is_marker(sealed[i].embed_text),
        )
        for i, f in enumerate(found)
    ]  # fmt: skip
    return resolution, await facts.upsert(conn, planned, settings.fact_threshold)


async def _sealed_names(conn: Conn, sealer: _Sealer, user_id: str) -> dict[str, dict[str, Any]]:
    """The user's entities whose names are sealed, by the key of their opened names (the
    extractor resolves a sealed name against these alone)."""
    assert sealer.protector is not None
    rows = await stored_entities.sealed_names(conn, user_id)
    await reveal.entities(sealer.protector, sealer.tenant, rows, True)
    return {entities.sealed_key(r["name"]): r for r in rows if r.get("name") is not None}


async def _close_contradicted(conn: Conn, extraction: Extraction, episode_time: datetime) -> None:
    """Close the facts the extractor judged contradicted, from when the new facts hold."""
    if not extraction.contradicted:
        return
    starts = [f.valid_at for f in extraction.facts if f.valid_at is not None]
    invalid_at = min(starts) if starts else episode_time
    await stored_facts.close_many(
        conn, [(uuidlib.UUID(uuid), invalid_at) for uuid in dict.fromkeys(extraction.contradicted)]
    )
