"""Who a clause is about: the speaker ("I ...", "Just got back ..."), their kin, or a name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engram.extract.entities import Mention
from engram.extract.lexicon import ADVERBS, FAMILY, IRREGULAR_PAST, words

__all__ = ["Subject", "find_subject"]

SubjectKind = Literal["speaker", "group", "kin", "named"]

_FIRST = re.compile(r"\b(?:I|I'm|I've|I'll|I'd|I'm)(?=[\s,.!]|$)")
_EXPAND = {"I'm": "am", "I've": "have", "I'll": "will", "I'd": "would"}
_WE = re.compile(r"^(?P<lead>(?:[\w']+,?\s+){0,2}?)(?:we|We)(?P<c>'re|'ve|'ll|'d)?\s+(?P<pred>.+)$")
_WE_EXPAND = {"'re": "are", "'ve": "have", "'ll": "will", "'d": "would", None: ""}
_LEAD_WORDS = words(
    """and so but then now also recently finally plus actually yesterday today lately
    honestly anyway well last this next week month year weekend night ago after before
    since when once morning back in on at a few couple days weeks months years two three
    ever just still luckily sadly fortunately unfortunately guess what"""
)
_IMPLICIT_PRESENT = words(
    """love like enjoy hope miss need want think feel wish plan gotta had got started just
    finally also recently still currently can't cannot cant recommend bet guess reckon"""
)
_IMPLICIT_ADJECTIVES = words(
    """glad happy excited proud thankful grateful lucky stoked pumped hooked blessed thrilled
    relieved bummed exhausted tired busy keen eager ready"""
)
_ING_ADJECTIVES = words(
    """exciting amazing interesting inspiring relaxing rewarding challenging surprising boring
    annoying fascinating refreshing touching heartwarming satisfying frustrating overwhelming
    encouraging promising thrilling calming soothing uplifting stunning charming exhausting
    humbling intriguing terrifying worrying disappointing everything nothing something
    anything morning evening"""
)
_FINITE = re.compile(
    r"^(?:(?!\b(?:that|which|who|when|where|because|if)\b)[^,;])*?\b(?:is|was|has|have|are"
    r"|were|makes|made|gives|gave|helps|helped|keeps|kept|can|will|brings|brought|takes|took"
    r"|means|meant|must|should|would|could|might|feels|felt|motivates|inspires|reminds|matters"
    r"|sounds|seems|looks|works|needs|requires|shows|teaches|allows|lets|creates|builds|pays"
    r"|comes|goes|gets|puts|does|did|changes|costs|leads|became|becomes|isn't|wasn't)\b"
)
_PLURAL_VERBS = words("""love like enjoy want need go live work make think get""")
_PREDICATE_START = words(
    """is was are were 's has have had loves love likes like lives works moved got just
    always never will would can could does did doesn't didn't isn't wasn't"""
)


@dataclass(frozen=True)
class Subject:
    """The clause's subject, and the predicate that follows it (in the speaker's words)."""

    kind: SubjectKind
    name: str  # the entity the facts are about
    predicate: str
    text: str  # the clause to rewrite into the fact sentence
    kin: str | None = None  # "sister" for "my sister Anna ..."
    kin_name: str | None = None


def _lead_ok(lead: str) -> bool:
    lead = lead.strip()
    if not lead:
        return True
    if lead.endswith(","):
        return len(lead) <= 60
    words = lead.split()
    if words[-1].lower() == "and" and len(words) <= 8:
        return True  # "Some friends from church and I went ..."
    return len(words) <= 5 and all(
        w.lower().strip(",") in _LEAD_WORDS or w[:1].isupper() or w[:1].isdigit() for w in words
    )


def _speaker(clause: str, speaker: str) -> Subject | None:
    m = _FIRST.search(clause)
    if m and m.start() <= 60 and _lead_ok(clause[: m.start()]):
        pred = clause[m.end() :].strip()
        prefix = _EXPAND.get(m.group(0), "")
        return Subject("speaker", speaker, f"{prefix} {pred}".strip(), clause)
    words = clause.split()
    j = 0
    while j < len(words) - 1 and words[j].lower() in ADVERBS:
        j += 1
    if not words or len(words) < 3:
        return None
    first = words[j].lower().strip(",.!")
    text = clause[0].lower() + clause[1:]
    if first in _IMPLICIT_ADJECTIVES and not words[j].endswith(","):
        return Subject("speaker", speaker, "am " + " ".join(words), f"I'm {text}")
    if first in _ING_ADJECTIVES:
        return None
    if first.endswith("ing") and _FINITE.match(" ".join(words[j + 1 : j + 9])):
        return None  # a gerund subject: "Losing my job was tough"
    if first == "been":
        return Subject("speaker", speaker, " ".join(words), f"I've {text}")
    nxt = words[j + 1].lower() if j + 1 < len(words) else ""
    verb_next = nxt in _PREDICATE_START or nxt.endswith("ed")
    if first.endswith("ing") and nxt.endswith("s") and not nxt.endswith("ss"):
        verb_next = True  # "Painting looks great": a gerund subject
    if first in ("gonna", "going") or (
        first.endswith("ing") and len(first) > 4 and not words[j].endswith(",") and not verb_next
    ):
        return Subject("speaker", speaker, "am " + " ".join(words), f"I'm {text}")
    if (
        first in IRREGULAR_PAST
        or first in _IMPLICIT_PRESENT
        or (first.endswith("ed") and len(first) > 4 and not words[j].endswith(","))
    ) and not verb_next:
        return Subject("speaker", speaker, " ".join(words), f"I {text}")
    return None


def _kin(clause: str, speaker: str, mentions: Sequence[Mention]) -> Subject | None:
    m = re.match(r"^(?:My|Our)\s+", clause)
    if not m:
        return None
    words = clause[m.end() :].split()
    for k in range(1, min(5, len(words))):
        head = words[k - 1]
        nxt = words[k].lower()
        verb = nxt in _PREDICATE_START or nxt in IRREGULAR_PAST or nxt.endswith("ed")
        if (head.endswith("'s") and k == 1) or verb or nxt in _PLURAL_VERBS:
            noun_words = words[:k]
            pred = " ".join(words[k:])
            if head.endswith("'s"):
                noun_words[-1] = head[:-2]
                pred = "is " + pred
            noun = " ".join(noun_words).strip(",")
            kin_word = noun_words[0].lower().strip(",")
            if kin_word == "name":
                return None  # "My name is Dana": a NAMED fact of its own
            named = next((x.name for x in mentions if x.label == "person" and x.name in noun), None)
            if kin_word in FAMILY and named:
                return Subject("kin", named, pred, clause, kin_word, named)
            return Subject("kin", f"{speaker}'s {noun}", pred, clause, kin_word, None)
    return None


def find_subject(clause: str, speaker: str, mentions: Sequence[Mention]) -> Subject | None:
    """The subject of a statement clause, or None when it is about nobody in particular."""
    found = _speaker(clause, speaker) or _kin(clause, speaker, mentions)
    if found:
        return found
    m = _WE.match(clause)
    if m and _lead_ok(m.group("lead")):
        pred = f"{_WE_EXPAND[m.group('c')]} {m.group('pred')}".strip()
        return Subject("group", speaker, pred, clause)
    for x in mentions:
        if x.start == 0 and x.label in ("person", "organization") and x.name != speaker:
            rest = clause[x.end :].lstrip()
            if rest.startswith("'s "):
                continue
            return Subject("named", x.name, rest, clause)
    return None
