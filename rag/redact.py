"""PII redaction at ingest (off by default): e-mail addresses, phone numbers, payment card numbers.

``redact(text, kinds)`` replaces matches with ``[EMAIL]``, ``[PHONE]``, ``[CARD]`` and counts them.
Redaction changes the text, so it must run before chunk offsets are computed (on the loaded
document text), never on chunks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import ConfigError

KINDS = ("emails", "phones", "cards")
"""The supported kinds, in the order they are applied."""

PLACEHOLDERS = {"emails": "[EMAIL]", "phones": "[PHONE]", "cards": "[CARD]"}

# RFC 5322 section 3.4.1 addr-spec, practical subset (dot-atom local part, no quoted strings or
# comments; domain of DNS labels with a 2+ letter TLD, or an IP literal). See also the WHATWG
# HTML "valid e-mail address" definition, which makes the same simplification.
_EMAIL = re.compile(
    r"(?<![\w.+-])"
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@"
    r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"|\[(?:\d{1,3}\.){3}\d{1,3}\])"
    r"(?![\w-])"
)

# Card numbers: 13-19 digits (ISO/IEC 7812 PAN lengths), optionally grouped by single spaces or
# dashes; a candidate counts only if the Luhn checksum (ISO/IEC 7812-1 annex B) holds.
_CARD = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")

# Phone numbers. The `phonenumbers` library (a port of Google's libphonenumber, with per-country
# numbering plans) is the reliable tool; it is not a dependency here, so two careful patterns:
#  * international: "+" country code then 6-14 more digits in groups separated by a space, dot,
#    dash or a parenthesised area code (E.164 allows at most 15 digits), e.g. "+44 20 7946 0958",
#    "+49 (30) 901820", "+1-202-555-0143";
#  * NANP (North American Numbering Plan): area code and exchange start with 2-9, written with
#    separators or parentheses: "(202) 555-0143", "202-555-0143", "202.555.0143",
#    "1 800 555 0199". A bare 10-digit run is not taken (too many identifiers look like that).
# Dates, version numbers, IP addresses and ISBNs do not fit these groupings.
_PHONE_INTL = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\)|[ .-]\d{1,4})(?:[ .-]?\d{2,5}){1,4}(?![\w]|[.-]\d)"
)
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}(?![\w]|[.-]\d)"
)


def luhn_valid(digits: str) -> bool:
    """True if the digit string passes the Luhn mod-10 check (ISO/IEC 7812-1, annex B)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return False
    if len(digits) == 13 and digits.startswith(("978", "979")):
        return False  # an ISBN-13 (EAN "Bookland" prefix); no card range starts with 97
    seps = set(re.findall(r"[ -]", match))
    if len(seps) > 1:
        return False  # mixed separators: not how card numbers are written
    if seps:
        groups = [len(g) for g in re.split(r"[ -]", match)]
        # 4-4-4-4(-3), 4-6-5 (Amex), 4-6-4 (Diners), or 4-4-4-1..7 style groupings.
        if not (groups[0] == 4 and (all(g == 4 for g in groups[1:-1]) or groups[1] == 6)):
            return False
    return True


def _phone_digits_ok(match: str) -> bool:
    n = sum(ch.isdigit() for ch in match)
    return 7 <= n <= 15


def redact(text: str, kinds: Sequence[str]) -> tuple[str, dict[str, int]]:
    """Replace PII of the given ``kinds`` (subset of ``("emails", "phones", "cards")``).

    Returns ``(redacted_text, counts)`` with one count per requested kind. E-mails are replaced
    first, then card numbers (Luhn-checked 13-19 digits), then phone numbers, so digits of a
    card are never taken for a phone. Raises :class:`rag.errors.ConfigError` for an unknown kind.
    """
    unknown = [k for k in kinds if k not in PLACEHOLDERS]
    if unknown:
        raise ConfigError(f"unknown redaction kind(s) {', '.join(map(repr, unknown))}; choose from {', '.join(KINDS)}")
    counts = {k: 0 for k in kinds}
    for kind in KINDS:
        if kind not in counts:
            continue
        placeholder = PLACEHOLDERS[kind]
        if kind == "emails":
            text, counts[kind] = _EMAIL.subn(placeholder, text)
        elif kind == "cards":
            text, counts[kind] = _sub_checked(_CARD, text, placeholder, _is_card)
        else:
            text, n1 = _sub_checked(_PHONE_INTL, text, placeholder, _phone_digits_ok)
            text, n2 = _sub_checked(_PHONE_NANP, text, placeholder, _phone_digits_ok)
            counts[kind] = n1 + n2
    return text, counts


def _sub_checked(regex: re.Pattern[str], text: str, placeholder: str, check) -> tuple[str, int]:
    n = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal n
        if check(m.group(0)):
            n += 1
            return placeholder
        return m.group(0)

    return regex.sub(repl, text), n
