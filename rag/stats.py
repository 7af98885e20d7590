"""Usage over time from conversation records: ``rag stats`` and the admin stats page.

:func:`compute_stats` turns records (:meth:`rag.records.RecordStore.records`) and the index's
document list into plain figures (JSON-safe dict): questions per UTC day, abstention rate,
feedback up/down, end-to-end and per-stage latency p50/p95, the most-cited documents, the
documents never cited, and the questions that were abstained on (the gaps in the corpus).
:func:`format_table` prints them for a terminal; :func:`render_stats_html` draws one
self-contained HTML page (inline CSS and SVG drawn here: no script, no network, no CDN), which
``rag stats --html`` writes and ``rag serve`` can return to admin keys.

Percentiles are numpy's linear interpolation between order statistics (``numpy.percentile``
default, "type 7" of Hyndman & Fan 1996), over the records that have a latency.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConfigError

STAGE_KEYS = ("retrieval_s", "evidence_s", "first_token_s", "total_s")
"""Stage timings shown first when present; every other ``_s`` key of ``Answer.timings`` follows.
Only keys ending in ``_s`` are stage seconds: records written before ``Answer.scores`` existed
also hold model scores (``p_yes``, ``span_margin``) and old names (``ttft``, ``answer``) there,
which are not shown."""


def parse_since(value: str) -> str:
    """``YYYY-MM-DD`` or an ISO 8601 time -> the ISO UTC string records are compared with.
    Raises ConfigError naming the value when it is neither."""
    v = value.strip()
    try:
        if len(v) == 10:
            return datetime.combine(date.fromisoformat(v), datetime.min.time(), timezone.utc).isoformat(timespec="milliseconds")
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since: {value!r} is not a date (YYYY-MM-DD) or ISO time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def index_documents(index_dir: str | Path) -> list[dict[str, Any]] | None:
    """The documents of an index as ``[{"doc_id", "source", "title"}]`` (duplicates kept as
    aliases left out), read from its current committed state through the public facade
    (``RAG.lease()``; no model is loaded). None when there is no readable index (never-cited
    documents are then not computed)."""
    from .errors import RagError
    from .pipeline import RAG

    try:
        with RAG(index_dir).lease() as reader:
            return [{"doc_id": d.key, "source": d.source, "title": d.title} for d in reader.documents()
                    if not d.alias_of]
    except RagError:
        return None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _day(created: str) -> str:
    return created[:10]


def compute_stats(records: Iterable[Mapping[str, Any]], documents: Sequence[Mapping[str, Any]] | None = None, *,
                  top: int = 10, since: str | None = None, user_id: str | None = None) -> dict[str, Any]:
    """Figures over ``records`` (dicts as :meth:`RecordStore.records` returns them).

    ``documents``: the index's documents (:func:`index_documents`) for never-cited documents;
    None leaves ``never_cited`` None. ``top``: length of the most-cited and abstained lists.
    Latencies are seconds. A document is identified by ``doc_id`` when both sides have one,
    else by source path. Returns a JSON-safe dict (the shape of ``rag stats --json``).
    """
    recs = list(records)
    n = len(recs)
    abst = [r for r in recs if r["abstained"]]
    up = sum(1 for r in recs if r.get("feedback") == "up")
    down = sum(1 for r in recs if r.get("feedback") == "down")
    lat = [float(r["latency_s"]) for r in recs if r.get("latency_s") is not None]
    stages: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        for k, v in (r.get("timings") or {}).items():
            if k.endswith("_s") and isinstance(v, (int, float)) and not isinstance(v, bool):
                stages[k].append(float(v))
    order = [k for k in STAGE_KEYS if k in stages] + sorted(k for k in stages if k not in STAGE_KEYS)
    # per day, continuous from the first to the last day
    by_day: dict[str, dict[str, int]] = {}
    for r in recs:
        d = by_day.setdefault(_day(r["created"]), {"questions": 0, "abstained": 0, "up": 0, "down": 0})
        d["questions"] += 1
        d["abstained"] += int(bool(r["abstained"]))
        if r.get("feedback") in ("up", "down"):
            d[r["feedback"]] += 1
    per_day = []
    if by_day:
        first, last = date.fromisoformat(min(by_day)), date.fromisoformat(max(by_day))
        for i in range((last - first).days + 1):
            key = (first + timedelta(days=i)).isoformat()
            per_day.append({"date": key, **by_day.get(key, {"questions": 0, "abstained": 0, "up": 0, "down": 0})})
    # citations
    use_ids = bool(documents) and all(d.get("doc_id") for d in documents)  # type: ignore[union-attr]
    cited_records: Counter[str] = Counter()
    cited_total: Counter[str] = Counter()
    info: dict[str, dict[str, Any]] = {}
    for r in recs:
        seen = set()
        for c in r.get("citations") or []:
            key = (c.get("doc_id") or c.get("source")) if use_ids or documents is None else c.get("source")
            if not key:
                continue
            cited_total[key] += 1
            info.setdefault(key, {"doc_id": c.get("doc_id") or None, "source": c.get("source"), "title": c.get("title")})
            if key not in seen:
                seen.add(key)
                cited_records[key] += 1
    most_cited = [{**info[k], "records": cnt, "citations": cited_total[k]}
                  for k, cnt in sorted(cited_records.items(), key=lambda kv: (-kv[1], -cited_total[kv[0]], kv[0]))[:top]]
    never = None
    if documents is not None:
        never = [dict(d) for d in documents if ((d.get("doc_id") if use_ids else d.get("source")) not in cited_records)]
        never.sort(key=lambda d: (str(d.get("source")), str(d.get("doc_id"))))
    # abstained-on questions, grouped by their normalised text
    groups: dict[str, dict[str, Any]] = {}
    for r in abst:
        key = " ".join(r["question"].lower().split())
        g = groups.setdefault(key, {"question": r["question"], "count": 0, "last": r["created"], "users": set()})
        g["count"] += 1
        g["last"] = max(g["last"], r["created"])
        if r.get("user_id") is not None:
            g["users"].add(r["user_id"])
    abstained_q = [{"question": g["question"], "count": g["count"], "users": len(g["users"]), "last": g["last"]}
                   for g in sorted(groups.values(), key=lambda g: (-g["count"], g["last"]))]
    return {
        "filters": {"since": since, "user": user_id},
        "first": min((r["created"] for r in recs), default=None),
        "last": max((r["created"] for r in recs), default=None),
        "questions": n,
        "users": len({r["user_id"] for r in recs if r.get("user_id") is not None}),
        "sessions": len({r["session_id"] for r in recs if r.get("session_id") is not None}),
        "abstained": len(abst),
        "abstention_rate": (len(abst) / n) if n else None,
        "feedback": {"up": up, "down": down, "none": n - up - down},
        "latency_s": {"n": len(lat), "p50": _percentile(lat, 50), "p95": _percentile(lat, 95)},
        "stage_latency_s": {k: {"n": len(stages[k]), "p50": _percentile(stages[k], 50), "p95": _percentile(stages[k], 95)}
                            for k in order},
        "by_kind": dict(sorted(Counter(r.get("kind") or "unknown" for r in recs).items())),
        "by_generation": {str(g): c for g, c in sorted(Counter(r.get("generation") for r in recs if r.get("generation") is not None).items())},
        "per_day": per_day,
        "most_cited": most_cited,
        "documents": None if documents is None else len(documents),
        "never_cited_count": None if never is None else len(never),
        "never_cited": never,
        "abstained_questions": abstained_q,
        "latencies": sorted(lat),
    }


# ---- terminal --------------------------------------------------------------------------------
def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1:
        return f"{v:.2f} s"
    ms = v * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2g} ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def format_table(s: Mapping[str, Any], top: int = 10) -> str:
    """The figures of :func:`compute_stats` as aligned plain-text tables."""
    from .pipeline import display_source

    lines = []
    f = s["filters"]
    scope = ", ".join(x for x in (f"since {f['since'][:10]}" if f.get("since") else "", f"user {f['user']}" if f.get("user") else "") if x)
    lines.append(f"Records: {s['questions']} question(s) from {s['users']} user(s) in {s['sessions']} session(s)"
                 + (f" ({scope})" if scope else "") + (f", {s['first'][:10]} .. {s['last'][:10]}" if s["first"] else ""))
    fb = s["feedback"]
    lines.append(f"Abstained: {s['abstained']} ({_pct(s['abstention_rate'])})   feedback: {fb['up']} up, {fb['down']} down, "
                 f"{fb['none']} none   latency p50 {_fmt_s(s['latency_s']['p50'])}, p95 {_fmt_s(s['latency_s']['p95'])}")
    if s["per_day"]:
        lines += ["", f"{'day':<12}{'questions':>10}{'abstained':>10}{'up':>5}{'down':>6}"]
        lines += [f"{d['date']:<12}{d['questions']:>10}{d['abstained']:>10}{d['up']:>5}{d['down']:>6}" for d in s["per_day"]]
    if s["stage_latency_s"]:
        lines += ["", f"{'stage':<16}{'p50':>10}{'p95':>10}"]
        lines += [f"{k:<16}{_fmt_s(v['p50']):>10}{_fmt_s(v['p95']):>10}" for k, v in s["stage_latency_s"].items()]
    if s["most_cited"]:
        lines += ["", f"Most-cited documents (records citing them):"]
        lines += [f"{d['records']:>6}  {display_source(d['source'] or '')}"
                  + (f"  ({d['doc_id']})" if d.get("doc_id") and d["doc_id"] != d.get("source") else "") for d in s["most_cited"]]
    if s["never_cited"] is not None:
        lines += ["", f"Never cited: {s['never_cited_count']} of {s['documents']} document(s)"]
        lines += [f"        {display_source(d['source'] or '')}" for d in s["never_cited"][:top]]
        if s["never_cited_count"] > top:
            lines.append(f"        ... and {s['never_cited_count'] - top} more (--json lists all)")
    if s["abstained_questions"]:
        lines += ["", "Abstained on (gaps in the corpus):"]
        lines += [f"{q['count']:>6}  {q['question']}" for q in s["abstained_questions"][:top]]
    return "\n".join(lines)


# ---- HTML --------------------------------------------------------------------------------------
_E = html.escape
_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:120px}.card b{display:block;font-size:22px}
table{border-collapse:collapse;margin:6px 0}td,th{border-bottom:1px solid #eee;padding:3px 10px;text-align:left}
td.n{text-align:right}svg{display:block;margin:8px 0}svg text{font:11px system-ui,sans-serif;fill:#333}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:18px}"""


