"""`rag stats`: figures against counts made by hand from the raw records table, the terminal
table, and the HTML page drawn in headless Chromium."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

import ops_scenario
from ops_scenario import cli


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    import os

    tmp = tmp_path_factory.mktemp("stats")
    os.environ["RAG_DATA_DIR"] = str(tmp / "userdata")
    sc = ops_scenario.build(tmp)
    # spread the records over days: alice's a1 four days ago, a2 two days ago, the rest today
    # (days without a record lie between)
    now = datetime.now(timezone.utc)
    conn = sqlite3.connect(sc.index / "records.sqlite")
    for sid, days in (("a1", 4), ("a2", 2)):
        day = (now - timedelta(days=days)).isoformat(timespec="milliseconds")
        conn.execute("UPDATE records SET created = ? || substr(created, 11) WHERE session_id = ?", (day[:10], sid))
    conn.commit()
    conn.close()
    return sc


def _raw(index: Path, where: str = "1", params=()) -> list[dict]:
    conn = sqlite3.connect(index / "records.sqlite")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM records WHERE {where}", params)]
    conn.close()
    return rows


def test_stats_json_matches_hand_counts(scenario):
    r = cli("stats", "--index", str(scenario.index), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    raw = _raw(scenario.index)
    assert s["questions"] == 30 and s["users"] == 3 and s["sessions"] == 6
    n_abst = sum(r["abstained"] for r in raw)
    assert s["abstained"] == n_abst and 0 < n_abst < 30
    assert s["abstention_rate"] == pytest.approx(n_abst / 30)
    assert s["feedback"] == {"up": 3, "down": 2, "none": 25}  # the scenario rated 5 turns by hand
    lat = np.array([r["latency_s"] for r in raw])
    assert s["latency_s"]["p50"] == pytest.approx(float(np.median(lat)))
    srt = np.sort(lat)  # p95 by hand: linear interpolation between order statistics
    pos = 0.95 * (len(srt) - 1)
    lo = int(pos)
    assert s["latency_s"]["p95"] == pytest.approx(srt[lo] + (pos - lo) * (srt[lo + 1] - srt[lo]))
    ret = sorted(json.loads(r["timings"])["retrieval_s"] for r in raw)
    assert s["stage_latency_s"]["retrieval_s"]["p50"] == pytest.approx((ret[14] + ret[15]) / 2)
    # per day, every day from the first to the last: 5, 0, 5, 0, 20
    today = datetime.now(timezone.utc).date()
    days = [(today - timedelta(days=k)).isoformat() for k in (4, 3, 2, 1, 0)]
    assert [(d["date"], d["questions"]) for d in s["per_day"]] == list(zip(days, [5, 0, 5, 0, 20]))
    assert s["per_day"][0]["up"] == 1 and s["per_day"][0]["down"] == 1
    assert sum(d["abstained"] for d in s["per_day"]) == n_abst
    # citations: records citing each source
    per_source = Counter()
    for r in raw:
        for src in {c["source"] for c in json.loads(r["citations"])}:
            per_source[src] += 1
    top = per_source.most_common()
    assert [d["records"] for d in s["most_cited"]] == sorted(per_source.values(), reverse=True)
    assert {d["source"]: d["records"] for d in s["most_cited"]} == dict(top[:10])
    files = {str(p) for p in scenario.corpus.iterdir()}
    assert s["documents"] == len(files) == 6
    assert {d["source"] for d in s["never_cited"]} == files - set(per_source)
    assert s["never_cited_count"] == len(files - set(per_source))
    # abstained-on questions, grouped by their text
    groups = Counter(r["question"] for r in raw if r["abstained"])
    assert {q["question"]: q["count"] for q in s["abstained_questions"]} == dict(groups)
    assert [q["count"] for q in s["abstained_questions"]] == sorted(groups.values(), reverse=True)
    assert s["by_generation"] == dict(Counter(str(r["generation"]) for r in raw))


def test_stage_latency_reads_only_seconds():
    from rag.stats import compute_stats, format_table

    # a record written before Answer.scores: model scores and old stage names among the timings
    old = {"timings": {"retrieval_s": 0.2, "evidence": 0.1, "ttft": 0.3, "answer": 0.4, "p_yes": 0.9,
                       "span_logprob": -1.5, "span_margin": 2.0, "total_s": 0.5}}
    new = {"timings": {"retrieval_s": 0.4, "evidence_s": 0.1, "first_token_s": 0.3, "total_s": 0.7}}
    recs = [{"created": "2026-01-01T00:00:00.000+00:00", "abstained": False, "latency_s": r["timings"]["total_s"],
             "citations": [], "user_id": "u", "session_id": "s", **r} for r in (old, new)]
    s = compute_stats(recs)
    assert list(s["stage_latency_s"]) == ["retrieval_s", "evidence_s", "first_token_s", "total_s"]
    assert s["stage_latency_s"]["retrieval_s"] == {"n": 2, "p50": pytest.approx(0.3), "p95": pytest.approx(0.39)}
    assert s["stage_latency_s"]["evidence_s"]["n"] == 1
    table = format_table(s)
    assert "p_yes" not in table and "span_margin" not in table and "ttft" not in table


def test_stats_filters_and_table(scenario):
    s = json.loads(cli("stats", "--index", str(scenario.index), "--json", "--user", "alice").stdout)
    assert s["questions"] == 10 and s["users"] == 1 and s["sessions"] == 2
    assert s["feedback"] == {"up": 1, "down": 1, "none": 8}
    today = datetime.now(timezone.utc).date().isoformat()
    s = json.loads(cli("stats", "--index", str(scenario.index), "--json", "--since", today).stdout)
    assert s["questions"] == 20 and {d["date"] for d in s["per_day"]} == {today}
    assert s["filters"]["since"].startswith(today)
    r = cli("stats", "--index", str(scenario.index), "--since", "yesterday")
    assert r.returncode == 2 and "--since" in r.stderr and r.stderr.count("\n") == 1
    r = cli("stats", "--index", str(scenario.index))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("Records: 30 question(s) from 3 user(s) in 6 session(s)")
    assert "feedback: 3 up, 2 down, 25 none" in out and "Never cited:" in out and "Abstained on" in out
    for k, n in ((4, 5), (3, 0), (2, 5), (0, 20)):
        d = datetime.now(timezone.utc).date() - timedelta(days=k)
        assert f"{d.isoformat():<12}{n:>10}" in out
    r = cli("stats", "--index", str(scenario.index.parent / "nowhere"))
    assert r.returncode == 1 and "no conversation sessions here" in r.stderr


def test_stats_html_draws_in_headless_chromium(scenario, tmp_path):
    page = tmp_path / "stats.html"
    r = cli("stats", "--index", str(scenario.index), "--html", str(page))
    assert r.returncode == 0, r.stderr
    # one line on stdout (where the page went, the headline counts), not the text report
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(f"Wrote {page}: 30 question(s) from 3 user(s)")
    bad = cli("stats", "--index", str(scenario.index), "--html", str(tmp_path / "no" / "dir" / "s.html"))
    assert bad.returncode == 1 and bad.stderr.startswith("rag: error: ") and "s.html" in bad.stderr
    assert bad.stderr.count("\n") == 1
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1150,1600"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.get(page.as_uri())
        assert driver.title.startswith("rag stats")
        charts = {e.get_attribute("id"): e for e in driver.find_elements(By.CSS_SELECTOR, "svg.chart")}
        assert set(charts) == {"chart-per-day", "chart-latency", "chart-feedback", "chart-cited"}
        for cid, el in charts.items():  # drawn: laid out with a size, bars of positive height
            assert el.size["width"] > 300 and el.size["height"] > 50, cid
            bars = el.find_elements(By.CSS_SELECTOR, "rect.bar")
            assert any(float(b.get_attribute("height")) > 0 for b in bars), cid
        day_bars = charts["chart-per-day"].find_elements(By.CSS_SELECTOR, "rect.answered")
        assert len(day_bars) == 5
        assert len(charts["chart-latency"].find_elements(By.CSS_SELECTOR, "line.marker")) == 2
        assert driver.save_screenshot(str(tmp_path / "stats.png"))
        assert (tmp_path / "stats.png").stat().st_size > 10_000
    finally:
        driver.quit()
