"""Transport security: what the `production` profile demands before serving."""

from __future__ import annotations

import os

import psycopg

from engram.config import Settings
from engram.errors import ConfigError

__all__ = ["check_transport", "sslmode"]


def sslmode(dsn: str) -> str:
    """The sslmode a DSN (URL or key=value) asks for, PGSSLMODE, or libpq's default."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid database URL: {exc}", hint="fix the DSN") from exc
    return str(params.get("sslmode") or os.environ.get("PGSSLMODE") or "prefer")


def check_transport(settings: Settings) -> None:
    """In the production profile, refuse to start without HTTPS for the API and without
    ``sslmode=verify-full`` to an external database (the embedded one is reached over a
    Unix socket only)."""
    if settings.profile != "production":
        return
    if settings.tls.certfile is None or settings.tls.keyfile is None:
        raise ConfigError(
            "the production profile needs TLS for the API",
            hint="set tls.certfile and tls.keyfile (ENGRAM_TLS__CERTFILE, ENGRAM_TLS__KEYFILE)",
        )
    for name, url in (
        ("database_url", settings.database_url),
        ("migrate_database_url", settings.migrate_database_url),
    ):
        if url is not None and sslmode(url.get_secret_value()) != "verify-full":
            raise ConfigError(
                f"the production profile needs {name} with sslmode=verify-full",
                hint="add sslmode=verify-full and sslrootcert=<CA file> to the DSN",
            )
    for path in (settings.tls.certfile, settings.tls.keyfile):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist", hint="check tls.certfile/keyfile")
