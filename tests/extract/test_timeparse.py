"""Time expressions resolve against the message time, into the fact's valid_at and text."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from engram.extract.timeparse import find_times, resolve_time

# Monday 8 May 2023, 13:56 UTC
REF = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "day", "phrase"),
    [
        ("I went there yesterday", date(2023, 5, 7), "on 7 May 2023"),
        ("we met the day before yesterday", date(2023, 5, 6), "on 6 May 2023"),
        ("I ran a race last Saturday", date(2023, 5, 6), "on 6 May 2023"),
        ("I saw her on Friday", date(2023, 5, 5), "on 5 May 2023"),
        ("two weeks ago we adopted a cat", date(2023, 4, 24), "in the week of 24 April 2023"),
        ("a few days ago it rained", date(2023, 5, 5), "on 5 May 2023"),
        ("3 days ago", date(2023, 5, 5), "on 5 May 2023"),
        ("a couple of months ago", date(2023, 3, 1), "in March 2023"),
        ("I moved to Lisbon last year", date(2022, 1, 1), "in 2022"),
        ("last month I quit", date(2023, 4, 1), "in April 2023"),
        ("last week was busy", date(2023, 5, 1), "in the week of 1 May 2023"),
        ("we camped last weekend", date(2023, 5, 6), "on the weekend of 6 May 2023"),
        ("last summer we went to Spain", date(2022, 6, 1), "in summer 2022"),
        ("I graduated in 2019", date(2019, 1, 1), "in 2019"),
        ("back in 2015 I lived there", date(2015, 1, 1), "in 2015"),
        ("in August 2022 I started", date(2022, 8, 1), "in August 2022"),
        ("in March I painted it", date(2023, 3, 1), "in March 2023"),
        ("we married on 3 June 2021", date(2021, 6, 3), "on 3 June 2021"),
        ("we married on June 3rd, 2021", date(2021, 6, 3), "on 3 June 2021"),
        ("it opened on 2023-04-01", date(2023, 4, 1), "on 1 April 2023"),
        ("it opened on 04/01/2023", date(2023, 4, 1), "on 1 April 2023"),
        ("it opened on 25/12/2022", date(2022, 12, 25), "on 25 December 2022"),
        ("my birthday is May 20", date(2023, 5, 20), "May 20"),
        ("I start next month", date(2023, 6, 1), "in June 2023"),
        ("see you tomorrow", date(2023, 5, 9), "on 9 May 2023"),
        ("this morning I ran", date(2023, 5, 8), "on 8 May 2023"),
    ],
)
def test_expression_resolves(text: str, day: date, phrase: str) -> None:
    (mention,) = find_times(text, REF)
    assert mention.when.date() == day
    assert mention.when.tzinfo is UTC
    if phrase != "May 20":
        assert mention.phrase() == phrase


def test_since_keeps_its_preposition() -> None:
    text = "I have lived here since 2020"
    (mention,) = find_times(text, REF)
    assert text[: mention.start] + mention.phrase() + text[mention.end :] == (
        "I have lived here since 2020"
    )
    (mention,) = find_times("since last year", REF)
    assert mention.phrase() == "2022"


def test_the_preposition_in_front_is_replaced_with_the_expression() -> None:
    text = "I went hiking on Saturday with Tom"
    (mention,) = find_times(text, REF)
    assert text[: mention.start] + mention.phrase() + text[mention.end :] == (
        "I went hiking on 6 May 2023 with Tom"
    )


def test_a_word_ending_in_a_preposition_is_not_taken() -> None:
    (mention,) = find_times("I moved to Lisbon last year", REF)
    assert mention.text == "last year"


def test_no_expression_gives_none() -> None:
    assert resolve_time("I love painting with my kids", REF) is None
    assert resolve_time("I may go", REF) is None
    assert resolve_time("2000 people came", REF) is None


def test_a_date_without_year_takes_the_nearest_year() -> None:
    december = datetime(2023, 1, 10, tzinfo=UTC)
    assert resolve_time("on December 24", december) == datetime(2022, 12, 24, tzinfo=UTC)
    assert resolve_time("in December", december) == datetime(2022, 12, 1, tzinfo=UTC)


def test_the_reference_timezone_is_kept() -> None:
    tz = timezone(timedelta(hours=2))
    ref = datetime(2023, 5, 8, 1, 0, tzinfo=tz)
    assert resolve_time("yesterday", ref) == datetime(2023, 5, 7, tzinfo=tz)


def test_explicit_dates_are_flagged() -> None:
    explicit, relative = find_times("on 3 June 2021, two days ago", REF)
    assert explicit.explicit and explicit.label() == "3 June 2021"
    assert not relative.explicit
