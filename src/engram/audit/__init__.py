"""The tamper-evident audit log: hash-chained records per tenant, append-only in the
database, verified against signed checkpoints kept outside it.

``record(conn, tenant, actor=..., action=..., resource=...)`` appends inside the
caller's own tenant-bound transaction (key operations, erasure)."""

from engram.audit.chain import Entry, record_hash
from engram.audit.log import record, record_now

__all__ = ["Entry", "record", "record_hash", "record_now"]
