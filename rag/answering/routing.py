"""Question routing: which form of answer a question needs.

Routes (the values of :attr:`rag.types.Answer.kind`):

* ``yes_no``: starts with an auxiliary verb ("Is zlib free...?", "does ethanol...?", "is there a
  difference between X and Y?") and offers no alternatives ("Is X or Y faster?" is a comparison);
* ``comparison``: asks how two things differ or which of two is better;
* ``list``: asks for several items ("List...", "What are the types of...", "Name three...");
* ``explanatory``: how/why, definitions ("What is the Zen of Python?"), "what does X do/mean",
  "describe", "explain";
* ``factoid``: everything else (who/when/where/how many/which/what + a specific attribute).

Rules, not a model: they run in microseconds and are measured on 357 labelled real questions
(XQuAD-en, BoolQ, the demo questions; ``tests/fixtures/question_routes.jsonl``,
``tests/test_routing.py``; accuracy in docs/answering.md).
"""

from __future__ import annotations

import re

ROUTES = ("yes_no", "factoid", "explanatory", "list", "comparison")

_AUX = frozenset(
    "is are was were am do does did can could will would should shall has have had may might must "
    "isn't aren't wasn't weren't don't doesn't didn't can't couldn't won't wouldn't shouldn't hasn't haven't hadn't".split()
)
_LEAD = re.compile(r"^\s*(?:(?:and|so|but|also|ok|okay|then|well|please)\b[,\s]*)*", re.I)
_COMPARE = re.compile(
    r"\b(?:differences?|differ|differs|versus|vs\.?|similarit(?:y|ies))\b|^compare\b|^how (?:does|do|is|are) .+ compare\b"
    r"|\bwhich is (?:better|faster|slower|larger|smaller|more|less)\b", re.I)
_LIST = re.compile(
    r"^(?:list|enumerate|name (?:all|some|the|three|two|four|five|several|a few)\b|give (?:me )?(?:some |a few |three |two )?examples)"
    r"|^what (?:are|were) (?:the |some )?(?:\w+ )?(?:types|kinds|sorts|ways|steps|features|advantages|disadvantages|benefits"
    r"|examples|options|methods|functions|reasons|parts|components|uses|rules|principles|levels|modes|categories)\b"
    r"|^which (?:\w+ )?(?:types|kinds|functions|methods|options|features|formats|modules|languages|files)\b"
    r"|^what (?:\w+ )?(?:types|kinds|sorts) of\b|^(?:what|which) (?:are |were )?(?:the )?(?:two|three|four|five|several)\b"
    r"|\bnames of\b", re.I)
_HOW_FACT = re.compile(r"^how (?:many|much|long|far|old|large|big|tall|high|often|soon|fast|deep|wide|heavy|early|late)\b", re.I)
_EXPLAIN_START = re.compile(
    r"^(?:why|how|explain|describe|tell me about|what happens|what does \S+(?: \S+){0,4} (?:do|mean|stand for)\b)"
    r"|^what (?:is|was|are|were) (?:the )?(?:main |primary |chief )?(?:reason|idea|purpose|goal|cause|point)s?\b"
    r"|\bused for\??$", re.I)
_NAMING = re.compile(r"\b(?:known|called|named|abbreviated|referred to|described)(?: as| for)?\??$|\bin english\??$", re.I)
_DEFINITION = re.compile(r"^(?:what|who) (?:is|are) (?:a |an |the )?(?P<np>[^?,;]+?)\s*\??$", re.I)
_ATTRIBUTE = re.compile(
    r"^(?:name|number|capital|population|size|cost|price|date|year|day|time|length|height|width|weight|value|term|word"
    r"|type|kind|amount|percentage|rate|title|address|area|age|first|last|largest|smallest|biggest|most|least|best"
    r"|worst|main|only|current|official|default|maximum|minimum|highest|lowest)\b", re.I)


def route(question: str) -> str:
    """The route of ``question``: one of :data:`ROUTES` (rules in the module docstring)."""
    q = _LEAD.sub("", question.strip()).strip()
    low = q.lower()
    first = low.split(" ", 1)[0] if low else ""
    if first in _AUX:  # "Is there a difference between X and Y?" asks for a yes or a no too
        if re.search(r",? or (?!not\b)\w+", low) and not re.search(r"\bor (?:not|no)\b", low):
            return "comparison"
        return "yes_no"
    if _COMPARE.search(low) and not low.startswith("why"):
        return "comparison"
    if _LIST.search(low):
        return "list"
    if _HOW_FACT.search(low):
        return "factoid"
    if _EXPLAIN_START.search(low):
        return "explanatory"
    m = _DEFINITION.match(q)
    if m:
        np_ = m.group("np").strip()
        words = np_.split()
        possessive = "'s " in np_ or np_.endswith("'s")
        naming = bool(_NAMING.search(np_)) or words[0].lower().endswith("ed")
        if len(words) <= 5 and not _ATTRIBUTE.match(np_) and not possessive and not naming:
            if low.startswith("who"):
                return "explanatory" if all(w[:1].isupper() for w in words) else "factoid"
            return "explanatory"
    return "factoid"