def _svg_day_bars(per_day: Sequence[Mapping[str, Any]], w: int = 520, h: int = 220) -> str:
    """Stacked bars per day: answered (blue) and abstained (orange)."""
    pad_l, pad_b, pad_t = 34, 36, 10
    n = max(1, len(per_day))
    top = max([d["questions"] for d in per_day] + [1])
    top = -(-top // 4) * 4  # a multiple of 4: integer grid lines
    bw = (w - pad_l - 10) / n
    ch = h - pad_b - pad_t
    out = [f'<svg id="chart-per-day" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="questions per day">']
    for i in range(5):
        v = top * i / 4
        y = pad_t + ch - ch * i / 4
        out.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{w - 10}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    step = max(1, n // 8)
    for i, d in enumerate(per_day):
        x = pad_l + i * bw + bw * 0.1
        ans = d["questions"] - d["abstained"]
        ha, hb = ch * ans / top, ch * d["abstained"] / top
        y0 = pad_t + ch
        out.append(f'<rect class="bar answered" x="{x:.1f}" y="{y0 - ha:.1f}" width="{bw * 0.8:.1f}" height="{ha:.1f}" '
                   f'fill="#4c78a8"><title>{_E(d["date"])}: {ans} answered</title></rect>')
        out.append(f'<rect class="bar abstained" x="{x:.1f}" y="{y0 - ha - hb:.1f}" width="{bw * 0.8:.1f}" height="{hb:.1f}" '
                   f'fill="#f58518"><title>{_E(d["date"])}: {d["abstained"]} abstained</title></rect>')
        if i % step == 0:
            out.append(f'<text x="{x + bw * 0.4:.1f}" y="{h - pad_b + 14}" text-anchor="middle">{_E(d["date"][5:])}</text>')
    out.append(f'<rect x="{pad_l}" y="{h - 14}" width="10" height="10" fill="#4c78a8"/><text x="{pad_l + 14}" y="{h - 5}">answered</text>'
               f'<rect x="{pad_l + 90}" y="{h - 14}" width="10" height="10" fill="#f58518"/><text x="{pad_l + 104}" y="{h - 5}">abstained</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_hbars(items: Sequence[tuple[str, float, str]], chart_id: str, w: int = 520, unit: str = "") -> str:
    """Horizontal bars: (label, value, colour) per row."""
    row = 22
    h = max(1, len(items)) * row + 10
    label_w = 200
    top = max([v for _, v, _ in items] + [1])
    out = [f'<svg id="{chart_id}" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">']
    for i, (label, v, colour) in enumerate(items):
        y = 5 + i * row
        bw = (w - label_w - 50) * v / top
        short = label if len(label) <= 32 else "…" + label[-31:]
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end"><title>{_E(label)}</title>{_E(short)}</text>'
                   f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{bw:.1f}" height="{row - 8}" fill="{colour}"/>'
                   f'<text x="{label_w + bw + 4:.1f}" y="{y + 14}">{v:g}{unit}</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_latency(latencies: Sequence[float], p50: float | None, p95: float | None, w: int = 520, h: int = 200) -> str:
    """Histogram of end-to-end latency (20 bins) with the p50 and p95 marked."""
    pad_l, pad_b, pad_t = 34, 30, 10
    out = [f'<svg id="chart-latency" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="latency histogram">']
    if latencies:
        lo, hi = 0.0, max(latencies) * 1.05 or 1.0
        bins = [0] * 20
        for v in latencies:
            bins[min(19, int((v - lo) / (hi - lo) * 20))] += 1
        top = max(bins)
        ch, cw = h - pad_b - pad_t, w - pad_l - 10
        for i, c in enumerate(bins):
            bh = ch * c / top
            out.append(f'<rect class="bar" x="{pad_l + i * cw / 20 + 1:.1f}" y="{pad_t + ch - bh:.1f}" width="{cw / 20 - 2:.1f}" '
                       f'height="{bh:.1f}" fill="#54a24b"><title>{c} record(s)</title></rect>')
        for name, v, colour in (("p50", p50, "#333"), ("p95", p95, "#e45756")):
            if v is not None:
                x = pad_l + cw * (v - lo) / (hi - lo)
                right = x > pad_l + cw * 0.75  # label on the left of a line near the right edge
                out.append(f'<line class="marker" x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + ch}" stroke="{colour}" '
                           f'stroke-dasharray="4 3"/><text x="{x - 3 if right else x + 3:.1f}" y="{pad_t + (22 if name == "p95" else 10)}" '
                           f'fill="{colour}" text-anchor="{"end" if right else "start"}">{name} {_fmt_s(v)}</text>')
        for i in range(5):
            v = lo + (hi - lo) * i / 4
            anchor = "start" if i == 0 else "end" if i == 4 else "middle"
            out.append(f'<text x="{pad_l + cw * i / 4:.1f}" y="{h - 10}" text-anchor="{anchor}">{_fmt_s(v)}</text>')
    out.append("</svg>")
    return "".join(out)


def render_stats_html(stats: Mapping[str, Any], *, title: str = "rag stats", top: int = 10,
                      max_never_cited: int = 200) -> str:
    """One self-contained HTML page (inline CSS and SVG, no script, nothing fetched) for the
    figures of :func:`compute_stats`. Every text from records or documents is HTML-escaped."""
    from .pipeline import display_source

    s = stats
    fb = s["feedback"]
    cards = [("questions", s["questions"]), ("users", s["users"]), ("sessions", s["sessions"]),
             ("abstention", _pct(s["abstention_rate"])), ("feedback up / down", f"{fb['up']} / {fb['down']}"),
             ("latency p50", _fmt_s(s["latency_s"]["p50"])), ("latency p95", _fmt_s(s["latency_s"]["p95"]))]
    p = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_E(title)}</title>"
         f"<style>{_CSS}</style></head><body><h1>{_E(title)}</h1>"]
    f = s["filters"]
    p.append(f"<p>{_E(str(s['first'] or '-')[:19])} .. {_E(str(s['last'] or '-')[:19])} UTC"
             + (f"; since {_E(f['since'][:10])}" if f.get("since") else "") + (f"; user {_E(f['user'])}" if f.get("user") else "")
             + "</p>")
    p.append('<div class="cards">' + "".join(f'<div class="card"><b>{_E(str(v))}</b>{_E(k)}</div>' for k, v in cards) + "</div>")
    p.append('<div class="grid"><div><h2>Questions per day</h2>' + _svg_day_bars(s["per_day"]) + "</div>")
    p.append("<div><h2>Latency (end to end)</h2>" + _svg_latency(s.get("latencies") or [], s["latency_s"]["p50"], s["latency_s"]["p95"]) + "</div>")
    fb_items = [("up", fb["up"], "#54a24b"), ("down", fb["down"], "#e45756"), ("none", fb["none"], "#bab0ac")]
    p.append("<div><h2>Feedback</h2>" + _svg_hbars(fb_items, "chart-feedback") + "</div>")
    cited = [(display_source(d["source"] or str(d.get("doc_id"))), d["records"], "#4c78a8") for d in s["most_cited"][:top]]
    p.append("<div><h2>Most-cited documents</h2>" + (_svg_hbars(cited, "chart-cited") if cited else "<p>No citations yet.</p>")
             + "</div></div>")
    if s["stage_latency_s"]:
        p.append("<h2>Latency per stage</h2><table><tr><th>stage</th><th>p50</th><th>p95</th><th>n</th></tr>"
                 + "".join(f"<tr><td>{_E(k)}</td><td class=n>{_fmt_s(v['p50'])}</td><td class=n>{_fmt_s(v['p95'])}</td>"
                           f"<td class=n>{v['n']}</td></tr>" for k, v in s["stage_latency_s"].items()) + "</table>")
    p.append("<h2>Abstained on (gaps in the corpus)</h2>")
    if s["abstained_questions"]:
        p.append("<table><tr><th>times</th><th>users</th><th>question</th><th>last asked</th></tr>"
                 + "".join(f"<tr><td class=n>{q['count']}</td><td class=n>{q['users']}</td><td>{_E(q['question'])}</td>"
                           f"<td>{_E(q['last'][:19])}</td></tr>" for q in s["abstained_questions"]) + "</table>")
    else:
        p.append("<p>None.</p>")
    if s["never_cited"] is not None:
        p.append(f"<h2>Never cited: {s['never_cited_count']} of {s['documents']} documents</h2><table>"
                 + "".join(f"<tr><td>{_E(display_source(d['source'] or ''))}</td><td>{_E(d.get('title') or '')}</td></tr>"
                           for d in s["never_cited"][:max_never_cited]) + "</table>")
        if s["never_cited_count"] > max_never_cited:
            p.append(f"<p>... and {s['never_cited_count'] - max_never_cited} more (rag stats --json lists all).</p>")
    p.append("</body></html>\n")
    return "".join(p)


def stats_for_index(index_dir: str | Path, store, *, since: str | None = None, user_id: str | None = None,
                    top: int = 10) -> dict[str, Any]:
    """:func:`compute_stats` over ``store`` (a :class:`rag.records.RecordStore`) with the
    documents of ``index_dir``; ``since``: a date or ISO time (see :func:`parse_since`).
    What ``rag stats`` and the server's admin page show:
    ``render_stats_html(stats_for_index(dir, store))``."""
    since_iso = parse_since(since) if since else None
    return compute_stats(store.records(user_id=user_id, since=since_iso), documents=index_documents(index_dir),
                         top=top, since=since_iso, user_id=user_id)
