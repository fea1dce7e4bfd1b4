"""Sensitivity classes, ordered: none < pii < phi < secret.

A field's class is the highest of what the caller said (metadata ``sensitivity``), what
the tenant's policy requires, and what the detectors found.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from enum import IntEnum

from engram.errors import ValidationError

__all__ = ["Sensitivity", "combine", "from_metadata", "stored_class"]

logger = logging.getLogger(__name__)


class Sensitivity(IntEnum):
    NONE = 0
    PII = 1  # personal data: contact details, identifiers, account numbers
    PHI = 2  # health data: medical record numbers, health-service ids
    SECRET = 3  # credentials: API keys, tokens, private keys, card numbers

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | Sensitivity) -> Sensitivity:
        """The class named by `value` ("none", "pii", "phi", "secret"; any case)."""
        if isinstance(value, Sensitivity):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValidationError(
                f"unknown sensitivity {value!r}",
                field="sensitivity",
                hint="use one of none, pii, phi, secret",
            ) from None


def combine(*levels: Sensitivity | Iterable[Sensitivity]) -> Sensitivity:
    """The highest of the given classes (NONE when there are none)."""
    best = Sensitivity.NONE
    for item in levels:
        for level in [item] if isinstance(item, Sensitivity) else item:
            best = max(best, level)
    return best


def from_metadata(metadata: Mapping[str, object] | None) -> Sensitivity:
    """The class a caller gave in metadata ``{"sensitivity": "phi"}`` (NONE if absent)."""
    if not metadata or metadata.get("sensitivity") is None:
        return Sensitivity.NONE
    value = metadata["sensitivity"]
    if not isinstance(value, str):
        raise ValidationError(
            f"metadata sensitivity must be a string, got {type(value).__name__}",
            field="metadata.sensitivity",
            hint="use one of none, pii, phi, secret",
        )
    try:
        return Sensitivity.parse(value)
    except ValidationError as exc:
        exc.field = "metadata.sensitivity"
        raise


def stored_class(metadata: Mapping[str, object] | None) -> Sensitivity:
    """The class stored metadata declares; NONE for a value stored before values were
    checked on write (with a warning: its values are then classified by what they hold)."""
    try:
        return from_metadata(metadata)
    except ValidationError:
        logger.warning("stored metadata declares an unknown sensitivity; classifying its "
                       "values by what they hold")  # fmt: skip
        return Sensitivity.NONE
