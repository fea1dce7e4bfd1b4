"""Find sensitive values in text, replace them with type markers, and classify the text.

>>> redacted, spans, level = redact("mail bob@example.com")
>>> redacted, level.label
('mail [EMAIL]', 'pii')
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from engram.config import CryptoSettings
from engram.crypto.detectors import DETECTORS, Detector
from engram.crypto.sensitivity import Sensitivity, combine, from_metadata
from engram.errors import ConfigError

__all__ = ["DETECTOR_KINDS", "Classifier", "Redaction", "Span", "detect", "redact"]

DETECTOR_KINDS: frozenset[str] = frozenset(d.kind for d in DETECTORS)
_DIGIT = re.compile(r"\d")  # what the detectors' patterns take for a digit


@dataclass(frozen=True, slots=True)
class Span:
    """A sensitive value at text[start:end]."""

    start: int
    end: int
    kind: str
    sensitivity: Sensitivity

    @property
    def marker(self) -> str:
        return f"[{self.kind.upper()}]"


class Redaction(NamedTuple):
    """The text with every span replaced by its marker, the spans, and the text's class."""

    text: str
    spans: tuple[Span, ...]
    sensitivity: Sensitivity


def _enabled(disabled: Collection[str]) -> tuple[Detector, ...]:
    return _enabled_set(frozenset(disabled))


@functools.lru_cache(maxsize=64)
def _enabled_set(disabled: frozenset[str]) -> tuple[Detector, ...]:
    unknown = disabled - DETECTOR_KINDS
    if unknown:
        raise ConfigError(
            f"unknown detector(s): {', '.join(sorted(unknown))}",
            hint=f"choose from {', '.join(sorted(DETECTOR_KINDS))}",
        )
    return tuple(d for d in DETECTORS if d.kind not in disabled)


def detect(text: str, *, disabled: Collection[str] = ()) -> list[Span]:
    """Every sensitive value in `text`, in order; overlaps go to the higher priority."""
    found: list[tuple[int, int, int, Detector]] = []
    digits = -1  # counted when a detector first asks
    for detector in _enabled(disabled):
        if detector.min_digits:
            if digits < 0:
                digits = len(_DIGIT.findall(text))
            if digits < detector.min_digits:
                continue
        if detector.needs is not None and detector.needs.search(text) is None:
            continue
        for start, end in detector.find(text):
            if end > start:
                found.append((detector.priority, end - start, start, detector))
    found.sort(key=lambda f: (-f[0], -f[1], f[2]))
    taken: list[Span] = []
    for _, length, start, detector in found:
        end = start + length
        if all(end <= s.start or start >= s.end for s in taken):
            taken.append(Span(start, end, detector.kind, detector.sensitivity))
    return sorted(taken, key=lambda s: s.start)


def redact(text: str, *, disabled: Collection[str] = ()) -> Redaction:
    """`text` with each detected value replaced by a marker such as ``[EMAIL]``."""
    spans = detect(text, disabled=disabled)
    parts: list[str] = []
    at = 0
    for span in spans:
        parts += [text[at : span.start], span.marker]
        at = span.end
    parts.append(text[at:])
    return Redaction("".join(parts), tuple(spans), combine(s.sensitivity for s in spans))


@dataclass(frozen=True)
class Classifier:
    """Classification as configured: detectors on, the floor, and which classes to protect."""

    disabled: frozenset[str] = frozenset()
    floor: Sensitivity = Sensitivity.NONE
    protect: frozenset[Sensitivity] = frozenset(
        {Sensitivity.PII, Sensitivity.PHI, Sensitivity.SECRET}
    )

    @classmethod
    def from_settings(cls, settings: CryptoSettings) -> Classifier:
        _enabled(settings.disabled_detectors)  # refuse unknown names at start-up
        return cls(
            disabled=frozenset(settings.disabled_detectors),
            floor=Sensitivity.parse(settings.floor),
            protect=frozenset(Sensitivity.parse(p) for p in settings.protect),
        )

    def classify(
        self,
        text: str,
        *,
        metadata: Mapping[str, object] | None = None,
        policy: Sensitivity = Sensitivity.NONE,
    ) -> Redaction:
        """Redact `text`; its class is the highest of detection, metadata, policy and floor."""
        redacted = redact(text, disabled=self.disabled)
        level = combine(redacted.sensitivity, from_metadata(metadata), policy, self.floor)
        return redacted._replace(sensitivity=level)

    def protects(self, level: Sensitivity) -> bool:
        """True when a field of this class must be stored only as ciphertext."""
        return level in self.protect
