"""Relation patterns: the predicate of a clause ("moved to Lisbon") to a relation and object."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import takewhile

from engram.extract.lexicon import ADVERBS, FAMILY, IRREGULAR_PAST, VAGUE_OBJECTS, words
from engram.extract.perspective import third_person_verb
from engram.extract.types import EntityLabel

__all__ = ["Relation", "noun_phrase", "relate", "topic"]

_WORD = re.compile(r"[A-Za-z0-9][\w'&-]*|[^\w\s]")
_AUX = words(
    """have has had 've 'd am is are was were been be being will 'll would shall 'm 's 're
    can could should might must may gonna wanna gotta going"""
)
_COGNITION = words(
    """agree think know believe feel hope realize realise guess bet figure imagine wonder
    remember understand mean suppose reckon"""
)
_PRONOUNS = words("""it that this she he they there which who""")
_PARTICLES = frozenset(["up", "out", "off", "down", "back", "over", "away", "forward"])
_GERUND_PREPS = words("""into to with in on at for around about out up""")
_NEGATIONS = words(
    """not never n't don't didn't doesn't haven't hasn't hadn't won't wouldn't can't cannot
    couldn't isn't aren't wasn't weren't shouldn't no longer"""
)
_DETERMINERS = words(
    """a an the my our your his her their its some this that these those any every another
    all more several many few lots lot of each such new"""
)
_STOP = words(
    """and but or so because since as which that who whom whose when while with at in on for
    to from by about into after before during than though although if until like over
    under through it yesterday today tonight tomorrow last this next ago recently lately
    again too now then here there really just very also even still always is are was were
    am be been being has have had will would can could and, it's these those i you he she
    we they me him them us you're we're they're that's there's i'm here's what's she's
    he's i've i'd i'll we've we'll we'd you've you'll you'd they've what"""
) | frozenset(["!", ".", ",", ";", ":", "?", "(", ")", '"', "-", "'s", "'re"])
_PREPS = words("""at in to for with on from about into of as by""")
_EXCLUSIVE = frozenset({"LIVES_IN", "WORKS_AT", "WORKS_AS", "MARRIED_TO", "ENGAGED_TO",
                        "DATING", "AGE", "NAMED", "STUDIES_AT"})  # fmt: skip
