"""Requests nobody authenticated: a few records each, the rest counted in a summary.

Anyone who can reach the port can send requests without credentials, and each refusal
would otherwise append a record to the default tenant's chain, which can never be
deleted (hundreds a second, tens of GB a day). Per window of ``window_s`` seconds, each
client address gets ``per_address`` records of its own, and all addresses together at
most ``MAX_RECORDS``; the others are counted, and each window ends with one summary
record per address (up to ``MAX_ADDRESSES``; the rest share one) saying how many
requests it sent, when, to what and with what answers. Nothing goes unrecorded, and
the chain grows by a bounded number of records per window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["MAX_ACTIONS", "MAX_ADDRESSES", "MAX_RECORDS", "AnonymousTally", "Summary"]

MAX_RECORDS = 200  # individual records per window, all addresses together
MAX_ADDRESSES = 1000  # summaries per window; the other addresses share one more
MAX_ACTIONS = 20  # actions named in a summary; the others are counted as "other"
OTHERS = "other addresses"


@dataclass
class Summary:
    """What one address sent in a window beyond its own records."""

    client: str
    first: datetime
    last: datetime
    count: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    addresses: set[str] = field(default_factory=set)  # for OTHERS: who they were (count)

    def add(self, client: str, action: str, status: int, at: datetime) -> None:
        self.count += 1
        self.last = max(self.last, at)
        self.statuses[status] += 1
        if action in self.actions or len(self.actions) < MAX_ACTIONS:
            self.actions[action] += 1
        else:
            self.actions["other"] += 1
        if self.client == OTHERS and len(self.addresses) < 100_000:
            self.addresses.add(client)

    @property
    def outcome(self) -> str:
        return "denied" if set(self.statuses) <= {401, 403} else "failure"

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "summary": "anonymous requests not recorded one by one",
            "count": self.count,
            "first": self.first.isoformat(timespec="microseconds"),
            "last": self.last.isoformat(timespec="microseconds"),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "actions": dict(self.actions.most_common()),
        }
        if self.client == OTHERS:
            out["addresses"] = len(self.addresses)
        return out


class AnonymousTally:
    """Decides, per anonymous request, whether it gets a record of its own; counts the
    others until ``take()`` ends the window."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._records: Counter[str] = Counter()
        self._summaries: dict[str, Summary] = {}

    def admit(self, client: str | None, action: str, status: int, at: datetime) -> bool:
        """True: write this request's own record. False: it was counted instead."""
        address = client or "unknown"
        if self._records[address] < self.per_address and self._records.total() < MAX_RECORDS:
            self._records[address] += 1
            return True
        key = (
            address
            if address in self._summaries or len(self._summaries) < MAX_ADDRESSES
            else OTHERS
        )
        summary = self._summaries.get(key)
        if summary is None:
            summary = self._summaries[key] = Summary(key, at, at)
        summary.add(address, action, status, at)
        return False

    def take(self) -> list[Summary]:
        """The window's summaries; the next window starts now."""
        out = list(self._summaries.values())
        self._records.clear()
        self._summaries.clear()
        return out

    def give_back(self, summaries: list[Summary]) -> None:
        """Summaries that could not be written: merged into the current window's."""
        for s in summaries:
            mine = self._summaries.get(s.client)
            if mine is None:
                self._summaries[s.client] = s
                continue
            mine.count += s.count
            mine.first = min(mine.first, s.first)
            mine.last = max(mine.last, s.last)
            mine.statuses.update(s.statuses)
            mine.actions.update(s.actions)
            mine.addresses |= s.addresses
