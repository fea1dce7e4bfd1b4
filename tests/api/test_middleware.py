"""What every response passes through: redirects keep the client on the host it asked."""

from __future__ import annotations

import httpx

from tests.fix_app import App


def test_a_trailing_slash_redirect_never_names_the_host_the_client_sent(app: App) -> None:
    with app.client(anonymous=True) as http:
        r = http.get(
            "/api/v2/users/?limit=5",
            headers={"Host": "evil.example", "Authorization": f"Api-Key {app.api_key}"},
        )
        assert r.status_code == 307
        assert r.headers["location"] == "/api/v2/users?limit=5"
        r = http.get("/api/v2/users-ordered/", headers={"Host": "evil.example:443"})
        assert "evil" not in r.headers.get("location", "")


def test_the_path_only_redirect_still_reaches_the_route(client: httpx.Client) -> None:
    r = client.get("/api/v2/users-ordered/", params={"pageSize": 1}, follow_redirects=True)
    assert r.status_code == 200 and "users" in r.json()
