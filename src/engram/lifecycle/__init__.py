"""Retention, archival to blob storage, restore, GDPR erasure, fact cleanup, backup."""

from engram.lifecycle.archive import ArchiveError, archive_session, restore_session
from engram.lifecycle.erasure import erase_user, shred_user_keys
from engram.lifecycle.policy import RetentionPolicy, effective_policy, set_policy
from engram.lifecycle.retention import run_retention

__all__ = [
    "ArchiveError",
    "RetentionPolicy",
    "archive_session",
    "effective_policy",
    "erase_user",
    "restore_session",
    "run_retention",
    "set_policy",
    "shred_user_keys",
]
