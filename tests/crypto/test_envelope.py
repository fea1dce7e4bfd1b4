"""The ciphertext format: layout, text form, and associated data binding the field."""

from __future__ import annotations

import base64
import dataclasses
import struct
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.crypto import TEXT_PREFIX, Envelope, FieldContext, is_ciphertext, seal, unseal
from engram.errors import DecryptionError

KEY_ID = UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
CTX = FieldContext("tenant-a", "messages", "content", "7d3c0e1a-0000-4000-8000-000000000001")
AEAD = AESGCM(bytes(range(32)))


def test_binary_layout() -> None:
    env = seal(AEAD, KEY_ID, 7, b"hello", CTX)
    raw = env.to_bytes()
    assert raw[0] == 1
    assert raw[1:17] == KEY_ID.bytes
    assert struct.unpack(">I", raw[17:21]) == (7,)
    assert raw[21:33] == env.nonce and len(env.nonce) == 12
    assert len(raw) == 33 + len(b"hello") + 16
    assert Envelope.from_bytes(raw) == env


def test_text_form_round_trips() -> None:
    env = seal(AEAD, KEY_ID, 1, "Grüße, 世界".encode(), CTX)
    text = env.to_text()
    assert text.startswith(TEXT_PREFIX) and is_ciphertext(text)
    assert "=" not in text and "+" not in text and "/" not in text
    assert Envelope.from_text(text) == env
    assert unseal(AEAD, Envelope.from_text(text), CTX).decode() == "Grüße, 世界"
    assert not is_ciphertext("plain text")


@pytest.mark.parametrize("plaintext", [b"", b"x", b"a" * 100_000])
def test_round_trip_sizes(plaintext: bytes) -> None:
    env = seal(AEAD, uuid4(), 1, plaintext, CTX)
    assert unseal(AEAD, Envelope.from_bytes(env.to_bytes()), CTX) == plaintext


def test_nonces_differ_per_encryption() -> None:
    a, b = (seal(AEAD, KEY_ID, 1, b"same", CTX) for _ in range(2))
    assert a.nonce != b.nonce and a.sealed != b.sealed


@pytest.mark.parametrize("field", ["tenant", "table", "column", "row_id"])
def test_moving_to_another_field_fails(field: str) -> None:
    env = seal(AEAD, KEY_ID, 1, b"secret", CTX)
    moved = dataclasses.replace(CTX, **{field: getattr(CTX, field) + "x"})
    with pytest.raises(DecryptionError) as info:
        unseal(AEAD, env, moved)
    assert info.value.reason == "authentication_failed"
    assert "failed authentication" in str(info.value)


def test_field_boundaries_are_unambiguous() -> None:
    a = FieldContext("ab", "c", "d", "1")
    b = FieldContext("a", "bc", "d", "1")
    env = seal(AEAD, KEY_ID, 1, b"x", a)
    with pytest.raises(DecryptionError):
        unseal(AEAD, env, b)


def test_header_is_authenticated() -> None:
    env = seal(AEAD, KEY_ID, 1, b"x", CTX)
    for changed in (
        dataclasses.replace(env, key_version=2),
        dataclasses.replace(env, key_id=uuid4()),
    ):
        with pytest.raises(DecryptionError, match="failed authentication"):
            unseal(AEAD, changed, CTX)


def test_wrong_key_fails() -> None:
    env = seal(AEAD, KEY_ID, 1, b"x", CTX)
    with pytest.raises(DecryptionError):
        unseal(AESGCM(bytes(32)), env, CTX)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed"),
        ("hello", "malformed"),
        ("enc:v1:", "malformed"),
        ("enc:v1:!!!!", "malformed"),
        ("enc:v1:" + base64.urlsafe_b64encode(b"\x01" + bytes(47)).decode(), "malformed"),
        ("enc:v2:" + base64.urlsafe_b64encode(b"\x02" + bytes(60)).decode().rstrip("="),
         "unsupported_version"),
    ],
)  # fmt: skip
def test_malformed_text(text: str, reason: str) -> None:
    with pytest.raises(DecryptionError) as info:
        Envelope.from_text(text)
    assert info.value.reason == reason


def test_text_version_must_match_binary() -> None:
    raw = seal(AEAD, KEY_ID, 1, b"x", CTX).to_bytes()
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(DecryptionError, match="not canonical"):
        Envelope.from_text("enc:v9:" + body)


def test_non_canonical_base64_is_refused() -> None:
    text = seal(AEAD, KEY_ID, 1, b"x", CTX).to_text()
    # The last character carries unused low bits; changing only those keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(text[-1])
    spare = len(Envelope.from_text(text).to_bytes()) * 8 % 6
    assert spare, "the test needs a length whose base64 leaves spare bits"
    twin = text[:-1] + alphabet[last ^ 1]
    decoded = base64.urlsafe_b64decode(twin[7:] + "=" * (-len(twin[7:]) % 4))
    assert decoded == Envelope.from_text(text).to_bytes()  # same bytes, other spelling
    with pytest.raises(DecryptionError, match="not canonical"):
        Envelope.from_text(twin)
