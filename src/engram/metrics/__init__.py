"""Prometheus collectors: the registry and the sampler of database figures.

The HTTP side (``/metrics`` and request timing) lives in ``engram.api``.
"""

from engram.metrics.registry import Metrics
from engram.metrics.sampler import Sampler

__all__ = ["Metrics", "Sampler"]
