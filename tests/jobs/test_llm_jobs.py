"""The `llm` extractor in the real pipeline: a bad answer fails the job, the messages stay,
the reason and tokens are kept, and `engram jobs retry` finishes it once the model behaves."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from tests.extract.test_llm_contract import FakeChat, Reply, make_handler
from tests.fix_server import ENGRAM, Server, short_tmpdir, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def chat() -> Iterator[FakeChat]:
    state = FakeChat(url="", replies=[Reply(content="Sure! Here are the facts: Ada, Oslo")])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def llm_env(chat: FakeChat) -> dict[str, str]:
    return {
        "ENGRAM_EXTRACTOR__KIND": "llm",
        "ENGRAM_EXTRACTOR__MODEL": "qwen2.5-7b-instruct",
        "ENGRAM_EXTRACTOR__BASE_URL": f"{chat.url}/v1",
        "ENGRAM_EXTRACTOR__API_KEY": "sk-local",
        "ENGRAM_EXTRACTOR__MAX_RETRIES": "0",
        "ENGRAM_WORKER__RETRY_WAIT_S": "0.2",
    }


@pytest.fixture
def server(llm_env: dict[str, str]) -> Iterator[Server]:
    root = short_tmpdir("egm-")
    srv = start_server(root / "d", api_key=secrets.token_urlsafe(16), env=llm_env)
    yield srv
    stop_server(srv)
    shutil.rmtree(root, ignore_errors=True)


def _episode(server: Server) -> dict[str, Any]:
    with server.superuser() as conn:
        cur = conn.execute("SELECT status, attempts, error, usage FROM episodes")
        cols = [d.name for d in cur.description or []]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    assert len(rows) == 1
    return rows[0]


def _wait_status(server: Server, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ep = _episode(server)
        if ep["status"] == status:
            return ep
        time.sleep(0.2)
    raise AssertionError(f"episode never became {status}: {_episode(server)}")


def test_bad_answer_fails_keeps_messages_and_retry_succeeds(
    server: Server, chat: FakeChat, llm_env: dict[str, str]
) -> None:
    with server.client() as http:
        http.post("/api/v2/users", json={"user_id": "ada", "first_name": "Ada"})
        http.post("/api/v2/sessions", json={"session_id": "s", "user_id": "ada"})
        body = {"messages": [{"role": "Ada", "role_type": "user", "content": "I live in Oslo."}]}
        assert http.post("/api/v2/sessions/s/memory", json=body).status_code == 200

        failed = _wait_status(server, "failed")
        time.sleep(1.5)  # a retry would have happened by now
        assert len(chat.received) == 1  # invalid output is not retried (it would repeat)
        assert "not valid JSON" in failed["error"]
        assert failed["usage"]["prompt_tokens"] == 812  # the tokens it cost are on record
        memory = http.get("/api/v2/sessions/s/memory").json()
        assert [m["content"] for m in memory["messages"]] == ["I live in Oslo."]

        env = {**os.environ, **llm_env, "COLUMNS": "250"}
        run = [ENGRAM, "jobs", "list", "--status", "failed", "--data-dir", str(server.data_dir)]
        listed = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert "not valid JSON" in listed.stdout
        job_id = re.search(r"^\D*(\d+)\s", listed.stdout, re.MULTILINE)
        assert job_id is not None

        message_uuid = memory["messages"][0]["uuid"]
        chat.replies = [Reply(content=json.dumps(_answer(message_uuid)))]
        retry = [ENGRAM, "jobs", "retry", job_id.group(1), "--data-dir", str(server.data_dir)]
        done = subprocess.run(retry, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr

        finished = _wait_status(server, "done")
        assert finished["usage"]["prompt_tokens"] == 2 * 812  # both calls accounted
        assert len(chat.received) == 2
        facts = http.post(
            "/v1/facts/search", json={"text": "where does Ada live", "user_id": "ada"}
        ).json()["results"]
        assert [f["fact"] for f in facts] == ["Ada lives in Oslo."]


def _answer(message_uuid: str) -> dict[str, Any]:
    return {
        "entities": [
            {"name": "Ada", "label": "person", "summary": None},
            {"name": "Oslo", "label": "place", "summary": None},
        ],
        "facts": [
            {
                "subject": "Ada",
                "relation": "LIVES_IN",
                "object": "Oslo",
                "fact": "Ada lives in Oslo.",
                "source_message": message_uuid,
                "valid_at": None,
                "invalid_at": None,
                "exclusive": True,
            }
        ],
        "contradicted": [],
    }
