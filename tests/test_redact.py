"""PII redaction: real-looking positives, look-alike negatives, and real SciFact contact lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.redact import luhn_valid, redact

ALL = ("emails", "phones", "cards")
SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir-scifact" / "corpus.jsonl"


@pytest.mark.parametrize("text, expected, kind", [
    ("Mail john.doe+tag@example.co.uk now", "Mail [EMAIL] now", "emails"),
    ("x <a.b@sub.example.org>.", "x <[EMAIL]>.", "emails"),
    ("(j-massague@ski.mskcc.org; fax)", "([EMAIL]; fax)", "emails"),
    ("Call +44 20 7946 0958.", "Call [PHONE].", "phones"),
    ("tel (202) 555-0143", "tel [PHONE]", "phones"),
    ("ring 202-555-0143 or 202.555.0143", "ring [PHONE] or [PHONE]", "phones"),
    ("+1-202-555-0143", "[PHONE]", "phones"),
    ("Fax +31-20-5665-633;", "Fax [PHONE];", "phones"),
    ("+49 (30) 901820", "[PHONE]", "phones"),
    ("toll-free 1 800 555 0199", "toll-free [PHONE]", "phones"),
    ("+33 1 23 45 67 89", "[PHONE]", "phones"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok", "cards"),
    ("4111-1111-1111-1111", "[CARD]", "cards"),
    ("Amex 378282246310005.", "Amex [CARD].", "cards"),
    ("Amex 3782 822463 10005", "Amex [CARD]", "cards"),
    ("MC 5555555555554444", "MC [CARD]", "cards"),
])
def test_positives(text, expected, kind):
    out, counts = redact(text, ALL)
    assert out == expected
    assert counts[kind] == expected.count(f"[{kind[:-1].upper()}]") and sum(counts.values()) == counts[kind]


@pytest.mark.parametrize("text", [
    "on 2023-10-12 at 10:30",
    "dates 12/25/2024 and 2019-2020-2021",
    "version 1.2.3 and build 10.0.19041.1",
    "ISBN 978-3-16-148410-0",
    "ISBN 9780306406157",  # passes no card grouping/prefix check
    "IP 192.168.100.200",
    "order id 1234567890123456",  # 16 digits, fails Luhn
    "user@localhost and a@b",
    "price 1,234,567.89",
    "p < 0.001 (n = 1234), OR 1.23 (95% CI 1.05-1.44)",
    "phone 5551234567",  # bare 10 digits: too ambiguous
    "tel 123-456-7890",  # NANP area codes cannot start with 1
    "DOI 10.1016/j.cell.2009.01.042",
    "PMID 12345678, grant R01-GM-123456",
])
def test_negatives(text):
    assert redact(text, ALL) == (text, {"emails": 0, "phones": 0, "cards": 0})


def test_only_requested_kinds_and_errors():
    text = "a@b.com 4111 1111 1111 1111 (202) 555-0143"
    out, counts = redact(text, ["cards"])
    assert out == "a@b.com [CARD] (202) 555-0143" and counts == {"cards": 1}
    assert redact(text, []) == (text, {})
    with pytest.raises(ConfigError, match="unknown redaction kind"):
        redact(text, ["ssn"])


def test_luhn():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


@pytest.mark.skipif(not SCIFACT.is_file(), reason="shared SciFact data not present")
def test_scifact_contact_details():
    """The SciFact corpus holds a few real author e-mails and phone/fax numbers and no card numbers."""
    totals = {"emails": 0, "phones": 0, "cards": 0}
    redacted = {}
    with open(SCIFACT, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out, counts = redact(r["text"], ALL)
            for k, v in counts.items():
                totals[k] += v
            if any(counts.values()):
                redacted[r["_id"]] = out
    assert totals == {"emails": 11, "phones": 3, "cards": 0}
    assert "[PHONE]" in redacted["39291138"] and "(212) 717-3298" not in redacted["39291138"]
    assert "a.c.vanderwal@amc.uva.nl" not in redacted["4890578"]
