"""Is there a connection pooler between Engram and PostgreSQL?

Behind PgBouncer in transaction mode a client's consecutive transactions may run on
different server connections: anything session-scoped (server-side prepared
statements, LISTEN, session SET) is lost or, worse, seen by another client. Engram
keeps nothing session-scoped on the app's connections except what psycopg prepares
and what the job queue listens for; both are turned off when a pooler is present.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg

__all__ = ["behind_transaction_pooler", "dialled_and_server_port"]


def dialled_and_server_port(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """The port the client dialled and the port PostgreSQL says it listens on."""
    row = conn.execute("SELECT current_setting('port')::int").fetchone()
    return int(conn.info.port), int(row[0]) if row else 0


def behind_transaction_pooler(
    conn: psycopg.Connection[Any], setting: Literal["auto", "none", "transaction"]
) -> bool:
    """The configured answer, or for "auto" whether a proxy sits on another port.

    A pooler on the same port as the server (a Kubernetes Service mapping 5432 to
    PgBouncer) is not seen: set ``pool.pooler: transaction`` there.
    """
    if setting != "auto":
        return setting == "transaction"
    dialled, server = dialled_and_server_port(conn)
    return dialled != server
