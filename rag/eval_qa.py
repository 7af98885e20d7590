"""Question-answering evaluation (``rag eval qa DATASET_DIR``).

Dataset folder: ``passages.jsonl`` (``{id, title, text}``) and ``questions.jsonl`` (``{id,
question, answers, answer_starts, gold_passage_ids}``), e.g. XQuAD-en (Artetxe et al. 2020), whose
answers are SQuAD v1.1 spans (Rajpurkar et al. 2016).

Metrics (answer text scored without its ``[n]`` markers):

* ``exact_match``, ``f1``: SQuAD v1.1 official definitions (normalise: lower-case, remove
  punctuation and the articles a/an/the, collapse whitespace; token-level F1) of the SHORT answer
  (``Answer.short``, or the full text when there is none), max over the gold answers; an
  abstention scores 0.
* ``contains``: share of questions whose FULL answer text contains a normalised gold answer.
* ``yes_no_accuracy``, ``yes_no_f1_yes``, ``yes_no_f1_no`` (only when every gold answer is
  "yes" or "no", e.g. BoolQ): the verdict is ``Answer.short`` ("Yes"/"No") or the first word of
  the text; an abstention or an undecided answer counts as wrong. ``yes_no_undecided``: share
  of questions with no verdict.
* ``gold_passage_cited``: share of questions whose answer cites a chunk of a gold passage.
* ``by_kind``: ``{route: {n, contains, exact_match, f1, abstained}}`` per ``Answer.kind``.
* ``citation_precision``: share of citations (of non-abstained answers) whose cited chunk
  contains a gold answer (not for yes/no golds) or belongs to a gold passage
  (``chunk.metadata["record_id"]``, or the chunk's ``doc_id`` equal to / ending in ``#<passage id>``).
* ``dangling_citations``: citations whose chunk is not among the answer's hits plus ``[n]``
  markers in the text without a matching citation (should be 0).
* ``retrieval_hit_rate_at_k``: share of questions with a gold passage among the first ``k`` hits.
* ``false_abstention``: share of answerable questions abstained on; ``abstention_ood``: share of
  ``ood_questions`` abstained on.
* ``ttft_p50_s``, ``latency_p50_s``: median seconds to the first streamed text piece and to the
  final Answer (only when ``stream`` is given; else latency of ``ask``).
"""

from __future__ import annotations

import collections
import json
import logging
import re
import string
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .types import Answer, Chunk

log = logging.getLogger("rag")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower, strip punctuation, drop articles, collapse spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD v1.1 token F1 between normalised prediction and gold answer, in [0, 1]."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def strip_markers(text: str) -> str:
    """Answer text without ``[n]`` / ``[n, m]`` markers."""
    return re.sub(r"\s*\[\d+(?:\s*,\s*\d+)*\]", "", text).strip()


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_questions(dataset_dir: Path, limit: int | None = None, split: str = "all") -> list[dict]:
    """Questions of the dataset. ``split``: "all", "dev" (gold passage at an odd position in
    passages.jsonl) or "test" (even position), used to tune on one half and report on the other.
    ``limit``: that many questions spread evenly over the split (every len/limit-th)."""
    dataset_dir = Path(dataset_dir)
    qs = read_jsonl(dataset_dir / "questions.jsonl")
    if split != "all":
        pos = {p["id"]: i for i, p in enumerate(read_jsonl(dataset_dir / "passages.jsonl"))}
        want = 1 if split == "dev" else 0
        if split not in ("dev", "test"):
            raise ValueError(f"split must be all, dev or test, not {split!r}")
        qs = [q for q in qs if pos.get(q["gold_passage_ids"][0], 0) % 2 == want]
    if limit is not None and limit < len(qs):
        step = len(qs) / limit
        qs = [qs[int(i * step)] for i in range(limit)]
    return qs


def load_ood_questions(queries_jsonl: Path, limit: int | None = 100) -> list[str]:
    """Out-of-domain questions: the ``text`` of the first ``limit`` records of a BEIR
    ``queries.jsonl`` (e.g. SciFact claims)."""
    out: list[str] = []
    for r in read_jsonl(Path(queries_jsonl)):
        if limit is not None and len(out) >= limit:
            break
        out.append(r["text"])
    return out


def _chunk_passage_ids(ch: Chunk) -> set[str]:
    ids = {ch.doc_id}
    if "#" in ch.doc_id:
        ids.add(ch.doc_id.rsplit("#", 1)[1])
    rid = (ch.metadata or {}).get("record_id")
    if rid is not None:
        ids.add(str(rid))
    return ids


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def _run_stream(stream: Callable[[str], Iterator], q: str) -> tuple[Answer, float | None, float]:
    t0 = time.perf_counter()
    ttft = None
    final = None
    for item in stream(q):
        if isinstance(item, Answer):
            final = item
        elif ttft is None and item:
            ttft = time.perf_counter() - t0
    if final is None:
        raise RuntimeError("stream ended without an Answer")
    return final, ttft, time.perf_counter() - t0


