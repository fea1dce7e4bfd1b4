"""The built-in detectors: each finds the spans of one type of sensitive value in text.

Payment card numbers count as `secret`, not `pii`: with an expiry date (often nearby)
a card number pays for things, and PCI DSS treats the number itself as cardholder data
to protect. IBANs are `pii`: an account number is given out to receive money and
cannot move it by itself.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engram.crypto.checksums import (
    IBAN_LENGTHS,
    bsn_valid,
    dni_valid,
    iban_valid,
    luhn_valid,
    nhs_valid,
    nino_valid,
    ssn_valid,
)
from engram.crypto.sensitivity import Sensitivity

__all__ = ["DETECTORS", "Detector"]

Finder = Callable[[str], Iterator[tuple[int, int]]]


@dataclass(frozen=True)
class Detector:
    """One type of sensitive value; `priority` decides between overlapping finds."""

    kind: str
    sensitivity: Sensitivity
    priority: int
    find: Finder
    # Cheap tests that every value of this type passes, so that where one fails `find`
    # would find nothing either and is not run. `needs`: a search that must find
    # something (an "@", a keyword); `min_digits`: how many digits (``\d``, any script)
    # the text must hold at least. Most text a person writes, names and e-mail addresses
    # included, has fewer than four digits, and then nine detectors of fourteen are
    # skipped after one count.
    needs: re.Pattern[str] | None = None
    min_digits: int = 0


def _matches(pattern: re.Pattern[str], group: int | str = 0) -> Finder:
    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in pattern.finditer(text):
            yield m.span(group)

    return find


# --- contact details -------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_PHONE_INTL = re.compile(r"(?<![\w+])(?:\+|\b00)[1-9][\d \t().-]{5,22}\d(?![\w-]|\.\d)")
_PHONE_NANP = re.compile(
    r"(?<![\w+-])(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
    r"(?![\w-]|\.\d)"
)
_PHONE_TRUNK = re.compile(
    r"(?<![\w+-])(?:\(0\d{1,4}\)[ ]?|0\d{1,4}[ .-])\d{2,4}(?:[ .-]?\d{2,4}){1,2}(?![\w-]|\.\d)"
)
_PHONE_KEYWORD = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|whatsapp)\b[^\d+\n]{0,15}"
    r"(?P<n>\+?\d[\d ().-]{5,18}\d)(?![\w-]|\.\d)"
)
_DATE_INSIDE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}")


def _phones(text: str) -> Iterator[tuple[int, int]]:
    for pattern, low, high in (
        (_PHONE_INTL, 8, 15),
        (_PHONE_NANP, 10, 11),
        (_PHONE_TRUNK, 10, 11),
        (_PHONE_KEYWORD, 7, 15),
    ):
        for m in pattern.finditer(text):
            group = "n" if pattern is _PHONE_KEYWORD else 0
            value = m.group(group)
            digits = sum(c.isdigit() for c in value)
            if not low <= digits <= high or _DATE_INSIDE.search(value):
                continue
            if re.search(r"[ .-]{2}|\(\)", value) or value.count("(") != value.count(")"):
                continue
            yield m.span(group)


# --- identifiers -----------------------------------------------------------------------

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_SSN_KEYWORD = re.compile(
    r"(?i)\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\W{0,6}(?P<n>\d{9})\b"
)


def _ssns(text: str) -> Iterator[tuple[int, int]]:
    for m in _SSN.finditer(text):
        if ssn_valid(m.group(1), m.group(3), m.group(4)):
            yield m.span()
    for m in _SSN_KEYWORD.finditer(text):
        n = m.group("n")
        if ssn_valid(n[:3], n[3:5], n[5:]):
            yield m.span("n")


_BSN = re.compile(
    r"(?i)\b(?:bsn|burgerservicenummer|sofi-?nummer)\b\W{0,6}(?P<n>\d{4}\.?\d{2}\.?\d{3})\b"
)
_DNI = re.compile(r"(?<![\w-])(?P<n>[XYZ]?\d{7,8})-?(?P<l>[A-Z])(?![\w-])")
_NINO = re.compile(r"(?<!\w)[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D](?!\w)")


def _national_ids(text: str) -> Iterator[tuple[int, int]]:
    for m in _BSN.finditer(text):
        if bsn_valid(m.group("n").replace(".", "")):
            yield m.span("n")
    for m in _DNI.finditer(text):
        if dni_valid(m.group("n") + m.group("l")):
            yield m.span()
    for m in _NINO.finditer(text):
        if nino_valid(m.group().replace(" ", "")):
            yield m.span()


_NHS = re.compile(
    r"(?i)\bNHS\b(?:\s*(?:number|no\.?|#))?\W{0,6}(?P<n>\d{3}[ -]?\d{3}[ -]?\d{4})(?![\w-])"
)


def _health_ids(text: str) -> Iterator[tuple[int, int]]:
    for m in _NHS.finditer(text):
        if nhs_valid(re.sub(r"[ -]", "", m.group("n"))):
            yield m.span("n")


_MRN = re.compile(
    r"(?i)\b(?:MRN|medical\s+record(?:\s+(?:number|no\.?|#))?|patient\s+(?:id|number|no\.?))"
    r"(?:\s*(?:[:#=]|is|number|no\.?))*\s*(?P<v>[A-Z0-9][A-Z0-9-]{3,19})(?![\w-])"
)


def _mrns(text: str) -> Iterator[tuple[int, int]]:
    for m in _MRN.finditer(text):
        if sum(c.isdigit() for c in m.group("v")) >= 4:
            yield m.span("v")


# --- financial -------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,22}(?![\w-]|\.\d)")


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        value = m.group()
        seps = set(re.findall(r"[ -]", value))
        if len(seps) > 1:
            continue
        groups = re.split(r"[ -]", value)
        if len(groups) > 1 and any(not 2 <= len(g) <= 6 for g in groups[:-1]):
            continue
        # The longest run of whole groups that is a valid card number (a trailing
        # group may be an expiry or a CVC typed right after it).
        for n in range(len(groups), 0, -1):
            digits = "".join(groups[:n])
            if len(digits) < 13:
                break
            if _card_number(digits):
                end = m.start() + len(" ".join(groups[:n]))
                yield m.start(), end
                break


def _card_number(digits: str) -> bool:
    return (
        13 <= len(digits) <= 19
        and digits[0] in "23456"
        and len(set(digits)) > 1
        and luhn_valid(digits)
    )


_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}")


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        want = IBAN_LENGTHS.get(m.group()[:2])
        if want is None:
            continue
        seen, end = 0, m.start()
        for i in range(m.start(), m.end()):
            if text[i] != " ":
                seen += 1
                if seen == want:
                    end = i + 1
                    break
        if seen != want or (end < len(text) and text[end].isalnum()):
            continue
        if iban_valid(text[m.start() : end].replace(" ", "")):
            yield m.start(), end


# --- network and dates -----------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
_IPV6_V4_TAIL = re.compile(r"(?<![\w:.])[0-9A-Fa-f:]{2,30}:(?:\d{1,3}\.){3}\d{1,3}(?![\w.:])")
_VERSION_BEFORE = re.compile(r"(?i)\b(?:version|ver\.?|release|v)\s*$")


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for m in _IPV4.finditer(text):
        if not _VERSION_BEFORE.search(text[max(0, m.start() - 10) : m.start()]):
            yield m.span()
    for pattern in (_IPV6, _IPV6_V4_TAIL):
        for m in pattern.finditer(text):
            value = m.group().split("%")[0]
            groups = [g for g in re.split(r"[:.]", value) if g]
            # Need a digit, and two groups unless it starts with "::" ("a::b" is C++).
            if not any(c.isdigit() for c in value) or (len(groups) < 2 and value[:2] != "::"):
                continue
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            yield m.span()


_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DOB_KEYWORD = re.compile(
    r"(?i)\b(?:born|date\s+of\s+birth|d\.?o\.?b\.?|birth\s*date|birthday|geboren|née?)(?!\w)"
)
_DATE = re.compile(
    rf"(?i)(?<!\d)(?:(?P<y>\d{{4}})[-/.](?P<m>\d{{1,2}})[-/.](?P<d>\d{{1,2}})"
    rf"|(?P<a>\d{{1,2}})[-/.](?P<b>\d{{1,2}})[-/.](?P<y2>\d{{4}}|\d{{2}})"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\.?,?\s+\d{{4}}"
    rf"|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})(?!\d)"
)


def _dates_of_birth(text: str) -> Iterator[tuple[int, int]]:
    for k in _DOB_KEYWORD.finditer(text):
        window = text[k.end() : k.end() + 40].split("\n")[0]
        m = _DATE.search(window)
        if m is None or not _plausible_date(m):
            continue
        yield k.end() + m.start(), k.end() + m.end()


def _plausible_date(m: re.Match[str]) -> bool:
    if m.group("y"):
        return 1 <= int(m.group("m")) <= 12 and 1 <= int(m.group("d")) <= 31
    if m.group("a"):
        a, b = int(m.group("a")), int(m.group("b"))
        return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)
    return True


# --- credentials -----------------------------------------------------------------------

_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?"
    r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)"
)
_API_KEY = re.compile(
    r"(?<![\w-])(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|sk-(?:proj-|live-|test-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic and alike
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r")(?![\w-])"
    r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"
)
_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")


def _jwts(text: str) -> Iterator[tuple[int, int]]:
    for m in _JWT.finditer(text):
        head = m.group().split(".")[0]
        try:
            header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        except (ValueError, binascii.Error):
            continue
        if isinstance(header, dict) and "alg" in header:
            yield m.span()


_ASSIGNED_SECRET = re.compile(
    r"(?i)(?P<k>\b[a-z0-9_.-]*(?:api[_-]?key|apikey|access[_-]?key|secret|token|passw(?:or)?d"
    r"|passphrase|pwd|credentials?|auth)\b)[\"']?\s*[:=]\s*[\"']?(?P<v>[^\s\"'`,;]{6,})"
)
_BEARER = re.compile(r"(?i)\bbearer\s+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)")
_URL_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:(?P<v>[^/\s@]{3,})@")
_PLACEHOLDER = re.compile(r"[A-Z_]+|\$\{?\w+\}?|<[^>]*>|\*+|x+|\.\.\.|(?i:none|null|true|false)")


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _looks_random(value: str) -> bool:
    classes = sum(
        any(test(c) for c in value)
        for test in (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    )
    return len(value) >= 16 and classes >= 2 and _entropy(value) >= 3.5


def _assigned_secrets(text: str) -> Iterator[tuple[int, int]]:
    for m in _ASSIGNED_SECRET.finditer(text):
        key, value = m.group("k").lower(), m.group("v")
        if _PLACEHOLDER.fullmatch(value):
            continue
        if re.search(r"pass|pwd", key) or _looks_random(value):
            yield m.span("v")
    for m in _BEARER.finditer(text):
        if _looks_random(m.group("v")):
            yield m.span("v")
    for m in _URL_PASSWORD.finditer(text):
        yield m.span("v")


S = Sensitivity
_AT = re.compile("@")
# Each `needs` below is a part that the detector's own patterns cannot match without.
_PRIVATE_KEY_NEEDS = re.compile("PRIVATE KEY-----")
_JWT_NEEDS = re.compile("eyJ")
_SECRET_NEEDS = re.compile(r"(?i)key|secret|token|pass|pwd|credential|auth|bearer|://")
_IBAN_NEEDS = re.compile(r"[A-Z]{2}\d{2}")
_NHS_NEEDS = re.compile(r"(?i)nhs")
# Each `min_digits` is the fewest digits any value the detector accepts has: a card 13, a
# US SSN 9 (as does a Dutch BSN), an NHS number 10, a Spanish DNI 7 and a UK NINO 6, a
# medical record number 4 (checked in `_mrns`), a date of birth 4 ("1/2/90"), an IP
# address 1 ("::1"), a phone number 7 (the keyword form; the others 8 or 10).
DETECTORS: tuple[Detector, ...] = (
    Detector("private_key", S.SECRET, 100, _matches(_PRIVATE_KEY), _PRIVATE_KEY_NEEDS),
    Detector("jwt", S.SECRET, 95, _jwts, _JWT_NEEDS),
    Detector("api_key", S.SECRET, 90, _matches(_API_KEY)),
    Detector("secret", S.SECRET, 85, _assigned_secrets, _SECRET_NEEDS),
    Detector("payment_card", S.SECRET, 80, _cards, min_digits=13),
    Detector("iban", S.PII, 75, _ibans, _IBAN_NEEDS, min_digits=2),
    Detector("ssn", S.PII, 70, _ssns, min_digits=9),
    Detector("health_id", S.PHI, 66, _health_ids, _NHS_NEEDS, min_digits=10),
    Detector("national_id", S.PII, 65, _national_ids, min_digits=6),
    Detector("mrn", S.PHI, 60, _mrns, min_digits=4),
    Detector("date_of_birth", S.PII, 55, _dates_of_birth, min_digits=4),
    Detector("email", S.PII, 50, _matches(_EMAIL), _AT),
    Detector("ip_address", S.PII, 45, _ips, min_digits=1),
    Detector("phone", S.PII, 40, _phones, min_digits=7),
)
