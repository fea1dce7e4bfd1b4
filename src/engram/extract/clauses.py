"""Split a message into statement clauses; drop questions, greetings and small talk."""

from __future__ import annotations

import re
from collections.abc import Collection

from engram.extract.lexicon import SMALL_TALK

__all__ = ["is_question", "is_small_talk", "statements", "strip_openers"]

_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+|\s+[-\u2013\u2014]\s+(?=I\b)")
# A new clause starts where a conjunction introduces a new first-person subject.
_CLAUSE = re.compile(
    r"(;\s+|,?\s+(?:and|but|so|plus|then|because|cause|'cause)\s+(?=(?:I|I'm|I've|I'll|I'd)\b)"
    r"|,\s+(?=(?:I|I'm|I've|I'll|I'd)\s))"
)
_OPENER = re.compile(
    r"^(?:(?:hey|hi|hello|yeah|yes|yep|yup|oh|ah+|aw+|wow|woah|whoa|well|haha+|lol|omg|ok|okay"
    r"|so|anyway|anyways|btw|fyi|by the way|thanks|thank you|thx|sure|totally|absolutely|right"
    r"|definitely|honestly|hmm+|ooh+|gosh|man|dude|nah|no|true|exactly|cool|awesome|great"
    r"|nice|sweet|congrats|congratulations|guess what|you know what|fun fact|actually"
    r"|also|and|but|plus|speaking of which|by the way)\b[\s,!.:-]*)+",
    re.I,
)
_QUESTION_START = re.compile(
    r"^(?:do|does|did|are|is|was|were|have|has|can|could|would|will|should|shall|what|how|why"
    r"|where|when|who|whom|which|wanna|want to|ever|any|anything)\b",
    re.I,
)
_WORD = re.compile(r"[a-z']+")
_YOU = re.compile(r"\byou\b", re.I)


def strip_openers(text: str, people: Collection[str] = ()) -> str:
    """Remove leading interjections and a vocative ("Yeah, Mel! ...") from a sentence."""
    prev = None
    while prev != text:
        prev = text
        text = _OPENER.sub("", text).lstrip()
        m = re.match(r"^([A-Z][a-z]+)\s*[,!.]+\s*", text)
        if m and _is_person(m.group(1), people):
            text = text[m.end() :]
    m = re.search(r",\s*([A-Z][a-z]+)\s*([.!]*)$", text)
    if m and _is_person(m.group(1), people):
        text = text[: m.start()] + (m.group(2) or "")
    return text


def _is_person(word: str, people: Collection[str]) -> bool:
    return any(p == word or (len(word) >= 3 and p.startswith(word)) for p in people)


def is_question(sentence: str) -> bool:
    """A question or a request, not a statement."""
    s = sentence.strip()
    return s.endswith("?") or bool(_QUESTION_START.match(s) and _YOU.search(s))


def is_small_talk(sentence: str) -> bool:
    """Greetings, thanks and reactions with nothing to remember."""
    words = _WORD.findall(sentence.lower())
    return not words or all(w in SMALL_TALK for w in words)


def statements(text: str, people: Collection[str] = ()) -> list[str]:
    """The statement clauses of a message, openers removed, in order."""
    out: list[str] = []
    for raw in _SENTENCE.split(text.replace("\u2019", "'").replace("\u2018", "'")):
        sentence = raw.strip()
        if sentence.endswith("?") and " - " in sentence:
            sentence = sentence.split(" - ", 1)[0]  # "I finished it - want to see?"
        if not sentence or is_question(sentence):
            continue
        pieces = _CLAUSE.split(sentence)  # clause, separator, clause, ...
        parts = pieces[::2]
        for k in range(len(parts) - 1):
            if len(parts[k].split()) <= 3:  # "Last week, I ran": the lead stays with its clause
                parts[k + 1] = parts[k] + pieces[2 * k + 1] + parts[k + 1]
                parts[k] = ""
        for part in parts:
            clause = strip_openers(part.strip(" ,-"), people)
            if clause and not is_question(clause) and not is_small_talk(clause):
                out.append(clause)
    return out
