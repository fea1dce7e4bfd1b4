"""Test plugins: the Engram app in process and one real Engram server, each on a real
embedded PostgreSQL, per session (each started only if a test asks for it)."""

pytest_plugins = ["tests.fix_server", "tests.fix_app", "tests.fix_blobs", "tests.fix_pgbouncer"]