_OBJECT_LABEL: dict[str, EntityLabel] = {
    "LIVES_IN": "place", "WENT_TO": "place", "VISITED": "place", "TRAVELED_TO": "place",
    "GREW_UP_IN": "place", "FROM": "place", "WORKS_AT": "organization",
    "STUDIES_AT": "organization", "GRADUATED_FROM": "organization", "JOINED": "organization",
    "MARRIED_TO": "person", "ENGAGED_TO": "person", "DATING": "person", "BOUGHT": "product",
}  # fmt: skip
# lemma -> {first word after the verb (or "" for none): relation}
_VERBS: dict[str, dict[str, str]] = {
    "live": {"in": "LIVES_IN", "with": "LIVES_WITH"},
    "move": {"to": "LIVES_IN", "into": "LIVES_IN", "back": "LIVES_IN", "in": "LIVES_WITH"},
    "relocate": {"to": "LIVES_IN"},
    "work": {"at": "WORKS_AT", "for": "WORKS_AT", "as": "WORKS_AS", "on": "WORKS_ON"},
    "marry": {"": "MARRIED_TO"},
    "love": {"": "LIKES"}, "like": {"": "LIKES"}, "enjoy": {"": "LIKES"},
    "adore": {"": "LIKES"}, "prefer": {"": "LIKES"},
    "hate": {"": "DISLIKES"}, "dislike": {"": "DISLIKES"}, "detest": {"": "DISLIKES"},
    "plan": {"": "PLANS_TO"}, "intend": {"": "PLANS_TO"}, "aim": {"": "PLANS_TO"},
    "want": {"": "WANTS_TO"}, "hope": {"": "WANTS_TO"}, "wish": {"": "WANTS_TO"},
    "dream": {"": "WANTS_TO"},
    "go": {"to": "WENT_TO", "back": "WENT_TO", "": "DID"},
    "visit": {"": "VISITED"}, "travel": {"to": "TRAVELED_TO"}, "fly": {"to": "TRAVELED_TO"},
    "drive": {"to": "TRAVELED_TO"}, "head": {"to": "TRAVELED_TO"},
    "join": {"": "JOINED"}, "enroll": {"in": "JOINED"}, "sign": {"up": "JOINED"},
    "start": {"": "STARTED"}, "begin": {"": "STARTED"}, "launch": {"": "STARTED"},
    "finish": {"": "FINISHED"}, "complete": {"": "FINISHED"},
    "graduate": {"from": "GRADUATED_FROM", "": "GRADUATED"},
    "buy": {"": "BOUGHT"}, "purchase": {"": "BOUGHT"},
    "have": {"": "HAS"}, "own": {"": "HAS"}, "adopt": {"": "ADOPTED"},
    "study": {"at": "STUDIES_AT", "": "STUDIES"}, "major": {"in": "STUDIES"},
    "grow": {"up": "GREW_UP_IN"}, "name": {"": "NAMED"},
    "date": {"": "DATING"},
    "look": {"forward": "LOOKS_FORWARD_TO"}, "feel": {"": "FEELS"},
}  # fmt: skip
_COPULA_PHRASES = {
    "married to": "MARRIED_TO", "engaged to": "ENGAGED_TO", "from": "FROM",
    "into": "LIKES", "a fan of": "LIKES", "a big fan of": "LIKES", "a huge fan of": "LIKES",
    "fond of": "LIKES", "obsessed with": "LIKES", "crazy about": "LIKES",
    "keen on": "INTERESTED_IN", "interested in": "INTERESTED_IN",
    "passionate about": "INTERESTED_IN", "planning": "PLANS_TO", "going to": "PLANS_TO",
    "gonna": "PLANS_TO", "about to": "PLANS_TO", "thinking about": "PLANS_TO",
    "thinking of": "PLANS_TO", "hoping to": "WANTS_TO", "looking forward to": "LOOKS_FORWARD_TO",
    "working at": "WORKS_AT", "working for": "WORKS_AT", "working as": "WORKS_AS",
    "living in": "LIVES_IN", "moving to": "LIVES_IN", "studying at": "STUDIES_AT",
    "dating": "DATING", "a member of": "JOINED", "part of": "MEMBER_OF",
}  # fmt: skip
_COPULA_RE = re.compile(
    r"^(?:" + "|".join(sorted(map(re.escape, _COPULA_PHRASES), key=len, reverse=True)) + r")\b"
)


@dataclass(frozen=True)
class Relation:
    """What the predicate says: the relation, its object and whether it is exclusive."""

    name: str
    object: str
    exclusive: bool
    object_label: EntityLabel
    negated: bool = False


def _lemma(word: str) -> str:
    low = word.lower()
    if low in IRREGULAR_PAST:
        return IRREGULAR_PAST[low]
    if low in _VERBS:
        return low
    cands: list[str] = []
    if low.endswith("ies"):
        cands.append(low[:-3] + "y")
    if low.endswith("ied"):
        cands.append(low[:-3] + "y")
    if low.endswith(("es", "ed")):
        cands += [low[:-2], low[:-1]]
    if low.endswith("s"):
        cands.append(low[:-1])
    if low.endswith("ing"):
        cands += [low[:-3], low[:-3] + "e", low[:-4]]
    if low.endswith("ed") and len(low) > 4 and low[-3] == low[-4]:
        cands.append(low[:-3])
    return next((c for c in cands if c in _VERBS), low)


def noun_phrase(words: list[str], limit: int = 6) -> str:
    """The noun phrase at the start of words, without determiners: "LGBTQ support group"."""
    i = 0
    while i < len(words) and (words[i].lower() in _DETERMINERS or words[i].lower() in ADVERBS):
        i += 1
    out: list[str] = []
    rest = words[i:]
    for k, w in enumerate(rest):
        low = w.lower()
        if w == '"' and out and out[-1].lower() in ("called", "named", "titled"):
            title = list(takewhile(lambda x: x != '"', rest[k + 1 :]))
            out.append('"' + " ".join(title) + '"')
            break
        if len(out) == 1 and out[0].lower().endswith("ing") and low in _GERUND_PREPS:
            out.append(w)
            continue
        if low == "of" and out and len(out) < limit - 1:
            out.append(w)
            continue
        if low in _STOP or not (w[:1].isalnum()):
            break
        if low.endswith("'s") and low not in ("let's", "it's"):
            out.append(w[:-2])  # "Painting's a fun way": the noun, then a verb or a genitive
            break
        if out and out[-1].lower() == "of" and low in _DETERMINERS:
            continue
        out.append(w)
        if len(out) >= limit:
            break
    while out and out[-1].lower() in ("of", "'s"):
        out.pop()
    return " ".join(out)


