"""Check digits: real identifiers pass, one-digit changes fail."""

from __future__ import annotations

import pytest

from engram.crypto.checksums import (
    bsn_valid,
    dni_valid,
    iban_valid,
    luhn_valid,
    nhs_valid,
    nino_valid,
    ssn_valid,
)


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (luhn_valid, "4111111111111111", "4111111111111112"),
        (luhn_valid, "378282246310005", "378282246310006"),
        (iban_valid, "GB82WEST12345698765432", "GB82WEST12345698765433"),
        (iban_valid, "DE89370400440532013000", "DE89370400440532013001"),
        (iban_valid, "NL91ABNA0417164300", "NL91ABNA041716430"),  # too short for NL
        (bsn_valid, "111222333", "111222334"),
        (nhs_valid, "9434765919", "9434765918"),
        (dni_valid, "12345678Z", "12345678A"),
        (dni_valid, "X1234567L", "X1234567A"),
        (nino_valid, "AB123456C", "GB123456A"),  # GB is never allocated
    ],
)
def test_check_digits(check: object, good: str, bad: str) -> None:
    assert callable(check)
    assert check(good) is True
    assert check(bad) is False


@pytest.mark.parametrize(
    ("ssn", "valid"),
    [
        ("536-22-5487", True),
        ("000-12-3456", False),
        ("666-12-3456", False),
        ("912-12-3456", False),
        ("123-00-4567", False),
        ("123-45-0000", False),
        ("078-05-1120", False),  # the Woolworth wallet card number
    ],
)
def test_ssn_validity_rules(ssn: str, valid: bool) -> None:
    assert ssn_valid(*ssn.split("-")) is valid


def test_iban_rejects_unknown_country_and_junk() -> None:
    assert not iban_valid("QQ82WEST12345698765432")
    assert not iban_valid("GB82WEST1234569876543!")
    assert not iban_valid("GBXXWEST12345698765432")
