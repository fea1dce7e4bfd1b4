"""Time expressions in English text, resolved against the time a message was written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

__all__ = ["Grain", "TimeMention", "find_times", "resolve_time"]

Grain = Literal["day", "week", "weekend", "month", "season", "year"]

MONTHS = {
    name: i + 1
    for i, name in enumerate(
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ]
    )
}
MONTHS.update({name[:3]: num for name, num in list(MONTHS.items())})
MONTHS["sept"] = 9
WEEKDAYS = {
    name: i
    for i, name in enumerate(
        ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    )
}
SEASONS = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}
NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "a couple of": 2, "a couple": 2, "couple of": 2, "a few": 3, "few": 3, "several": 3,
}  # fmt: skip
MONTH_NAMES = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

_MON = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d\d"
_NUM = r"(?:\d{1,2}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
_NUM += r"|a couple(?: of)?|couple of|a few|few|several)"
_WD = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_PREP = r"(?:\b(?P<prep>on|in|at|during|back in|around|over|by|since|until|from|before|after)\s+)?"

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("iso", re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})\b")),
    ("slash", re.compile(r"\b(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4}|\d{2})\b")),
    ("dmy", re.compile(rf"\b(?P<d>{_DAY})(?: of)? (?P<mon>{_MON})(?:,? (?P<y>{_YEAR}))?\b")),
    ("mdy", re.compile(rf"\b(?P<mon>{_MON}) (?P<d>{_DAY})\b(?:,? (?P<y>{_YEAR}))?\b")),
    ("monyear", re.compile(rf"\b(?P<mon>{_MON}),? (?P<y>{_YEAR})\b")),
    ("ago", re.compile(rf"\b(?P<n>{_NUM}) (?P<unit>day|week|month|year)s? ago\b", re.I)),
    ("inn", re.compile(rf"\bin (?P<n>{_NUM}) (?P<unit>day|week|month|year)s?\b", re.I)),
    ("daybefore", re.compile(r"\bthe day before yesterday\b", re.I)),
    ("dayafter", re.compile(r"\bthe day after tomorrow\b", re.I)),
    ("deictic", re.compile(r"\b(?P<w>yesterday|today|tonight|tomorrow|last night)\b", re.I)),
    ("partofday", re.compile(r"\bthis (?:morning|afternoon|evening)\b", re.I)),
    (
        "relwd",
        re.compile(rf"\b(?P<rel>last|this|next|this past|this coming) (?P<wd>{_WD})\b", re.I),
    ),
    (
        "relunit",
        re.compile(
            r"\b(?P<rel>last|this|next|this past|the past|the last)"
            r" (?P<unit>week|weekend|month|year|spring|summer|fall|autumn|winter)\b",
            re.I,
        ),
    ),
    ("relmon", re.compile(rf"\b(?P<rel>last|this|next) (?P<mon>{_MON})\b")),
    ("weekend", re.compile(r"\b(?:over )?the weekend\b", re.I)),
    ("wd", re.compile(rf"\b(?:on )?(?P<wd>{_WD})\b", re.I)),
    ("year", re.compile(rf"\b(?:in|since|back in|during|from|by|until|of) (?P<y>{_YEAR})\b")),
    ("inmon", re.compile(rf"\b(?:in|since|during|by|until|early|late|mid) (?P<mon>{_MON})\b")),
]
_EXPLICIT = frozenset({"iso", "slash", "dmy", "mdy", "monyear", "year", "inmon"})
_PREP_RE = re.compile(_PREP + r"$", re.I)


@dataclass(frozen=True)
class TimeMention:
    """A time expression found in a text, with the absolute time it denotes."""

    start: int
    end: int
    text: str
    when: datetime
    grain: Grain
    bare: bool = False  # follows since/until/from...: rendered without a preposition
    explicit: bool = False  # written as a date ("8 May 2023", "in 2022"), not relative

    def phrase(self) -> str:
        """The absolute form that replaces the expression in a fact: "on 7 May 2023"."""
        w = self.when
        date = f"{w.day} {MONTH_NAMES[w.month - 1]} {w.year}"
        body, prep = {
            "day": (date, "on"),
            "week": (f"the week of {date}", "in"),
            "weekend": (f"the weekend of {date}", "on"),
            "month": (f"{MONTH_NAMES[w.month - 1]} {w.year}", "in"),
            "season": (f"{_season_name(w.month)} {w.year}", "in"),
            "year": (str(w.year), "in"),
        }[self.grain]
        return body if self.bare else f"{prep} {body}"

    def label(self) -> str:
        """The expression's absolute form without a preposition: "7 May 2023"."""
        return TimeMention(self.start, self.end, self.text, self.when, self.grain, True).phrase()


def _season_name(month: int) -> str:
    return {3: "spring", 6: "summer", 9: "autumn", 12: "winter"}.get(month, "summer")


def _day(ref: datetime, offset: int = 0) -> datetime:
    start = ref.replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=offset)


def _month(year: int, month: int, ref: datetime) -> datetime:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return ref.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


def _safe_date(ref: datetime, year: int, month: int, day: int) -> datetime | None:
    try:
        return ref.replace(
            year=year, month=month, day=day, hour=0, minute=0, second=0, microsecond=0
        )
    except ValueError:
        return None


def _nearest_year(ref: datetime, month: int, day: int = 1) -> int:
    """The year that puts month/day closest to ref (a past date wins a tie)."""
    best = ref.year
    best_gap: float | None = None
    for year in (ref.year - 1, ref.year, ref.year + 1):
        cand = _safe_date(ref, year, month, min(day, 28))
        if cand is None:
            continue
        gap = abs((cand - ref).total_seconds()) + (1 if cand > ref else 0)
        if best_gap is None or gap < best_gap:
            best, best_gap = year, gap
    return best