def _verb_phrase(words: list[str], limit: int = 8) -> str:
    out: list[str] = []
    for w in words:
        if not w[:1].isalnum() or (out and w.lower() in ("because", "but", "so", "which", "since")):
            break
        out.append(w)
        if len(out) >= limit:
            break
    return " ".join(out)


def _finish(name: str, obj: str, negated: bool) -> Relation | None:
    if not obj or obj.lower() in VAGUE_OBJECTS or all(w in VAGUE_OBJECTS for w in obj.split()):
        return None
    if negated and name in ("LIKES", "INTERESTED_IN"):
        name, negated = "DISLIKES", False
    elif negated:
        name = "NOT_" + name
    return Relation(name, obj, name in _EXCLUSIVE, _OBJECT_LABEL.get(name, "concept"), negated)


def _copula(rest: list[str], negated: bool) -> Relation | None:
    text = " ".join(rest).lower()
    m = _COPULA_RE.match(text)
    if m:
        name = _COPULA_PHRASES[m.group(0)]
        tail = rest[len(m.group(0).split()) :]
        if name in ("PLANS_TO", "WANTS_TO") and tail and tail[0].lower() == "to":
            return _finish(name, _verb_phrase(tail[1:]), negated)
        if name in ("PLANS_TO", "WANTS_TO"):
            return _finish(name, _verb_phrase(tail), negated)
        return _finish(name, noun_phrase(tail), negated)
    if re.match(r"^\d+ (?:years?|yrs?) old\b", text):
        return _finish("AGE", rest[0], negated)
    if rest and rest[0].lower() in ("a", "an", "the"):
        phrase = noun_phrase(rest)
        if phrase.lower() in FAMILY or phrase.split()[-1:] == ["mom"]:
            return _finish("IS", phrase, negated)
        return _finish("IS", phrase, negated)
    if rest and rest[0].lower().endswith("ing"):
        return None  # a progressive: the caller reads the -ing verb
    adj = noun_phrase(rest, limit=1)
    if adj:
        k = len(adj.split())
        nxt = rest[k].lower() if len(rest) > k else ""
        if nxt in _PREPS and nxt not in ("at", "in", "on"):
            obj = noun_phrase(rest[k + 1 :])
            if obj and obj.lower() not in VAGUE_OBJECTS:
                rel = "_".join([*adj.upper().split(), nxt.upper()])
                return _finish(re.sub(r"[^A-Z_]", "", rel), obj, negated)
        return _finish("FEELS", adj, negated)
    return None


_CANT_WAIT = re.compile(r"^(?:\w+\s+)?(?:can't|cannot|can not|cant) wait (to|for) (.+)$", re.I)


_JOB = re.compile(
    r"^(?:\w+\s+)?(?:got|landed|accepted|started|took|have|has|'ve got)\s+(?:a\s+|an\s+|my\s+)?"
    r"(?:new\s+)?(?:job|position|role|internship)\s+(?:at|with|for)\s+(.+)$",
    re.I,
)


def _participle_follows(words: list[str], j: int) -> bool:
    while j < len(words) and (words[j].lower() in ADVERBS or words[j].lower() in _NEGATIONS):
        j += 1
    if j >= len(words):
        return False
    low = words[j].lower()
    return low in IRREGULAR_PAST or low.endswith(("ed", "en")) or low in ("to", "got")


def _split(words: list[str]) -> tuple[int, bool, bool, bool]:
    """Skip auxiliaries: the main verb's index, and whether negated, future, copular."""
    negated = future = copula = False
    i = 0
    while i < len(words):
        low = words[i].lower()
        nxt = words[i + 1].lower() if i + 1 < len(words) else ""
        if low in _NEGATIONS or low == "longer":
            negated = True
        elif low in ("do", "does", "did") and nxt in _NEGATIONS:
            pass
        elif low in ("have", "has", "had", "'ve") and not _participle_follows(words, i + 1):
            break  # "have a dog": the main verb
        elif low == "going" and nxt == "to":
            after = words[i + 2] if i + 2 < len(words) else ""
            if after.lower() in _DETERMINERS or after[:1].isupper():
                break  # "going to Paris": a trip, not a future tense
            future = True
            i += 1
        elif low in ("will", "'ll", "gonna"):
            future = True
        elif low in ("am", "is", "are", "was", "were", "been", "be", "'m", "'s", "'re"):
            copula = True
        elif low not in _AUX and low not in ADVERBS:
            break
        i += 1
    return i, negated, future, copula


