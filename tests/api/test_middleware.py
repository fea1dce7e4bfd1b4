"""What every response passes through: redirects keep the client on the host it asked."""

from __future__ import annotations

import httpx
import pytest

from tests.fix_server import Server

pytestmark = pytest.mark.integration


def test_a_trailing_slash_redirect_never_names_the_host_the_client_sent(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        r = http.get(
            "/api/v2/users/?limit=5",
            headers={"Host": "evil.example", "Authorization": f"Api-Key {server.api_key}"},
        )
        assert r.status_code == 307
        assert r.headers["location"] == "/api/v2/users?limit=5"
        r = http.get("/api/v2/users-ordered/", headers={"Host": "evil.example:443"})
        assert "evil" not in r.headers.get("location", "")


def test_the_path_only_redirect_still_reaches_the_route(http: httpx.Client) -> None:
    r = http.get("/api/v2/users-ordered/", params={"pageSize": 1}, follow_redirects=True)
    assert r.status_code == 200 and "users" in r.json()
