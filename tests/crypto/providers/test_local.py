"""The local key provider: a 0600 key file created on first use, KEK versions, refusals."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from engram.crypto.providers import LocalKeyProvider
from engram.errors import DecryptionError, KeyUnavailableError

from .contract import check_keyring, check_provider


def test_contract(local: LocalKeyProvider) -> None:
    check_provider(local)
    check_keyring(local)


def test_key_file_is_created_0600_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "keys" / "kek.json"
    provider = LocalKeyProvider(path)
    assert not path.exists()
    kek = provider.current_kek()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["format"] == "engram-kek/1" and kek == f"{data['id']}/1"
    assert len(data["keys"]["1"]["key"]) == 44  # 32 bytes, base64
    assert LocalKeyProvider(path).current_kek() == kek  # a second process uses the same file


def test_concurrent_first_use_creates_one_key_set(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    keks: list[str] = []
    threads = [
        threading.Thread(target=lambda: keks.append(LocalKeyProvider(path).current_kek()))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keks)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_refuses_a_key_file_others_can_read_or_write(local: LocalKeyProvider, mode: int) -> None:
    wrapped = local.wrap(os.urandom(32))
    local.path.chmod(mode)
    for attempt in (local.current_kek, lambda: local.unwrap(wrapped)):
        with pytest.raises(KeyUnavailableError) as info:
            attempt()
        assert info.value.status == 503 and info.value.reason == "misconfigured"
        assert "0600" in str(info.value) and "chmod 600" in str(info.value)
    local.path.chmod(0o600)
    assert len(local.unwrap(wrapped)) == 32


def test_another_processs_rotation_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    a, b = LocalKeyProvider(path), LocalKeyProvider(path)
    wrapped = a.wrap(os.urandom(32))
    new = b.new_kek()
    assert a.current_kek() == new
    assert len(a.unwrap(wrapped)) == 32
    # `a` keeps the KEKs it has used in memory: new wraps still follow the file's primary.
    dek = os.urandom(32)
    rewrapped = a.wrap(dek)
    assert rewrapped.kek_id == new and b.unwrap(rewrapped) == dek
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_different_key_file_is_named_not_a_bad_tag(tmp_path: Path) -> None:
    wrapped = LocalKeyProvider(tmp_path / "a.json").wrap(os.urandom(32))
    with pytest.raises(KeyUnavailableError) as info:
        LocalKeyProvider(tmp_path / "b.json").unwrap(wrapped)
    assert info.value.reason == "kek_missing" and "crypto.local.key_file" in str(info.value)


def test_a_damaged_or_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(KeyUnavailableError, match="cannot read key file"):
        LocalKeyProvider(path).current_kek()
    path.write_text('{"format": "something else"}')
    with pytest.raises(KeyUnavailableError, match="not an Engram key file"):
        LocalKeyProvider(path).current_kek()


def test_unwrap_of_garbage_is_a_decryption_error(local: LocalKeyProvider) -> None:
    wrapped = local.wrap(os.urandom(32))
    for blob in (b"", b"\x01" * 10, b"\x02" + wrapped.blob[1:]):
        with pytest.raises(DecryptionError) as info:
            local.unwrap(type(wrapped)(wrapped.provider, wrapped.kek_id, blob))
        assert info.value.reason == "unwrap_failed"
