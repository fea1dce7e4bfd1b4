"""Operations: the sizing calculator and its live-database check."""

from engram.ops.measure import Comparison, Measurement, compare, measure
from engram.ops.sizing import TableEstimate, Workload, estimate_tables

__all__ = [
    "Comparison",
    "Measurement",
    "TableEstimate",
    "Workload",
    "compare",
    "estimate_tables",
    "measure",
]
