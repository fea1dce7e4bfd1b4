"""Settings come from flags, then ENGRAM_* variables, then a YAML file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engram.config import load_settings
from engram.errors import ConfigError


def test_defaults_match_the_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENGRAM_CONFIG", "ENGRAM_DATABASE_URL", "ENGRAM_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert (s.host, s.port, s.embedded) == ("127.0.0.1", 8000, True)
    assert s.vector.index == "hnsw" and s.embedder.kind == "local"
    av = s.autovacuum
    assert (av.vacuum_scale_factor, av.analyze_scale_factor, av.vacuum_cost_delay) == (
        0.1,
        0.05,
        10,
    )


def test_precedence_flag_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "engram.yaml"
    cfg.write_text("port: 7000\nhost: 127.0.0.2\nvector:\n  index: ivfflat\n  ivfflat_lists: 50\n")
    monkeypatch.setenv("ENGRAM_PORT", "7100")
    monkeypatch.setenv("ENGRAM_VECTOR__HNSW_M", "24")
    s = load_settings(cfg)
    assert s.port == 7100  # the environment beats the file
    assert s.host == "127.0.0.2"  # the file beats the default
    assert (s.vector.index, s.vector.ivfflat_lists, s.vector.hnsw_m) == ("ivfflat", 50, 24)
    assert load_settings(cfg, port=7200).port == 7200  # a flag beats both


def test_database_url_means_external(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGRAM_DATABASE_URL", "postgresql://app@db/engram?sslmode=require")
    s = load_settings()
    assert not s.embedded
    assert s.database_url is not None
    assert "sslmode=require" in s.database_url.get_secret_value()
    assert "sslmode" not in repr(s)  # secrets never print


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("vector:\n  index: annoy\n", "vector.index"),
        ("port: -1\n", "port"),
        ("pool:\n  min_size: 9\n  max_size: 2\n", "min_size"),
        ("no_such_setting: 1\n", "no_such_setting"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert needle in str(exc.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.skipif(os.geteuid() != 0, reason="the default for root")
def test_root_defaults_to_a_data_dir_its_database_can_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root's home is 0700 and Engram never widens it: `make run` as root must still start.
    monkeypatch.delenv("ENGRAM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert load_settings().data_dir == Path("/var/lib/engram")
    (tmp_path / "engram").mkdir()  # data of an earlier release stays where it is
    assert load_settings().data_dir == tmp_path / "engram"
