"""Rewrite first-person (and second-person) English into third person about named people."""

from __future__ import annotations

import re

from engram.extract.lexicon import ADVERBS, IRREGULAR_PAST, words

__all__ = ["third_person", "third_person_verb"]

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)*|\s+|[^\w\s]")
_MODALS = words(
    """can could will would should might must may shall can't couldn't won't wouldn't
    shouldn't mightn't mustn't need't cannot"""
)
_THIRD = {
    "am": "is", "are": "is", "'m": "is", "have": "has", "do": "does", "don't": "doesn't",
    "haven't": "hasn't", "aren't": "isn't", "am not": "isn't", "were": "was",
    "weren't": "wasn't", "go": "goes", "ain't": "isn't",
}  # fmt: skip
_NOT_VERBS = words("""and or but, to the a an not n't too also as if that who which when""")
# After these a "you" starts a new clause ("I know you love it"), so it is a subject.
_SUBJECT_CUES = words(
    """that and but so if when because know knows think thinks hope hopes bet bets guess
    guesses since as while how what why where"""
)
# After these "you" is the subject even with no cue before it ("how brave you are").
_VERBS_AFTER_YOU = words(
    """are were have do don't need want know love like think deserve seem look feel mean make
    get always really definitely totally"""
)
_CONTRACTIONS = {
    "i'm": ("I", "is"), "i've": ("I", "has"), "i'll": ("I", "will"), "i'd": ("I", "would"),
    "you're": ("you", "is"), "you've": ("you", "has"), "you'll": ("you", "will"),
    "you'd": ("you", "would"), "we're": ("we", "are"), "we've": ("we", "have"),
    "we'll": ("we", "will"), "we'd": ("we", "would"),
}  # fmt: skip


def third_person_verb(verb: str) -> str:
    """The third-person singular present of an English verb given in the first person."""
    low = verb.lower()
    if low in _THIRD:
        out = _THIRD[low]
    elif (
        low in _MODALS
        or low in IRREGULAR_PAST
        or (low.endswith("ed") and not low.endswith("eed"))
        or low.endswith(("ing", "n't"))
        or not low.isalpha()
        or low in _NOT_VERBS
    ):
        return verb
    elif low.endswith("y") and len(low) > 2 and low[-2] not in "aeiou":
        out = low[:-1] + "ies"
    elif low.endswith(("s", "sh", "ch", "x", "z", "o")):
        out = low + "es"
    else:
        out = low + "s"
    return out.capitalize() if verb[:1].isupper() else out


def _next_word(tokens: list[str], i: int) -> int:
    j = i + 1
    while j < len(tokens) and tokens[j].isspace():
        j += 1
    return j


def _conjugate_after(tokens: list[str], i: int) -> None:
    """Conjugate the verb that follows a subject at tokens[i], skipping adverbs."""
    j = _next_word(tokens, i)
    while j < len(tokens) and tokens[j].lower() in ADVERBS:
        j = _next_word(tokens, j)
    if j < len(tokens) and tokens[j][:1].isalpha():
        if tokens[j].lower() == "was":
            return
        tokens[j] = third_person_verb(tokens[j])


def _prev_word(tokens: list[str], i: int) -> str:
    j = i - 1
    while j >= 0 and tokens[j].isspace():
        j -= 1
    return tokens[j].lower() if j >= 0 else ""


def third_person(text: str, name: str, other: str | None = None, we: str | None = None) -> str:
    """Rewrite text said by `name` (to `other`) so that it reads in the third person."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    tokens = _TOKEN.findall(text)
    we_subject = we or f"{name} and others"
    named = False  # once the name is written, "my" becomes "their"
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        low = tok.lower()
        cap = i == 0 or _prev_word(tokens, i) in (".", "!", ";", ":")
        if low in _CONTRACTIONS:
            who, verb = _CONTRACTIONS[low]
            if who == "you" and other is None:
                i += 1
                continue
            if low == "i'd":
                j = _next_word(tokens, i)
                if j < len(tokens) and (tokens[j] == "been" or tokens[j].endswith("ed")):
                    verb = "had"
            subject = {"I": name, "you": other or "you", "we": we_subject}[who]
            tokens[i] = f"{subject} {verb}"
            named = named or who == "I"
        elif tok == "I":
            plural = _prev_word(tokens, i) == "and"
            tokens[i] = name
            named = True
            if not plural:
                _conjugate_after(tokens, i)
        elif low == "me":
            tokens[i] = "them" if named else name
            named = True
        elif low in ("myself", "ourselves"):
            tokens[i] = "themselves"
        elif low in ("my", "our"):
            tokens[i] = "their" if named else f"{name}'s"
            named = True
        elif low in ("mine", "ours"):
            tokens[i] = "theirs"
        elif low == "we":
            tokens[i] = we_subject
            named = True
        elif low == "us":
            tokens[i] = "them"
        elif other is not None and low in ("you", "ya", "u"):
            j = _next_word(tokens, i)
            nxt = tokens[j].lower() if j < len(tokens) else ""
            if nxt in ("guys", "two"):
                del tokens[i + 1 : j + 1]  # "you guys" is the listener (and theirs)
                nxt = ""
            tokens[i] = other
            if _prev_word(tokens, i) in _SUBJECT_CUES or i == 0 or nxt in _VERBS_AFTER_YOU:
                _conjugate_after(tokens, i)
        elif other is not None and low in ("your", "yours", "ur"):
            tokens[i] = f"{other}'s"
        elif other is not None and low == "yourself":
            tokens[i] = other
        else:
            i += 1
            continue
        if cap:
            tokens[i] = tokens[i][:1].upper() + tokens[i][1:]
        i += 1
    return "".join(tokens)