def _num(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else NUMBERS.get(word, 1)


def _shift(ref: datetime, n: int, unit: str) -> tuple[datetime, Grain]:
    unit = unit.lower()
    if unit == "day":
        return _day(ref, n), "day"
    if unit == "week":
        monday = _day(ref, n * 7 - ref.weekday())
        return monday, "week"
    if unit == "month":
        return _month(ref.year, ref.month + n, ref), "month"
    return _month(ref.year + n, 1, ref), "year"


def _rel_unit(ref: datetime, rel: str, unit: str) -> tuple[datetime, Grain]:
    rel = rel.lower()
    unit = unit.lower()
    step = {"last": -1, "the last": -1, "the past": -1, "this past": -1, "next": 1}.get(rel, 0)
    if unit == "weekend":
        saturday = _day(ref, 5 - ref.weekday())
        if step < 0 or (step == 0 and rel == "this past"):
            saturday -= timedelta(days=7)
        elif step > 0:
            saturday += timedelta(days=7)
        return saturday, "weekend"
    if unit in SEASONS:
        month = SEASONS[unit]
        year = ref.year
        start = _month(year, month, ref)
        if step < 0 and start > ref:
            year -= 1
        elif step > 0 and start <= ref:
            year += 1
        return _month(year, month, ref), "season"
    return _shift(ref, step, unit)


def _weekday(ref: datetime, rel: str, wd: int) -> datetime:
    rel = rel.lower()
    delta = (ref.weekday() - wd) % 7
    if rel in ("next", "this coming") or (rel == "this" and delta != 0 and wd > ref.weekday()):
        ahead = (wd - ref.weekday()) % 7 or 7
        return _day(ref, ahead)
    if rel in ("last", "this past"):
        return _day(ref, -(delta or 7))
    return _day(ref, -delta)


def _match(kind: str, m: re.Match[str], ref: datetime) -> tuple[datetime, Grain] | None:
    g = m.groupdict()
    if kind == "iso":
        when = _safe_date(ref, int(g["y"]), int(g["m"]), int(g["d"]))
        return (when, "day") if when else None
    if kind == "slash":
        a, b, y = int(g["a"]), int(g["b"]), int(g["y"])
        y = y + 2000 if y < 100 else y
        month, day = (a, b) if a <= 12 else (b, a)
        when = _safe_date(ref, y, month, day)
        return (when, "day") if when else None
    if kind in ("dmy", "mdy"):
        month = MONTHS[g["mon"].rstrip(".").lower()]
        day = int(re.sub(r"\D", "", g["d"]))
        year = int(g["y"]) if g.get("y") else _nearest_year(ref, month, day)
        when = _safe_date(ref, year, month, day)
        return (when, "day") if when else None
    if kind == "monyear":
        return _month(int(g["y"]), MONTHS[g["mon"].rstrip(".").lower()], ref), "month"
    if kind in ("ago", "inn"):
        n = _num(g["n"])
        return _shift(ref, -n if kind == "ago" else n, g["unit"])
    if kind == "daybefore":
        return _day(ref, -2), "day"
    if kind == "dayafter":
        return _day(ref, 2), "day"
    if kind == "deictic":
        w = g["w"].lower()
        offset = {"yesterday": -1, "tomorrow": 1, "last night": -1}.get(w, 0)
        return _day(ref, offset), "day"
    if kind == "partofday":
        return _day(ref), "day"
    if kind == "relwd":
        return _weekday(ref, g["rel"], WEEKDAYS[g["wd"].lower()]), "day"
    if kind == "relunit":
        return _rel_unit(ref, g["rel"], g["unit"])
    if kind == "relmon":
        month = MONTHS[g["mon"].rstrip(".").lower()]
        year = ref.year
        if g["rel"] == "last" and month >= ref.month:
            year -= 1
        elif g["rel"] == "next" and month <= ref.month:
            year += 1
        return _month(year, month, ref), "month"
    if kind == "weekend":
        return _day(ref, -((ref.weekday() - 5) % 7)), "weekend"
    if kind == "wd":
        return _weekday(ref, "", WEEKDAYS[g["wd"].lower()]), "day"
    if kind == "year":
        return _month(int(g["y"]), 1, ref), "year"
    if kind == "inmon":
        month = MONTHS[g["mon"].rstrip(".").lower()]
        return _month(_nearest_year(ref, month), month, ref), "month"
    return None


def find_times(text: str, ref: datetime) -> list[TimeMention]:
    """Every time expression in text, left to right, resolved against ref."""
    found: list[TimeMention] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            start, end = m.start(), m.end()
            if any(start < e and end > s for s, e in taken):
                continue
            resolved = _match(kind, m, ref)
            if resolved is None:
                continue
            when, grain = resolved
            # Take the preposition in front ("on Saturday"), so the absolute form replaces it.
            bare = False
            before = _PREP_RE.search(text[max(0, start - 12) : start])
            word = m.group(0).split(" ", 1)[0].lower()
            if word in ("in", "since", "back", "during", "from", "by", "until", "of", "on"):
                bare = word not in ("in", "back", "during", "on")
                if bare:
                    start += len(word) + 1
            elif before and before.group("prep"):
                prep = before.group("prep").lower()
                bare = prep in ("since", "until", "from", "before", "after", "by")
                if not bare:
                    start -= len(before.group(0))
            taken.append((start, end))
            explicit = kind in _EXPLICIT
            found.append(TimeMention(start, end, text[start:end], when, grain, bare, explicit))
    found.sort(key=lambda t: t.start)
    return found


def resolve_time(text: str, ref: datetime) -> datetime | None:
    """The time of the first expression in text, or None when it names no time."""
    times = find_times(text, ref)
    return times[0].when if times else None
