"""The `engram` command. Each module registers its sub-commands on the one `app`."""

from engram.cli import audit, doctor, keys, lifecycle, server, sizing, tenants  # noqa: F401
from engram.cli.common import app

__all__ = ["app"]
