"""Fixtures of the worker tests."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests.fix_server import Server, short_tmpdir, start_server, stop_server


@pytest.fixture
def api_only() -> Iterator[Server]:
    """A server that runs no worker, so jobs wait for `engram worker`."""
    root = short_tmpdir("egw-")
    srv = start_server(root / "d", api_key=secrets.token_urlsafe(16), extra=["--no-worker"])
    yield srv
    stop_server(srv)
    shutil.rmtree(root, ignore_errors=True)
