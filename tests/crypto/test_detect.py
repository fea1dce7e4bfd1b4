"""Detectors: true positives by type, near misses left alone, redaction and classification."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

from engram.config import CryptoSettings
from engram.crypto import DETECTOR_KINDS, Classifier, Sensitivity, detect, redact
from engram.crypto.detectors import Detector
from engram.errors import ConfigError, ValidationError

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)

POSITIVES = [
    # (text, the sensitive value in it, its type)
    ("write to bob.smith+notes@example.co.uk today", "bob.smith+notes@example.co.uk", "email"),
    ("call +44 20 7946 0958 tomorrow", "+44 20 7946 0958", "phone"),
    ("call +1 (415) 555-2671", "+1 (415) 555-2671", "phone"),
    ("office (415) 555-2671.", "(415) 555-2671", "phone"),
    ("cell 415.555.2671", "415.555.2671", "phone"),
    ("ring 020 7946 0958", "020 7946 0958", "phone"),
    ("mobiel +31 6 12345678", "+31 6 12345678", "phone"),
    ("bel 06-12345678", "06-12345678", "phone"),
    ("phone: 4155552671", "4155552671", "phone"),
    ("my phone is 555 0100", "555 0100", "phone"),  # the fewest digits a phone has: 7
    ("my SSN is 536-22-5487", "536-22-5487", "ssn"),
    ("ssn 536 22 5487", "536 22 5487", "ssn"),
    ("Social Security number: 536225487", "536225487", "ssn"),
    ("BSN: 111222333", "111222333", "national_id"),
    ("DNI 12345678Z", "12345678Z", "national_id"),
    ("NIE X1234567L", "X1234567L", "national_id"),
    ("NI number AB 12 34 56 C", "AB 12 34 56 C", "national_id"),
    ("NHS number 943 476 5919", "943 476 5919", "health_id"),
    ("my nhs no. 943-476-5919", "943-476-5919", "health_id"),
    ("card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111", "payment_card"),
    ("amex 3782-822463-10005", "3782-822463-10005", "payment_card"),
    ("pay 5555555555554444 now", "5555555555554444", "payment_card"),
    ("old visa 4222222222222", "4222222222222", "payment_card"),  # 13 digits, the fewest
    ("card 4111 1111 1111 1111 123", "4111 1111 1111 1111", "payment_card"),  # CVC after
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32", "iban"),
    ("to NL91ABNA0417164300 BIC ABNANL2A", "NL91ABNA0417164300", "iban"),
    ("from 192.168.1.10:8080", "192.168.1.10", "ip_address"),
    ("v6 2001:db8::8a2e:370:7334 here", "2001:db8::8a2e:370:7334", "ip_address"),
    ("loopback ::1.", "::1", "ip_address"),
    ("mapped ::ffff:192.0.2.1 ok", "::ffff:192.0.2.1", "ip_address"),
    ("She was born on 12 March 1985 in Leeds", "12 March 1985", "date_of_birth"),
    ("DOB: 03/12/1985", "03/12/1985", "date_of_birth"),
    ("date of birth 1985-03-12", "1985-03-12", "date_of_birth"),
    ("birthday: March 12th, 1985", "March 12th, 1985", "date_of_birth"),
    ("born 1/2/90", "1/2/90", "date_of_birth"),  # 4 digits, the fewest
    ("MRN: 00123456", "00123456", "mrn"),
    ("medical record number A-123456", "A-123456", "mrn"),
    ("patient id #7788123", "7788123", "mrn"),
    ("MRN 1234", "1234", "mrn"),  # 4 digits, the fewest
    ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("gh ghp_" + "aB3" * 12, "ghp_" + "aB3" * 12, "api_key"),
    ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij", "api_key"),
    ("openai sk-proj-abcdefghijklmnopqrstuvwx", "sk-proj-abcdefghijklmnopqrstuvwx", "api_key"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "api_key"),
    (f"Authorization: Bearer {JWT}", JWT, "jwt"),
    ("api_key=Zx9Kq2Lm8Np4Rt6Vw1Yb3Cd5", "Zx9Kq2Lm8Np4Rt6Vw1Yb3Cd5", "secret"),
    ('"client_secret": "q8F2pL9xW3mZ7vB1nK5t"', "q8F2pL9xW3mZ7vB1nK5t", "secret"),
    ("password=hunter22", "hunter22", "secret"),
    ("dsn postgres://app:s3cr3tpw@db:5432/x", "s3cr3tpw", "secret"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34\n-----END RSA PRIVATE KEY-----",
        "private_key",
    ),
]


@pytest.mark.parametrize(("text", "value", "kind"), POSITIVES)
def test_detects(text: str, value: str, kind: str) -> None:
    spans = detect(text)
    assert [(text[s.start : s.end], s.kind) for s in spans] == [(value, kind)]


NEGATIVES = [
    "we met in 2024 and again in 1999",
    "order 12345 shipped; invoice 20240115",
    "between 1990 and 2000 prices rose 100 200 300 400",
    "the meeting is on 2024-01-15 at 12:30:45",
    "dates 12/03/2024 and 2024.03.12",
    "version 1.2.3.4 of the library; build v10.0.0.1",
    "std::vector and a::b are C++",
    "999.1.1.1 is not an address",
    "SSN 000-12-3456 and 666-12-3456 and 912-12-3456 are invalid",
    "SSN 123-00-4567 or 123-45-0000",
    "card 4111 1111 1111 1112 fails Luhn",
    "1111 1111 1111 1111 is one digit repeated",
    "IBAN GB82 WEST 1234 5698 7654 33 has a bad check",
    "BSN 111222334 fails the 11-proof",
    "DNI 12345678A has the wrong letter",
    "GB123456A is not an allocatable NINO",
    "NHS number 9434765918 fails mod 11",
    "MRN is pending; the patient id will follow",
    "api_key=YOUR_API_KEY and token=true and secret: ${SECRET}",
    "token=abcabcabcabcabcabc",  # long but not random
    "the meeting on 12 March 1985 was long",  # a date, but no birth keyword
    "eyJub3QiOiJhIGp3dCJ9.eyJzdWIiOiIxIn0.abcdefghijklmnop",  # header without alg
    "ghp_tooshort and AKIA123",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_leaves_near_misses_alone(text: str) -> None:
    assert detect(text) == []


def test_every_detector_kind_is_covered_by_a_positive() -> None:
    assert {kind for _, _, kind in POSITIVES} == DETECTOR_KINDS


def test_redact_replaces_values_with_markers_and_classifies() -> None:
    text = "Mail ann@example.com, SSN 536-22-5487, MRN: 00123456, key AKIAIOSFODNN7EXAMPLE."
    redacted, spans, level = redact(text)
    assert redacted == "Mail [EMAIL], SSN [SSN], MRN: [MRN], key [API_KEY]."
    assert [s.kind for s in spans] == ["email", "ssn", "mrn", "api_key"]
    assert [s.sensitivity for s in spans] == [
        Sensitivity.PII,
        Sensitivity.PII,
        Sensitivity.PHI,
        Sensitivity.SECRET,
    ]
    assert level is Sensitivity.SECRET
    assert redact("nothing to see") == ("nothing to see", (), Sensitivity.NONE)


def test_classes_by_type() -> None:
    assert redact("ip 10.0.0.1").sensitivity is Sensitivity.PII
    assert redact("NHS number 943 476 5919").sensitivity is Sensitivity.PHI
    assert redact("IBAN NL91ABNA0417164300").sensitivity is Sensitivity.PII
    assert redact("card 4111111111111111").sensitivity is Sensitivity.SECRET


def test_overlaps_go_to_the_more_specific_type() -> None:
    # A GitHub token after "token=" is one api_key, not also a generic secret.
    text = "token=ghp_" + "aB3" * 12
    assert [s.kind for s in detect(text)] == ["api_key"]
    # Digits of a card are not also a phone number.
    assert [s.kind for s in detect("4111-1111-1111-1111")] == ["payment_card"]


def test_classifier_combines_caller_policy_floor_and_detection() -> None:
    c = Classifier()
    assert c.classify("hello").sensitivity is Sensitivity.NONE
    assert c.classify("hello", metadata={"sensitivity": "phi"}).sensitivity is Sensitivity.PHI
    assert c.classify("a@b.io", metadata={"sensitivity": "none"}).sensitivity is Sensitivity.PII
    assert c.classify("a@b.io", policy=Sensitivity.SECRET).sensitivity is Sensitivity.SECRET
    floored = Classifier(floor=Sensitivity.PII)
    assert floored.classify("hello").sensitivity is Sensitivity.PII
    with pytest.raises(ValidationError):
        c.classify("x", metadata={"sensitivity": "very"})


def test_classifier_from_settings() -> None:
    c = Classifier.from_settings(
        CryptoSettings(protect=["phi", "secret"], disabled_detectors=["ip_address"], floor="none")
    )
    assert c.classify("ip 10.0.0.1").spans == ()
    assert not c.protects(Sensitivity.PII) and c.protects(Sensitivity.PHI)
    assert not c.protects(Sensitivity.NONE)
    assert Classifier().protects(Sensitivity.PII)
    with pytest.raises(ConfigError, match="unknown detector"):
        Classifier.from_settings(CryptoSettings(disabled_detectors=["emails"]))


def test_large_text_is_fast_enough() -> None:
    import time

    text = ("Lorem ipsum 2024 dolor sit amet, ann@example.com 192.168.0.1. " * 1000)[:65_536]
    start = time.perf_counter()
    spans = detect(text)
    assert time.perf_counter() - start < 2.0
    assert {s.kind for s in spans} == {"email", "ip_address"}


# Digits spelt as look-alike letters, "@" as " at "; and the same digits in another script.
_SPELT = str.maketrans({**dict(zip("0123456789", "olzeasgtbq", strict=True)), "@": " at "})
_ARABIC = str.maketrans(dict(zip("0123456789", "٠١٢٣٤٥٦٧٨٩", strict=True)))


def _one_digit_fewer(text: str) -> list[str]:
    """`text` with each of its digits left out in turn (the near misses of a digit count)."""
    return [text[:i] + text[i + 1 :] for i, c in enumerate(text) if c.isdigit()]


def test_skipping_a_detector_where_its_gates_fail_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A detector is not run on text that fails its gates (too few digits, no "@", no
    keyword): on the positives and near misses, on them with their digits and "@" spelt
    out or written in another script, and with one digit fewer, the spans are the same as
    with every detector run everywhere."""
    module = importlib.import_module("engram.crypto.detect")  # the package's `detect` is a function

    texts = [t for t, _, _ in POSITIVES] + NEGATIVES
    texts += [t.translate(_SPELT) for t in texts] + [t.translate(_ARABIC) for t in texts]
    texts += [fewer for t in texts for fewer in _one_digit_fewer(t)]
    gated = [detect(t) for t in texts]
    everywhere = tuple(dataclasses.replace(d, needs=None, min_digits=0) for d in module.DETECTORS)
    monkeypatch.setattr(module, "_enabled", lambda disabled: everywhere)
    assert [detect(t) for t in texts] == gated

    def skips(detector: Detector, text: str) -> bool:
        few = len(re.findall(r"\d", text)) < detector.min_digits
        return few or (detector.needs is not None and detector.needs.search(text) is None)

    # Every gate was tried where it skips, and where it lets the text through.
    for d in module.DETECTORS:
        if d.needs is not None or d.min_digits:
            assert any(skips(d, t) for t in texts) and not all(skips(d, t) for t in texts), d.kind
