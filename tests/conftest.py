"""Test plugins: one real Engram server on the real embedded PostgreSQL per session."""

pytest_plugins = ["tests.fix_server", "tests.fix_blobs", "tests.fix_pgbouncer"]
