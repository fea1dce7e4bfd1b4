"""FieldCipher end to end, and tampering: every bit flip, every truncation, every swap."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from engram.crypto import FieldCipher, FieldContext, Keyring
from engram.crypto.protect import Column, SealedPage
from engram.errors import DecryptionError

CTX = FieldContext("acme", "messages", "content", "11111111-2222-4333-8444-555555555555")
PLAINTEXTS = ["", "a", "Patient MRN 00123456 has type 2 diabetes; call +44 20 7946 0958"]


def _in_a_page(cipher: FieldCipher, raw: bytes, ctx: FieldContext) -> bytes:
    """Open `raw` as reads do, among a page of others; raise what it fails with."""
    good = cipher.encrypt_bytes(b"other", ctx, key_id=cipher.keyring.key_for("acme", "user-2"))
    opened = cipher.decrypt_many([(good, ctx), (raw, ctx), (good, ctx)])
    assert opened[0] == opened[2] == b"other"  # one bad field spoils nothing else
    if isinstance(opened[1], DecryptionError):
        raise opened[1]
    return opened[1]


def _in_rows(cipher: FieldCipher, raw: bytes, ctx: FieldContext) -> bytes:
    """Open `raw` as the API's reads do: a field of a page of rows (SealedPage), between
    two rows that open; raise what it fails with."""
    key_id = cipher.keyring.key_for(ctx.tenant, "user-2")
    rows: list[dict[str, object]] = []
    for row_id in ("row-before", ctx.row_id, "row-after"):
        where = dataclasses.replace(ctx, row_id=row_id)
        rows.append({"id": row_id, "enc": cipher.encrypt_bytes(b"other", where, key_id=key_id)})
    rows[1]["enc"] = raw
    page = SealedPage(cipher, ctx.tenant, rows, [Column("enc", "text", ctx.table, ctx.column)],
                      "id")  # fmt: skip
    errors = page.open()
    assert rows[0]["text"] == rows[2]["text"] == "other"  # one bad field spoils nothing else
    if errors:
        assert len(errors) == 1 and "text" not in rows[1]
        raise errors[0]
    text = rows[1]["text"]
    assert isinstance(text, str)
    return text.encode()


# Every way a binary ciphertext is opened: alone, in a list, in a page of rows.
OPEN = {
    "alone": lambda c, raw, ctx: c.decrypt_bytes(raw, ctx),
    "page": _in_a_page,
    "rows": _in_rows,
}


@pytest.mark.parametrize("plaintext", [*PLAINTEXTS, "Grüße 🌍" * 100])
def test_round_trip_text_and_binary(cipher: FieldCipher, keyring: Keyring, plaintext: str) -> None:
    key_id = keyring.key_for("acme", "user-1")
    token = cipher.encrypt(plaintext, CTX, key_id=key_id)
    assert len(plaintext) < 8 or plaintext[:8] not in token
    assert cipher.decrypt(token, CTX) == plaintext
    raw = cipher.encrypt_bytes(plaintext.encode(), CTX, key_id=key_id)
    assert cipher.decrypt_bytes(raw, CTX) == plaintext.encode()


def test_one_key_per_tenant_and_user(keyring: Keyring) -> None:
    a = keyring.key_for("acme", "u1")
    assert keyring.key_for("acme", "u1") == a
    assert (
        len(
            {
                a,
                keyring.key_for("acme", "u2"),
                keyring.key_for("acme"),
                keyring.key_for("other", "u1"),
            }
        )
        == 4
    )


def _region(i: int) -> str:
    return "version" if i == 0 else "key_id" if i < 17 else "key_version" if i < 21 else "body"


@pytest.mark.parametrize("how", OPEN)
def test_every_bit_flip_is_rejected(cipher: FieldCipher, keyring: Keyring, how: str) -> None:
    key_id = keyring.key_for("acme", "user-1")
    reasons: Counter[tuple[str, str]] = Counter()
    for plaintext in PLAINTEXTS:
        raw = cipher.encrypt_bytes(plaintext.encode(), CTX, key_id=key_id)
        for bit in range(len(raw) * 8):
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(DecryptionError) as info:
                OPEN[how](cipher, bytes(flipped), CTX)
            reasons[(_region(bit // 8), info.value.reason)] += 1
    assert set(reasons) == {
        ("version", "unsupported_version"),
        ("key_id", "unknown_key"),
        ("key_version", "unknown_key"),
        ("body", "authentication_failed"),
    }


@pytest.mark.parametrize("how", OPEN)
def test_every_truncation_and_extension_is_rejected(
    cipher: FieldCipher, keyring: Keyring, how: str
) -> None:
    key_id = keyring.key_for("acme", "user-1")
    for plaintext in PLAINTEXTS:
        raw = cipher.encrypt_bytes(plaintext.encode(), CTX, key_id=key_id)
        assert OPEN[how](cipher, raw, CTX) == plaintext.encode()
        for n in range(len(raw)):
            with pytest.raises(DecryptionError):
                OPEN[how](cipher, raw[:n], CTX)
        with pytest.raises(DecryptionError):
            OPEN[how](cipher, raw + b"\x00", CTX)
        text = cipher.encrypt(plaintext, CTX, key_id=key_id)
        for n in range(len(text)):
            with pytest.raises(DecryptionError):
                cipher.decrypt(text[:n], CTX)


def test_every_character_change_of_the_text_form_is_rejected(
    cipher: FieldCipher, keyring: Keyring
) -> None:
    key_id = keyring.key_for("acme", "user-1")
    text = cipher.encrypt("hello world", CTX, key_id=key_id)
    for i, ch in enumerate(text):
        for other in {"A", "b", "-", "_", "9"} - {ch}:
            with pytest.raises(DecryptionError):
                cipher.decrypt(text[:i] + other + text[i + 1 :], CTX)


@pytest.mark.parametrize("field", ["table", "column", "row_id"])
def test_copy_to_another_row_column_or_table_is_rejected(
    cipher: FieldCipher, keyring: Keyring, field: str
) -> None:
    key_id = keyring.key_for("acme", "user-1")
    token = cipher.encrypt("secret", CTX, key_id=key_id)
    raw = cipher.encrypt_bytes(b"secret", CTX, key_id=key_id)
    other = {
        "table": "facts",
        "column": "metadata",
        "row_id": "11111111-2222-4333-8444-555555555556",
    }
    moved = dataclasses.replace(CTX, **{field: other[field]})
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(token, moved)
    assert info.value.reason == "authentication_failed"
    for how in ("page", "rows"):
        with pytest.raises(DecryptionError) as info:
            OPEN[how](cipher, raw, moved)
        assert info.value.reason == "authentication_failed"


def test_copy_to_another_tenant_is_rejected(cipher: FieldCipher, keyring: Keyring) -> None:
    token = cipher.encrypt("secret", CTX, key_id=keyring.key_for("acme", "user-1"))
    raw = cipher.encrypt_bytes(b"secret", CTX, key_id=keyring.key_for("acme", "user-1"))
    keyring.key_for("globex", "user-1")
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(token, dataclasses.replace(CTX, tenant="globex"))
    assert info.value.reason == "wrong_owner"
    globex = cipher.decrypt_many([(raw, dataclasses.replace(CTX, tenant="globex"))])[0]
    assert isinstance(globex, DecryptionError) and globex.reason == "wrong_owner"
    with pytest.raises(DecryptionError) as info:
        _in_rows(cipher, raw, dataclasses.replace(CTX, tenant="globex"))
    assert info.value.reason == "wrong_owner"


def test_swapping_two_rows_ciphertexts_is_rejected(cipher: FieldCipher, keyring: Keyring) -> None:
    key_id = keyring.key_for("acme", "user-1")
    row_a, row_b = CTX, dataclasses.replace(CTX, row_id="row-b")
    a, b = (
        cipher.encrypt("for a", row_a, key_id=key_id),
        cipher.encrypt("for b", row_b, key_id=key_id),
    )
    for token, ctx in ((a, row_b), (b, row_a)):
        with pytest.raises(DecryptionError):
            cipher.decrypt(token, ctx)


def test_swapping_context_values_between_fields_is_rejected(
    cipher: FieldCipher, keyring: Keyring
) -> None:
    ctx = FieldContext("acme", "t", "c", "r")
    token = cipher.encrypt("x", ctx, key_id=keyring.key_for("acme"))
    for swapped in (
        FieldContext("acme", "c", "t", "r"),
        FieldContext("acme", "t", "r", "c"),
        FieldContext("acme", "r", "c", "t"),
    ):
        with pytest.raises(DecryptionError):
            cipher.decrypt(token, swapped)


def test_reencrypt_moves_to_the_primary_version(cipher: FieldCipher, keyring: Keyring) -> None:
    key_id = keyring.key_for("acme", "user-1")
    old = cipher.encrypt("keep me", CTX, key_id=key_id)
    assert cipher.reencrypt(old, CTX) is None
    keyring.rotate(key_id)
    new = cipher.reencrypt(old, CTX)
    assert new is not None and new != old
    assert cipher.decrypt(new, CTX) == cipher.decrypt(old, CTX) == "keep me"
    assert cipher.reencrypt(new, CTX) is None
