"""The names of Engram's upkeep jobs: their queue and tasks, shared by the code that
defers a job (`engram.jobs.keys`) and the queue that runs it (`engram.jobs.queue`).

The extraction task's names are `engram.store.episodes.TASK` and `QUEUE`.
"""

__all__ = ["CLEANUP_TASK", "MAINTENANCE_QUEUE", "REENCRYPT_TASK", "RETENTION_TASK", "ROTATE_TASK"]

# Long-running upkeep (re-encryption, rotation) beside the extraction queue.
MAINTENANCE_QUEUE = "maintenance"
REENCRYPT_TASK = "engram.reencrypt"
ROTATE_TASK = "engram.rotate_keys"
RETENTION_TASK = "engram.retention"
CLEANUP_TASK = "engram.remove_succeeded_jobs"
