"""Prometheus metrics: request and search timing, pool, and sampled database figures."""

from engram.metrics.endpoint import install_metrics
from engram.metrics.registry import Metrics
from engram.metrics.sampler import Sampler

__all__ = ["Metrics", "Sampler", "install_metrics"]
