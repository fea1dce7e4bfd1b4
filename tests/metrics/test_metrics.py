"""/metrics of the app in process: the families, route labels, search hit rate, and the
background sampler's database figures (which /metrics itself never queries); backups that
`engram backup` records, on a real server."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fix_app import App, running_app
from tests.fix_server import (
    ENGRAM,
    Server,
    free_port,
    short_tmpdir,
    start_server,
    stop_server,
)

RAM = 16 * 1024**3
FAMILIES = [
    "engram_http_request_duration_seconds", "engram_search_duration_seconds",
    "engram_searches_total", "engram_searches_with_hits_total", "engram_db_connections",
    "engram_db_connections_max", "engram_pool_connections_in_use",
    "engram_pool_utilization_ratio", "engram_vector_index_bytes",
    "engram_autovacuum_lag_seconds", "engram_table_dead_tuple_ratio",
    "engram_jobs_queue_depth", "engram_jobs_oldest_age_seconds",
    "engram_db_longest_query_seconds", "engram_database_size_bytes",
    "engram_database_memory_bytes", "engram_encryption_coverage_ratio",
    "engram_reencrypt_runs", "engram_backup_failures_total",
]  # fmt: skip
# What anyone may see: the process is alive and its pool, sampling works.
LIVENESS = [
    "engram_pool_connections", "engram_pool_connections_in_use",
    "engram_pool_connections_max", "engram_pool_requests_waiting",
    "engram_pool_utilization_ratio", "engram_db_sample_timestamp_seconds",
    "engram_db_sample_errors_total",
]  # fmt: skip
METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def msrv() -> Iterator[App]:
    metrics = {"sample_interval_s": 0.5, "database_memory_bytes": RAM, "port": METRICS_PORT}
    with running_app(short_tmpdir("eg-m-") / "d", metrics=metrics) as app:
        yield app


@pytest.fixture
def api(msrv: App) -> Iterator[httpx.Client]:
    with msrv.client() as c:
        yield c


def scrape(server: App | Server) -> str:
    """Every figure, as the platform's admin sees them on the API port."""
    with server.client() as admin:
        r = admin.get("/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` (labels in any order), or None."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


def test_metrics_exposes_every_family(msrv: App) -> None:
    text = scrape(msrv)
    for family in FAMILIES:
        assert f"# TYPE {family} " in text, family
    assert value(text, "engram_database_memory_bytes") == RAM


def test_without_credentials_only_liveness_figures_are_shown(msrv: App) -> None:
    with msrv.client(anonymous=True) as anonymous:
        r = anonymous.get("/metrics", timeout=10)
    assert r.status_code == 200
    families = set(re.findall(r"^# TYPE (\S+) ", r.text, re.MULTILINE))
    assert {f for f in families if not f.endswith("_created")} == set(LIVENESS)
    assert "engram_table_live_tuples" not in r.text and "route=" not in r.text


def test_a_tenant_key_or_a_bad_one_is_refused_the_full_figures(
    msrv: App, api: httpx.Client
) -> None:
    body = {"name": "metrics", "role": "admin", "tenant": "default"}
    assert api.post("/v1/admin/tenants", json={"id": "mt"}).status_code == 201
    key = api.post("/v1/admin/apikeys", json={**body, "tenant": "mt"}).json()["key"]
    with msrv.client(key) as tenant_admin:
        r = tenant_admin.get("/metrics")
    assert r.status_code == 403 and "metrics.port" in r.json()["hint"]
    with msrv.client("nope") as bad:
        assert bad.get("/metrics").status_code == 401


def test_the_metrics_port_serves_every_figure_without_credentials(msrv: App) -> None:
    r = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for family in FAMILIES:
        assert f"# TYPE {family} " in r.text, family
    assert httpx.get(f"http://127.0.0.1:{METRICS_PORT}/api/v2/users").status_code == 404


def test_a_request_counts_under_its_route_template(msrv: App, api: httpx.Client) -> None:
    route = "/api/v2/sessions/{session_id}"
    labels = {"route": route, "method": "GET", "status": "4xx"}
    name = "engram_http_request_duration_seconds_count"
    before = value(scrape(msrv), name, **labels) or 0.0
    missing = f"no-such-session-{secrets.token_hex(4)}"
    assert api.get(f"/api/v2/sessions/{missing}").status_code == 404
    text = scrape(msrv)
    assert value(text, name, **labels) == before + 1
    assert missing not in text  # ids never become label values
    api.get(f"/nothing/{missing}")
    assert value(scrape(msrv), name, route="unmatched", method="GET", status="4xx")


def test_searches_and_searches_with_hits(msrv: App, api: httpx.Client) -> None:
    user, empty = f"u-{secrets.token_hex(4)}", f"u-{secrets.token_hex(4)}"
    for u in (user, empty):
        api.post("/api/v2/users", json={"user_id": u}).raise_for_status()
    api.post("/api/v2/sessions", json={"session_id": user, "user_id": user}).raise_for_status()
    api.post(f"/api/v2/sessions/{user}/memory", json={"messages": [
        {"role": "Ada", "role_type": "user", "content": "I adopted a beagle named Biscuit."},
    ]}).raise_for_status()  # fmt: skip
    route = "/api/v2/sessions/search"
    text = scrape(msrv)
    searches = value(text, "engram_searches_total", route=route) or 0.0
    hits = value(text, "engram_searches_with_hits_total", route=route) or 0.0
    found = api.post("/api/v2/sessions/search", json={"text": "beagle", "user_id": user})
    assert found.json()["results"]
    nothing = api.post("/api/v2/sessions/search", json={"text": "beagle", "user_id": empty})
    assert nothing.json()["results"] == []
    text = scrape(msrv)
    assert value(text, "engram_searches_total", route=route) == searches + 2
    assert value(text, "engram_searches_with_hits_total", route=route) == hits + 1
    assert (value(text, "engram_search_duration_seconds_count", route=route) or 0) >= 2
    native = api.post("/v1/search", json={"text": "beagle", "user_id": user})
    assert native.status_code == 200
    assert value(scrape(msrv), "engram_searches_with_hits_total", route="/v1/search") == 1


def test_the_sampler_fills_database_gauges(msrv: App, api: httpx.Client) -> None:
    user = f"u-{secrets.token_hex(4)}"
    api.post("/api/v2/users", json={"user_id": user}).raise_for_status()
    api.post("/api/v2/sessions", json={"session_id": user, "user_id": user}).raise_for_status()
    api.post(f"/api/v2/sessions/{user}/memory", json={"messages": [
        {"role": "Ada", "role_type": "user", "content": f"Message number {i} about sailing."}
        for i in range(40)
    ]}).raise_for_status()  # fmt: skip
    with msrv.superuser() as conn:
        row = conn.execute("SELECT pg_relation_size('messages_embedding_idx'),"
                           " current_setting('max_connections')::int").fetchone()  # fmt: skip
    assert row is not None
    index_bytes, max_connections = row
    deadline = time.monotonic() + 15
    while True:
        text = scrape(msrv)
        live = value(text, "engram_table_live_tuples", table="messages") or 0
        idx = value(text, "engram_vector_index_bytes", table="messages",
                    index="messages_embedding_idx")  # fmt: skip
        if (live >= 40 and idx == index_bytes) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert live >= 40
    assert idx == index_bytes
    assert value(text, "engram_db_connections_max") == max_connections
    assert (value(text, "engram_db_connections") or 0) >= 2  # the pool and the sampler
    assert value(text, "engram_autovacuum_lag_seconds", table="messages") is not None
    assert value(text, "engram_jobs_queue_depth") is not None
    assert value(text, "engram_db_sample_timestamp_seconds") == pytest.approx(time.time(), abs=10)
    assert value(text, "engram_pool_connections_max", pool="api") == 10


def test_scraping_never_queries_the_database(msrv: App) -> None:
    with msrv.superuser() as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        for _ in range(30):
            scrape(msrv)
        calls = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE query LIKE '%pg_stat_user_tables%' AND query NOT LIKE '%pg_stat_statements%'"
        ).fetchone()
    # 30 scrapes; the sampler (every 0.5 s) ran only a few times meanwhile.
    assert calls is not None and calls[0] < 15


