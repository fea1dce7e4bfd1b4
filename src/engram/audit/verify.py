"""Verification of a tenant's chain: every record's hash, the links between them, and
the latest signed checkpoint (which catches records cut off the end)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from engram.audit.chain import GENESIS, entry_of, record_hash
from engram.audit.checkpoints import Checkpoint, CheckpointStore, latest
from engram.store import audit as store
from engram.store.db import Conn

__all__ = ["Problem", "Report", "verify_tenant"]


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # changed | missing | unlinked | truncated | checkpoint_mismatch | bad_checkpoint
    message: str


@dataclass
class Report:
    tenant: str
    length: int = 0
    head: str = GENESIS
    checkpoint: Checkpoint | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_tenant(
    conn: Conn,
    tenant: str,
    checkpoints: CheckpointStore | None = None,
    public_key: Ed25519PublicKey | None = None,
) -> Report:
    """Walk ``tenant``'s chain in a transaction bound to it and report every break."""
    report = Report(tenant)
    cp: Checkpoint | None = None
    if checkpoints is not None and public_key is not None:
        cp, bad = latest(checkpoints, tenant, public_key)
        report.checkpoint = cp
        for name in bad:
            report.problems.append(
                Problem(0, "bad_checkpoint", f"checkpoint {name} has no valid signature (forged?)")
            )
    expected, prev = 1, GENESIS
    hash_at_cp: str | None = None
    async for row in store.iterate(conn, tenant):
        seq = int(row["seq"])
        if seq != expected:
            report.problems.append(
                Problem(
                    expected,
                    "missing",
                    f"records {expected}..{seq - 1} are missing (deleted)"
                    if seq > expected + 1
                    else f"record {expected} is missing (deleted)",
                )
            )
        if record_hash(tenant, seq, entry_of(row), row["prev_hash"]) != row["hash"]:
            report.problems.append(
                Problem(
                    seq,
                    "changed",
                    f"record {seq} does not match its hash: changed after it was written, "
                    "or moved from another position",
                )
            )
        elif seq == expected and row["prev_hash"] != prev:
            report.problems.append(
                Problem(
                    seq,
                    "unlinked",
                    f"record {seq} does not follow record {seq - 1}: inserted, replaced "
                    "or reordered",
                )
            )
        if cp is not None and seq == cp.length:
            hash_at_cp = row["hash"]
        prev, expected = row["hash"], seq + 1
        report.length, report.head = seq, row["hash"]
    if cp is not None:
        if report.length < cp.length:
            report.problems.append(
                Problem(
                    report.length + 1,
                    "truncated",
                    f"the log ends at record {report.length} but the checkpoint of {cp.at} "
                    f"recorded {cp.length}: records {report.length + 1}..{cp.length} were removed",
                )
            )
        elif hash_at_cp != cp.head:
            report.problems.append(
                Problem(
                    cp.length,
                    "checkpoint_mismatch",
                    f"record {cp.length} differs from the signed checkpoint of {cp.at}: "
                    "the log up to it was rewritten",
                )
            )
    return report
