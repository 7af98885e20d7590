"""Load test of ``rag serve``: concurrent clients doing mixed search and chat while an upload
job commits a new document every few seconds.

    python benchmarks/serve_load.py                       # 16 clients, 60 s, real models, corpora/
    python benchmarks/serve_load.py --fake --seconds 20   # hash embedder + extractive answers (smoke run)

Starts its own ``rag serve`` on 127.0.0.1 (a free port), over ``--index`` (built from
``corpora/`` the first time), waits for ``/health``, then runs ``--clients`` asyncio clients for
``--seconds``: each sends a search (``1 - --chat-share``) or a streamed chat completion, one at
a time. Meanwhile an uploader posts one new document every ``--upload-every`` seconds and
follows its job. Prints requests served, errors (transport failures and 5xx; must be 0), 4xx,
search latency p50/p95, chat time to first token p50/p95 (first answer piece) and total, and
the index-consistency checks:

- every response names ONE committed generation (search: ``generation``; chat: the sources
  event and the final event name the same one, and every citation is one of its sources);
- no client ever sees an older generation after a newer one;
- a hit of an uploaded document only appears at or after the generation its job committed, and
  its text is the whole uploaded text (never a partly written document).

The uploaded documents are deleted at the end. Writes a Markdown summary to
``benchmarks/results/serve_load.md``. Timings are upper bounds on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "Who wrote zlib?", "What checksum does the zlib format use?", "What does the Adler-32 checksum detect?",
    "Which compression method does deflate use?", "What is the maximum window size of deflate?",
    "How does httpx support HTTP/2?", "How do I make an async request with httpx?", "Which exceptions can httpx raise?",
    "What is the Zen of Python?", "What should a docstring contain?", "What license does Lua use?",
    "What does the gzip header contain?", "How are Huffman codes built in deflate?",
    "What is the courier code for depot 3?",
]
QUERIES = [
    "adler-32 checksum", "deflate lazy matching", "huffman code lengths", "gzip member header", "http2 multiplexing",
    "async client timeout", "docstring conventions", "beautiful is better than ugly", "lua license mit",
    "courier code depot", "zlib compression level", "connection pool limits", "rfc 1951 block format",
]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


@dataclass
class Stats:
    search_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    chat_s: list[float] = field(default_factory=list)
    served: int = 0
    errors: list[str] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    # (generation, upload number, full hit text) for every hit of an uploaded document
    upload_hits: list[tuple[int, int, str]] = field(default_factory=list)
    consistency: list[str] = field(default_factory=list)
    generations: set[int] = field(default_factory=set)


def upload_text(k: int) -> str:
    return (f"Depot bulletin {k}. The courier code for depot {k} is loadgen{k}. Couriers collect parcels for depot {k} "
            f"at the north gate before noon; parcels left after noon wait for the next courier round.")


def _marker(text: str) -> int | None:
    import re

    m = re.search(r"loadgen(\d+)", text)
    return int(m.group(1)) if m else None


def _note_hits(stats: Stats, gen: int, hits: list[dict]) -> None:
    for h in hits:
        k = _marker(h["chunk"]["text"])
        if k is not None:
            stats.upload_hits.append((gen, k, h["chunk"]["text"]))


async def _search(client: httpx.AsyncClient, rng: random.Random, stats: Stats) -> int | None:
    t0 = time.perf_counter()
    r = await client.post("/v1/search", json={"query": rng.choice(QUERIES), "top_k": rng.choice((5, 10))})
    dt = time.perf_counter() - t0
    if r.status_code >= 500:
        stats.errors.append(f"search {r.status_code}: {r.text[:200]}")
        return None
    if r.status_code >= 400:
        stats.client_errors.append(f"search {r.status_code}: {r.text[:200]}")
        return None
    body = r.json()
    stats.search_s.append(dt)
    stats.served += 1
    gen = body["generation"]
    if not isinstance(gen, int):
        stats.consistency.append(f"search response without one generation: {gen!r}")
        return None
    _note_hits(stats, gen, body["hits"])
    return gen


async def _chat(client: httpx.AsyncClient, rng: random.Random, stats: Stats) -> int | None:
    t0 = time.perf_counter()
    body = {"stream": True, "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}]}
    ttft = None
    sources_gen, final, sources = None, None, []
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            text = (await r.aread()).decode(errors="replace")[:200]
            (stats.errors if r.status_code >= 500 else stats.client_errors).append(f"chat {r.status_code}: {text}")
            return None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                stats.errors.append(f"chat stream error: {ev['error']}")
                return None
            if "sources" in ev:
                sources_gen, sources = ev["generation"], ev["sources"]
            if ev["choices"][0]["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - t0
            if ev["choices"][0]["finish_reason"]:
                final = ev
    total = time.perf_counter() - t0
    if final is None:
        stats.errors.append("chat stream ended without a final event")
        return None
    stats.served += 1
    stats.chat_s.append(total)
    if ttft is not None:
        stats.ttft_s.append(ttft)
    if not isinstance(sources_gen, int) or final.get("generation") != sources_gen:
        stats.consistency.append(f"chat: sources from generation {sources_gen}, answer from {final.get('generation')}")
        return None
    ids = {s["chunk"]["id"] for s in sources}
    if any(c["chunk_id"] not in ids for c in final["citations"]):
        stats.consistency.append("chat: a citation is not one of the sources")
    _note_hits(stats, sources_gen, sources)
    return sources_gen


async def _client(i: int, url: str, end: float, chat_share: float, stats: Stats) -> None:
    rng = random.Random(i)
    last = -1
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        while time.time() < end:
            try:
                gen = await (_chat(client, rng, stats) if rng.random() < chat_share else _search(client, rng, stats))
            except httpx.HTTPError as e:
                stats.errors.append(f"client {i}: {e.__class__.__name__}: {e}")
                await asyncio.sleep(0.5)
                continue
            if gen is not None:
                stats.generations.add(gen)
                if gen < last:
                    stats.consistency.append(f"client {i} saw generation {gen} after {last}")
                last = max(last, gen)


async def _uploader(url: str, end: float, every_s: float, committed: dict[int, int], stats: Stats) -> list[str]:
    """Post one document every ``every_s`` seconds; ``committed[k]`` = the generation its job
    committed. Returns the job ids."""
    jobs: list[tuple[int, str]] = []
    k = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        next_at = time.time() + every_s / 2
        pending: list[tuple[int, str]] = []
        while time.time() < end or pending:
            if time.time() >= next_at and time.time() < end:
                k += 1
                r = await client.post("/v1/documents", files={"files": (f"depot-{k}.txt", upload_text(k).encode())})
                if r.status_code != 202:
                    stats.errors.append(f"upload {r.status_code}: {r.text[:200]}")
                else:
                    jobs.append((k, r.json()["id"]))
                    pending.append((k, r.json()["id"]))
                next_at += every_s
            for item in list(pending):
                j = (await client.get(f"/v1/jobs/{item[1]}")).json()
                if j["state"] == "done":
                    committed[item[0]] = int(j["report"]["generation"])
                    pending.remove(item)
                elif j["state"] == "failed":
                    stats.errors.append(f"upload job {item[1]} failed: {j['error']}")
                    pending.remove(item)
            await asyncio.sleep(0.25)
    return [j for _, j in jobs]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build_index(index: Path, fake: bool) -> None:
    cmd = [sys.executable, "-m", "rag", "ingest", str(ROOT / "corpora"), "--index", str(index)]
    if fake:
        cmd += ["--embedder", "testing:hash-64"]
    print(f"building {index} from corpora/ ...", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default=None, help="index folder (default indexes/serve-load[-fake], built from corpora/)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--chat-share", type=float, default=0.25, help="share of requests that are streamed chats")
    ap.add_argument("--upload-every", type=float, default=10.0, help="seconds between uploads")
    ap.add_argument("--fake", action="store_true", help="hash embedder and extractive answers (no models)")
    ap.add_argument("--generation-slots", type=int, default=1, help="rag serve --generation-slots")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load.md"))
    args = ap.parse_args()
    index = Path(args.index or (ROOT / "indexes" / ("serve-load-fake" if args.fake else "serve-load")))
    if not (index / "manifest.json").exists():
        _build_index(index, args.fake)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "rag", "serve", "--index", str(index), "--port", str(port),
           "--generation-slots", str(args.generation_slots)]
    if args.fake:
        cmd += ["--generator", "extractive"]
    import tempfile

    log_path = Path(tempfile.gettempdir()) / f"serve_load-{port}.log"
    log = open(log_path, "wb")
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while True:
            if server.poll() is not None:
                sys.exit(f"server exited with {server.returncode}; see {log_path}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        warm = time.time() - t0
        print(f"server ready after {warm:.1f} s (models loaded); {args.clients} clients for {args.seconds:.0f} s ...", flush=True)
        stats, committed = Stats(), {}
        end = time.time() + args.seconds

        async def run() -> list[str]:
            tasks = [asyncio.create_task(_client(i, url, end, args.chat_share, stats)) for i in range(args.clients)]
            up = asyncio.create_task(_uploader(url, end, args.upload_every, committed, stats))
            await asyncio.gather(*tasks)
            return await up

        t_run = time.time()
        jobs = asyncio.run(run())
        wall = time.time() - t_run
        for gen, k, text in stats.upload_hits:
            if k not in committed:
                stats.consistency.append(f"upload {k} seen at generation {gen} but its job never committed")
            elif gen < committed[k]:
                stats.consistency.append(f"upload {k} seen at generation {gen}, committed at {committed[k]}")
            if text.strip() != upload_text(k):
                stats.consistency.append(f"upload {k} seen partly written: {text[:80]!r}")
        # clean up: delete the uploaded documents
        with httpx.Client(base_url=url, timeout=120) as c:
            for d in c.get("/v1/documents").json()["data"]:
                if d["source"].startswith("local/depot-"):
                    c.delete(f"/v1/documents/{d['id']}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    n_search, n_chat = len(stats.search_s), len(stats.chat_s)
    ok = not stats.errors and not stats.consistency
    lines = [
        f"# rag serve under load ({'fake models' if args.fake else 'real models: all-MiniLM-L6-v2 + SmolLM2-135M'})",
        "",
        f"`python benchmarks/serve_load.py{' --fake' if args.fake else ''} --clients {args.clients} --seconds {args.seconds:.0f}"
        f" --generation-slots {args.generation_slots}` "
        f"on {os.cpu_count()} CPU cores, shared and loaded (figures are upper bounds); index {index.name} "
        f"(corpora/), chat share {args.chat_share:.0%}, one upload every {args.upload_every:.0f} s, "
        f"{args.generation_slots} generation slot(s); server warm-up {warm:.1f} s.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests served | {stats.served} in {wall:.0f} s ({n_search} searches, {n_chat} chats; {stats.served / wall:.1f}/s) |",
        f"| errors (transport or 5xx) | {len(stats.errors)} |",
        f"| 4xx answers | {len(stats.client_errors)} |",
        f"| search latency p50 / p95 | {_pct(stats.search_s, .5) * 1e3:.0f} / {_pct(stats.search_s, .95) * 1e3:.0f} ms |",
        f"| chat time to first token p50 / p95 | {_pct(stats.ttft_s, .5):.2f} / {_pct(stats.ttft_s, .95):.2f} s |",
        f"| chat total p50 / p95 | {_pct(stats.chat_s, .5):.2f} / {_pct(stats.chat_s, .95):.2f} s |",
        f"| uploads committed while serving | {len(committed)} of {len(jobs)} (generations {sorted(set(committed.values()))}) |",
        f"| generations seen by responses | {sorted(stats.generations)} |",
        f"| hits of uploaded documents checked | {len(stats.upload_hits)} |",
        f"| index consistency | {'OK: every response from one committed generation, never older than a previous one, uploads whole and only after their commit' if not stats.consistency else f'{len(stats.consistency)} violation(s)'} |",
    ]
    for e in (stats.errors + stats.consistency)[:10]:
        lines.append(f"\n- {e}")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