def relate(predicate: str) -> Relation | None:
    """Read a predicate in any person ("am moving to Lisbon", "works at Acme")."""
    words = _WORD.findall(predicate.replace("\u2019", "'"))
    wait = _CANT_WAIT.match(predicate)
    if wait:  # "can't wait to see it": looking forward, not a negation
        tail = _WORD.findall(wait.group(2))
        obj = _verb_phrase(tail) if wait.group(1) == "to" else noun_phrase(tail)
        return _finish("LOOKS_FORWARD_TO", obj, False)
    job = _JOB.match(predicate)
    if job:
        return _finish("WORKS_AT", noun_phrase(_WORD.findall(job.group(1))), False)
    i, negated, future, copula = _split(words)
    if i >= len(words):
        return None
    verb, rest = words[i], words[i + 1 :]
    lemma = _lemma(verb)
    if copula and not future and lemma not in _VERBS and not verb.lower().endswith(("ing", "ed")):
        rel = _copula(words[i:], negated)
        if rel is not None:
            return rel
    first = rest[0].lower() if rest else ""
    table = _VERBS.get(lemma)
    name = table.get(first) or table.get("") if table is not None else None
    if table is not None and name is not None:
        if lemma in ("love", "like", "want", "hope", "plan", "wish") and first == "to":
            if lemma in ("love", "like") and words[:1] and words[0].lower() in ("'d", "would"):
                name = "WANTS_TO"
            return _finish(name, _verb_phrase(rest[1:]), negated)
        if lemma == "have" and first == "to":
            form = third_person_verb(verb).upper()
            return _finish(f"{form}_TO", _verb_phrase(rest[1:]), negated)
        if lemma == "go" and first.endswith("ing"):
            return _finish("DID", noun_phrase(rest, limit=1), negated)
        if lemma in ("have", "adopt") and rest:
            named = re.match(
                r"^(?:an?|two|three|some)?\s*(\w+) (?:named|called) ([A-Z]\w+)", " ".join(rest)
            )
            if named and named.group(1).lower() in FAMILY:
                return _finish(f"HAS_{FAMILY[named.group(1).lower()]}", named.group(2), negated)
        if future and name in ("WENT_TO", "TRAVELED_TO", "VISITED", "LIVES_IN"):
            return _finish("PLANS_TO", _verb_phrase([verb, *rest]), negated)
        k = 1 if first in table and first else 0
        while k < len(rest) and (rest[k].lower() in _PARTICLES or rest[k].lower() in _PREPS):
            k += 1
        return _finish(name, noun_phrase(rest[k:]), negated)
    if future:
        return _finish("PLANS_TO", _verb_phrase([verb, *rest]), negated)
    return _generic(verb, rest, negated)


def _generic(verb: str, rest: list[str], negated: bool) -> Relation | None:
    """The verb itself (with its particle and preposition) is the relation."""
    if not verb[:1].isalpha() or verb.lower() in _STOP or verb.lower() in _DETERMINERS:
        return None
    if verb.lower() in _COGNITION or (rest and rest[0].lower() == "that"):
        obj = topic(" ".join(rest))
        return _finish(third_person_verb(verb).upper(), obj, negated) if obj else None
    parts = [third_person_verb(verb).upper()]
    k = 0
    while k < len(rest) and k < 2 and rest[k].lower() in (_PARTICLES | _PREPS):
        parts.append(rest[k].upper())
        k += 1
    obj = noun_phrase(rest[k:])
    if not obj:
        parts = parts[:1]
        obj = noun_phrase(rest)
    if not obj:
        return None
    return _finish(re.sub(r"[^A-Z_]", "", "_".join(parts)), obj, negated)


def topic(text: str) -> str:
    """The first noun phrase of a clause that is no pronoun: what the clause is about."""
    words = _WORD.findall(text.replace("\u2019", "'"))
    for k, w in enumerate(words):
        low = w.lower()
        if low in _STOP or low in _DETERMINERS or low in ADVERBS or low in _AUX:
            continue
        if k and words[k - 1].lower() in _PRONOUNS:
            continue  # "It reminds me": after a pronoun comes its verb
        if not w[:1].isalnum() or low in VAGUE_OBJECTS:
            continue
        phrase = noun_phrase(words[k:])
        if phrase and phrase.lower() not in VAGUE_OBJECTS:
            return phrase
    return ""