def evaluate_qa(
    dataset_dir: Path,
    ask: Callable[[str], Answer],
    limit: int | None = None,
    ood_questions: Sequence[str] = (),
    k: int = 5,
    stream: Callable[[str], Iterator] | None = None,
    split: str = "all",
    per_question: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Run ``ask`` (or ``stream``, which also gives TTFT) on the dataset's questions and the
    ``ood_questions``; returns a JSON-safe dict of the metrics in the module docstring plus
    counts (``n_questions``, ``n_ood``, ``n_citations``). ``per_question`` adds a ``rows`` list
    (question, answer, golds, f1, abstained, retrieved) for error analysis. ``progress(stage,
    done, total)`` is called before each question with the number done ("questions", then
    "out-of-domain"), and once with ``done == total`` when the dataset's questions are done.
    """
    dataset_dir = Path(dataset_dir)
    qs = load_questions(dataset_dir, limit, split)
    em = f1 = contains = hit = abst = cited_gold = 0.0
    n_cit = good_cit = dangling = 0
    ttfts: list[float] = []
    lats: list[float] = []
    rows = []
    yes_no = bool(qs) and all({a.strip().lower() for a in q["answers"]} <= {"yes", "no"} for q in qs)
    verdicts: list[tuple[str, str]] = []  # (gold, predicted or "")
    kinds: dict[str, dict[str, float]] = {}
    for qi, q in enumerate(qs):
        if progress:
            progress("questions", qi, len(qs))
        if qi and qi % 100 == 0:
            log.info("eval qa: %d / %d questions", qi, len(qs))
        golds = [a for a in q["answers"] if a.strip()] or [""]
        gold_ids = set(q.get("gold_passage_ids") or [])
        if stream is not None:
            ans, ttft, lat = _run_stream(stream, q["question"])
            if ttft is not None:
                ttfts.append(ttft)
        else:
            t0 = time.perf_counter()
            ans = ask(q["question"])
            lat = time.perf_counter() - t0
        lats.append(lat)
        chunks = {h.chunk.id: h.chunk for h in ans.hits}
        ranked = sorted(ans.hits, key=lambda h: h.rank)  # Answer.hits lists the cited ones first
        if any(_chunk_passage_ids(h.chunk) & gold_ids for h in ranked[:k]):
            hit += 1
        # dangling: markers without a citation, citations without a retrieved chunk
        cit_ns = {c.n for c in ans.citations}
        for m in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", ans.text):
            dangling += sum(1 for x in re.findall(r"\d+", m) if int(x) not in cit_ns)
        text = strip_markers(ans.text)
        short = ans.short or text
        kd = kinds.setdefault(ans.kind, {"n": 0, "contains": 0.0, "exact_match": 0.0, "f1": 0.0, "abstained": 0.0})
        kd["n"] += 1
        row_f1 = 0.0
        verdict = ""
        if ans.abstained:
            abst += 1
            kd["abstained"] += 1
        else:
            row_em = max(exact_match(short, g) for g in golds)
            row_f1 = max(f1_score(short, g) for g in golds)
            em += row_em
            f1 += row_f1
            nt = normalize_answer(text)
            row_c = float(any(normalize_answer(g) and normalize_answer(g) in nt for g in golds))
            contains += row_c
            kd["contains"] += row_c
            kd["exact_match"] += row_em
            kd["f1"] += row_f1
            first = (ans.short or (text.split() or [""])[0]).strip(".,:;!").lower()
            verdict = first if first in ("yes", "no") else ""
            cites_gold = False
            for c in ans.citations:
                n_cit += 1
                ch = chunks.get(c.chunk_id)
                if ch is None:
                    dangling += 1
                    continue
                nch = normalize_answer(ch.text)
                in_gold = bool(_chunk_passage_ids(ch) & gold_ids)
                cites_gold |= in_gold
                if in_gold or (not yes_no and any(normalize_answer(g) and normalize_answer(g) in nch for g in golds)):
                    good_cit += 1
            cited_gold += cites_gold
        if yes_no:
            verdicts.append((golds[0].strip().lower(), verdict))
        if per_question:
            rows.append({"question": q["question"], "answer": ans.text, "short": ans.short, "kind": ans.kind,
                         "ttft": ttft if stream is not None else None, "span_margin": ans.scores.get("span_margin"),
                         "p_yes": ans.scores.get("p_yes"),
                         "golds": golds, "f1": row_f1, "abstained": ans.abstained,
                         "retrieved": [sorted(_chunk_passage_ids(h.chunk)) for h in ranked[:k]],
                         "gold_passage_ids": sorted(gold_ids)})
    n = len(qs) or 1
    ood_abst = 0
    if progress and qs:
        progress("questions", len(qs), len(qs))
    for oi, oq in enumerate(ood_questions):
        if progress:
            progress("out-of-domain", oi, len(ood_questions))
        ans = _run_stream(stream, oq)[0] if stream is not None else ask(oq)
        ood_abst += int(ans.abstained)
    out = {
        "n_questions": len(qs),
        "exact_match": em / n,
        "f1": f1 / n,
        "contains": contains / n,
        "citation_precision": (good_cit / n_cit) if n_cit else None,
        "n_citations": n_cit,
        "dangling_citations": dangling,
        f"retrieval_hit_rate_at_{k}": hit / n,
        "false_abstention": abst / n,
        "gold_passage_cited": cited_gold / n,
        "n_ood": len(ood_questions),
        "abstention_ood": (ood_abst / len(ood_questions)) if ood_questions else None,
        "ttft_p50_s": _median(ttfts),
        "latency_p50_s": _median(lats),
        "split": split,
    }
    out["by_kind"] = {kd: {"n": int(v["n"]), **{m: v[m] / v["n"] for m in ("contains", "exact_match", "f1", "abstained")}}
                      for kd, v in sorted(kinds.items())}
    if yes_no:
        out.update(_yes_no_scores(verdicts))
    if per_question:
        out["rows"] = rows
    return out


def _yes_no_scores(verdicts: list[tuple[str, str]]) -> dict:
    """Accuracy and per-class F1 of (gold, predicted) verdicts; "" (no verdict) is wrong."""
    n = len(verdicts) or 1
    out = {"yes_no_accuracy": sum(g == p for g, p in verdicts) / n,
           "yes_no_undecided": sum(p == "" for _, p in verdicts) / n}
    for c in ("yes", "no"):
        tp = sum(g == c and p == c for g, p in verdicts)
        pp = sum(p == c for _, p in verdicts)
        gp = sum(g == c for g, _ in verdicts)
        prec, rec = (tp / pp if pp else 0.0), (tp / gp if gp else 0.0)
        out[f"yes_no_f1_{c}"] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return out


def run_eval_qa(dataset_dir: str | Path, index_dir: str | Path | None = None, config=None, limit: int | None = None,
                ood_path: str | Path | None = None, ood_limit: int = 100, split: str = "all", k: int = 5,
                progress: Callable[[str, int, int], None] | None = None, per_question: bool = False) -> dict:
    """``rag eval qa``: index ``passages.jsonl`` (reused when ``index_dir`` exists), then run
    :func:`evaluate_qa` through the real pipeline's ``stream`` (so TTFT is measured).

    Out-of-domain questions for abstention: ``ood_path`` (a BEIR ``queries.jsonl``), by default
    SciFact's beside the dataset when present. Raises ConfigError when the folder lacks files.
    """
    from .config import RagConfig
    from .errors import ConfigError
    from .eval_retrieval import default_eval_index
    from .pipeline import RAG

    d = Path(dataset_dir)
    for name in ("passages.jsonl", "questions.jsonl"):
        if not (d / name).exists():
            raise ConfigError(f"{d / name}: missing (a QA folder holds passages.jsonl and questions.jsonl)")
    cfg = config or RagConfig()
    idx = Path(index_dir) if index_dir else default_eval_index(d, cfg)
    rag = RAG.create(idx, cfg)
    if not rag.store.exists():
        rag.ingest([d / "passages.jsonl"], progress=progress)
    rag = RAG.open(idx)
    rag.config = rag.config.updated({k_: v for k_, v in cfg.to_dict().items() if k_ in ("retrieval", "generation", "answer")})
    if ood_path is None:
        guess = d.parent / "beir-scifact" / "queries.jsonl"
        ood_path = guess if guess.exists() else None
    ood = load_ood_questions(Path(ood_path), ood_limit) if ood_path else []
    rag.ask("warm-up question to load the models?")  # model load is not part of per-question latency
    res = evaluate_qa(d, rag.ask, limit=limit, ood_questions=ood, k=k, stream=rag.stream, split=split, progress=progress,
                      per_question=per_question)
    res["generator"] = f"{cfg.generation.backend}:{cfg.generation.model}" if cfg.generation.backend == "transformers" else cfg.generation.backend
    runtime = getattr(rag.generator, "runtime_name", None)  # onnxruntime or transformers for a local model
    if runtime:
        res["generator"] += f" on {runtime}"
    res["index"] = str(idx)
    return res
