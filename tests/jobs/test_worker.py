"""`engram worker` and `engram jobs`: extraction outside the API process, and recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.fix_server import ENGRAM, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cli(server: Server, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [ENGRAM, *args, "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {}),
                                                           "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def _episode_states(server: Server) -> list[str]:
    with server.superuser() as conn:
        return [str(r[0]) for r in conn.execute("SELECT status FROM episodes ORDER BY created_at")]


def _wait(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError("condition not reached in time")


def _seed(server: Server) -> None:
    with server.client() as http:
        http.post("/api/v2/users", json={"user_id": "ada", "first_name": "Ada"})
        http.post("/api/v2/sessions", json={"session_id": "s", "user_id": "ada"})
        for text in ("I live in Oslo.", "I work at Statoil as a geologist."):
            body = {"messages": [{"role": "Ada", "role_type": "user", "content": text}]}
            assert http.post("/api/v2/sessions/s/memory", json=body).status_code == 200


def _statuses(listed: str) -> list[str]:
    """The status column of `engram jobs list`'s table (not words in its log lines)."""
    return [line.split()[3] for line in listed.splitlines() if line.startswith("│")]


def _start_worker(server: Server, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [ENGRAM, "worker", "--data-dir", str(server.data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_a_separate_worker_processes_the_queue(api_only: Server) -> None:
    _seed(api_only)
    time.sleep(1)
    assert _episode_states(api_only) == ["pending", "pending"]  # nobody is extracting
    assert _statuses(_cli(api_only, "jobs", "list")) == ["todo", "todo"]

    worker = _start_worker(api_only)
    try:
        _wait(lambda: _episode_states(api_only) == ["done", "done"])
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    with api_only.superuser() as conn:
        facts = [r[0] for r in conn.execute("SELECT fact FROM facts ORDER BY created_at")]
    assert any("Oslo" in f for f in facts) and any("Statoil" in f for f in facts)
    listed = _cli(api_only, "jobs", "list", "--status", "succeeded")
    assert _statuses(listed) == ["succeeded", "succeeded"]


def test_a_job_whose_worker_died_is_retried(api_only: Server) -> None:
    _seed(api_only)
    with api_only.superuser() as conn:
        # A worker that took the first job and then died (no heartbeat for an hour).
        dead = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour')"
            " RETURNING id"
        ).fetchone()
        assert dead is not None
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s"
            " WHERE id = (SELECT min(id) FROM procrastinate_jobs)",
            (dead[0],),
        )
    worker = _start_worker(api_only, {"ENGRAM_WORKER__STALLED_AFTER_S": "5"})
    try:
        _wait(lambda: _episode_states(api_only) == ["done", "done"], timeout=90)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0


def test_retrying_a_job_that_did_not_fail_is_refused(api_only: Server) -> None:
    _seed(api_only)
    with api_only.superuser() as conn:
        job = conn.execute("SELECT min(id) FROM procrastinate_jobs").fetchone()
    assert job is not None
    result = subprocess.run(
        [ENGRAM, "jobs", "retry", str(job[0]), "--data-dir", str(api_only.data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "not failed" in result.stderr
    unknown = subprocess.run(
        [ENGRAM, "jobs", "retry", "999999", "--data-dir", str(api_only.data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert unknown.returncode == 2 and "not found" in unknown.stderr


def _jobs(server: Server) -> dict[str, int]:
    with server.superuser() as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs "
            "WHERE task_name = 'engram.extract_episode' GROUP BY 1"
        ).fetchall()
    return {str(s): int(n) for s, n in rows}


def test_succeeded_jobs_are_removed_after_the_configured_hours(api_only: Server) -> None:
    import procrastinate

    _seed(api_only)
    worker = _start_worker(api_only)
    try:
        _wait(lambda: _episode_states(api_only) == ["done", "done"])
        with api_only.superuser() as conn:  # both jobs ended 200 h ago; say one failed
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM procrastinate_jobs WHERE task_name = 'engram.extract_episode' "
                "ORDER BY id"
            )]  # fmt: skip
            conn.execute(
                "UPDATE procrastinate_events SET at = at - interval '200 hours' "
                "WHERE job_id = ANY(%s)",
                (ids,),
            )
            conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", (ids[1],))
        assert _jobs(api_only) == {"succeeded": 1, "failed": 1}
        queue = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=api_only.pg.dsn("engram_app"))
        )
        with queue.open():  # what the hourly schedule defers
            queue.configure_task("engram.remove_succeeded_jobs", queue="maintenance").defer(
                timestamp=int(time.time())
            )
        _wait(lambda: "succeeded" not in _jobs(api_only))
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    assert _jobs(api_only) == {"failed": 1}  # failed jobs stay for `engram jobs retry`
    assert _episode_states(api_only) == ["done", "done"]  # episodes keep their own state
