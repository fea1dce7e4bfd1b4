"""Episode → graph: extract, resolve entities, upsert facts, close contradicted facts.

One transaction per episode, so a crash leaves nothing half-written and the retried job
starts from scratch; an episode already marked done is skipped (idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from engram.crypto.envelope import FieldContext
from engram.crypto.protect import Protector, Sealed
from engram.crypto.sensitivity import Sensitivity
from engram.embed.batcher import BatchingEmbedder
from engram.extract.types import CandidateFact, Episode, EpisodeMessage, Extraction, Extractor
from engram.memory import reveal
from engram.store import entities, episodes, facts, users
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


def normalize_name(name: str) -> str:
    """Case-, accent- and punctuation-insensitive key of an entity name."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^\w\s]", " ", text.casefold())
    text = re.sub(r"^(the|a|an)\s+", "", text.strip())
    return " ".join(text.split())


def _to_message(row: dict[str, Any]) -> EpisodeMessage:
    return EpisodeMessage(
        uuid=str(row["uuid"]),
        role=row["role"],
        role_type=row["role_type"],
        content=row["content"],
        created_at=row["created_at"],
    )


async def process_episode(
    db: Database,
    embedder: BatchingEmbedder,
    extractor: Extractor,
    tenant: str,
    episode_uuid: uuidlib.UUID,
    settings: GraphSettings,
    protector: Protector | None = None,
) -> str:
    """Extract one episode into the user's graph; returns what happened.

    The extractor reads the plaintext of protected messages; the facts it makes are
    classified at least as high as the message they came from, and sealed likewise."""
    async with db.tenant(tenant) as conn:
        row = await episodes.lock(conn, episode_uuid)
        if row is None:
            return "gone"  # its session was deleted before the job ran
        if row["status"] == "done" or row["user_id"] is None:
            return "skipped"
        msgs = await episodes.messages_of(conn, episode_uuid)
        if not msgs:
            await episodes.mark_done(conn, episode_uuid, extractor.id, {})
            return "empty"
        user = await users.get(conn, row["user_id"])
        context = await episodes.recent_context(
            conn, row["session_id"], msgs[0]["seq"], settings.context_messages
        )
        levels = {str(m["uuid"]): Sensitivity(m["sensitivity"]) for m in msgs}
        if protector is not None:
            await reveal.messages(protector, tenant, [*msgs, *context], True)
        name = _user_name(user)
        episode = Episode(
            user_id=row["user_id"],
            session_id=row["session_id"],
            messages=[_to_message(m) for m in msgs],
            user_name=name,
            context=[_to_message(m) for m in context],
        )
        known: list[dict[str, Any]] = (
            await facts.candidates_for_episode(conn, episode_uuid, settings.candidates)
            if extractor.uses_candidates
            else []
        )
        if protector is not None:
            await reveal.facts(protector, tenant, known, True)
        candidates = [
            CandidateFact(str(c["uuid"]), c["subject"], c["relation"], c["object"], c["fact"])
            for c in known
        ]
        extraction = await asyncio.to_thread(extractor.extract, episode, candidates)
        sealer = _Sealer(protector, tenant, row["user_id"], levels)
        await _apply(conn, embedder, tenant, row["user_id"], extraction, settings, sealer)
        await _close_contradicted(conn, extraction, msgs[-1]["created_at"])
        await episodes.mark_done(conn, episode_uuid, extractor.id, extraction.usage)
    return "done"


def _user_name(user: dict[str, Any]) -> str | None:
    """The name the extractor gives the user's "I", when their name is stored in clear.

    A protected name is not revealed to the extractor: it would come back in clear as an
    entity name (entity names are not encrypted). The speaker is then the message's role
    when that is a name, else "user"."""
    if user["first_name_enc"] is not None or user["last_name_enc"] is not None:
        return None
    return " ".join(p for p in (user["first_name"], user["last_name"]) if p) or None


@dataclass
class _Sealer:
    """Seals the fact texts and entity summaries of one episode's extraction."""

    protector: Protector | None
    tenant: str
    user_id: str
    levels: dict[str, Sensitivity]  # message uuid -> its class

    def seal(self, table: str, column: str, uuid: uuidlib.UUID, text: str, message: str) -> Sealed:
        if self.protector is None:
            return Sealed(text, None, Sensitivity.NONE, text)
        return self.protector.seal_text(
            FieldContext(self.tenant, table, column, str(uuid)),
            self.user_id,
            text,
            self.levels.get(message, Sensitivity.NONE),
        )


