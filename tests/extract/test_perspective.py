"""First-person sentences read in the third person, so that a fact stands on its own."""

from __future__ import annotations

import pytest

from engram.extract.perspective import third_person, third_person_verb


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I love painting with my kids", "Caroline loves painting with their kids"),
        ("I'm keen on counseling", "Caroline is keen on counseling"),
        ("I've been volunteering", "Caroline has been volunteering"),
        ("I don't like spicy food", "Caroline doesn't like spicy food"),
        ("I also try yoga", "Caroline also tries yoga"),
        ("I went there and I loved it", "Caroline went there and Caroline loved it"),
        ("My husband and I love hiking", "Caroline's husband and Caroline love hiking"),
        ("It made me feel accepted", "It made Caroline feel accepted"),
        ("I'd been there before", "Caroline had been there before"),
        ("I'd love to go", "Caroline would love to go"),
        ("We made pizza together", "Caroline and others made pizza together"),
    ],
)
def test_the_speaker_is_named(text: str, expected: str) -> None:
    assert third_person(text, "Caroline") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I know you love painting", "Caroline knows Melanie loves painting"),
        ("I'll send you the recipe", "Caroline will send Melanie the recipe"),
        ("how brave you are", "how brave Melanie is"),
        ("your painting is lovely", "Melanie's painting is lovely"),
        ("you guys are great", "Melanie is great"),
    ],
)
def test_the_listener_is_named(text: str, expected: str) -> None:
    assert third_person(text, "Caroline", "Melanie") == expected


def test_without_a_listener_you_stays() -> None:
    assert third_person("you're right", "Caroline") == "you're right"


@pytest.mark.parametrize(
    ("verb", "third"),
    [("love", "loves"), ("try", "tries"), ("go", "goes"), ("watch", "watches"),
     ("play", "plays"), ("need", "needs"), ("have", "has"), ("am", "is"), ("went", "went"),
     ("can", "can"), ("moved", "moved"), ("Love", "Loves")],
)  # fmt: skip
def test_verbs_agree_with_a_third_person_subject(verb: str, third: str) -> None:
    assert third_person_verb(verb) == third
