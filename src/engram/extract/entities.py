"""Named entities: capitalised spans in a text, labelled by gazetteers and cue words."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from engram.extract.lexicon import (
    CITIES,
    CONTINENTS_REGIONS,
    COUNTRIES,
    EVENT_WORDS,
    FAMILY,
    NOT_NAMES,
    ORG_SUFFIXES,
    PLACE_WORDS,
    PRODUCTS,
)
from engram.extract.types import EntityLabel

__all__ = ["Mention", "find_entities", "label_of"]

_TOKEN = re.compile(r"[A-Za-z0-9][\w'&.-]*[\w&]|[A-Za-z0-9]|[^\w\s]")
_CONNECTORS = frozenset({"of", "the", "de", "du", "da", "van", "von", "and", "&", "for", "on"})
_SENTENCE_END = frozenset({".", "!", "?", ":", ";", '"', "(", "-", "\u2014"})
_PLACE_CUES = frozenset({"in", "from", "near", "around", "across", "visiting", "visited", "to"})
_NAME_CUES = frozenset({"named", "called", "name", "meet", "met", "with", "and"})


@dataclass(frozen=True)
class Mention:
    """A named entity found at text[start:end]."""

    start: int
    end: int
    name: str
    label: EntityLabel


def _is_cap(tok: str) -> bool:
    return tok[:1].isupper() and tok.lower() not in NOT_NAMES


def label_of(name: str, before: str = "", people: Collection[str] = ()) -> EntityLabel:
    """Best guess at what kind of thing a capitalised name is."""
    low = name.lower()
    words = low.split()
    last = words[-1] if words else ""
    if name in people or any(p.startswith(name) and len(name) >= 3 for p in people):
        return "person"
    if low in COUNTRIES or low in CITIES or low in CONTINENTS_REGIONS:
        return "place"
    if last in ORG_SUFFIXES:
        return "organization"
    if last in PLACE_WORDS:
        return "place"
    if any(w in EVENT_WORDS for w in words):
        return "event"
    if low in PRODUCTS or (words and words[0] in PRODUCTS):
        return "product"
    if before in FAMILY or before in _NAME_CUES:
        return "person"
    if before in _PLACE_CUES:
        return "place"
    if before == "at":
        return "organization"
    if name.isupper() and len(name) > 1:
        return "other"
    if len(words) <= 2 and all(w[:1].isupper() for w in name.split()):
        return "person"
    return "other"


def find_entities(text: str, people: Collection[str] = ()) -> list[Mention]:
    """Capitalised spans that name something, with a label for each."""
    toks = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    # A capitalised word elsewhere than at a sentence start is taken as a name everywhere.
    mid_caps: set[str] = set()
    for k, (tok, _, _) in enumerate(toks):
        if k and toks[k - 1][0] not in _SENTENCE_END and _is_cap(tok):
            mid_caps.add(tok)
    out: list[Mention] = []
    k = 0
    while k < len(toks):
        tok = toks[k][0]
        if not _is_cap(tok) or not tok[:1].isalpha():
            k += 1
            continue
        span = [k]
        j = k + 1
        while j < len(toks):
            nxt = toks[j][0]
            if _is_cap(nxt) and nxt[:1].isalpha():
                span.append(j)
                j += 1
            elif (
                nxt.lower() in _CONNECTORS
                and j + 1 < len(toks)
                and _is_cap(toks[j + 1][0])
                and toks[j + 1][0][:1].isalpha()
            ):
                span.extend((j, j + 1))
                j += 2
            else:
                break
        k = j
        initial = span[0] == 0 or toks[span[0] - 1][0] in _SENTENCE_END
        name_toks = [toks[i][0] for i in span]
        while initial and len(name_toks) > 1 and name_toks[0].lower() in _CONNECTORS:
            name_toks.pop(0)
        first = name_toks[0]
        if initial and len(name_toks) == 1:
            low = first.lower()
            known = (
                first in mid_caps
                or any(p == first or (p.startswith(first) and len(first) >= 3) for p in people)
                or low in COUNTRIES
                or low in CITIES
                or low in PRODUCTS
            )
            if not known:
                continue
        name = " ".join(name_toks)
        if name.endswith("'s"):
            name = name[:-2]
        s_idx = span[0]
        before = toks[s_idx - 1][0].lower() if s_idx else ""
        begin = toks[span[0]][1]
        out.append(Mention(begin, begin + len(name), name, label_of(name, before, people)))
    return out