def test_queue_depth_and_oldest_job_age_without_a_worker() -> None:
    with running_app(
        short_tmpdir("eg-mq-") / "d", worker={"enabled": False},
        metrics={"sample_interval_s": 0.5},
    ) as app, app.client() as api:  # fmt: skip
        api.post("/api/v2/users", json={"user_id": "u"}).raise_for_status()
        api.post("/api/v2/sessions", json={"session_id": "s", "user_id": "u"})
        for i in range(3):  # one extraction job per call
            api.post(
                "/api/v2/sessions/s/memory",
                json={
                    "messages": [
                        {"role_type": "user", "content": f"I moved to Lisbon in {2020 + i}."}
                    ]
                },
            )
        time.sleep(2.5)
        text = scrape(app)
        assert value(text, "engram_jobs_queue_depth") == 3
        assert value(text, "engram_jobs_running") == 0
        assert 1.5 < (value(text, "engram_jobs_oldest_age_seconds") or 0) < 60


@pytest.fixture(scope="module")
def backup_srv() -> Iterator[Server]:
    """A real server beside which `engram backup` runs, sampling often."""
    root = short_tmpdir("eg-mb-")
    srv = start_server(root / "d", api_key=secrets.token_urlsafe(24),
                       env={"ENGRAM_METRICS__SAMPLE_INTERVAL_S": "0.5"})  # fmt: skip
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
def test_backups_are_exported_for_the_backup_alerts(backup_srv: Server, tmp_path: Path) -> None:
    """`engram backup` records each outcome; every API pod exports them for the alerts."""

    def backup(out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ENGRAM, "backup", "--out", str(out), "--data-dir",
                               str(backup_srv.data_dir)], capture_output=True, text=True,
                              timeout=600)  # fmt: skip

    def sampled(name: str, until: Callable[[float | None], bool]) -> float | None:
        deadline = time.monotonic() + 20
        while True:
            got = value(scrape(backup_srv), name)
            if until(got) or time.monotonic() > deadline:
                return got
            time.sleep(0.3)

    before = sampled("engram_backup_failures_total", lambda v: v is not None) or 0.0
    started = time.time()
    assert backup(tmp_path / "ok.dump").returncode == 0
    last = sampled("engram_backup_last_success_timestamp_seconds",
                   lambda v: v is not None and v >= started - 1)  # fmt: skip
    assert last is not None and started - 1 <= last <= time.time() + 1

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failed = backup(blocker / "x.dump")  # cannot create a directory under a file
    assert failed.returncode == 2 and "error" in failed.stderr
    assert sampled("engram_backup_failures_total", lambda v: v == before + 1) == before + 1
    # A failure does not move the time of the last good backup.
    assert value(scrape(backup_srv), "engram_backup_last_success_timestamp_seconds") == last
