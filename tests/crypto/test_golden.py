"""The golden corpus: ciphertexts written once (golden/generate.py) that every later
version of Engram must still open. A failure here means stored data would be lost."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.crypto import (
    DataKeyRecord,
    Envelope,
    FieldCipher,
    FieldContext,
    Keyring,
    KeyState,
    MemoryKeyStore,
    unseal,
)
from engram.crypto.providers import LocalKeyProvider, WrappedDek
from engram.errors import DecryptionError

GOLDEN = Path(__file__).parent / "golden"
CORPUS: dict[str, Any] = json.loads((GOLDEN / "corpus.json").read_text())


def _ctx(entry: dict[str, Any]) -> FieldContext:
    return FieldContext(**entry["context"])


def _envelope(entry: dict[str, Any]) -> Envelope:
    if entry["form"] == "binary":
        return Envelope.from_bytes(bytes.fromhex(entry["ciphertext"]))
    return Envelope.from_text(entry["ciphertext"])


def test_corpus_covers_versions_forms_and_keks() -> None:
    assert CORPUS["format_version"] == 1
    assert {e["form"] for e in CORPUS["entries"]} == {"text", "binary"}
    assert {k["version"] for k in CORPUS["keys"]} == {1, 2}
    assert {k["kek_id"] for k in CORPUS["keys"]} == {"901de0c0ffee/1", "901de0c0ffee/2"}
    assert len(CORPUS["entries"]) == 15


def test_every_golden_ciphertext_opens_with_its_recorded_data_key() -> None:
    deks = {(UUID(k["key_id"]), k["version"]): bytes.fromhex(k["dek_hex"]) for k in CORPUS["keys"]}
    for entry in CORPUS["entries"]:
        env = _envelope(entry)
        assert env.version == 1
        plaintext = unseal(AESGCM(deks[(env.key_id, env.key_version)]), env, _ctx(entry))
        assert plaintext.decode() == entry["plaintext"]


@pytest.fixture
def golden_keyring(tmp_path: Path) -> Keyring:
    # git does not keep mode 0600, which the local provider insists on.
    kek_file = tmp_path / "kek.json"
    shutil.copy(GOLDEN / CORPUS["kek_file"], kek_file)
    kek_file.chmod(0o600)
    store = MemoryKeyStore()
    newest: dict[str, int] = {}
    for k in CORPUS["keys"]:
        newest[k["key_id"]] = max(newest.get(k["key_id"], 0), k["version"])
    for k in CORPUS["keys"]:
        store.put(
            DataKeyRecord(
                UUID(k["key_id"]),
                k["version"],
                k["tenant"],
                k["user"],
                KeyState.PRIMARY if newest[k["key_id"]] == k["version"] else KeyState.ACTIVE,
                WrappedDek(k["provider"], k["kek_id"], base64.b64decode(k["wrapped_b64"])),
                datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
    return Keyring(LocalKeyProvider(kek_file), store)


def test_golden_wrapped_keys_unwrap_through_the_local_provider(golden_keyring: Keyring) -> None:
    provider = golden_keyring.provider
    for k in CORPUS["keys"]:
        wrapped = WrappedDek(k["provider"], k["kek_id"], base64.b64decode(k["wrapped_b64"]))
        assert provider.unwrap(wrapped).hex() == k["dek_hex"]


def test_every_golden_ciphertext_decrypts_end_to_end(golden_keyring: Keyring) -> None:
    cipher = FieldCipher(golden_keyring)
    for entry in CORPUS["entries"]:
        if entry["form"] == "binary":
            got = cipher.decrypt_bytes(bytes.fromhex(entry["ciphertext"]), _ctx(entry)).decode()
        else:
            got = cipher.decrypt(entry["ciphertext"], _ctx(entry))
        assert got == entry["plaintext"]
    # And as reads open them: a page of binary ciphertexts at once.
    binary = [e for e in CORPUS["entries"] if e["form"] == "binary"]
    assert binary
    page = cipher.decrypt_many([(bytes.fromhex(e["ciphertext"]), _ctx(e)) for e in binary])
    assert page == [e["plaintext"].encode() for e in binary]


def test_golden_ciphertexts_still_refuse_another_row(golden_keyring: Keyring) -> None:
    cipher = FieldCipher(golden_keyring)
    entry = next(e for e in CORPUS["entries"] if e["form"] == "text")
    with pytest.raises(DecryptionError):
        cipher.decrypt(entry["ciphertext"], dataclasses.replace(_ctx(entry), row_id="row-x"))


def test_the_golden_user_profile_reads_back_field_by_field(golden_keyring: Keyring) -> None:
    """A user's protected fields in one ciphertext, as written at migration 0017
    (golden/profile.json): read as the API reads users, each field comes back, and the
    same ciphertext on another user's row does not open."""
    from engram.crypto.protect import SealedPage
    from engram.crypto.reveal import USER_FIELDS

    golden = json.loads((GOLDEN / "profile.json").read_text())
    assert golden["sealed"] == golden["read"]  # what it holds: the fields by name

    def row(uuid: str) -> dict[str, Any]:
        return {"uuid": UUID(uuid), "profile_enc": bytes.fromhex(golden["profile_enc"]),
                **golden["stored"]}  # fmt: skip

    mine = row(golden["uuid"])
    page = SealedPage(FieldCipher(golden_keyring), golden["tenant"], [mine], USER_FIELDS, "uuid")
    assert page.open() == []
    assert {k: mine[k] for k in golden["read"]} == golden["read"]
    other = row("00000000-0000-4000-8000-000000000001")
    page = SealedPage(FieldCipher(golden_keyring), golden["tenant"], [other], USER_FIELDS, "uuid")
    (error,) = page.open()
    assert isinstance(error, DecryptionError)
    assert {k: other[k] for k in golden["stored"]} == golden["stored"]  # left redacted