async def _apply(
    conn: Conn,
    embedder: BatchingEmbedder,
    tenant: str,
    user_id: str,
    extraction: Extraction,
    settings: GraphSettings,
    sealer: _Sealer,
) -> None:
    known = {e.name: e for e in extraction.entities}
    names = list(known)
    for f in extraction.facts:
        for n in (f.subject, f.object):
            if n not in known and n not in names:
                names.append(n)
    if not names and not extraction.facts:
        return
    fact_ids = [uuidlib.uuid4() for _ in extraction.facts]

    def seal_facts() -> list[Sealed]:
        return [
            sealer.seal("facts", "fact", fact_ids[i], f.fact, f.source_message)
            for i, f in enumerate(extraction.facts)
        ]

    sealed = await asyncio.to_thread(seal_facts) if sealer.protector else seal_facts()
    texts = names + [s.embed_text for s in sealed]
    vectors = await embedder.embed(texts)
    name_vec = {n: vectors[i] for i, n in enumerate(names)}
    first_message: dict[str, uuidlib.UUID] = {}
    for f in extraction.facts:
        for n in (f.subject, f.object):
            first_message.setdefault(n, uuidlib.UUID(f.source_message))
    ids: dict[str, uuidlib.UUID] = {}
    for n in names:
        if n not in first_message:
            continue  # an entity no fact uses is not worth a node
        entity = known.get(n)
        label = entity.label if entity else "other"
        summary = None
        if entity is not None and entity.summary:
            summary = await asyncio.to_thread(
                sealer.seal, "entities", "summary", (node := uuidlib.uuid4()), entity.summary,
                str(first_message[n]),
            )  # fmt: skip
        ids[n] = await _resolve(
            conn, tenant, user_id, n, label, summary, node if summary else None,
            name_vec[n], first_message[n], settings,
        )  # fmt: skip
    for i, f in enumerate(extraction.facts):
        vec = vectors[len(names) + i]
        message = uuidlib.UUID(f.source_message)
        source, target = ids[f.subject], ids[f.object]
        same = await facts.find_same(conn, source, f.relation, target, vec, settings.fact_threshold)
        if same is not None:
            await facts.add_provenance(conn, same["uuid"], message)
            continue
        invalid_at = f.invalid_at
        if f.exclusive:
            for old in await facts.valid_for_relation(conn, source, f.relation):
                if old["target_uuid"] == target:
                    continue
                if (
                    f.valid_at is not None
                    and old["valid_at"] is not None
                    and (old["valid_at"] > f.valid_at)
                ):
                    # The new statement is about an earlier time: it held until the old one.
                    invalid_at = min(invalid_at or old["valid_at"], old["valid_at"])
                else:
                    await facts.close(conn, old["uuid"], f.valid_at)
        await facts.insert(
            conn, tenant, user_id, source, target, f.relation, sealed[i].text, f.exclusive, vec,
            f.valid_at, invalid_at, message, settings.ts_config, uuid=fact_ids[i],
            sensitivity=int(sealed[i].sensitivity), fact_enc=sealed[i].ciphertext,
        )  # fmt: skip


async def _resolve(
    conn: Conn,
    tenant: str,
    user_id: str,
    name: str,
    label: str,
    summary: Sealed | None,
    node: uuidlib.UUID | None,
    vector: np.ndarray[Any, np.dtype[np.float32]],
    message: uuidlib.UUID,
    settings: GraphSettings,
) -> uuidlib.UUID:
    """The user's entity for ``name``: by normalised name or alias, then by embedding."""
    key = normalize_name(name) or name.casefold()
    found = await entities.find_by_name(conn, user_id, key)
    if found is None:
        near = await entities.nearest(conn, user_id, vector)
        if near is not None and near["score"] >= settings.entity_threshold:
            found = near
    if found is not None:
        entity = uuidlib.UUID(str(found["uuid"]))
        await entities.add_episode(conn, tenant, entity, message, key, label)
        return entity
    return await entities.insert(
        conn, tenant, user_id, name, key, label, summary.text if summary else None, vector,
        message, uuid=node, summary_enc=summary.ciphertext if summary else None,
    )  # fmt: skip


async def _close_contradicted(conn: Conn, extraction: Extraction, episode_time: datetime) -> None:
    """Close the facts the extractor judged contradicted, from when the new facts hold."""
    if not extraction.contradicted:
        return
    starts = [f.valid_at for f in extraction.facts if f.valid_at is not None]
    invalid_at = min(starts) if starts else episode_time
    for uuid in extraction.contradicted:
        await facts.close(conn, uuidlib.UUID(uuid), invalid_at)
