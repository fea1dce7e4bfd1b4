"""Realistic chat messages for the scale benchmark, composed from LoCoMo sentences.

Parts: every sentence of the LoCoMo turns and observations of 3 to 30 words becomes a
template: whole-word occurrences of the speakers' names (and nicknames), of the places
they mention, of weekdays and months, of numbers and of a few interchangeable nouns
(hobbies, pets, family, outings, food, instruments, sports) become slots. A template with
slots yields up to ``variants`` distinct parts, each with its slots filled from the
lists below (179 first names, 130 places, ...), drawn with a fixed seed; a template
without slots is one part. Every distinct part is embedded once with the real local
embedder.

Messages: message ``i`` joins 2 or 3 different parts (even odds), redrawn until it has
15 to 40 words, from a generator seeded with ``(seed, i // CHUNK)``: the first N messages
are the same whatever the total, so 10k is a prefix of 100k and of 1M. Its vector is
either ``mix``: the sum of its parts' real embeddings weighted by their word counts
(mean pooling weighs every token alike), plus Gaussian noise of ``noise`` per
component, renormalised; or ``real``: the real embedding of the whole message text,
cached on disk (computed once, resumable).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import locomo_observations, locomo_sessions

VERSION = 1  # bump when the generation changes, so that cached vectors are recomputed
CHUNK = 10_000  # messages per generator seed
MIN_WORDS, MAX_WORDS = 15, 40


def _words(text: str) -> list[str]:
    return text.replace("_", " ").split()  # "_" joins the words of one entry


NAMES = _words(
    """Aaliyah Aarav Abdul Ada Adriana Ahmed Aiden Aisha Akira Alejandro Alex Alice Amara
    Amelia Amir Ana Andre Andrea Anika Anna Antonio Arjun Astrid Aurora Ava Beatriz Ben Bianca
    Blake Bruno Camila Carlos Carmen Charlotte Chen Chloe Chidi Clara Daniel Dario Deepa Diego
    Dmitri Elena Eli Elif Elijah Emeka Emil Emma Erik Esther Ethan Eva Fatima Felix Fernando
    Fiona Freya Gabriel Grace Hana Hannah Hassan Hector Helena Henry Hiro Ibrahim Ingrid Isaac
    Isabel Ivan Jack Jada James Jamal Javier Jin Jonas Jorge Jose Julia Julian Kai Kamala Karim
    Kate Keanu Kenji Kwame Lara Laura Leila Leo Liam Lina Lucas Lucia Luis Luka Maeve Malik Mara
    Marco Marta Mateo Maya Mei Mia Miguel Mila Min Mohammed Nadia Naomi Nia Nikhil Nina Noah Nora
    Olga Oliver Omar Oscar Paolo Pedro Priya Rafael Rahul Rania Ravi Rosa Ruby Ryan Sakura Salma
    Samir Sara Sebastian Sienna Sofia Soren Stella Sunil Tariq Tess Theo Tomas Uma Valentina
    Victor Vikram Wei Willa Xavier Yara Yusuf Zara Zoe Zainab Aleksander Bongani Chiara Dalia
    Farid Gwen Ilse Joaquin Kofi Lorenzo Magnus Nikolai Odette Pavel Quinn Rohan Selin Thandiwe"""
)
PLACES = _words(
    """Amsterdam Athens Auckland Austin Baltimore Bangkok Barcelona Berlin Bogota Boston
    Brisbane Bristol Brussels Budapest Cairo Calgary Cape_Town Chicago Copenhagen Dallas Delhi
    Denver Detroit Dublin Edinburgh Florence Glasgow Hamburg Havana Helsinki Hong_Kong Honolulu
    Houston Istanbul Jakarta Kyoto Lagos Lima Lisbon Liverpool London Los_Angeles Lyon Madrid
    Manchester Manila Marseille Melbourne Memphis Mexico_City Miami Milan Montreal Mumbai Munich
    Nairobi Naples Nashville New_Orleans Oslo Ottawa Paris Perth Philadelphia Phoenix Portland
    Porto Prague Quebec Reykjavik Rome San_Diego Santiago Seattle Seoul Seville Shanghai
    Singapore Stockholm Sydney Taipei Tokyo Toronto Valencia Vancouver Venice Vienna Warsaw
    Zurich Alaska Arizona Bali Brazil California Canada Chile Colorado Croatia Egypt England
    Florida France Greece Iceland India Ireland Italy Japan Kenya Mexico Michigan Minnesota
    Morocco Nepal Norway Oregon Peru Portugal Scotland Spain Sweden Texas Thailand Vietnam Wales"""
)
# What LoCoMo's speakers are called, and the places they mention: these become slots.
LOCOMO_NAMES = _words("Caroline Melanie Mel Mell Caro Maria Jon John Gina Tim Joanna Jo Nate")
LOCOMO_PLACES = _words(
    """London England California Paris Rome Seattle Chicago Spain Oregon Florida Michigan
    Minnesota Tampa Scotland Edinburgh Italy Ireland Sweden Galway"""
)
WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
MONTHS = _words(
    "January February March April May June July August September October November December"
)
THINGS = {  # interchangeable lower-case words, each list swaps within itself
    "hobby": _words(
        """painting pottery camping hiking running yoga cooking baking dancing reading writing
        swimming cycling gardening photography knitting climbing surfing skating fishing
        sketching woodworking singing chess"""
    ),
    "pet": _words("dog cat puppy kitten turtle rabbit parrot hamster horse snake"),
    "pets": _words("dogs cats puppies kittens turtles rabbits parrots hamsters horses"),
    "family": _words(
        """mom dad sister brother son daughter wife husband grandma grandpa aunt uncle cousin
        niece nephew"""
    ),
    "outing": _words(
        """beach park museum concert festival restaurant lake mountains library market zoo
        stadium theater gallery"""
    ),
    "food": _words("pizza pasta cake cookies tacos sushi curry soup salad pancakes pie"),
    "music": _words("guitar violin piano drums flute cello ukulele saxophone"),
    "sport": _words("basketball soccer football tennis golf baseball volleyball hockey rugby"),
}
_SLOTS: dict[str, list[str]] = {
    "name": NAMES,
    "place": PLACES,
    "weekday": WEEKDAYS,
    "month": MONTHS,
    **THINGS,
}


def _slot_pattern() -> re.Pattern[str]:
    alts = [
        rf"(?P<name>\b(?:{'|'.join(LOCOMO_NAMES)})\b)",
        rf"(?P<place>\b(?:{'|'.join(LOCOMO_PLACES)})\b)",
        rf"(?P<weekday>\b(?:{'|'.join(WEEKDAYS)})\b)",
        rf"(?P<month>\b(?:{'|'.join(MONTHS)})\b)",
        r"(?P<number>\b\d{1,4}\b)",
        *(rf"(?P<{k}>\b(?:{'|'.join(v)})\b)" for k, v in THINGS.items()),
    ]
    return re.compile("|".join(alts))


def base_sentences() -> list[str]:
    """Distinct LoCoMo sentences (turns and observations) of 3 to 30 words, sorted."""
    texts = [t["text"] for s in locomo_sessions() for t in s] + locomo_observations()
    found = {
        s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if 3 <= len(s.split()) <= 30
    }
    return sorted(found)


def templates(sentences: list[str]) -> list[tuple[list[str], list[str]]]:
    """Each sentence as (literal pieces, slot kinds): pieces interleave with the slots."""
    pattern = _slot_pattern()
    out = []
    for s in sentences:
        pieces, kinds, at = [], [], 0
        for m in pattern.finditer(s):
            pieces.append(s[at : m.start()])
            kinds.append(str(m.lastgroup))
            at = m.end()
        pieces.append(s[at:])
        out.append((pieces, kinds))
    return out


def _fill(kind: str, rng: np.random.Generator) -> str:
    if kind == "number":  # small counts, ages and amounts, or years
        return str(int(rng.integers(1990, 2026) if rng.random() < 0.2 else rng.integers(1, 100)))
    choices = _SLOTS[kind]
    return choices[int(rng.integers(0, len(choices)))]


def fill(pieces: list[str], kinds: list[str], rng: np.random.Generator) -> str:
    """A template with each slot filled with a random word of its kind."""
    text = pieces[0]
    for kind, piece in zip(kinds, pieces[1:], strict=True):
        text += _fill(kind, rng) + piece
    return text


def build_parts(variants: int, seed: int) -> list[str]:
    """The distinct parts: every template, slots filled ``variants`` times where it has any."""
    rng = np.random.default_rng([seed, 0xA11])
    parts: dict[str, None] = {}
    for pieces, kinds in templates(base_sentences()):
        for _ in range(variants if kinds else 1):
            parts.setdefault(fill(pieces, kinds, rng))
    return list(parts)


class Corpus:
    """Messages composed of parts; ``rows(lo, hi)`` gives the part indices of a range."""

    def __init__(self, parts: list[str], seed: int) -> None:
        self.parts = parts
        self.seed = seed
        self.words = np.array([len(p.split()) for p in parts], dtype=np.int64)

    def key(self, embedder_id: str) -> str:
        """Identifies what the vectors of the messages depend on (for the on-disk cache)."""
        h = hashlib.sha256(f"{VERSION}|{self.seed}|{embedder_id}|".encode())
        for p in self.parts:
            h.update(p.encode() + b"\n")
        return h.hexdigest()[:16]

    def _chunk(self, c: int) -> np.ndarray:
        """Part indices (-1: none) of messages ``c * CHUNK`` .. ``(c + 1) * CHUNK - 1``."""
        rng = np.random.default_rng([self.seed, c])
        out = np.full((CHUNK, 3), -1, dtype=np.int64)
        todo = np.arange(CHUNK)
        while len(todo):
            n = len(todo)
            pick = rng.integers(0, len(self.parts), (n, 3))
            pick[rng.random(n) < 0.5, 2] = -1
            words = np.where(pick >= 0, self.words[pick], 0).sum(axis=1)
            distinct = (pick[:, 0] != pick[:, 1]) & (pick[:, 2] != pick[:, 0])
            distinct &= pick[:, 2] != pick[:, 1]
            ok = distinct & (words >= MIN_WORDS) & (words <= MAX_WORDS)
            out[todo[ok]] = pick[ok]
            todo = todo[~ok]
        return out

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Part indices, shape (hi - lo, 3), of messages lo .. hi - 1."""
        chunks = range(lo // CHUNK, (hi - 1) // CHUNK + 1)
        whole = np.vstack([self._chunk(c) for c in chunks])
        start = lo - chunks[0] * CHUNK
        return whole[start : start + hi - lo]

    def texts(self, rows: np.ndarray) -> list[str]:
        return [" ".join(self.parts[j] for j in r if j >= 0) for r in rows]

    def mix(
        self, rows: np.ndarray, part_vecs: np.ndarray, noise: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Word-count-weighted sum of the parts' vectors plus noise, unit length."""
        weights = np.where(rows >= 0, self.words[rows], 0).astype(np.float32)
        vecs = np.einsum("nk,nkd->nd", weights, part_vecs[np.maximum(rows, 0)])
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        if noise:
            vecs += rng.normal(0.0, noise, vecs.shape).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs.astype(np.float32)


def embed_cached(
    path: Path,
    n: int,
    texts: Callable[[int, int], list[str]],
    embed: Callable[[list[str]], np.ndarray],
    dims: int,
    batch: int = 2_000,
) -> np.ndarray:
    """Vectors of texts(0, n), kept in ``path`` (float32 rows) and its ``.done`` row count.

    Resumable: a killed run keeps what it embedded; a later one continues from there, and
    one with a larger ``n`` extends the file (the texts of a range never change).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    done_file = path.with_suffix(".done")
    done = int(done_file.read_text()) if done_file.exists() and path.exists() else 0
    rows = max(n, done)
    mode = "r+" if path.exists() and path.stat().st_size >= rows * dims * 4 else "w+"
    if mode == "w+" and path.exists():  # grow the file, keep the rows already done
        with path.open("ab") as f:
            f.truncate(rows * dims * 4)
        mode = "r+"
    store = np.memmap(path, dtype=np.float32, mode=mode, shape=(rows, dims))
    t, start = time.perf_counter(), done
    for lo in range(done, n, batch):
        hi = min(n, lo + batch)
        store[lo:hi] = embed(texts(lo, hi))
        store.flush()
        done_file.write_text(str(hi))
        rate = (hi - start) / (time.perf_counter() - t)
        print(f"  embedded {hi:,}/{n:,} texts ({rate:,.0f}/s)", end="\r", flush=True)
    if n > done:
        print()
    return np.asarray(store[:n])


def describe_parts(parts: list[str], variants: int) -> dict[str, Any]:
    words = [len(p.split()) for p in parts]
    return {
        "base_sentences": len(base_sentences()),
        "parts": len(parts),
        "variants_per_template": variants,
        "part_words_mean": round(float(np.mean(words)), 1),
    }
