"""Entity name keys: how names that mean the same node are matched."""

from __future__ import annotations

from engram.graph.entities import normalize_name


def test_names_match_across_case_accents_punctuation_and_articles() -> None:
    assert normalize_name("The  Café!") == normalize_name("cafe") == "cafe"
    assert normalize_name("Bob Smith") == normalize_name("bob-smith")


def test_a_value_marker_is_not_the_word_it_spells() -> None:
    """An entity made from a protected value is named by its marker (``[PHONE]``): it
    must not become the node of the word "phone" (or of another marker)."""
    assert normalize_name("[PHONE]") == "[phone]"
    assert normalize_name("[PHONE]") not in {normalize_name("phone"), normalize_name("[EMAIL]")}
