"""Prompt building within a budget, sentence splitting, citation parsing."""

from rag.prompting import TRUNCATION_MARK, build_prompt, parse_citations, split_sentences
from rag.types import Chunk, Hit


def hit(cid, text, title="T", start=0):
    ch = Chunk(id=cid, doc_id=f"d{cid}", ordinal=0, start=start, end=start + len(text), text=text, source=f"s{cid}.md", title=title)
    return Hit(chunk=ch, score=1.0 / cid, rank=cid)


def words(s):
    return len(s.split())


def test_split_sentences_spans_and_abbreviations():
    t = "Dr. Smith arrived in 1990. He left! Did he? The U.S. team won 3.5 points.\n\nNew para"
    got = [t[s:e] for s, e in split_sentences(t)]
    assert got == ["Dr. Smith arrived in 1990.", "He left!", "Did he?", "The U.S. team won 3.5 points.", "New para"]
    assert split_sentences("") == [] and split_sentences("   ") == []


def test_build_prompt_numbers_sources_with_titles_in_order():
    hits = [hit(7, "Alpha is first.", "Doc A"), hit(3, "Beta is second.", "Doc B")]
    p = build_prompt("What is alpha?", hits, words, 1000)
    user = p.messages[-1]["content"]
    assert "[1] Doc A\nAlpha is first." in user and "[2] Doc B\nBeta is second." in user
    assert user.index("[1] Doc A") < user.index("[2] Doc B")
    assert user.rstrip().endswith("Question: What is alpha?")
    assert [(n, h.chunk.id) for n, h in p.sources] == [(1, 7), (2, 3)]
    assert p.truncated == [] and p.n_tokens == sum(words(m["content"]) for m in p.messages)
    assert p.messages[0]["role"] == "system"


def test_build_prompt_truncates_at_sentence_with_marker_and_respects_budget():
    long = " ".join(f"Sentence number {i} is here." for i in range(40))
    hits = [hit(1, "Short first chunk."), hit(2, long), hit(3, "Never shown.")]
    base = build_prompt("q?", [], words, 10_000, few_shot=False).n_tokens
    budget = base + 40
    p = build_prompt("q?", hits, words, budget, few_shot=False)
    assert p.n_tokens <= budget
    assert [n for n, _ in p.sources] == [1, 2] and p.truncated == [2]
    user = p.messages[-1]["content"]
    assert TRUNCATION_MARK in user and "Never shown" not in user
    # cut after a whole sentence
    assert "is here. " + TRUNCATION_MARK in user


def test_history_is_included_within_budget():
    hist = [{"role": "user", "content": "What is zlib?"}, {"role": "assistant", "content": "A library [1]."}]
    p = build_prompt("And its author?", [hit(1, "zlib was written by Jean-loup Gailly.")], words, 500, history=hist, few_shot=False)
    roles = [m["role"] for m in p.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert p.messages[1]["content"] == "What is zlib?"


def test_parse_citations_drops_unknown_marker():
    sources = {n: hit(10 + n, f"Fact number {n} is true.") for n in range(1, 5)}
    text, cites, dropped = parse_citations("Fact one is true [1]. Also made up [5].", sources)
    assert dropped == [5]
    assert "[5]" not in text and text == "Fact one is true [1]. Also made up."
    assert [(c.n, c.chunk_id) for c in cites] == [(1, 11)]


def test_parse_citations_shuffled_and_grouped_markers_resolve_by_id():
    sources = {1: hit(42, "Paris is in France."), 2: hit(9, "Berlin is in Germany."), 3: hit(77, "Rome is in Italy.", start=100)}
    text, cites, dropped = parse_citations("Rome is Italian [3]. Paris and Berlin [2, 1][1].", sources)
    assert dropped == []
    assert [(c.n, c.chunk_id) for c in cites] == [(3, 77), (2, 9), (1, 42)]
    rome = cites[0]
    assert rome.quote == "Rome is in Italy." and (rome.start, rome.end) == (100, 117) and rome.doc_id == "d77"
    text2, _, dropped2 = parse_citations("X [1, 9].", sources)
    assert text2 == "X [1]." and dropped2 == [9]


def test_citation_quote_is_best_matching_sentence():
    s = {1: hit(1, "Cats purr loudly. The Eiffel Tower is 330 metres tall. Dogs bark.", start=50)}
    _, cites, _ = parse_citations("The tower is 330 metres tall [1].", s)
    c = cites[0]
    assert c.quote == "The Eiffel Tower is 330 metres tall."
    assert s[1].chunk.text[c.start - 50 : c.end - 50] == c.quote
