"""`engram size` as a user runs it: a plan on screen or in YAML, clear errors, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fix_server import ENGRAM


def size(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENGRAM, "size", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_plan_as_yaml(tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    r = size("--sessions", "100000", "--messages-per-session", "40", "--growth-factor", "1.5",
             "--embedding-dims", "1536", "--replicas", "4", "--output", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(out.read_text())
    messages = doc["tables"]["messages"]
    assert messages["rows"] == 6_000_000
    assert messages["indexes"]["messages_embedding_idx"] > 6_000_000 * 8000  # a page each
    assert doc["totals"]["total_bytes"] > 10 * doc["totals"]["classic_estimate_bytes"]
    assert (
        doc["azure"]["sku"]
        and doc["azure"]["ram_gib"] * 1024**3 >= (doc["memory"]["vector_index_bytes"])
    )
    for setting in ("shared_buffers", "effective_cache_size", "maintenance_work_mem",
                    "max_connections"):  # fmt: skip
        assert setting in doc["postgresql"]
    helm = doc["helm_values"]
    assert helm["api"]["replicas"] == 4
    assert helm["config"]["pool"]["max_size"] == doc["pools"]["api_pool_max"]


def test_plan_as_tables() -> None:
    r = size("--sessions", "5000", "--messages-per-session", "30")
    assert r.returncode == 0, r.stderr
    for text in ("messages", "facts", "Azure Flexible Server SKU", "shared_buffers"):
        assert text in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sessions", "-10", "--messages-per-session", "5"], "--sessions must be"),
        (["--sessions", "10", "--messages-per-session", "5", "--avg-message-bytes", "-1"],
         "--avg-message-bytes must be"),
        (["--sessions", "10", "--messages-per-session", "5", "--vector-type", "float16"],
         "unknown vector type 'float16'"),
        (["--sessions", "10", "--messages-per-session", "5", "--index", "btree"],
         "unknown index type 'btree'"),
        (["--messages-per-session", "5"], "--sessions and --messages-per-session are required"),
        (["--sessions", "10", "--messages-per-session", "5", "--replicas", "0"],
         "--replicas must be"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "plan.yaml"
    r = size(*args, "--output", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "what to do:" in r.stderr
    assert not out.exists()  # nothing written
