"""Sensitivity classes order, parse and combine; caller metadata is checked."""

from __future__ import annotations

import pytest

from engram.crypto import Sensitivity, combine, from_metadata
from engram.errors import ValidationError


def test_order_is_none_pii_phi_secret() -> None:
    assert Sensitivity.NONE < Sensitivity.PII < Sensitivity.PHI < Sensitivity.SECRET
    assert [s.label for s in Sensitivity] == ["none", "pii", "phi", "secret"]


def test_combine_takes_the_highest() -> None:
    assert combine() is Sensitivity.NONE
    assert combine(Sensitivity.PII, [Sensitivity.SECRET, Sensitivity.NONE]) is Sensitivity.SECRET
    assert combine([], Sensitivity.PHI) is Sensitivity.PHI


def test_metadata_sensitivity() -> None:
    assert from_metadata(None) is Sensitivity.NONE
    assert from_metadata({"other": 1}) is Sensitivity.NONE
    assert from_metadata({"sensitivity": "PHI"}) is Sensitivity.PHI
    assert from_metadata({"sensitivity": " secret "}) is Sensitivity.SECRET


@pytest.mark.parametrize("value", ["top", 3, ["phi"]])
def test_bad_metadata_sensitivity_names_the_field(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        from_metadata({"sensitivity": value})
    assert info.value.field == "metadata.sensitivity"
    assert "none, pii, phi, secret" in str(info.value)
