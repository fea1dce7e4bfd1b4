"""Admission: how much of the server one API key and one tenant may hold.

Each authenticated request takes a slot of its key and of its tenant for as long as it
runs, and a token from each one's bucket. A full set of slots or an empty bucket refuses
the request at once (429, with Retry-After) rather than queueing it: a queue would only
move the wait into the server, where it holds memory and, for a flood, the pool.
In-process: each replica of the API enforces its own limits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from engram.auth.principal import Principal
from engram.config import LimitSettings
from engram.errors import RateLimitedError

__all__ = ["Admission"]

_PRUNE_AT = 10_000  # buckets kept before the full (idle) ones are forgotten


@dataclass
class _Bucket:
    tokens: float
    at: float


class _Limit:
    """Concurrency slots and a token bucket, per name (a key or a tenant)."""

    def __init__(self, scope: str, concurrent: int, rate: float, burst: int) -> None:
        self.scope, self.concurrent, self.rate, self.burst = scope, concurrent, rate, burst
        self.running: dict[str, int] = {}
        self.buckets: dict[str, _Bucket] = {}

    def check(self, name: str, now: float) -> None:
        """Raise RateLimitedError when ``name`` has no slot free or no token left."""
        if self.concurrent and self.running.get(name, 0) >= self.concurrent:
            raise RateLimitedError(
                f"too many requests at once for this {self.scope}"
                f" (at most {self.concurrent} at a time)",
                scope=self.scope,
                reason="concurrency",
                retry_after_s=1,
                hint=f"wait for a request to finish, or raise "
                f"limits.concurrent_requests_per_{self.scope}",
            )
        if not self.rate:
            return
        bucket = self.buckets.get(name)
        if bucket is None:
            if len(self.buckets) >= _PRUNE_AT:
                self._prune(now)
            bucket = self.buckets[name] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            raise RateLimitedError(
                f"too many requests per second for this {self.scope}"
                f" (at most {self.rate:g}/s, bursts of {self.burst})",
                scope=self.scope,
                reason="rate",
                retry_after_s=max(1, math.ceil((1.0 - bucket.tokens) / self.rate)),
                hint=f"slow down, or raise limits.requests_per_s_per_{self.scope}",
            )

    def take(self, name: str) -> None:
        if self.rate:
            self.buckets[name].tokens -= 1.0
        self.running[name] = self.running.get(name, 0) + 1

    def give_back(self, name: str) -> None:
        left = self.running[name] - 1
        if left:
            self.running[name] = left
        else:
            del self.running[name]

    def _prune(self, now: float) -> None:
        full = [
            n for n, b in self.buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for n in full:
            del self.buckets[n]


class Admission:
    """Per-key and per-tenant concurrency and rate limits (see LimitSettings)."""

    def __init__(self, limits: LimitSettings) -> None:
        self.key = _Limit(
            "key",
            limits.concurrent_requests_per_key,
            limits.requests_per_s_per_key,
            limits.burst_per_key,
        )
        self.tenant = _Limit(
            "tenant",
            limits.concurrent_requests_per_tenant,
            limits.requests_per_s_per_tenant,
            limits.burst_per_tenant,
        )

    def admit(self, principal: Principal) -> Callable[[], None]:
        """Take a slot of the principal's key and of its tenant; returns the function that
        gives them back when the request ends. Raises RateLimitedError (nothing taken)
        when either is over its limits."""
        key, tenant = f"{principal.tenant}\n{principal.actor}", principal.tenant
        now = time.monotonic()
        # Both are checked before either is taken: a refusal costs the caller nothing.
        self.key.check(key, now)
        self.tenant.check(tenant, now)
        self.key.take(key)
        self.tenant.take(tenant)

        def release() -> None:
            self.key.give_back(key)
            self.tenant.give_back(tenant)

        return release
