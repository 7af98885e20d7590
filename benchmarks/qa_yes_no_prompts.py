"""Compare verdict prompts on BoolQ dev questions (one-off study behind `answer.yes_no_evidence`).

For each of the first 160 of 400 dev questions: Yes-vs-No log-odds with the best sentence, the
best two sentences of its chunk, and the whole chunk, few-shot and zero-shot, each with its
content-free "N/A" baseline (contextual calibration). Writes JSON lines to /tmp/a13/yn_var.jsonl;
figures in docs/answering.md.
"""
import json, sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import numpy as np
from rag import RAG
from rag.answering.verdict import YES_NO_FEW_SHOT, YES_NO_SYSTEM
from rag.eval_qa import load_questions
DATA = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "qa-boolq-dev")
rag = RAG.open(sys.argv[1])
ans = rag.answerer
gen = ans.generator
out = open("/tmp/a13/yn_var.jsonl", "a")
def lo(msgs):
    r = gen.token_logprobs(msgs, ["Yes", "No"])
    return float(sum(r[0][1]) - sum(r[1][1]))
def msgs(q, src, shots=True, system=YES_NO_SYSTEM):
    m = [{"role": "system", "content": system}] + (list(YES_NO_FEW_SHOT) if shots else [])
    return m + [{"role": "user", "content": f"Source:\n{' '.join(src.split())}\n\nQuestion: {q.strip()}"}]
t0 = time.time()
for i, q in enumerate(load_questions(DATA, 400, "dev")[:160]):
    question = q["question"]
    hits = rag.search(question)
    ev = ans.evidence(question, hits)
    if not ev.sentences:
        continue
    best = ev.sentences[0]
    same = [s for s in ev.sentences if s.n == best.n][:2]
    rec = {"q": question, "gold": q["answers"][0],
           "sent": lo(msgs(question, best.text)), "sent0": lo(msgs(question, "N/A")),
           "two": lo(msgs(question, " ".join(s.text for s in sorted(same, key=lambda s: s.start)))),
           "zs_chunk": lo(msgs(question, best.hit.chunk.text, shots=False)),
           "zs_null": lo(msgs(question, "N/A", shots=False)),
           "zs_sent": lo(msgs(question, best.text, shots=False))}
    out.write(json.dumps(rec) + "\n"); out.flush()
    if i % 20 == 0:
        print(i, time.time() - t0, flush=True)
