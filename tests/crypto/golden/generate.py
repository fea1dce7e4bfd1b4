"""Write the golden corpus ONCE: `python tests/crypto/golden/generate.py [--force]`.

`--profile` writes `profile.json` (once) beside it: a user's protected fields as
`seal_profile` stores them in one ciphertext (migration 0017), under a corpus key.

The corpus pins the ciphertext format and the `local` provider's wrapped-key format:
every later Engram must open it (tests/crypto/test_golden.py). Never regenerate it to
make a failing test pass; a failure there means stored data would become unreadable.
The key material here is for this test only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engram.crypto import FieldCipher, FieldContext, seal
from engram.crypto.providers import LocalKeyProvider

HERE = Path(__file__).parent
KEK_FILE = HERE / "kek.json"
CORPUS = HERE / "corpus.json"


def fixed(label: str) -> bytes:
    return hashlib.sha256(f"engram golden test key: {label}".encode()).digest()


def main(force: bool) -> None:
    if (KEK_FILE.exists() or CORPUS.exists()) and not force:
        sys.exit("the golden corpus exists; it must not change (pass --force only for a new one)")
    kek = {
        "format": "engram-kek/1",
        "id": "901de0c0ffee",
        "primary": 2,
        "keys": {
            str(v): {
                "key": base64.b64encode(fixed(f"KEK v{v}")).decode(),
                "created": "2026-01-01T00:00:00+00:00",
            }
            for v in (1, 2)
        },
    }
    KEK_FILE.write_text(json.dumps(kek, indent=2) + "\n")
    os.chmod(KEK_FILE, 0o600)
    provider = LocalKeyProvider(KEK_FILE)
    keys = [
        # key id, version, tenant, user, KEK version
        ("6f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5", 1, "acme", "alice", 1),
        ("6f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5", 2, "acme", "alice", 2),
        ("0b7e5a4c-1d2f-4e3a-9b8c-7d6e5f4a3b2c", 1, "globex", None, 2),
    ]
    records = []
    for key_id, version, tenant, user, kek_version in keys:
        dek = fixed(f"DEK {key_id} v{version}")
        wrapped = provider.wrap(dek, f"{kek['id']}/{kek_version}")
        records.append(
            {
                "key_id": key_id,
                "version": version,
                "tenant": tenant,
                "user": user,
                "dek_hex": dek.hex(),
                "provider": wrapped.provider,
                "kek_id": wrapped.kek_id,
                "wrapped_b64": base64.b64encode(wrapped.blob).decode(),
            }
        )
    plaintexts = [
        "",
        "hello",
        "Grüße aus Köln — 世界 🌍",
        "Patient MRN 00123456, SSN 536-22-5487, card 4111 1111 1111 1111",
        "x" * 1000,
    ]
    entries = []
    for i, rec in enumerate(records):
        aead = AESGCM(bytes.fromhex(rec["dek_hex"]))
        for j, text in enumerate(plaintexts):
            ctx = FieldContext(
                rec["tenant"], ("messages", "facts")[j % 2], "content", f"row-{i}-{j}"
            )
            env = seal(aead, UUID(rec["key_id"]), rec["version"], text.encode(), ctx)
            form = "binary" if j == 3 else "text"
            entries.append(
                {
                    "context": {
                        "tenant": ctx.tenant,
                        "table": ctx.table,
                        "column": ctx.column,
                        "row_id": ctx.row_id,
                    },
                    "plaintext": text,
                    "form": form,
                    "ciphertext": env.to_bytes().hex() if form == "binary" else env.to_text(),
                }
            )
    CORPUS.write_text(
        json.dumps(
            {"format_version": 1, "kek_file": KEK_FILE.name, "keys": records, "entries": entries},
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )


PROFILE = HERE / "profile.json"


def profile() -> None:
    """A user row's `profile_enc` as Engram writes it, and what reading it must give."""
    import orjson

    from engram.config import CryptoSettings
    from engram.crypto import DataKeyCache, DataKeyRecord, KeyState, MemoryKeyStore
    from engram.crypto.protect import Keyrings, Protector
    from engram.crypto.providers import WrappedDek

    if PROFILE.exists():
        sys.exit("the golden profile exists; it must not change")
    corpus = json.loads(CORPUS.read_text())
    store = MemoryKeyStore()
    key = next(k for k in corpus["keys"] if k["user"] == "alice" and k["version"] == 2)
    for k in corpus["keys"]:
        if k["key_id"] == key["key_id"]:
            state = KeyState.PRIMARY if k is key else KeyState.ACTIVE
            wrapped = WrappedDek(k["provider"], k["kek_id"], base64.b64decode(k["wrapped_b64"]))
            store.put(DataKeyRecord(UUID(k["key_id"]), k["version"], k["tenant"], k["user"],
                                    state, wrapped, datetime.now(UTC)))  # fmt: skip
    rings = Keyrings(LocalKeyProvider(KEK_FILE), lambda _: store, DataKeyCache())
    protector = Protector(CryptoSettings(), rings)
    row_id = "3f6c2a1e-8b4d-4e7a-9c1f-2d3e4f5a6b7c"
    identity = {"email": "alice@example.org", "first_name": "Alice", "last_name": "Liddell"}
    metadata = {"phone": "+44 20 7946 0958", "plan": "pro", "tags": ["a", 1, None]}
    ref = protector.key_ref("acme", "alice", looked_up=True, key_id=UUID(key["key_id"]))
    sealed = protector.seal_profile("acme", row_id, "alice", identity, metadata, ref)
    assert sealed.ciphertext is not None
    stored = {**sealed.identity, "metadata": sealed.metadata}
    ctx = FieldContext("acme", "users", "profile", row_id)
    inside = FieldCipher(rings.get("acme")).decrypt_bytes(sealed.ciphertext, ctx)
    golden = {
        "tenant": "acme",
        "uuid": row_id,
        "profile_enc": sealed.ciphertext.hex(),
        "stored": stored,  # the plain columns: redacted forms
        "sealed": orjson.loads(inside),  # the JSON object inside the ciphertext
        "read": {**identity, "metadata": metadata},  # what a reader allowed to see gets
    }
    PROFILE.write_text(json.dumps(golden, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if "--profile" in sys.argv:
        profile()
    else:
        main(force="--force" in sys.argv)
