"""Statements that are the speaker's view rather than their doing: opinions and advice."""

from __future__ import annotations

import re
from collections.abc import Sequence

from engram.extract.entities import Mention
from engram.extract.lexicon import ADVERBS, NOT_NAMES, words
from engram.extract.patterns import Relation, topic
from engram.extract.subjects import Subject

__all__ = ["mention", "opinion"]

_SECOND_PERSON = re.compile(
    r"\b(?:you|your|yours|yourself|you're|you've|you'll|you'd|u|ur|ya)\b", re.I
)
_NOT_OPINION = re.compile(
    r"^(?:here(?:'s| is| are)|this is|these are|check (?:it|this) out|look at|take a look|"
    r"let's|let me|hope|thank|thanks|see|good luck|congrats|congratulations|long time|what an?"
    r"|sounds|looks like|seems like|such an?)\b",
    re.I,
)
_IMPERATIVES = words(
    """keep take don't do never remember make try stay push trust go be enjoy let check give
    find believe follow focus stick hang get always dont start put reach look have"""
)
# Verbless reactions: "Good to see you again", "On those deals with Nike", "In May 2023."
_FRAGMENT = re.compile(
    r"^(?:(?:so |really |very |super )?(?:good|great|nice|glad|happy|awesome|cool|lovely|fun|sad"
    r"|sorry|exciting|amazing|wonderful)\s+(?:to|that|for)\b|(?:on|for|in|at|with|about)\s)",
    re.I,
)
_VERBISH = re.compile(
    r"\b(?:is|are|was|were|has|have|had|can|could|will|would|should|must|may|might|do|does"
    r"|did|\w+'s|\w+'re|\w+n't|\w{3,}ed)\b",
    re.I,
)
_FUNCTION_WORDS = words(
    """the a an it it's that that's this there there's these those my your our his her their
    its some many most all every no not nothing everything something life people everyone
    someone sometimes when if what how why being having family friends kids music art nature
    time things work love school home"""
)
_IT = re.compile(r"^(?:it|this|that)(?='s\b|\s)", re.I)


def _common(word: str) -> bool:
    """A word that is lower-cased inside a sentence (so not a name)."""
    low = word.lower().strip(",")
    return low in _FUNCTION_WORDS or low in NOT_NAMES or low.endswith(("ing", "ed", "ly", "'s"))


def opinion(
    text: str, bare: str, speaker: str, other: str | None, mentions: Sequence[Mention]
) -> tuple[Subject | None, Relation | None]:
    """A general statement the speaker makes: "Staying positive is key" is their view."""
    if len(text.split()) < 4 or _NOT_OPINION.match(text) or _FRAGMENT.match(text):
        return None, None
    if text.split()[0].lower() in ("a", "an", "just") and not _VERBISH.search(text):
        return None, None  # "A good break from school."
    if _SECOND_PERSON.search(text) and other is None:
        return None, None
    obj = topic(bare)
    if not obj:
        return None, None
    first = text.split(" ", 1)[0]
    common = _common(first) or first.lower() in _IMPERATIVES
    keep = any(m.start == 0 for m in mentions) or text[:2].isupper() or not common
    body = text if keep else text[:1].lower() + text[1:]
    lead = body.split()
    while len(lead) > 1 and lead[0].lower() in ADVERBS:
        lead.pop(0)
    if lead[0].lower() in _IMPERATIVES:
        body = " ".join(lead)
        advice = re.sub(r"^(?:do not|don't|never)\b", "not to", body)
        advice = advice if advice.startswith("not to") else f"to {advice}"
        sentence = f"{speaker} advises {other or 'others'} {advice}"
        return Subject("speaker", speaker, "", sentence), Relation("ADVISES", obj, False, "concept")
    subject = Subject("speaker", speaker, "", f"{speaker} thinks that {body}")
    return subject, Relation("BELIEVES", obj, False, "concept")


def mention(
    text: str, bare: str, speaker: str, last_topic: str
) -> tuple[Subject | None, Relation | None, str]:
    """A clause that speaks of the speaker without being about them: "It helps me"."""
    m = _IT.match(text)
    if m and last_topic:
        tail = text[m.end() :]
        sep = "" if tail.startswith("'") else " "
        text = f"{last_topic[:1].upper()}{last_topic[1:]}{sep}{tail.lstrip()}"
        obj = last_topic
    else:
        obj = topic(bare)
    if not obj:
        return None, None, text
    subject = Subject("speaker", speaker, "", text)
    return subject, Relation("RELATES_TO", obj, False, "concept"), text
